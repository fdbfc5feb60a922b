/* test_fastdec.c - the lossless codec's AVX-512 gather (lossless_avx512.c)
 * against its scalar gather (lossless.c): every width and dtype, both
 * codecs, many mixes of contexts, lengths that are not multiples of the
 * vector chunk, and bases other than the block's; outputs and errors must
 * be the same byte for byte, and the checksums both gathers compute as they
 * write (of the output and of the stored bytes) must be wd_hash64's.  Also
 * wd_hash64's vector lanes, and the hash in pieces (util/hash.h), against
 * the hash written out plainly. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "codec/lossless_simd.h"
#include "util/hash.h"
#include "suites.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Exponent field of a float dtype: shift and mask (as lossless.c). */
static int exp_field(wd_dtype dt, unsigned *shift, uint64_t *mask)
{
    switch (dt) {
    case WD_BF16: *shift = 7; *mask = 0xff; return 1;
    case WD_F16: *shift = 10; *mask = 0x1f; return 1;
    case WD_F32: *shift = 23; *mask = 0xff; return 1;
    case WD_F64: *shift = 52; *mask = 0x7ff; return 1;
    default: return 0;
    }
}

static uint64_t get_el(const unsigned char *p, size_t i, unsigned w)
{
    uint64_t v = 0;
    memcpy(&v, p + i * w, w);
    return v;
}

static void put_el(unsigned char *p, size_t i, unsigned w, uint64_t v)
{
    memcpy(p + i * w, &v, w);
}

/* How the base's exponents are spread, i.e. which contexts a block has. */
enum mix {
    MIX_RANDOM,    /* every bit random: exponents everywhere, the ends clamp */
    MIX_ONE,       /* one exponent: one context */
    MIX_WEIGHTS,   /* a dozen exponents around one, like trained weights */
    MIX_LANES,     /* the exponent follows the lane (i % 4) and drifts by chunk */
    MIX_SPECIALS,  /* zeros, subnormals, infinities, NaNs, both signs */
    MIX_SKEW,      /* almost all in one exponent, a rare few elsewhere */
    NMIX
};

static void make_base(unsigned char *base, size_t ne, wd_dtype dt, unsigned w, int mix)
{
    unsigned shift = 0;
    uint64_t mask = 0;
    int fl = exp_field(dt, &shift, &mask);
    uint64_t centre = fl ? mask / 2 : 0;
    for (size_t i = 0; i < ne; i++) {
        uint64_t v = rnd();
        if (w < 8) v &= (1ull << (8 * w)) - 1;
        if (fl && mix != MIX_RANDOM) {
            uint64_t e;
            switch (mix) {
            case MIX_ONE: e = centre; break;
            case MIX_WEIGHTS: e = centre - (rnd() % 12); break;
            case MIX_LANES: e = centre - 3 * (i % 4) - (i / 256) % 5; break;
            case MIX_SKEW: e = rnd() % 97 ? centre : (rnd() % 2 ? 0 : mask); break;
            default: { /* specials */
                uint64_t r = rnd() % 6;
                e = r == 0 ? 0 : r == 1 ? mask : r == 2 ? 1 : centre - rnd() % 20;
                if (r == 0 && rnd() % 2) v &= ~((1ull << shift) - 1); /* signed zero */
            }
            }
            v = (v & ~(mask << shift)) | (e & mask) << shift;
        }
        put_el(base, i, w, v);
    }
}

/* The fine-tune: most elements moved a few units in the last place, some
 * untouched, some replaced, a few with a new exponent. */
static void make_ft(unsigned char *ft, const unsigned char *base, size_t ne, unsigned w)
{
    for (size_t i = 0; i < ne; i++) {
        uint64_t v = get_el(base, i, w), r = rnd() % 20;
        if (r < 12) v += (uint64_t)(int64_t)((int)(rnd() % 9) - 4);
        else if (r == 12) v = rnd();
        else if (r == 13) v ^= 1ull << (8 * w - 2); /* a far move */
        put_el(ft, i, w, v);
    }
}

