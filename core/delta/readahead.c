/* readahead.c - which blocks a sequential reader of an output file needs
 * next.  Block numbers follow the writer's order, not the file's (a file's
 * extents may come from anywhere in the block table), so "the next blocks"
 * is a walk through the file's extents; the daemon's read-ahead (and any
 * reader that decodes ahead) asks here instead of reading the table. */
#include "wdelta.h"

size_t wd_delta_next_blocks(const wd_delta *d, size_t f, uint64_t pos, uint32_t *blocks, size_t max, uint64_t *end)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    size_t n = 0;
    while (n < max) {
        uint32_t b;
        uint64_t boff;
        if (wd_delta_locate(d, f, pos, &b, &boff)) break; /* past the file's end, or no such file */
        blocks[n++] = b;
        pos = boff + in->blocks[b].out_len;
    }
    *end = pos;
    return n;
}
