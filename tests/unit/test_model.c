/* test_model.c - model directories (single file, shards with and without an
 * index, broken indexes, duplicates), and the content hash: against an
 * independent computation on generated models and against the reference's
 * parent_hash on the shared vectors. */
#include <check.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "suites.h"

/* One temp root per run, made and removed by an unchecked fixture (in the
 * runner's process, so a failing test, which exits its forked child, still
 * leaves nothing behind); each test makes its own directory inside it. */
static char root[64], dir[128];

static void rm_rf(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    ck_assert(system(cmd) == 0);
}

static void root_setup(void)
{
    strcpy(root, "/tmp/wdmodel.XXXXXX");
    ck_assert(mkdtemp(root) != NULL);
}

static void root_teardown(void)
{
    rm_rf(root);
}

static void fresh(void)
{
    snprintf(dir, sizeof dir, "%s/XXXXXX", root);
    ck_assert(mkdtemp(dir) != NULL);
}

static void cleanup(void)
{
    rm_rf(dir);
}

static void put(const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_msg(fd >= 0, "%s", path);
    ck_assert(write(fd, p, n) == (ssize_t)n);
    close(fd);
}

static void put_str(const char *name, const char *text)
{
    put(name, text, strlen(text));
}

/* A tensor spec: U8, one dimension of `len` bytes. */
typedef struct spec {
    const char *name;
    size_t len;
} spec;

/* The deterministic content of a tensor, so that tests can recompute it. */
static unsigned char byte_of(const char *name, size_t i)
{
    unsigned h = 2166136261u;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return (unsigned char)(h + i * 131 + (i >> 8));
}

/* Write a shard holding the tensors of sp (n of them), in that file order. */
static void shard(const char *file, const spec *sp, size_t n)
{
    wd_tensor t[16];
    uint64_t shp[16];
    ck_assert(n <= 16);
    memset(t, 0, sizeof t);
    size_t data = 0;
    for (size_t i = 0; i < n; i++) {
        t[i].name = (char *)sp[i].name;
        strcpy(t[i].dtype_name, "U8");
        t[i].dtype = WD_U8;
        t[i].ndim = 1;
        t[i].shape = &shp[i];
        t[i].shape[0] = sp[i].len;
        data += sp[i].len;
    }
    unsigned char *h;
    size_t hl;
    wd_err err;
    ck_assert_msg(wd_st_build_header(t, n, NULL, &h, &hl, &err) == 0, "%s", err.msg);
    unsigned char *bytes = malloc(hl + data + 1);
    memcpy(bytes, h, hl);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < sp[i].len; k++) bytes[t[i].offset + k] = byte_of(sp[i].name, k);
    put(file, bytes, hl + data);
    free(h);
    free(bytes);
}

/* SHA-256 of name+bytes of the tensors in `order`, computed in one go over
 * a concatenated buffer with OpenSSL directly (not through wd_sha256). */
static void expected_hash(const spec *const *order, size_t n, unsigned char out[32])
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += strlen(order[i]->name) + order[i]->len;
    unsigned char *buf = malloc(total + 1), *p = buf;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(order[i]->name);
        memcpy(p, order[i]->name, nl);
        p += nl;
        for (size_t k = 0; k < order[i]->len; k++) *p++ = byte_of(order[i]->name, k);
    }
    unsigned len = 32;
    ck_assert(EVP_Digest(buf, total, out, &len, EVP_sha256(), NULL) == 1);
    free(buf);
}

static void check_hash(const wd_model *m, const spec *const *order, size_t n)
{
    unsigned char got[32], want[32];
    wd_err err;
    ck_assert_msg(wd_model_hash(m, got, &err) == 0, "%s", err.msg);
    expected_hash(order, n, want);
    char a[65], b[65];
    wd_hex(got, 32, a);
    wd_hex(want, 32, b);
    ck_assert_msg(!strcmp(a, b), "hash %s, expected %s", a, b);
}

static void check_order(const wd_model *m, const spec *const *order, size_t n)
{
    ck_assert_uint_eq(m->ntensors, n);
    struct wd_tref *r = malloc(n * sizeof *r);
    wd_model_hash_order(m, r);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(m->files[r[i].file].tensors[r[i].tensor].name, order[i]->name);
    free(r);
}

