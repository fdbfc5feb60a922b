/* test_delta.c - .wdelta v2 end to end on generated models: create, open,
 * random access, apply, verify, and every damage a file can take. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>
#include "internal.h"
#include "suites.h"

static char root[256];
static uint64_t seed = 0x12345678abcdefull;
static uint32_t rnd(void)
{
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(seed >> 33);
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_msg(fd >= 0, "%s", path);
    ck_assert(write(fd, p, n) == (ssize_t)n);
    close(fd);
}

typedef struct spec {
    const char *name, *dtype;
    uint64_t rows, cols;
    int shard;
} spec;

/* Writes a model with the given tensors into dir (two shards + index when
 * any tensor has shard 1).  `ft` perturbs values; `variant` changes the
 * fine-tune's extra tensor. */
static void write_model(const char *dir, const spec *sp, size_t ns, int ft)
{
    mkdir(dir, 0755);
    int two = 0;
    for (size_t i = 0; i < ns; i++) two |= sp[i].shard;
    char idx[8192] = "{\"metadata\":{},\"weight_map\":{";
    for (int sh = 0; sh <= two; sh++) {
        wd_tensor t[16];
        uint64_t shp[16][2];
        size_t nt = 0;
        memset(t, 0, sizeof t);
        for (size_t i = 0; i < ns; i++) {
            if (sp[i].shard != sh) continue;
            t[nt].name = (char *)sp[i].name;
            snprintf(t[nt].dtype_name, sizeof t[nt].dtype_name, "%s", sp[i].dtype);
            t[nt].dtype = wd_dtype_from_name(sp[i].dtype);
            t[nt].ndim = sp[i].cols ? 2 : 1;
            t[nt].shape = shp[nt];
            t[nt].shape[0] = sp[i].rows;
            t[nt].shape[1] = sp[i].cols;
            t[nt].nelem = sp[i].rows * (sp[i].cols ? sp[i].cols : 1);
            nt++;
        }
        unsigned char *hdr;
        size_t hl;
        wd_err err;
        ck_assert_msg(wd_st_build_header(t, nt, "{\"format\":\"pt\"}", &hdr, &hl, &err) == 0, "%s", err.msg);
        char path[512], fname[64];
        snprintf(fname, sizeof fname, two ? "model-%05d-of-00002.safetensors" : "model.safetensors", sh + 1);
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        FILE *f = fopen(path, "wb");
        ck_assert(f != NULL);
        fwrite(hdr, 1, hl, f);
        free(hdr);
        for (size_t k = 0; k < nt; k++) {
            size_t es = wd_dtype_size(t[k].dtype);
            uint64_t saved = seed;
            seed = 1000 + k * 77 + (uint64_t)sh * 13; /* base and ft share values */
            for (uint64_t e = 0; e < t[k].nelem; e++) {
                unsigned char v[8];
                uint32_t r = rnd();
                if (es == 2) { /* bf16/f16-like: exponent in 0x3c..0x3e */
                    v[0] = (unsigned char)r;
                    v[1] = (unsigned char)(0x3c + (r >> 8) % 3) | (unsigned char)((r >> 12) & 0x80);
                } else {
                    for (size_t b = 0; b < es; b++) v[b] = (unsigned char)(r >> (8 * (b % 4)));
                }
                if (ft && (rnd() % 4)) v[0] = (unsigned char)(v[0] + rnd() % 5 - 2);
                fwrite(v, 1, es, f);
            }
            seed = saved;
            if (two) {
                char line[256];
                snprintf(line, sizeof line, "%s\"%s\":\"%s\"", idx[strlen(idx) - 1] == '{' ? "" : ",", t[k].name, fname);
                strcat(idx, line);
            }
        }
        fclose(f);
    }
    if (two) {
        strcat(idx, "}}");
        char path[512];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        write_file(path, idx, strlen(idx));
    }
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *cfg = ft ? "{\"model_type\":\"test\",\"tuned\":true}\n" : "{\"model_type\":\"test\"}\n";
    write_file(path, cfg, strlen(cfg));
}

