/* abi.c - sizes of the public structs, for bindings that mirror them.
 *
 * The Python package (python/wdelta) loads libwdelta.so with ctypes and
 * declares the structs of wdelta.h again in Python; comparing its sizes with
 * these at load time turns a header change that was not carried over into a
 * clear error instead of memory corruption. */
#include "wdelta.h"
#include <string.h>

size_t wd_struct_size(const char *name)
{
    static const struct { const char *name; size_t size; } sizes[] = {
        {"wd_err", sizeof(wd_err)},
        {"wd_tensor", sizeof(wd_tensor)},
        {"wd_stfile", sizeof(wd_stfile)},
        {"wd_model", sizeof(wd_model)},
        {"wd_lossy_params", sizeof(wd_lossy_params)},
        {"wd_create_opts", sizeof(wd_create_opts)},
        {"wd_create_stats", sizeof(wd_create_stats)},
        {"wd_extent", sizeof(wd_extent)},
        {"wd_outfile", sizeof(wd_outfile)},
        {"wd_block", sizeof(wd_block)},
        {"wd_delta_info", sizeof(wd_delta_info)},
        {"wd_v1_tensor", sizeof(wd_v1_tensor)},
    };
    if (!name) return 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!strcmp(sizes[i].name, name)) return sizes[i].size;
    return 0;
}
