/* test_lossy.c - the lossy codecs: round trips on random data within stated
 * error bounds, the reconstruction rule, every block decoding alone,
 * corrupt or mismatched blocks rejected, and pairB tensors through
 * wd_create / wd_eval (skipped when ../shared is missing). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "codec/lossy.h"
#include "suites.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t nrand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static double urand(void)
{
    return (double)(nrand() >> 11) * 0x1p-53;
}
static double grand(void)
{
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void put(unsigned char *p, wd_dtype dt, size_t i, float v)
{
    if (dt == WD_F32) memcpy(p + 4 * i, &v, 4);
    else {
        uint16_t h = dt == WD_BF16 ? wd_f32_to_bf16(fbits(v)) : wd_f32_to_f16(fbits(v));
        memcpy(p + 2 * i, &h, 2);
    }
}

/* base ~ N(0, 0.05); delta ~ N(0, 1) * row scale * column scale * 2e-3,
 * plus a few large moves */
static void make_pair(unsigned char *base, unsigned char *ft, wd_dtype dt, size_t rows, size_t cols)
{
    double *cs = malloc(cols * sizeof *cs);
    for (size_t j = 0; j < cols; j++) cs[j] = 0.3 + 1.7 * urand();
    for (size_t r = 0; r < rows; r++) {
        double rs = 0.2 + 2.0 * urand();
        for (size_t j = 0; j < cols; j++) {
            size_t i = r * cols + j;
            float b = (float)(0.05 * grand());
            double d = grand() * rs * cs[j] * 2e-3;
            if (nrand() % 1000 == 0) d *= 5;
            put(base, dt, i, b);
            put(ft, dt, i, (float)(b + d));
        }
    }
    free(cs);
}

typedef struct errs {
    double rel, max_abs;
} errs;

static errs measure(const unsigned char *base, const unsigned char *ft, const unsigned char *out, wd_dtype dt,
                    size_t ne)
{
    double e2 = 0, d2 = 0, mx = 0;
    for (size_t i = 0; i < ne; i++) {
        double f = wd_float_at(ft, dt, i), b = wd_float_at(base, dt, i), x = wd_float_at(out, dt, i);
        e2 += (x - f) * (x - f);
        d2 += (f - b) * (f - b);
        if (fabs(x - f) > mx) mx = fabs(x - f);
    }
    return (errs){sqrt(e2 / d2), mx};
}

static const wd_codec lossy[] = {WD_CODEC_INT4, WD_CODEC_SPARSE, WD_CODEC_BITDELTA, WD_CODEC_AXIS1};
static const wd_dtype fdt[] = {WD_BF16, WD_F16, WD_F32};

/* The stated bounds on this data (Gaussian deltas with row and column
 * structure): int4 (group 64, 0.2% outliers) <= 0.12, sparse at 10% <= 0.85,
 * bitdelta <= 1.0 (its row scale keeps <D, d> = ||d||^2, which costs error:
 * sqrt(pi/2 - 1) = 0.76 for pure Gaussian rows, more with column structure),
 * axis1 <= 0.8 and better than bitdelta. */
static double bound(wd_codec c)
{
    switch (c) {
    case WD_CODEC_INT4: return 0.12;
    case WD_CODEC_SPARSE: return 0.85;
    case WD_CODEC_BITDELTA: return 1.0;
    default: return 0.8;
    }
}

