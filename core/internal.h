/* internal.h - declarations shared between core/ files; not installed. */
#ifndef WDELTA_INTERNAL_H
#define WDELTA_INTERNAL_H

#include "wdelta.h"
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>

/* ---- file layout constants of .wdelta v2 (see core/FORMAT.md) */
#define WD_MAGIC "wdelta\0"
#define WD_MAGIC_LEN 7
#define WD_PREAMBLE_LEN 16
#define WD_FOOTER_LEN 88
#define WD_FOOTER_MAGIC "wdv2end\0"
#define WD_BLOCK_ENTRY_LEN 32
#define WD_MAX_MANIFEST (256u * 1024 * 1024)
#define WD_MAX_BLOCKS (1u << 28)
/* preamble flags (u32 at offset 11) */
#define WD_FLAG_ZMANIFEST 1u /* the manifest is one zstd frame */
#define WD_KNOWN_FLAGS WD_FLAG_ZMANIFEST

/* ---- little-endian helpers */
static inline void wd_put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void wd_put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t wd_get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint64_t wd_get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- a model hash fed tensor by tensor (hash.c): kind WD_HASH_V1 needs
 * the tensors in wd_model_hash_order, WD_ID_V2 takes them in any order.
 * begin (name, dtype, shape, length), then update with its bytes. */
typedef struct wd_idhash wd_idhash;
wd_idhash *wd_idhash_new(unsigned kind);
int wd_idhash_begin(wd_idhash *h, const wd_tensor *t);
void wd_idhash_update(wd_idhash *h, const void *p, size_t n);
int wd_idhash_final(wd_idhash *h, unsigned char out[32], wd_err *err); /* also frees */
void wd_idhash_free(wd_idhash *h);

/* ---- JSON one member at a time (safetensors.c): a large object or array
 * is walked with a structural scan and only its members parsed, each on its
 * own, so no tree of the whole text is ever built. */
typedef struct wd_jwalk {
    const char *s;
    size_t n, i, err_at; /* err_at: where a syntax error was found */
    int obj, first;
} wd_jwalk;
/* Start at the object or array opening at or after s[i] (whitespace
 * skipped); -1 if none opens there. */
int wd_jwalk_open(wd_jwalk *w, const char *s, size_t n, size_t i);
/* The next member: 1 with its key's slice [ks, ke) (objects; the quoted
 * string) and its value's [vs, ve); 0 at the closing bracket (w->i is past
 * it); -1 on a syntax error (at w->err_at). */
int wd_jwalk_next(wd_jwalk *w, size_t *ks, size_t *ke, size_t *vs, size_t *ve);
/* 0 if only whitespace follows the walked value. */
int wd_jwalk_end(const wd_jwalk *w);
/* cJSON's tree of exactly the n bytes at s, NULL if they are not one JSON
 * value (*bad: where parsing stopped, relative to s). */
struct cJSON *wd_json_piece(const char *s, size_t n, size_t *bad);

/* wd_st_parse without the copy of the header text (out->header NULL). */
int wd_st_parse_nocopy(const unsigned char *buf, size_t buflen, uint64_t file_size, const char *fname,
                       wd_stfile *out, wd_err *err);

/* 1 if the n bytes at s are valid UTF-8 (dtype.c). */
int wd_utf8_valid(const char *s, size_t n);

/* Build m->by_name and m->ntensors from m->files (model.c); an error names
 * a tensor held by two files.  For models made of parsed headers too. */
int wd_model_index(wd_model *m, wd_err *err);
/* Apply the input policy to a fine-tune opened for create: drop the extras
 * it leaves out (inputs.c); an exclude glob matching a weights file is an error. */
int wd_input_filter(wd_model *ft, const char *out_path, const char *const *exclude, size_t nexclude, wd_err *err);
/* Remove a directory wd_apply made for d (only the names it writes). */
int wd_apply_remove(const wd_delta *d, const char *dir);

/* float32 bits -> bfloat16 / IEEE half bits, round to nearest even, NaN
 * kept a (quiet) NaN, overflow to infinity (v1_view.c). */
uint16_t wd_f32_to_bf16(uint32_t u);
uint16_t wd_f32_to_f16(uint32_t u);

/* ---- temporaries (tmpfile.c): OUT.KIND.PID.RANDOM next to out_path, a
 * file (returns an fd open for writing) or a directory (returns 0); -1
 * with err set.  mode is reduced by the umask as usual. */
int wd_tmp_file(const char *out_path, const char *kind, mode_t mode, char **path_out, wd_err *err);
int wd_tmp_dir(const char *out_path, const char *kind, mode_t mode, char **path_out, wd_err *err);
/* 1 (err set: "interrupted") if the caller's stop flag is raised. */
int wd_stop_requested(const volatile sig_atomic_t *stop, wd_err *err);

/* wd_model_hash reading `chunk` bytes at a time (chunks start at each
 * tensor's first byte), handing every chunk to cb (may be NULL) and
 * stopping when *stop is raised (stop may be NULL). */
