/* test_lowrank.c - the low-rank predictor: the fit finds the rank of
 * synthetic matrices exactly, the decoder's prediction equals an
 * independent scalar evaluation of the documented float32 order bit for
 * bit, lowrank-exact round trips exactly (both residual forms), every row
 * block decodes alone, and corrupt factors and residuals are rejected. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include "codec/lossy.h"
#include "suites.h"

static uint64_t rs = 0x1234567887654321ull;
static double ur(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) * 0x1p-53;
}
static double gr(void)
{
    double u = ur() + 1e-12, v = ur();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
static uint32_t fb(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bf(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* m x n matrix of rank r (Gaussian factors) plus noise of size eps */
static float *lowrank_matrix(size_t m, size_t n, unsigned r, double eps)
{
    double *a = malloc(m * r * sizeof *a), *b = malloc(r * n * sizeof *b);
    float *d = malloc(m * n * sizeof *d);
    for (size_t i = 0; i < m * r; i++) a[i] = gr();
    for (size_t i = 0; i < r * n; i++) b[i] = gr() * 1e-3;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double acc = 0;
            for (unsigned k = 0; k < r; k++) acc += a[i * r + k] * b[k * n + j];
            d[i * n + j] = (float)(acc + eps * gr());
        }
    free(a);
    free(b);
    return d;
}

START_TEST(test_lowrank_fit_rank)
{
    enum { KF = 32 }; /* components fitted (the fit also takes up to WD_LOWRANK_KMAX, bounded by the matrix) */
    static const unsigned ranks[] = {0, 1, 3, 8, 17, 31};
    for (size_t t = 0; t < sizeof ranks / sizeof ranks[0]; t++) {
        size_t m = 160, n = 120;
        float *d = lowrank_matrix(m, n, ranks[t], 0);
        double *uf = malloc(m * KF * sizeof *uf), *vf = malloc(KF * n * sizeof *vf);
        double sv[KF];
        unsigned k;
        wd_err err;
        ck_assert_msg(wd_lowrank_fit(d, m, n, KF, uf, vf, sv, &k, &err) == 0, "%s", err.msg);
        ck_assert_uint_eq(k, KF);
        unsigned r = wd_lowrank_gap_rank(sv, k);
        ck_assert_msg(r == ranks[t], "rank %u found as %u", ranks[t], r);
        /* the rank-r factors rebuild the matrix */
        double e2 = 0, d2 = 0;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double acc = 0;
                for (unsigned c = 0; c < r; c++) acc += uf[i * KF + c] * vf[c * n + j];
                e2 += (acc - d[i * n + j]) * (acc - d[i * n + j]);
                d2 += (double)d[i * n + j] * d[i * n + j];
            }
        ck_assert_msg(e2 <= 1e-8 * d2 + 1e-30, "rank %u: relative error^2 %g", ranks[t], d2 > 0 ? e2 / d2 : e2);
        /* with noise well below the signal the rank is still found */
        free(d);
        d = lowrank_matrix(m, n, ranks[t], 1e-6);
        ck_assert(wd_lowrank_fit(d, m, n, KF, uf, vf, sv, &k, &err) == 0);
        if (ranks[t]) ck_assert_msg(wd_lowrank_gap_rank(sv, k) == ranks[t], "noisy rank %u found as %u", ranks[t],
                                    wd_lowrank_gap_rank(sv, k));
        free(d);
        free(uf);
        free(vf);
    }
    /* kmax beyond the matrix: as many components as its smaller side */
    size_t m = 40, n = 24;
    float *d = lowrank_matrix(m, n, 5, 0);
    double *uf = malloc(m * WD_LOWRANK_KMAX * sizeof *uf), *vf = malloc(WD_LOWRANK_KMAX * n * sizeof *vf);
    double sv[WD_LOWRANK_KMAX];
    unsigned k;
    wd_err err;
    ck_assert(wd_lowrank_fit(d, m, n, WD_LOWRANK_KMAX, uf, vf, sv, &k, &err) == 0);
    ck_assert_uint_eq(k, n);
    ck_assert_uint_eq(wd_lowrank_gap_rank(sv, k), 5);
    free(d), free(uf), free(vf);
}
END_TEST

