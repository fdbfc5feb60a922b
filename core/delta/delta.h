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

/* struct wd_delta is defined in delta/delta_impl.h, for core/delta/, the
 * legacy v1 view and the lineage's parent link only; everything else uses
 * the public accessors (wdelta.h) and these: */
/* The base model attached (wd_delta_set_base), NULL if none (or a parent). */
const wd_model *wd_delta_base_model(const wd_delta *d);
/* 1 if a base or a parent is attached. */
int wd_delta_has_source(const wd_delta *d);
/* 1 for a deltatensors v1 file. */
int wd_delta_is_v1(const wd_delta *d);
/* The caller's stop flag (wd_delta_set_stop), NULL if none. */
const volatile sig_atomic_t *wd_delta_get_stop(const wd_delta *d);
/* Stored bytes of block b, checked against its checksum, into *buf (grown
 * to at least its stored length, *cap updated). */
int wd_delta_read_stored(wd_delta *d, uint32_t b, unsigned char **buf, size_t *cap, wd_err *err);
/* Extent k of output file f. */
const wd_ext_priv *wd_delta_ext(const wd_delta *d, size_t f, size_t k);


/* wd_delta_decode_block with the caller's scratch (the block cache shares
 * one small pool among all deltas, so memory follows the decoding threads,
 * not the number of open deltas). */
int wd_delta_decode_with(wd_delta *d, uint32_t block, void *out, wd_scratch *s, wd_err *err);

/* A block's decode in two steps, so that the reading (copies out of the
 * page cache) can run on another thread than the decoding (wd_apply):
 * wd_delta_read_inputs reads block's stored bytes and, when its codec
 * reads a base directory's bytes as they are, those base bytes, into in's
 * buffers (grown as needed; zero-initialise in, wd_block_inputs_free it);
 * wd_delta_decode_inputs then decodes them with every check of
 * wd_delta_decode_block (stored and output checksums). */
typedef struct wd_block_inputs {
    unsigned char *stored, *base;
    size_t stored_cap, base_cap;
    uint32_t block;
    int has_base, v1;
} wd_block_inputs;
int wd_delta_read_inputs(wd_delta *d, uint32_t block, wd_block_inputs *in, wd_err *err);
int wd_delta_decode_inputs(wd_delta *d, const wd_block_inputs *in, void *out, wd_err *err);
void wd_block_inputs_free(wd_block_inputs *in);


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
