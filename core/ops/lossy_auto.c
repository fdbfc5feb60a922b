/* lossy_auto.c - measuring a lossy codec on a tensor, and `--strategy auto`:
 * per tensor, the cheapest (codec, setting) whose relative error
 * ||rebuilt - ft|| / ||ft - base|| is within the bound.  The tensor is read
 * one row-aligned block at a time (memory: a few blocks). */
#include "codec/lossy.h"
#include "ops/ops.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void add_stats(wd_lossy_stats *st, size_t len, wd_dtype dt, const unsigned char *ft,
                      const unsigned char *base, const unsigned char *dec, size_t n);

int wd_lossy_measure(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                     const unsigned char *ft, const unsigned char *base, size_t n, unsigned char *dec,
                     wd_lossy_stats *st, wd_err *err)
{
    const unsigned char *enc;
    size_t len;
    if (wd_lossy_encode(s, codec, dt, p, ft, base, n, &enc, &len, err)) return -1;
    /* the encoded block lives in slot LS_OUT, which decoding leaves alone */
    if (wd_lossy_decode(s, codec, dt, enc, len, base, dec, n, err))
        return wd_errprefix(err, "decoding what was just encoded");
    add_stats(st, len, dt, ft, base, dec, n);
    return 0;
}

/* add a block's error against ft (n bytes) and stored length to st */
static void add_stats(wd_lossy_stats *st, size_t len, wd_dtype dt, const unsigned char *ft,
                      const unsigned char *base, const unsigned char *dec, size_t n)
{
    st->stored += len;
    size_t ne = n / wd_dtype_size(dt);
    for (size_t i = 0; i < ne; i++) {
        double f = wd_float_at(ft, dt, i), b = wd_float_at(base, dt, i), r = wd_float_at(dec, dt, i);
        if (!isfinite(f) || !isfinite(b) || !isfinite(r)) {
            /* as wdelta eval: a non-finite value not rebuilt bit for bit
             * (e.g. an overflow to infinity) is an unbounded error */
            unsigned w = wd_dtype_size(dt);
            if (memcmp(dec + i * w, ft + i * w, w)) st->err2 = INFINITY;
            continue;
        }
        st->err2 += (r - f) * (r - f);
        st->delta2 += (f - b) * (f - b);
        if (fabs(r - f) > st->max_abs) st->max_abs = fabs(r - f);
    }
    st->nelem += ne;
}

/* A measurement of one row block: n bytes of ft and of its base, dec a
 * buffer of n bytes for the rebuilt block. */
typedef int (*block_fn)(void *ctx, wd_scratch *s, wd_dtype dt, const unsigned char *ft, const unsigned char *base,
                        size_t n, unsigned char *dec, wd_err *err);

/* Read tensor t one row block (bs bytes) at a time, from ft_fd and its base
 * through read_base, and hand each block to fn. */