static errs roundtrip(wd_codec c, wd_dtype dt, size_t rows, size_t cols, const wd_lossy_params *pp,
                      size_t *stored)
{
    unsigned w = wd_dtype_size(dt);
    size_t n = rows * cols * w;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n), *out2 = malloc(n);
    make_pair(base, ft, dt, rows, cols);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len;
    wd_lossy_params p = pp ? *pp : (wd_lossy_params){(uint32_t)cols, 64, 0.002, 0.1, 3, 0, 0};
    p.cols = (uint32_t)cols;
    ck_assert_msg(wd_lossy_encode(s, c, dt, &p, ft, base, n, &enc, &len, &err) == 0, "%s", err.msg);
    unsigned char *copy = malloc(len);
    memcpy(copy, enc, len);
    if (stored) *stored = len;
    ck_assert_msg(wd_decode_block(s, c, dt, copy, len, base, out, n, &err) == 0, "%s %d: %s", wd_codec_name(c),
                  (int)dt, err.msg);
    /* a fresh scratch gives the same bytes */
    wd_scratch *s2 = wd_scratch_new();
    ck_assert(wd_decode_block(s2, c, dt, copy, len, base, out2, n, &err) == 0);
    ck_assert(memcmp(out, out2, n) == 0);
    errs e = measure(base, ft, out, dt, rows * cols);
    wd_scratch_free(s2);
    wd_scratch_free(s);
    free(copy);
    free(base);
    free(ft);
    free(out);
    free(out2);
    return e;
}

START_TEST(test_lossy_random_bounds)
{
    for (size_t d = 0; d < 3; d++) {
        double e_bit = 0, e_ax = 0;
        for (size_t c = 0; c < 4; c++) {
            size_t stored;
            errs e = roundtrip(lossy[c], fdt[d], 96, 320, NULL, &stored);
            ck_assert_msg(e.rel <= bound(lossy[c]), "%s dtype %d: relative error %g > %g", wd_codec_name(lossy[c]),
                          (int)fdt[d], e.rel, bound(lossy[c]));
            ck_assert_msg(e.rel > 0, "%s: a lossy codec was exact on random data", wd_codec_name(lossy[c]));
            double bpp = (double)stored * 8 / (96.0 * 320);
            if (lossy[c] == WD_CODEC_BITDELTA) {
                e_bit = e.rel;
                ck_assert_msg(bpp < 1.2, "bitdelta: %g bits/param", bpp);
            }
            if (lossy[c] == WD_CODEC_AXIS1) {
                e_ax = e.rel;
                ck_assert_msg(bpp < 1.4, "axis1: %g bits/param", bpp);
            }
            if (lossy[c] == WD_CODEC_INT4) ck_assert_msg(bpp < 4.5, "int4: %g bits/param", bpp);
        }
        ck_assert_msg(e_ax < 0.95 * e_bit, "axis1 (%g) should beat bitdelta (%g) on row x column structure", e_ax,
                      e_bit);
        /* int4 with a uniform step: error about step / sqrt(12) of the RMS,
         * fewer bits than the per-group least-squares scales */
        size_t st_ls, st_step;
        wd_lossy_params ps = {0, 128, 0.002, 0, 3, 0.5, 0};
        errs e1 = roundtrip(WD_CODEC_INT4, fdt[d], 96, 320, NULL, &st_ls);
        errs e2 = roundtrip(WD_CODEC_INT4, fdt[d], 96, 320, &ps, &st_step);
        ck_assert_msg(e2.rel > 0.08 && e2.rel < 0.2, "int4 step 0.5: relative error %g", e2.rel);
        ck_assert_msg(st_step < st_ls && e1.rel < e2.rel, "int4 step 0.5: %zu bytes (%g) vs %zu (%g)", st_step, e2.rel,
                      st_ls, e1.rel);
    }
}
END_TEST

/* odd shapes: a single row, a single column, odd columns, group larger than a row */
START_TEST(test_lossy_shapes)
{
    static const size_t shapes[][2] = {{1, 7}, {5, 1}, {3, 33}, {17, 130}, {2, 2}};
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
        for (size_t c = 0; c < 4; c++)
            for (size_t d = 0; d < 3; d++) {
                wd_lossy_params p = {0, 128, 0.01, 0.5, 1, 0, 0};
                errs e = roundtrip(lossy[c], fdt[d], shapes[sh][0], shapes[sh][1], &p, NULL);
                ck_assert_msg(e.rel < 2.0, "%s shape %zux%zu: %g", wd_codec_name(lossy[c]), shapes[sh][0],
                              shapes[sh][1], e.rel);
            }
}
END_TEST

/* sparse keeps its elements exactly; density 1 and int4 with every
 * element an outlier are exact */
