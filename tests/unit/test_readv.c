/* test_readv.c - the read path without copies (issue 18): the block buffer
 * pool (reuse, size classes, trimming), wd_read_pinned against the
 * fine-tune's bytes (ranges over many blocks, the copied tail, EOF, no
 * cache, errors), and a streamed file recycling its blocks instead of
 * filling the cache. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "suites.h"

static char rroot[256], rbase[300], rft[300], rdelta[300];
static unsigned char *want;
static size_t want_len;
static uint64_t rseed = 0x9E3779B97F4A7C15ull;
static uint32_t rrnd(void)
{
    rseed = rseed * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rseed >> 33);
}

/* dir/model.safetensors: one BF16 tensor "w" of n elements (the base:
 * smooth values; the fine-tune: the base nudged), and a small F32 "b" */
static void write_st(const char *dir, size_t n, int ft)
{
    ck_assert(mkdir(dir, 0755) == 0);
    char hdr[256], path[400];
    int hl = snprintf(hdr, sizeof hdr,
                      "{\"b\":{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[0,64]},"
                      "\"w\":{\"dtype\":\"BF16\",\"shape\":[%zu],\"data_offsets\":[64,%zu]}}",
                      n, 64 + 2 * n);
    while (hl % 8) hdr[hl++] = ' ';
    size_t total = 8 + (size_t)hl + 64 + 2 * n;
    unsigned char *p = calloc(1, total);
    uint64_t h = (uint64_t)hl;
    memcpy(p, &h, 8);
    memcpy(p + 8, hdr, (size_t)hl);
    unsigned char *d = p + 8 + hl;
    for (int i = 0; i < 16; i++) {
        float v = (float)i * 0.25f + (ft ? 0.5f : 0.0f);
        memcpy(d + 4 * i, &v, 4);
    }
    uint64_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint16_t v = (uint16_t)(0x3c00 + ((s >> 40) & 0x3ff));
        if (ft && (s >> 20) % 3 == 0) v ^= (uint16_t)((s >> 50) & 3);
        memcpy(d + 64 + 2 * i, &v, 2);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(fd >= 0);
    ck_assert(write(fd, p, total) == (ssize_t)total);
    close(fd);
    if (ft) {
        want = p;
        want_len = total;
    } else {
        free(p);
    }
}

static void rsetup(void)
{
    snprintf(rroot, sizeof rroot, "/tmp/wdreadv.XXXXXX");
    ck_assert(mkdtemp(rroot) != NULL);
    snprintf(rbase, sizeof rbase, "%s/base", rroot);
    snprintf(rft, sizeof rft, "%s/ft", rroot);
    snprintf(rdelta, sizeof rdelta, "%s/ft.wdelta", rroot);
    size_t n = (3u << 20) / 2 + 777; /* 3 MiB and a bit: 49 blocks of 64 KiB */
    write_st(rbase, n, 0);
    write_st(rft, n, 1);
    wd_create_opts o = {.base_dir = rbase, .ft_dir = rft, .out_path = rdelta, .threads = 1,
                        .block_size = 64u << 10};
    wd_create_stats st;
    wd_err err;
    ck_assert_msg(wd_create(&o, &st, &err) == 0, "%s", err.msg);
}

static void rteardown(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", rroot);
    ck_assert(system(cmd) == 0);
    free(want);
    want = NULL;
}

START_TEST(test_bufpool)
{
    wd_bufpool *p = wd_bufpool_new();
    ck_assert_ptr_nonnull(p);
    wd_buf a, b, c, big, small;
    /* a class of 64 KiB multiples; a chunk's slots share its 2 MiB */
    ck_assert_uint_eq(wd_bufpool_cost(1u << 20), 1u << 20);
    ck_assert_uint_eq(wd_bufpool_cost((1u << 20) - 5), 1u << 20);
    ck_assert_uint_eq(wd_bufpool_cost(700u << 10), 1u << 20); /* 2 slots of 704 KiB in 2 MiB */
    ck_assert_uint_eq(wd_bufpool_cost(100), 100);
    ck_assert_uint_eq(wd_bufpool_cost((3u << 20) + 1), (3u << 20) + (64u << 10));
    ck_assert(wd_bufpool_get(p, 1u << 20, &a) == 0);
    ck_assert(wd_bufpool_get(p, 1u << 20, &b) == 0);
    memset(a.data, 1, 1u << 20);
    memset(b.data, 2, 1u << 20);
    ck_assert(a.data != b.data);
    ck_assert_uint_eq(a.cost, 1u << 20);
    unsigned char *was = a.data;
    wd_bufpool_put(p, &a);
    ck_assert_ptr_null(a.data);
    ck_assert(wd_bufpool_get(p, (1u << 20) - 100, &c) == 0); /* same class: the freed one */
    ck_assert_ptr_eq(c.data, was);
    ck_assert(wd_bufpool_get(p, (3u << 20) + 1, &big) == 0);
    memset(big.data, 3, (3u << 20) + 1);
    ck_assert(wd_bufpool_get(p, 1000, &small) == 0);
    memset(small.data, 4, 1000);
    unsigned char *bigwas = big.data;
    wd_bufpool_put(p, &big);
    ck_assert(wd_bufpool_get(p, (3u << 20) + 1, &big) == 0); /* a large one of the same size comes back */
    ck_assert_ptr_eq(big.data, bigwas);
    wd_bufpool_put(p, &big);
    wd_bufpool_put(p, &small);
    wd_bufpool_put(p, &b);
    /* idle: the large buffer and one slot (c still out) */
    ck_assert_uint_eq(wd_bufpool_trim(p, UINT64_MAX), (3u << 20) + (64u << 10) + (1u << 20));
    ck_assert_uint_eq(wd_bufpool_trim(p, 0), 0);
    ck_assert(c.data[0] == 1 && c.data[(1u << 20) - 101] == 1); /* the one in use kept its bytes */
    ck_assert(wd_bufpool_get(p, 1u << 20, &b) == 0);          /* a slot given back is usable again */
    memset(b.data, 5, 1u << 20);
    wd_bufpool_put(p, &b);
    wd_bufpool_put(p, &c);
    wd_bufpool_free(p);
}
END_TEST

