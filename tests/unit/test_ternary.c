/* test_ternary.c - the zero-aware 1-bit tier (ternary, ternary-axis1) and
 * int4 on mostly-unchanged deltas: unchanged elements rebuilt bit for bit,
 * relative error <= 1 where the dense 1-bit codes exceed it, heavy-tailed
 * rows, and corrupt blocks rejected without a crash. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "codec/lossy.h"
#include "suites.h"

static uint64_t trng = 0x2545F4914F6CDD1Dull;
static uint64_t tr_next(void)
{
    trng ^= trng << 13;
    trng ^= trng >> 7;
    trng ^= trng << 17;
    return trng;
}
static double tr_u(void)
{
    return (double)(tr_next() >> 11) * 0x1p-53;
}
static double tr_g(void)
{
    double u = tr_u() + 1e-12, v = tr_u();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static void tput(unsigned char *p, wd_dtype dt, size_t i, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    if (dt == WD_F32) memcpy(p + 4 * i, &v, 4);
    else {
        uint16_t h = dt == WD_BF16 ? wd_f32_to_bf16(u) : wd_f32_to_f16(u);
        memcpy(p + 2 * i, &h, 2);
    }
}

/* A delta the way pure-bf16 training leaves it: a fraction `changed` of
 * the elements moves (by a heavy-tailed amount), the rest is bit for bit
 * the base; some base values are -0.0. */
static void sparse_pair(unsigned char *base, unsigned char *ft, wd_dtype dt, size_t rows, size_t cols,
                        double changed)
{
    unsigned w = wd_dtype_size(dt);
    for (size_t i = 0; i < rows * cols; i++) {
        float b = (float)(0.05 * tr_g());
        if (tr_next() % 50 == 0) b = -0.0f;
        tput(base, dt, i, b);
        if (tr_u() < changed) {
            double d = 2e-3 * tr_g() * (tr_next() % 20 == 0 ? 6 : 1);
            tput(ft, dt, i, (float)(wd_float_at(base, dt, i) + d));
        } else {
            memcpy(ft + i * w, base + i * w, w);
        }
    }
}

static double rel_of(const unsigned char *base, const unsigned char *ft, const unsigned char *out, wd_dtype dt,
                     size_t ne)
{
    double e2 = 0, d2 = 0;
    for (size_t i = 0; i < ne; i++) {
        double f = wd_float_at(ft, dt, i), b = wd_float_at(base, dt, i), x = wd_float_at(out, dt, i);
        e2 += (x - f) * (x - f);
        d2 += (f - b) * (f - b);
    }
    return d2 > 0 ? sqrt(e2 / d2) : (e2 > 0 ? INFINITY : 0);
}

static double code_rel(wd_codec c, wd_dtype dt, const unsigned char *base, const unsigned char *ft, size_t rows,
                       size_t cols, unsigned char *out, size_t *stored)
{
    size_t n = rows * cols * wd_dtype_size(dt);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len;
    wd_lossy_params p = {(uint32_t)cols, 128, 0.002, 0.1, 3, 0.6, 0};
    ck_assert_msg(wd_lossy_encode(s, c, dt, &p, ft, base, n, &enc, &len, &err) == 0, "%s", err.msg);
    unsigned char *copy = malloc(len);
    memcpy(copy, enc, len);
    ck_assert_msg(wd_decode_block(s, c, dt, copy, len, base, out, n, &err) == 0, "%s: %s", wd_codec_name(c), err.msg);
    if (stored) *stored = len;
    free(copy);
    wd_scratch_free(s);
    return rel_of(base, ft, out, dt, rows * cols);
}

/* unchanged elements come back bit for bit; changed ones never move the
 * wrong way */
static void check_zero_kept(const unsigned char *base, const unsigned char *ft, const unsigned char *out, wd_dtype dt,
                            size_t ne, const char *what, int exact_bits)
{
    unsigned w = wd_dtype_size(dt);
    for (size_t i = 0; i < ne; i++) {
        if (!memcmp(ft + i * w, base + i * w, w)) {
            /* ternary: bit for bit; int4 (its D = +0.0 decode is fixed by
             * older files): the same value, -0.0 may come back as +0.0 */
            if (exact_bits)
                ck_assert_msg(!memcmp(out + i * w, base + i * w, w), "%s dtype %d: unchanged element %zu altered",
                              what, (int)dt, i);
            else
                ck_assert_msg(wd_float_at(out, dt, i) == wd_float_at(base, dt, i), "%s dtype %d: unchanged element %zu altered",
                              what, (int)dt, i);
        } else {
            double d = wd_float_at(ft, dt, i) - wd_float_at(base, dt, i), x = wd_float_at(out, dt, i) - wd_float_at(base, dt, i);
            ck_assert_msg(d * x >= 0, "%s dtype %d: element %zu moved against its delta", what, (int)dt, i);
        }
    }
}