static const spec base_spec[] = {
    {"embed.weight", "BF16", 300, 64, 0},   {"layer.0.w", "BF16", 1200, 512, 0},
    {"layer.0.norm", "F32", 512, 0, 0},     {"layer.1.w", "BF16", 700, 333, 1},
    {"layer.1.ids", "I64", 100, 0, 1},      {"layer.1.mask", "BOOL", 77, 0, 1},
    {"lm_head.weight", "F16", 128, 96, 1},  {"resized.weight", "BF16", 64, 64, 1},
};
/* the fine-tune resizes one tensor and adds one */
static const spec ft_spec[] = {
    {"embed.weight", "BF16", 300, 64, 0},   {"layer.0.w", "BF16", 1200, 512, 0},
    {"layer.0.norm", "F32", 512, 0, 0},     {"layer.1.w", "BF16", 700, 333, 1},
    {"layer.1.ids", "I64", 100, 0, 1},      {"layer.1.mask", "BOOL", 77, 0, 1},
    {"lm_head.weight", "F16", 128, 96, 1},  {"resized.weight", "BF16", 65, 64, 1},
    {"score.weight", "F32", 10, 96, 1},
};

static char basedir[300], ftdir[300], delta[300];

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/wdtest.XXXXXX");
    ck_assert(mkdtemp(root) != NULL);
    snprintf(basedir, sizeof basedir, "%s/base", root);
    snprintf(ftdir, sizeof ftdir, "%s/ft", root);
    snprintf(delta, sizeof delta, "%s/ft.wdelta", root);
    write_model(basedir, base_spec, sizeof base_spec / sizeof *base_spec, 0);
    write_model(ftdir, ft_spec, sizeof ft_spec / sizeof *ft_spec, 1);
}

static void teardown(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert(system(cmd) == 0);
}

static void create(uint32_t block_size, int threads)
{
    wd_create_opts o = {.base_dir = basedir, .ft_dir = ftdir, .out_path = delta, .threads = threads,
                        .block_size = block_size};
    wd_create_stats st;
    wd_err err;
    unlink(delta);
    ck_assert_msg(wd_create(&o, &st, &err) == 0, "%s", err.msg);
    ck_assert(st.output_bytes < st.input_bytes);
}

static int files_equal(const char *a, const char *b)
{
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

START_TEST(test_create_apply_identical)
{
    create(4096, 3); /* small blocks: many blocks per tensor */
    wd_delta *d;
    wd_err err;
    ck_assert_msg(wd_delta_open(delta, &d, &err) == 0, "%s", err.msg);
    wd_model base;
    ck_assert_msg(wd_model_open(basedir, &base, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_delta_set_base(d, &base, &err) == 0, "%s", err.msg);
    const wd_delta_info *in = wd_delta_get_info(d);
    ck_assert_uint_eq(in->version, 2);
    ck_assert_uint_eq(in->nfiles, 4); /* 2 shards, index, config */
    /* base hash recorded = the base's content hash */
    unsigned char h[32];
    ck_assert(wd_model_identity(&base, h, &err) == 0);
    ck_assert(memcmp(h, in->base_hash, 32) == 0);
    char out[400];
    snprintf(out, sizeof out, "%s/rebuilt", root);
    ck_assert_msg(wd_apply(d, out, 2, NULL, NULL, &err) == 0, "%s", err.msg);
    DIR *dir = opendir(ftdir);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.') continue;
        char a[700], b[700];
        snprintf(a, sizeof a, "%s/%s", ftdir, de->d_name);
        snprintf(b, sizeof b, "%s/%s", out, de->d_name);
        ck_assert_msg(files_equal(a, b), "%s differs", de->d_name);
        n++;
    }
    closedir(dir);
    ck_assert_int_eq(n, 4);
    /* apply refuses an existing directory */
    ck_assert(wd_apply(d, out, 2, NULL, NULL, &err) == -1);
    /* verify with base: result hash equals the fine-tune's */
    wd_model ft;
    ck_assert(wd_model_open(ftdir, &ft, &err) == 0);
    ck_assert(wd_model_identity(&ft, h, &err) == 0);
    ck_assert(memcmp(h, in->result_hash, 32) == 0);
    unsigned char rh[32];
    ck_assert_msg(wd_verify(d, 1, rh, NULL, NULL, &err) == 0, "%s", err.msg);
    ck_assert(memcmp(rh, h, 32) == 0);
    wd_model_free(&ft);
    wd_delta_close(d);
    wd_model_free(&base);
}
END_TEST

/* Any byte range decodes from the blocks it overlaps. */
START_TEST(test_random_access)
{
    create(8192, 2);
    wd_delta *d;
    wd_err err;
    wd_model base;
    ck_assert(wd_delta_open(delta, &d, &err) == 0);
    ck_assert(wd_model_open(basedir, &base, &err) == 0);
    ck_assert(wd_delta_set_base(d, &base, &err) == 0);
    const wd_delta_info *in = wd_delta_get_info(d);
    unsigned char *blk = malloc(8192);
    for (size_t f = 0; f < in->nfiles; f++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", ftdir, in->files[f].name);
        FILE *fp = fopen(path, "rb");
        ck_assert(fp != NULL);
        unsigned char *want = malloc(in->files[f].size + 1);
        ck_assert(fread(want, 1, in->files[f].size, fp) == in->files[f].size);
        fclose(fp);
        for (int k = 0; k < 200; k++) {
            uint64_t off = rnd() % in->files[f].size;
            uint32_t b;
            uint64_t boff;
            ck_assert(wd_delta_locate(d, f, off, &b, &boff) == 0);
            ck_assert(boff <= off);
            ck_assert_msg(wd_delta_decode_block(d, b, blk, &err) == 0, "%s", err.msg);
            ck_assert(off - boff < in->blocks[b].out_len);
            ck_assert(memcmp(blk, want + boff, in->blocks[b].out_len) == 0);
        }
        uint32_t b;
        uint64_t boff;
        ck_assert(wd_delta_locate(d, f, in->files[f].size, &b, &boff) == -1);
        free(want);
    }
    free(blk);
    wd_delta_close(d);
    wd_model_free(&base);
}
END_TEST

static void patch(const char *path, uint64_t off, unsigned char x)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    ck_assert(pread(fd, &c, 1, (off_t)off) == 1);
    c ^= x;
    ck_assert(pwrite(fd, &c, 1, (off_t)off) == 1);
    close(fd);
}