START_TEST(test_single_file)
{
    fresh();
    /* byte order, not locale order: "B" < "a" < "a.10" < "a.9" < "b" */
    const spec sp[] = {{"b", 3}, {"a.9", 5}, {"a", 1}, {"B", 2}, {"a.10", 0}, {"c", 7}};
    shard("model.safetensors", sp, 6);
    put_str("config.json", "{}");
    put_str(".hidden", "x");
    put_str("bad\nname", "x"); /* not a safe name: not served */
    char p[256], q[256];
    snprintf(p, sizeof p, "%s/subdir", dir);
    ck_assert(mkdir(p, 0755) == 0);
    snprintf(p, sizeof p, "%s/fifo", dir);
    ck_assert(mkfifo(p, 0644) == 0);
    snprintf(p, sizeof p, "%s/link.json", dir); /* a link to a regular file counts */
    ck_assert(symlink("config.json", p) == 0);
    snprintf(q, sizeof q, "%s/dirlink", dir);
    ck_assert(symlink("subdir", q) == 0);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    ck_assert(m.dir != dir);
    ck_assert_str_eq(m.dir, dir);
    ck_assert_uint_eq(m.nfiles, 1);
    ck_assert_str_eq(m.files[0].name, "model.safetensors");
    ck_assert_uint_eq(m.nextras, 3);
    ck_assert_str_eq(m.extras[0], ".hidden");
    ck_assert_str_eq(m.extras[1], "config.json");
    ck_assert_str_eq(m.extras[2], "link.json");
    const spec *order[] = {&sp[3], &sp[2], &sp[4], &sp[1], &sp[0], &sp[5]};
    for (size_t i = 0; i < 6; i++) {
        const struct wd_tref *r = &m.by_name[i];
        ck_assert_str_eq(m.files[r->file].tensors[r->tensor].name, order[i]->name);
        size_t fi = 9;
        const wd_tensor *t = wd_model_find(&m, order[i]->name, &fi);
        ck_assert(t == &m.files[r->file].tensors[r->tensor]);
        ck_assert_uint_eq(fi, 0);
    }
    ck_assert(wd_model_find(&m, "d", NULL) == NULL);
    ck_assert(wd_model_find(&m, "", NULL) == NULL);
    check_order(&m, order, 6); /* one shard: plain sorted order */
    check_hash(&m, order, 6);
    wd_model_free(&m);
    wd_model_free(&m); /* zeroed: harmless */
    cleanup();
}
END_TEST

START_TEST(test_sharded_index)
{
    fresh();
    /* shard 1 holds m, n and a tensor over 4 MiB (crosses read chunks);
     * shard 2 holds the smallest name "a", so the hash visits it first */
    const spec s1[] = {{"n", 10}, {"m", (9u << 20) + 3}}, s2[] = {{"z", 4}, {"a", 6}};
    shard("model-00001-of-00002.safetensors", s1, 2);
    shard("model-00002-of-00002.safetensors", s2, 2);
    shard("stray.safetensors", s2, 1); /* not in the index: an extra file */
    put_str("model.safetensors.index.json",
            "{\"metadata\":{\"total_size\":1},\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\","
            "\"m\":\"model-00001-of-00002.safetensors\",\"n\":\"model-00001-of-00002.safetensors\","
            "\"z\":\"model-00002-of-00002.safetensors\"}}");
    put_str("tokenizer.json", "{}");
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.nfiles, 2);
    ck_assert_str_eq(m.files[0].name, "model-00001-of-00002.safetensors");
    ck_assert_str_eq(m.files[1].name, "model-00002-of-00002.safetensors");
    ck_assert_uint_eq(m.nextras, 3);
    ck_assert_str_eq(m.extras[0], "model.safetensors.index.json");
    ck_assert_str_eq(m.extras[1], "stray.safetensors");
    ck_assert_str_eq(m.extras[2], "tokenizer.json");
    size_t fi;
    ck_assert(wd_model_find(&m, "a", &fi) != NULL);
    ck_assert_uint_eq(fi, 1);
    ck_assert(wd_model_find(&m, "m", &fi) != NULL);
    ck_assert_uint_eq(fi, 0);
    const spec *order[] = {&s2[1], &s2[0], &s1[1], &s1[0]};
    check_order(&m, order, 4);
    check_hash(&m, order, 4);
    wd_model_free(&m);
    cleanup();
}
END_TEST

