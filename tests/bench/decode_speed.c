/* decode_speed.c - block decode throughput of a delta, the path every read
 * of the filesystem takes (pread of stored bytes and base range,
 * checksums, decode).
 *   decode_speed [--threads N] [--wall] FILE.wdelta BASE_DIR [ROUNDS [CODEC]]
 * Prints one line of numbers (for scripts).  The first is MB/s of output
 * per core: bytes decoded over the CPU time of the decoding threads
 * (CLOCK_THREAD_CPUTIME_ID: user and system time, so the preads count, but
 * not time spent waiting for a core another process holds, which makes
 * the figure steady on a shared machine).  With --wall it is instead MB/s
 * of all threads together per second of wall-clock time: with --threads N
 * (default 1), N threads decode disjoint runs of blocks at once (the
 * daemon's case), so --wall at N = 1 and N = 2 side by side shows the
 * scaling.  Each is the median of ROUNDS rounds (default 3), after one
 * round that warms the page cache.
 * With CODEC (e.g. int4), only the blocks of extents with that codec count;
 * a second number follows: the codec alone (stored bytes and base range
 * already in memory, no checksums), MB/s of output per core (thread CPU
 * time). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <pthread.h>
#include "internal.h"

static double clock_s(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static double cpu_now(void)
{
    return clock_s(CLOCK_THREAD_CPUTIME_ID);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct {
    wd_delta *d;
    const char *use;
    size_t from, to;
    uint64_t bytes;
    double cpu; /* the thread's CPU seconds over its run */
    int rc;
    wd_err err;
} job;

