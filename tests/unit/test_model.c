/* test_model.c - model directories (single file, shards + index, broken
 * indexes) and the content hash against the reference's parent_hash. */
#include <check.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "suites.h"

static char dir[64];

static void put(const char *name, const void *p, size_t n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(fd >= 0);
    ck_assert(write(fd, p, n) == (ssize_t)n);
    close(fd);
}

/* A shard holding U8 tensors named in `names` (comma-separated), each of 3
 * bytes whose values derive from the name. */
static void shard(const char *file, const char *names)
{
    wd_tensor t[8];
    memset(t, 0, sizeof t);
    char buf[256], *save, *tok;
    snprintf(buf, sizeof buf, "%s", names);
    size_t n = 0;
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save), n++) {
        t[n].name = strdup(tok);
        strcpy(t[n].dtype_name, "U8");
        t[n].dtype = WD_U8;
        t[n].ndim = 1;
        t[n].shape[0] = 3;
    }
    unsigned char *h;
    size_t hl;
    wd_err err;
    ck_assert(wd_st_build_header(t, n, NULL, &h, &hl, &err) == 0);
    unsigned char *file_bytes = malloc(hl + 3 * n);
    memcpy(file_bytes, h, hl);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) file_bytes[hl + 3 * i + k] = (unsigned char)(t[i].name[0] * (k + 1));
    put(file, file_bytes, hl + 3 * n);
    for (size_t i = 0; i < n; i++) free(t[i].name);
    free(h);
    free(file_bytes);
}

static void fresh(void)
{
    strcpy(dir, "/tmp/wdmodel.XXXXXX");
    ck_assert(mkdtemp(dir) != NULL);
}

static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert(system(cmd) == 0);
}

START_TEST(test_single_file)
{
    fresh();
    shard("model.safetensors", "b,a,c");
    put("config.json", "{}", 2);
    put(".hidden", "x", 1);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/subdir", dir);
    mkdir(sub, 0755);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.nfiles, 1);
    ck_assert_uint_eq(m.ntensors, 3);
    ck_assert_uint_eq(m.nextras, 2); /* config.json, .hidden; not the subdirectory */
    ck_assert_str_eq(m.extras[0], ".hidden");
    size_t fi = 9;
    const wd_tensor *t = wd_model_find(&m, "c", &fi);
    ck_assert(t != NULL);
    ck_assert_uint_eq(fi, 0);
    ck_assert(wd_model_find(&m, "d", NULL) == NULL);
    /* the content hash: names and bytes in sorted order */
    unsigned char h[32], want[32];
    ck_assert(wd_model_hash(&m, h, &err) == 0);
    wd_sha256 *s = wd_sha256_new();
    const char *order[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        unsigned char v[3];
        for (int k = 0; k < 3; k++) v[k] = (unsigned char)(order[i][0] * (k + 1));
        wd_sha256_update(s, order[i], 1);
        wd_sha256_update(s, v, 3);
    }
    wd_sha256_final(s, want);
    ck_assert(memcmp(h, want, 32) == 0);
    wd_model_free(&m);
    cleanup();
}
END_TEST

START_TEST(test_sharded)
{
    fresh();
    /* shard 1 holds m,n; shard 2 holds a,z: hash order is shard 2 first
     * (smallest name "a"), then shard 1 */
    shard("model-00001-of-00002.safetensors", "n,m");
    shard("model-00002-of-00002.safetensors", "z,a");
    const char *idx = "{\"metadata\":{\"total_size\":12},\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\","
                      "\"m\":\"model-00001-of-00002.safetensors\",\"n\":\"model-00001-of-00002.safetensors\","
                      "\"z\":\"model-00002-of-00002.safetensors\"}}";
    put("model.safetensors.index.json", idx, strlen(idx));
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.nfiles, 2);
    ck_assert_uint_eq(m.ntensors, 4);
    ck_assert_uint_eq(m.nextras, 1);
    ck_assert_str_eq(m.extras[0], "model.safetensors.index.json");
    struct wd_tref order[4];
    wd_model_hash_order(&m, order);
    const char *want[] = {"a", "z", "m", "n"};
    for (int i = 0; i < 4; i++) ck_assert_str_eq(m.files[order[i].file].tensors[order[i].tensor].name, want[i]);
    unsigned char h[32], w[32];
    ck_assert(wd_model_hash(&m, h, &err) == 0);
    wd_sha256 *s = wd_sha256_new();
    for (int i = 0; i < 4; i++) {
        unsigned char v[3];
        for (int k = 0; k < 3; k++) v[k] = (unsigned char)(want[i][0] * (k + 1));
        wd_sha256_update(s, want[i], 1);
        wd_sha256_update(s, v, 3);
    }
    wd_sha256_final(s, w);
    ck_assert(memcmp(h, w, 32) == 0);
    wd_model_free(&m);
    cleanup();
}
END_TEST