START_TEST(test_sharded_no_index)
{
    fresh();
    /* every *.safetensors is a shard, an empty one included */
    const spec s1[] = {{"k", 2}, {"d", 3}}, s2[] = {{"e", 1}, {"c", 4}, {"x", 0}};
    shard("one.safetensors", s1, 2);
    shard("two.safetensors", s2, 3);
    shard("zero.safetensors", NULL, 0);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.nfiles, 3);
    ck_assert_uint_eq(m.nextras, 0);
    ck_assert_str_eq(m.files[2].name, "zero.safetensors");
    /* two.safetensors holds "c", the smallest name: it comes first */
    const spec *order[] = {&s2[1], &s2[0], &s2[2], &s1[1], &s1[0]};
    check_order(&m, order, 5);
    check_hash(&m, order, 5);
    wd_model_free(&m);
    cleanup();
}
END_TEST

static void expect_open_error(const char *want)
{
    wd_model m;
    wd_err err = {0};
    ck_assert(wd_model_open(dir, &m, &err) == -1);
    ck_assert_msg(strstr(err.msg, want) != NULL, "wanted '%s', got '%s'", want, err.msg);
    ck_assert(m.files == NULL && m.dir == NULL); /* freed */
}

START_TEST(test_index_errors)
{
    fresh();
    const spec s1[] = {{"a", 1}, {"b", 2}}, s2[] = {{"c", 3}};
    shard("s1.safetensors", s1, 2);
    shard("s2.safetensors", s2, 1);
    const char *good = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}";
    put_str("model.safetensors.index.json", good);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    wd_model_free(&m);
    put_str("model.safetensors.index.json",
            "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\","
            "\"d\":\"s2.safetensors\"}}");
    expect_open_error("model.safetensors.index.json names tensor d, which no shard holds");
    put_str("model.safetensors.index.json",
            "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}");
    expect_open_error("puts tensor a in s2.safetensors, but it is in s1.safetensors");
    put_str("model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}");
    expect_open_error("tensor b of s1.safetensors is missing from model.safetensors.index.json");
    put_str("model.safetensors.index.json",
            "{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}");
    expect_open_error("lists tensor a twice");
    put_str("model.safetensors.index.json", "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}");
    expect_open_error("shard name '../s1.safetensors' is not a plain file name");
    put_str("model.safetensors.index.json", "{\"weight_map\":{\"a\":7}}");
    expect_open_error("weight_map entry a is not a file name");
    put_str("model.safetensors.index.json", "{\"weight_map\":{}}");
    expect_open_error("weight_map is empty");
    put_str("model.safetensors.index.json", "{\"weight_map\":[]}");
    expect_open_error("weight_map");
    put_str("model.safetensors.index.json", "{");
    expect_open_error("model.safetensors.index.json: not JSON with a weight_map object");
    put_str("model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s3.safetensors\"}}");
    expect_open_error("s3.safetensors: No such file");
    cleanup();
}
END_TEST

START_TEST(test_duplicates_and_bad_dirs)
{
    fresh();
    expect_open_error("no safetensors files");
    put_str("config.json", "{}");
    expect_open_error("no safetensors files");
    char p[256];
    snprintf(p, sizeof p, "%s/x.safetensors", dir);
    ck_assert(mkdir(p, 0755) == 0); /* a directory named like a shard is skipped */
    expect_open_error("no safetensors files");
    const spec s1[] = {{"a", 1}, {"b", 2}}, s2[] = {{"c", 3}, {"a", 1}};
    shard("s1.safetensors", s1, 2);
    shard("s2.safetensors", s2, 2);
    expect_open_error("tensor a is in both s1.safetensors and s2.safetensors");
    /* with an index: the shards still may not share a name */
    put_str("model.safetensors.index.json",
            "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}");
    expect_open_error("tensor a is in both");
    unlink(strcat(strcpy(p, dir), "/model.safetensors.index.json"));
    /* a broken shard: its parser error names it */
    put_str("s2.safetensors", "xxxxxxxxxxxx");
    expect_open_error("s2.safetensors: absurd header size");
    cleanup();
    wd_model m;
    wd_err err;
    ck_assert(wd_model_open("/nonexistent/model", &m, &err) == -1);
    ck_assert(strstr(err.msg, "/nonexistent/model") != NULL);
    ck_assert(wd_model_open("/dev/null", &m, &err) == -1);
    ck_assert(strstr(err.msg, "not a directory") != NULL);
}
END_TEST

