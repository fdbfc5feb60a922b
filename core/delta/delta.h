/* delta.h - the open delta (core/delta/): struct wd_delta and what
 * decoding exports to the layers above; not installed. */
#ifndef WDELTA_DELTA_H
#define WDELTA_DELTA_H

#include "codec/codec.h" /* wd_scratch, the block codecs, util */
#include "model/model_int.h" /* wd_model internals, wd_json_piece, hashes */
#include <pthread.h> /* the delta's locks */
#include <stdatomic.h> /* v1 base checksums */

typedef struct wd_cache_pin wd_cache_pin; /* a pinned cache entry (core/cache/), opaque here */
typedef struct wd_ext_priv wd_ext_priv;

/* ---- where a delta's base bytes come from: the base model's files
 * (delta/base.c, set by wd_delta_set_base) or a parent delta's rebuilt
 * output (lineage/parent.c, set by wd_delta_set_parent).  Decoding reads
 * through this and never calls up into the lineage or the cache. */
typedef struct wd_base_source {
    /* n base bytes of extent e, at its base_offset + rel, into buf */
    int (*read)(wd_delta *d, const wd_ext_priv *e, unsigned char *buf, size_t n, uint64_t rel, wd_err *err);
    /* the same range without a copy where it can: 1 with *base pointing
     * at the bytes and *pin to hand to done; 0 if the caller must read;
     * -1 on error.  NULL: always read. */
    int (*view)(wd_delta *d, const wd_ext_priv *e, size_t n, uint64_t rel, const unsigned char **base,
                wd_cache_pin **pin, wd_err *err);
    void (*done)(wd_delta *d, wd_cache_pin *pin);
} wd_base_source;
extern const wd_base_source wd_base_dir_source; /* delta/base.c */

/* ---- the open delta (delta_read.c) */
struct wd_ext_priv {
    wd_extent pub;
    char *tensor, *base_tensor, *params;
    /* resolved at wd_delta_set_base */
    int base_fd_index;      /* index into base->files, -1 if none */
    uint64_t base_offset;   /* absolute offset of the base tensor's data */
    /* cross-dtype / resized predictor (xdtype.h): the base tensor's dtype
     * and byte length when they differ from the extent's */
    int pred;
    wd_dtype pred_dtype;
    uint64_t pred_length;
};

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

/* wd_delta_decode_block with the caller's scratch (the block cache shares
 * one small pool among all deltas, so memory follows the decoding threads,
 * not the number of open deltas). */
int wd_delta_decode_with(wd_delta *d, uint32_t block, void *out, wd_scratch *s, wd_err *err);


/* delta/base.c, through d->src: read n base bytes of extent e, at base_offset + rel, from the
 * base model's file or from the parent delta's output. */
int wd_delta_read_base(wd_delta *d, const wd_ext_priv *e, unsigned char *buf, size_t n, uint64_t rel, wd_err *err);
/* The same range without a copy where it can: sets *base to the bytes, in
 * the parent's pinned cache entry (*pin set: give it to wd_delta_base_done)
 * or else in scratch slot 1 of s (read as wd_delta_read_base does). */
int wd_delta_base_view(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, size_t n, uint64_t rel,
                       const unsigned char **base, wd_cache_pin **pin, wd_err *err);
void wd_delta_base_done(wd_delta *d, wd_cache_pin *pin);


#endif