/* base and ft (BF16, rows x cols): ft = bf16(base + rank-r delta + noise) */
static void make_lora(unsigned char *base, unsigned char *ft, size_t rows, size_t cols, unsigned r, double noise)
{
    float *d = lowrank_matrix(rows, cols, r, noise);
    for (size_t i = 0; i < rows * cols; i++) {
        float b = (float)(gr() * 0.05);
        uint16_t hb = wd_f32_to_bf16(fb(b));
        uint16_t hf = wd_f32_to_bf16(fb(bf(hb) + d[i]));
        memcpy(base + 2 * i, &hb, 2);
        memcpy(ft + 2 * i, &hf, 2);
    }
    free(d);
}

/* read a section of the block independently of lossy.c */
static const unsigned char *sect(const unsigned char *p, size_t *at, size_t want, unsigned char *buf)
{
    const unsigned char *h = p + *at;
    size_t raw = wd_get_u32(h + 1), z = wd_get_u32(h + 5);
    ck_assert_uint_eq(raw, want);
    *at += 9 + z;
    if (h[0] == 0) return h + 9;
    ck_assert_uint_eq(ZSTD_decompress(buf, want + 1, h + 9, z), want);
    return buf;
}

static float half_scaled(const unsigned char *p, size_t i, unsigned e)
{
    uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
    return wd_half_to_float(h) / (float)ldexp(1.0, (int)e);
}

/* cols: 200 = 3 x 64 + 8 and 203 (a scalar tail too): every column path
 * of the decoder's kernel against the scalar reference */
START_TEST(test_lowrank_prediction_bits)
{
    size_t rows = 64, cols = _i ? 203 : 200, n = rows * cols * 2;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n), *ref = malloc(n);
    make_lora(base, ft, rows, cols, 5, 1e-5);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len;
    wd_lossy_params p = {(uint32_t)cols, 0, 0, 0, 3, 0, 0};
    ck_assert_msg(wd_lossy_encode(s, WD_CODEC_LOWRANK, WD_BF16, &p, ft, base, n, &enc, &len, &err) == 0, "%s",
                  err.msg);
    unsigned char *blk = malloc(len);
    memcpy(blk, enc, len);
    ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK, WD_BF16, blk, len, base, out, n, &err) == 0);
    /* independent path: parse the header, decompress, evaluate the order */
    ck_assert_int_eq(blk[0], 'L');
    unsigned rank = wd_get_u32(blk + 12), e = wd_get_u32(blk + 16), eu = e & 0xff, ev = e >> 8;
    ck_assert_uint_eq(rank, 5);
    unsigned char *bu = malloc(rows * rank * 2 + 1), *bv = malloc(rank * cols * 2 + 1);
    size_t at = WD_LOSSY_HDR;
    const unsigned char *hu = sect(blk, &at, rows * rank * 2, bu), *hv = sect(blk, &at, rank * cols * 2, bv);
    ck_assert_uint_eq(at, len);
    size_t diff = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            volatile float acc = 0.0f;
            for (unsigned k = 0; k < rank; k++) {
                volatile float prod = half_scaled(hu, i * rank + k, eu) * half_scaled(hv, k * cols + j, ev);
                acc = acc + prod;
            }
            uint16_t hb;
            memcpy(&hb, base + 2 * (i * cols + j), 2);
            volatile float sum = bf(hb) + acc;
            uint16_t o = wd_f32_to_bf16(fb(sum));
            memcpy(ref + 2 * (i * cols + j), &o, 2);
        }
    ck_assert_msg(memcmp(ref, out, n) == 0, "decoder and the scalar reference differ");
    /* and the prediction is good: most values exact */
    for (size_t i = 0; i < n / 2; i++) diff += memcmp(out + 2 * i, ft + 2 * i, 2) != 0;
    ck_assert_msg(diff < n / 2 / 5, "%zu of %zu predicted values differ", diff, n / 2);
    wd_scratch_free(s);
    free(base), free(ft), free(out), free(ref), free(blk), free(bu), free(bv);
}
END_TEST

