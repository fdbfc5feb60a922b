/* lossy_ternary.c - the zero-aware 1-bit tier: ternary and ternary-axis1.
 *
 * For deltas where many elements did not change at all (fine-tunes trained
 * with the weights kept in bf16 lose every update below half a bf16 step),
 * bitdelta and axis1 give each unchanged element +s or -s and rebuild such
 * tensors worse than the base alone.  These codes keep three states per
 * element: unchanged (D = 0 exactly, so the base element comes back as it
 * was), +s and -s:
 *   ternary:        D_ij = t_ij * r_i
 *   ternary-axis1:  D_ij = t_ij * (r_i * c_j), the product taken in float32
 * with t_ij in {0, +1, -1}: 0 exactly where ft == base (D = -0.0 there,
 * which leaves every base value as it is, -0.0 included).
 *
 * Scales follow the 1-bit codecs' rule (lossy_sign.c), over the changed
 * elements only: r_i makes the rebuilt row's projection on the true one equal
 * to its energy, r_i = sum_j d_ij^2 / sum_j |d_ij| c_j (c = 1 for ternary),
 * unless that leaves the row further from the fine-tune than the base is
 * (sum_j (r_i c_j - |d_ij|)^2 > sum_j d_ij^2, a heavy-tailed row); that row
 * then takes the least-squares scale r_i = sum_j |d_ij| c_j / sum_j c_j^2,
 * whose error is below the row's energy.  c (ternary-axis1) is the rank-1
 * least-squares fit of |d| over the changed elements (alternating least
 * squares, 4 rounds), normalised to a largest value of 1 and rounded to FP16
 * before r is computed.
 *
 * Block layout (after the common header; p1 = exponent of r, p2 = exponent of
 * c, 0 for ternary): section of rows FP16 row scales, [ternary-axis1: section
 * of cols FP16 column scales], section of the codes: 2 bits per element,
 * element i at byte i/4, bits 2*(i%4): 0 unchanged, 1 plus, 2 minus; code 3
 * and non-zero padding bits are errors.  zstd codes the plane (a byte holds
 * four elements, so its entropy stage sees their joint distribution). */
#include "lossy.h"
#include <math.h>
#include <stdlib.h>

#define ALS_ROUNDS 4

