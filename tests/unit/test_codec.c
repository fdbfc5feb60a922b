/* test_codec.c - block codecs: exact round trips for every dtype and the
 * errors a damaged or mismatched block must give. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "suites.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Base: random elements; fine-tune: most elements nudged by a few units in
 * their last places, some untouched, some replaced wholesale. */
static void make_pair(unsigned char *base, unsigned char *ft, size_t n, unsigned w)
{
    for (size_t i = 0; i < n; i++) base[i] = (unsigned char)next_rand();
    memcpy(ft, base, n);
    for (size_t i = 0; i + w <= n; i += w) {
        uint64_t r = next_rand() % 10;
        if (r < 6) ft[i] = (unsigned char)(ft[i] + (int)(next_rand() % 7) - 3);
        else if (r == 6) for (unsigned k = 0; k < w; k++) ft[i + k] = (unsigned char)next_rand();
    }
}

static void roundtrip(wd_codec codec, wd_dtype dt, size_t n)
{
    unsigned w = wd_codec_width(dt);
    n -= n % w;
    unsigned char *base = malloc(n + 1), *ft = malloc(n + 1), *out = malloc(n + 1);
    make_pair(base, ft, n, w);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len;
    ck_assert_msg(wd_encode_block(s, codec, dt, 1, ft, codec == WD_CODEC_LOSSLESS ? base : NULL, n, &enc, &len,
                                  &err) == 0, "%s", err.msg);
    unsigned char *copy = malloc(len);
    memcpy(copy, enc, len);
    memset(out, 0xAA, n);
    ck_assert_msg(wd_decode_block(s, codec, dt, copy, len, codec == WD_CODEC_LOSSLESS ? base : NULL, out, n,
                                  &err) == 0, "dtype %d n %zu: %s", (int)dt, n, err.msg);
    ck_assert_msg(memcmp(out, ft, n) == 0, "dtype %d n %zu: output differs", (int)dt, n);
    free(copy);
    wd_scratch_free(s);
    free(base);
    free(ft);
    free(out);
}

static const wd_dtype all_dtypes[] = {WD_F64, WD_F32, WD_F16, WD_BF16, WD_I64, WD_I32, WD_I16, WD_I8,
                                      WD_U64, WD_U32, WD_U16, WD_U8, WD_BOOL, WD_F8_E4M3, WD_F8_E5M2,
                                      WD_OPAQUE};

START_TEST(test_roundtrip_every_dtype)
{
    static const size_t sizes[] = {8, 24, 40, 1000, 4096 + 8, 65536, 1u << 20};
    for (size_t d = 0; d < sizeof all_dtypes / sizeof *all_dtypes; d++)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            roundtrip(WD_CODEC_LOSSLESS, all_dtypes[d], sizes[k]);
            roundtrip(WD_CODEC_ZSTD, all_dtypes[d], sizes[k]);
        }
}
END_TEST

/* Floats near the edges: signed zeros, infinities, NaNs, denormals, and
 * moves that cross zero or change the exponent. */
START_TEST(test_float_specials)
{
    float vals[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f, 1e-38f, 3.4e38f, -3.4e38f,
                    1.0f, -1.0f, 0.5f, 2.0f};
    size_t nv = sizeof vals / sizeof *vals, n = nv * nv;
    float *base = malloc(n * 4), *ft = malloc(n * 4), *out = malloc(n * 4);
    for (size_t i = 0; i < nv; i++)
        for (size_t j = 0; j < nv; j++) {
            base[i * nv + j] = vals[i];
            ft[i * nv + j] = vals[j];
        }
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len;
    ck_assert(wd_encode_block(s, WD_CODEC_LOSSLESS, WD_F32, 3, (void *)ft, (void *)base, n * 4, &enc, &len, &err) == 0);
    unsigned char *copy = malloc(len);
    memcpy(copy, enc, len);
    ck_assert_msg(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_F32, copy, len, (void *)base, (void *)out, n * 4, &err) == 0,
                  "%s", err.msg);
    ck_assert(memcmp(out, ft, n * 4) == 0);
    /* the same bit patterns as bf16 (upper halves) */
    ck_assert(wd_encode_block(s, WD_CODEC_LOSSLESS, WD_BF16, 3, (void *)ft, (void *)base, n * 4, &enc, &len, &err) == 0);
    free(copy);
    copy = malloc(len);
    memcpy(copy, enc, len);
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, copy, len, (void *)base, (void *)out, n * 4, &err) == 0);
    ck_assert(memcmp(out, ft, n * 4) == 0);
    free(copy);
    wd_scratch_free(s);
    free(base);
    free(ft);
    free(out);
}
END_TEST

