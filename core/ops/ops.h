/* ops.h - what the operations (core/ops/: create and its `auto` planner,
 * apply, eval) share among themselves; not installed. */
#ifndef WDELTA_OPS_H
#define WDELTA_OPS_H

#include "codec/codec.h" /* wd_base_read_fn, wd_lossy_params, the codecs */

/* Remove a directory wd_apply made for d (only the names it writes). */
int wd_apply_remove(const wd_delta *d, const char *dir);

/* Encode and decode one block with a lossy codec, adding to st: stored
 * bytes, squared error of the rebuilt values against ft, squared delta,
 * largest |rebuilt - ft| (float64 over finite values).  dec: n bytes. */
typedef struct wd_lossy_stats {
    uint64_t stored, nelem;
    double err2, delta2, max_abs;
} wd_lossy_stats;
int wd_lossy_measure(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                     const unsigned char *ft, const unsigned char *base, size_t n, unsigned char *dec,
                     wd_lossy_stats *st, wd_err *err);
/* `auto`: the cheapest codec and setting for tensor t (read from ft_fd,
 * its base at base_off through read_base) with relative error <= max_error;
 * WD_CODEC_LOSSLESS when none qualifies or the tensor is not eligible. */
int wd_lossy_auto(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base, void *base_ctx,
                  uint64_t base_off, double max_error, int level, uint32_t target_bs, wd_codec *codec,
                  wd_lossy_params *out, wd_err *err);
/* A fixed lossy strategy's codec for tensor t (*codec, *lp in and out):
 * bitdelta and axis1 become ternary / ternary-axis1 where the zero-aware
 * code is worth its bits; then the rule every lossy codec keeps: a tensor
 * whose relative error (as `wdelta eval` computes it) would exceed 1 (worse
 * than the base alone) falls back to int4, or lossless.  why (whylen bytes):
 * "" or the reason for a change, for the manifest and `inspect`.  picked
 * (may be NULL): the measured stats of the code taken (zeroed where it is
 * lossless). */
int wd_lossy_choose(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                    void *base_ctx, uint64_t base_off, uint32_t target_bs, wd_codec *codec,
                    wd_lossy_params *lp, char *why, size_t whylen, wd_lossy_stats *picked, wd_err *err);

/* A fixed lossy strategy's code (*codec, *lp, its stats cur as measured by
 * wd_lossy_choose) against lowrank on a tensor that passed the rank test:
 * lowrank coded on blocks of lbs; where it dominates (stored bytes and
 * relative error both no larger) or its extra bytes buy at least a 4x cut
 * of the squared error per extra bit per element, *codec and *lp become
 * lowrank's, *rank the largest rank of a block, and why says so (prefixing
 * what it held). */
int wd_lossy_lowrank_dominates(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                               void *base_ctx, uint64_t base_off, uint32_t lbs, const wd_lossy_stats *cur,
                               wd_codec *codec, wd_lossy_params *lp, unsigned *rank, char *why, size_t whylen,
                               wd_err *err);

#endif