typedef void (*wd_hash_chunk_fn)(void *ctx, size_t file, size_t tensor, uint64_t rel, const unsigned char *buf,
                                 size_t n);
int wd_model_hash_ex(const wd_model *m, unsigned char out[32], size_t chunk, wd_hash_chunk_fn cb, void *ctx,
                     const volatile sig_atomic_t *stop, wd_err *err);

/* ---- I/O: full reads/writes with retry on EINTR/short counts. */
int wd_pread_full(int fd, void *buf, size_t n, uint64_t off, const char *what, wd_err *err);
int wd_pwrite_full(int fd, const void *buf, size_t n, uint64_t off, const char *what, wd_err *err);

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

/* ---- codecs (codec.c).  A scratch holds per-thread buffers and zstd
 * contexts; obtain one per thread and reuse it. */
typedef struct wd_scratch wd_scratch;
typedef struct wd_cache_pin wd_cache_pin; /* a pinned block cache entry (cache.c) */
wd_scratch *wd_scratch_new(void);
void wd_scratch_free(wd_scratch *s);
/* Bytes held by the scratch's buffers (what keeping it costs). */
size_t wd_scratch_bytes(const wd_scratch *s);

/* Encode n bytes of `ft` (with `base` of the same n bytes for
 * WD_CODEC_LOSSLESS, NULL for WD_CODEC_ZSTD).  On success *out points into
 * the scratch (valid until its next use) and *out_len is set. */
int wd_encode_block(wd_scratch *s, wd_codec codec, wd_dtype dt, int level,
                    const unsigned char *ft, const unsigned char *base, size_t n,
                    const unsigned char **out, size_t *out_len, wd_err *err);
/* Decode stored bytes into out (n bytes). */
int wd_decode_block(wd_scratch *s, wd_codec codec, wd_dtype dt,
                    const unsigned char *stored, size_t stored_len,
                    const unsigned char *base, unsigned char *out, size_t n,
                    wd_err *err);
/* Scratch buffer of at least n bytes, slot 0..3 (owned by the scratch). */
unsigned char *wd_scratch_buf(wd_scratch *s, int slot, size_t n);

int wd_codec_from_name(const char *name, wd_codec *out);
/* 1 if the codec reads the base tensor (lossless and the lossy codecs) */
int wd_codec_needs_base(wd_codec c);

/* ---- lossy codecs (lossy.c); the block holds whole rows of p->cols. */
int wd_lossy_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                    const unsigned char *ft, const unsigned char *base, size_t n,
                    const unsigned char **out, size_t *out_len, wd_err *err);
int wd_lossy_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const unsigned char *stored,
                    size_t stored_len, const unsigned char *base, unsigned char *out, size_t n,
                    wd_err *err);
/* 1 if a tensor may take a lossy codec: F32/F16/BF16, at least 2 dims. */
int wd_lossy_eligible(const wd_tensor *t);
/* Block size (bytes) for a lossy extent: whole rows, a multiple of 8,
 * about `target` bytes; 0 if no row group fits the format's limits. */
uint32_t wd_lossy_block_size(const wd_tensor *t, uint32_t target);

/* Encode and decode one block with a lossy codec, adding to st: stored
 * bytes, squared error of the rebuilt values against ft, squared delta,
 * largest |rebuilt - ft| (float64 over finite values).  dec: n bytes. */
typedef struct wd_lossy_stats {
    uint64_t stored, nelem;
    double err2, delta2, max_abs;
} wd_lossy_stats;
int wd_lossy_measure(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                     const unsigned char *ft, const unsigned char *base, size_t n, unsigned char *dec,
                     wd_lossy_stats *st, wd_err *err);
/* Reads n bytes at offset off of the base tensor's file (a base file, or a
 * parent delta's rebuilt output); 0 or -1 with err set. */
typedef int (*wd_base_read_fn)(void *ctx, unsigned char *buf, size_t n, uint64_t off, wd_err *err);
/* `auto`: the cheapest codec and setting for tensor t (read from ft_fd,
 * its base at base_off through read_base) with relative error <= max_error;
 * WD_CODEC_LOSSLESS when none qualifies or the tensor is not eligible. */
int wd_lossy_auto(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base, void *base_ctx,
                  uint64_t base_off, double max_error, int level, uint32_t target_bs, wd_codec *codec,
                  wd_lossy_params *out, wd_err *err);
/* A fixed lossy strategy's codec for tensor t (*codec, *lp in and out):
 * bitdelta and axis1 become ternary / ternary-axis1 where the zero-aware
 * code is worth its bits; then the rule every lossy codec keeps: a tensor
 * whose relative error (as `wdelta eval` computes it) would exceed 1 (worse
 * than the base alone) falls back to int4, or lossless.  why (whylen bytes):
 * "" or the reason for a change, for the manifest and `inspect`.  picked
 * (may be NULL): the measured stats of the code taken (zeroed where it is
 * lossless). */