static uint64_t fsize(const char *p)
{
    struct stat st;
    ck_assert(stat(p, &st) == 0);
    return (uint64_t)st.st_size;
}

START_TEST(test_damaged_files)
{
    create(0, 2);
    wd_delta *d;
    wd_err err;
    uint64_t size = fsize(delta);
    /* a flipped byte in a block: opens, then that block fails */
    patch(delta, 40, 0x10);
    ck_assert(wd_delta_open(delta, &d, &err) == 0);
    wd_model base;
    ck_assert(wd_model_open(basedir, &base, &err) == 0);
    ck_assert(wd_delta_set_base(d, &base, &err) == 0);
    unsigned char rh[32];
    ck_assert(wd_verify(d, 0, rh, NULL, NULL, &err) == -1);
    ck_assert_msg(strstr(err.msg, "checksum") != NULL, "%s", err.msg);
    int bad = 0;
    unsigned char *buf = malloc(WD_DEFAULT_BLOCK_SIZE);
    for (uint32_t b = 0; b < wd_delta_get_info(d)->nblocks; b++)
        if (wd_delta_decode_block(d, b, buf, &err)) bad++;
    ck_assert_int_eq(bad, 1);
    free(buf);
    wd_delta_close(d);
    patch(delta, 40, 0x10);
    /* a flipped byte in the manifest, the table, the footer */
    const uint64_t where[] = {size - 200, size - 88 - 5, size - 60, size - 3};
    for (size_t i = 0; i < 4; i++) {
        patch(delta, where[i], 0x01);
        ck_assert_msg(wd_delta_open(delta, &d, &err) == -1, "flip at %llu accepted", (unsigned long long)where[i]);
        patch(delta, where[i], 0x01);
    }
    /* wrong magic, other versions */
    patch(delta, 0, 0x20);
    ck_assert(wd_delta_open(delta, &d, &err) == -1);
    ck_assert(strstr(err.msg, "magic") != NULL);
    patch(delta, 0, 0x20);
    patch(delta, 7, 0x03); /* version 1 */
    ck_assert(wd_delta_open(delta, &d, &err) == -1);
    ck_assert_msg(strstr(err.msg, "v1") != NULL, "%s", err.msg);
    patch(delta, 7, 0x03);
    /* truncated, and appended to */
    ck_assert(truncate(delta, (off_t)(size - 1)) == 0);
    ck_assert(wd_delta_open(delta, &d, &err) == -1);
    ck_assert(truncate(delta, 10) == 0);
    ck_assert(wd_delta_open(delta, &d, &err) == -1);
    ck_assert(truncate(delta, 0) == 0);
    ck_assert(wd_delta_open(delta, &d, &err) == -1);
    create(0, 1);
    ck_assert(truncate(delta, (off_t)(size + 5)) == 0);
    ck_assert(wd_delta_open(delta, &d, &err) == -1);
    ck_assert_msg(strstr(err.msg, "footer") != NULL, "%s", err.msg);
    ck_assert(wd_delta_open("/nonexistent/x.wdelta", &d, &err) == -1);
    wd_model_free(&base);
}
END_TEST