static int simd(void)
{
    return wd_lossless_simd_available();
}

/* Decode with both gathers; both outputs and results must match each
 * other, and the fine-tune where given.  expect: 1 must decode, 0 must
 * fail, -1 either.  Returns the result (0 decoded). */
static int both(wd_codec codec, wd_dtype dt, const unsigned char *enc, size_t len, const unsigned char *base,
                 const unsigned char *ft, size_t n, int expect, const char *what)
{
    unsigned char *o1 = malloc(n + 1), *o2 = malloc(n + 1);
    memset(o1, 0x5a, n + 1);
    memset(o2, 0x5a, n + 1);
    wd_scratch *s1 = wd_scratch_new(), *s2 = wd_scratch_new();
    wd_err e1, e2;
    memset(&e1, 0, sizeof e1);
    memset(&e2, 0, sizeof e2);
    uint64_t h1[2], h2[2];
    int r1 = wd_lossless_decode_kernel(s1, codec, dt, enc, len, base, o1, n, WD_LL_SCALAR, h1, &e1);
    if (expect == 1) ck_assert_msg(r1 == 0, "%s: scalar: %s", what, e1.msg);
    if (r1 == 0)
        ck_assert_msg(h1[0] == wd_hash64(o1, n, 0) && h1[1] == wd_hash64(enc, len, 0),
                      "%s: scalar decode's checksums differ from wd_hash64's", what);
    if (expect == 0) ck_assert_msg(r1 != 0, "%s: scalar decode took a wrong base", what);
    if (r1 == 0 && ft) ck_assert_msg(memcmp(o1, ft, n) == 0, "%s: scalar output differs from the fine-tune", what);
    if (simd()) {
        int r2 = wd_lossless_decode_kernel(s2, codec, dt, enc, len, base, o2, n, WD_LL_SIMD, h2, &e2);
        ck_assert_msg(r1 == r2, "%s: scalar gives %d (%s), simd %d (%s)", what, r1, e1.msg, r2, e2.msg);
        if (r2 == 0)
            ck_assert_msg(h2[0] == h1[0] && h2[1] == h1[1],
                          "%s: the vector gather's checksums (%zu bytes out, %zu stored) differ from wd_hash64's",
                          what, n, len);
        ck_assert_msg(strcmp(e1.msg, e2.msg) == 0 || r1 == 0, "%s: errors differ: '%s' / '%s'", what, e1.msg,
                      e2.msg);
        /* (after an error the output is undefined: the scalar gather has
         * read past the codes it decoded) */
        ck_assert_msg(r1 || memcmp(o1, o2, n + 1) == 0, "%s: outputs differ", what);
        /* the default path is the vector one here */
        memset(o2, 0x5a, n + 1);
        int r3 = wd_lossless_decode(s2, codec, dt, enc, len, base, o2, n, &e2);
        ck_assert_msg(r3 == r1 && (r1 || memcmp(o1, o2, n + 1) == 0), "%s: default decode differs", what);
    } else {
        ck_assert(wd_lossless_decode_kernel(s2, codec, dt, enc, len, base, o2, n, WD_LL_SIMD, NULL, &e2) != 0);
    }
    wd_scratch_free(s1);
    wd_scratch_free(s2);
    free(o1);
    free(o2);
    return r1;
}

static const wd_dtype dtypes[] = {WD_BF16, WD_F16, WD_F32, WD_F64, WD_I64, WD_I32, WD_I16, WD_I8,
                                  WD_U64, WD_U32, WD_U16, WD_U8, WD_BOOL, WD_F8_E4M3, WD_OPAQUE};

/* element counts around the 256-element chunk and its 64-element groups */
static const size_t counts[] = {1, 2, 3, 4, 5, 63, 64, 65, 255, 256, 257, 300, 511, 513, 1000, 4099};