int wd_lossy_choose(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                    void *base_ctx, uint64_t base_off, uint32_t target_bs, wd_codec *codec,
                    wd_lossy_params *lp, char *why, size_t whylen, wd_lossy_stats *picked, wd_err *err);

/* lowrank (lossy_lowrank.c): the rank test on rows spread over tensor t;
 * *bs_out the block size its low-rank extent takes (larger than target_bs
 * where the test passes: see lr_block_bytes).  lowrank-exact: *stored and
 * *plain estimate its bytes and the plain lossless codec's from a trial on
 * a sample of rows (*stored = 1, *plain = 0 where the test fails);
 * lowrank: every block coded, *max_rank the largest rank a block took. */
/* lowrank's rank test alone (the one wd_lowrank_measure starts with): on
 * rows spread over tensor t, *rank the rank of its delta, 0 where it is not
 * low-rank; *bs_out the block size its lowrank extent would take. */
int wd_lowrank_test(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base, void *base_ctx,
                    uint64_t base_off, uint32_t target_bs, unsigned *rank, uint32_t *bs_out, wd_err *err);
/* A fixed lossy strategy's code (*codec, *lp, its stats cur as measured by
 * wd_lossy_choose) against lowrank on a tensor that passed the rank test:
 * lowrank coded on blocks of lbs; where it dominates (stored bytes and
 * relative error both no larger) or its extra bytes buy at least a 4x cut
 * of the squared error per extra bit per element, *codec and *lp become
 * lowrank's, *rank the largest rank of a block, and why says so (prefixing
 * what it held). */
int wd_lossy_lowrank_dominates(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                               void *base_ctx, uint64_t base_off, uint32_t lbs, const wd_lossy_stats *cur,
                               wd_codec *codec, wd_lossy_params *lp, unsigned *rank, char *why, size_t whylen,
                               wd_err *err);
int wd_lowrank_measure(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base, void *base_ctx,
                       uint64_t base_off, wd_codec codec, int level, uint32_t target_bs, uint64_t *stored,
                       uint64_t *plain, unsigned *max_rank, uint32_t *bs_out, wd_err *err);

/* zstd through the scratch's contexts */
int wd_zstd_compress(wd_scratch *s, void *dst, size_t cap, const void *src, size_t n, int level,
                     size_t *out, wd_err *err);
int wd_zstd_decompress(wd_scratch *s, void *dst, size_t cap, const void *src, size_t n,
                       size_t *out, wd_err *err);
/* Bytes of the fixed header of a block of codec c (zstd or lossless): the
 * least a block costs besides its data. */
size_t wd_codec_header_len(wd_codec c, wd_dtype dt);
/* The element width the lossless codec works in for a dtype. */
unsigned wd_codec_width(wd_dtype dt);

/* ---- the open delta (delta_read.c) */
typedef struct wd_ext_priv {
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
} wd_ext_priv;

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
    pthread_mutex_t pool_lock;
    wd_scratch **pool;
    size_t npool, cap_pool;
    /* chains (chain.c): the base bytes are another delta's rebuilt output,
     * read through `parent_cache` (NULL: decoded directly).  Then each
     * extent's base_fd_index is the parent's output file and base_offset the
     * base tensor's offset in it. */
    wd_delta *parent;          /* not owned */
    uint64_t parent_key;
    wd_cache *parent_cache;
    const volatile sig_atomic_t *stop; /* wd_delta_set_stop: polled by wd_apply */
};

/* v1_view.c */
int wd_v1view_set_base(wd_delta *d, const wd_model *base, wd_err *err);
int wd_v1view_decode(wd_delta *d, uint32_t block, unsigned char *out, wd_err *err);
void wd_v1view_free(wd_delta *d);

/* wd_delta_decode_block with the caller's scratch (the block cache shares
 * one small pool among all deltas, so memory follows the decoding threads,
 * not the number of open deltas). */
int wd_delta_decode_with(wd_delta *d, uint32_t block, void *out, wd_scratch *s, wd_err *err);

wd_scratch *wd_delta_scratch_get(wd_delta *d);
void wd_delta_scratch_put(wd_delta *d, wd_scratch *s);

/* chain.c: read n base bytes of extent e, at base_offset + rel, from the
 * base model's file or from the parent delta's output. */
int wd_delta_read_base(wd_delta *d, const wd_ext_priv *e, unsigned char *buf, size_t n, uint64_t rel, wd_err *err);
/* The same range without a copy where it can: sets *base to the bytes, in
 * the parent's pinned cache entry (*pin set: give it to wd_delta_base_done)
 * or else in scratch slot 1 of s (read as wd_delta_read_base does). */
int wd_delta_base_view(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, size_t n, uint64_t rel,
                       const unsigned char **base, wd_cache_pin **pin, wd_err *err);
void wd_delta_base_done(wd_delta *d, wd_cache_pin *pin);

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
