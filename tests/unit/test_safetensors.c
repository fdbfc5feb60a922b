/* test_safetensors.c - every error path of the safetensors parser, header
 * building (and its round trip through the parser), wd_st_open, dtypes,
 * safe names, hex and error messages. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "suites.h"

/* A header buffer (8-byte length + JSON text); the file is taken to hold
 * data_size bytes of data after it. */
static unsigned char *hdr(const char *json, uint64_t data_size, size_t *len, uint64_t *file_size)
{
    size_t n = strlen(json);
    unsigned char *b = malloc(8 + n);
    ck_assert(b != NULL);
    wd_put_u64(b, n);
    memcpy(b + 8, json, n);
    *len = 8 + n;
    *file_size = 8 + n + data_size;
    return b;
}

/* Parse must fail with a one-line message naming the file and containing
 * `want`. */
static void expect_error(const char *json, uint64_t data_size, const char *want)
{
    size_t len;
    uint64_t fs;
    unsigned char *b = hdr(json, data_size, &len, &fs);
    wd_stfile f;
    wd_err err = {0};
    int rc = wd_st_parse(b, len, fs, "t.safetensors", &f, &err);
    ck_assert_msg(rc == -1, "accepted: %s", json);
    ck_assert_msg(strstr(err.msg, want) != NULL, "for %s: wanted '%s', got '%s'", json, want, err.msg);
    ck_assert_msg(strstr(err.msg, "t.safetensors") != NULL, "message lacks the file name: %s", err.msg);
    ck_assert_msg(strchr(err.msg, '\n') == NULL, "message is not one line: %s", err.msg);
    ck_assert(f.tensors == NULL && f.header == NULL); /* nothing left to free */
    free(b);
}

/* Parse must succeed; the result is returned for inspection (free it). */
static void parse_ok(const char *json, uint64_t data_size, wd_stfile *f)
{
    size_t len;
    uint64_t fs;
    unsigned char *b = hdr(json, data_size, &len, &fs);
    wd_err err = {0};
    ck_assert_msg(wd_st_parse(b, len, fs, "t.safetensors", f, &err) == 0, "%s: %s", json, err.msg);
    ck_assert_uint_eq(f->header_size, len);
    ck_assert_uint_eq(f->size, fs);
    ck_assert(memcmp(f->header, b, len) == 0);
    free(b);
}

static void expect_ok(const char *json, uint64_t data_size, size_t ntensors)
{
    wd_stfile f;
    parse_ok(json, data_size, &f);
    ck_assert_uint_eq(f.ntensors, ntensors);
    wd_st_free(&f);
}

#define T(name, dt, shape, b, e) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}"

