/* lossy_sign.c - the two 1-bit codecs: one sign bit per element plus scales.
 *
 * Scale rule (both codecs): each row's scale makes the rebuilt delta's
 * projection on the true one equal to the true one's energy,
 * <D_i, d_i> = ||d_i||^2, instead of minimising ||D_i - d_i||.  The
 * least-squares scale shrinks every update by (E|d|)^2 / E d^2 (0.67 on pairB)
 * and costs far more perplexity than the extra noise of this one (pairB:
 * +8.0% against +0.3%, core/FORMAT.md).
 *
 *   bitdelta: D_ij = sign_ij * r_i, r_i = sum_j d_ij^2 / sum_j |d_ij|.
 *   axis1:    D_ij = sign_ij * (r_i * c_j), the product taken in float32;
 *             r and c are the rank-1 least-squares fit of A = |ft - base| over
 *             the block's rows (A ~ r c^T), found by alternating least squares
 *             (c from column means, then 4 rounds of r_i = sum_j A_ij c_j /
 *             sum_j c_j^2 and c_j = sum_i A_ij r_i / sum_i r_i^2); since the
 *             sign is exact, ||D - delta||^2 = ||A - r c^T||^2, so this fit is
 *             the least-squares fit of that shape.  c is rounded to FP16
 *             first; then r_i = sum_j d_ij^2 / sum_j |d_ij| c_j (the scale rule
 *             above, against the rounded c).
 * Scales are FP16 * 2^-E with a per-block exponent for r (p1) and c (p2).
 * The sign plane (bit i of the block at byte i/8, bit i%8; 1 = negative) is
 * one section (zstd only if that is smaller). */
#include "codec/lossy.h"
#include <math.h>
#include <stdlib.h>

#define ALS_ROUNDS 4

/* One half-step of the rank-1 fit A ~ r c^T: out_k = sum_m A(k, m) v_m /
 * sum_m v_m^2 (0 when v is all 0), A(k, m) = d[k * ks + m * ms], for
 * nk values of k and nm of m: r from c (ks = cols, ms = 1) or c from r
 * (ks = 1, ms = cols); sums in double, in m order. */
static void als_half(const float *d, size_t nk, size_t nm, size_t ks, size_t ms, const float *v, float *res)
{
    double vv = 0;
    for (size_t m = 0; m < nm; m++) vv += (double)v[m] * v[m];
    for (size_t k = 0; k < nk; k++) {
        double acc = 0;
        for (size_t m = 0; m < nm; m++) acc += (double)d[k * ks + m * ms] * v[m];
        res[k] = vv > 0 ? (float)(acc / vv) : 0.0f;
    }
}


int wd_sign_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                   const unsigned char *ft, const unsigned char *base, size_t n, lbuf *out, unsigned *rank_out,
                   wd_err *err)
{
    (void)rank_out;
    unsigned w = wd_dtype_size(dt);
    size_t ne = n / w, cols = p->cols, rows = ne / cols;
    int axis = codec == WD_CODEC_AXIS1;
    ls_bufs b;
    unsigned char *plane = calloc(ne / 8 + 1, 1);
    if (ls_bufs_get(s, ne, rows, cols, &b) || !plane) {
        free(plane);
        return wd_errf(err, "out of memory");
    }
    float *d = b.d, *r = b.r, *c = b.c;
    lf_delta(ft, base, dt, ne, d);
    for (size_t i = 0; i < ne; i++) {
        if (d[i] < 0) plane[i >> 3] |= (unsigned char)(1u << (i & 7));
        d[i] = fabsf(d[i]);
    }
    unsigned ec = 0;
    if (axis) {
        /* rank-1 ALS on A = |d| (double accumulators) */
        for (size_t j = 0; j < cols; j++) c[j] = 0;
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) c[j] += d[i * cols + j];
        for (int it = 0; it < ALS_ROUNDS; it++) {
            als_half(d, rows, cols, cols, 1, c, r);
            als_half(d, cols, rows, 1, cols, r, c);
        }
        /* balance: max c = 1 (the exponent keeps FP16 precise), r refitted */
        ec = ls_round_cols(c, b.ch, cols);
        for (size_t i = 0; i < rows; i++) { /* r_i: <D_i, d_i> = ||d_i||^2 */
            double a1 = 0, a2 = 0;
            for (size_t j = 0; j < cols; j++) {
                a1 += (double)d[i * cols + j] * c[j];
                a2 += (double)d[i * cols + j] * d[i * cols + j];
            }
            r[i] = a1 > 0 ? (float)(a2 / a1) : 0.0f;
        }
    } else {
        for (size_t i = 0; i < rows; i++) { /* r = sum d^2 / sum |d|: <D, d> = ||d||^2 */
            double a1 = 0, a2 = 0;
            for (size_t j = 0; j < cols; j++) {
                a1 += d[i * cols + j];
                a2 += (double)d[i * cols + j] * d[i * cols + j];
            }
            r[i] = a1 > 0 ? (float)(a2 / a1) : 0.0f;
        }
    }
    int level = p->level ? p->level : 3;
    int rc = ls_put_scales(out, s, codec, dt, level, &b, rows, cols, axis, ec, err) ||
             lb_section(out, s, plane, (ne + 7) / 8, level, err);
    free(plane);
    return rc ? -1 : 0;
}

