/* decode_speed.c - single-thread block decode throughput of a delta, the
 * path every read of the filesystem takes (pread of stored bytes and base
 * range, checksums, decode).  Prints MB/s of output per core.
 *   decode_speed FILE.wdelta BASE_DIR [ROUNDS] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "wdelta.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: decode_speed FILE.wdelta BASE_DIR [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    wd_err err;
    wd_delta *d;
    wd_model base;
    if (wd_delta_open(argv[1], &d, &err) || wd_model_open(argv[2], &base, &err) || wd_delta_set_base(d, &base, &err)) {
        fprintf(stderr, "decode_speed: %s\n", err.msg);
        return 1;
    }
    const wd_delta_info *in = wd_delta_get_info(d);
    unsigned char *buf = malloc(64u << 20);
    double best = 0;
    for (int r = 0; r < rounds + 1; r++) { /* round 0 warms the page cache */
        uint64_t bytes = 0;
        double t0 = now();
        for (size_t b = 0; b < in->nblocks; b++) {
            if (wd_delta_decode_block(d, (uint32_t)b, buf, &err)) {
                fprintf(stderr, "decode_speed: %s\n", err.msg);
                return 1;
            }
            bytes += in->blocks[b].out_len;
        }
        double mbs = (double)bytes / 1e6 / (now() - t0);
        if (r && mbs > best) best = mbs;
    }
    printf("%.0f\n", best);
    free(buf);
    wd_delta_close(d);
    wd_model_free(&base);
    return 0;
}