START_TEST(test_parse_valid)
{
    expect_ok("{" T("a", "F32", "[2,3]", "0", "24") "}", 24, 1);
    expect_ok("{}", 0, 0);                              /* no tensors, no data */
    expect_ok("{\"__metadata__\":{}}  \n\t\r ", 0, 0); /* JSON whitespace pads */
    /* every dtype of the format, each with its size */
    expect_ok("{" T("a", "F64", "[1]", "0", "8") "," T("b", "I64", "[1]", "8", "16") ","
              T("c", "U64", "[1]", "16", "24") "," T("d", "I32", "[1]", "24", "28") ","
              T("e", "U32", "[1]", "28", "32") "," T("f", "F16", "[1]", "32", "34") ","
              T("g", "I16", "[1]", "34", "36") "," T("h", "U16", "[1]", "36", "38") ","
              T("i", "I8", "[1]", "38", "39") "," T("j", "U8", "[1]", "39", "40") ","
              T("k", "BOOL", "[1]", "40", "41") "," T("l", "F8_E4M3", "[1]", "41", "42") ","
              T("m", "F8_E5M2", "[1]", "42", "43") "," T("n", "BF16", "[1]", "43", "45") ","
              T("o", "F32", "[1]", "45", "49") "}",
              49, 15);
    /* 32 dimensions is the limit, not past it; a 31-byte dtype is kept */
    expect_ok("{" T("a", "U8", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", "0", "1") "}", 1, 1);
    expect_ok("{" T("a", "ABCDEFGHIJKLMNOPQRSTUVWXYZ01234", "[5]", "0", "3") "}", 3, 1);
}
END_TEST

START_TEST(test_parse_fields)
{
    wd_stfile f;
    /* metadata, padding, scalar, zero-size tensor, unknown dtype kept opaque,
     * escaped non-ASCII name decoded to UTF-8 */
    parse_ok("{\"__metadata__\":{\"format\":\"pt\"}," T("s", "BF16", "[]", "0", "2") ","
             T("z", "F32", "[0,5]", "2", "2") "," T("q", "Q4_K", "[7]", "2", "9") ","
             T("caf\\u00e9", "U8", "[1]", "9", "10") "}     ",
             10, &f);
    ck_assert_uint_eq(f.ntensors, 4);
    uint64_t ds = f.header_size;
    const wd_tensor *s = wd_st_find(&f, "s"), *z = wd_st_find(&f, "z"), *q = wd_st_find(&f, "q");
    const wd_tensor *c = wd_st_find(&f, "caf\xc3\xa9");
    ck_assert(s && z && q && c && !wd_st_find(&f, "nope"));
    ck_assert_int_eq(s->ndim, 0);
    ck_assert_uint_eq(s->nelem, 1);
    ck_assert_int_eq(s->dtype, WD_BF16);
    ck_assert_uint_eq(s->offset, ds);
    ck_assert_uint_eq(s->length, 2);
    ck_assert_uint_eq(z->nelem, 0);
    ck_assert_uint_eq(z->length, 0);
    ck_assert_int_eq(z->ndim, 2);
    ck_assert_uint_eq(z->shape[1], 5);
    ck_assert_int_eq(q->dtype, WD_OPAQUE);
    ck_assert_str_eq(q->dtype_name, "Q4_K");
    ck_assert_uint_eq(q->nelem, 7);
    ck_assert_uint_eq(q->offset, ds + 2);
    ck_assert_uint_eq(q->length, 7);
    ck_assert_uint_eq(c->offset, ds + 9);
    /* sorted by (offset, length): the empty z comes before q at the same offset */
    ck_assert_str_eq(f.tensors[0].name, "s");
    ck_assert_str_eq(f.tensors[1].name, "z");
    ck_assert_str_eq(f.tensors[2].name, "q");
    ck_assert_str_eq(f.tensors[3].name, "caf\xc3\xa9");
    wd_st_free(&f);
    /* tensors listed out of file order come back in file order */
    parse_ok("{" T("b", "U8", "[2]", "3", "5") "," T("a", "U8", "[3]", "0", "3") "}", 5, &f);
    ck_assert_str_eq(f.tensors[0].name, "a");
    ck_assert_str_eq(f.tensors[1].name, "b");
    ck_assert_uint_eq(f.tensors[1].offset, f.header_size + 3);
    ck_assert(wd_st_find(&f, "b") == &f.tensors[1]);
    wd_st_free(&f);
    wd_st_free(&f); /* freeing twice is harmless: free zeroes */
}
END_TEST

START_TEST(test_parse_header_length)
{
    wd_stfile f;
    wd_err err;
    unsigned char b[16] = {0};
    ck_assert(wd_st_parse(b, 4, 4, "t.safetensors", &f, &err) == -1);
    ck_assert_msg(strstr(err.msg, "t.safetensors: too short") != NULL, "%s", err.msg);
    ck_assert(wd_st_parse(b, 16, 7, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "too short") != NULL);
    ck_assert(wd_st_parse(b, 16, 16, "t.safetensors", &f, &err) == -1);
    ck_assert_msg(strstr(err.msg, "t.safetensors: absurd header size 0") != NULL, "%s", err.msg);
    wd_put_u64(b, WD_ST_MAX_HEADER + 1ull);
    ck_assert(wd_st_parse(b, 16, 1ull << 41, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "absurd header size 104857601") != NULL);
    wd_put_u64(b, 0xffffffffffffffffull); /* 8 + N would wrap */
    ck_assert(wd_st_parse(b, 16, 16, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "absurd") != NULL);
    wd_put_u64(b, 100);
    ck_assert(wd_st_parse(b, 16, 107, "t.safetensors", &f, &err) == -1);
    ck_assert_msg(strstr(err.msg, "header length 100 runs past the end of the file (107 bytes)") != NULL, "%s",
                  err.msg);
    /* the file is long enough but the caller's buffer is not */
    ck_assert(wd_st_parse(b, 16, 200, "t.safetensors", &f, &err) == -1);
    ck_assert(strstr(err.msg, "buffer holds 16 of 108") != NULL);
}
END_TEST

START_TEST(test_parse_json_errors)
{
    expect_error("{\"a\":", 0, "not valid JSON");
    expect_error("{\"a\":1,}", 0, "not valid JSON");
    expect_error("x{}", 0, "not valid JSON");
    expect_error("{} x", 0, "unexpected bytes after the header JSON (header byte 3)");
    expect_error("{}{}", 0, "unexpected bytes after the header JSON");
    expect_error("[1,2]", 0, "not a JSON object");
    expect_error("\"s\"", 0, "not a JSON object");
    /* what cJSON lets through but JSON does not */
    expect_error("{}\x01", 0, "control byte 0x01 at header byte 2");
    expect_error("\x01{}", 0, "control byte 0x01");
    {
        static const char nul_pad[] = "{}  ";
        char j[8];
        memcpy(j, nul_pad, sizeof nul_pad);
        j[2] = 0; /* NUL padding: strlen-based helper cannot make it, so by hand */
        unsigned char b[12];
        wd_put_u64(b, 4);
        memcpy(b + 8, j, 4);
        wd_stfile f;
        wd_err err;
        ck_assert(wd_st_parse(b, 12, 12, "t.safetensors", &f, &err) == -1);
        ck_assert_msg(strstr(err.msg, "control byte 0x00 at header byte 2") != NULL, "%s", err.msg);
    }
    expect_error("{" T("a\\u0000b", "U8", "[1]", "0", "1") "}", 1, "escaped NUL");
    expect_error("{\"__metadata__\":{\"k\":\"v\\u0000\"}}", 0, "escaped NUL");
    /* an escaped backslash before u0000 is not an escape of NUL */
    expect_ok("{" T("a\\\\u0000b", "U8", "[1]", "0", "1") "}", 1, 1);
    expect_error("{" T("\\ud800", "U8", "[1]", "0", "1") "}", 1, "not valid JSON"); /* lone surrogate */
}
END_TEST

START_TEST(test_parse_metadata_errors)
{
    expect_error("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value 'k' is not a string");
    expect_error("{\"__metadata__\":{\"k\":{}}}", 0, "__metadata__ value 'k'");
    expect_error("{\"__metadata__\":{\"k\":null}}", 0, "__metadata__ value 'k'");
    expect_error("{\"__metadata__\":[]}", 0, "__metadata__ is not an object");
    expect_error("{\"__metadata__\":\"x\"}", 0, "__metadata__ is not an object");
    expect_error("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice");
}
END_TEST

START_TEST(test_parse_entry_errors)
{
    expect_error("{\"a\":7}", 0, "tensor a: entry is not an object");
    expect_error("{\"a\":[]}", 0, "tensor a: entry is not an object");
    expect_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a: dtype missing");
    expect_error("{\"a\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a: dtype missing or not a string");
    expect_error("{" T("a", "", "[1]", "0", "4") "}", 4, "is not a dtype");
    expect_error("{" T("a", "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "[1]", "0", "4") "}", 4, "is not a dtype");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor a: shape missing");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4, "shape missing or not a list");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor a: data_offsets must be a list of two");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", 4, "data_offsets must be a list");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets must be a list");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "data_offsets must be a list");
}
END_TEST