static int each_block(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base, void *base_ctx,
                      uint64_t base_off, uint32_t bs, block_fn fn, void *ctx, wd_err *err)
{
    wd_scratch *s = wd_scratch_new();
    unsigned char *ft = malloc(bs), *base = malloc(bs), *dec = malloc(bs);
    int rc = -1;
    if (!s || !ft || !base || !dec) {
        wd_errf(err, "out of memory");
        goto out;
    }
    for (uint64_t at = 0; at < t->length; at += bs) {
        size_t n = (size_t)(t->length - at < bs ? t->length - at : bs);
        if (wd_pread_full(ft_fd, ft, n, t->offset + at, ft_path, err) ||
            read_base(base_ctx, base, n, base_off + at, err) || fn(ctx, s, t->dtype, ft, base, n, dec, err)) {
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
    }
    rc = 0;
out:
    wd_scratch_free(s);
    free(ft);
    free(base);
    free(dec);
    return rc;
}

typedef struct codecs_ctx {
    size_t nc;
    const wd_codec *codecs;
    const wd_lossy_params *params;
    wd_lossy_stats *st;
} codecs_ctx;

static int measure_codecs(void *ctx, wd_scratch *s, wd_dtype dt, const unsigned char *ft, const unsigned char *base,
                          size_t n, unsigned char *dec, wd_err *err)
{
    codecs_ctx *c = ctx;
    for (size_t i = 0; i < c->nc; i++)
        if (wd_lossy_measure(s, c->codecs[i], dt, &c->params[i], ft, base, n, dec, &c->st[i], err)) return -1;
    return 0;
}

/* Code tensor t with each of nc (codec, params) one row block at a time
 * (read from ft_fd, its base through read_base) and add up their stats. */
static int measure_tensor(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                          void *base_ctx, uint64_t base_off, uint32_t bs, size_t nc, const wd_codec *codecs,
                          const wd_lossy_params *params, wd_lossy_stats *st, wd_err *err)
{
    memset(st, 0, nc * sizeof *st);
    codecs_ctx c = {nc, codecs, params, st};
    return each_block(t, ft_fd, ft_path, read_base, base_ctx, base_off, bs, measure_codecs, &c, err);
}

/* ||rebuilt - ft|| / ||ft - base|| as `wdelta eval` computes it */
static double stats_rel(const wd_lossy_stats *st)
{
    if (st->delta2 > 0) return sqrt(st->err2 / st->delta2);
    return st->err2 > 0 ? INFINITY : 0.0;
}

/* The candidates `auto` tries, roughly from cheapest to dearest. */
typedef struct cand {
    wd_codec codec;
    uint32_t group;
    double outliers, density, step;
} cand;
static const cand cands[] = {
    {WD_CODEC_LOWRANK, 0, 0, 0, 0},
    {WD_CODEC_BITDELTA, 0, 0, 0, 0},       {WD_CODEC_AXIS1, 0, 0, 0, 0},
    {WD_CODEC_TERNARY, 0, 0, 0, 0},        {WD_CODEC_TERNARY_AXIS1, 0, 0, 0, 0},
    {WD_CODEC_SPARSE, 0, 0, 0.01, 0},      {WD_CODEC_SPARSE, 0, 0, 0.03, 0},
    {WD_CODEC_INT4, 128, 0.002, 0, 1.0},   {WD_CODEC_INT4, 128, 0.002, 0, 0.7},
    {WD_CODEC_INT4, 128, 0.002, 0, 0.6},   {WD_CODEC_INT4, 128, 0.002, 0, 0.5},
    {WD_CODEC_INT4, 128, 0.002, 0, 0.35},
    {WD_CODEC_INT4, 64, 0.002, 0, 0},      {WD_CODEC_INT4, 32, 0.005, 0, 0},
    {WD_CODEC_SPARSE, 0, 0, 0.1, 0},       {WD_CODEC_SPARSE, 0, 0, 0.3, 0},
};
#define NCANDS (sizeof cands / sizeof cands[0])

int wd_lossy_auto(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base, void *base_ctx,
                  uint64_t base_off, double max_error, int level, uint32_t target_bs, wd_codec *codec,
                  wd_lossy_params *out, wd_err *err)
{
    *codec = WD_CODEC_LOSSLESS;
    if (!wd_lossy_eligible(t)) return 0;
    uint32_t bs = wd_lossy_block_size(t, target_bs);
    if (!bs) return 0;
    if (max_error > 1) max_error = 1; /* never worse than the base alone */
    uint32_t cols = (uint32_t)t->shape[t->ndim - 1];
    wd_codec cc[NCANDS];
    wd_lossy_params pp[NCANDS];
    wd_lossy_stats st[NCANDS];
    for (size_t c = 0; c < NCANDS; c++) {
        cc[c] = cands[c].codec;
        pp[c] = (wd_lossy_params){cols, cands[c].group, cands[c].outliers, cands[c].density, level, cands[c].step, 0};
    }
    if (measure_tensor(t, ft_fd, ft_path, read_base, base_ctx, base_off, bs, NCANDS, cc, pp, st, err)) return -1;
    size_t best = NCANDS;
    for (size_t c = 0; c < NCANDS; c++)
        if (stats_rel(&st[c]) <= max_error && (best == NCANDS || st[c].stored < st[best].stored)) best = c;
    if (best < NCANDS) { /* else the tensor stays lossless */
        *codec = cc[best];
        *out = pp[best];
    }
    return 0;
}

/* The 1-bit strategies: the dense code (bitdelta, axis1) or its zero-aware
 * form (ternary, ternary-axis1), whichever gives the lower error for its
 * bits.  The rate-distortion slope of a scalar code, 6.02 dB per bit (each
 * bit per element divides the squared error by 4), sets the exchange rate:
 * the zero-aware code is taken when its squared error is below the dense
 * one's by more than 4^(its extra bits per element).  Dense deltas (few
 * unchanged values) stay dense: the mask costs bits and saves little error;
 * mostly-unchanged ones go ternary. */
static int pick_zero_aware(const wd_lossy_stats *dense, const wd_lossy_stats *tern, double max_rel)
{
    double rd = stats_rel(dense), rt = stats_rel(tern);
    if (rd > max_rel && rt <= max_rel) return 1;
    if (rt > max_rel && rd <= max_rel) return 0;
    if (tern->err2 <= 0 && dense->err2 <= 0) return tern->stored < dense->stored; /* both exact */
    if (tern->err2 <= 0) return 1;
    if (dense->err2 <= 0) return 0;
    double extra_bits = ((double)tern->stored - (double)dense->stored) * 8.0 / (double)(dense->nelem ? dense->nelem : 1);
    return log2(dense->err2 / tern->err2) / 2.0 >= extra_bits;
}

int wd_lossy_choose(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                    void *base_ctx, uint64_t base_off, uint32_t target_bs, wd_codec *codec,
                    wd_lossy_params *lp, char *why, size_t whylen, wd_lossy_stats *picked, wd_err *err)
{
    why[0] = 0;
    if (picked) memset(picked, 0, sizeof *picked);
    if (!wd_codec_is_lossy(*codec) || !wd_lossy_eligible(t)) return 0;
    uint32_t bs = wd_lossy_block_size(t, target_bs);
    if (!bs) return 0;
    wd_codec cc[3] = {*codec};
    wd_lossy_params pp[3] = {*lp, *lp};
    wd_lossy_stats st[3];
    size_t nc = 1;
    if (*codec == WD_CODEC_BITDELTA) cc[nc++] = WD_CODEC_TERNARY;
    else if (*codec == WD_CODEC_AXIS1) cc[nc++] = WD_CODEC_TERNARY_AXIS1;
    if (measure_tensor(t, ft_fd, ft_path, read_base, base_ctx, base_off, bs, nc, cc, pp, st, err)) return -1;
    size_t pick = 0;
    double nel = (double)(st[0].nelem ? st[0].nelem : 1);
    if (nc == 2 && pick_zero_aware(&st[0], &st[1], 1.0)) {
        pick = 1;
        snprintf(why, whylen, "zero-aware: rel. error %.3g at %.3f bits/param against %s's %.3g at %.3f",
                 stats_rel(&st[1]), (double)st[1].stored * 8 / nel, wd_codec_name(cc[0]), stats_rel(&st[0]),
                 (double)st[0].stored * 8 / nel);
    }
    *codec = cc[pick];
    double rel = stats_rel(&st[pick]);
    if (rel <= 1.0) {
        if (picked) *picked = st[pick];
        return 0;
    }
    /* the rule every lossy codec keeps: never worse than the base alone.
     * Fall back to int4 at its defaults, then to lossless. */
    char first[96];
    snprintf(first, sizeof first, "%s: rel. error %.3g > 1 (worse than the base)", wd_codec_name(cc[pick]), rel);
    if (cc[pick] != WD_CODEC_INT4) {
        wd_lossy_params ip = {lp->cols, 128, 0.002, 0, lp->level, 0.6, 0};
        wd_codec ic = WD_CODEC_INT4;
        if (measure_tensor(t, ft_fd, ft_path, read_base, base_ctx, base_off, bs, 1, &ic, &ip, &st[2], err))
            return -1;
        if (stats_rel(&st[2]) <= 1.0) {
            snprintf(why, whylen, "fallback: %s; int4 (rel. error %.3g)", first, stats_rel(&st[2]));
            if (picked) *picked = st[2];
            *codec = WD_CODEC_INT4;
            *lp = ip;
            return 0;
        }
    }
    snprintf(why, whylen, "fallback: %s; stored lossless", first);
    *codec = WD_CODEC_LOSSLESS;
    return 0;
}

/* The lowrank code of a block, as measure_codecs would measure it, and the
 * largest rank a block was coded with (for the manifest). */
typedef struct lowrank_ctx {
    wd_lossy_params p;
    wd_lossy_stats st;
    unsigned maxr;
} lowrank_ctx;

static int measure_lowrank(void *ctx, wd_scratch *s, wd_dtype dt, const unsigned char *ft, const unsigned char *base,
                           size_t n, unsigned char *dec, wd_err *err)
{
    lowrank_ctx *c = ctx;
    lbuf ob = {0};
    unsigned rk = 0;
    if (wd_lowrank_encode(s, WD_CODEC_LOWRANK, dt, &c->p, ft, base, n, &ob, &rk, err) ||
        (ob.oom && wd_errf(err, "out of memory")) ||
        wd_lossy_decode(s, WD_CODEC_LOWRANK, dt, ob.p, ob.len, base, dec, n, err)) {
        free(ob.p);
        return wd_errprefix(err, "lowrank");
    }
    add_stats(&c->st, ob.len, dt, ft, base, dec, n);
    free(ob.p);
    if (rk > c->maxr) c->maxr = rk;
    return 0;
}

/* Measured, not a threshold: lowrank replaces the strategy's code where it
 * is no worse on both axes the user sees (stored bytes and the relative
 * error `wdelta eval` reports), or where its extra bytes buy at least the
 * error a scalar code would buy with them (6.02 dB per bit per element).  A
 * merged LoRA's delta is such a case: its factors cost a fraction of a bit
 * per parameter (a little over one on narrow matrices) and rebuild it to
 * the dtype's rounding, where a scalar code pays for every element. */
int wd_lossy_lowrank_dominates(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                               void *base_ctx, uint64_t base_off, uint32_t lbs, const wd_lossy_stats *cur,
                               wd_codec *codec, wd_lossy_params *lp, unsigned *rank, char *why, size_t whylen,
                               wd_err *err)
{
    if (!wd_codec_is_lossy(*codec) || *codec == WD_CODEC_LOWRANK || *codec == WD_CODEC_LOWRANK_EXACT ||
        !cur->nelem)
        return 0;
    uint32_t bs = wd_lossy_block_size(t, lbs);
    if (!bs) return 0;
    lowrank_ctx lc = {{lp->cols, 0, 0, 0, lp->level, 0, 0}, {0}, 0};
    if (each_block(t, ft_fd, ft_path, read_base, base_ctx, base_off, bs, measure_lowrank, &lc, err)) return -1;
    const wd_lossy_params p = lc.p;
    const wd_lossy_stats st = lc.st;
    unsigned maxr = lc.maxr;
    double rl = stats_rel(&st), rc0 = stats_rel(cur), nel = (double)cur->nelem;
    int dominates = st.stored <= cur->stored && rl <= rc0;
    /* more bytes for less error: taken at the exchange rate the 1-bit tier
     * already uses (pick_zero_aware), the rate-distortion slope of a scalar
     * code: each extra bit per element must cut the squared error by 4 */
    int pays = !dominates && rl < rc0 &&
               (st.err2 <= 0 ||
                log2(cur->err2 / st.err2) / 2.0 >= ((double)st.stored - (double)cur->stored) * 8.0 / nel);
    if (st.nelem == cur->nelem && (dominates || pays)) {
        char prev[192];
        snprintf(prev, sizeof prev, "%s", why);
        snprintf(why, whylen, "lowrank %s: rank %u, rel. error %.3g at %.3f bits/param against %s's %.3g at %.3f%s%s",
                 dominates ? "dominates" : "pays for its bits", maxr, rl, (double)st.stored * 8 / nel,
                 wd_codec_name(*codec), rc0, (double)cur->stored * 8 / nel, prev[0] ? "; " : "", prev);
        *codec = WD_CODEC_LOWRANK;
        *lp = p;
        *rank = maxr;
    }
    return 0;
}
