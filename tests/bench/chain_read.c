/* chain_read.c - time to read one tensor of a model stored as a single
 * delta against its base, and as the last link of a chain.
 *
 *   chain_read BASE SINGLE.wdelta CHAIN_TOP.wdelta [REPEATS]
 *
 * CHAIN_TOP's parent links are found in its own directory.  For the largest
 * tensor of the rebuilt model (and for the whole model), prints one
 * markdown row per case: median milliseconds over REPEATS (default 5) of
 *   - the single delta, cold block cache;
 *   - the chain's last link, cold cache (every link decodes its blocks);
 *   - the chain's last link with the link below it already cached (what a
 *     sibling leaves in the daemon's shared cache);
 * and the ratios to the single delta.  Reads go through wd_read and a
 * 1 GiB wd_cache made fresh for every cold repetition, on one thread; the
 * files are in the page cache (read once before timing). */
#include "wdelta.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct target {
    size_t file;
    uint64_t off, len;
} target;

/* the largest tensor's place in the rebuilt output */
static int largest(wd_delta *d, target *t, char *name, size_t nn)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    t->len = 0;
    for (size_t f = 0; f < in->nfiles; f++)
        for (size_t k = 0; k < in->files[f].nextents; k++) {
            const wd_extent *e = &in->files[f].extents[k];
            if (e->tensor && e->length > t->len) {
                t->file = f;
                t->off = e->file_offset;
                t->len = e->length;
                snprintf(name, nn, "%s", e->tensor);
            }
        }
    return t->len ? 0 : -1;
}

static int read_range(wd_delta *d, uint64_t key, wd_cache *c, const target *t, unsigned char *buf, wd_err *err)
{
    ssize_t n = wd_read(d, key, c, t->file, buf, (size_t)t->len, t->off, err);
    return n == (ssize_t)t->len ? 0 : -1;
}

/* whole model: every output file */
static int read_all(wd_delta *d, uint64_t key, wd_cache *c, unsigned char *buf, size_t cap, wd_err *err)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    for (size_t f = 0; f < in->nfiles; f++)
        for (uint64_t off = 0; off < in->files[f].size; off += cap) {
            size_t n = in->files[f].size - off < cap ? (size_t)(in->files[f].size - off) : cap;
            if (wd_read(d, key, c, f, buf, n, off, err) != (ssize_t)n) return -1;
        }
    return 0;
}

/* mode 0: cold; mode 1: the link below the top read first (not timed) */
static double measure(wd_chain *ch, int mode, const target *t, int whole, unsigned char *buf, size_t cap, int reps,
                      wd_err *err)
{
    double *ms = calloc((size_t)reps, sizeof *ms);
    size_t n = wd_chain_length(ch);
    wd_delta *top = wd_chain_top(ch);
    for (int r = 0; r < reps; r++) {
        wd_cache *c = wd_cache_new(1ull << 30);
        /* the chain's links read their parents through `c`: open a fresh
         * chain per cache (keys: link i is i+1) */
        wd_chain *cc = NULL;
        const char *topp = wd_delta_path(top);
        if (!c || wd_chain_open(topp, NULL, 0, wd_chain_base(ch)->dir, c, &cc, err)) {
            free(ms);
            wd_cache_free(c);
            return -1;
        }
        wd_delta *tp = wd_chain_top(cc);
        if (mode == 1 && n > 1) {
            wd_delta *below = wd_chain_link(cc, n - 2);
            if ((whole ? read_all(below, n - 1, c, buf, cap, err) : read_range(below, n - 1, c, t, buf, err))) {
                wd_chain_close(cc);
                wd_cache_free(c);
                free(ms);
                return -1;
            }
        }
        double t0 = now_ms();
        int rc = whole ? read_all(tp, n, c, buf, cap, err) : read_range(tp, n, c, t, buf, err);
        ms[r] = now_ms() - t0;
        wd_chain_close(cc);
        wd_cache_free(c);
        if (rc) {
            free(ms);
            return -1;
        }
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_d);
    double med = ms[reps / 2];
    free(ms);
    return med;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s BASE SINGLE.wdelta CHAIN_TOP.wdelta [REPEATS]\n", argv[0]);
        return 2;
    }
    int reps = argc > 4 ? atoi(argv[4]) : 5;
    if (reps < 1) reps = 1;
    wd_err err = {0};
    wd_chain *single = NULL, *chain = NULL;
    const char *none[1] = {argv[2]}; /* search only itself: a chain of one */
    if (wd_chain_open(argv[2], none, 1, argv[1], NULL, &single, &err) ||
        wd_chain_open(argv[3], NULL, 0, argv[1], NULL, &chain, &err)) {
        fprintf(stderr, "chain_read: %s\n", err.msg);
        return 1;
    }
    target t;
    char name[256];
    if (largest(wd_chain_top(chain), &t, name, sizeof name)) {
        fprintf(stderr, "chain_read: no tensor\n");
        return 1;
    }
    size_t cap = 1u << 20;
    if (t.len > cap) cap = (size_t)t.len;
    unsigned char *buf = malloc(cap);
    if (!buf) return 1;
    printf("| read | chain length | single delta ms | chain cold ms | ratio | chain, link below cached, ms | ratio |\n");
    printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (int whole = 0; whole < 2; whole++) {
        /* warm the page cache */
        if (measure(single, 0, &t, whole, buf, cap, 1, &err) < 0 || measure(chain, 0, &t, whole, buf, cap, 1, &err) < 0) {
            fprintf(stderr, "chain_read: %s\n", err.msg);
            return 1;
        }
        double s = measure(single, 0, &t, whole, buf, cap, reps, &err);
        double c0 = measure(chain, 0, &t, whole, buf, cap, reps, &err);
        double c1 = measure(chain, 1, &t, whole, buf, cap, reps, &err);
        if (s < 0 || c0 < 0 || c1 < 0) {
            fprintf(stderr, "chain_read: %s\n", err.msg);
            return 1;
        }
        char what[400];
        if (whole) snprintf(what, sizeof what, "whole model (%.1f MB)", (double)wd_delta_get_info(wd_chain_top(chain))->output_size / 1e6);
        else snprintf(what, sizeof what, "largest tensor %s (%.1f MB)", name, (double)t.len / 1e6);
        printf("| %s | %zu | %.2f | %.2f | %.2fx | %.2f | %.2fx |\n", what, wd_chain_length(chain), s, c0, c0 / s, c1,
               c1 / s);
    }
    free(buf);
    wd_chain_close(single);
    wd_chain_close(chain);
    return 0;
}