/* The delta needs the base it was made against. */
START_TEST(test_wrong_base)
{
    create(0, 2);
    wd_delta *d;
    wd_err err;
    ck_assert(wd_delta_open(delta, &d, &err) == 0);
    unsigned char *buf = malloc(WD_DEFAULT_BLOCK_SIZE);
    /* no base attached */
    int failures = 0;
    for (uint32_t b = 0; b < wd_delta_get_info(d)->nblocks; b++)
        if (wd_delta_decode_block(d, b, buf, &err)) failures++;
    ck_assert_int_gt(failures, 0);
    wd_delta_close(d);
    /* the fine-tune as "base": same names, other bytes; its resized.weight
     * (65 rows, coded against the base's 64: large enough that the delta
     * codec beats storing it whole) has the wrong size, which is
     * refused when attached */
    wd_model other;
    ck_assert(wd_delta_open(delta, &d, &err) == 0);
    ck_assert(wd_model_open(ftdir, &other, &err) == 0);
    ck_assert(wd_delta_set_base(d, &other, &err) == -1);
    ck_assert_msg(strstr(err.msg, "resized.weight") != NULL, "%s", err.msg);
    wd_delta_close(d);
    /* ...and with that tensor's right size, the other bytes fail the blocks */
    wd_tensor *rt = NULL;
    for (size_t f = 0; f < other.nfiles; f++)
        for (size_t k = 0; k < other.files[f].ntensors; k++)
            if (!strcmp(other.files[f].tensors[k].name, "resized.weight")) rt = &other.files[f].tensors[k];
    ck_assert_ptr_nonnull(rt);
    rt->length -= 128; /* 64 rows of 64 BF16 values: what the delta expects */
    rt->shape[0] = 64;
    rt->nelem = 4096;
    ck_assert(wd_delta_open(delta, &d, &err) == 0);
    ck_assert_msg(wd_delta_set_base(d, &other, &err) == 0, "%s", err.msg);
    failures = 0;
    for (uint32_t b = 0; b < wd_delta_get_info(d)->nblocks; b++)
        if (wd_delta_decode_block(d, b, buf, &err)) failures++;
    ck_assert_int_gt(failures, 3);
    wd_delta_close(d);
    wd_model_free(&other);
    /* base modified after the delta was made: decoding fails, never wrong bytes */
    char p[400];
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", basedir);
    patch(p, fsize(p) / 2, 0x01); /* inside a large tensor (a tiny one may be stored whole) */
    wd_model base;
    ck_assert(wd_delta_open(delta, &d, &err) == 0);
    ck_assert(wd_model_open(basedir, &base, &err) == 0);
    ck_assert(wd_delta_set_base(d, &base, &err) == 0);
    failures = 0;
    for (uint32_t b = 0; b < wd_delta_get_info(d)->nblocks; b++)
        if (wd_delta_decode_block(d, b, buf, &err)) failures++;
    ck_assert_int_eq(failures, 1);
    unsigned char rh[32];
    ck_assert(wd_verify(d, 1, rh, NULL, NULL, &err) == -1);
    free(buf);
    wd_delta_close(d);
    wd_model_free(&base);
}
END_TEST

/* Nothing is left under the output name when create fails. */
START_TEST(test_create_failure_leaves_nothing)
{
    char bad[400];
    snprintf(bad, sizeof bad, "%s/ft/model-00002-of-00002.safetensors", root);
    ck_assert(truncate(bad, 100) == 0);
    wd_create_opts o = {.base_dir = basedir, .ft_dir = ftdir, .out_path = delta};
    wd_err err;
    ck_assert(wd_create(&o, NULL, &err) == -1);
    ck_assert(access(delta, F_OK) == -1);
    DIR *dir = opendir(root);
    struct dirent *de;
    while ((de = readdir(dir))) ck_assert_msg(strstr(de->d_name, ".tmp.") == NULL, "left %s", de->d_name);
    closedir(dir);
    o.strategy = "nonsense";
    ck_assert(wd_create(&o, NULL, &err) == -1);
    o.strategy = NULL;
    o.block_size = 1000;
    ck_assert(wd_create(&o, NULL, &err) == -1);
}
END_TEST

