/* xdtype.c - the cross-dtype / resized-tensor predictor (see xdtype.h and
 * core/FORMAT.md "Cross-dtype and resized tensors").
 *
 * The base value is the best predictor of the fine-tune's whatever the
 * dtype, so a tensor saved in another dtype than its base, or with rows
 * added or removed, is coded with the ordinary delta codecs against its base
 * converted to the fine-tune's dtype: exact widening (BF16/F16 -> F32),
 * round to nearest even narrowing (F32 -> BF16/F16, BF16 <-> F16 through
 * F32, which is exact from either), zeros where the base has no element. */
#include "delta/xdtype.h"
#include "delta/delta_impl.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int pred_dtype_ok(wd_dtype t)
{
    return t == WD_BF16 || t == WD_F16 || t == WD_F32;
}

static const char *pred_dtype_name(wd_dtype t)
{
    return t == WD_BF16 ? "BF16" : t == WD_F16 ? "F16" : t == WD_F32 ? "F32" : "another dtype";
}

int wd_xdtype_fits(const wd_tensor *ft, const wd_tensor *bt)
{
    if (!pred_dtype_ok(ft->dtype) || !pred_dtype_ok(bt->dtype) || ft->ndim != bt->ndim) return 0;
    for (int i = 1; i < ft->ndim; i++)
        if (ft->shape[i] != bt->shape[i]) return 0;
    if (ft->dtype != bt->dtype) return 1;
    return ft->ndim > 0 && ft->shape[0] != bt->shape[0];
}

void wd_xdtype_range(wd_dtype ft_dt, wd_dtype base_dt, uint64_t base_len, uint64_t rel, size_t n, uint64_t *brel,
                     size_t *bn)
{
    unsigned wf = wd_dtype_size(ft_dt), wb = wd_dtype_size(base_dt);
    uint64_t i0 = rel / wf, cnt = n / wf, nbase = base_len / wb;
    *brel = 0;
    *bn = 0;
    if (i0 >= nbase) return;
    *brel = i0 * wb;
    *bn = (size_t)((cnt < nbase - i0 ? cnt : nbase - i0) * wb);
}

/* IEEE half bits -> float32 bits, exact (a NaN keeps its payload). */
static uint32_t f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return sign | 0x7f800000u | (m << 13);
    if (e) return sign | ((e + 112) << 23) | (m << 13);
    if (!m) return sign;
    uint32_t sh = 0; /* subnormal m * 2^-24: normalize */
    while (!(m & 0x400u)) {
        m <<= 1;
        sh++;
    }
    return sign | ((113 - sh) << 23) | ((m & 0x3ffu) << 13);
}