static void one_case(wd_codec codec, wd_dtype dt, size_t ne, int mix)
{
    unsigned w = wd_codec_width(dt);
    size_t n = ne * w;
    unsigned char *base = malloc(n), *ft = malloc(n);
    make_base(base, ne, dt, w, mix);
    make_ft(ft, base, ne, w);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len;
    int mode = codec == WD_CODEC_LOSSLESS;
    ck_assert_msg(wd_lossless_encode(s, codec, dt, 1, ft, mode ? base : NULL, n, &enc, &len, &err) == 0, "%s",
                  err.msg);
    unsigned char *copy = malloc(len);
    memcpy(copy, enc, len);
    char what[128];
    snprintf(what, sizeof what, "codec %d dtype %d, %zu elements, mix %d", (int)codec, (int)dt, ne, mix);
    both(codec, dt, copy, len, mode ? base : NULL, ft, n, 1, what);
    free(copy);
    wd_scratch_free(s);
    free(base);
    free(ft);
}

START_TEST(test_simd_matches_scalar)
{
    if (!simd()) fprintf(stderr, "fastdec: this CPU lacks AVX-512 VBMI2; only the scalar gather runs\n");
    for (size_t d = 0; d < sizeof dtypes / sizeof *dtypes; d++)
        for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
            for (int mix = 0; mix < NMIX; mix++) one_case(WD_CODEC_LOSSLESS, dtypes[d], counts[k], mix);
            one_case(WD_CODEC_ZSTD, dtypes[d], counts[k], MIX_RANDOM);
        }
}
END_TEST

/* Whole blocks of the size the writer uses (1 MiB), the float dtypes. */
START_TEST(test_simd_matches_scalar_large)
{
    static const wd_dtype fl[] = {WD_BF16, WD_F16, WD_F32, WD_F64};
    for (size_t d = 0; d < 4; d++) {
        size_t ne = (1u << 20) / wd_codec_width(fl[d]) - 3; /* not a whole chunk */
        one_case(WD_CODEC_LOSSLESS, fl[d], ne, MIX_WEIGHTS);
    }
    one_case(WD_CODEC_LOSSLESS, WD_I32, (1u << 18) + 7, MIX_RANDOM);
    one_case(WD_CODEC_ZSTD, WD_BF16, (1u << 19) + 1, MIX_RANDOM);
}
END_TEST

/* Bases other than the block's: the counts no longer match, so both
 * gathers must refuse alike (the same message); a base that differs only
 * where the context does not look decodes alike, to the same bytes. */
