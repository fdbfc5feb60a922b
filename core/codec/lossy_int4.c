/* lossy_int4.c - the int4 codec: 4-bit codes with an FP16 scale per group
 * of G consecutive elements of a row, the largest |delta| of each block kept
 * exactly, codes entropy-coded with zstd (two codes a byte, so its Huffman
 * stage sees pairs).
 *
 * Encoding a block: D = ft - base in float32; the k = round(outliers * n)
 * largest |D| become exact patches and count as 0 below; for each group the
 * scale s is chosen among clip * max|D| / 7 (clip in 1, 0.9 .. 0.5) by the
 * smallest squared error, or (p->step > 0) s = max(max|D| / 7.5, step), step
 * = p->step times the RMS of the block's changed values (D != 0, outliers
 * excluded: a mostly-unchanged delta, as pure-bf16 training leaves, would
 * otherwise get a step scaled down by its zeros); s is stored as FP16 * 2^-E;
 * an unchanged element (D = 0) gets code 0 and stays exactly the base; codes
 * q = clamp(rint(D / s), -8, 7) are stored as q + 8.  Decoding: D = q * s. */
#include "codec/lossy.h"
#include <math.h>
#include <stdlib.h>

#define CLIPS 6
static const float clip_steps[CLIPS] = {1.0f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f};

static inline int quant(float x, float inv)
{
    float q = rintf(x * inv);
    return q < -8.0f ? -8 : q > 7.0f ? 7 : (int)q;
}

static float best_scale(const float *d, size_t m)
{
    float amax = 0;
    for (size_t j = 0; j < m; j++) {
        float a = fabsf(d[j]);
        if (a > amax) amax = a;
    }
    if (amax == 0) return 0;
    float best = 0, best_err = INFINITY;
    for (int c = 0; c < CLIPS; c++) {
        float s = clip_steps[c] * amax / 7.0f, inv = 1.0f / s, e = 0;
        for (size_t j = 0; j < m; j++) {
            float r = d[j] - (float)quant(d[j], inv) * s;
            e += r * r;
        }
        if (e < best_err) {
            best_err = e;
            best = s;
        }
    }
    return best;
}

int wd_int4_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p, const unsigned char *ft,
                   const unsigned char *base, size_t n, lbuf *out, unsigned *rank_out, wd_err *err)
{
    (void)codec;
    (void)rank_out;
    unsigned w = wd_dtype_size(dt);
    size_t ne = n / w, cols = p->cols, rows = ne / cols;
    size_t g = p->group ? p->group : 64;
    if (g < 2 || g > 65536 || g % 2) return wd_errf(err, "int4 group size %zu must be even, 2..65536", g);
    double frac = p->outliers < 0 ? 0 : p->outliers;
    if (frac > 1) return wd_errf(err, "int4 outlier fraction %g must be in [0, 1]", frac);
    size_t k = (size_t)llround(frac * (double)ne);
    size_t gpr = (cols + g - 1) / g, ng = rows * gpr;
    float *d = (float *)(void *)wd_scratch_buf(s, LS_A, ne * 4);
    uint32_t *idx = (uint32_t *)(void *)wd_scratch_buf(s, LS_B, k * 4 + 4);
    float *sc = (float *)(void *)wd_scratch_buf(s, LS_C, ng * 4);
    uint16_t *sh = (uint16_t *)(void *)wd_scratch_buf(s, LS_D, ng * 2);
    unsigned char *codes = malloc(ne / 2 + 1);
    if (!d || !idx || !sc || !sh || !codes) {
        free(codes);
        return wd_errf(err, "out of memory");
    }
    lf_delta(ft, base, dt, ne, d);
    if (wd_topk(d, ne, k, idx, s, err)) {
        free(codes);
        return -1;
    }
    for (size_t j = 0; j < k; j++) d[idx[j]] = 0;
    float step = 0;
    if (p->step > 0) { /* RMS of the values that changed (outliers excluded) */
        double ss = 0;
        size_t nz = 0;
        for (size_t i = 0; i < ne; i++) {
            ss += (double)d[i] * d[i];
            nz += d[i] != 0;
        }
        step = (float)(p->step * sqrt(ss / (double)(nz ? nz : 1)));
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t q = 0; q < gpr; q++) {
            size_t a = r * cols + q * g, m = q * g + g <= cols ? g : cols - q * g;
            if (step > 0) {
                float amax = 0;
                for (size_t j = 0; j < m; j++) amax = fabsf(d[a + j]) > amax ? fabsf(d[a + j]) : amax;
                sc[r * gpr + q] = amax == 0 ? 0 : amax / 7.5f > step ? amax / 7.5f : step;
            } else {
                sc[r * gpr + q] = best_scale(d + a, m);
            }
        }
    unsigned e = ls_exponent(sc, ng);
    for (size_t i = 0; i < ng; i++) sh[i] = ls_to_half(sc[i], e);
    memset(codes, 0, ne / 2 + 1);
    for (size_t r = 0; r < rows; r++)
        for (size_t q = 0; q < gpr; q++) {
            size_t a = r * cols + q * g, m = q * g + g <= cols ? g : cols - q * g;
            float sq = ls_scale(sh[r * gpr + q], e);
            float inv = sq > 0 ? 1.0f / sq : 0.0f;
            for (size_t j = 0; j < m; j++) {
                size_t i = a + j;
                unsigned c = (unsigned)(quant(d[i], inv) + 8);
                codes[i >> 1] |= (unsigned char)(c << ((i & 1) * 4));
            }
        }
    unsigned char hdr[WD_LOSSY_HDR];
    lh_put(hdr, &(lhdr){WD_CODEC_INT4, w, lh_kind(dt), (uint32_t)cols, (uint32_t)rows, (uint32_t)g, e, NULL});
    lb_put(out, hdr, sizeof hdr);
    lb_u32(out, (uint32_t)k);
    int level = p->level ? p->level : 3;
    int rc = lb_section(out, s, sh, ng * 2, level, err) || lb_section(out, s, codes, (ne + 1) / 2, level, err) ||
             (k && patches_put(out, s, level, idx, k, ft, base, w, err));
    free(codes);
    return rc ? -1 : 0;
}

