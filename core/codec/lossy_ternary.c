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
 * of cols FP16 column scales], section of the changed mask (bit i%8 of byte
 * i/8 set: element i changed), section of the signs of the changed elements
 * in element order (bit k%8 of byte k/8 set: the k-th changed element moved
 * down).  Padding bits must be 0.  zstd codes the mask (its entropy stage
 * comes within about 1% of the mask's entropy; a 2-bit plane of
 * {0, +, -} codes cost 5-10% more through zstd's match finder); the signs,
 * one random bit each, stay raw. */
#include "codec/lossy.h"
#include <math.h>
#include <stdlib.h>

#define ALS_ROUNDS 4

int wd_ternary_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                      const unsigned char *ft, const unsigned char *base, size_t n, lbuf *out, unsigned *rank_out,
                      wd_err *err)
{
    (void)rank_out;
    unsigned w = wd_dtype_size(dt);
    size_t ne = n / w, cols = p->cols, rows = ne / cols;
    int axis = codec == WD_CODEC_TERNARY_AXIS1;
    ls_bufs b;
    int bufs = ls_bufs_get(s, ne, rows, cols, &b);
    double *cs = axis ? malloc(cols * sizeof *cs) : NULL, *cw = axis ? malloc(cols * sizeof *cw) : NULL;
    unsigned char *mask = calloc(ne / 8 + 1, 1), *sign = calloc(ne / 8 + 1, 1);
    if (bufs || !mask || !sign || (axis && (!cs || !cw))) {
        free(mask);
        free(sign);
        free(cs);
        free(cw);
        return wd_errf(err, "out of memory");
    }
    float *d = b.d, *r = b.r, *c = b.c;
    lf_delta(ft, base, dt, ne, d);
    size_t nnz = 0;
    for (size_t i = 0; i < ne; i++) {
        /* unchanged: ft - base == 0 in float32 (lf_delta maps inf/NaN moves
         * to 0: those elements are rebuilt as the base) */
        if (d[i] != 0) {
            mask[i >> 3] |= (unsigned char)(1u << (i & 7));
            if (d[i] < 0) sign[nnz >> 3] |= (unsigned char)(1u << (nnz & 7));
            nnz++;
        }
        d[i] = fabsf(d[i]);
    }
    for (size_t j = 0; j < cols; j++) c[j] = 1.0f;
    unsigned ec = 0;
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
        ec = ls_round_cols(c, b.ch, cols);
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
    int level = p->level ? p->level : 3;
    int rc = ls_put_scales(out, s, codec, dt, level, &b, rows, cols, axis, ec, err) ||
             lb_section(out, s, mask, (ne + 7) / 8, level, err) || lb_section(out, s, sign, (nnz + 7) / 8, level, err);
    free(mask);
    free(sign);
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
    uint32_t u = wd_f32_bits(v);
    for (size_t j = 0; j < cnt; j++) {
        uint32_t k = q[j];
        uint32_t nz = 0u - ((k | (k >> 1)) & 1u);
        dr[j] = wd_f32_from_bits(((u ^ ((k >> 1) << 31)) & nz) | (~nz & 0x80000000u));
    }
}

WD_VEC
static void row_tern_axis(float *restrict dr, const unsigned char *restrict q, float rs, const float *restrict c,
                          size_t cnt)
{
    for (size_t j = 0; j < cnt; j++) {
        uint32_t k = q[j];
        uint32_t nz = 0u - ((k | (k >> 1)) & 1u);
        dr[j] = wd_f32_from_bits(((wd_f32_bits(rs * c[j]) ^ ((k >> 1) << 31)) & nz) | (~nz & 0x80000000u));
    }
}

/* number of set bits in n bytes */
static size_t popcount_bytes(const unsigned char *p, size_t n)
{
    size_t c = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        c += (size_t)__builtin_popcountll(x);
    }
    for (; i < n; i++) c += (size_t)__builtin_popcount(p[i]);
    return c;
}

/* The 2-bit code plane (4 elements a byte, code 1 plus, 2 minus) from the
 * changed mask and the signs of the changed elements in order, a nibble of
 * the mask (4 elements) a step: dep[m][w] places the low popcount(m) bits
 * of w on the set bits of m. */
