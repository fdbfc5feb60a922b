/* cache_int.h - what the block cache (core/cache/) exports to the layers
 * above (a chain link reading its parent through the cache); not installed. */
#ifndef WDELTA_CACHE_INT_H
#define WDELTA_CACHE_INT_H

#include "wdelta.h" /* wd_delta, wd_cache, wd_err */
#include <sys/types.h> /* ssize_t */

typedef struct wd_cache_pin wd_cache_pin; /* a pinned block cache entry */

/* cache.c: wd_read from inside a decode (a chain link reading its parent):
 * uses no decoder slot, since the calling thread already holds one. */
ssize_t wd_read_nested(wd_delta *d, uint64_t key, wd_cache *c, size_t f, void *buf, size_t len, uint64_t off,
                       wd_err *err);
/* Nested too: when [off, off+len) of output file f lies inside one block,
 * pin that block's cache entry and point *data at the range (returns 1;
 * wd_cache_unpin releases it).  0: not in one block, or no cache (the
 * caller copies with wd_read_nested); -1: error. */
int wd_cache_pin_range(wd_delta *d, uint64_t key, wd_cache *c, size_t f, uint64_t off, size_t len,
                       const unsigned char **data, wd_cache_pin **pin, wd_err *err);
void wd_cache_unpin(wd_cache *c, wd_cache_pin *pin);


#endif
