/* test_block_inputs.c - a block decoded in two steps (wd_delta_read_inputs
 * on one thread, wd_delta_decode_inputs on another: wd_apply's reader and
 * decoders) gives the bytes wd_delta_decode_block gives, with every check:
 * a changed stored byte, a changed base byte, no base attached all fail,
 * naming the block.  On the stored fixture tests/integration/fixtures/oldv2
 * (a1.wdelta over its base). */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "suites.h"

#define FX "tests/integration/fixtures/oldv2"

typedef struct fixture {
    wd_delta *d;
    wd_model base;
} fixture;

static void open_fx(fixture *fx, int with_base)
{
    wd_err err;
    memset(&err, 0, sizeof err);
    memset(fx, 0, sizeof *fx);
    ck_assert_msg(wd_delta_open(FX "/a1.wdelta", &fx->d, &err) == 0, "%s (run from the repository root)", err.msg);
    if (!with_base) return;
    ck_assert_msg(wd_model_open(FX "/base", &fx->base, &err) == 0, "%s", err.msg);
    ck_assert_msg(wd_delta_set_base(fx->d, &fx->base, &err) == 0, "%s", err.msg);
}

static void close_fx(fixture *fx, int with_base)
{
    wd_delta_close(fx->d);
    if (with_base) wd_model_free(&fx->base);
}

static size_t max_out(const wd_delta_info *in)
{
    size_t m = 1;
    for (size_t b = 0; b < in->nblocks; b++)
        if (in->blocks[b].out_len > m) m = in->blocks[b].out_len;
    return m;
}

/* Every block: the same bytes both ways; some blocks read their base ahead. */
START_TEST(test_inputs_same_bytes)
{
    fixture fx;
    open_fx(&fx, 1);
    const wd_delta_info *in = wd_delta_get_info(fx.d);
    size_t m = max_out(in), with_base = 0;
    unsigned char *a = malloc(m), *b = malloc(m);
    wd_block_inputs bi;
    memset(&bi, 0, sizeof bi);
    wd_err err;
    for (uint32_t k = 0; k < in->nblocks; k++) {
        ck_assert_msg(wd_delta_decode_block(fx.d, k, a, &err) == 0, "%s", err.msg);
        ck_assert_msg(wd_delta_read_inputs(fx.d, k, &bi, &err) == 0, "%s", err.msg);
        ck_assert_uint_eq(bi.block, k);
        with_base += (size_t)bi.has_base;
        memset(b, 0xA5, m);
        ck_assert_msg(wd_delta_decode_inputs(fx.d, &bi, b, &err) == 0, "%s", err.msg);
        ck_assert_msg(memcmp(a, b, in->blocks[k].out_len) == 0, "block %u differs", k);
    }
    ck_assert_msg(with_base > 0, "the fixture should have blocks that read the base");
    wd_block_inputs_free(&bi);
    free(a);
    free(b);
    close_fx(&fx, 1);
}
END_TEST

/* A stored byte changed after reading: the stored checksum; a base byte
 * changed: the decode fails; both name the block. */
START_TEST(test_inputs_checked)
{
    fixture fx;
    open_fx(&fx, 1);
    const wd_delta_info *in = wd_delta_get_info(fx.d);
    unsigned char *out = malloc(max_out(in));
    wd_block_inputs bi;
    memset(&bi, 0, sizeof bi);
    wd_err err;
    int base_seen = 0;
    for (uint32_t k = 0; k < in->nblocks; k++) {
        ck_assert_int_eq(wd_delta_read_inputs(fx.d, k, &bi, &err), 0);
        if (in->blocks[k].stored_len) {
            bi.stored[in->blocks[k].stored_len / 2] ^= 0x10;
            ck_assert_int_ne(wd_delta_decode_inputs(fx.d, &bi, out, &err), 0);
            ck_assert_msg(strstr(err.msg, "stored checksum mismatch") && strstr(err.msg, "(delta offset "), "%s", err.msg);
            bi.stored[in->blocks[k].stored_len / 2] ^= 0x10;
        }
        if (bi.has_base) {
            base_seen = 1;
            bi.base[in->blocks[k].out_len - 1] ^= 0x01;
            ck_assert_int_ne(wd_delta_decode_inputs(fx.d, &bi, out, &err), 0);
            ck_assert_msg(strstr(err.msg, "(delta offset "), "%s", err.msg);
            bi.base[in->blocks[k].out_len - 1] ^= 0x01;
        }
        ck_assert_msg(wd_delta_decode_inputs(fx.d, &bi, out, &err) == 0, "%s", err.msg);
    }
    ck_assert(base_seen);
    wd_block_inputs_free(&bi);
    free(out);
    close_fx(&fx, 1);
}
END_TEST

/* No base attached: a block that needs it is refused when read; a block
 * past the end is refused. */
START_TEST(test_inputs_refused)
{
    fixture fx;
    open_fx(&fx, 0);
    const wd_delta_info *in = wd_delta_get_info(fx.d);
    wd_block_inputs bi;
    memset(&bi, 0, sizeof bi);
    wd_err err;
    int refused = 0;
    for (uint32_t k = 0; k < in->nblocks; k++)
        if (wd_delta_read_inputs(fx.d, k, &bi, &err)) {
            ck_assert_msg(strstr(err.msg, "needs the base model"), "%s", err.msg);
            refused++;
        }
    ck_assert(refused > 0);
    ck_assert_int_ne(wd_delta_read_inputs(fx.d, (uint32_t)in->nblocks, &bi, &err), 0);
    ck_assert_msg(strstr(err.msg, "no block"), "%s", err.msg);
    wd_block_inputs_free(&bi);
    close_fx(&fx, 0);
}
END_TEST

Suite *suite_block_inputs(void)
{
    Suite *s = suite_create("block_inputs");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_inputs_same_bytes);
    tcase_add_test(tc, test_inputs_checked);
    tcase_add_test(tc, test_inputs_refused);
    suite_add_tcase(s, tc);
    return s;
}