START_TEST(test_lowrank_exact_blocks_alone)
{
    static const wd_dtype dts[] = {WD_BF16, WD_F16, WD_F32};
    for (size_t t = 0; t < 3; t++) {
        wd_dtype dt = dts[t];
        unsigned w = wd_dtype_size(dt);
        size_t rows = 384, cols = 130, n = rows * cols * w, ne = rows * cols;
        unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
        float *d = lowrank_matrix(rows, cols, 7, 1e-6);
        for (size_t i = 0; i < ne; i++) {
            float b = (float)(gr() * 0.05);
            float f = b + d[i];
            if (dt == WD_F32) {
                memcpy(base + 4 * i, &b, 4);
                memcpy(ft + 4 * i, &f, 4);
            } else {
                uint16_t hb = dt == WD_BF16 ? wd_f32_to_bf16(fb(b)) : wd_f32_to_f16(fb(b));
                uint16_t hf = dt == WD_BF16 ? wd_f32_to_bf16(fb(f)) : wd_f32_to_f16(fb(f));
                memcpy(base + 2 * i, &hb, 2);
                memcpy(ft + 2 * i, &hf, 2);
            }
        }
        free(d);
        /* three row blocks, each coded and decoded alone with only its rows */
        size_t cuts[4] = {0, 160, 288, rows};
        wd_scratch *s = wd_scratch_new();
        wd_err err;
        size_t total = 0;
        for (int b = 0; b < 3; b++) {
            size_t off = cuts[b] * cols * w, bn = (cuts[b + 1] - cuts[b]) * cols * w;
            unsigned char *bb = malloc(bn), *bf_ = malloc(bn), *bo = malloc(bn);
            memcpy(bb, base + off, bn);
            memcpy(bf_, ft + off, bn);
            const unsigned char *enc;
            size_t len;
            wd_lossy_params p = {(uint32_t)cols, 0, 0, 0, 3, 0, 0};
            ck_assert_msg(wd_lossy_encode(s, WD_CODEC_LOWRANK_EXACT, dt, &p, bf_, bb, bn, &enc, &len, &err) == 0,
                          "%s", err.msg);
            unsigned char *blk = malloc(len);
            memcpy(blk, enc, len);
            total += len;
            wd_scratch *s2 = wd_scratch_new();
            ck_assert_msg(wd_decode_block(s2, WD_CODEC_LOWRANK_EXACT, dt, blk, len, bb, bo, bn, &err) == 0, "%s",
                          err.msg);
            ck_assert_msg(memcmp(bo, bf_, bn) == 0, "dtype %d block %d not exact", (int)dt, b);
            memcpy(out + off, bo, bn);
            /* lossy lowrank decodes alone too */
            ck_assert(wd_lossy_encode(s, WD_CODEC_LOWRANK, dt, &p, bf_, bb, bn, &enc, &len, &err) == 0);
            unsigned char *blk2 = malloc(len);
            memcpy(blk2, enc, len);
            ck_assert(wd_decode_block(s2, WD_CODEC_LOWRANK, dt, blk2, len, bb, bo, bn, &err) == 0);
            wd_scratch_free(s2);
            free(bb), free(bf_), free(bo), free(blk), free(blk2);
        }
        ck_assert(memcmp(out, ft, n) == 0);
        /* smaller than the plain lossless codec on this low-rank delta (16-bit
         * dtypes: for F32 the FP16 factors leave the low mantissa bits
         * unpredicted, and the tensor-level choice keeps plain lossless) */
        const unsigned char *enc;
        size_t plain;
        ck_assert(wd_encode_block(s, WD_CODEC_LOSSLESS, dt, 3, ft, base, n, &enc, &plain, &err) == 0);
        ck_assert_msg(dt == WD_F32 || total < plain, "dtype %d: lowrank-exact %zu bytes, lossless %zu", (int)dt, total, plain);
        /* random (full-rank) data round trips too */
        for (size_t i = 0; i < n; i++) ft[i] = (unsigned char)(base[i] ^ (ur() < 0.3 ? (unsigned)(ur() * 256) : 0));
        size_t len;
        wd_lossy_params p = {(uint32_t)cols, 0, 0, 0, 3, 0, 0};
        ck_assert(wd_lossy_encode(s, WD_CODEC_LOWRANK_EXACT, dt, &p, ft, base, n, &enc, &len, &err) == 0);
        unsigned char *blk = malloc(len);
        memcpy(blk, enc, len);
        ck_assert_msg(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, dt, blk, len, base, out, n, &err) == 0, "%s",
                      err.msg);
        ck_assert(memcmp(out, ft, n) == 0);
        free(blk);
        wd_scratch_free(s);
        free(base), free(ft), free(out);
    }
}
END_TEST