/* wd_read through a small shared cache from several threads: every byte
 * right, the cache stays within its bound, blocks are reused and evicted. */
typedef struct reader_arg {
    wd_delta *d;
    wd_cache *c;
    const wd_delta_info *in;
    unsigned char **want;
    uint64_t seed;
    int bad;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    unsigned char *buf = malloc(70000);
    wd_err err;
    for (int k = 0; k < 300; k++) {
        a->seed = a->seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t f = (size_t)(a->seed >> 33) % a->in->nfiles;
        uint64_t size = a->in->files[f].size;
        uint64_t off = (a->seed >> 13) % size;
        size_t len = (size_t)((a->seed >> 40) % 70000);
        ssize_t n = wd_read(a->d, 7, a->c, f, buf, len, off, &err);
        size_t expect = off + len > size ? (size_t)(size - off) : len;
        if (n != (ssize_t)expect || memcmp(buf, a->want[f] + off, expect)) a->bad++;
    }
    free(buf);
    return NULL;
}

START_TEST(test_cache_reads)
{
    create(4096, 2);
    wd_delta *d;
    wd_err err;
    wd_model base;
    ck_assert(wd_delta_open(delta, &d, &err) == 0);
    ck_assert(wd_model_open(basedir, &base, &err) == 0);
    ck_assert(wd_delta_set_base(d, &base, &err) == 0);
    const wd_delta_info *in = wd_delta_get_info(d);
    unsigned char **want = calloc(in->nfiles, sizeof *want);
    for (size_t f = 0; f < in->nfiles; f++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", ftdir, in->files[f].name);
        FILE *fp = fopen(path, "rb");
        want[f] = malloc(in->files[f].size + 1);
        ck_assert(fread(want[f], 1, in->files[f].size, fp) == in->files[f].size);
        fclose(fp);
    }
    wd_cache *c = wd_cache_new(64 * 1024);
    pthread_t t[4];
    reader_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (reader_arg){d, c, in, want, 1000 + (uint64_t)i, 0};
        pthread_create(&t[i], NULL, reader, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(a[i].bad, 0);
    }
    wd_cache_stats st;
    wd_cache_stats_get(c, &st);
    ck_assert_uint_gt(st.hits, 0);
    ck_assert_uint_gt(st.evictions, 0);
    ck_assert_uint_le(st.used, st.capacity);
    ck_assert_uint_ge(st.decoded_bytes, 4096);
    /* prefetch, reads without a cache, reads at and past the end */
    ck_assert(wd_cache_prefetch(d, 7, c, 0, &err) == 0);
    ck_assert(wd_cache_prefetch(d, 7, c, (uint32_t)in->nblocks + 5, &err) == 0);
    unsigned char buf[100];
    ck_assert(wd_read(d, 7, NULL, 0, buf, sizeof buf, 10, &err) == (ssize_t)sizeof buf);
    ck_assert(memcmp(buf, want[0] + 10, sizeof buf) == 0);
    ck_assert(wd_read(d, 7, c, 0, buf, sizeof buf, in->files[0].size, &err) == 0);
    ck_assert(wd_read(d, 7, c, in->nfiles, buf, sizeof buf, 0, &err) == -1);
    wd_cache_free(c);
    for (size_t f = 0; f < in->nfiles; f++) free(want[f]);
    free(want);
    wd_delta_close(d);
    wd_model_free(&base);
}
END_TEST

/* ---- chains: base -> ft -> base -> ft, links made with .parent ------- */
/* ft2 = ft with bytes changed near the end of both shards, ft3 = ft2 with
 * more changes: three distinct models of one architecture */
static char ft2dir[400], ft3dir[400];
static void make_variant(const char *from, const char *to, unsigned char x)
{
    char cmd[1000], path[700];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", from, to);
    ck_assert(system(cmd) == 0);
    for (int sh = 1; sh <= 2; sh++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-00002.safetensors", to, sh);
        uint64_t n = fsize(path);
        for (uint64_t k = 1; k < 4000 && k < n / 2; k += 37) patch(path, n - k, x);
    }
}