START_TEST(test_hash_short_read)
{
    fresh();
    const spec s1[] = {{"a", 100}, {"b", 50}};
    shard("model.safetensors", s1, 2);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    /* the file shrinks after it was opened: a clear error, never a hash */
    char p[256];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    uint64_t cut = m.files[0].tensors[1].offset + 20;
    ck_assert(truncate(p, (off_t)cut) == 0);
    unsigned char h[32];
    ck_assert(wd_model_hash(&m, h, &err) == -1);
    ck_assert_msg(strstr(err.msg, "hashing tensor b") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, p) != NULL, "%s", err.msg);
    char off[32];
    snprintf(off, sizeof off, "offset %llu", (unsigned long long)cut);
    ck_assert_msg(strstr(err.msg, off) != NULL, "%s", err.msg);
    unlink(p);
    ck_assert(wd_model_hash(&m, h, &err) == -1);
    ck_assert(strstr(err.msg, p) != NULL);
    wd_model_free(&m);
    cleanup();
}
END_TEST

/* One opened model, hashed from several threads at once. */
static void *hash_thread(void *arg)
{
    unsigned char *out = malloc(33);
    wd_err err;
    out[32] = (unsigned char)wd_model_hash(arg, out, &err);
    return out;
}

START_TEST(test_hash_threads)
{
    fresh();
    const spec s1[] = {{"w", 100000}, {"v", 7}}, s2[] = {{"u", 5000}};
    shard("a.safetensors", s1, 2);
    shard("b.safetensors", s2, 1);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) ck_assert(pthread_create(&th[i], NULL, hash_thread, &m) == 0);
    unsigned char want[32];
    const spec *order[] = {&s2[0], &s1[1], &s1[0]};
    expected_hash(order, 3, want);
    for (int i = 0; i < 4; i++) {
        unsigned char *got;
        ck_assert(pthread_join(th[i], (void **)&got) == 0);
        ck_assert(got[32] == 0 && memcmp(got, want, 32) == 0);
        free(got);
    }
    wd_model_free(&m);
    cleanup();
}
END_TEST

/* ---- the reference's parent_hash on the shared vectors */

/* ../shared relative to the repo root (tests run from there), or
 * $WDELTA_SHARED; NULL when absent. */
static const char *shared_dir(char *buf, size_t cap)
{
    const char *e = getenv("WDELTA_SHARED");
    snprintf(buf, cap, "%s", e && *e ? e : "../shared");
    struct stat st;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? buf : NULL;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s", path);
    ck_assert(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    ck_assert(n >= 0);
    rewind(f);
    char *text = malloc((size_t)n + 1);
    ck_assert(fread(text, 1, (size_t)n, f) == (size_t)n);
    text[n] = 0;
    fclose(f);
    return text;
}

static void check_parent_hash(const char *sh, const char *model, const char *expected_json)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", sh, expected_json);
    char *text = slurp(path);
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(root, "parent_hash");
    ck_assert_msg(cJSON_IsString(ph) && strlen(ph->valuestring) == 64, "%s: no parent_hash", path);
    unsigned char want[32];
    ck_assert(wd_unhex(ph->valuestring, want, 32) == 0);
    cJSON_Delete(root);
    snprintf(path, sizeof path, "%s/%s", sh, model);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(path, &m, &err) == 0, "%s", err.msg);
    unsigned char h[32];
    ck_assert_msg(wd_model_hash(&m, h, &err) == 0, "%s", err.msg);
    char got[65], exp[65];
    wd_hex(h, 32, got);
    wd_hex(want, 32, exp);
    ck_assert_msg(memcmp(h, want, 32) == 0, "%s hashes to %s, the reference says %s", model, got, exp);
    wd_model_free(&m);
}

START_TEST(test_reference_hashes)
{
    char buf[512];
    const char *sh = shared_dir(buf, sizeof buf);
    if (!sh) {
        printf("test_reference_hashes: %s not found (set WDELTA_SHARED), skipping\n", buf);
        return;
    }
    check_parent_hash(sh, "vectors/v1/synth-f32/base", "vectors/v1/synth-f32/int4.expected.json");
    check_parent_hash(sh, "vectors/v1/synth-bf16/base", "vectors/v1/synth-bf16/int4.expected.json");
    check_parent_hash(sh, "models/pairB/base", "vectors/v1/pairB/int4.expected.json"); /* sharded */
}
END_TEST

Suite *suite_model(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_add_test(tc, test_single_file);
    tcase_add_test(tc, test_sharded_index);
    tcase_add_test(tc, test_sharded_no_index);
    tcase_add_test(tc, test_index_errors);
    tcase_add_test(tc, test_duplicates_and_bad_dirs);
    tcase_add_test(tc, test_hash_short_read);
    tcase_add_test(tc, test_hash_threads);
    tcase_add_test(tc, test_reference_hashes);
    suite_add_tcase(s, tc);
    return s;
}