START_TEST(test_ternary_roundtrip)
{
    static const wd_dtype dts[] = {WD_BF16, WD_F16, WD_F32};
    size_t rows = 48, cols = 200; /* cols not a multiple of 4: codes straddle rows */
    for (size_t k = 0; k < 3; k++) {
        wd_dtype dt = dts[k];
        size_t n = rows * cols * wd_dtype_size(dt);
        unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
        sparse_pair(base, ft, dt, rows, cols, 0.18);
        size_t st_t, st_b;
        double rt = code_rel(WD_CODEC_TERNARY, dt, base, ft, rows, cols, out, &st_t);
        check_zero_kept(base, ft, out, dt, rows * cols, "ternary", 1);
        double rta = code_rel(WD_CODEC_TERNARY_AXIS1, dt, base, ft, rows, cols, out, NULL);
        check_zero_kept(base, ft, out, dt, rows * cols, "ternary-axis1", 1);
        double rb = code_rel(WD_CODEC_BITDELTA, dt, base, ft, rows, cols, out, &st_b);
        double ra = code_rel(WD_CODEC_AXIS1, dt, base, ft, rows, cols, out, NULL);
        /* the dense codes rebuild this worse than the base; the ternary ones do not */
        ck_assert_msg(rb > 1.0 && ra > 1.0, "dense 1-bit codes: %g %g", rb, ra);
        ck_assert_msg(rt < 1.0 && rta < 1.0, "ternary %g, ternary-axis1 %g", rt, rta);
        /* 18% changed: entropy H(0.18) + 0.18 = 0.86 bits an element; zstd
         * plus 48 FP16 row scales (0.08) and section headers: under 1.1 */
        ck_assert_msg((double)st_t * 8 / (double)(rows * cols) < 1.1, "ternary: %zu bytes", st_t);
        /* int4 keeps unchanged values exactly too */
        double ri = code_rel(WD_CODEC_INT4, dt, base, ft, rows, cols, out, NULL);
        check_zero_kept(base, ft, out, dt, rows * cols, "int4", 0);
        ck_assert_msg(ri < 0.3, "int4 %g", ri);
        free(base);
        free(ft);
        free(out);
    }
}
END_TEST

/* A heavy-tailed row (one large change, many tiny ones): the energy rule
 * would overshoot; the row takes the least-squares scale and stays < 1. */
START_TEST(test_ternary_heavy_row)
{
    size_t rows = 4, cols = 256, n = rows * cols * 4;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    for (size_t i = 0; i < rows * cols; i++) {
        float b = (float)(0.1 * tr_g());
        tput(base, WD_F32, i, b);
        tput(ft, WD_F32, i, b + (i % cols == 7 ? 1.0f : (i % 3 ? 1e-4f : 0.0f)));
    }
    double rt = code_rel(WD_CODEC_TERNARY, WD_F32, base, ft, rows, cols, out, NULL);
    double rta = code_rel(WD_CODEC_TERNARY_AXIS1, WD_F32, base, ft, rows, cols, out, NULL);
    ck_assert_msg(rt <= 1.0 && rta <= 1.0, "ternary %g, ternary-axis1 %g", rt, rta);
    /* bitdelta's energy rule alone: far above 1 here */
    ck_assert(code_rel(WD_CODEC_BITDELTA, WD_F32, base, ft, rows, cols, out, NULL) > 1.0);
    free(base);
    free(ft);
    free(out);
}
END_TEST

/* Exactly unchanged tensors and all-changed ones */
START_TEST(test_ternary_edges)
{
    size_t rows = 8, cols = 33, n = rows * cols * 2;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    sparse_pair(base, ft, WD_BF16, rows, cols, 0.0);
    ck_assert(code_rel(WD_CODEC_TERNARY, WD_BF16, base, ft, rows, cols, out, NULL) == 0);
    ck_assert(!memcmp(out, base, n));
    ck_assert(code_rel(WD_CODEC_TERNARY_AXIS1, WD_BF16, base, ft, rows, cols, out, NULL) == 0);
    ck_assert(!memcmp(out, base, n));
    sparse_pair(base, ft, WD_BF16, rows, cols, 1.0);
    ck_assert(code_rel(WD_CODEC_TERNARY, WD_BF16, base, ft, rows, cols, out, NULL) <= 1.0);
    free(base);
    free(ft);
    free(out);
}
END_TEST

