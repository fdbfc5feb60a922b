/* delta_impl.h - struct wd_delta, the open delta's state.  Included by
 * core/delta/ (which owns it), legacy/v1_view.c (the v1 view decodes
 * through it) and lineage/chain.c (which sets the parent link); every
 * other file goes through accessors (delta.h, wdelta.h).  Not installed. */
#ifndef WDELTA_DELTA_IMPL_H
#define WDELTA_DELTA_IMPL_H

#include "delta/delta.h" /* wd_ext_priv, wd_base_source, wd_scratch_pool */

struct wd_delta {
    char *path;
    int fd;
    wd_delta_info info;
    char *strategy, *tool, *options_json, *parent_name;
    wd_outfile *files;
    wd_ext_priv **file_exts;   /* per file: array of nextents */
    wd_extent **file_pub_exts; /* per file: public copies */
    wd_block *blocks;
    uint32_t *block_ext;       /* block -> global extent number */
    wd_ext_priv **ext_by_num;  /* global extent number -> extent */
    size_t next;
    const wd_model *base;      /* not owned */
    int *base_fds;             /* one per base file */
    int base_fds_borrowed;     /* the caller's (wd_delta_set_base_fds): not closed */
    /* deltatensors v1 (version 1): a view built at wd_delta_set_base */
    wd_v1 *v1;
    int v1_base_dtype;
    unsigned char **gen;       /* generated blobs (headers, index), per extent number */
    pthread_mutex_t memo_lock; /* one rebuilt v1 tensor kept for its neighbours */
    long memo_tensor;
    int v1_digest;             /* under memo_lock: 0 unchecked, 1 good, -1 bad */
    unsigned char *memo;
    /* v1 base checksums (wd_delta_check_digest with the base attached): per
     * block, wd_hash64 of the base bytes a base-copy block is, and for a
     * v1 tensor (in its first block) the chained hash of the whole base
     * tensor in 1 MiB pieces, taken while hashing the base to its content
     * hash.  Set once; v1_bad: a mismatch was found (reads fail), with
     * v1_why under memo_lock. */
    uint64_t *_Atomic v1_base_sums;
    atomic_int v1_bad;
    char v1_why[512];
    wd_scratch_pool pool; /* scratches for wd_delta_decode_block and xdtype reads */
    /* chains (chain.c): the base bytes are another delta's rebuilt output,
     * read through `parent_cache` (NULL: decoded directly).  Then each
     * extent's base_fd_index is the parent's output file and base_offset the
     * base tensor's offset in it. */
    wd_delta *parent;          /* not owned */
    uint64_t parent_key;
    wd_cache *parent_cache;
    const wd_base_source *src; /* NULL until a base or parent is attached */
    const volatile sig_atomic_t *stop; /* wd_delta_set_stop: polled by wd_apply */
};

#endif
