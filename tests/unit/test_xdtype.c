/* test_xdtype.c - the cross-dtype / resized-tensor predictor (core/delta/xdtype.c):
 * conversions checked against independent arithmetic over every 16-bit
 * input, block ranges, padding, which tensors take it, the narrow block
 * forms, and the manifest field's validation. */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "delta/xdtype.h"
#include "suites.h"

/* the exact value of IEEE half bits, by arithmetic (not by bit shuffling) */
static double half_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (h & 0x8000) ? -v : v;
}

static uint32_t f32bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

START_TEST(test_widen_exact)
{
    unsigned char src[2], dst[4];
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t hv = (uint16_t)h;
        memcpy(src, &hv, 2);
        wd_xdtype_convert(WD_F32, WD_F16, src, 2, dst, 4);
        uint32_t u;
        memcpy(&u, dst, 4);
        float f;
        memcpy(&f, &u, 4);
        if (((h >> 10) & 31) == 31) { /* inf / NaN: sign, all-ones exponent, payload kept */
            ck_assert_uint_eq(u, ((h & 0x8000u) << 16) | 0x7f800000u | ((h & 1023u) << 13));
            continue;
        }
        ck_assert_msg((double)f == half_value(hv) && !!signbit(f) == !!(h & 0x8000), "half %04x -> %08x", h, u);
        wd_xdtype_convert(WD_F32, WD_BF16, src, 2, dst, 4);
        memcpy(&u, dst, 4);
        ck_assert_uint_eq(u, h << 16);
    }
}
END_TEST

/* x rounded to nearest even among the values of a 16-bit format whose
 * finite non-negative values are increasing in their bit patterns 0..top:
 * checked as a property (no representable value is nearer; ties go to the
 * even pattern), not by recomputing the rounding. */
static void check_nearest(double x, uint16_t r, double (*val)(uint16_t), uint16_t top, const char *what)
{
    uint16_t mag = r & 0x7fff, sign = r & 0x8000;
    double ax = fabs(x);
    ck_assert_msg(!!sign == !!signbit(x), "%s: sign of %g", what, x);
    if (mag > top) { /* overflowed to infinity: x must be at least halfway past the top value */
        double t = val(top), below = val((uint16_t)(top - 1));
        ck_assert_msg(ax >= t + (t - below) / 2, "%s: %g overflowed", what, x);
        return;
    }
    double y = val(mag), d = fabs(ax - y);
    if (mag < top) ck_assert_msg(fabs(val((uint16_t)(mag + 1)) - ax) >= d, "%s: %g -> %04x not nearest", what, x, r);
    if (mag > 0) ck_assert_msg(fabs(val((uint16_t)(mag - 1)) - ax) >= d, "%s: %g -> %04x not nearest", what, x, r);
    if ((mag < top && fabs(val((uint16_t)(mag + 1)) - ax) == d) || (mag > 0 && fabs(val((uint16_t)(mag - 1)) - ax) == d))
        ck_assert_msg(!(mag & 1), "%s: tie at %g not to even", what, x);
}

static double bf16_value(uint16_t h)
{
    float f;
    uint32_t u = (uint32_t)(h & 0x7fff) << 16;
    memcpy(&f, &u, 4);
    return f;
}

static double half_mag(uint16_t h)
{
    return half_value(h & 0x7fff);
}

