/* codec.h - what the codec layer (core/codec/: scratch, the lossless
 * codec, the lossy codecs) exports to the layers above; not installed. */
#ifndef WDELTA_CODEC_H
#define WDELTA_CODEC_H

#include "util/util.h" /* wd_get_u32/wd_put_u32, wd_pread_full, float conversions */
#include <pthread.h> /* the scratch pool's lock */

/* ---- scratch (scratch.c): per-thread buffers and zstd contexts; obtain
 * one per thread (or from a pool) and reuse it. */
typedef struct wd_scratch wd_scratch;
wd_scratch *wd_scratch_new(void);
void wd_scratch_free(wd_scratch *s);
/* Bytes held by the scratch's buffers (what keeping it costs). */
size_t wd_scratch_bytes(const wd_scratch *s);
/* The scratch's buffers, by who holds them while a block is coded.  A
 * caller of the codecs holds STORED, BASE and PRED across a call; the
 * lossless codec uses PLANES, OUT and CODES; the lossy codecs (lossy.h
 * names them LS_*) use OUT and LOSSY_A..H, and call the lossless codec
 * only before taking their own (lowrank-exact's residual). */
typedef enum wd_slot {
    WD_SLOT_STORED = 0, /* a block's stored bytes (read from the file) */
    WD_SLOT_BASE = 1,   /* a block's base bytes (delta/base.c) */
    WD_SLOT_PRED = 2,   /* a predicted (converted) base (delta/xdtype.c), create's encoded copy */
    WD_SLOT_PLANES = 3, /* lossless: byte planes */
    WD_SLOT_OUT = 4,    /* an encoded block (lossless and lossy) */
    WD_SLOT_CODES = 5,  /* lossless: per-element codes */
    WD_SLOT_LOSSY_A = 5,
    WD_SLOT_LOSSY_B, WD_SLOT_LOSSY_C, WD_SLOT_LOSSY_D, WD_SLOT_LOSSY_E, WD_SLOT_LOSSY_F, WD_SLOT_LOSSY_G,
    WD_SLOT_LOSSY_H,
    WD_NSLOTS
} wd_slot;
/* Buffer `slot` of at least n bytes (owned by the scratch; NULL: no memory). */
unsigned char *wd_scratch_buf(wd_scratch *s, wd_slot slot, size_t n);
/* The scratch's zstd contexts, made on first use (NULL with err set). */
struct ZSTD_CCtx_s *wd_scratch_cctx(wd_scratch *s, wd_err *err);
struct ZSTD_DCtx_s *wd_scratch_dctx(wd_scratch *s, wd_err *err);

/* A few idle scratches for reuse, shared by threads: get takes one (or
 * makes one: NULL only without memory), put keeps at most `keep` of them
 * and frees the rest. */
typedef struct wd_scratch_pool {
    pthread_mutex_t lock;
    wd_scratch **items;
    size_t n, cap, keep;
} wd_scratch_pool;
void wd_scratch_pool_init(wd_scratch_pool *p, size_t keep);
void wd_scratch_pool_destroy(wd_scratch_pool *p);
wd_scratch *wd_scratch_pool_get(wd_scratch_pool *p);
void wd_scratch_pool_put(wd_scratch_pool *p, wd_scratch *s);

/* ---- the codec table (codec.c): every codec by id, its name, what it
 * needs, and its coder.  Callers go through wd_encode_block and
 * wd_decode_block (or look a codec up); no caller switches on codecs. */
#define WD_CF_LOSSY 1u    /* drops information (wd_codec_is_lossy) */
#define WD_CF_ROWBLOCK 2u /* blocks of whole rows, the lossy block header (lossy.h) */
#define WD_CF_BASE 4u     /* reads the base tensor */
#define WD_CF_NAMED 8u    /* may be asked for by name (--codec, the manifest) */
struct lbuf;
struct lrd;
struct lhdr;
typedef struct wd_codec_desc {
    wd_codec id;
    const char *name;
    unsigned flags;
    /* whole blocks (lossless, zstd): as wd_encode_block / wd_decode_block */
    int (*encode)(wd_scratch *s, wd_codec codec, wd_dtype dt, int level, const unsigned char *ft,
                  const unsigned char *base, size_t n, const unsigned char **out, size_t *out_len, wd_err *err);
    int (*decode)(wd_scratch *s, wd_codec codec, wd_dtype dt, const unsigned char *stored, size_t stored_len,
                  const unsigned char *base, unsigned char *out, size_t n, wd_err *err);
    /* row blocks (WD_CF_ROWBLOCK): the part after the common header, which
     * codec.c writes and checks (lossy.h) */
    int (*rows_encode)(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                       const unsigned char *ft, const unsigned char *base, size_t n, struct lbuf *out,
                       unsigned *rank_out, wd_err *err);
    int (*rows_decode)(wd_scratch *s, wd_codec codec, wd_dtype dt, const struct lhdr *h, struct lrd *r,
                       const unsigned char *base, unsigned char *out, size_t n, wd_err *err);
} wd_codec_desc;
/* The table's entry for c; NULL for an id that names no codec. */
const wd_codec_desc *wd_codec_get(wd_codec c);