START_TEST(test_lowrank_corrupt)
{
    size_t rows = 2, cols = 4, n = rows * cols * 2;
    unsigned char base[16] = {0}, out[16];
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    /* a hand-made block: rank 1, raw sections */
    unsigned char blk[WD_LOSSY_HDR + 9 + 4 + 9 + 8];
    lhdr h = {WD_CODEC_LOWRANK, 2, 1, (uint32_t)cols, (uint32_t)rows, 1, 0, NULL};
    lh_put(blk, &h);
    size_t at = WD_LOSSY_HDR;
    blk[at] = 0;
    wd_put_u32(blk + at + 1, 4);
    wd_put_u32(blk + at + 5, 4);
    for (int i = 0; i < 2; i++) blk[at + 9 + 2 * i] = 0x00, blk[at + 10 + 2 * i] = 0x3c; /* 1.0 */
    at += 13;
    blk[at] = 0;
    wd_put_u32(blk + at + 1, 8);
    wd_put_u32(blk + at + 5, 8);
    for (int i = 0; i < 4; i++) blk[at + 9 + 2 * i] = 0x00, blk[at + 10 + 2 * i] = 0x38; /* 0.5 */
    ck_assert_msg(wd_decode_block(s, WD_CODEC_LOWRANK, WD_BF16, blk, sizeof blk, base, out, n, &err) == 0, "%s",
                  err.msg);
    for (size_t i = 0; i < 8; i++) ck_assert_float_eq(bf((uint16_t)(out[2 * i] | out[2 * i + 1] << 8)), 0.5f);
    unsigned char bad[sizeof blk];
    /* an infinite factor */
    memcpy(bad, blk, sizeof blk);
    bad[WD_LOSSY_HDR + 9 + 1] = 0x7c;
    ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK, WD_BF16, bad, sizeof bad, base, out, n, &err) != 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "non-finite"));
    /* a rank above the limit, one that does not match the sections, exponents out of range */
    static const uint32_t rk[] = {WD_LOWRANK_KMAX + 1, 2, 0};
    for (int i = 0; i < 3; i++) {
        memcpy(bad, blk, sizeof blk);
        wd_put_u32(bad + 12, rk[i]);
        ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK, WD_BF16, bad, sizeof bad, base, out, n, &err) != 0);
    }
    memcpy(bad, blk, sizeof blk);
    wd_put_u32(bad + 16, 101);
    ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK, WD_BF16, bad, sizeof bad, base, out, n, &err) != 0);
    /* truncated anywhere */
    for (size_t l = 0; l < sizeof blk; l++)
        ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK, WD_BF16, blk, l, base, out, n, &err) != 0);
    /* the wrong codec: a lowrank block read as lowrank-exact has no residual */
    ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, blk, sizeof blk, base, out, n, &err) != 0);
    /* lowrank-exact: a residual length past the block, and byte flips never crash */
    size_t rows2 = 32, cols2 = 48, n2 = rows2 * cols2 * 2;
    unsigned char *b2 = malloc(n2), *f2 = malloc(n2), *o2 = malloc(n2);
    make_lora(b2, f2, rows2, cols2, 3, 1e-5);
    const unsigned char *enc;
    size_t len;
    wd_lossy_params p = {(uint32_t)cols2, 0, 0, 0, 3, 0, 0};
    ck_assert(wd_lossy_encode(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, &p, f2, b2, n2, &enc, &len, &err) == 0);
    unsigned char *e2 = malloc(len);
    for (size_t i = 0; i < 400; i++) {
        memcpy(e2, enc, len);
        size_t pos = (size_t)(ur() * len);
        e2[pos] ^= (unsigned char)(1 + ur() * 255);
        (void)wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, e2, len, b2, o2, n2, &err);
    }
    memcpy(e2, enc, len);
    ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, e2, len, b2, o2, n2, &err) == 0);
    ck_assert(memcmp(o2, f2, n2) == 0);
    ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, e2, len - 1, b2, o2, n2, &err) != 0);
    free(b2), free(f2), free(o2), free(e2);
    wd_scratch_free(s);
}
END_TEST

/* The residual of a lowrank-exact block: offset and length (after the
 * header and the U and V sections). */
static size_t residual_at(const unsigned char *blk, size_t len, size_t *rlen)
{
    size_t at = WD_LOSSY_HDR;
    for (int i = 0; i < 2; i++) at += 9 + wd_get_u32(blk + at + 5);
    *rlen = wd_get_u32(blk + at);
    ck_assert_uint_eq(at + 4 + *rlen, len);
    return at + 4;
}

/* A low-rank delta takes the sparse residual ('S'); corrupting its counts,
 * positions or codes is reported, never a crash or a wrong output taken
 * for a good one. */