START_TEST(test_narrow_nearest_even)
{
    unsigned char src[4], dst[2];
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t hv = (uint16_t)h, r;
        memcpy(src, &hv, 2);
        /* BF16 -> F16 */
        wd_xdtype_convert(WD_F16, WD_BF16, src, 2, dst, 2);
        memcpy(&r, dst, 2);
        double x = bf16_value(hv) * ((h & 0x8000) ? -1 : 1);
        if (((h >> 7) & 255) == 255) {
            ck_assert_uint_eq(r & 0x7c00, 0x7c00); /* inf or NaN stays so */
            ck_assert(!!(h & 0x7f) == !!(r & 0x3ff));
        } else {
            check_nearest(x, r, half_mag, 0x7bff, "bf16->f16");
        }
        /* F16 -> BF16 */
        wd_xdtype_convert(WD_BF16, WD_F16, src, 2, dst, 2);
        memcpy(&r, dst, 2);
        if (((h >> 10) & 31) == 31) {
            ck_assert_uint_eq(r & 0x7f80, 0x7f80);
            ck_assert(!!(h & 0x3ff) == !!(r & 0x7f));
        } else {
            check_nearest(half_value(hv), r, bf16_value, 0x7f7f, "f16->bf16");
        }
    }
    /* F32 -> BF16 / F16 on values between representable ones */
    static const float xs[] = {1.00390625f, 1.01171875f, 3.14159265f, -2.7182818f, 65519.0f, 65520.0f, 1e-7f,
                               -6.1e-5f, 3.0e38f, 1e-40f};
    for (size_t i = 0; i < sizeof xs / sizeof *xs; i++) {
        uint32_t u = f32bits(xs[i]);
        uint16_t r;
        memcpy(src, &u, 4);
        wd_xdtype_convert(WD_BF16, WD_F32, src, 4, dst, 2);
        memcpy(&r, dst, 2);
        check_nearest(xs[i], r, bf16_value, 0x7f7f, "f32->bf16");
        wd_xdtype_convert(WD_F16, WD_F32, src, 4, dst, 2);
        memcpy(&r, dst, 2);
        check_nearest(xs[i], r, half_mag, 0x7bff, "f32->f16");
    }
}
END_TEST

START_TEST(test_range_and_padding)
{
    uint64_t brel;
    size_t bn;
    /* F32 fine-tune over a BF16 base of 100 elements: output bytes [64, 64+256) are elements 16..80 */
    wd_xdtype_range(WD_F32, WD_BF16, 200, 64, 256, &brel, &bn);
    ck_assert_uint_eq(brel, 32);
    ck_assert_uint_eq(bn, 128);
    /* past the base's end: elements 90..106 of which 10 exist */
    wd_xdtype_range(WD_F32, WD_BF16, 200, 360, 64, &brel, &bn);
    ck_assert_uint_eq(brel, 180);
    ck_assert_uint_eq(bn, 20);
    wd_xdtype_range(WD_BF16, WD_F32, 400, 400, 64, &brel, &bn);
    ck_assert_uint_eq(bn, 0);
    /* BF16 over F32: the base range is twice the output */
    wd_xdtype_range(WD_BF16, WD_F32, 4000, 100, 50, &brel, &bn);
    ck_assert_uint_eq(brel, 200);
    ck_assert_uint_eq(bn, 100);
    /* conversion pads with zeros past the base */
    uint16_t b[3] = {0x3f80, 0xbf80, 0x4000};
    unsigned char out[24];
    memset(out, 0xAA, sizeof out);
    wd_xdtype_convert(WD_F32, WD_BF16, (const unsigned char *)b, 6, out, 24);
    float f[6];
    memcpy(f, out, 24);
    ck_assert(f[0] == 1.0f && f[1] == -1.0f && f[2] == 2.0f);
    for (int i = 3; i < 6; i++) ck_assert_uint_eq(f32bits(f[i]), 0);
    /* same dtype, resized: a copy then zeros */
    memset(out, 0xAA, sizeof out);
    wd_xdtype_convert(WD_BF16, WD_BF16, (const unsigned char *)b, 6, out, 10);
    ck_assert(memcmp(out, b, 6) == 0);
    ck_assert(out[6] == 0 && out[7] == 0 && out[8] == 0 && out[9] == 0);
}
END_TEST

static wd_tensor tensor(wd_dtype dt, int ndim, uint64_t d0, uint64_t d1)
{
    static uint64_t pool[64][2]; /* the tensors are returned by value */
    static int used;
    wd_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = ndim;
    t.shape = pool[used++ % 64];
    t.shape[0] = d0;
    t.shape[1] = d1;
    return t;
}