START_TEST(test_lossy_exact_cases)
{
    size_t rows = 20, cols = 50, n = rows * cols * 2;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    make_pair(base, ft, WD_BF16, rows, cols);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len;
    wd_lossy_params p = {(uint32_t)cols, 64, 1.0, 1.0, 3, 0, 0};
    ck_assert(wd_lossy_encode(s, WD_CODEC_SPARSE, WD_BF16, &p, ft, base, n, &enc, &len, &err) == 0);
    unsigned char *cp = malloc(len);
    memcpy(cp, enc, len);
    ck_assert_msg(wd_decode_block(s, WD_CODEC_SPARSE, WD_BF16, cp, len, base, out, n, &err) == 0, "%s", err.msg);
    ck_assert(memcmp(out, ft, n) == 0);
    free(cp);
    ck_assert(wd_lossy_encode(s, WD_CODEC_INT4, WD_BF16, &p, ft, base, n, &enc, &len, &err) == 0);
    cp = malloc(len);
    memcpy(cp, enc, len);
    ck_assert_msg(wd_decode_block(s, WD_CODEC_INT4, WD_BF16, cp, len, base, out, n, &err) == 0, "%s", err.msg);
    ck_assert(memcmp(out, ft, n) == 0);
    free(cp);
    /* sparse at 5%: elements not kept are the base's, kept ones are ft's */
    p.density = 0.05;
    ck_assert(wd_lossy_encode(s, WD_CODEC_SPARSE, WD_BF16, &p, ft, base, n, &enc, &len, &err) == 0);
    cp = malloc(len);
    memcpy(cp, enc, len);
    ck_assert(wd_decode_block(s, WD_CODEC_SPARSE, WD_BF16, cp, len, base, out, n, &err) == 0);
    size_t kept = 0;
    for (size_t i = 0; i < rows * cols; i++) {
        int is_ft = !memcmp(out + 2 * i, ft + 2 * i, 2), is_base = !memcmp(out + 2 * i, base + 2 * i, 2);
        ck_assert(is_ft || is_base);
        if (is_ft && !is_base) kept++;
    }
    ck_assert_msg(kept <= 50 && kept >= 40, "kept %zu of 1000 at 5%%", kept);
    free(cp);
    /* an identical fine-tune rebuilds exactly with every codec */
    for (size_t c = 0; c < 4; c++) {
        p.density = 0.1;
        p.outliers = 0.001;
        ck_assert(wd_lossy_encode(s, lossy[c], WD_BF16, &p, base, base, n, &enc, &len, &err) == 0);
        cp = malloc(len);
        memcpy(cp, enc, len);
        ck_assert(wd_decode_block(s, lossy[c], WD_BF16, cp, len, base, out, n, &err) == 0);
        ck_assert_msg(memcmp(out, base, n) == 0, "%s: zero delta not exact", wd_codec_name(lossy[c]));
        free(cp);
    }
    wd_scratch_free(s);
    free(base);
    free(ft);
    free(out);
}
END_TEST

/* bitdelta follows the documented rule: out = bf16_rne(float(base) + sign * r_row),
 * r_row = FP16 of sum d^2 / sum |d| over the row (a power-of-two exponent apart) */
