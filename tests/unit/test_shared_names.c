/* test_shared_names.c - where a parsed file keeps its tensor names and
 * dimensions (issue 15: memory per tensor): in the allocation of its
 * tensors array, or, for a fine-tune opened against its base
 * (wd_model_open_shared), in the base's where they are the same.  The
 * tensors must come out exactly as a plain parse gives them, whatever is
 * shared; errors after shared entries leave nothing behind (ASan). */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "suites.h"

static char root[64];

static void root_setup(void)
{
    strcpy(root, "/tmp/wdshared.XXXXXX");
    ck_assert(mkdtemp(root) != NULL);
}

static void root_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert(system(cmd) == 0);
}

/* DIR/model.safetensors with header json (padded to 8) and data_len zero bytes */
static void write_st(const char *dir, const char *json, size_t data_len)
{
    char path[256];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    ck_assert(f);
    size_t jl = strlen(json), pad = (8 - jl % 8) % 8;
    unsigned char len8[8];
    wd_put_u64(len8, jl + pad);
    ck_assert(fwrite(len8, 1, 8, f) == 8 && fwrite(json, 1, jl, f) == jl);
    for (size_t i = 0; i < pad; i++) fputc(' ', f);
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    ck_assert(fclose(f) == 0);
}

/* 1 if p lies within the n bytes at base (by address, as integers) */
static int inside(const void *p, const void *base, size_t n)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    return a >= b && a < b + n;
}

static const char *BASE_JSON =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[32,36]},"
    "\"caf\xc3\xa9.long.name.of.a.tensor.that.takes.more.than.one.word\":"
    "{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,4],"
    "\"data_offsets\":[36,40]}}";

/* the same names, except "b" has another shape and "new" is not in the base */
static const char *FT_JSON =
    "{\"b\":{\"dtype\":\"BF16\",\"shape\":[5],\"data_offsets\":[0,10]},"
    "\"new\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[10,16]},"
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[16,40]},"
    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]},"
    "\"caf\xc3\xa9.long.name.of.a.tensor.that.takes.more.than.one.word\":"
    "{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,4],"
    "\"data_offsets\":[44,48]}}";

static void same_tensors(const wd_model *x, const wd_model *y)
{
    ck_assert_uint_eq(x->ntensors, y->ntensors);
    ck_assert_uint_eq(x->nfiles, y->nfiles);
    for (size_t f = 0; f < x->nfiles; f++)
        for (size_t i = 0; i < x->files[f].ntensors; i++) {
            const wd_tensor *a = &x->files[f].tensors[i], *b = &y->files[f].tensors[i];
            ck_assert_str_eq(a->name, b->name);
            ck_assert_str_eq(a->dtype_name, b->dtype_name);
            ck_assert_int_eq(a->ndim, b->ndim);
            for (int d = 0; d < a->ndim; d++) ck_assert_uint_eq(a->shape[d], b->shape[d]);
            ck_assert_uint_eq(a->nelem, b->nelem);
            ck_assert_uint_eq(a->offset, b->offset);
            ck_assert_uint_eq(a->length, b->length);
            ck_assert((uintptr_t)a->shape % 8 == 0);
        }
}

/* A plain parse keeps every name and dimension in the tensors array's block. */
START_TEST(test_names_in_one_block)
{
    char bd[128];
    snprintf(bd, sizeof bd, "%s/b1", root);
    write_st(bd, BASE_JSON, 40);
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(bd, &m, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.ntensors, 4);
    const wd_stfile *f = &m.files[0];
    /* the block: records (n + 1) then the room; names and dimensions after the records */
    size_t recs = (f->ntensors + 1) * sizeof *f->tensors;
    for (size_t i = 0; i < f->ntensors; i++) {
        const wd_tensor *t = &f->tensors[i];
        ck_assert(!inside(t->name, f->tensors, recs));
        ck_assert(inside(t->name, f->tensors, recs + 4096));
        ck_assert((uintptr_t)t->shape % 8 == 0);
    }
    const wd_tensor *l = wd_model_find(&m, "caf\xc3\xa9.long.name.of.a.tensor.that.takes.more.than.one.word", NULL);
    ck_assert(l && l->ndim == 32 && l->shape[31] == 4 && l->shape[0] == 1 && l->nelem == 4);
    const wd_tensor *s = wd_model_find(&m, "s", NULL);
    ck_assert(s && s->ndim == 0 && s->nelem == 1 && s->length == 4);
    wd_model_free(&m);
}
END_TEST