int wd_ternary_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                      const unsigned char *ft, const unsigned char *base, size_t n, lbuf *out, wd_err *err)
{
    unsigned w = wd_dtype_size(dt);
    size_t ne = n / w, cols = p->cols, rows = ne / cols;
    int axis = codec == WD_CODEC_TERNARY_AXIS1;
    float *d = (float *)(void *)wd_scratch_buf(s, LS_A, ne * 4);
    float *r = (float *)(void *)wd_scratch_buf(s, LS_B, rows * 4);
    float *c = (float *)(void *)wd_scratch_buf(s, LS_C, cols * 4 + 4);
    uint16_t *rh = (uint16_t *)(void *)wd_scratch_buf(s, LS_D, rows * 2);
    uint16_t *ch = (uint16_t *)(void *)wd_scratch_buf(s, LS_E, cols * 2 + 2);
    double *cs = axis ? malloc(cols * sizeof *cs) : NULL, *cw = axis ? malloc(cols * sizeof *cw) : NULL;
    unsigned char *plane = calloc(ne / 4 + 1, 1);
    if (!d || !r || !c || !rh || !ch || !plane || (axis && (!cs || !cw))) {
        free(plane);
        free(cs);
        free(cw);
        return wd_errf(err, "out of memory");
    }
    lf_delta(ft, base, dt, ne, d);
    for (size_t i = 0; i < ne; i++) {
        /* "unchanged" is the stored bits being equal (lf_delta maps inf/NaN
         * moves to 0: those elements are rebuilt as the base) */
        unsigned code = d[i] > 0 ? 1u : d[i] < 0 ? 2u : 0u;
        plane[i >> 2] |= (unsigned char)(code << (2 * (i & 3)));
        d[i] = fabsf(d[i]);
    }
    for (size_t j = 0; j < cols; j++) c[j] = 1.0f;
    unsigned er = 0, ec = 0;
    if (axis) {
        /* rank-1 ALS of A = |d| over the changed elements (mask M = d != 0):
         * r_i = sum_j A_ij c_j / sum_j M_ij c_j^2, c_j likewise */
        for (size_t j = 0; j < cols; j++) cs[j] = cw[j] = 0;
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) {
                cs[j] += d[i * cols + j];
                cw[j] += d[i * cols + j] > 0;
            }
        for (size_t j = 0; j < cols; j++) c[j] = cw[j] > 0 ? (float)(cs[j] / cw[j]) : 0.0f;
        for (int it = 0; it < ALS_ROUNDS; it++) {
            for (size_t i = 0; i < rows; i++) {
                double a = 0, b = 0;
                for (size_t j = 0; j < cols; j++) {
                    float x = d[i * cols + j];
                    if (x > 0) {
                        a += (double)x * c[j];
                        b += (double)c[j] * c[j];
                    }
                }
                r[i] = b > 0 ? (float)(a / b) : 0.0f;
            }
            for (size_t j = 0; j < cols; j++) cs[j] = cw[j] = 0;
            for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < cols; j++) {
                    float x = d[i * cols + j];
                    if (x > 0) {
                        cs[j] += (double)x * r[i];
                        cw[j] += (double)r[i] * r[i];
                    }
                }
            for (size_t j = 0; j < cols; j++) c[j] = cw[j] > 0 ? (float)(cs[j] / cw[j]) : 0.0f;
        }
        float cm = 0;
        for (size_t j = 0; j < cols; j++) cm = c[j] > cm ? c[j] : cm;
        for (size_t j = 0; j < cols; j++) c[j] = cm > 0 ? c[j] / cm : 0.0f;
        ec = ls_exponent(c, cols);
        for (size_t j = 0; j < cols; j++) {
            ch[j] = ls_to_half(c[j], ec);
            c[j] = ls_scale(ch[j], ec);
        }
    }
    for (size_t i = 0; i < rows; i++) {
        double a1 = 0, a2 = 0, cc = 0; /* sum |d| c, sum d^2, sum c^2 over changed elements */
        for (size_t j = 0; j < cols; j++) {
            float x = d[i * cols + j];
            if (x > 0) {
                a1 += (double)x * c[j];
                a2 += (double)x * x;
                cc += (double)c[j] * c[j];
            }
        }
        /* energy rule unless its error a2 * (a2 cc / a1^2 - 1) exceeds a2 */
        if (a1 <= 0) r[i] = 0;
        else if (a2 * cc <= 2 * a1 * a1) r[i] = (float)(a2 / a1);
        else r[i] = (float)(a1 / cc);
    }
    er = ls_exponent(r, rows);
    for (size_t i = 0; i < rows; i++) rh[i] = ls_to_half(r[i], er);
    unsigned char hdr[WD_LOSSY_HDR];
    lh_put(hdr, &(lhdr){(unsigned)codec, w, lh_kind(dt), (uint32_t)cols, (uint32_t)rows, er, ec});
    lb_put(out, hdr, sizeof hdr);
    int level = p->level ? p->level : 3;
    int rc = lb_section(out, s, rh, rows * 2, level, err) ||
             (axis && lb_section(out, s, ch, cols * 2, level, err)) ||
             lb_section(out, s, plane, (ne + 3) / 4, level, err);
    free(plane);
    free(cs);
    free(cw);
    return rc ? -1 : 0;
}

/* four 2-bit codes of a byte into four bytes, one code each (little-endian
 * uint32: byte k holds bits 2k..2k+1 of the input byte) */
WD_VEC
static void spread_codes(uint32_t *restrict q4, const unsigned char *restrict pp, size_t nbytes)
{
    for (size_t j = 0; j < nbytes; j++) {
        uint32_t b = pp[j];
        q4[j] = (b | b << 6 | b << 12 | b << 18) & 0x03030303u;
    }
}

/* q[j] = the 2-bit code of element a + j (q has room for cnt + 4) */
static void unpack_codes(unsigned char *restrict q, uint32_t *restrict q4, const unsigned char *restrict plane,
                         size_t a, size_t cnt)
{
    size_t j = 0;
    if (a % 4 == 0) {
        size_t nb = cnt / 4;
        spread_codes(q4, plane + a / 4, nb);
        memcpy(q, q4, nb * 4);
        j = nb * 4;
    }
    for (; j < cnt; j++) q[j] = (plane[(a + j) >> 2] >> (2 * ((a + j) & 3))) & 3;
}

