/* folios.c - how a file's bytes sit in the page cache: the share of its
 * cached pages that belong to large folios and the mean folio size.  The
 * bench prints it for the virtual file and for the original to show why a
 * warm re-read through FUSE cannot match the original's: the kernel copies a
 * read out of the page cache one folio at a time, and a FUSE file's cache is
 * kept in 4 KiB folios on kernels without large-folio support in FUSE, while
 * ext4 and xfs use folios of up to megabytes (tmpfs only where its huge
 * pages are enabled).
 *
 *   folios FILE [MiB]     (the first MiB MiB of FILE, default 256)
 *
 * Maps the range, touches each page (pages already cached are not read
 * again), then looks each page up in /proc/self/pagemap and
 * /proc/kpageflags (root only).  Prints "LARGE_SHARE MEAN_KIB PAGES", or a
 * reason on stderr and exit 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: folios FILE [MiB]\n");
        return 2;
    }
    size_t want = (size_t)(argc > 2 ? strtoul(argv[2], NULL, 10) : 256) << 20;
    long psz = sysconf(_SC_PAGESIZE);
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "folios: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    size_t n = (size_t)st.st_size < want ? (size_t)st.st_size : want;
    n -= n % (size_t)psz;
    if (n == 0) {
        fprintf(stderr, "folios: %s: smaller than a page\n", argv[1]);
        return 1;
    }
    volatile unsigned char *p = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "folios: mmap %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    unsigned sum = 0;
    for (size_t o = 0; o < n; o += (size_t)psz) sum += p[o];
    int pm = open("/proc/self/pagemap", O_RDONLY), kf = open("/proc/kpageflags", O_RDONLY);
    if (pm < 0 || kf < 0) {
        fprintf(stderr, "folios: /proc/self/pagemap or /proc/kpageflags: %s (needs root)\n", strerror(errno));
        return 1;
    }
    size_t heads = 0, tails = 0, small = 0;
    for (size_t o = 0; o < n; o += (size_t)psz) {
        uint64_t e = 0, f = 0;
        off_t at = (off_t)(((uintptr_t)p + o) / (uintptr_t)psz * 8);
        if (pread(pm, &e, 8, at) != 8 || !(e >> 63)) continue; /* not present */
        uint64_t pfn = e & ((1ull << 55) - 1);
        if (pfn == 0) {
            fprintf(stderr, "folios: pagemap hides frame numbers (needs root)\n");
            return 1;
        }
        if (pread(kf, &f, 8, (off_t)(pfn * 8)) != 8) continue;
        if (f >> KPF_COMPOUND_HEAD & 1) heads++;
        else if (f >> KPF_COMPOUND_TAIL & 1) tails++;
        else small++;
    }
    size_t pages = heads + tails + small, folios = heads + small;
    if (!folios) {
        fprintf(stderr, "folios: no page of %s is resident\n", argv[1]);
        return 1;
    }
    printf("%.3f %.1f %zu\n", (double)(heads + tails) / (double)pages,
           (double)pages / (double)folios * (double)psz / 1024.0, pages);
    return sum == 0xdeadbeef; /* keeps the touching loop */
}