static uint32_t get_f32bits(const unsigned char *p, wd_dtype dt, size_t i)
{
    if (dt == WD_F32) {
        uint32_t u;
        memcpy(&u, p + 4 * i, 4);
        return u;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return dt == WD_BF16 ? (uint32_t)h << 16 : f16_to_f32(h);
}

void wd_xdtype_convert(wd_dtype ft_dt, wd_dtype base_dt, const unsigned char *src, size_t bn, unsigned char *dst,
                       size_t n)
{
    unsigned wf = wd_dtype_size(ft_dt), wb = wd_dtype_size(base_dt);
    size_t m = bn / wb;
    if (m > n / wf) m = n / wf;
    if (ft_dt == base_dt) {
        if (m) memcpy(dst, src, m * wf); /* src is NULL when no base bytes fall in range */
    } else if (ft_dt == WD_F32) {
        for (size_t i = 0; i < m; i++) {
            uint32_t u = get_f32bits(src, base_dt, i);
            memcpy(dst + 4 * i, &u, 4);
        }
    } else {
        for (size_t i = 0; i < m; i++) {
            uint32_t u = get_f32bits(src, base_dt, i);
            uint16_t h = ft_dt == WD_BF16 ? wd_f32_to_bf16(u) : wd_f32_to_f16(u);
            memcpy(dst + 2 * i, &h, 2);
        }
    }
    memset(dst + m * wf, 0, n - m * wf);
}

/* The base of output bytes [rel, rel + n) of extent e predicted in dtype
 * `as` (the extent's, or the narrower one a block is coded in): the base
 * range read through wd_delta_base_view, converted into scratch slot 2,
 * m = n / element size(extent) elements. */
static int predict_as(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, wd_dtype as, size_t n, uint64_t rel,
                      const unsigned char **base, wd_err *err)
{
    uint64_t brel;
    size_t bn, m = n / wd_dtype_size(e->pub.dtype), pn = m * wd_dtype_size(as);
    const unsigned char *src = NULL;
    wd_cache_pin *pin = NULL;
    wd_xdtype_range(e->pub.dtype, e->pred_dtype, e->pred_length, rel, n, &brel, &bn);
    if (bn && wd_delta_base_view(d, e, s, bn, brel, &src, &pin, err)) return -1;
    unsigned char *dst = wd_scratch_buf(s, 2, pn);
    if (dst) wd_xdtype_convert(as, e->pred_dtype, src, bn, dst, pn);
    wd_delta_base_done(d, pin);
    if (!dst) return wd_errf(err, "out of memory predicting %zu base bytes", n);
    *base = dst;
    return 0;
}

int wd_xdtype_base_view(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, size_t n, uint64_t rel,
                        const unsigned char **base, wd_err *err)
{
    return predict_as(d, e, s, e->pub.dtype, n, rel, base, err);
}

/* ---- blocks of predicted extents: a form byte, then a lossless block.
 * Form 0: the block in the extent's dtype against the predicted base.
 * Forms 1 (BF16) and 2 (F16), F32 extents only: every value of the block is
 * exactly a BF16 / F16 value (an upcast checkpoint), so the block is coded in
 * that dtype against the base predicted in it, and widened exactly. */
static wd_dtype form_dtype(int form)
{
    return form == 1 ? WD_BF16 : WD_F16;
}

/* 1 if all m F32 values at p are exactly values of dtype `to` (bit for bit
 * after narrowing and widening back). */
static int narrowable(const unsigned char *p, size_t m, wd_dtype to)
{
    for (size_t i = 0; i < m; i++) {
        uint32_t u;
        memcpy(&u, p + 4 * i, 4);
        /* a signalling NaN does not survive (narrowing quiets it) */
        uint32_t back = to == WD_BF16 ? (uint32_t)wd_f32_to_bf16(u) << 16 : f16_to_f32(wd_f32_to_f16(u));
        if (back != u) return 0;
    }
    return 1;
}

static void narrow(const unsigned char *p, size_t m, wd_dtype to, unsigned char *dst)
{
    for (size_t i = 0; i < m; i++) {
        uint32_t u;
        memcpy(&u, p + 4 * i, 4);
        uint16_t h = to == WD_BF16 ? wd_f32_to_bf16(u) : wd_f32_to_f16(u);
        memcpy(dst + 2 * i, &h, 2);
    }
}

int wd_xdtype_encode(wd_scratch *s, wd_dtype dt, int level, const unsigned char *ft, const unsigned char *pbase,
                     size_t n, const unsigned char **out, size_t *out_len, wd_err *err)
{
    int form = 0;
    const unsigned char *bf = ft, *bb = pbase;
    wd_dtype cdt = dt;
    size_t cn = n, m = n / 4;
    if (dt == WD_F32)
        for (int f = 1; f <= 2 && !form; f++)
            if (narrowable(ft, m, form_dtype(f))) form = f;
    if (form) {
        unsigned char *nf = wd_scratch_buf(s, 1, 2 * m), *nb = wd_scratch_buf(s, 2, 2 * m);
        if (!nf || !nb) return wd_errf(err, "out of memory");
        cdt = form_dtype(form);
        narrow(ft, m, cdt, nf);
        narrow(pbase, m, cdt, nb); /* the same as predicting in cdt directly */
        bf = nf;
        bb = nb;
        cn = 2 * m;
    }
    const unsigned char *blk;
    size_t len;
    if (wd_encode_block(s, WD_CODEC_LOSSLESS, cdt, level, bf, bb, cn, &blk, &len, err)) return -1;
    unsigned char *o = wd_scratch_buf(s, 0, len + 1);
    if (!o) return wd_errf(err, "out of memory");
    o[0] = (unsigned char)form;
    memcpy(o + 1, blk, len);
    *out = o;
    *out_len = len + 1;
    return 0;
}

int wd_xdtype_decode(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, const unsigned char *stored,
                     size_t stored_len, uint64_t rel, unsigned char *out, size_t n, wd_err *err)
{
    if (stored_len < 1) return wd_errf(err, "empty block");
    int form = stored[0];
    if (form > 2 || (form && e->pub.dtype != WD_F32))
        return wd_errf(err, "block form %d is not defined for a %s tensor", form, pred_dtype_name(e->pub.dtype));
    wd_dtype cdt = form ? form_dtype(form) : e->pub.dtype;
    size_t m = n / wd_dtype_size(e->pub.dtype), cn = form ? 2 * m : n;
    const unsigned char *pb;
    if (predict_as(d, e, s, cdt, n, rel, &pb, err) ||
        wd_decode_block(s, WD_CODEC_LOSSLESS, cdt, stored + 1, stored_len - 1, pb, out, cn, err))
        return -1;
    if (form) /* widen in place, from the end: element i moves from 2i to 4i */
        for (size_t i = m; i-- > 0;) {
            uint16_t h;
            memcpy(&h, out + 2 * i, 2);
            uint32_t u = form == 1 ? (uint32_t)h << 16 : f16_to_f32(h);
            memcpy(out + 4 * i, &u, 4);
        }
    return 0;
}

int wd_xdtype_read_base(wd_delta *d, const wd_ext_priv *e, unsigned char *dst, size_t n, uint64_t rel, wd_err *err)
{
    wd_scratch *s = wd_scratch_pool_get(&d->pool);
    const unsigned char *b;
    if (!s) return wd_errf(err, "out of memory");
    int rc = wd_xdtype_base_view(d, e, s, n, rel, &b, err);
    if (!rc) memcpy(dst, b, n);
    wd_scratch_pool_put(&d->pool, s);
    return rc;
}

int wd_xdtype_parse(const struct cJSON *x, wd_ext_priv *e, const char *path, const char *fname, size_t k,
                    wd_err *err)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(x, "predict");
    if (!p) return 0;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(p, "base_dtype"),
                *len = cJSON_GetObjectItemCaseSensitive(p, "base_length");
    if (!cJSON_IsObject(p) || !cJSON_IsString(dt) || !cJSON_IsNumber(len))
        return wd_errf(err, "%s: file %s extent %zu: malformed predict (needs base_dtype and base_length)", path,
                       fname, k);
    wd_dtype bd = wd_dtype_from_name(dt->valuestring);
    double v = len->valuedouble;
    if (!pred_dtype_ok(bd) || !pred_dtype_ok(e->pub.dtype))
        return wd_errf(err, "%s: file %s extent %zu: no predictor from a %s base to a %s tensor", path, fname, k,
                       dt->valuestring, pred_dtype_name(e->pub.dtype));
    if (!(v >= 0) || v > 9007199254740992.0 || v != (double)(uint64_t)v ||
        (uint64_t)v % wd_dtype_size(bd))
        return wd_errf(err, "%s: file %s extent %zu: predict base_length is not a whole number of %s elements",
                       path, fname, k, dt->valuestring);
    if (e->pub.codec != WD_CODEC_LOSSLESS || !e->base_tensor)
        return wd_errf(err, "%s: file %s extent %zu: predict is defined for lossless extents with a base tensor only",
                       path, fname, k);
    e->pred = 1;
    e->pred_dtype = bd;
    e->pred_length = (uint64_t)v;
    if (!e->params) {
        char buf[96];
        snprintf(buf, sizeof buf, "{\"base_dtype\":\"%s\",\"base_length\":%llu}", pred_dtype_name(bd),
                 (unsigned long long)e->pred_length);
        if (!(e->params = strdup(buf))) return wd_errf(err, "out of memory");
        e->pub.params = e->params;
    }
    return 0;
}

void wd_xdtype_manifest(struct cJSON *x, const wd_tensor *ft, const wd_tensor *bt)
{
    if (!ft || !bt || !wd_xdtype_fits(ft, bt)) return;
    cJSON *p = cJSON_AddObjectToObject(x, "predict");
    cJSON_AddStringToObject(p, "base_dtype", bt->dtype_name);
    cJSON_AddNumberToObject(p, "base_length", (double)bt->length);
}
