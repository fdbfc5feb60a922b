/* test_lowrank_ranks.c - merged LoRA of any rank (issue 21): the rank test
 * finds the rank of bf16(base + B.A) at ranks 4, 24 and 48 (and a larger
 * one on a wider block), rejects a full-rank delta, a delta at the rounding
 * noise and a rank beyond the limit it is given; lowrank-exact blocks with
 * the rank found rebuild the fine-tune bit for bit and are much smaller
 * than the plain lossless codec's, in BF16, F16 and F32; ranks up to
 * WD_LOWRANK_KMAX decode and one above is rejected. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "codec/lossy.h"
#include "suites.h"
#include "lowrank_pair.h"

static uint64_t rr = 0x0badc0ffee123457ull; /* lowrank_pair.h's state */

/* lowrank-exact of the whole block (rank found), decoded back bit for bit;
 * returns its size, *plain the lossless codec's, *rank the block's rank */
static size_t exact_size(const uint16_t *base, const uint16_t *ft, size_t m, size_t n, unsigned fixed,
                         size_t *plain, unsigned *rank)
{
    wd_scratch *s = wd_scratch_new();
    size_t bytes = m * n * 2, len, plen;
    wd_lossy_params p = {(uint32_t)n, 0, 0, 0, 3, 0, fixed};
    const unsigned char *enc;
    wd_err err;
    ck_assert_msg(wd_lossy_encode(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, &p, (const unsigned char *)ft,
                                  (const unsigned char *)base, bytes, &enc, &len, &err) == 0, "%s", err.msg);
    unsigned char *blk = malloc(len);
    memcpy(blk, enc, len);
    ck_assert_uint_eq(blk[0], WD_LOSSY_TAG);
    *rank = wd_get_u32(blk + 12);
    unsigned char *out = malloc(bytes);
    ck_assert_msg(wd_lossy_decode(s, WD_CODEC_LOWRANK_EXACT, WD_BF16, blk, len, (const unsigned char *)base, out,
                                  bytes, &err) == 0, "%s", err.msg);
    ck_assert_msg(memcmp(out, ft, bytes) == 0, "lowrank-exact did not rebuild the fine-tune");
    ck_assert(wd_encode_block(s, WD_CODEC_LOSSLESS, WD_BF16, 3, (const unsigned char *)ft,
                              (const unsigned char *)base, bytes, &enc, &plen, &err) == 0);
    *plain = plen;
    free(blk), free(out);
    wd_scratch_free(s);
    return len;
}