/* Encode n bytes of `ft` (with `base` of the same n bytes for
 * WD_CODEC_LOSSLESS, NULL for WD_CODEC_ZSTD).  On success *out points into
 * the scratch (valid until its next use) and *out_len is set. */
int wd_encode_block(wd_scratch *s, wd_codec codec, wd_dtype dt, int level,
                    const unsigned char *ft, const unsigned char *base, size_t n,
                    const unsigned char **out, size_t *out_len, wd_err *err);
/* Decode stored bytes into out (n bytes), any codec that stores blocks. */
int wd_decode_block(wd_scratch *s, wd_codec codec, wd_dtype dt,
                    const unsigned char *stored, size_t stored_len,
                    const unsigned char *base, unsigned char *out, size_t n,
                    wd_err *err);
int wd_codec_from_name(const char *name, wd_codec *out);
/* 1 if the codec reads the base tensor (lossless and the lossy codecs) */
int wd_codec_needs_base(wd_codec c);

/* ---- the lossless and zstd codecs (lossless.c), as the table's entries */
int wd_lossless_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, int level, const unsigned char *ft,
                       const unsigned char *base, size_t n, const unsigned char **out, size_t *out_len,
                       wd_err *err);
int wd_lossless_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const unsigned char *stored,
                       size_t stored_len, const unsigned char *base, unsigned char *out, size_t n, wd_err *err);

/* ---- row-block (lossy) codecs through the table; the block holds whole
 * rows of p->cols.  rank_out (may be NULL): lowrank's rank. */
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

/* Reads n bytes at offset off of the base tensor's file (a base file, or a
 * parent delta's rebuilt output); 0 or -1 with err set. */
typedef int (*wd_base_read_fn)(void *ctx, unsigned char *buf, size_t n, uint64_t off, wd_err *err);
/* lowrank (lossy_lowrank.c): the rank test on rows spread over tensor t;
 * *bs_out the block size its low-rank extent takes (larger than target_bs
 * where the test passes: see lr_block_bytes).  lowrank-exact: *stored and
 * *plain estimate its bytes and the plain lossless codec's from a trial on
 * a sample of rows (*stored = 1, *plain = 0 where the test fails);
 * lowrank: every block coded, *max_rank the largest rank a block took. */
/* sc: the calling thread's scratch, kept from tensor to tensor (NULL: one
 * of their own); they hold its slots STORED, BASE and PRED.
 * base_file: 1 where read_base reads a file (any range costs its bytes: the
 * sampled rows alone are read), 0 where it decodes (a parent delta's
 * output: whole blocks holding a sampled row, each decoded once). */
/* lowrank's rank test alone (the one wd_lowrank_measure starts with): on
 * rows spread over tensor t, *rank the rank of its delta, 0 where it is not
 * low-rank; *bs_out the block size its lowrank extent would take. */
int wd_lowrank_test(wd_scratch *sc, const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                    void *base_ctx, int base_file, uint64_t base_off, uint32_t target_bs, unsigned *rank,
                    uint32_t *bs_out, wd_err *err);
int wd_lowrank_measure(wd_scratch *sc, const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                       void *base_ctx, int base_file, uint64_t base_off, wd_codec codec, int level,
                       uint32_t target_bs, uint64_t *stored, uint64_t *plain, unsigned *max_rank, uint32_t *bs_out,
                       wd_err *err);

/* zstd through the scratch's contexts (scratch.c) */
int wd_zstd_compress(wd_scratch *s, void *dst, size_t cap, const void *src, size_t n, int level,
                     size_t *out, wd_err *err);
int wd_zstd_decompress(wd_scratch *s, void *dst, size_t cap, const void *src, size_t n,
                       size_t *out, wd_err *err);
/* Bytes of the fixed header of a block of codec c (zstd or lossless): the
 * least a block costs besides its data. */
size_t wd_codec_header_len(wd_codec c, wd_dtype dt);
/* The element width the lossless codec works in for a dtype. */
unsigned wd_codec_width(wd_dtype dt);


#endif