static unsigned char *encode_bf16(wd_scratch *s, unsigned char *base, unsigned char *ft, size_t n, size_t *len)
{
    wd_err err;
    const unsigned char *enc;
    make_pair(base, ft, n, 2);
    /* realistic bf16 values: exponents around 120 so contexts are used */
    for (size_t i = 0; i < n; i += 2) {
        base[i + 1] = (unsigned char)(0x3c + next_rand() % 3);
        ft[i + 1] = base[i + 1];
    }
    ck_assert(wd_encode_block(s, WD_CODEC_LOSSLESS, WD_BF16, 1, ft, base, n, &enc, len, &err) == 0);
    unsigned char *copy = malloc(*len);
    memcpy(copy, enc, *len);
    return copy;
}

START_TEST(test_decode_errors)
{
    size_t n = 65536, len;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    unsigned char *blk = encode_bf16(s, base, ft, n, &len);
    /* truncated */
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, len - 1, base, out, n, &err) == -1);
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, 5, base, out, n, &err) == -1);
    /* wrong codec / dtype for the block */
    ck_assert(wd_decode_block(s, WD_CODEC_ZSTD, WD_BF16, blk, len, NULL, out, n, &err) == -1);
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_F32, blk, len, base, out, n, &err) == -1);
    /* wrong output size */
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, len, base, out, n - 2, &err) == -1);
    /* missing base */
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, len, NULL, out, n, &err) == -1);
    /* a base with other exponents: counts no longer match */
    unsigned char *other = malloc(n);
    memcpy(other, base, n);
    for (size_t i = 1; i < n; i += 2) other[i] = 0x3e;
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, len, other, out, n, &err) == -1);
    ck_assert_msg(strstr(err.msg, "base") != NULL, "%s", err.msg);
    /* bad tag, corrupted count table */
    blk[0] ^= 1;
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, len, base, out, n, &err) == -1);
    blk[0] ^= 1;
    blk[9] ^= 0x40;
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, len, base, out, n, &err) == -1);
    blk[9] ^= 0x40;
    /* every single-byte corruption either fails or (rarely, inside zstd
     * literals) yields different bytes: never a crash; the block checksum
     * in the delta file is what turns the latter into an error */
    for (size_t i = 0; i < len; i += 7) {
        blk[i] ^= 0x5a;
        (void)wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, len, base, out, n, &err);
        blk[i] ^= 0x5a;
    }
    ck_assert(wd_decode_block(s, WD_CODEC_LOSSLESS, WD_BF16, blk, len, base, out, n, &err) == 0);
    ck_assert(memcmp(out, ft, n) == 0);
    free(other);
    free(blk);
    wd_scratch_free(s);
    free(base);
    free(ft);
    free(out);
}
END_TEST

START_TEST(test_hash64)
{
    unsigned char buf[300];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)i;
    uint64_t h = wd_hash64(buf, sizeof buf, 0);
    ck_assert_uint_eq(h, wd_hash64(buf, sizeof buf, 0));
    ck_assert_uint_ne(h, wd_hash64(buf, sizeof buf, 1));
    ck_assert_uint_ne(h, wd_hash64(buf, sizeof buf - 1, 0));
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] ^= 1;
        ck_assert_uint_ne(h, wd_hash64(buf, sizeof buf, 0));
        buf[i] ^= 1;
    }
    ck_assert_uint_ne(wd_hash64("", 0, 0), wd_hash64("a", 1, 0));
}
END_TEST

Suite *suite_codec(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_roundtrip_every_dtype);
    tcase_add_test(tc, test_float_specials);
    tcase_add_test(tc, test_decode_errors);
    tcase_add_test(tc, test_hash64);
    suite_add_tcase(s, tc);
    return s;
}