START_TEST(test_lowrank_ranks_found)
{
    /* 512 x 256: the rank worth coding is at most 512*256/(2*768) = 85 */
    static const unsigned ranks[] = {4, 24, 48};
    size_t m = 512, n = 256;
    uint16_t *base = malloc(m * n * 2), *ft = malloc(m * n * 2);
    for (size_t t = 0; t < sizeof ranks / sizeof ranks[0]; t++) {
        lp_make_pair(&rr, base, ft, m, n, ranks[t], 0, 0.1);
        unsigned r = wd_lowrank_detect((unsigned char *)ft, (unsigned char *)base, WD_BF16, m, n, 85, NULL);
        ck_assert_msg(r == ranks[t], "rank %u found as %u", ranks[t], r);
        size_t plain, len;
        unsigned br;
        len = exact_size(base, ft, m, n, 0, &plain, &br);
        ck_assert_msg(br == ranks[t], "rank %u coded at rank %u", ranks[t], br);
        /* the block is the factors (2 r (m + n) bytes, raw) and a residual of
         * rounding misses: that residual is under a quarter of what the
         * plain codec needs for the whole delta */
        double fac = 2.0 * ranks[t] * (double)(m + n);
        ck_assert_msg((double)len < (double)plain && (double)len <= fac + 0.25 * (double)plain,
                      "rank %u: lowrank-exact %zu bytes (factors %.0f), plain %zu", ranks[t], len, fac, plain);
        /* a limit below the rank: not low-rank enough */
        if (ranks[t] > 8)
            ck_assert_uint_eq(wd_lowrank_detect((unsigned char *)ft, (unsigned char *)base, WD_BF16, m, n,
                                                ranks[t] / 2, NULL), 0);
    }
    /* a full-rank delta (a full fine-tune) and one below the rounding step */
    lp_make_pair(&rr, base, ft, m, n, 0, 0, 0.1);
    ck_assert_uint_eq(wd_lowrank_detect((unsigned char *)ft, (unsigned char *)base, WD_BF16, m, n, 85, NULL), 0);
    lp_make_pair(&rr, base, ft, m, n, 8, 0, 0.0005);
    ck_assert_uint_eq(wd_lowrank_detect((unsigned char *)ft, (unsigned char *)base, WD_BF16, m, n, 85, NULL), 0);
    /* a dominant rank-2 part over a full-rank delta holding 5% of the energy:
     * not low-rank, but its dominant part is reported for a trial */
    {
        uint16_t *f2 = malloc(m * n * 2);
        lp_make_pair(&rr, base, ft, m, n, 2, 0, 0.1); /* base ~ N(0, 0.02): the rank-2 delta's RMS is 0.002 */
        for (size_t i = 0; i < m * n; i++)
            f2[i] = lp_to_bf16(lp_from_bf16(ft[i]) + (float)(0.002 * sqrt(0.05) * lp_gauss(&rr)));
        unsigned part = 99;
        ck_assert_uint_eq(wd_lowrank_detect((unsigned char *)f2, (unsigned char *)base, WD_BF16, m, n, 85, &part), 0);
        ck_assert_uint_eq(part, 2);
        free(f2);
    }
    /* no delta at all */
    ck_assert_uint_eq(wd_lowrank_detect((unsigned char *)base, (unsigned char *)base, WD_BF16, m, n, 85, NULL), 0);
    free(base), free(ft);
}
END_TEST

START_TEST(test_lowrank_ranks_high)
{
    /* 1024 x 512 at rank 96 (above the old limit of 32) */
    size_t m = 1024, n = 512;
    uint16_t *base = malloc(m * n * 2), *ft = malloc(m * n * 2);
    lp_make_pair(&rr, base, ft, m, n, 96, 0, 0.1);
    unsigned r = wd_lowrank_detect((unsigned char *)ft, (unsigned char *)base, WD_BF16, m, n, 170, NULL);
    ck_assert_msg(r == 96, "rank 96 found as %u", r);
    size_t plain, len;
    unsigned br;
    len = exact_size(base, ft, m, n, 0, &plain, &br);
    ck_assert_uint_eq(br, 96);
    ck_assert_msg((double)len <= 2.0 * 96 * (double)(m + n) + 0.25 * (double)plain, "rank 96: %zu bytes, plain %zu",
                  len, plain);
    free(base), free(ft);
}
END_TEST

/* F16 and F32 fine-tunes: the noise floor follows the dtype (F32's own
 * rounding is far below what FP16 factors resolve) */