WD_VEC
static void group_values(float *restrict dr, const unsigned char *restrict q, size_t m, float s)
{
    for (size_t j = 0; j < m; j++) dr[j] = (float)((int)q[j] - 8) * s;
}

WD_VEC
static void unpack_nibbles(unsigned char *restrict q, const unsigned char *restrict codes, size_t pairs)
{
    for (size_t j = 0; j < pairs; j++) {
        q[2 * j] = codes[j] & 15;
        q[2 * j + 1] = codes[j] >> 4;
    }
}

int wd_int4_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r, const unsigned char *base,
                   unsigned char *out, size_t n, wd_err *err)
{
    (void)codec;
    unsigned w = h->width;
    size_t ne = n / w, cols = h->cols, rows = h->rows, g = h->p1;
    unsigned e = h->p2;
    if (g < 2 || g > 65536 || g % 2 || e > 100)
        return wd_errf(err, "int4 block has group size %zu and exponent %u", g, e);
    uint32_t k;
    if (lr_u32(r, &k, err)) return -1;
    if (k > ne) return wd_errf(err, "int4 block has %u outliers for %zu elements", k, ne);
    size_t gpr = (cols + g - 1) / g, ng = rows * gpr;
    const unsigned char *sh, *codes;
    size_t len;
    if (lr_section(r, s, LS_A, ng * 2, ng * 2, &sh, &len, err) ||
        lr_section(r, s, LS_B, (ne + 1) / 2, (ne + 1) / 2, &codes, &len, err))
        return wd_errprefix(err, "int4");
    float *dr = (float *)(void *)wd_scratch_buf(s, LS_E, cols * 4);
    unsigned char *q = wd_scratch_buf(s, LS_D, cols + 2);
    if (!dr || !q) return wd_errf(err, "out of memory");
    for (size_t row = 0; row < rows; row++) {
        size_t a = row * cols;
        /* nibbles of this row: element a is the low nibble of byte a/2 when a is even */
        if (a % 2 == 0) {
            unpack_nibbles(q, codes + a / 2, cols / 2);
            if (cols % 2) q[cols - 1] = codes[(a + cols - 1) / 2] & 15;
        } else {
            for (size_t j = 0; j < cols; j++) q[j] = (codes[(a + j) >> 1] >> (((a + j) & 1) * 4)) & 15;
        }
        for (size_t t = 0; t < gpr; t++) {
            size_t m = t * g + g <= cols ? g : cols - t * g;
            const unsigned char *hp = sh + 2 * (row * gpr + t);
            group_values(dr + t * g, q + t * g, m, ls_scale((uint16_t)(hp[0] | hp[1] << 8), e));
        }
        lf_apply(out + a * w, base + a * w, h->width == 4 ? WD_F32 : dt, dr, cols);
    }
    if (k && patches_apply(r, s, k, out, base, w, ne, err)) return wd_errprefix(err, "int4 outliers");
    return 0;
}