START_TEST(test_parse_shape_errors)
{
    expect_error("{" T("a", "F32", "[-1]", "0", "4") "}", 4, "tensor a: shape[0] is not a non-negative integer");
    expect_error("{" T("a", "F32", "[1,1.5]", "0", "4") "}", 4, "shape[1]");
    expect_error("{" T("a", "F32", "[\"1\"]", "0", "4") "}", 4, "shape[0]");
    expect_error("{" T("a", "F32", "[null]", "0", "4") "}", 4, "shape[0]");
    expect_error("{" T("a", "F32", "[9007199254740992]", "0", "4") "}", 4, "shape[0]"); /* 2^53 */
    expect_error("{" T("a", "F32", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", "0", "4") "}", 4,
                 "tensor a: 33 dimensions (at most 32)");
    /* 2^32 x 2^32 x 2 elements overflow; 2^32 x (2^32-1) F64 elements fit, their bytes do not */
    expect_error("{" T("a", "U8", "[4294967296,4294967296,2]", "0", "4") "}", 4, "tensor a: shape product overflows 64 bits");
    expect_error("{" T("a", "F64", "[4294967296,4294967295]", "0", "4") "}", 4, "byte size overflows 64 bits");
    /* an overflowing product times a zero dimension is a legal empty tensor */
    expect_ok("{" T("a", "U8", "[4294967296,4294967296,2,0]", "0", "0") "}", 0, 1);
    expect_error("{" T("a", "F32", "[2]", "0", "4") "}", 4, "tensor a: shape x F32 size is 8 bytes but data_offsets span 4");
    expect_error("{" T("a", "BF16", "[]", "0", "4") "}", 4, "shape x BF16 size is 2 bytes");
    expect_error("{" T("a", "F32", "[0]", "0", "4") "}", 4, "size is 0 bytes but data_offsets span 4");
}
END_TEST

