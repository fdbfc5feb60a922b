/* lossy_auto.c - measuring a lossy codec on a tensor, and `--strategy auto`:
 * per tensor, the cheapest (codec, setting) whose relative error
 * ||rebuilt - ft|| / ||ft - base|| is within the bound.  The tensor is read
 * one row-aligned block at a time (memory: a few blocks). */
#include "lossy.h"
#include <math.h>
#include <stdlib.h>

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
    st->stored += len;
    size_t ne = n / wd_dtype_size(dt);
    for (size_t i = 0; i < ne; i++) {
        double f = lf_get(ft, dt, i), b = lf_get(base, dt, i), r = lf_get(dec, dt, i);
        if (!isfinite(f) || !isfinite(b) || !isfinite(r)) continue;
        st->err2 += (r - f) * (r - f);
        st->delta2 += (f - b) * (f - b);
        if (fabs(r - f) > st->max_abs) st->max_abs = fabs(r - f);
    }
    st->nelem += ne;
    return 0;
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
    wd_lossy_stats st[NCANDS];
    memset(st, 0, sizeof st);
    wd_scratch *s = wd_scratch_new();
    unsigned char *ft = malloc(bs), *base = malloc(bs), *dec = malloc(bs);
    int rc = -1;
    if (!s || !ft || !base || !dec) {
        wd_errf(err, "out of memory");
        goto out;
    }
    uint32_t cols = (uint32_t)t->shape[t->ndim - 1];
    for (uint64_t at = 0; at < t->length; at += bs) {
        size_t n = (size_t)(t->length - at < bs ? t->length - at : bs);
        if (wd_pread_full(ft_fd, ft, n, t->offset + at, ft_path, err) ||
            read_base(base_ctx, base, n, base_off + at, err)) {
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        for (size_t c = 0; c < NCANDS; c++) {
            wd_lossy_params p = {cols, cands[c].group, cands[c].outliers, cands[c].density, level, cands[c].step, 0};
            if (wd_lossy_measure(s, cands[c].codec, t->dtype, &p, ft, base, n, dec, &st[c], err)) {
                wd_errprefix(err, "tensor %s", t->name);
                goto out;
            }
        }
    }
    size_t best = NCANDS;
    for (size_t c = 0; c < NCANDS; c++) {
        double rel = st[c].delta2 > 0 ? sqrt(st[c].err2 / st[c].delta2) : (st[c].err2 > 0 ? INFINITY : 0);
        if (rel <= max_error && (best == NCANDS || st[c].stored < st[best].stored)) best = c;
    }
    if (best < NCANDS) { /* else the tensor stays lossless */
        *codec = cands[best].codec;
        *out = (wd_lossy_params){cols, cands[best].group, cands[best].outliers, cands[best].density, level,
                                 cands[best].step, 0};
    }
    rc = 0;
out:
    wd_scratch_free(s);
    free(ft);
    free(base);
    free(dec);
    return rc;
}
