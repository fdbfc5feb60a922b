/* fuzz_v1.c - libFuzzer entry point; the body is fuzz_v1_one in fuzz_common.h. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_v1_one(data, size);
}