static void expect_open_error(const char *want)
{
    wd_model m;
    wd_err err;
    ck_assert(wd_model_open(dir, &m, &err) == -1);
    ck_assert_msg(strstr(err.msg, want) != NULL, "wanted '%s', got '%s'", want, err.msg);
}

START_TEST(test_bad_dirs)
{
    fresh();
    expect_open_error("no safetensors");
    put("config.json", "{}", 2);
    expect_open_error("no safetensors");
    /* index names a tensor that is not there / puts one in the wrong shard */
    shard("s1.safetensors", "a,b");
    shard("s2.safetensors", "c");
    const char *bad1 = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\","
                       "\"d\":\"s2.safetensors\"}}";
    put("model.safetensors.index.json", bad1, strlen(bad1));
    expect_open_error("names tensor d, which no shard holds");
    const char *bad2 = "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}";
    put("model.safetensors.index.json", bad2, strlen(bad2));
    expect_open_error("puts tensor a in s2.safetensors, but it is in s1.safetensors");
    const char *bad3 = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}";
    put("model.safetensors.index.json", bad3, strlen(bad3));
    expect_open_error("the shards hold 3 tensors");
    const char *bad4 = "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}";
    put("model.safetensors.index.json", bad4, strlen(bad4));
    expect_open_error("not a plain file name");
    put("model.safetensors.index.json", "{", 1);
    expect_open_error("weight_map");
    const char *bad5 = "{\"weight_map\":{\"a\":\"s3.safetensors\"}}";
    put("model.safetensors.index.json", bad5, strlen(bad5));
    expect_open_error("s3.safetensors");
    /* the same tensor in two shards, no index */
    char p[128];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    unlink(p);
    shard("s2.safetensors", "c,a");
    expect_open_error("tensor a is in both");
    /* a broken shard names itself */
    put("s2.safetensors", "xxxxxxxxxxxx", 12);
    expect_open_error("s2.safetensors");
    cleanup();
    wd_model m;
    wd_err err;
    ck_assert(wd_model_open("/nonexistent/model", &m, &err) == -1);
}
END_TEST

static const char *shared_dir(void)
{
    const char *e = getenv("WDELTA_SHARED");
    static char buf[512];
    snprintf(buf, sizeof buf, "%s", e && *e ? e : "../shared");
    struct stat st;
    return stat(buf, &st) == 0 ? buf : NULL;
}

static void check_parent_hash(const char *model, const char *expected_json)
{
    char path[700];
    const char *sh = shared_dir();
    snprintf(path, sizeof path, "%s/%s", sh, expected_json);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s", path);
    char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    const char *key = strstr(text, "\"parent_hash\": \"");
    ck_assert(key != NULL);
    char want[65];
    memcpy(want, key + 16, 64);
    want[64] = 0;
    snprintf(path, sizeof path, "%s/%s", sh, model);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(path, &m, &err) == 0, "%s", err.msg);
    unsigned char h[32];
    char hex[65];
    ck_assert(wd_model_hash(&m, h, &err) == 0);
    wd_hex(h, 32, hex);
    ck_assert_msg(strcmp(hex, want) == 0, "%s hashes to %s, the reference says %s", model, hex, want);
    wd_model_free(&m);
}

START_TEST(test_reference_hashes)
{
    if (!shared_dir()) {
        printf("test_reference_hashes: ../shared not found, skipping\n");
        return;
    }
    check_parent_hash("vectors/v1/synth-f32/base", "vectors/v1/synth-f32/int4.expected.json");
    check_parent_hash("vectors/v1/synth-bf16/base", "vectors/v1/synth-bf16/int4.expected.json");
    check_parent_hash("models/pairB/base", "vectors/v1/pairB/int4.expected.json");
}
END_TEST

Suite *suite_model(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_single_file);
    tcase_add_test(tc, test_sharded);
    tcase_add_test(tc, test_bad_dirs);
    tcase_add_test(tc, test_reference_hashes);
    suite_add_tcase(s, tc);
    return s;
}