static void build_codes(unsigned char *restrict codes, const unsigned char *restrict mask, size_t mbytes,
                        const unsigned char *restrict sign, size_t sbytes)
{
    unsigned char dep[16][16], spread[16], pop[16];
    for (unsigned m = 0; m < 16; m++) {
        pop[m] = (unsigned char)__builtin_popcount(m);
        spread[m] = (unsigned char)((m & 1) | (m & 2) << 1 | (m & 4) << 2 | (m & 8) << 3);
        for (unsigned w = 0; w < 16; w++) {
            unsigned o = 0, k = 0;
            for (unsigned b = 0; b < 4; b++)
                if (m >> b & 1) o |= ((w >> k++) & 1u) << b;
            dep[m][w] = (unsigned char)o;
        }
    }
    uint64_t acc = 0;
    unsigned have = 0;
    size_t sp = 0;
    for (size_t t = 0; t < mbytes; t++) {
        if (have < 8) { /* refill: up to 7 whole bytes */
            while (have <= 56 && sp < sbytes) {
                acc |= (uint64_t)sign[sp++] << have;
                have += 8;
            }
        }
        for (unsigned h = 0; h < 2; h++) {
            unsigned m = (mask[t] >> (4 * h)) & 15u, pc = pop[m];
            unsigned neg = dep[m][acc & ((1u << pc) - 1)];
            acc >>= pc;
            have = have >= pc ? have - pc : 0;
            codes[2 * t + h] = (unsigned char)(spread[m & ~neg] | spread[neg] << 1);
        }
    }
}

int wd_ternary_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r,
                      const unsigned char *base, unsigned char *out, size_t n, wd_err *err)
{
    int axis = codec == WD_CODEC_TERNARY_AXIS1;
    size_t w = h->width, ne = n / w, cols = h->cols, rows = h->rows;
    unsigned er = h->p1, ec = h->p2;
    const char *name = h->name;
    const unsigned char *rh, *chs, *mask, *sign;
    size_t len, mb = (ne + 7) / 8;
    if (ls_get_scales(r, s, h, axis, &rh, &chs, err)) return -1;
    if (lr_section(r, s, LS_C, mb, mb, &mask, &len, err)) return wd_errprefix(err, "%s", name);
    if (ne % 8 && (mask[mb - 1] >> (ne % 8)))
        return wd_errf(err, "%s block: mask bits after element %zu are set", name, ne - 1);
    size_t nnz = popcount_bytes(mask, mb), sb = (nnz + 7) / 8;
    if (lr_section(r, s, LS_G, sb, sb, &sign, &len, err)) return wd_errprefix(err, "%s signs", name);
    if (nnz % 8 && (sign[sb - 1] >> (nnz % 8)))
        return wd_errf(err, "%s block: sign bits after the %zu changed elements are set", name, nnz);
    unsigned char *plane = wd_scratch_buf(s, LS_H, 2 * mb + 8);
    if (!plane) return wd_errf(err, "out of memory");
    build_codes(plane, mask, mb, sign, sb);
    float *dr = (float *)(void *)wd_scratch_buf(s, LS_D, cols * 4);
    unsigned char *q = wd_scratch_buf(s, LS_E, 2 * cols + 16);
    float *c = axis ? (float *)(void *)wd_scratch_buf(s, LS_F, cols * 4) : NULL;
    if (!dr || !q || (axis && !c)) return wd_errf(err, "out of memory");
    uint32_t *q4 = (uint32_t *)(void *)(q + ((cols + 8 + 3) & ~(size_t)3)); /* cols / 4 words after q */
    if (axis)
        for (size_t j = 0; j < cols; j++) c[j] = ls_scale_at(chs, j, ec);
    for (size_t i = 0; i < rows; i++) {
        size_t a = i * cols;
        float rs = ls_scale_at(rh, i, er);
        if (!isfinite(rs) || rs < 0)
            return wd_errf(err, "%s block: row %zu has the scale %g", name, i, (double)rs);
        unpack_codes(q, q4, plane, a, cols);
        if (axis) row_tern_axis(dr, q, rs, c, cols);
        else row_tern(dr, q, rs, cols);
        lf_apply(out + a * w, base + a * w, dt, dr, cols);
    }
    return 0;
}
