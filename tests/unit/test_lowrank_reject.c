/* test_lowrank_reject.c - the rank test's quick reject (issue 18): the
 * smallest singular value of rmax + 1 sampled columns above the noise edge
 * ends the test after its first sketch.  It must never reject what the full
 * test finds: merged LoRAs up to the rank limit, and a dominant low-rank
 * part; and it must reject full-rank deltas, flat or with a decaying
 * spectrum like a real fine-tune's, a few rounding steps and more. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "codec/lossy.h"
#include "suites.h"
#include "lowrank_pair.h"

static uint64_t qr = 0x5eed1234abcd9876ull; /* lowrank_pair.h's state */

static unsigned detect(const uint16_t *ft, const uint16_t *base, size_t m, size_t n, unsigned rmax, unsigned *part)
{
    return wd_lowrank_detect((const unsigned char *)ft, (const unsigned char *)base, WD_BF16, m, n, rmax, part);
}

START_TEST(test_reject_keeps_low_ranks)
{
    /* 512 x 256, limit 85 (what lr_rmax gives this block): ranks up to
     * near the limit are found, at the merged-LoRA scales of mklora.py
     * (0.05) and above */
    size_t m = 512, n = 256;
    uint16_t *base = malloc(m * n * 2), *ft = malloc(m * n * 2);
    static const unsigned ranks[] = {4, 16, 64, 76};
    static const double scales[] = {0.05, 0.2};
    for (size_t t = 0; t < sizeof ranks / sizeof ranks[0]; t++)
        for (size_t s = 0; s < 2; s++) {
            lp_make_pair(&qr, base, ft, m, n, ranks[t], 0, scales[s]);
            unsigned r = detect(ft, base, m, n, 85, NULL);
            ck_assert_msg(r == ranks[t], "rank %u (scale %g) found as %u", ranks[t], scales[s], r);
        }
    free(base), free(ft);
}
END_TEST

START_TEST(test_reject_full_rank)
{
    /* full-rank deltas, flat and slowly decaying spectra (s_k ~ k^-0.5; a
     * faster decay puts the tail under the noise, and the test rightly finds
     * it low-rank), from about 3 rounding steps RMS (scale 0.02 of N(0, 0.02)
     * in bf16, whose step there is 2^-13) up; nearer the noise the full test
     * decides */
    size_t m = 384, n = 384;
    uint16_t *base = malloc(m * n * 2), *ft = malloc(m * n * 2);
    static const double decays[] = {0, 0.3, 0.5};
    static const double scales[] = {0.02, 0.05};
    for (size_t t = 0; t < 3; t++)
        for (size_t s = 0; s < 2; s++) {
            lp_make_pair(&qr, base, ft, m, n, 384, decays[t], scales[s]);
            unsigned part = 99, r = detect(ft, base, m, n, 144, &part);
            ck_assert_msg(r == 0, "full-rank delta (decay %g, scale %g) found low-rank (%u)", decays[t], scales[s], r);
            ck_assert_msg(part == 0 || decays[t] > 0, "a flat full-rank delta has no dominant part (%u)", part);
        }
    free(base), free(ft);
}
END_TEST

START_TEST(test_reject_keeps_dominant_part)
{
    /* a dominant rank-1 part (95% of the energy) over a full-rank delta:
     * rejected as low-rank, its part still reported (pairB's lm_head) */
    size_t m = 384, n = 384;
    uint16_t *base = malloc(m * n * 2), *ft = malloc(m * n * 2), *f2 = malloc(m * n * 2);
    lp_make_pair(&qr, base, ft, m, n, 1, 0, 0.2);
    double rms = 0;
    for (size_t i = 0; i < m * n; i++) {
        double d = (double)lp_from_bf16(ft[i]) - lp_from_bf16(base[i]);
        rms += d * d;
    }
    rms = sqrt(rms / (double)(m * n));
    for (size_t i = 0; i < m * n; i++) f2[i] = lp_to_bf16(lp_from_bf16(ft[i]) + (float)(rms * sqrt(0.05) * lp_gauss(&qr)));
    unsigned part = 99;
    ck_assert_uint_eq(detect(f2, base, m, n, 144, &part), 0);
    ck_assert_uint_eq(part, 1);
    free(base), free(ft), free(f2);
}
END_TEST

Suite *suite_lowrank_reject(void)
{
    Suite *s = suite_create("lowrank_reject");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_reject_keeps_low_ranks);
    tcase_add_test(tc, test_reject_full_rank);
    tcase_add_test(tc, test_reject_keeps_dominant_part);
    suite_add_tcase(s, tc);
    return s;
}