static void check_range(wd_delta *d, wd_cache *c, uint64_t off, size_t len)
{
    wd_readv rv;
    wd_err err;
    ssize_t n = wd_read_pinned(d, 1, c, 0, len, off, &rv, &err);
    ck_assert_msg(n >= 0, "%s", err.msg);
    size_t expect = off >= want_len ? 0 : len < want_len - off ? len : (size_t)(want_len - off);
    ck_assert_uint_eq((size_t)n, expect);
    ck_assert_int_le(rv.niov, WD_READV_MAX);
    size_t at = 0;
    for (int i = 0; i < rv.niov; i++) {
        ck_assert_msg(memcmp(rv.iov[i].iov_base, want + off + at, rv.iov[i].iov_len) == 0,
                      "bytes at %llu differ", (unsigned long long)(off + at));
        at += rv.iov[i].iov_len;
    }
    ck_assert_uint_eq(at, (size_t)n);
    wd_read_release(c, &rv);
    ck_assert_int_eq(rv.npin, 0);
}

/* the test delta, its base set (base: the model to free after) */
static void open_rdelta(wd_delta **d, wd_model *base)
{
    wd_err err;
    ck_assert_msg(wd_delta_open(rdelta, d, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_model_open(rbase, base, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_delta_set_base(*d, base, &err) == 0, "%s", err.msg);
}

START_TEST(test_read_pinned)
{
    wd_delta *d;
    wd_model base;
    wd_err err;
    open_rdelta(&d, &base);
    const wd_delta_info *in = wd_delta_get_info(d);
    ck_assert_uint_eq(in->files[0].size, want_len);
    ck_assert_uint_gt(in->nblocks, 2 * WD_READV_MAX);
    wd_cache *c = wd_cache_new(256u << 10); /* a few blocks: evictions */
    check_range(d, c, 0, 8);
    check_range(d, c, 100, 1u << 20);              /* 17 blocks: the last part copied */
    check_range(d, c, 0, want_len);                /* the whole file */
    check_range(d, c, want_len - 10, 1000);        /* short at EOF */
    check_range(d, c, want_len, 10);               /* at EOF: nothing */
    for (int i = 0; i < 200; i++) {
        uint64_t off = rrnd() % want_len;
        check_range(d, c, off, 1 + rrnd() % (300u << 10));
    }
    check_range(d, NULL, 5000, 200u << 10);        /* no cache: all copied */
    wd_cache_stats st;
    wd_cache_stats_get(c, &st);
    ck_assert_uint_le(st.used, st.capacity);
    wd_readv rv;
    ck_assert(wd_read_pinned(d, 1, c, 3, 10, 0, &rv, &err) == -1); /* no such file */
    ck_assert_ptr_nonnull(strstr(err.msg, "no output file"));
    wd_read_release(c, &rv);
    wd_cache_free(c);
    wd_delta_close(d);
    wd_model_free(&base);
}
END_TEST

/* Reading a file in order through a large cache keeps only a sixteenth of
 * the cache in blocks already read to their end; blocks read in part stay
 * (nothing is evicted while the cache has room). */
START_TEST(test_stream_recycles)
{
    wd_delta *d;
    wd_model base;
    open_rdelta(&d, &base);
    uint64_t cap = 16u << 20; /* the file fits 5 times over */
    wd_cache *c = wd_cache_new(cap);
    for (uint64_t off = 0; off < want_len; off += 128u << 10) check_range(d, c, off, 128u << 10);
    wd_cache_stats st;
    wd_cache_stats_get(c, &st);
    ck_assert_uint_gt(st.evictions, 0);
    ck_assert_uint_le(st.used, cap / 16 + (128u << 10));
    /* a random reader's blocks stay */
    wd_cache_stats_get(c, &st);
    uint64_t ev = st.evictions;
    for (int i = 0; i < 50; i++) check_range(d, c, (uint64_t)(i % 5) * (600u << 10) + 1000, 100);
    wd_cache_stats_get(c, &st);
    ck_assert_uint_eq(st.evictions, ev);
    wd_cache_free(c);
    wd_delta_close(d);
    wd_model_free(&base);
}
END_TEST

Suite *suite_readv(void)
{
    Suite *s = suite_create("readv");
    TCase *tc = tcase_create("readv");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, rsetup, rteardown);
    tcase_add_test(tc, test_bufpool);
    tcase_add_test(tc, test_read_pinned);
    tcase_add_test(tc, test_stream_recycles);
    suite_add_tcase(s, tc);
    return s;
}
