/* test_inputs.c - create's input policy (core/model/inputs.c) and what --force may
 * replace (core/ops/output.c). */
#include "suites.h"
#include "wdelta.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

START_TEST(test_classify)
{
    static const struct { const char *name; int dir; wd_input_kind want; } cases[] = {
        {"config.json", 0, WD_INPUT_STORED},
        {"tokenizer.json", 0, WD_INPUT_STORED},
        {"tokenizer.model", 0, WD_INPUT_STORED},
        {"merges.txt", 0, WD_INPUT_STORED},
        {"chat_template.jinja", 0, WD_INPUT_STORED},
        {"modeling_x.py", 0, WD_INPUT_STORED},
        {"LICENSE", 0, WD_INPUT_STORED},
        {"pytorch_model.bin", 0, WD_INPUT_UNKNOWN},
        {"model.gguf", 0, WD_INPUT_UNKNOWN},
        {"optimizer.pt", 0, WD_INPUT_TRAINING},
        {"optimizer.bin", 0, WD_INPUT_TRAINING},
        {"scheduler.pt", 0, WD_INPUT_TRAINING},
        {"scaler.pt", 0, WD_INPUT_TRAINING},
        {"rng_state.pth", 0, WD_INPUT_TRAINING},
        {"rng_state_7.pth", 0, WD_INPUT_TRAINING},
        {"training_args.bin", 0, WD_INPUT_TRAINING},
        {"trainer_state.json", 0, WD_INPUT_TRAINING},
        {"x.wdelta", 0, WD_INPUT_OURS},
        {"x.wdelta.tmp.Ab3dE9", 0, WD_INPUT_OURS},
        {"notes.tmp.txt", 0, WD_INPUT_STORED},
        {"checkpoint-500", 1, WD_INPUT_SUBDIR},
        {"a/b", 0, WD_INPUT_SKIPPED},
        {"..", 1, WD_INPUT_SKIPPED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        ck_assert_msg(wd_input_classify(cases[i].name, cases[i].dir, NULL, 0) == cases[i].want, "%s: kind %d, want %d",
                      cases[i].name, wd_input_classify(cases[i].name, cases[i].dir, NULL, 0), cases[i].want);
    const char *ex[] = {"*.log", "notes*"};
    ck_assert(wd_input_classify("train.log", 0, ex, 2) == WD_INPUT_EXCLUDED);
    ck_assert(wd_input_classify("notes.md", 0, ex, 2) == WD_INPUT_EXCLUDED);
    ck_assert(wd_input_classify("config.json", 0, ex, 2) == WD_INPUT_STORED);
    ck_assert(wd_input_classify("optimizer.pt", 0, ex, 2) == WD_INPUT_TRAINING);
    for (int k = WD_INPUT_WEIGHTS; k <= WD_INPUT_SKIPPED; k++) ck_assert(strcmp(wd_input_kind_text((wd_input_kind)k), "?"));
}
END_TEST

START_TEST(test_output_check)
{
    char dir[] = "/tmp/wd_inputs_XXXXXX", p[256];
    ck_assert(mkdtemp(dir));
    wd_err err = {0};
    unsigned mode = 123;
    snprintf(p, sizeof p, "%s/out.wdelta", dir);
    ck_assert(wd_output_check(p, 0, &mode, &err) == 0 && mode == 0); /* absent */
    FILE *f = fopen(p, "w");
    fputs("not a delta", f);
    fclose(f);
    ck_assert(wd_output_check(p, 0, &mode, &err) == -1);            /* exists, no force */
    ck_assert(wd_output_check(p, 1, &mode, &err) == -1);            /* not ours */
    ck_assert_msg(strstr(err.msg, "not a .wdelta"), "%s", err.msg);
    f = fopen(p, "w");
    fwrite("wdelta\0\2\0\0\0", 1, 11, f);
    fclose(f);
    chmod(p, 0600);
    ck_assert_msg(wd_output_check(p, 1, &mode, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(mode, 0600);
    char l[300];
    snprintf(l, sizeof l, "%s/link.wdelta", dir);
    ck_assert(symlink(p, l) == 0);
    ck_assert(wd_output_check(l, 1, &mode, &err) == -1);            /* a link, even to a delta */
    ck_assert(wd_output_check(dir, 1, &mode, &err) == -1);          /* a directory */
    unlink(l);
    unlink(p);
    rmdir(dir);
}
END_TEST

Suite *suite_inputs(void)
{
    Suite *s = suite_create("inputs");
    TCase *tc = tcase_create("inputs");
    tcase_add_test(tc, test_classify);
    tcase_add_test(tc, test_output_check);
    suite_add_tcase(s, tc);
    return s;
}