static void *decode_run(void *arg)
{
    job *j = arg;
    const wd_delta_info *in = wd_delta_get_info(j->d);
    unsigned char *buf = malloc(64u << 20);
    double c0 = cpu_now();
    j->bytes = 0;
    j->rc = buf ? 0 : -1;
    if (!buf) snprintf(j->err.msg, sizeof j->err.msg, "out of memory");
    for (size_t b = j->from; b < j->to && !j->rc; b++) {
        if (!j->use[b]) continue;
        if ((j->rc = wd_delta_decode_block(j->d, (uint32_t)b, buf, &j->err))) break;
        j->bytes += in->blocks[b].out_len;
    }
    j->cpu = cpu_now() - c0;
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    int nthreads = 1, wall = 0;
    for (;;) {
        if (argc > 2 && !strcmp(argv[1], "--threads")) {
            nthreads = atoi(argv[2]);
            argc -= 2;
            argv += 2;
            if (nthreads < 1 || nthreads > 256) {
                fprintf(stderr, "decode_speed: --threads wants 1..256\n");
                return 2;
            }
        } else if (argc > 1 && !strcmp(argv[1], "--wall")) {
            wall = 1;
            argc--;
            argv++;
        } else {
            break;
        }
    }
    if (argc < 3) {
        fprintf(stderr, "usage: decode_speed [--threads N] [--wall] FILE.wdelta BASE_DIR [ROUNDS [CODEC]]\n");
        return 2;
    }
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    if (rounds < 1 || rounds > 1000) {
        fprintf(stderr, "decode_speed: ROUNDS wants 1..1000\n");
        return 2;
    }
    wd_err err;
    wd_delta *d;
    wd_model base;
    if (wd_delta_open(argv[1], &d, &err) || wd_model_open(argv[2], &base, &err) || wd_delta_set_base(d, &base, &err)) {
        fprintf(stderr, "decode_speed: %s\n", err.msg);
        return 1;
    }
    const wd_delta_info *in = wd_delta_get_info(d);
    const char *only = argc > 4 ? argv[4] : NULL;
    char *use = calloc(in->nblocks + 1, 1);
    for (size_t f = 0; f < in->nfiles; f++)
        for (size_t k = 0; k < in->files[f].nextents; k++) {
            const wd_extent *e = &in->files[f].extents[k];
            if (only && strcmp(wd_codec_name(e->codec), only)) continue;
            for (uint32_t b = 0; b < e->nblocks; b++) use[e->first_block + b] = 1;
        }
    double *fig = calloc((size_t)rounds, sizeof *fig);
    job *jobs = calloc((size_t)nthreads, sizeof *jobs);
    pthread_t *tid = calloc((size_t)nthreads, sizeof *tid);
    for (int r = 0; r < rounds + 1; r++) { /* round 0 warms the page cache */
        uint64_t bytes = 0;
        double t0 = now();
        for (int t = 0; t < nthreads; t++) {
            jobs[t] = (job){.d = d, .use = use,
                            .from = in->nblocks * (size_t)t / (size_t)nthreads,
                            .to = in->nblocks * (size_t)(t + 1) / (size_t)nthreads};
            if (pthread_create(&tid[t], NULL, decode_run, &jobs[t])) {
                fprintf(stderr, "decode_speed: cannot start a thread\n");
                return 1;
            }
        }
        for (int t = 0; t < nthreads; t++) pthread_join(tid[t], NULL);
        double spent = now() - t0, cpu = 0;
        for (int t = 0; t < nthreads; t++) {
            if (jobs[t].rc) {
                fprintf(stderr, "decode_speed: %s\n", jobs[t].err.msg);
                return 1;
            }
            bytes += jobs[t].bytes;
            cpu += jobs[t].cpu;
        }
        if (r) fig[r - 1] = (double)bytes / 1e6 / (wall ? spent : cpu > 0 ? cpu : 1e-9);
    }
    double best = median(fig, rounds);
    free(fig);
    free(jobs);
    free(tid);
    unsigned char *buf = malloc(64u << 20);
    double best2 = 0;
    if (only) { /* codec alone, blocks preloaded (every such block of the delta) */
        wd_scratch *s = wd_scratch_new();
        uint64_t bytes = 0;
        double spent = 0;
        for (int r = 0; r < rounds; r++)
            for (size_t f = 0; f < in->nfiles; f++)
                for (size_t k = 0; k < in->files[f].nextents; k++) {
                    const wd_extent *e = &in->files[f].extents[k];
                    if (strcmp(wd_codec_name(e->codec), only)) continue;
                    size_t fi;
                    const wd_tensor *bt = wd_model_find(&base, e->base_tensor, &fi);
                    FILE *bfp = fopen(base.files[fi].path, "rb"), *dfp = fopen(argv[1], "rb");
                    for (uint32_t b = 0; b < e->nblocks; b++) {
                        const wd_block *bl = &in->blocks[e->first_block + b];
                        unsigned char *st = malloc(bl->stored_len), *bs = malloc(bl->out_len);
                        fseek(dfp, (long)bl->offset, SEEK_SET);
                        fseek(bfp, (long)(bt->offset + (uint64_t)b * e->block_size), SEEK_SET);
                        if (fread(st, 1, bl->stored_len, dfp) != bl->stored_len || fread(bs, 1, bl->out_len, bfp) != bl->out_len)
                            return 1;
                        double t0 = cpu_now();
                        if (wd_decode_block(s, e->codec, e->dtype, st, bl->stored_len, bs, buf, bl->out_len, &err)) {
                            fprintf(stderr, "decode_speed: %s\n", err.msg);
                            return 1;
                        }
                        spent += cpu_now() - t0;
                        bytes += bl->out_len;
                        free(st);
                        free(bs);
                    }
                    fclose(bfp);
                    fclose(dfp);
                }
        best2 = spent > 0 ? (double)bytes / 1e6 / spent : 0;
        wd_scratch_free(s);
        printf("%.0f %.0f\n", best, best2);
    } else {
        printf("%.0f\n", best);
    }
    free(buf);
    free(use);
    wd_delta_close(d);
    wd_model_free(&base);
    return 0;
}