START_TEST(test_lowrank_ranks_dtypes)
{
    size_t m = 512, n = 256, ne = m * n;
    static const wd_dtype dts[] = {WD_F16, WD_F32};
    for (int t = 0; t < 2; t++) {
        wd_dtype dt = dts[t];
        unsigned w = wd_dtype_size(dt);
        unsigned char *base = malloc(ne * w), *ft = malloc(ne * w), *out = malloc(ne * w);
        double *a = malloc(m * 16 * sizeof *a), *b = malloc(16 * n * sizeof *b);
        for (size_t i = 0; i < m * 16; i++) a[i] = lp_gauss(&rr);
        for (size_t i = 0; i < 16 * n; i++) b[i] = lp_gauss(&rr) * 0.002 / 4; /* delta RMS 0.002: a tenth of the base's */
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double acc = 0;
                for (unsigned k = 0; k < 16; k++) acc += a[i * 16 + k] * b[k * n + j];
                float bv = (float)(0.02 * lp_gauss(&rr));
                size_t e = i * n + j;
                if (dt == WD_F16) {
                    uint16_t hb = ls_to_half(bv, 0);
                    bv = wd_half_to_float(hb);
                    uint16_t hf = ls_to_half(bv + (float)acc, 0);
                    memcpy(base + 2 * e, &hb, 2), memcpy(ft + 2 * e, &hf, 2);
                } else {
                    float fv = bv + (float)acc;
                    memcpy(base + 4 * e, &bv, 4), memcpy(ft + 4 * e, &fv, 4);
                }
            }
        unsigned r = wd_lowrank_detect(ft, base, dt, m, n, 85, NULL);
        ck_assert_msg(r == 16, "%s: rank 16 found as %u", dt == WD_F16 ? "F16" : "F32", r);
        wd_scratch *s = wd_scratch_new();
        wd_lossy_params p = {(uint32_t)n, 0, 0, 0, 3, 0, 0};
        const unsigned char *enc;
        size_t len, plen;
        wd_err err;
        ck_assert_msg(wd_lossy_encode(s, WD_CODEC_LOWRANK_EXACT, dt, &p, ft, base, ne * w, &enc, &len, &err) == 0,
                      "%s", err.msg);
        unsigned char *blk = malloc(len);
        memcpy(blk, enc, len);
        ck_assert_uint_eq(wd_get_u32(blk + 12), 16);
        ck_assert(wd_lossy_decode(s, WD_CODEC_LOWRANK_EXACT, dt, blk, len, base, out, ne * w, &err) == 0);
        ck_assert_msg(memcmp(out, ft, ne * w) == 0, "lowrank-exact did not rebuild the fine-tune");
        ck_assert(wd_encode_block(s, WD_CODEC_LOSSLESS, dt, 3, ft, base, ne * w, &enc, &plen, &err) == 0);
        ck_assert_msg(len < plen, "%s: lowrank-exact %zu bytes, plain %zu", dt == WD_F16 ? "F16" : "F32", len, plen);
        wd_scratch_free(s);
        free(base), free(ft), free(out), free(a), free(b), free(blk);
    }
}
END_TEST

START_TEST(test_lowrank_ranks_limit)
{
    /* a fixed rank up to WD_LOWRANK_KMAX round trips; a header above it is corrupt */
    size_t m = 300, n = 280;
    uint16_t *base = malloc(m * n * 2), *ft = malloc(m * n * 2);
    lp_make_pair(&rr, base, ft, m, n, 0, 0, 0.1);
    size_t plain, len;
    unsigned br;
    len = exact_size(base, ft, m, n, WD_LOWRANK_KMAX, &plain, &br);
    ck_assert_uint_eq(br, WD_LOWRANK_KMAX);
    (void)len;
    wd_scratch *s = wd_scratch_new();
    wd_lossy_params p = {(uint32_t)n, 0, 0, 0, 3, 0, WD_LOWRANK_KMAX};
    const unsigned char *enc;
    size_t elen;
    wd_err err;
    ck_assert(wd_lossy_encode(s, WD_CODEC_LOWRANK, WD_BF16, &p, (unsigned char *)ft, (unsigned char *)base, m * n * 2,
                              &enc, &elen, &err) == 0);
    unsigned char *blk = malloc(elen), *out = malloc(m * n * 2);
    memcpy(blk, enc, elen);
    ck_assert_uint_eq(wd_get_u32(blk + 12), WD_LOWRANK_KMAX);
    ck_assert(wd_lossy_decode(s, WD_CODEC_LOWRANK, WD_BF16, blk, elen, (unsigned char *)base, out, m * n * 2, &err) == 0);
    wd_put_u32(blk + 12, WD_LOWRANK_KMAX + 1);
    ck_assert(wd_lossy_decode(s, WD_CODEC_LOWRANK, WD_BF16, blk, elen, (unsigned char *)base, out, m * n * 2, &err) != 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "rank"));
    free(blk), free(out), free(base), free(ft);
    wd_scratch_free(s);
}
END_TEST

Suite *suite_lowrank_ranks(void)
{
    Suite *s = suite_create("lowrank_ranks");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_lowrank_ranks_found);
    tcase_add_test(tc, test_lowrank_ranks_high);
    tcase_add_test(tc, test_lowrank_ranks_dtypes);
    tcase_add_test(tc, test_lowrank_ranks_limit);
    suite_add_tcase(s, tc);
    return s;
}