static void make_chain(char links[3][600])
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/chain", root);
    mkdir(dir, 0755);
    snprintf(ft2dir, sizeof ft2dir, "%s/ft2", root);
    snprintf(ft3dir, sizeof ft3dir, "%s/ft3", root);
    make_variant(ftdir, ft2dir, 0x01);
    make_variant(ft2dir, ft3dir, 0x10);
    const char *fts[3] = {ftdir, ft2dir, ft3dir};
    wd_chain *ch = NULL;
    wd_err err;
    for (int i = 0; i < 3; i++) {
        snprintf(links[i], 600, "%s/l%d.wdelta", dir, i + 1);
        wd_create_opts o = {.base_dir = basedir, .ft_dir = fts[i], .out_path = links[i], .threads = 2,
                            .block_size = 4096};
        if (i) {
            ck_assert_msg(wd_chain_open(links[i - 1], NULL, 0, basedir, NULL, &ch, &err) == 0, "%s", err.msg);
            ck_assert_uint_eq(wd_chain_length(ch), (size_t)i);
            o.parent = wd_chain_top(ch);
        }
        wd_create_stats st;
        ck_assert_msg(wd_create(&o, &st, &err) == 0, "%s", err.msg);
        wd_chain_close(ch);
        ch = NULL;
    }
}