START_TEST(test_parse_offset_errors)
{
    expect_error("{" T("a", "U8", "[4]", "-4", "0") "}", 4, "tensor a: data_offsets must be non-negative integers");
    expect_error("{" T("a", "U8", "[4]", "0.5", "4") "}", 4, "data_offsets must be non-negative integers");
    expect_error("{" T("a", "U8", "[4]", "\"0\"", "4") "}", 4, "data_offsets must be non-negative integers");
    expect_error("{" T("a", "U8", "[4]", "0", "9007199254740992") "}", 4, "data_offsets must be non-negative");
    expect_error("{" T("a", "U8", "[4]", "0", "1e300") "}", 4, "data_offsets must be non-negative");
    expect_error("{" T("a", "U8", "[4]", "4", "0") "}", 4, "tensor a: data_offsets end 0 before begin 4");
    expect_error("{" T("a", "U8", "[4]", "0", "4") "}", 3, "tensor a: data_offsets [0, 4) run past the data (3 bytes)");
    /* an opaque dtype skips the size check, not the offset checks */
    expect_error("{" T("a", "Q4", "[4]", "0", "4") "}", 3, "run past the data");
    expect_error("{" T("a", "Q4", "[4]", "1", "4") "}", 4, "first tensor a starts at 1");
}
END_TEST

START_TEST(test_parse_layout_errors)
{
    expect_error("{" T("a", "U8", "[4]", "0", "4") "," T("b", "U8", "[4]", "2", "6") "}", 6,
                 "tensor b at data offset 2 overlaps the previous tensor (ends at 4)");
    expect_error("{" T("a", "U8", "[4]", "0", "4") "," T("b", "U8", "[4]", "0", "4") "}", 4, "overlaps");
    /* an empty tensor inside another one overlaps it too */
    expect_error("{" T("a", "U8", "[4]", "0", "4") "," T("z", "U8", "[0]", "2", "2") "}", 4, "tensor z at data offset 2 overlaps");
    expect_error("{" T("a", "U8", "[4]", "0", "4") "," T("b", "U8", "[4]", "6", "10") "}", 10,
                 "gap of 2 bytes before tensor b (data offset 4)");
    expect_error("{" T("a", "U8", "[4]", "1", "5") "}", 5, "the data must start at data offset 0, but the first tensor a starts at 1");
    expect_error("{" T("a", "U8", "[4]", "0", "4") "}", 9, "tensors end at byte");
    expect_error("{" T("a", "U8", "[4]", "0", "4") "}", 9, "trailing bytes");
    expect_error("{}", 1, "trailing bytes");
    expect_error("{" T("z", "U8", "[0]", "0", "0") "}", 2, "trailing bytes");
}
END_TEST

