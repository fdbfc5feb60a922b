/* test_main.c - runs every suite; exit status 0 only if all pass. */
#include <stdlib.h>
#include "suites.h"

int main(void)
{
    SRunner *sr = srunner_create(suite_safetensors());
    srunner_add_suite(sr, suite_model());
    srunner_add_suite(sr, suite_codec());
    srunner_add_suite(sr, suite_delta());
    srunner_add_suite(sr, suite_v1());
    srunner_add_suite(sr, suite_lossy());
    srunner_add_suite(sr, suite_lowrank());
    srunner_add_suite(sr, suite_lowrank_ranks());
    srunner_add_suite(sr, suite_lowrank_reject());
    srunner_add_suite(sr, suite_fuzz_regressions());
    srunner_add_suite(sr, suite_inputs());
    srunner_add_suite(sr, suite_integrity());
    srunner_add_suite(sr, suite_identity());
    srunner_add_suite(sr, suite_xdtype());
    srunner_add_suite(sr, suite_ternary());
    srunner_add_suite(sr, suite_readahead());
    srunner_add_suite(sr, suite_readv());
    srunner_add_suite(sr, suite_shared_names());
    srunner_add_suite(sr, suite_fastdec());
    srunner_add_suite(sr, suite_block_inputs());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