/* code 0 -> -0.0 (base + -0.0 is the base, -0.0 included), 1 -> v, 2 -> -v */
WD_VEC
static void row_tern(float *restrict dr, const unsigned char *restrict q, float v, size_t cnt)
{
    uint32_t u = lf_bits(v);
    for (size_t j = 0; j < cnt; j++) {
        uint32_t k = q[j];
        uint32_t nz = 0u - ((k | (k >> 1)) & 1u);
        dr[j] = lf_from_bits(((u ^ ((k >> 1) << 31)) & nz) | (~nz & 0x80000000u));
    }
}

WD_VEC
static void row_tern_axis(float *restrict dr, const unsigned char *restrict q, float rs, const float *restrict c,
                          size_t cnt)
{
    for (size_t j = 0; j < cnt; j++) {
        uint32_t k = q[j];
        uint32_t nz = 0u - ((k | (k >> 1)) & 1u);
        dr[j] = lf_from_bits(((lf_bits(rs * c[j]) ^ ((k >> 1) << 31)) & nz) | (~nz & 0x80000000u));
    }
}

/* 0 when no byte holds code 3 and the padding after ne elements is zero */
WD_VEC
static unsigned bad_codes(const unsigned char *plane, size_t nbytes)
{
    unsigned acc = 0;
    for (size_t i = 0; i < nbytes; i++) acc |= (unsigned)(plane[i] & (plane[i] >> 1) & 0x55u);
    return acc;
}

int wd_ternary_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r,
                      const unsigned char *base, unsigned char *out, size_t n, wd_err *err)
{
    int axis = codec == WD_CODEC_TERNARY_AXIS1;
    size_t w = h->width, ne = n / w, cols = h->cols, rows = h->rows;
    unsigned er = h->p1, ec = h->p2;
    const char *name = wd_codec_name(codec);
    if (er > 100 || ec > 100 || (!axis && ec))
        return wd_errf(err, "%s block has scale exponents %u and %u", name, er, ec);
    const unsigned char *rh, *chs = NULL, *plane;
    size_t len, pb = (ne + 3) / 4;
    if (lr_section(r, s, LS_A, rows * 2, rows * 2, &rh, &len, err) ||
        (axis && lr_section(r, s, LS_B, cols * 2, cols * 2, &chs, &len, err)) ||
        lr_section(r, s, LS_C, pb, pb, &plane, &len, err))
        return wd_errprefix(err, "%s", name);
    if (bad_codes(plane, pb)) {
        size_t i = 0;
        while (i < ne && ((plane[i >> 2] >> (2 * (i & 3))) & 3) != 3) i++;
        return wd_errf(err, "%s block: element %zu has the invalid code 3", name, i);
    }
    if (ne % 4 && (plane[pb - 1] >> (2 * (ne % 4))))
        return wd_errf(err, "%s block: padding bits after element %zu are set", name, ne - 1);
    float *dr = (float *)(void *)wd_scratch_buf(s, LS_D, cols * 4);
    unsigned char *q = wd_scratch_buf(s, LS_E, 2 * cols + 16);
    float *c = axis ? (float *)(void *)wd_scratch_buf(s, LS_F, cols * 4) : NULL;
    if (!dr || !q || (axis && !c)) return wd_errf(err, "out of memory");
    uint32_t *q4 = (uint32_t *)(void *)(q + ((cols + 8 + 3) & ~(size_t)3)); /* cols / 4 words after q */
    if (axis)
        for (size_t j = 0; j < cols; j++) c[j] = ls_scale((uint16_t)(chs[2 * j] | chs[2 * j + 1] << 8), ec);
    for (size_t i = 0; i < rows; i++) {
        size_t a = i * cols;
        float rs = ls_scale((uint16_t)(rh[2 * i] | rh[2 * i + 1] << 8), er);
        if (!isfinite(rs) || rs < 0)
            return wd_errf(err, "%s block: row %zu has the scale %g", name, i, (double)rs);
        unpack_codes(q, q4, plane, a, cols);
        if (axis) row_tern_axis(dr, q, rs, c, cols);
        else row_tern(dr, q, rs, cols);
        lf_apply(out + a * w, base + a * w, dt, dr, cols);
    }
    return 0;
}
