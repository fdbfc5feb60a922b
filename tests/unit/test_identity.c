/* test_identity.c - the model identity (WD_ID_V2) and error kinds:
 * the same tensors in one file or several, in any order, hash the same;
 * any change to a name, dtype, shape or byte does not; the incremental
 * hash (any feeding order) equals the whole-model one; wd_errk kinds
 * survive wd_errprefix and are reset by wd_errf. */
#include <check.h>
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
    snprintf(root, sizeof root, "/tmp/wdid-unit.XXXXXX");
    ck_assert(mkdtemp(root) != NULL);
}

static void root_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert(system(cmd) == 0);
}

/* Tensors of a tiny model: name, dtype, shape, bytes from a seed. */
typedef struct spec {
    const char *name, *dtype;
    int ndim;
    uint64_t shape[2];
    unsigned esize;
} spec;

static const spec SPECS[] = {
    {"a.weight", "BF16", 2, {4, 6}, 2}, {"b.bias", "F32", 1, {5, 0}, 4},
    {"c.embed", "F16", 2, {3, 8}, 2},   {"d.steps", "I64", 1, {2, 0}, 8},
    {"e.norm", "BF16", 1, {7, 0}, 2},
};
#define NSPECS (sizeof SPECS / sizeof *SPECS)

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 131 + seed * 17 + (i >> 3)) & 255);
}

/* Write tensors idx[0..n) (in that order) as one safetensors file. */
static void write_file(const char *path, const size_t *idx, size_t n, unsigned seed, int change)
{
    wd_tensor t[NSPECS];
    uint64_t shp[NSPECS][WD_MAX_DIMS];
    memset(t, 0, sizeof t);
    for (size_t k = 0; k < n; k++) {
        const spec *s = &SPECS[idx[k]];
        t[k].name = (char *)s->name;
        snprintf(t[k].dtype_name, sizeof t[k].dtype_name, "%s", s->dtype);
        t[k].dtype = wd_dtype_from_name(s->dtype);
        t[k].ndim = s->ndim;
        t[k].shape = shp[k];
        t[k].nelem = 1;
        for (int d = 0; d < s->ndim; d++) t[k].shape[d] = s->shape[d], t[k].nelem *= s->shape[d];
        t[k].length = t[k].nelem * s->esize;
    }
    unsigned char *hdr;
    size_t hl;
    wd_err err;
    ck_assert_msg(wd_st_build_header(t, n, NULL, &hdr, &hl, &err) == 0, "%s", err.msg);
    FILE *f = fopen(path, "wb");
    ck_assert(f);
    ck_assert(fwrite(hdr, 1, hl, f) == hl);
    free(hdr);
    for (size_t k = 0; k < n; k++) {
        unsigned char buf[256];
        fill(buf, t[k].length, seed + (unsigned)idx[k]);
        if (change && idx[k] == 2) buf[5] ^= 1;
        ck_assert(fwrite(buf, 1, t[k].length, f) == t[k].length);
    }
    ck_assert(fclose(f) == 0);
}

/* A model directory holding the tensors split into `parts` files (tensor
 * k goes to file perm[k] % parts, files written in the order of perm). */
static void make_model(const char *dir, const size_t *perm, size_t parts, int change)
{
    ck_assert(mkdir(dir, 0755) == 0);
    for (size_t p = 0; p < parts; p++) {
        size_t idx[NSPECS], n = 0;
        for (size_t k = 0; k < NSPECS; k++)
            if (k % parts == p) idx[n++] = perm[k];
        char path[1024];
        snprintf(path, sizeof path, "%s/m-%zu.safetensors", dir, p);
        write_file(path, idx, n, 1, change);
    }
}