START_TEST(test_lowrank_sparse_residual)
{
    size_t rows = 48, cols = 96, ne = rows * cols, n = ne * 2;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    make_lora(base, ft, rows, cols, 4, 1e-5);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len, rlen;
    wd_lossy_params p = {(uint32_t)cols, 0, 0, 0, 3, 0, 0};
    ck_assert(wd_lossy_encode(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, &p, ft, base, n, &enc, &len, &err) == 0);
    unsigned char *blk = malloc(len), *bad = malloc(len);
    memcpy(blk, enc, len);
    size_t ra = residual_at(blk, len, &rlen);
    ck_assert_int_eq(blk[ra], 'S');
    ck_assert_msg(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, blk, len, base, out, n, &err) == 0, "%s",
                  err.msg);
    ck_assert(memcmp(out, ft, n) == 0);
    unsigned k = blk[ra + 1];
    ck_assert(k >= 1 && k <= 8);
    /* header fields: tag, no contexts, too many, reserved byte, lo beyond the exponent field */
    static const struct { size_t off; unsigned char v; } hdr[] = {{0, 'X'}, {1, 0}, {1, 9}, {3, 1}};
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) {
        memcpy(bad, blk, len);
        bad[ra + hdr[i].off] = hdr[i].v;
        ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, bad, len, base, out, n, &err) != 0);
    }
    /* a context count one more, one less, or beyond the block */
    static const int64_t dc[] = {1, -1, (int64_t)1 << 31};
    for (size_t i = 0; i < 3; i++)
        for (unsigned c = 0; c < k; c++) {
            memcpy(bad, blk, len);
            uint32_t v = wd_get_u32(bad + ra + 4 + 4 * c);
            wd_put_u32(bad + ra + 4 + 4 * c, (uint32_t)(v + dc[i]));
            ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, bad, len, base, out, n, &err) != 0);
        }
    /* every byte of the residual flipped in turn: rejected, or (a flip the
     * checks cannot see, e.g. in a code) decoded without a crash */
    for (size_t i = ra; i < len; i++) {
        memcpy(bad, blk, len);
        bad[i] ^= 0x5a;
        (void)wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, bad, len, base, out, n, &err);
    }
    /* truncated residual (length field kept consistent) */
    memcpy(bad, blk, len);
    wd_put_u32(bad + ra - 4, (uint32_t)(rlen - 1));
    ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, bad, len - 1, base, out, n, &err) != 0);
    /* an empty residual */
    memcpy(bad, blk, len);
    wd_put_u32(bad + ra - 4, 0);
    ck_assert(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, bad, ra, base, out, n, &err) != 0);
    wd_scratch_free(s);
    free(base), free(ft), free(out), free(blk), free(bad);
}
END_TEST

/* The other residual form, a lossless-codec block against the prediction
 * ('W'), still decodes: a hand-made rank-0 block, whose prediction is the
 * base itself (finite, nonzero base values). */
START_TEST(test_lowrank_lossless_residual)
{
    size_t rows = 8, cols = 40, ne = rows * cols, n = ne * 2;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    for (size_t i = 0; i < ne; i++) {
        uint16_t hb = wd_f32_to_bf16(fb((float)(0.5 + ur()))), hf = (uint16_t)(hb + (i % 3 == 0));
        memcpy(base + 2 * i, &hb, 2);
        memcpy(ft + 2 * i, &hf, 2);
    }
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t rl;
    ck_assert(wd_encode_block(s, WD_CODEC_LOSSLESS, WD_BF16, 3, ft, base, n, &enc, &rl, &err) == 0);
    size_t len = WD_LOSSY_HDR + 18 + 4 + rl;
    unsigned char *blk = calloc(1, len);
    lhdr h = {WD_CODEC_LOWRANK_EXACT, 2, 1, (uint32_t)cols, (uint32_t)rows, 0, 0, NULL};
    lh_put(blk, &h);
    wd_put_u32(blk + WD_LOSSY_HDR + 18, (uint32_t)rl);
    memcpy(blk + WD_LOSSY_HDR + 22, enc, rl);
    ck_assert_msg(wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, blk, len, base, out, n, &err) == 0, "%s",
                  err.msg);
    ck_assert(memcmp(out, ft, n) == 0);
    wd_scratch_free(s);
    free(base), free(ft), free(out), free(blk);
}
END_TEST

Suite *suite_lowrank(void)
{
    Suite *s = suite_create("lowrank");
    TCase *tc = tcase_create("lowrank");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_lowrank_fit_rank);
    tcase_add_loop_test(tc, test_lowrank_prediction_bits, 0, 2);
    tcase_add_test(tc, test_lowrank_exact_blocks_alone);
    tcase_add_test(tc, test_lowrank_corrupt);
    tcase_add_test(tc, test_lowrank_sparse_residual);
    tcase_add_test(tc, test_lowrank_lossless_residual);
    suite_add_tcase(s, tc);
    return s;
}