/* Against a donor: the same tensors as a plain open; shared names point at
 * the donor's, dimensions only where equal; the donor may be freed first. */
START_TEST(test_shared_with_donor)
{
    char bd[128], fd[128];
    snprintf(bd, sizeof bd, "%s/b2", root);
    snprintf(fd, sizeof fd, "%s/f2", root);
    write_st(bd, BASE_JSON, 40);
    write_st(fd, FT_JSON, 48);
    wd_model base, ft, plain;
    wd_err err;
    ck_assert_msg(wd_model_open(bd, &base, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_model_open_shared(fd, &base, &ft, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_model_open(fd, &plain, &err) == 0, "%s", err.msg);
    same_tensors(&ft, &plain);
    const wd_tensor *ba = wd_model_find(&base, "a.weight", NULL), *fa = wd_model_find(&ft, "a.weight", NULL);
    const wd_tensor *bb = wd_model_find(&base, "b", NULL), *fb = wd_model_find(&ft, "b", NULL);
    const wd_tensor *fnew = wd_model_find(&ft, "new", NULL);
    ck_assert(ba && fa && bb && fb && fnew);
    ck_assert(fa->name == ba->name && fa->shape == ba->shape);   /* same name, same dimensions */
    ck_assert(fb->name == bb->name && fb->shape != bb->shape);   /* same name, other dimensions */
    ck_assert(fb->shape[0] == 5 && bb->shape[0] == 4);
    ck_assert(inside(fnew->name, ft.files[0].tensors, 4096));   /* its own */
    /* not among the base's names (their span, not a fixed window: the
     * allocator may place the fine-tune's block right after the base's) */
    const char *lo = NULL, *hi = NULL;
    for (size_t i = 0; i < base.files[0].ntensors; i++) {
        const char *nm = base.files[0].tensors[i].name;
        if (!lo || nm < lo) lo = nm;
        if (!hi || nm + strlen(nm) + 1 > hi) hi = nm + strlen(nm) + 1;
    }
    ck_assert(fnew->name < lo || fnew->name >= hi);
    /* the content hashes do not depend on where names are kept */
    unsigned char h1[32], h2[32];
    ck_assert(wd_model_identity(&ft, h1, &err) == 0 && wd_model_identity(&plain, h2, &err) == 0);
    ck_assert(!memcmp(h1, h2, 32));
    ck_assert(wd_model_hash(&ft, h1, &err) == 0 && wd_model_hash(&plain, h2, &err) == 0);
    ck_assert(!memcmp(h1, h2, 32));
    wd_model_free(&base); /* freeing reads no name: the donor first is fine */
    wd_model_free(&ft);
    wd_model_free(&plain);
}
END_TEST

/* A bad entry after shared and own ones: the error names it, and nothing
 * is left allocated (ASan's leak check) or pointing into freed memory. */
START_TEST(test_shared_errors)
{
    char bd[128], fd[128];
    snprintf(bd, sizeof bd, "%s/b3", root);
    write_st(bd, BASE_JSON, 40);
    wd_model base, ft;
    wd_err err;
    ck_assert_msg(wd_model_open(bd, &base, &err) == 0, "%s", err.msg);
    static const char *bad[] = {
        "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"x\":{\"dtype\":\"F32\",\"shape\":[\"two\"],\"data_offsets\":[24,32]}}",
        "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,30]}}",
        "{\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]}}",
        "{\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},\"a.weight\":7}",
    };
    static const char *says[] = {"shape[0]", "data_offsets span", "appears twice", "not an object"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(fd, sizeof fd, "%s/f3_%zu", root, i);
        write_st(fd, bad[i], 32);
        ck_assert(wd_model_open_shared(fd, &base, &ft, &err) == -1);
        ck_assert_msg(strstr(err.msg, says[i]) != NULL, "%zu: %s", i, err.msg);
    }
    wd_model_free(&base);
}
END_TEST

Suite *suite_shared_names(void)
{
    Suite *s = suite_create("shared_names");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_add_test(tc, test_names_in_one_block);
    tcase_add_test(tc, test_shared_with_donor);
    tcase_add_test(tc, test_shared_errors);
    suite_add_tcase(s, tc);
    return s;
}
