/* suites.h - every check suite of the unit test binary. */
#ifndef WD_TEST_SUITES_H
#define WD_TEST_SUITES_H
#include <check.h>

Suite *suite_safetensors(void);
Suite *suite_model(void);
Suite *suite_codec(void);
Suite *suite_delta(void);
Suite *suite_v1(void);
Suite *suite_lossy(void);
Suite *suite_lowrank(void);
Suite *suite_lowrank_ranks(void);
Suite *suite_lowrank_reject(void);
Suite *suite_fuzz_regressions(void);
Suite *suite_inputs(void);
Suite *suite_integrity(void);
Suite *suite_identity(void);
Suite *suite_xdtype(void);
Suite *suite_ternary(void);
Suite *suite_readahead(void);
Suite *suite_readv(void);
Suite *suite_shared_names(void);
Suite *suite_fastdec(void);
Suite *suite_block_inputs(void);

#endif