START_TEST(test_fits)
{
    wd_tensor b = tensor(WD_BF16, 2, 256, 64);
    wd_tensor same = tensor(WD_BF16, 2, 256, 64), f32 = tensor(WD_F32, 2, 256, 64), rows = tensor(WD_BF16, 2, 260, 64),
              fewer = tensor(WD_F16, 2, 250, 64), cols = tensor(WD_BF16, 2, 256, 65), flat = tensor(WD_F32, 1, 16384, 0),
              ints = tensor(WD_I32, 2, 256, 64), f64 = tensor(WD_F64, 2, 256, 64);
    ck_assert(!wd_xdtype_fits(&same, &b)); /* the plain delta */
    ck_assert(wd_xdtype_fits(&f32, &b));
    ck_assert(wd_xdtype_fits(&rows, &b));
    ck_assert(wd_xdtype_fits(&fewer, &b));
    ck_assert(!wd_xdtype_fits(&cols, &b)); /* a column added would misalign every row */
    ck_assert(!wd_xdtype_fits(&flat, &b));
    ck_assert(!wd_xdtype_fits(&ints, &b));
    ck_assert(!wd_xdtype_fits(&f64, &b));
}
END_TEST

/* F32 blocks holding only BF16 (or F16) values take the narrow forms. */
START_TEST(test_encode_forms)
{
    enum { N = 4096 };
    float *ft = malloc(N * 4), *pb = malloc(N * 4);
    uint64_t r = 12345;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        pb[i] = (float)((double)(r >> 11) * 0x1p-53 - 0.5) * 0.05f;
        ft[i] = pb[i] + (float)((double)((r >> 20) & 1023) - 512) * 1e-6f;
    }
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *out;
    size_t len, len_full;
    ck_assert(wd_xdtype_encode(s, WD_F32, 1, (unsigned char *)ft, (unsigned char *)pb, N * 4, &out, &len, &err) == 0);
    ck_assert_uint_eq(out[0], 0);
    len_full = len;
    for (int i = 0; i < N; i++) { /* BF16 values (truncated: any BF16 value will do) */
        uint32_t u = f32bits(ft[i]) & 0xffff0000u;
        memcpy(&ft[i], &u, 4);
    }
    ck_assert(wd_xdtype_encode(s, WD_F32, 1, (unsigned char *)ft, (unsigned char *)pb, N * 4, &out, &len, &err) == 0);
    ck_assert_uint_eq(out[0], 1);
    ck_assert_uint_lt(len, len_full / 2);
    uint32_t snan = 0x7f810000u, qnan = 0xffc10000u; /* both with zero low bits */
    memcpy(&ft[7], &qnan, 4);
    ck_assert(wd_xdtype_encode(s, WD_F32, 1, (unsigned char *)ft, (unsigned char *)pb, N * 4, &out, &len, &err) == 0);
    ck_assert_uint_eq(out[0], 1);
    memcpy(&ft[9], &snan, 4); /* narrowing would quiet it: not form 1 (nor 2: 0x7f81 has no F16 equal) */
    ck_assert(wd_xdtype_encode(s, WD_F32, 1, (unsigned char *)ft, (unsigned char *)pb, N * 4, &out, &len, &err) == 0);
    ck_assert_uint_eq(out[0], 0);
    for (int i = 0; i < N; i++) ft[i] = (float)half_value((uint16_t)(0x2000 + (i * 7919) % 0x3000)); /* F16 values */
    ck_assert(wd_xdtype_encode(s, WD_F32, 1, (unsigned char *)ft, (unsigned char *)pb, N * 4, &out, &len, &err) == 0);
    ck_assert_uint_eq(out[0], 2);
    /* a 16-bit extent is never narrowed */
    ck_assert(wd_xdtype_encode(s, WD_BF16, 1, (unsigned char *)ft, (unsigned char *)pb, N * 4, &out, &len, &err) == 0);
    ck_assert_uint_eq(out[0], 0);
    wd_scratch_free(s);
    free(ft);
    free(pb);
}
END_TEST