START_TEST(test_lossy_bitdelta_rule)
{
    size_t rows = 4, cols = 64, n = rows * cols * 2;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    make_pair(base, ft, WD_BF16, rows, cols);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    const unsigned char *enc;
    size_t len;
    wd_lossy_params p = {(uint32_t)cols, 0, 0, 0, 3, 0, 0};
    ck_assert(wd_lossy_encode(s, WD_CODEC_BITDELTA, WD_BF16, &p, ft, base, n, &enc, &len, &err) == 0);
    unsigned char *cp = malloc(len);
    memcpy(cp, enc, len);
    ck_assert(wd_decode_block(s, WD_CODEC_BITDELTA, WD_BF16, cp, len, base, out, n, &err) == 0);
    for (size_t r = 0; r < rows; r++) {
        double a1 = 0, a2 = 0;
        for (size_t j = 0; j < cols; j++) {
            double x = (double)wd_float_at(ft, WD_BF16, r * cols + j) - wd_float_at(base, WD_BF16, r * cols + j);
            a1 += fabs(x);
            a2 += x * x;
        }
        double m = a2 / a1;
        for (size_t j = 0; j < cols; j++) {
            size_t i = r * cols + j;
            float d = wd_float_at(ft, WD_BF16, i) - wd_float_at(base, WD_BF16, i);
            float dec = wd_float_at(out, WD_BF16, i) - wd_float_at(base, WD_BF16, i);
            /* |decoded move| is m (to FP16 and bf16 rounding), with d's sign */
            float want = wd_float_at(base, WD_BF16, i) + (d < 0 ? -(float)m : (float)m);
            ck_assert_msg(fabsf(wd_float_at(out, WD_BF16, i) - want) <= fabsf(want) * 0x1p-8f + 1e-9f,
                          "row %zu col %zu: %g vs %g", r, j, wd_float_at(out, WD_BF16, i), want);
            (void)dec;
        }
    }
    free(cp);
    wd_scratch_free(s);
    free(base);
    free(ft);
    free(out);
}
END_TEST

/* Truncated, damaged or mismatched blocks give errors; no crash, no
 * overrun (ASan), and output never claimed for a short block. */
START_TEST(test_lossy_corrupt)
{
    size_t rows = 24, cols = 96, n = rows * cols * 2;
    unsigned char *base = malloc(n), *ft = malloc(n), *out = malloc(n);
    make_pair(base, ft, WD_BF16, rows, cols);
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    for (size_t c = 0; c < 4; c++) {
        const unsigned char *enc;
        size_t len;
        wd_lossy_params p = {(uint32_t)cols, 32, 0.01, 0.1, 3, 0, 0};
        ck_assert(wd_lossy_encode(s, lossy[c], WD_BF16, &p, ft, base, n, &enc, &len, &err) == 0);
        unsigned char *cp = malloc(len + 8);
        memcpy(cp, enc, len);
        for (size_t t = 0; t < len; t++) {
            unsigned char *tr = malloc(t + 1);
            memcpy(tr, cp, t);
            ck_assert_msg(wd_decode_block(s, lossy[c], WD_BF16, tr, t, base, out, n, &err) == -1,
                          "%s: truncated to %zu of %zu bytes decoded", wd_codec_name(lossy[c]), t, len);
            ck_assert(err.msg[0]);
            free(tr);
        }
        /* trailing garbage */
        cp[len] = 1;
        ck_assert(wd_decode_block(s, lossy[c], WD_BF16, cp, len + 1, base, out, n, &err) == -1);
        /* wrong codec, wrong dtype, wrong size */
        ck_assert(wd_decode_block(s, lossy[(c + 1) % 4], WD_BF16, cp, len, base, out, n, &err) == -1);
        ck_assert(wd_decode_block(s, lossy[c], WD_F16, cp, len, base, out, n, &err) == -1);
        ck_assert(wd_decode_block(s, lossy[c], WD_BF16, cp, len, base, out, n - 2 * cols, &err) == -1);
        ck_assert(wd_decode_block(s, lossy[c], WD_BF16, cp, len, NULL, out, n, &err) == -1);
        /* every single byte of the fixed header and the first section header flipped */
        for (size_t i = 0; i < WD_LOSSY_HDR + 4 + 9 && i < len; i++) {
            cp[i] ^= 0x5a;
            int rc = wd_decode_block(s, lossy[c], WD_BF16, cp, len, base, out, n, &err);
            cp[i] ^= 0x5a;
            /* header words that change the layout must fail; a flipped
             * scale exponent may decode (to other values): the block
             * checksum in the .wdelta file catches those */
            if (i < 12 || (i >= WD_LOSSY_HDR && i < WD_LOSSY_HDR + 9 && lossy[c] != WD_CODEC_INT4))
                ck_assert_msg(rc == -1, "%s: flipped byte %zu decoded", wd_codec_name(lossy[c]), i);
        }
        /* random damage anywhere: never a crash */
        for (int k = 0; k < 300; k++) {
            size_t i = nrand() % len;
            unsigned char old = cp[i];
            cp[i] ^= (unsigned char)(1 + nrand() % 255);
            (void)wd_decode_block(s, lossy[c], WD_BF16, cp, len, base, out, n, &err);
            cp[i] = old;
        }
        free(cp);
    }
    wd_scratch_free(s);
    free(base);
    free(ft);
    free(out);
}
END_TEST