static void identity_of(const char *dir, unsigned char id[32], unsigned char v1[32])
{
    wd_model m;
    wd_err err;
    ck_assert_msg(wd_model_open(dir, &m, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_model_identity(&m, id, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_model_hash(&m, v1, &err) == 0, "%s", err.msg);
    unsigned char a[32], b[32];
    ck_assert_msg(wd_model_hashes(&m, a, b, &err) == 0, "%s", err.msg);
    ck_assert(!memcmp(a, v1, 32) && !memcmp(b, id, 32));
    wd_model_free(&m);
}

START_TEST(test_sharding_and_order)
{
    static const size_t id0[NSPECS] = {0, 1, 2, 3, 4}, rev[NSPECS] = {4, 3, 2, 1, 0}, mix[NSPECS] = {2, 4, 0, 3, 1};
    char d[6][128];
    unsigned char id[6][32], v1[6][32];
    const size_t *perms[6] = {id0, id0, rev, mix, mix, id0};
    size_t parts[6] = {1, 2, 2, 3, 5, 2};
    for (int i = 0; i < 6; i++) {
        snprintf(d[i], sizeof d[i], "%s/m%d", root, i);
        make_model(d[i], perms[i], parts[i], i == 5);
        identity_of(d[i], id[i], v1[i]);
    }
    for (int i = 1; i < 5; i++) ck_assert_msg(!memcmp(id[0], id[i], 32), "model %d (%zu files) differs", i, parts[i]);
    ck_assert_msg(memcmp(id[0], id[5], 32), "one flipped bit must change the identity");
    ck_assert_msg(memcmp(v1[0], v1[3], 32), "the v1 content hash depends on the sharding");
}
END_TEST

START_TEST(test_incremental_any_order)
{
    char d[128];
    static const size_t id0[NSPECS] = {0, 1, 2, 3, 4};
    snprintf(d, sizeof d, "%s/inc", root);
    make_model(d, id0, 2, 0);
    unsigned char want[32], v1[32], got[32];
    identity_of(d, want, v1);
    wd_model m;
    wd_err err;
    ck_assert(wd_model_open(d, &m, &err) == 0);
    /* feed tensors in reverse name order, bytes in two pieces each */
    wd_idhash *h = wd_idhash_new(WD_ID_V2);
    ck_assert(h);
    for (size_t k = m.ntensors; k-- > 0;) {
        const wd_stfile *f = &m.files[m.by_name[k].file];
        const wd_tensor *t = &f->tensors[m.by_name[k].tensor];
        ck_assert(wd_idhash_begin(h, t) == 0);
        unsigned char buf[256];
        FILE *fp = fopen(f->path, "rb");
        ck_assert(fp && fseek(fp, (long)t->offset, SEEK_SET) == 0 && fread(buf, 1, t->length, fp) == t->length);
        fclose(fp);
        wd_idhash_update(h, buf, t->length / 2);
        wd_idhash_update(h, buf + t->length / 2, t->length - t->length / 2);
    }
    ck_assert_msg(wd_idhash_final(h, got, &err) == 0, "%s", err.msg);
    ck_assert(!memcmp(got, want, 32));
    /* a tensor fed twice is an error, not a hash */
    h = wd_idhash_new(WD_ID_V2);
    const wd_tensor *t0 = &m.files[m.by_name[0].file].tensors[m.by_name[0].tensor];
    ck_assert(wd_idhash_begin(h, t0) == 0 && wd_idhash_begin(h, t0) == 0);
    ck_assert(wd_idhash_final(h, got, &err) == -1);
    ck_assert(strstr(err.msg, "twice") != NULL);
    ck_assert(wd_idhash_new(7) == NULL);
    ck_assert(wd_model_hash_kind(&m, 7, got, &err) == -1);
    wd_model_free(&m);
}
END_TEST

START_TEST(test_error_kinds)
{
    wd_err e = {0};
    ck_assert(wd_errk(&e, WD_ERR_MISSING, "missing %s", "x") == -1);
    ck_assert_int_eq(e.kind, WD_ERR_MISSING);
    wd_errprefix(&e, "while %s", "looking");
    ck_assert_int_eq(e.kind, WD_ERR_MISSING);
    ck_assert_str_eq(e.msg, "while looking: missing x");
    wd_errf(&e, "corrupt");
    ck_assert_int_eq(e.kind, WD_ERR_DATA);
    wd_model m;
    char p[128];
    snprintf(p, sizeof p, "%s/does-not-exist", root);
    ck_assert(wd_model_open(p, &m, &e) == -1);
    ck_assert_int_eq(e.kind, WD_ERR_MISSING);
    wd_delta *d;
    ck_assert(wd_delta_open(p, &d, &e) == -1);
    ck_assert_int_eq(e.kind, WD_ERR_MISSING);
}
END_TEST

Suite *suite_identity(void)
{
    Suite *s = suite_create("identity");
    TCase *tc = tcase_create("identity");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_add_test(tc, test_sharding_and_order);
    tcase_add_test(tc, test_incremental_any_order);
    tcase_add_test(tc, test_error_kinds);
    suite_add_tcase(s, tc);
    return s;
}
