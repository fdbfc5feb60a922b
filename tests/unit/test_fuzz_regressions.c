/* test_fuzz_regressions.c - replays every fuzz input kept in the repository
 * through the same harness code the libFuzzer targets run (fuzz_common.h):
 * the crashes found so far (tests/fuzz/regressions/<target>/) and the seed
 * corpora (tests/fuzz/corpus/<target>/).  A crash, a sanitizer report or an
 * abort() in the harness fails the test naming the target. */
#include "fuzz_common.h"
#include "suites.h"
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* tests/fuzz relative to the working directory (make test runs from the
 * repository root), else relative to the test binary (build-asan/unit_tests). */
static int fuzz_dir(char *buf, size_t cap)
{
    struct stat st;
    snprintf(buf, cap, "tests/fuzz");
    if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *s = strrchr(exe, '/');
        if (!s) return -1;
        *s = 0;
    }
    int k = snprintf(buf, cap, "%s/tests/fuzz", exe);
    if (k < 0 || (size_t)k >= cap) return -1;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* Runs every file of DIR/<kind>/<target>; returns how many. */
static int replay(const char *kind, const char *target)
{
    char root[PATH_MAX], dir[PATH_MAX + 128];
    ck_assert_msg(fuzz_dir(root, sizeof root) == 0, "tests/fuzz not found (run from the repository root)");
    snprintf(dir, sizeof dir, "%s/%s/%s", root, kind, target);
    DIR *dh = opendir(dir);
    if (!dh) return 0;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (de->d_name[0] == '.') continue;
        char path[PATH_MAX + 512];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        ck_assert_msg(f != NULL, "cannot open %s", path);
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        ck_assert_msg(len >= 0 && len <= (16 << 20), "%s: odd size", path);
        unsigned char *buf = malloc(len ? (size_t)len : 1);
        ck_assert_ptr_nonnull(buf);
        ck_assert_msg(fread(buf, 1, (size_t)len, f) == (size_t)len, "cannot read %s", path);
        fclose(f);
        /* a crash here kills the forked test and names the target; the
         * path goes to stderr first so the log says which input it was */
        fprintf(stderr, "fuzz replay: %s\n", path);
        ck_assert_int_eq(fuzz_run_target(target, buf, (size_t)len), 0);
        free(buf);
        count++;
    }
    closedir(dh);
    return count;
}

static void replay_target(const char *target)
{
    int c = replay("corpus", target);
    ck_assert_msg(c > 0, "no seed corpus for %s", target);
    replay("regressions", target);
}

START_TEST(fuzz_safetensors_inputs) { replay_target("fuzz_safetensors"); }
END_TEST
START_TEST(fuzz_v1_inputs) { replay_target("fuzz_v1"); }
END_TEST
START_TEST(fuzz_v2_inputs) { replay_target("fuzz_v2"); }
END_TEST
START_TEST(fuzz_codec_inputs) { replay_target("fuzz_codec"); }
END_TEST

Suite *suite_fuzz_regressions(void)
{
    Suite *s = suite_create("fuzz_regressions");
    TCase *tc = tcase_create("replay");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, fuzz_safetensors_inputs);
    tcase_add_test(tc, fuzz_v1_inputs);
    tcase_add_test(tc, fuzz_v2_inputs);
    tcase_add_test(tc, fuzz_codec_inputs);
    suite_add_tcase(s, tc);
    return s;
}
