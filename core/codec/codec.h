/* codec.h - what the codec layer (core/codec/: scratch, the lossless
 * codec, the lossy codecs) exports to the layers above; not installed. */
#ifndef WDELTA_CODEC_H
#define WDELTA_CODEC_H

#include "util/util.h" /* wd_get_u32/wd_put_u32, wd_pread_full, float conversions */

/* ---- codecs (codec.c).  A scratch holds per-thread buffers and zstd
 * contexts; obtain one per thread and reuse it. */
typedef struct wd_scratch wd_scratch;
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

/* Reads n bytes at offset off of the base tensor's file (a base file, or a
 * parent delta's rebuilt output); 0 or -1 with err set. */
typedef int (*wd_base_read_fn)(void *ctx, unsigned char *buf, size_t n, uint64_t off, wd_err *err);
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


#endif