START_TEST(test_wrong_base)
{
    static const wd_dtype fl[] = {WD_BF16, WD_F16, WD_F32, WD_F64};
    static const size_t ns[] = {5, 257, 1000, 70001};
    unsigned refused = 0, tried = 0;
    for (size_t d = 0; d < 4; d++)
        for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
            for (int mix = 0; mix < NMIX; mix++) {
                wd_dtype dt = fl[d];
                unsigned w = wd_codec_width(dt), shift = 0;
                uint64_t mask = 0;
                exp_field(dt, &shift, &mask);
                size_t ne = ns[k], n = ne * w;
                unsigned char *base = malloc(n), *ft = malloc(n), *other = malloc(n);
                make_base(base, ne, dt, w, mix);
                make_ft(ft, base, ne, w);
                wd_scratch *s = wd_scratch_new();
                wd_err err;
                const unsigned char *enc;
                size_t len;
                ck_assert(wd_lossless_encode(s, WD_CODEC_LOSSLESS, dt, 1, ft, base, n, &enc, &len, &err) == 0);
                unsigned char *copy = malloc(len);
                memcpy(copy, enc, len);
                char what[128];
                /* 1: an unrelated base (its own exponents) */
                make_base(other, ne, dt, w, (mix + 1) % NMIX);
                snprintf(what, sizeof what, "dtype %d, %zu elements, mix %d, unrelated base", (int)dt, ne, mix);
                refused += both(WD_CODEC_LOSSLESS, dt, copy, len, other, NULL, n, -1, what) != 0;
                tried++;
                /* 2: one element's exponent moved (where the move changes its
                 * context: the window is 8 wide, so a move by 9 always does
                 * unless both ends clamp) */
                memcpy(other, base, n);
                size_t at = rnd() % ne;
                uint64_t v = get_el(other, at, w), e = v >> shift & mask;
                e = e >= 9 ? e - 9 : e + 9;
                put_el(other, at, w, (v & ~(mask << shift)) | e << shift);
                snprintf(what, sizeof what, "dtype %d, %zu elements, mix %d, element %zu moved", (int)dt, ne, mix, at);
                refused += both(WD_CODEC_LOSSLESS, dt, copy, len, other, NULL, n, -1, what) != 0;
                tried++;
                /* 3: every element's exponent one higher: all contexts shift */
                for (size_t i = 0; i < ne; i++) {
                    uint64_t x = get_el(base, i, w), ex = ((x >> shift & mask) + 1) & mask;
                    put_el(other, i, w, (x & ~(mask << shift)) | ex << shift);
                }
                snprintf(what, sizeof what, "dtype %d, %zu elements, mix %d, exponents + 1", (int)dt, ne, mix);
                refused += both(WD_CODEC_LOSSLESS, dt, copy, len, other, NULL, n, -1, what) != 0;
                tried++;
                /* 4: mantissas changed, exponents kept: same contexts, decodes
                 * (to other values), alike */
                for (size_t i = 0; i < ne; i++) put_el(other, i, w, get_el(base, i, w) ^ (rnd() & ((1ull << shift) - 1)));
                snprintf(what, sizeof what, "dtype %d, %zu elements, mix %d, mantissas", (int)dt, ne, mix);
                both(WD_CODEC_LOSSLESS, dt, copy, len, other, NULL, n, 1, what);
                free(copy);
                wd_scratch_free(s);
                free(base);
                free(ft);
                free(other);
            }
    /* most of these bases change some element's context; where one does
     * not (clamped ends, a single context), both decode alike */
    ck_assert_msg(refused * 4 > tried * 3, "only %u of %u wrong bases refused", refused, tried);
}
END_TEST

/* Damaged count tables (the total kept, so the header checks pass): codes
 * moved between lanes or contexts.  Both gathers give the same error. */
START_TEST(test_moved_counts)
{
    static const wd_dtype dts[] = {WD_BF16, WD_F32, WD_I16, WD_U8};
    for (size_t d = 0; d < 4; d++)
        for (int trial = 0; trial < 40; trial++) {
            wd_dtype dt = dts[d];
            unsigned w = wd_codec_width(dt);
            size_t ne = 100 + rnd() % 3000, n = ne * w;
            unsigned char *base = malloc(n), *ft = malloc(n);
            make_base(base, ne, dt, w, MIX_WEIGHTS);
            make_ft(ft, base, ne, w);
            wd_scratch *s = wd_scratch_new();
            wd_err err;
            const unsigned char *enc;
            size_t len;
            ck_assert(wd_lossless_encode(s, WD_CODEC_LOSSLESS, dt, 1, ft, base, n, &enc, &len, &err) == 0);
            unsigned char *copy = malloc(len);
            memcpy(copy, enc, len);
            unsigned k = copy[3], cells = 4 * k;
            unsigned a = (unsigned)(rnd() % cells), b = (unsigned)(rnd() % cells);
            uint32_t ca = wd_get_u32(copy + 8 + 4 * a), cb = wd_get_u32(copy + 8 + 4 * b);
            uint32_t mv = ca ? 1 + (uint32_t)(rnd() % ca) : 0;
            if (a != b && mv) {
                wd_put_u32(copy + 8 + 4 * a, ca - mv);
                wd_put_u32(copy + 8 + 4 * b, cb + mv);
            }
            char what[128];
            snprintf(what, sizeof what, "dtype %d, %zu elements, %u codes from cell %u to %u", (int)dt, ne, mv, a, b);
            /* the frames may now decode to other lengths (an error before the
             * gather) or the gather may find the counts wrong: alike either way */
            both(WD_CODEC_LOSSLESS, dt, copy, len, base, NULL, n, a != b && mv ? 0 : 1, what);
            free(copy);
            wd_scratch_free(s);
            free(base);
            free(ft);
        }
}
END_TEST

