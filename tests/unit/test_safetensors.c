/* test_safetensors.c - every error path of the safetensors parser, header
 * building, safe names, model directories and the content hash. */
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

/* A header buffer from JSON text; data_size bytes of data follow it. */
static unsigned char *hdr(const char *json, uint64_t *file_size, uint64_t data_size)
{
    size_t n = strlen(json);
    unsigned char *b = malloc(8 + n);
    wd_put_u64(b, n);
    memcpy(b + 8, json, n);
    *file_size = 8 + n + data_size;
    return b;
}

/* Parse must fail with a message containing `want`. */
static void expect_error(const char *json, uint64_t data_size, const char *want)
{
    uint64_t fs;
    unsigned char *b = hdr(json, &fs, data_size);
    wd_stfile f;
    wd_err err = {{0}};
    int rc = wd_st_parse(b, 8 + strlen(json), fs, "t.safetensors", &f, &err);
    ck_assert_msg(rc == -1, "accepted: %s", json);
    ck_assert_msg(strstr(err.msg, want) != NULL, "for %s: wanted '%s', got '%s'", json, want, err.msg);
    ck_assert_msg(strstr(err.msg, "t.safetensors") != NULL, "message lacks the file name: %s", err.msg);
    free(b);
}

static void expect_ok(const char *json, uint64_t data_size, size_t ntensors)
{
    uint64_t fs;
    unsigned char *b = hdr(json, &fs, data_size);
    wd_stfile f;
    wd_err err;
    ck_assert_msg(wd_st_parse(b, 8 + strlen(json), fs, "t.safetensors", &f, &err) == 0, "%s: %s", json, err.msg);
    ck_assert_uint_eq(f.ntensors, ntensors);
    wd_st_free(&f);
    free(b);
}

START_TEST(test_parse_valid)
{
    expect_ok("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24, 1);
    /* metadata, padding, scalar, zero-size tensors, unknown dtype as opaque */
    expect_ok("{\"__metadata__\":{\"format\":\"pt\"},\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,2]},"
              "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[2,2]},"
              "\"q\":{\"dtype\":\"Q4_K\",\"shape\":[7],\"data_offsets\":[2,9]}}     ",
              9, 3);
    /* every dtype of the format */
    expect_ok("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]},"
              "\"c\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[16,24]},"
              "\"d\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[24,28]},"
              "\"e\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[28,32]},"
              "\"f\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[32,34]},"
              "\"g\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[34,36]},"
              "\"h\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[36,38]},"
              "\"i\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[38,39]},"
              "\"j\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[39,40]},"
              "\"k\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[40,41]},"
              "\"l\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[41,42]},"
              "\"m\":{\"dtype\":\"F8_E5M2\",\"shape\":[1],\"data_offsets\":[42,43]}}",
              43, 13);
    /* tensors listed out of offset order come back sorted by offset */
    uint64_t fs;
    const char *j = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}";
    unsigned char *b = hdr(j, &fs, 5);
    wd_stfile f;
    wd_err err;
    ck_assert(wd_st_parse(b, 8 + strlen(j), fs, "t", &f, &err) == 0);
    ck_assert_str_eq(f.tensors[0].name, "a");
    ck_assert_uint_eq(f.tensors[1].offset, 8 + strlen(j) + 3);
    ck_assert_uint_eq(f.header_size, 8 + strlen(j));
    ck_assert(memcmp(f.header, b, f.header_size) == 0);
    ck_assert(wd_st_find(&f, "b") == &f.tensors[1]);
    ck_assert(wd_st_find(&f, "zz") == NULL);
    wd_st_free(&f);
    free(b);
}
END_TEST