/* ---- through .wdelta files ------------------------------------------- */
static const char *shared_dir(void)
{
    const char *e = getenv("WDELTA_SHARED");
    static char buf[512];
    snprintf(buf, sizeof buf, "%s", e && *e ? e : "../shared");
    struct stat st;
    return stat(buf, &st) == 0 ? buf : NULL;
}

typedef struct tot {
    double e2, d2;
    uint64_t stored, nelem;
    int lossy_tensors, exact_1d;
} tot;

static void tot_cb(void *ctx, const wd_eval_tensor *t)
{
    tot *x = ctx;
    if (wd_codec_is_lossy(t->codec)) {
        x->e2 += t->err2;
        x->d2 += t->delta2;
        x->stored += t->stored;
        x->nelem += t->nelem;
        x->lossy_tensors++;
    } else {
        ck_assert_msg(t->err2 == 0, "tensor %s (%s) is not exact", t->name, wd_codec_name(t->codec));
        x->exact_1d++;
    }
}

/* pairB: each strategy with 64 KiB blocks (several per tensor), decoded
 * block by block in reverse order through a fresh handle (every block
 * alone), relative error within bounds, and a flipped stored byte rejected. */
START_TEST(test_lossy_pairB)
{
    const char *sh = shared_dir();
    if (!sh) {
        printf("test_lossy_pairB: ../shared not found, skipping the pairB tensors\n");
        return;
    }
    char bdir[600], fdir[600], tmpl[] = "/tmp/wd-lossy-XXXXXX", out[700];
    snprintf(bdir, sizeof bdir, "%s/models/pairB/base", sh);
    snprintf(fdir, sizeof fdir, "%s/models/pairB/ft", sh);
    ck_assert(mkdtemp(tmpl) != NULL);
    static const char *strat[] = {"int4", "sparse", "bitdelta", "axis1"};
    static const double maxrel[] = {0.2, 0.80, 0.75, 0.75};
    static const double maxbpp[] = {3.1, 1.5, 1.1, 1.3};
    wd_model bm, fm;
    wd_err err;
    ck_assert_msg(wd_model_open(bdir, &bm, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_model_open(fdir, &fm, &err) == 0, "%s", err.msg);
    for (int k = 0; k < 4; k++) {
        snprintf(out, sizeof out, "%s/%s.wdelta", tmpl, strat[k]);
        wd_create_opts o = {0};
        o.base_dir = bdir;
        o.ft_dir = fdir;
        o.out_path = out;
        o.strategy = strat[k];
        o.threads = 2;
        o.block_size = 64 * 1024;
        ck_assert_msg(wd_create(&o, NULL, &err) == 0, "%s: %s", strat[k], err.msg);
        wd_delta *d;
        ck_assert_msg(wd_delta_open(out, &d, &err) == 0, "%s", err.msg);
        ck_assert(wd_delta_set_base(d, &bm, &err) == 0);
        const wd_delta_info *in = wd_delta_get_info(d);
        unsigned char *buf = malloc(1 << 20);
        size_t multi = 0;
        for (size_t f = 0; f < in->nfiles; f++)
            for (size_t x = 0; x < in->files[f].nextents; x++)
                if (wd_codec_is_lossy(in->files[f].extents[x].codec) && in->files[f].extents[x].nblocks > 1) multi++;
        ck_assert_msg(multi > 10, "%s: only %zu lossy tensors span several blocks", strat[k], multi);
        for (size_t b = in->nblocks; b-- > 0;)
            ck_assert_msg(wd_delta_decode_block(d, (uint32_t)b, buf, &err) == 0, "%s block %zu: %s", strat[k], b,
                          err.msg);
        free(buf);
        tot t = {0};
        ck_assert_msg(wd_eval(d, &fm, tot_cb, &t, &err) == 0, "%s", err.msg);
        double rel = sqrt(t.e2 / t.d2), bpp = (double)t.stored * 8 / (double)t.nelem;
        printf("test_lossy_pairB: %-8s %d lossy tensors, %.3f bits/param, relative error %.4f\n", strat[k],
               t.lossy_tensors, bpp, rel);
        ck_assert_int_eq(t.lossy_tensors, 2 + 7 * 6); /* embed, lm_head, 7 matrices x 6 layers */
        ck_assert_msg(rel <= maxrel[k] && rel > 0, "%s: relative error %g", strat[k], rel);
        ck_assert_msg(bpp <= maxbpp[k], "%s: %g bits/param", strat[k], bpp);
        unsigned char rh[32];
        ck_assert_msg(wd_verify(d, 1, rh, NULL, NULL, &err) == 0, "%s", err.msg);
        ck_assert(memcmp(rh, in->result_hash, 32) == 0);
        /* one flipped byte in a lossy block is an error, never data */
        uint32_t lb = UINT32_MAX;
        for (size_t f = 0; f < in->nfiles && lb == UINT32_MAX; f++)
            for (size_t x = 0; x < in->files[f].nextents; x++)
                if (wd_codec_is_lossy(in->files[f].extents[x].codec)) {
                    lb = in->files[f].extents[x].first_block;
                    break;
                }
        uint64_t at = in->blocks[lb].offset + in->blocks[lb].stored_len / 2;
        wd_delta_close(d);
        FILE *fp = fopen(out, "r+b");
        ck_assert(fp);
        fseek(fp, (long)at, SEEK_SET);
        int ch = fgetc(fp);
        fseek(fp, (long)at, SEEK_SET);
        fputc(ch ^ 0x10, fp);
        fclose(fp);
        ck_assert(wd_delta_open(out, &d, &err) == 0);
        ck_assert(wd_delta_set_base(d, &bm, &err) == 0);
        unsigned char *b2 = malloc(1 << 20);
        ck_assert(wd_delta_decode_block(d, lb, b2, &err) == -1);
        ck_assert_msg(strstr(err.msg, "checksum"), "%s", err.msg);
        free(b2);
        wd_delta_close(d);
        unlink(out);
    }
    /* auto with a bound: every lossy tensor within it */
    snprintf(out, sizeof out, "%s/auto.wdelta", tmpl);
    wd_create_opts o = {0};
    o.base_dir = bdir;
    o.ft_dir = fdir;
    o.out_path = out;
    o.strategy = "auto";
    o.max_error = 0.2;
    o.threads = 2;
    ck_assert_msg(wd_create(&o, NULL, &err) == 0, "%s", err.msg);
    wd_delta *d;
    ck_assert(wd_delta_open(out, &d, &err) == 0);
    ck_assert(wd_delta_set_base(d, &bm, &err) == 0);
    tot t = {0};
    ck_assert(wd_eval(d, &fm, tot_cb, &t, &err) == 0);
    ck_assert_msg(sqrt(t.e2 / t.d2) <= 0.2, "auto 0.2: %g", sqrt(t.e2 / t.d2));
    ck_assert(t.lossy_tensors > 0);
    wd_delta_close(d);
    unlink(out);
    rmdir(tmpl);
    wd_model_free(&bm);
    wd_model_free(&fm);
}
END_TEST

Suite *suite_lossy(void)
{
    Suite *s = suite_create("lossy");
    TCase *tc = tcase_create("lossy");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_lossy_random_bounds);
    tcase_add_test(tc, test_lossy_shapes);
    tcase_add_test(tc, test_lossy_exact_cases);
    tcase_add_test(tc, test_lossy_bitdelta_rule);
    tcase_add_test(tc, test_lossy_corrupt);
    tcase_add_test(tc, test_lossy_pairB);
    suite_add_tcase(s, tc);
    return s;
}