/* wd_hash64 (vector lanes where the CPU has them) against the hash as
 * core/util/checksum.c defines it, written out plainly: every length
 * around the 32-byte round and the 256-byte vector threshold, seeds,
 * unaligned starts. */
static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t ref_hash(const unsigned char *p, size_t n, uint64_t seed)
{
    const uint64_t k1 = 0x9E3779B185EBCA87ull, k2 = 0xC2B2AE3D27D4EB4Full, k3 = 0x165667B19E3779F9ull;
    uint64_t lane[4] = {seed + k1, seed ^ k2, seed + k3, seed - k1};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int l = 0; l < 4; l++) {
            uint64_t v;
            memcpy(&v, p + i + 8 * l, 8);
            lane[l] = rotl64(lane[l] + v * k2, 31) * k1;
        }
    uint64_t h = rotl64(lane[0], 1) + rotl64(lane[1], 7) + rotl64(lane[2], 12) + rotl64(lane[3], 18) + (uint64_t)n;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        h = rotl64((h ^ v) + k3 * k2, 31) * k1;
    }
    for (; i < n; i++) h = rotl64((h ^ p[i]) + k1 * k2, 31) * k1;
    h ^= h >> 33;
    h *= k2;
    h ^= h >> 29;
    h *= k3;
    h ^= h >> 32;
    return h;
}

START_TEST(test_hash_lanes)
{
    size_t cap = 70000;
    unsigned char *buf = malloc(cap + 8);
    for (size_t i = 0; i < cap + 8; i++) buf[i] = (unsigned char)rnd();
    static const size_t lens[] = {0, 1, 7, 8, 31, 32, 33, 255, 256, 257, 287, 288, 289, 1000, 4096, 65536, 70000};
    for (size_t k = 0; k < sizeof lens / sizeof *lens; k++)
        for (unsigned off = 0; off < 8; off += 3) {
            uint64_t seed = k % 3 ? rnd() : 0;
            ck_assert_msg(wd_hash64(buf + off, lens[k], seed) == ref_hash(buf + off, lens[k], seed),
                          "wd_hash64 of %zu bytes at offset %u differs", lens[k], off);
        }
    for (int t = 0; t < 200; t++) {
        size_t n = rnd() % cap;
        ck_assert_msg(wd_hash64(buf, n, 5) == ref_hash(buf, n, 5), "wd_hash64 of %zu bytes differs", n);
    }
    /* in pieces: lanes absorbed up to any whole round, then finished */
    for (int t = 0; t < 200; t++) {
        size_t n = rnd() % cap, done = n ? (rnd() % (n + 1)) / 32 * 32 : 0;
        uint64_t lanes[4], seed = rnd();
        wd_hash64_start(lanes, seed);
        for (size_t i = 0; i < done; i += 32)
            for (int j = 0; j < 4; j++) {
                uint64_t v;
                memcpy(&v, buf + i + 8 * j, 8);
                v = lanes[j] + v * WD_HASH_K2;
                lanes[j] = (v << 31 | v >> 33) * WD_HASH_K1;
            }
        ck_assert_msg(wd_hash64_end(lanes, buf, n, done) == ref_hash(buf, n, seed),
                      "wd_hash64 in pieces (%zu of %zu bytes absorbed first) differs", done, n);
    }
    /* one bit changed anywhere changes the hash */
    uint64_t h = wd_hash64(buf, 4096, 0);
    buf[3001] ^= 4;
    ck_assert(wd_hash64(buf, 4096, 0) != h);
    free(buf);
}
END_TEST

Suite *suite_fastdec(void)
{
    Suite *s = suite_create("fastdec");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_simd_matches_scalar);
    tcase_add_test(tc, test_simd_matches_scalar_large);
    tcase_add_test(tc, test_wrong_base);
    tcase_add_test(tc, test_moved_counts);
    tcase_add_test(tc, test_hash_lanes);
    suite_add_tcase(s, tc);
    return s;
}
