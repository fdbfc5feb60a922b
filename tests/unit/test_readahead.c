/* test_readahead.c - wd_delta_next_blocks: the blocks a sequential reader
 * needs next, in file order, on a stored delta with several blocks per file
 * (tests/integration/fixtures/oldv2/a1.wdelta). */
#include "suites.h"
#include "wdelta.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FIXTURE "tests/integration/fixtures/oldv2/a1.wdelta"

static wd_delta *open_fixture(void)
{
    wd_delta *d = NULL;
    wd_err err;
    memset(&err, 0, sizeof err);
    ck_assert_msg(wd_delta_open(FIXTURE, &d, &err) == 0, "%s (run from the repository root)", err.msg);
    return d;
}

/* From every offset of every file: the blocks given cover the file from
 * the block holding pos on, each starting where the one before ends, and
 * *end is where the last ends; with room for all, up to the file's end. */
START_TEST(test_next_blocks_cover_file)
{
    wd_delta *d = open_fixture();
    const wd_delta_info *in = wd_delta_get_info(d);
    size_t multi = 0;
    for (size_t f = 0; f < in->nfiles; f++) {
        uint64_t size = in->files[f].size;
        for (uint64_t pos = 0; pos < size; pos += 7) {
            uint32_t bl[64];
            uint64_t end = 0;
            size_t n = wd_delta_next_blocks(d, f, pos, bl, 64, &end);
            ck_assert_uint_ge(n, 1);
            ck_assert_uint_eq(end, size);
            if (n > 1) multi++;
            uint64_t at = pos;
            for (size_t k = 0; k < n; k++) {
                uint32_t b;
                uint64_t boff;
                ck_assert_int_eq(wd_delta_locate(d, f, at, &b, &boff), 0);
                ck_assert_uint_eq(bl[k], b);
                ck_assert_uint_le(boff, at);
                ck_assert_uint_gt(boff + in->blocks[b].out_len, at);
                at = boff + in->blocks[b].out_len;
            }
            ck_assert_uint_eq(at, end);
        }
    }
    ck_assert_msg(multi > 0, "the fixture should have a file of several blocks");
    wd_delta_close(d);
}
END_TEST

/* At most max blocks; end: just past the last given; resuming from end
 * gives the rest, the same as one call. */
START_TEST(test_next_blocks_max_and_resume)
{
    wd_delta *d = open_fixture();
    const wd_delta_info *in = wd_delta_get_info(d);
    for (size_t f = 0; f < in->nfiles; f++) {
        uint32_t all[64], part[64];
        uint64_t end_all, end = 0, pos = 0;
        size_t n_all = wd_delta_next_blocks(d, f, 0, all, 64, &end_all), got = 0;
        while (got < n_all) {
            size_t n = wd_delta_next_blocks(d, f, pos, part + got, 1, &end);
            ck_assert_uint_eq(n, 1);
            ck_assert_uint_gt(end, pos);
            got += n;
            pos = end;
        }
        ck_assert_uint_eq(end, end_all);
        ck_assert(memcmp(all, part, n_all * sizeof *all) == 0);
        ck_assert_uint_eq(wd_delta_next_blocks(d, f, 0, part, 0, &end), 0);
        ck_assert_uint_eq(end, 0);
    }
    wd_delta_close(d);
}
END_TEST

/* Nothing at or past a file's end, nor for a file the delta does not have;
 * *end stays at pos. */
START_TEST(test_next_blocks_out_of_range)
{
    wd_delta *d = open_fixture();
    const wd_delta_info *in = wd_delta_get_info(d);
    uint32_t bl[4];
    uint64_t end = 1;
    ck_assert_uint_eq(wd_delta_next_blocks(d, 0, in->files[0].size, bl, 4, &end), 0);
    ck_assert_uint_eq(end, in->files[0].size);
    ck_assert_uint_eq(wd_delta_next_blocks(d, 0, UINT64_MAX, bl, 4, &end), 0);
    ck_assert_uint_eq(end, UINT64_MAX);
    ck_assert_uint_eq(wd_delta_next_blocks(d, in->nfiles, 0, bl, 4, &end), 0);
    ck_assert_uint_eq(end, 0);
    wd_delta_close(d);
}
END_TEST

Suite *suite_readahead(void)
{
    Suite *s = suite_create("readahead");
    TCase *tc = tcase_create("next_blocks");
    tcase_add_test(tc, test_next_blocks_cover_file);
    tcase_add_test(tc, test_next_blocks_max_and_resume);
    tcase_add_test(tc, test_next_blocks_out_of_range);
    suite_add_tcase(s, tc);
    return s;
}