static int parse(const char *json, wd_codec codec, wd_dtype dt, int with_base, wd_ext_priv *e, wd_err *err)
{
    cJSON *x = cJSON_Parse(json);
    ck_assert_ptr_nonnull(x);
    memset(e, 0, sizeof *e);
    e->pub.codec = codec;
    e->pub.dtype = dt;
    e->base_tensor = with_base ? strdup("w") : NULL;
    int rc = wd_xdtype_parse(x, e, "t.wdelta", "m.safetensors", 3, err);
    cJSON_Delete(x);
    free(e->base_tensor);
    free(e->params);
    return rc;
}

START_TEST(test_parse_predict)
{
    wd_ext_priv e;
    wd_err err;
    ck_assert(parse("{}", WD_CODEC_LOSSLESS, WD_F32, 1, &e, &err) == 0);
    ck_assert(!e.pred);
    ck_assert(parse("{\"predict\":{\"base_dtype\":\"BF16\",\"base_length\":4096}}", WD_CODEC_LOSSLESS, WD_F32, 1, &e,
                    &err) == 0);
    ck_assert(e.pred && e.pred_dtype == WD_BF16 && e.pred_length == 4096);
    static const char *bad[] = {
        "{\"predict\":\"BF16\"}",
        "{\"predict\":{\"base_dtype\":\"BF16\"}}",
        "{\"predict\":{\"base_length\":4}}",
        "{\"predict\":{\"base_dtype\":\"I8\",\"base_length\":4}}",
        "{\"predict\":{\"base_dtype\":\"F64\",\"base_length\":8}}",
        "{\"predict\":{\"base_dtype\":4,\"base_length\":4}}",
        "{\"predict\":{\"base_dtype\":\"BF16\",\"base_length\":3}}",
        "{\"predict\":{\"base_dtype\":\"F32\",\"base_length\":6}}",
        "{\"predict\":{\"base_dtype\":\"BF16\",\"base_length\":-2}}",
        "{\"predict\":{\"base_dtype\":\"BF16\",\"base_length\":2.5}}",
        "{\"predict\":{\"base_dtype\":\"BF16\",\"base_length\":1e300}}",
        "{\"predict\":{\"base_dtype\":\"BF16\",\"base_length\":\"4\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(parse(bad[i], WD_CODEC_LOSSLESS, WD_F32, 1, &e, &err) != 0 && strstr(err.msg, "extent 3"),
                      "%s accepted", bad[i]);
    const char *ok = "{\"predict\":{\"base_dtype\":\"BF16\",\"base_length\":4}}";
    ck_assert(parse(ok, WD_CODEC_ZSTD, WD_F32, 1, &e, &err) != 0);     /* reads no base */
    ck_assert(parse(ok, WD_CODEC_INT4, WD_F32, 1, &e, &err) != 0);     /* lossless only */
    ck_assert(parse(ok, WD_CODEC_LOSSLESS, WD_F32, 0, &e, &err) != 0); /* no base tensor */
    ck_assert(parse(ok, WD_CODEC_LOSSLESS, WD_I32, 1, &e, &err) != 0); /* not to an integer tensor */
}
END_TEST

Suite *suite_xdtype(void)
{
    Suite *s = suite_create("xdtype");
    TCase *tc = tcase_create("xdtype");
    tcase_add_test(tc, test_widen_exact);
    tcase_add_test(tc, test_narrow_nearest_even);
    tcase_add_test(tc, test_range_and_padding);
    tcase_add_test(tc, test_fits);
    tcase_add_test(tc, test_encode_forms);
    tcase_add_test(tc, test_parse_predict);
    suite_add_tcase(s, tc);
    return s;
}