START_TEST(test_parse_name_errors)
{
    expect_error("{" T("a", "U8", "[4]", "0", "4") "," T("a", "U8", "[4]", "4", "8") "}", 8, "tensor a appears twice");
    expect_error("{" T("b", "U8", "[4]", "0", "4") "," T("a", "U8", "[0]", "4", "4") "," T("b", "U8", "[0]", "4", "4") "}",
                 4, "tensor b appears twice");
    expect_error("{" T("", "U8", "[4]", "0", "4") "}", 4, "a tensor has an empty name");
    expect_error("{" T("\xc3\x28", "U8", "[4]", "0", "4") "}", 4, "not valid UTF-8");         /* bad continuation */
    expect_error("{" T("\xc0\xaf", "U8", "[4]", "0", "4") "}", 4, "not valid UTF-8");         /* overlong '/' */
    expect_error("{" T("\xed\xa0\x80", "U8", "[4]", "0", "4") "}", 4, "not valid UTF-8");     /* a surrogate */
    expect_error("{" T("\xf4\x90\x80\x80", "U8", "[4]", "0", "4") "}", 4, "not valid UTF-8"); /* > U+10FFFF */
    expect_error("{" T("ab\xe2\x82", "U8", "[4]", "0", "4") "}", 4, "not valid UTF-8");       /* cut short */
}
END_TEST

/* ---- building */

static void set_tensor(wd_tensor *t, const char *name, const char *dt, int ndim, const uint64_t *shape)
{
    memset(t, 0, sizeof *t);
    t->name = (char *)name;
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt);
    t->dtype = wd_dtype_from_name(dt);
    t->ndim = ndim;
    t->shape = (uint64_t *)shape; /* read, never written */
}