START_TEST(test_chain_reads)
{
    char links[3][600];
    make_chain(links);
    wd_err err;
    wd_cache *c = wd_cache_new(64 * 1024); /* far smaller than the model: evictions, nested waits */
    wd_chain *ch;
    ck_assert_msg(wd_chain_open(links[2], NULL, 0, basedir, c, &ch, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(wd_chain_length(ch), 3);
    wd_delta *top = wd_chain_top(ch);
    const wd_delta_info *in = wd_delta_get_info(top);
    ck_assert_uint_eq(in->parent_depth, 2);
    ck_assert_ptr_nonnull(in->parent_name);
    ck_assert_str_eq(in->parent_name, "l2.wdelta");
    ck_assert(memcmp(in->base_hash, wd_delta_get_info(wd_chain_link(ch, 1))->result_hash, 32) == 0);
    unsigned char **want = calloc(in->nfiles, sizeof *want);
    for (size_t f = 0; f < in->nfiles; f++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", ft3dir, in->files[f].name);
        FILE *fp = fopen(path, "rb");
        ck_assert_ptr_nonnull(fp);
        want[f] = malloc(in->files[f].size + 1);
        ck_assert(fread(want[f], 1, in->files[f].size, fp) == in->files[f].size);
        fclose(fp);
    }
    /* 4 readers of the top (under key 7: unused by the links, 1..2) on a cache whose
     * decoders are fewer than the readers, each decode needing its parent's */
    pthread_t t[4];
    reader_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (reader_arg){top, c, in, want, 2000 + (uint64_t)i, 0};
        pthread_create(&t[i], NULL, reader, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(a[i].bad, 0);
    }
    wd_cache_stats st;
    wd_cache_stats_get(c, &st);
    ck_assert_uint_le(st.used, st.capacity);
    ck_assert_uint_gt(st.evictions, 0);
    /* verify: every link, with its source */
    unsigned char rh[32];
    for (size_t i = 0; i < 3; i++)
        ck_assert_msg(wd_verify(wd_chain_link(ch, i), 1, rh, NULL, NULL, &err) == 0, "%s", err.msg);
    /* the rebuilt model's tensors as a model, for create --parent */
    wd_model om;
    ck_assert_msg(wd_delta_output_model(top, &om, &err) == 0, "%s", err.msg);
    wd_model ftm;
    ck_assert(wd_model_open(ft3dir, &ftm, &err) == 0);
    ck_assert_uint_eq(om.ntensors, ftm.ntensors);
    wd_model_free(&om);
    wd_model_free(&ftm);
    for (size_t f = 0; f < in->nfiles; f++) free(want[f]);
    free(want);
    wd_chain_close(ch); /* `in` belongs to the top link */
    wd_cache_free(c);
}
END_TEST

/* ---- the resolver through its callbacks (as the mount uses it) ------ */
typedef struct res_ctx {
    wd_delta *d[4];
    int base_state;            /* what base 0 reports */
    unsigned char base_hash[32];
    long refuse;               /* attach_parent refuses this parent */
    int attached_base, attached_parent, logged;
    char log[1600];
} res_ctx;

static const wd_delta *rc_delta(void *ctx, size_t i)
{
    return ((res_ctx *)ctx)->d[i];
}

static int rc_base(void *ctx, size_t j, unsigned kind, const char **dir, unsigned char hash[32], wd_err *err)
{
    res_ctx *x = ctx;
    (void)j;
    (void)kind;
    (void)err;
    *dir = basedir;
    memcpy(hash, x->base_hash, 32);
    return x->base_state;
}

static int rc_attach_base(void *ctx, size_t i, size_t j, wd_err *err)
{
    (void)i;
    (void)j;
    (void)err;
    ((res_ctx *)ctx)->attached_base++;
    return 0;
}

static int rc_attach_parent(void *ctx, size_t i, size_t k, wd_err *err)
{
    res_ctx *x = ctx;
    (void)i;
    if ((long)k == x->refuse) return wd_errf(err, "refused by the test");
    x->attached_parent++;
    return 0;
}

static void rc_log(void *ctx, const char *line)
{
    res_ctx *x = ctx;
    x->logged++;
    snprintf(x->log, sizeof x->log, "%s", line);
}

START_TEST(test_resolver_ops)
{
    char links[3][600], copy[700], cmd[1500];
    make_chain(links);
    snprintf(copy, sizeof copy, "%s", links[0]);
    snprintf(strrchr(copy, '/'), 32, "/l1copy.wdelta");
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", links[0], copy);
    ck_assert(system(cmd) == 0);
    wd_err err;
    res_ctx x = {.refuse = -1};
    /* 0: l2, 1: l1's copy, 2: l1, 3: l3 */
    ck_assert(wd_delta_open(links[1], &x.d[0], &err) == 0);
    ck_assert(wd_delta_open(copy, &x.d[1], &err) == 0);
    ck_assert(wd_delta_open(links[0], &x.d[2], &err) == 0);
    ck_assert(wd_delta_open(links[2], &x.d[3], &err) == 0);
    memcpy(x.base_hash, wd_delta_get_info(x.d[2])->base_hash, 32);
    static const wd_resolver_ops ops = {rc_delta, rc_base, rc_attach_base, rc_attach_parent, rc_log};
    wd_resolver *r;
    /* the base still being hashed: l2's chain cannot end, and says why */
    x.base_state = WD_BASE_WAITING;
    ck_assert(wd_resolver_new(&ops, &x, 4, 1, WD_RESOLVE_MOUNT, NULL, &r, &err) == 0);
    ck_assert(wd_resolver_resolve(r, 0, &err) == -1);
    ck_assert_msg(strstr(err.msg, "its parent") && strstr(err.msg, "still being hashed"), "%s", err.msg);
    ck_assert(wd_resolver_resolve(r, 0, &err) == -1); /* kept */
    ck_assert_int_eq(x.attached_base + x.attached_parent, 0);
    wd_resolver_free(r);
    /* ready: l1 (same file name as recorded, before its copy by path) is
     * tried first; refused, it is passed over (logged) for the copy */
    x.base_state = WD_BASE_READY;
    x.refuse = 2;
    ck_assert(wd_resolver_new(&ops, &x, 4, 1, WD_RESOLVE_MOUNT, NULL, &r, &err) == 0);
    ck_assert_msg(wd_resolver_resolve(r, 3, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(wd_resolver_parent(r, 3), 0);
    ck_assert_int_eq(wd_resolver_parent(r, 0), 1);
    ck_assert_int_eq(wd_resolver_base(r, 1), 0);
    ck_assert_int_eq(wd_resolver_parent(r, 1), -1);
    ck_assert_int_eq(x.logged, 1);
    ck_assert_msg(strstr(x.log, "l1.wdelta claims to rebuild its base but is passed over: refused by the test"), "%s",
                  x.log);
    wd_resolver_free(r);
    /* every parent refused: the first failure is the reason */
    x.refuse = 0;
    ck_assert(wd_resolver_new(&ops, &x, 4, 1, WD_RESOLVE_MOUNT, NULL, &r, &err) == 0);
    ck_assert(wd_resolver_resolve(r, 3, &err) == -1);
    ck_assert_msg(strstr(err.msg, "l2.wdelta does not fit it: refused by the test"), "%s", err.msg);
    wd_resolver_free(r);
    /* files: no base and l1 and its copy gone: a missing link naming l2 */
    wd_delta *all[4] = {x.d[0], x.d[1], x.d[2], x.d[3]};
    x.d[1] = x.d[2] = NULL;
    ck_assert(wd_resolver_new(&ops, &x, 4, 0, 0, "the test", &r, &err) == 0);
    ck_assert(wd_resolver_resolve(r, 3, &err) == -1);
    ck_assert_msg(strstr(err.msg, "missing link") && strstr(err.msg, "l2.wdelta") && strstr(err.msg, "--chain DIR"),
                  "%s", err.msg);
    wd_resolver_free(r);
    for (int i = 0; i < 4; i++) wd_delta_close(all[i]);
    ck_assert(unlink(copy) == 0);
}
END_TEST

START_TEST(test_chain_errors)
{
    char links[3][600];
    make_chain(links);
    wd_err err;
    wd_chain *ch = NULL;
    /* missing link: l2 moved away */
    char moved[500];
    snprintf(moved, sizeof moved, "%s/l2.moved", root);
    ck_assert(rename(links[1], moved) == 0);
    ck_assert(wd_chain_open(links[2], NULL, 0, basedir, NULL, &ch, &err) == -1);
    ck_assert_msg(strstr(err.msg, "missing link") && strstr(err.msg, "l3.wdelta"), "%s", err.msg);
    ck_assert(rename(moved, links[1]) == 0);
    /* links in the wrong order, and in the right one */
    wd_delta *d[3];
    for (int i = 0; i < 3; i++) ck_assert(wd_delta_open(links[i], &d[i], &err) == 0);
    ck_assert_uint_eq(wd_chain_check_order(d, 3), 3);
    wd_delta *wrong[3] = {d[0], d[2], d[1]};
    ck_assert_uint_eq(wd_chain_check_order(wrong, 3), 1);
    /* a parent that is not the base's model, or has no source */
    ck_assert(wd_delta_set_parent(d[1], d[0], 1, NULL, &err) == -1); /* d[0] has no source */
    ck_assert_msg(strstr(err.msg, "no base attached"), "%s", err.msg);
    wd_model base;
    ck_assert(wd_model_open(basedir, &base, &err) == 0);
    ck_assert(wd_delta_set_base(d[0], &base, &err) == 0);
    ck_assert(wd_delta_set_parent(d[2], d[0], 1, NULL, &err) == -1); /* l3 is made against l2's model */
    ck_assert_msg(strstr(err.msg, "rebuilds"), "%s", err.msg);
    ck_assert(wd_delta_set_parent(d[1], d[0], 1, NULL, &err) == 0);
    ck_assert(wd_delta_set_parent(d[1], d[0], 1, NULL, &err) == -1); /* twice */
    for (int i = 2; i >= 0; i--) wd_delta_close(d[i]);
    wd_model_free(&base);
    /* flattening l3 gives a direct delta against the base rebuilding ft */
    ck_assert(wd_chain_open(links[2], NULL, 0, basedir, NULL, &ch, &err) == 0);
    char flat[500];
    snprintf(flat, sizeof flat, "%s/flat.wdelta", root);
    wd_create_opts o = {.base_dir = basedir, .out_path = flat, .threads = 1, .block_size = 4096};
    wd_create_stats st;
    ck_assert_msg(wd_flatten(wd_chain_top(ch), &o, &st, &err) == 0, "%s", err.msg);
    wd_delta *fd;
    ck_assert(wd_delta_open(flat, &fd, &err) == 0);
    ck_assert(memcmp(wd_delta_get_info(fd)->result_hash, wd_delta_get_info(wd_chain_top(ch))->result_hash, 32) == 0);
    ck_assert(memcmp(wd_delta_get_info(fd)->base_hash, wd_delta_get_info(wd_chain_link(ch, 0))->base_hash, 32) == 0);
    ck_assert_ptr_null(wd_delta_get_info(fd)->parent_name);
    wd_delta_close(fd);
    wd_chain_close(ch);
}
END_TEST

Suite *suite_delta(void)
{
    Suite *s = suite_create("delta");
    TCase *tc = tcase_create("delta");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_create_apply_identical);
    tcase_add_test(tc, test_random_access);
    tcase_add_test(tc, test_damaged_files);
    tcase_add_test(tc, test_wrong_base);
    tcase_add_test(tc, test_create_failure_leaves_nothing);
    tcase_add_test(tc, test_cache_reads);
    tcase_add_test(tc, test_chain_reads);
    tcase_add_test(tc, test_chain_errors);
    tcase_add_test(tc, test_resolver_ops);
    suite_add_tcase(s, tc);
    return s;
}