START_TEST(test_ternary_corrupt)
{
    static const wd_codec cs[2] = {WD_CODEC_TERNARY, WD_CODEC_TERNARY_AXIS1};
    size_t rows = 16, cols = 50, ne = rows * cols, n = ne * 2;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    sparse_pair(base, ft, WD_BF16, rows, cols, 0.3);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    for (int c = 0; c < 2; c++) {
        const unsigned char *enc;
        size_t len;
        /* level 0 -> 3; small sections are stored raw, so the code plane
         * can be edited in place below */
        wd_lossy_params p = {(uint32_t)cols, 0, 0, 0, -5, 0, 0};
        ck_assert_msg(wd_lossy_encode(s, cs[c], WD_BF16, &p, ft, base, n, &enc, &len, &err) == 0, "%s", err.msg);
        unsigned char *cp = malloc(len + 1);
        memcpy(cp, enc, len);
        ck_assert(wd_decode_block(s, cs[c], WD_BF16, cp, len, base, out, n, &err) == 0);
        for (size_t t = 0; t < len; t++)
            ck_assert_msg(wd_decode_block(s, cs[c], WD_BF16, cp, t, base, out, n, &err) == -1,
                          "%s truncated to %zu decoded", wd_codec_name(cs[c]), t);
        cp[len] = 0;
        ck_assert(wd_decode_block(s, cs[c], WD_BF16, cp, len + 1, base, out, n, &err) == -1);
        ck_assert(wd_decode_block(s, cs[1 - c], WD_BF16, cp, len, base, out, n, &err) == -1);
        ck_assert(wd_decode_block(s, WD_CODEC_BITDELTA, WD_BF16, cp, len, base, out, n, &err) == -1);
        ck_assert(wd_decode_block(s, cs[c], WD_F16, cp, len, base, out, n, &err) == -1);
        /* random damage: an error or other values, never a crash */
        for (int k = 0; k < 400; k++) {
            size_t i = tr_next() % len;
            unsigned char old = cp[i];
            cp[i] ^= (unsigned char)(1 + tr_next() % 255);
            (void)wd_decode_block(s, cs[c], WD_BF16, cp, len, base, out, n, &err);
            cp[i] = old;
        }
        free(cp);
    }
    /* one row of 3 elements, element 0 changed: ..., mask section (1 byte
     * 0x01), sign section (1 byte 0x00): padding bits and a mask that
     * disagrees with the number of signs are errors */
    {
        size_t c1 = 3, n1 = 6;
        unsigned char b1[6] = {0}, f1[6] = {0};
        tput(b1, WD_BF16, 0, 1.0f);
        tput(f1, WD_BF16, 0, 1.5f);
        const unsigned char *enc;
        size_t len;
        wd_lossy_params p = {(uint32_t)c1, 0, 0, 0, 3, 0, 0};
        ck_assert(wd_lossy_encode(s, WD_CODEC_TERNARY, WD_BF16, &p, f1, b1, n1, &enc, &len, &err) == 0);
        unsigned char cp[128], ok[128];
        ck_assert(len <= sizeof cp);
        memcpy(ok, enc, len);
        memcpy(cp, ok, len);
        ck_assert(wd_decode_block(s, WD_CODEC_TERNARY, WD_BF16, cp, len, b1, out, n1, &err) == 0);
        ck_assert(!memcmp(out, f1, 2) && !memcmp(out + 2, b1 + 2, 4));
        ck_assert(cp[len - 11] == 0x01 && cp[len - 1] == 0x00);
        cp[len - 1] |= 0x02; /* a second sign: only one element changed */
        ck_assert(wd_decode_block(s, WD_CODEC_TERNARY, WD_BF16, cp, len, b1, out, n1, &err) == -1);
        ck_assert_msg(strstr(err.msg, "sign bits"), "%s", err.msg);
        memcpy(cp, ok, len);
        cp[len - 11] |= 0x08; /* element 3 does not exist */
        ck_assert(wd_decode_block(s, WD_CODEC_TERNARY, WD_BF16, cp, len, b1, out, n1, &err) == -1);
        ck_assert_msg(strstr(err.msg, "mask bits"), "%s", err.msg);
        memcpy(cp, ok, len);
        cp[len - 11] = 0; /* no element changed, yet one sign byte */
        ck_assert(wd_decode_block(s, WD_CODEC_TERNARY, WD_BF16, cp, len, b1, out, n1, &err) == -1);
        memcpy(cp, ok, len);
        cp[len - 11] = 0x05; /* two changed: the sign byte covers both */
        ck_assert(wd_decode_block(s, WD_CODEC_TERNARY, WD_BF16, cp, len, b1, out, n1, &err) == 0);
    }
    wd_scratch_free(s);
    free(base);
    free(ft);
    free(out);
}
END_TEST

Suite *suite_ternary(void)
{
    Suite *s = suite_create("ternary");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_ternary_roundtrip);
    tcase_add_test(tc, test_ternary_heavy_row);
    tcase_add_test(tc, test_ternary_edges);
    tcase_add_test(tc, test_ternary_corrupt);
    suite_add_tcase(s, tc);
    return s;
}