START_TEST(test_parse_errors)
{
    const char *t = "\"dtype\":\"F32\",\"shape\":[2]";
    char j[1024];
    /* JSON */
    expect_error("{\"a\":", 0, "not valid JSON");
    expect_error("[1,2]", 0, "not a JSON object");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} xx", 4, "after the header JSON");
    /* fields */
    expect_error("{\"a\":7}", 0, "not an object");
    expect_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype missing");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape missing");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets must be");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets must be");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,4]}}", 4, "non-negative");
    expect_error("{\"a\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype missing");
    expect_error("{\"a\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "is not a dtype");
    expect_error("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__");
    expect_error("{\"__metadata__\":[]}", 0, "__metadata__");
    /* sizes */
    snprintf(j, sizeof j, "{\"a\":{%s,\"data_offsets\":[0,4]}}", t);
    expect_error(j, 4, "shape x F32 size is 8 bytes but data_offsets span 4");
    snprintf(j, sizeof j, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,4]}}");
    expect_error(j, 4, "overflows 64 bits");
    snprintf(j, sizeof j, "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}");
    expect_error(j, 4, "overflows 64 bits");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[0,4]}}", 4, "dimensions");
    /* offsets */
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,0]}}", 4, "before begin");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 3, "run past the data");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6, "overlaps");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}", 10, "gap of 2 bytes");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[1,5]}}", 5, "gap of 1 bytes");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 9, "trailing bytes");
    /* names */
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, "appears twice");
    expect_error("{\"\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "empty name");
    expect_error("{\"\xc3\x28\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "UTF-8");
    expect_error("{\"\xed\xa0\x80\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "UTF-8");
}
END_TEST

START_TEST(test_header_sizes)
{
    wd_stfile f;
    wd_err err;
    unsigned char b[16] = {0};
    /* too short, zero, absurd, past the end */
    ck_assert(wd_st_parse(b, 4, 4, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "too short") != NULL);
    ck_assert(wd_st_parse(b, 16, 16, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "absurd header size 0") != NULL);
    wd_put_u64(b, 1ull << 40);
    ck_assert(wd_st_parse(b, 16, 1ull << 41, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "absurd") != NULL);
    wd_put_u64(b, 0xffffffffffffffffull);
    ck_assert(wd_st_parse(b, 16, 16, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "absurd") != NULL);
    wd_put_u64(b, 100);
    ck_assert(wd_st_parse(b, 16, 50, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "past the end") != NULL);
}
END_TEST

static char tmpdir[64];

static void write_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(fd >= 0);
    ck_assert(write(fd, p, n) == (ssize_t)n);
    close(fd);
}

START_TEST(test_open_files)
{
    strcpy(tmpdir, "/tmp/wdst.XXXXXX");
    ck_assert(mkdtemp(tmpdir) != NULL);
    char p[256];
    wd_stfile f;
    wd_err err;
    snprintf(p, sizeof p, "%s/none.safetensors", tmpdir);
    ck_assert(wd_st_open(p, &f, &err) == -1);
    ck_assert(strstr(err.msg, p) != NULL);
    ck_assert(wd_st_open(tmpdir, &f, &err) == -1); /* a directory */
    /* a huge header length fails before any allocation */
    unsigned char big[8];
    wd_put_u64(big, 1ull << 62);
    snprintf(p, sizeof p, "%s/huge.safetensors", tmpdir);
    write_bytes(p, big, 8);
    ck_assert(wd_st_open(p, &f, &err) == -1);
    ck_assert(strstr(err.msg, "absurd") != NULL);
    write_bytes(p, big, 5);
    ck_assert(wd_st_open(p, &f, &err) == -1);
    ck_assert(strstr(err.msg, "too short") != NULL);
    /* a built header written with its data opens and matches */
    wd_tensor t[2];
    memset(t, 0, sizeof t);
    t[0].name = "w";
    strcpy(t[0].dtype_name, "BF16");
    t[0].dtype = WD_BF16;
    t[0].ndim = 2;
    t[0].shape[0] = 3;
    t[0].shape[1] = 5;
    t[1].name = "b";
    strcpy(t[1].dtype_name, "F32");
    t[1].dtype = WD_F32;
    t[1].ndim = 1;
    t[1].shape[0] = 7;
    unsigned char *h;
    size_t hl;
    ck_assert(wd_st_build_header(t, 2, "{\"format\":\"pt\"}", &h, &hl, &err) == 0);
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(t[0].offset, hl);
    ck_assert_uint_eq(t[0].length, 30);
    ck_assert_uint_eq(t[1].offset, hl + 30);
    size_t total = hl + 30 + 28;
    unsigned char *file = calloc(1, total);
    memcpy(file, h, hl);
    snprintf(p, sizeof p, "%s/ok.safetensors", tmpdir);
    write_bytes(p, file, total);
    ck_assert_msg(wd_st_open(p, &f, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(f.ntensors, 2);
    ck_assert_str_eq(f.name, "ok.safetensors");
    ck_assert_str_eq(f.tensors[0].name, "w");
    ck_assert_uint_eq(f.tensors[1].offset, hl + 30);
    ck_assert_uint_eq(f.tensors[0].nelem, 15);
    wd_st_free(&f);
    /* the same file with one byte cut off: offsets now lie */
    write_bytes(p, file, total - 1);
    ck_assert(wd_st_open(p, &f, &err) == -1);
    ck_assert(strstr(err.msg, "run past the data") != NULL);
    free(file);
    free(h);
    /* build refuses what it cannot describe */
    t[1].dtype = WD_OPAQUE;
    ck_assert(wd_st_build_header(t, 2, NULL, &h, &hl, &err) == -1);
    t[1].dtype = WD_F32;
    t[1].name = "w";
    ck_assert(wd_st_build_header(t, 2, NULL, &h, &hl, &err) == -1);
    ck_assert(wd_st_build_header(t, 1, "{\"a\":1}", &h, &hl, &err) == -1);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    ck_assert(system(cmd) == 0);
}
END_TEST

START_TEST(test_safe_names)
{
    ck_assert(wd_safe_name("config.json"));
    ck_assert(wd_safe_name("tokenizer.json"));
    ck_assert(wd_safe_name("r\xc3\xa9sum\xc3\xa9.md"));
    ck_assert(!wd_safe_name(""));
    ck_assert(!wd_safe_name("."));
    ck_assert(!wd_safe_name(".."));
    ck_assert(!wd_safe_name("a/b"));
    ck_assert(!wd_safe_name("../x"));
    ck_assert(!wd_safe_name("a\nb"));
    ck_assert(!wd_safe_name("a\x7f"));
    ck_assert(!wd_safe_name("\xff\xfe"));
    char longname[300];
    memset(longname, 'a', 256);
    longname[256] = 0;
    ck_assert(!wd_safe_name(longname));
    longname[255] = 0;
    ck_assert(wd_safe_name(longname));
}
END_TEST

START_TEST(test_dtypes)
{
    ck_assert_int_eq(wd_dtype_from_name("BF16"), WD_BF16);
    ck_assert_int_eq(wd_dtype_from_name("F8_E5M2"), WD_F8_E5M2);
    ck_assert_int_eq(wd_dtype_from_name("bf16"), WD_OPAQUE);
    ck_assert_uint_eq(wd_dtype_size(WD_F64), 8);
    ck_assert_uint_eq(wd_dtype_size(WD_BOOL), 1);
    ck_assert_uint_eq(wd_dtype_size(WD_OPAQUE), 0);
    ck_assert(wd_dtype_is_float(WD_BF16));
    ck_assert(!wd_dtype_is_float(WD_I32));
    unsigned char x[4] = {0xde, 0xad, 0xbe, 0xef}, y[4];
    char hex[9];
    wd_hex(x, 4, hex);
    ck_assert_str_eq(hex, "deadbeef");
    ck_assert(wd_unhex("DEADbeef", y, 4) == 0);
    ck_assert(memcmp(x, y, 4) == 0);
    ck_assert(wd_unhex("deadbee", y, 4) == -1);
    ck_assert(wd_unhex("deadbeeg", y, 4) == -1);
    wd_err e;
    wd_errf(&e, "inner %d", 5);
    wd_errprefix(&e, "outer %s", "x");
    ck_assert_str_eq(e.msg, "outer x: inner 5");
}
END_TEST

Suite *suite_safetensors(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("safetensors");
    tcase_add_test(tc, test_parse_valid);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_header_sizes);
    tcase_add_test(tc, test_open_files);
    tcase_add_test(tc, test_safe_names);
    tcase_add_test(tc, test_dtypes);
    suite_add_tcase(s, tc);
    return s;
}
