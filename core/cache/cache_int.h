/* cache_int.h - what the block cache (core/cache/) exports to the layers
 * above (a chain link reading its parent through the cache); not installed. */
#ifndef WDELTA_CACHE_INT_H
#define WDELTA_CACHE_INT_H

#include "wdelta.h" /* wd_delta, wd_cache, wd_err */
#include <stdint.h> /* uint64_t */
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


/* ---- block buffers (bufpool.c): reused by the cache instead of mapped
 * afresh for every block.  Thread-safe. */
typedef struct wd_bufpool wd_bufpool;
typedef struct wd_buf {
    unsigned char *data;
    size_t cost;  /* the memory it holds (its share of a chunk) */
    void *home;   /* its chunk, NULL for a malloc'd one */
    unsigned slot;
} wd_buf;
wd_bufpool *wd_bufpool_new(void);
void wd_bufpool_free(wd_bufpool *p); /* every buffer must have been put back */
size_t wd_bufpool_cost(size_t n);    /* what a buffer of n bytes costs */
int wd_bufpool_get(wd_bufpool *p, size_t n, wd_buf *b); /* -1: out of memory */
void wd_bufpool_put(wd_bufpool *p, wd_buf *b);
/* Give idle buffers back to the system until at most `keep` idle bytes
 * stay resident; returns the idle bytes left. */
uint64_t wd_bufpool_trim(wd_bufpool *p, uint64_t keep);

#endif
