/* io.c - pread/pwrite that either move every byte or say why. */
#include "util/util.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int wd_pread_full(int fd, void *buf, size_t n, uint64_t off, const char *what, wd_err *err)
{
    unsigned char *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            return wd_errf(err, "%s: read of %zu bytes at offset %llu failed: %s", what,
                           n, (unsigned long long)(off + done), strerror(errno));
        if (r == 0)
            return wd_errf(err, "%s: unexpected end of file at offset %llu (wanted %zu bytes at %llu)",
                           what, (unsigned long long)(off + done), n, (unsigned long long)off);
        done += (size_t)r;
    }
    return 0;
}

int wd_pwrite_full(int fd, const void *buf, size_t n, uint64_t off, const char *what, wd_err *err)
{
    const unsigned char *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            return wd_errf(err, "%s: write of %zu bytes at offset %llu failed: %s", what,
                           n, (unsigned long long)(off + done), strerror(errno));
        done += (size_t)r;
    }
    return 0;
}

int *wd_fds_new(size_t n)
{
    int *fds = malloc((n + 1) * sizeof *fds);
    for (size_t i = 0; fds && i <= n; i++) fds[i] = -1;
    return fds;
}

void wd_fds_free(int *fds, size_t n)
{
    for (size_t i = 0; fds && i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
    free(fds);
}
