/* test_v1.c - deltatensors v1 files: bit-exact rebuilds against the
 * reference's expected SHA-256 per tensor (../shared/vectors/v1), and clean
 * errors for damaged files. */
#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "suites.h"

static const char *shared_dir(void)
{
    const char *e = getenv("WDELTA_SHARED");
    static char buf[512];
    snprintf(buf, sizeof buf, "%s", e && *e ? e : "../shared");
    struct stat st;
    return stat(buf, &st) == 0 ? buf : NULL;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    b[n] = 0;
    fclose(f);
    return b;
}

/* Rebuild every tensor of one v1 file and compare with expected.json. */
static void check_vector(const char *delta, const char *expected, const char *base_dir)
{
    wd_v1 *v;
    wd_err err;
    ck_assert_msg(wd_v1_open(delta, &v, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_v1_check_digest(v, &err) == 0, "%s", err.msg);
    char *text = slurp(expected);
    ck_assert(text != NULL);
    cJSON *exp = cJSON_Parse(text);
    free(text);
    ck_assert(exp != NULL);
    cJSON *tensors = cJSON_GetObjectItem(exp, "tensors");
    ck_assert_int_eq(cJSON_GetArraySize(tensors), (int)wd_v1_count(v));
    wd_model base;
    ck_assert_msg(wd_model_open(base_dir, &base, &err) == 0, "%s", err.msg);
    unsigned char ph[32];
    ck_assert(wd_model_hash(&base, ph, &err) == 0);
    ck_assert_msg(memcmp(ph, wd_v1_parent_hash(v), 32) == 0, "%s: parent hash differs from the base's", delta);
    for (size_t i = 0; i < wd_v1_count(v); i++) {
        const wd_v1_tensor *t = wd_v1_get(v, i);
        size_t fi;
        const wd_tensor *bt = wd_model_find(&base, t->name, &fi);
        ck_assert_msg(bt != NULL, "%s: base lacks %s", delta, t->name);
        ck_assert_uint_eq(bt->nelem, t->nelem);
        unsigned char *b = malloc(bt->length + 1);
        int fd = open(base.files[fi].path, O_RDONLY);
        ck_assert(pread(fd, b, bt->length, (off_t)bt->offset) == (ssize_t)bt->length);
        close(fd);
        float *out = malloc(t->nelem * 4 + 4);
        ck_assert_msg(wd_v1_rebuild(v, i, b, bt->dtype, out, &err) == 0, "%s: %s", delta, err.msg);
        wd_sha256 *h = wd_sha256_new();
        wd_sha256_update(h, out, t->nelem * 4);
        unsigned char d[32];
        char hex[65];
        wd_sha256_final(h, d);
        wd_hex(d, 32, hex);
        cJSON *et = cJSON_GetObjectItem(tensors, t->name);
        ck_assert_msg(et != NULL, "%s: expected.json lacks %s", delta, t->name);
        const char *want = cJSON_GetObjectItem(et, "sha256")->valuestring;
        ck_assert_msg(strcmp(hex, want) == 0, "%s: tensor %s (%s) rebuilds to %s, reference %s", delta, t->name,
                      t->strategy, hex, want);
        free(out);
        free(b);
    }
    wd_model_free(&base);
    cJSON_Delete(exp);
    wd_v1_close(v);
}

START_TEST(test_v1_vectors)
{
    const char *sh = shared_dir();
    if (!sh) {
        printf("test_v1_vectors: ../shared not found, skipping the reference vectors\n");
        return;
    }
    const char *sets[] = {"synth-f32", "synth-bf16", "pairB"};
    int checked = 0;
    for (size_t s = 0; s < 3; s++) {
        char dir[700], base[800];
        snprintf(dir, sizeof dir, "%s/vectors/v1/%s", sh, sets[s]);
        if (!strcmp(sets[s], "pairB")) snprintf(base, sizeof base, "%s/models/pairB/base", sh);
        else snprintf(base, sizeof base, "%s/base", dir);
        DIR *d = opendir(dir);
        ck_assert(d != NULL);
        struct dirent *de;
        while ((de = readdir(d))) {
            size_t n = strlen(de->d_name);
            if (n < 8 || strcmp(de->d_name + n - 7, ".wdelta")) continue;
            char delta[1400], exp[1400];
            snprintf(delta, sizeof delta, "%s/%s", dir, de->d_name);
            snprintf(exp, sizeof exp, "%s/%.*s.expected.json", dir, (int)(n - 7), de->d_name);
            check_vector(delta, exp, base);
            checked++;
        }
        closedir(d);
    }
    ck_assert_int_ge(checked, 13);
}
END_TEST

/* Truncations and flipped bytes: an error, never a crash. */
START_TEST(test_v1_damaged)
{
    const char *sh = shared_dir();
    if (!sh) return;
    char src[600];
    snprintf(src, sizeof src, "%s/vectors/v1/synth-f32/int4.wdelta", sh);
    char *data = slurp(src);
    struct stat st;
    ck_assert(stat(src, &st) == 0);
    char tmp[] = "/tmp/wdv1.XXXXXX";
    int fd = mkstemp(tmp);
    ck_assert(fd >= 0);
    wd_err err;
    wd_v1 *v;
    size_t n = (size_t)st.st_size;
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 1 : 97)) {
        ck_assert(ftruncate(fd, 0) == 0);
        ck_assert(pwrite(fd, data, cut, 0) == (ssize_t)cut);
        if (wd_v1_open(tmp, &v, &err) == 0) {
            ck_assert(wd_v1_check_digest(v, &err) == -1);
            wd_v1_close(v);
        }
    }
    int digest_failures = 0;
    for (size_t at = 0; at < n; at += 13) {
        data[at] ^= 0x41;
        ck_assert(ftruncate(fd, 0) == 0);
        ck_assert(pwrite(fd, data, n, 0) == (ssize_t)n);
        if (wd_v1_open(tmp, &v, &err) == 0) {
            if (wd_v1_check_digest(v, &err)) digest_failures++;
            float out[4096];
            unsigned char base[4096 * 4] = {0};
            for (size_t i = 0; i < wd_v1_count(v); i++)
                if (wd_v1_get(v, i)->nelem <= 4096) (void)wd_v1_rebuild(v, i, base, WD_F32, out, &err);
            wd_v1_close(v);
        } else {
            digest_failures++;
        }
        data[at] ^= 0x41;
    }
    ck_assert_int_eq(digest_failures, (int)((n + 12) / 13));
    close(fd);
    unlink(tmp);
    free(data);
}
END_TEST

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Narrowing for v1_dtype=base: round to nearest even, like numpy's astype. */
START_TEST(test_narrowing)
{
    static const struct { float f; uint16_t half, bf16; } cases[] = {
        {1.0f, 0x3c00, 0x3f80},
        {-2.0f, 0xc000, 0xc000},
        {0.0f, 0x0000, 0x0000},
        {-0.0f, 0x8000, 0x8000},
        {65504.0f, 0x7bff, 0x4780},            /* bf16 rounds up to 65536 */
        {65520.0f, 0x7c00, 0x4780},            /* rounds to infinity in half */
        {1e9f, 0x7c00, 0x4e6e},
        {0x1p-24f, 0x0001, 0x3380},            /* smallest half subnormal */
        {0x1p-25f, 0x0000, 0x3300},            /* tie: to even (zero) */
        {0x1.8p-25f, 0x0001, 0x3340},
        {0x1p-14f, 0x0400, 0x3880},            /* smallest half normal */
        {1.0f + 0x1p-11f, 0x3c00, 0x3f80},     /* tie: to even */
        {1.0f + 0x3p-11f, 0x3c02, 0x3f80},     /* tie: to even (up) */
        {1.0f + 0x1p-8f, 0x3c04, 0x3f80},      /* bf16 tie: to even */
        {1.0f + 0x3p-8f, 0x3c0c, 0x3f82},      /* bf16 tie: up to even */
        {INFINITY, 0x7c00, 0x7f80},
        {-INFINITY, 0xfc00, 0xff80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ck_assert_msg(wd_f32_to_f16(bits(cases[i].f)) == cases[i].half, "half of %a: %04x, want %04x", (double)cases[i].f,
                      wd_f32_to_f16(bits(cases[i].f)), cases[i].half);
        ck_assert_msg(wd_f32_to_bf16(bits(cases[i].f)) == cases[i].bf16, "bf16 of %a: %04x, want %04x",
                      (double)cases[i].f, wd_f32_to_bf16(bits(cases[i].f)), cases[i].bf16);
    }
    uint16_t h = wd_f32_to_f16(bits(NAN)), b = wd_f32_to_bf16(bits(NAN));
    ck_assert((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
    ck_assert((b & 0x7f80) == 0x7f80 && (b & 0x7f));
}
END_TEST

/* The v1 view through the delta API: the same bits as the reference, with
 * the base's layout, in float32 and narrowed to the base's bf16. */
START_TEST(test_v1_view)
{
    const char *sh = shared_dir();
    if (!sh) return;
    char delta[600], base_dir[600], expected[600];
    snprintf(delta, sizeof delta, "%s/vectors/v1/synth-bf16/int4.wdelta", sh);
    snprintf(base_dir, sizeof base_dir, "%s/vectors/v1/synth-bf16/base", sh);
    snprintf(expected, sizeof expected, "%s/vectors/v1/synth-bf16/int4.expected.json", sh);
    wd_err err;
    wd_model base;
    ck_assert(wd_model_open(base_dir, &base, &err) == 0);
    for (int narrow = 0; narrow < 2; narrow++) {
        wd_delta *d;
        ck_assert_msg(wd_delta_open(delta, &d, &err) == 0, "%s", err.msg);
        ck_assert_uint_eq(wd_delta_get_info(d)->version, 1);
        ck_assert_uint_eq(wd_delta_get_info(d)->nfiles, 0); /* outputs come with the base */
        wd_delta_v1_use_base_dtype(d, narrow);
        ck_assert_msg(wd_delta_set_base(d, &base, &err) == 0, "%s", err.msg);
        ck_assert(wd_delta_check_digest(d, &err) == 0);
        ck_assert_int_eq(wd_delta_digest_state(d), 1);
        const wd_delta_info *in = wd_delta_get_info(d);
        ck_assert_uint_eq(in->nfiles, 1);
        ck_assert_str_eq(in->files[0].name, "model.safetensors");
        unsigned char *file = malloc(in->files[0].size);
        ck_assert(wd_read(d, 1, NULL, 0, file, in->files[0].size, 0, &err) == (ssize_t)in->files[0].size);
        wd_stfile sf;
        ck_assert_msg(wd_st_parse(file, in->files[0].size, in->files[0].size, "view", &sf, &err) == 0, "%s", err.msg);
        char *text = slurp(expected);
        cJSON *exp = cJSON_Parse(text);
        free(text);
        for (size_t t = 0; t < sf.ntensors; t++) {
            const wd_tensor *tt = &sf.tensors[t];
            ck_assert_int_eq(tt->dtype, narrow ? WD_BF16 : WD_F32);
            if (narrow) continue; /* the reference publishes float32 digests only */
            wd_sha256 *h = wd_sha256_new();
            wd_sha256_update(h, file + tt->offset, tt->length);
            unsigned char dg[32];
            char hex[65];
            wd_sha256_final(h, dg);
            wd_hex(dg, 32, hex);
            cJSON *et = cJSON_GetObjectItem(cJSON_GetObjectItem(exp, "tensors"), tt->name);
            ck_assert_str_eq(hex, cJSON_GetObjectItem(et, "sha256")->valuestring);
        }
        cJSON_Delete(exp);
        wd_st_free(&sf);
        free(file);
        wd_delta_close(d);
    }
    wd_model_free(&base);
}
END_TEST

Suite *suite_v1(void)
{
    Suite *s = suite_create("v1");
    TCase *tc = tcase_create("v1");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_v1_vectors);
    tcase_add_test(tc, test_v1_damaged);
    tcase_add_test(tc, test_narrowing);
    tcase_add_test(tc, test_v1_view);
    suite_add_tcase(s, tc);
    return s;
}