START_TEST(test_build_round_trip)
{
    static const uint64_t s35[] = {3, 5}, s7[] = {7}, s0[] = {4, 0}, big[] = {1000000000000000ull, 0};
    wd_tensor t[6];
    set_tensor(&t[0], "w", "BF16", 2, s35);
    set_tensor(&t[1], "b", "F32", 1, s7);
    set_tensor(&t[2], "scalar", "I64", 0, NULL);
    set_tensor(&t[3], "empty", "F16", 2, s0);
    set_tensor(&t[4], "q\"u\\o\xc3\xa9\n", "U8", 1, s7); /* needs escaping */
    set_tensor(&t[5], "huge_dim", "U8", 2, big);
    unsigned char *h;
    size_t hl;
    wd_err err;
    ck_assert_msg(wd_st_build_header(t, 6, "{\"format\":\"pt\",\"k\":\"v\"}", &h, &hl, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(wd_get_u64(h), hl - 8);
    ck_assert(memcmp(h + 8, "{\"__metadata__\":{", 17) == 0); /* metadata first */
    ck_assert(memmem(h, hl, "1000000000000000", 16) != NULL);  /* integers, not 1e+15 */
    ck_assert(memmem(h, hl, "e+", 2) == NULL);
    uint64_t want_off[6], at = hl;
    const uint64_t want_len[6] = {30, 28, 8, 0, 7, 0};
    for (int i = 0; i < 6; i++) {
        want_off[i] = at;
        ck_assert_uint_eq(t[i].offset, at);
        ck_assert_uint_eq(t[i].length, want_len[i]);
        at += want_len[i];
    }
    ck_assert_uint_eq(t[2].nelem, 1);
    /* the parser takes it back, tensors where the builder put them */
    wd_stfile f;
    ck_assert_msg(wd_st_parse(h, hl, at, "built", &f, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(f.ntensors, 6);
    ck_assert_uint_eq(f.header_size, hl);
    for (int i = 0; i < 6; i++) {
        const wd_tensor *p = wd_st_find(&f, t[i].name);
        ck_assert_msg(p != NULL, "%s", t[i].name);
        ck_assert_str_eq(p->dtype_name, t[i].dtype_name);
        ck_assert_int_eq(p->dtype, t[i].dtype);
        ck_assert_int_eq(p->ndim, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++) ck_assert_uint_eq(p->shape[d], t[i].shape[d]);
        ck_assert_uint_eq(p->nelem, t[i].nelem);
        ck_assert_uint_eq(p->offset, want_off[i]);
        ck_assert_uint_eq(p->length, want_len[i]);
    }
    wd_st_free(&f);
    free(h);
    /* no tensors, no metadata: still a valid, aligned header */
    ck_assert(wd_st_build_header(t, 0, NULL, &h, &hl, &err) == 0);
    ck_assert_uint_eq(hl, 16);
    ck_assert(memcmp(h + 8, "{}      ", 8) == 0);
    ck_assert(wd_st_parse(h, hl, hl, "built", &f, &err) == 0);
    wd_st_free(&f);
    free(h);
}
END_TEST

static void expect_build_error(wd_tensor *t, size_t n, const char *meta, const char *want)
{
    unsigned char *h = NULL;
    size_t hl = 0;
    wd_err err = {0};
    ck_assert(wd_st_build_header(t, n, meta, &h, &hl, &err) == -1);
    ck_assert_msg(strstr(err.msg, want) != NULL, "wanted '%s', got '%s'", want, err.msg);
    ck_assert(h == NULL);
}

START_TEST(test_build_errors)
{
    static const uint64_t s7[] = {7}, over[] = {1ull << 32, 1ull << 32}, s53[] = {1ull << 53};
    wd_tensor t[2];
    set_tensor(&t[0], "w", "F32", 1, s7);
    set_tensor(&t[1], "q", "Q4_K", 1, s7);
    expect_build_error(t, 2, NULL, "no known element size");
    set_tensor(&t[1], "q", "F32", 1, s7);
    t[1].dtype = WD_F16; /* name and code disagree */
    expect_build_error(t, 2, NULL, "does not match");
    set_tensor(&t[1], "w", "F32", 1, s7);
    expect_build_error(t, 2, NULL, "tensor w appears twice");
    set_tensor(&t[1], "", "F32", 1, s7);
    expect_build_error(t, 2, NULL, "tensor 1: name '' is empty");
    set_tensor(&t[1], "__metadata__", "F32", 1, s7);
    expect_build_error(t, 2, NULL, "reserved");
    set_tensor(&t[1], "\xff", "F32", 1, s7);
    expect_build_error(t, 2, NULL, "not UTF-8");
    set_tensor(&t[1], "x", "F32", 2, over);
    expect_build_error(t, 2, NULL, "tensor x: shape overflows");
    set_tensor(&t[1], "x", "U8", 1, s53);
    expect_build_error(t, 2, NULL, "reaches 2^53");
    set_tensor(&t[1], "x", "U8", 1, s7);
    t[1].ndim = WD_MAX_DIMS + 1;
    expect_build_error(t, 2, NULL, "tensor x: 33 dimensions");
    expect_build_error(t, 1, "{\"a\":1}", "__metadata__ value 'a' is not a string");
    expect_build_error(t, 1, "[]", "is not an object");
    expect_build_error(t, 1, "{\"a\":", "metadata is not valid JSON");
    expect_build_error(t, 1, "{} junk", "metadata is not valid JSON");
}
END_TEST

/* ---- files */

static void write_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(fd >= 0);
    ck_assert(write(fd, p, n) == (ssize_t)n);
    close(fd);
}

static void expect_open_error(const char *path, const char *want)
{
    wd_stfile f;
    wd_err err = {0};
    ck_assert(wd_st_open(path, &f, &err) == -1);
    ck_assert_msg(strstr(err.msg, want) != NULL, "wanted '%s', got '%s'", want, err.msg);
    ck_assert_msg(strstr(err.msg, path) != NULL, "message lacks the path: %s", err.msg);
}

/* The temp dir is made and removed in the runner's process (an unchecked
 * fixture), so a failing test leaves nothing behind. */
static char dir[64];

static void dir_setup(void)
{
    strcpy(dir, "/tmp/wdst.XXXXXX");
    ck_assert(mkdtemp(dir) != NULL);
}

static void dir_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert(system(cmd) == 0);
}

START_TEST(test_open_files)
{
    char p[256];
    snprintf(p, sizeof p, "%s/none.safetensors", dir);
    expect_open_error(p, "No such file");
    expect_open_error(dir, "not a regular file");
    snprintf(p, sizeof p, "%s/x.safetensors", dir);
    unsigned char len8[8];
    wd_put_u64(len8, 1ull << 62); /* refused before anything that size is allocated */
    write_bytes(p, len8, 8);
    expect_open_error(p, "absurd header size");
    write_bytes(p, len8, 5);
    expect_open_error(p, "too short");
    wd_put_u64(len8, 64);
    write_bytes(p, len8, 8);
    expect_open_error(p, "runs past the end of the file");
    /* a built header written with its data opens and matches */
    static const uint64_t s35[] = {3, 5}, s7[] = {7};
    wd_tensor t[2];
    set_tensor(&t[0], "w", "BF16", 2, s35);
    set_tensor(&t[1], "b", "F32", 1, s7);
    unsigned char *h;
    size_t hl;
    wd_err err;
    ck_assert(wd_st_build_header(t, 2, "{\"format\":\"pt\"}", &h, &hl, &err) == 0);
    size_t total = hl + 30 + 28;
    unsigned char *file = calloc(1, total);
    memcpy(file, h, hl);
    snprintf(p, sizeof p, "%s/ok.safetensors", dir);
    write_bytes(p, file, total);
    wd_stfile f;
    ck_assert_msg(wd_st_open(p, &f, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(f.ntensors, 2);
    ck_assert_str_eq(f.name, "ok.safetensors");
    ck_assert_str_eq(f.path, p);
    ck_assert_uint_eq(f.size, total);
    ck_assert(f.header == NULL); /* not kept: the file's first header_size bytes */
    ck_assert_uint_eq(f.header_size, hl);
    ck_assert_str_eq(f.tensors[0].name, "w");
    ck_assert_uint_eq(f.tensors[1].offset, hl + 30);
    ck_assert_uint_eq(f.tensors[0].nelem, 15);
    wd_st_free(&f);
    /* one byte cut off: the offsets now lie */
    write_bytes(p, file, total - 1);
    expect_open_error(p, "run past the data");
    /* one byte too many */
    write_bytes(p, file, total);
    int fd = open(p, O_WRONLY | O_APPEND);
    ck_assert(write(fd, "x", 1) == 1);
    close(fd);
    expect_open_error(p, "trailing bytes");
    free(file);
    free(h);
}
END_TEST

/* ---- small things */

START_TEST(test_safe_names)
{
    ck_assert(wd_safe_name("config.json"));
    ck_assert(wd_safe_name(".hidden"));
    ck_assert(wd_safe_name("..."));
    ck_assert(wd_safe_name("a b"));
    ck_assert(wd_safe_name("r\xc3\xa9sum\xc3\xa9.md"));
    ck_assert(wd_safe_name("\xf0\x9f\x98\x80"));
    ck_assert(!wd_safe_name(""));
    ck_assert(!wd_safe_name("."));
    ck_assert(!wd_safe_name(".."));
    ck_assert(!wd_safe_name("/"));
    ck_assert(!wd_safe_name("a/b"));
    ck_assert(!wd_safe_name("../x"));
    ck_assert(!wd_safe_name("a\nb"));
    ck_assert(!wd_safe_name("\x1f"));
    ck_assert(!wd_safe_name("a\x7f"));
    ck_assert(!wd_safe_name("\xff\xfe"));
    ck_assert(!wd_safe_name("\xc0\xae")); /* overlong '.' */
    ck_assert(!wd_safe_name("\xed\xa0\x80"));
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
    static const char *names[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8",
                                  "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2"};
    static const unsigned sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 8, 4, 2, 1, 1, 1, 1};
    for (int i = 0; i < 15; i++) {
        ck_assert_int_eq(wd_dtype_from_name(names[i]), (wd_dtype)i);
        ck_assert_uint_eq(wd_dtype_size((wd_dtype)i), sizes[i]);
        ck_assert_int_eq(wd_dtype_is_float((wd_dtype)i), i < 4);
    }
    ck_assert_int_eq(wd_dtype_from_name("bf16"), WD_OPAQUE);
    ck_assert_int_eq(wd_dtype_from_name(""), WD_OPAQUE);
    ck_assert_int_eq(wd_dtype_from_name("F32 "), WD_OPAQUE);
    ck_assert_uint_eq(wd_dtype_size(WD_OPAQUE), 0);
    ck_assert(!wd_dtype_is_float(WD_OPAQUE));
}
END_TEST

START_TEST(test_hex_and_errors)
{
    unsigned char x[4] = {0xde, 0xad, 0xbe, 0xef}, y[4];
    char hex[9];
    wd_hex(x, 4, hex);
    ck_assert_str_eq(hex, "deadbeef");
    ck_assert(wd_unhex("DEADbeef", y, 4) == 0);
    ck_assert(memcmp(x, y, 4) == 0);
    ck_assert(wd_unhex("deadbee", y, 4) == -1);
    ck_assert(wd_unhex("deadbeef0", y, 4) == -1);
    ck_assert(wd_unhex("deadbeeg", y, 4) == -1);
    ck_assert(wd_unhex(" eadbeef", y, 4) == -1);
    ck_assert(wd_unhex("", y, 0) == 0);
    /* SHA-256 of "abc" (FIPS 180-2) */
    unsigned char d[32];
    char dh[65];
    wd_sha256 *s = wd_sha256_new();
    wd_sha256_update(s, "a", 1);
    wd_sha256_update(s, "bc", 2);
    wd_sha256_final(s, d);
    wd_hex(d, 32, dh);
    ck_assert_str_eq(dh, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    wd_sha256_free(wd_sha256_new());
    wd_sha256_free(NULL);
    wd_err e;
    ck_assert(wd_errf(&e, "inner %d", 5) == -1);
    ck_assert(wd_errprefix(&e, "outer %s", "x") == -1);
    ck_assert_str_eq(e.msg, "outer x: inner 5");
    ck_assert(wd_errf(&e, "%s and %s", e.msg, e.msg) == -1); /* its own message as argument */
    ck_assert_str_eq(e.msg, "outer x: inner 5 and outer x: inner 5");
    char longs[2000];
    memset(longs, 'p', sizeof longs - 1);
    longs[sizeof longs - 1] = 0;
    wd_errprefix(&e, "%s", longs); /* truncated, still terminated */
    ck_assert_uint_eq(strlen(e.msg), sizeof e.msg - 1);
    ck_assert(wd_errf(NULL, "x") == -1 && wd_errprefix(NULL, "x") == -1);
}
END_TEST

Suite *suite_safetensors(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("safetensors");
    tcase_add_unchecked_fixture(tc, dir_setup, dir_teardown);
    tcase_add_test(tc, test_parse_valid);
    tcase_add_test(tc, test_parse_fields);
    tcase_add_test(tc, test_parse_header_length);
    tcase_add_test(tc, test_parse_json_errors);
    tcase_add_test(tc, test_parse_metadata_errors);
    tcase_add_test(tc, test_parse_entry_errors);
    tcase_add_test(tc, test_parse_shape_errors);
    tcase_add_test(tc, test_parse_offset_errors);
    tcase_add_test(tc, test_parse_layout_errors);
    tcase_add_test(tc, test_parse_name_errors);
    tcase_add_test(tc, test_build_round_trip);
    tcase_add_test(tc, test_build_errors);
    tcase_add_test(tc, test_open_files);
    tcase_add_test(tc, test_safe_names);
    tcase_add_test(tc, test_dtypes);
    tcase_add_test(tc, test_hex_and_errors);
    suite_add_tcase(s, tc);
    return s;
}
