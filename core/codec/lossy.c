/* lossy.c - what the lossy codecs share: the block header, length-checked
 * sections (raw or zstd), float32 reconstruction with rounding to the
 * tensor's dtype, top-k selection, exact patches, and the dispatch by codec.
 * The codecs themselves live in lossy_int4.c, lossy_sparse.c and
 * lossy_sign.c (bitdelta and axis1).  Format: core/FORMAT.md. */
#include "codec/lossy.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* ---- output buffer --------------------------------------------------- */
static int lb_reserve(lbuf *b, size_t more)
{
    if (b->oom) return -1;
    if (b->len + more <= b->cap) return 0;
    size_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc < b->len + more) nc *= 2;
    unsigned char *p = realloc(b->p, nc);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = nc;
    return 0;
}

void lb_put(lbuf *b, const void *p, size_t n)
{
    if (n == 0 || lb_reserve(b, n)) return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void lb_u32(lbuf *b, uint32_t v)
{
    unsigned char t[4];
    wd_put_u32(t, v);
    lb_put(b, t, 4);
}

void lb_u16(lbuf *b, uint16_t v)
{
    unsigned char t[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    lb_put(b, t, 2);
}

void lb_varint(lbuf *b, uint64_t v)
{
    unsigned char t[10];
    int n = 0;
    while (v >= 0x80) {
        t[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    t[n++] = (unsigned char)v;
    lb_put(b, t, (size_t)n);
}

int lb_section(lbuf *b, wd_scratch *s, const void *raw, size_t n, int level, wd_err *err)
{
    if (n > UINT32_MAX) return wd_errf(err, "section of %zu bytes is too large", n);
    size_t bound = ZSTD_compressBound(n);
    if (lb_reserve(b, 9 + bound + n)) return wd_errf(err, "out of memory encoding a block");
    unsigned char *h = b->p + b->len;
    size_t z = 0;
    if (n >= 64) {
        if (wd_zstd_compress(s, h + 9, bound, raw, n, level, &z, err)) return -1;
    }
    if (n < 64 || z >= n) {
        h[0] = 0;
        memcpy(h + 9, raw, n);
        z = n;
    } else {
        h[0] = 1;
    }
    wd_put_u32(h + 1, (uint32_t)n);
    wd_put_u32(h + 5, (uint32_t)z);
    b->len += 9 + z;
    return 0;
}

/* ---- reading --------------------------------------------------------- */
int lr_u32(lrd *r, uint32_t *v, wd_err *err)
{
    if (r->len - r->at < 4) return wd_errf(err, "lossy block truncated at byte %zu", r->at);
    *v = wd_get_u32(r->p + r->at);
    r->at += 4;
    return 0;
}

int lr_section(lrd *r, wd_scratch *s, int slot, size_t want, size_t maxlen,
               const unsigned char **out, size_t *out_len, wd_err *err)
{
    if (r->len - r->at < 9) return wd_errf(err, "lossy block truncated at byte %zu (section header)", r->at);
    const unsigned char *h = r->p + r->at;
    unsigned mode = h[0];
    size_t raw = wd_get_u32(h + 1), z = wd_get_u32(h + 5);
    if (mode > 1) return wd_errf(err, "lossy block section at byte %zu has mode %u", r->at, mode);
    if (want != SIZE_MAX && raw != want)
        return wd_errf(err, "lossy block section at byte %zu holds %zu bytes, expected %zu", r->at, raw, want);
    if (raw > maxlen) return wd_errf(err, "lossy block section at byte %zu is too long (%zu bytes)", r->at, raw);
    if (z > r->len - r->at - 9) return wd_errf(err, "lossy block section at byte %zu runs past the block", r->at);
    const unsigned char *src = h + 9;
    if (mode == 0) {
        if (z != raw) return wd_errf(err, "lossy block raw section at byte %zu has inconsistent lengths", r->at);
        *out = src;
    } else {
        unsigned char *dst = wd_scratch_buf(s, slot, raw + 16);
        if (!dst) return wd_errf(err, "out of memory decoding a block");
        size_t got;
        if (wd_zstd_decompress(s, dst, raw, src, z, &got, err))
            return wd_errprefix(err, "lossy block section at byte %zu", r->at);
        if (got != raw)
            return wd_errf(err, "lossy block section at byte %zu decodes to %zu bytes, expected %zu", r->at, got, raw);
        *out = dst;
    }
    *out_len = raw;
    r->at += 9 + z;
    return 0;
}

/* ---- header ---------------------------------------------------------- */
unsigned lh_kind(wd_dtype dt)
{
    return dt == WD_BF16 ? 1 : dt == WD_F16 ? 2 : dt == WD_F32 ? 3 : 0;
}

void lh_put(unsigned char *p, const lhdr *h)
{
    p[0] = WD_LOSSY_TAG;
    p[1] = (unsigned char)h->codec;
    p[2] = (unsigned char)h->width;
    p[3] = (unsigned char)h->kind;
    wd_put_u32(p + 4, h->cols);
    wd_put_u32(p + 8, h->rows);
    wd_put_u32(p + 12, h->p1);
    wd_put_u32(p + 16, h->p2);
    wd_put_u32(p + 20, 0);
}

int lh_get(const unsigned char *src, size_t slen, wd_codec codec, const char *name, wd_dtype dt, size_t n,
           lhdr *h, wd_err *err)
{
    unsigned w = wd_dtype_size(dt);
    if (slen < WD_LOSSY_HDR || src[0] != WD_LOSSY_TAG)
        return wd_errf(err, "lossy block header is malformed (%zu bytes)", slen);
    h->name = name;
    h->codec = src[1];
    h->width = src[2];
    h->kind = src[3];
    h->cols = wd_get_u32(src + 4);
    h->rows = wd_get_u32(src + 8);
    h->p1 = wd_get_u32(src + 12);
    h->p2 = wd_get_u32(src + 16);
    if (h->codec != (unsigned)codec || h->width != w || h->kind != lh_kind(dt) || wd_get_u32(src + 20) != 0)
        return wd_errf(err, "lossy block header does not match its codec %s and dtype (codec %u, width %u)",
                       name, h->codec, h->width);
    if (h->cols == 0 || (uint64_t)h->cols * h->rows * w != n)
        return wd_errf(err, "lossy block holds %u rows of %u, expected %zu bytes", h->rows, h->cols, n);
    return 0;
}

/* ---- floats ---------------------------------------------------------- */

unsigned ls_exponent(const float *v, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] > m) m = v[i];
    if (!(m > 0) || !isfinite(m)) return 0;
    int e = (int)floorf(log2f(16384.0f / m));
    return e < 0 ? 0 : e > 100 ? 100 : (unsigned)e;
}

uint16_t ls_to_half(float v, unsigned e)
{
    return wd_f32_to_f16(wd_f32_bits(v * (1.0f / ls_pow2m(e))));
}

/* ---- the 1-bit codecs' scales ---------------------------------------- */

int ls_bufs_get(wd_scratch *s, size_t ne, size_t rows, size_t cols, ls_bufs *b)
{
    b->d = (float *)(void *)wd_scratch_buf(s, LS_A, ne * 4);
    b->r = (float *)(void *)wd_scratch_buf(s, LS_B, rows * 4);
    b->c = (float *)(void *)wd_scratch_buf(s, LS_C, cols * 4 + 4);
    b->rh = (uint16_t *)(void *)wd_scratch_buf(s, LS_D, rows * 2);
    b->ch = (uint16_t *)(void *)wd_scratch_buf(s, LS_E, cols * 2 + 2);
    return b->d && b->r && b->c && b->rh && b->ch ? 0 : -1;
}

unsigned ls_round_cols(float *c, uint16_t *ch, size_t cols)
{
    float cm = 0;
    for (size_t j = 0; j < cols; j++) cm = c[j] > cm ? c[j] : cm;
    for (size_t j = 0; j < cols; j++) c[j] = cm > 0 ? c[j] / cm : 0.0f;
    unsigned ec = ls_exponent(c, cols);
    for (size_t j = 0; j < cols; j++) {
        ch[j] = ls_to_half(c[j], ec);
        c[j] = ls_scale(ch[j], ec);
    }
    return ec;
}

int ls_put_scales(lbuf *out, wd_scratch *s, wd_codec codec, wd_dtype dt, int level, const ls_bufs *b, size_t rows,
                  size_t cols, int axis, unsigned ec, wd_err *err)
{
    unsigned er = ls_exponent(b->r, rows);
    for (size_t i = 0; i < rows; i++) b->rh[i] = ls_to_half(b->r[i], er);
    unsigned char hdr[WD_LOSSY_HDR];
    lh_put(hdr, &(lhdr){(unsigned)codec, wd_dtype_size(dt), lh_kind(dt), (uint32_t)cols, (uint32_t)rows, er, ec, NULL});
    lb_put(out, hdr, sizeof hdr);
    return lb_section(out, s, b->rh, rows * 2, level, err) || (axis && lb_section(out, s, b->ch, cols * 2, level, err))
               ? -1
               : 0;
}

int ls_get_scales(lrd *r, wd_scratch *s, const lhdr *h, int axis, const unsigned char **rh,
                  const unsigned char **ch, wd_err *err)
{
    unsigned er = h->p1, ec = h->p2;
    if (er > 100 || ec > 100 || (!axis && ec))
        return wd_errf(err, "%s block has scale exponents %u and %u", h->name, er, ec);
    size_t len, rows = h->rows, cols = h->cols;
    *ch = NULL;
    if (lr_section(r, s, LS_A, rows * 2, rows * 2, rh, &len, err) ||
        (axis && lr_section(r, s, LS_B, cols * 2, cols * 2, ch, &len, err)))
        return wd_errprefix(err, "%s", h->name);
    return 0;
}

WD_VEC
static void delta_bf16(const uint16_t *restrict ft, const uint16_t *restrict base, size_t n, float *restrict d)
{
    for (size_t i = 0; i < n; i++) {
        float x = wd_f32_from_bits((uint32_t)ft[i] << 16) - wd_f32_from_bits((uint32_t)base[i] << 16);
        d[i] = isfinite(x) ? x : 0.0f;
    }
}

void lf_delta(const unsigned char *ft, const unsigned char *base, wd_dtype dt, size_t n, float *d)
{
    if (dt == WD_BF16) { /* the common case, vectorized (the same values) */
        delta_bf16((const uint16_t *)(const void *)ft, (const uint16_t *)(const void *)base, n, d);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float x = wd_float_at(ft, dt, i) - wd_float_at(base, dt, i);
        d[i] = isfinite(x) ? x : 0.0f; /* inf/NaN moves are left to patches or dropped */
    }
}

WD_VEC
static void apply_bf16(uint16_t *restrict out, const uint16_t *restrict base, const float *restrict d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = wd_f32_bits(wd_f32_from_bits((uint32_t)base[i] << 16) + d[i]);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
        uint32_t q = (u >> 16) | 0x40;
        out[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

void lf_apply(unsigned char *out, const unsigned char *base, wd_dtype dt, const float *d, size_t n)
{
    if (dt == WD_BF16) {
        apply_bf16((uint16_t *)(void *)out, (const uint16_t *)(const void *)base, d, n);
    } else if (dt == WD_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t b;
            memcpy(&b, base + 2 * i, 2);
            uint16_t o = wd_f32_to_f16(wd_f32_bits(wd_half_to_float(b) + d[i]));
            memcpy(out + 2 * i, &o, 2);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float b;
            memcpy(&b, base + 4 * i, 4);
            b += d[i];
            memcpy(out + 4 * i, &b, 4);
        }
    }
}

/* ---- top-k by magnitude ---------------------------------------------- */
/* |d| as ordered integer keys; a radix select on the top bits finds the
 * threshold, then elements above it and enough of those equal to it (in
 * index order) are taken. */
int wd_topk(const float *d, size_t n, size_t k, uint32_t *idx, wd_scratch *s, wd_err *err)
{
    if (k == 0) return 0;
    if (k >= n) {
        for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
        return 0;
    }
    uint32_t *key = (uint32_t *)(void *)wd_scratch_buf(s, LS_E, n * 4);
    if (!key) return wd_errf(err, "out of memory");
    for (size_t i = 0; i < n; i++) key[i] = wd_f32_bits(d[i]) & 0x7fffffffu;
    /* find the k-th largest key: 4 passes of 8 bits */
    uint32_t prefix = 0, pmask = 0;
    size_t need = k; /* how many still to take among keys matching prefix */
    for (int sh = 24; sh >= 0; sh -= 8) {
        size_t hist[256] = {0};
        for (size_t i = 0; i < n; i++)
            if ((key[i] & pmask) == prefix) hist[(key[i] >> sh) & 0xff]++;
        int b = 255;
        for (; b > 0; b--) {
            if (hist[b] >= need) break;
            need -= hist[b];
        }
        prefix |= (uint32_t)b << sh;
        pmask |= 0xffu << sh;
    }
    /* threshold = prefix: take all keys > prefix and `need` keys == prefix */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (key[i] > prefix) idx[m++] = (uint32_t)i;
        else if (key[i] == prefix && need) {
            idx[m++] = (uint32_t)i;
            need--;
        }
    }
    return m == k ? 0 : wd_errf(err, "internal error selecting %zu of %zu values", k, n);
}

/* ---- exact patches --------------------------------------------------- */
static inline uint32_t keyw(uint32_t x, unsigned w)
{
    uint32_t sign = w == 2 ? 0x8000u : 0x80000000u, all = w == 2 ? 0xffffu : 0xffffffffu;
    return (x & sign) ? (x ^ all) : (x ^ sign);
}

static inline uint32_t unkeyw(uint32_t k, unsigned w)
{
    uint32_t sign = w == 2 ? 0x8000u : 0x80000000u, all = w == 2 ? 0xffffu : 0xffffffffu;
    return (k & sign) ? (k ^ sign) : (k ^ all);
}


/* Layout: section of position gaps (LEB128 varints; the first is the index,
 * then index - previous - 1), then a section of the zigzag key differences
 * as w byte planes (plane p: byte p of every patch). */
int patches_put(lbuf *b, wd_scratch *s, int level, const uint32_t *idx, size_t k,
                const unsigned char *ft, const unsigned char *base, unsigned w, wd_err *err)
{
    lbuf pos = {0};
    unsigned char *planes = malloc(k * w + 1);
    if (!planes) return wd_errf(err, "out of memory");
    uint32_t mask = w == 2 ? 0xffffu : 0xffffffffu, top = w == 2 ? 15 : 31;
    for (size_t j = 0; j < k; j++) {
        lb_varint(&pos, j ? idx[j] - idx[j - 1] - 1 : idx[0]);
        uint32_t dd = (keyw(lf_loadw(ft, idx[j], w), w) - keyw(lf_loadw(base, idx[j], w), w)) & mask;
        uint32_t z = ((dd << 1) ^ (uint32_t)-(int32_t)((dd >> top) & 1)) & mask;
        for (unsigned p = 0; p < w; p++) planes[p * k + j] = (unsigned char)(z >> (8 * p));
    }
    int rc = pos.oom ? wd_errf(err, "out of memory") : 0;
    if (!rc) rc = lb_section(b, s, pos.p, pos.len, level, err);
    if (!rc) rc = lb_section(b, s, planes, k * w, level, err);
    free(pos.p);
    free(planes);
    return rc;
}

int patches_apply(lrd *r, wd_scratch *s, size_t k, unsigned char *out, const unsigned char *base,
                  unsigned w, size_t n, wd_err *err)
{
    const unsigned char *pos, *planes;
    size_t plen, vlen;
    if (k > n) return wd_errf(err, "lossy block has %zu patches for %zu elements", k, n);
    if (lr_section(r, s, LS_C, SIZE_MAX, 10 * k, &pos, &plen, err)) return -1;
    if (lr_section(r, s, LS_D, k * w, k * w, &planes, &vlen, err)) return -1;
    uint32_t mask = w == 2 ? 0xffffu : 0xffffffffu;
    size_t at = 0;
    uint64_t i = 0;
    for (size_t j = 0; j < k; j++) {
        uint64_t v = 0;
        int sh = 0;
        for (;;) {
            if (at >= plen || sh > 35) return wd_errf(err, "lossy block: patch %zu has a malformed position", j);
            unsigned char c = pos[at++];
            v |= (uint64_t)(c & 0x7f) << sh;
            sh += 7;
            if (!(c & 0x80)) break;
        }
        i = j ? i + 1 + v : v;
        if (i >= n) return wd_errf(err, "lossy block: patch %zu at element %llu is past the block (%zu)", j,
                                    (unsigned long long)i, n);
        uint32_t z = 0;
        for (unsigned p = 0; p < w; p++) z |= (uint32_t)planes[p * k + j] << (8 * p);
        uint32_t dd = ((z >> 1) ^ (uint32_t)-(int32_t)(z & 1)) & mask;
        lf_storew(out, (size_t)i, w, unkeyw((keyw(lf_loadw(base, (size_t)i, w), w) + dd) & mask, w));
    }
    if (at != plen) return wd_errf(err, "lossy block: %zu stray bytes after the patch positions", plen - at);
    return 0;
}

/* ---- eligibility and block size --------------------------------------- */
int wd_lossy_eligible(const wd_tensor *t)
{
    if (t->dtype != WD_BF16 && t->dtype != WD_F16 && t->dtype != WD_F32) return 0;
    if (t->ndim < 2 || t->nelem == 0) return 0;
    uint64_t cols = t->shape[t->ndim - 1];
    return cols > 0 && cols <= UINT32_MAX && t->nelem / cols <= UINT32_MAX;
}

uint32_t wd_lossy_block_size(const wd_tensor *t, uint32_t target)
{
    uint64_t w = wd_dtype_size(t->dtype), cols = t->shape[t->ndim - 1], rows = t->nelem / cols;
    uint64_t row = cols * w, unit = 1; /* rows per unit so a unit is a multiple of 8 bytes */
    while ((row * unit) % 8) unit *= 2;
    uint64_t units = target / (row * unit);
    if (units == 0) units = 1;
    uint64_t need = (rows + unit - 1) / unit; /* units for the whole tensor */
    if (units > need) units = need;
    uint64_t bs = units * unit * row;
    return bs > (64u << 20) ? 0 : (uint32_t)bs;
}