/* q[j] = 0x80 if element a+j is negative, else 0: eight bits a step
 * (a multiply spreads a byte's bits, one per byte lane) */
static void unpack_signs(unsigned char *restrict q, const unsigned char *restrict plane, size_t a, size_t cnt)
{
    size_t j = 0;
    if (a % 8 == 0) {
        const unsigned char *pp = plane + a / 8;
        const uint64_t hi = 0x8080808080808080ull, lo = 0x7f7f7f7f7f7f7f7full;
        for (; j + 8 <= cnt; j += 8) {
            uint64_t x = ((uint64_t)pp[j / 8] * 0x0101010101010101ull) & 0x8040201008040201ull;
            x = (((x & lo) + lo) | x) & hi;
            memcpy(q + j, &x, 8); /* little-endian: byte k is bit k */
        }
    }
    for (; j < cnt; j++) q[j] = (unsigned char)(((plane[(a + j) >> 3] >> ((a + j) & 7)) & 1) << 7);
}

WD_VEC
static void row_const(float *restrict dr, const unsigned char *restrict q, float sc, size_t cnt)
{
    uint32_t u = wd_f32_bits(sc);
    for (size_t j = 0; j < cnt; j++) dr[j] = wd_f32_from_bits(u ^ ((uint32_t)q[j] << 24));
}

WD_VEC
static void row_axis(float *restrict dr, const unsigned char *restrict q, float rs, const float *restrict c, size_t cnt)
{
    for (size_t j = 0; j < cnt; j++) dr[j] = wd_f32_from_bits(wd_f32_bits(rs * c[j]) ^ ((uint32_t)q[j] << 24));
}

int wd_sign_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r,
                   const unsigned char *base, unsigned char *out, size_t n, wd_err *err)
{
    int axis = codec == WD_CODEC_AXIS1;
    size_t w = h->width, ne = n / w, cols = h->cols, rows = h->rows;
    unsigned er = h->p1, ec = h->p2;
    const unsigned char *rh, *chs, *plane;
    size_t len;
    if (ls_get_scales(r, s, h, axis, &rh, &chs, err)) return -1;
    if (lr_section(r, s, LS_C, (ne + 7) / 8, (ne + 7) / 8, &plane, &len, err)) return wd_errprefix(err, "%s", h->name);
    float *dr = (float *)(void *)wd_scratch_buf(s, LS_D, cols * 4);
    unsigned char *m = wd_scratch_buf(s, LS_E, cols + 8);
    float *c = axis ? (float *)(void *)wd_scratch_buf(s, LS_F, cols * 4) : NULL;
    if (!dr || !m || (axis && !c)) return wd_errf(err, "out of memory");
    if (axis)
        for (size_t j = 0; j < cols; j++) c[j] = ls_scale_at(chs, j, ec);
    for (size_t i = 0; i < rows; i++) {
        size_t a = i * cols;
        float rs = ls_scale_at(rh, i, er);
        unpack_signs(m, plane, a, cols);
        if (axis) row_axis(dr, m, rs, c, cols);
        else row_const(dr, m, rs, cols);
        lf_apply(out + a * w, base + a * w, dt, dr, cols);
    }
    return 0;
}
