/* lossless_simd.h - the lossless codec's decode gather in AVX-512
 * (lossless_avx512.c), chosen at run time by lossless.c; not installed.
 * The block layout and the scalar gather it matches are in lossless.c. */
#ifndef WDELTA_LOSSLESS_SIMD_H
#define WDELTA_LOSSLESS_SIMD_H

#include "codec/codec.h"

#define WD_LL_LANES 4
#define WD_LL_MAX_CTX 16

/* Room the byte planes need past n bytes for the vector gather, which
 * loads 64 bytes at each position, and a position runs past its region by
 * at most a lane's elements where the base is not the block's:
 * ne / 4 + 1 + 64, rounded up. */
#define WD_LL_PLANES_PAD(ne) ((ne) / 4 + 128)

/* 1 if this build and CPU run the AVX-512 gather (AVX-512 F, BW, VL, DQ,
 * VBMI and VBMI2, as on Intel Ice Lake and AMD Zen 4 and later). */
int wd_lossless_simd_available(void);

/* wd_hash64 of the output and of the stored bytes, absorbed in the
 * vector gather while it runs (util/hash.h): the lanes come from
 * wd_hash64_start, the gather absorbs the first out_done bytes of the
 * output and in_done bytes of in (multiples of 32), wd_hash64_end takes
 * the rest.  Both hashes are latency-bound chains that the out-of-order
 * core runs beside the gather's throughput-bound work. */
typedef struct wd_ll_hash {
    uint64_t out_lanes[4];
    size_t out_done;
    const unsigned char *in; /* the stored bytes */
    size_t in_len;
    uint64_t in_lanes[4];
    size_t in_done;
} wd_ll_hash;

/* The gather of one decoded block: out gets its ne elements of w bytes
 * (w = wd_codec_width(dt)), rebuilt from the base in mode 1; pos[l][c], the
 * next position of lane l in context c, advances by the base's count of
 * such elements, which the caller compares with the block's counts.  k
 * contexts from ctx_lo (k = 1: none); `present` lists the contexts with
 * codes in the block (kp of them): elements of any other context are
 * skipped, and show up as a count mismatch.  planes holds the w planes of
 * ne bytes, readable for WD_LL_PLANES_PAD(ne) bytes more.  With h (not
 * NULL), its hashes absorb as above.  Returns 0, or -1 (nothing done) where
 * the CPU or build lacks the instructions. */
int wd_lossless_gather_simd(wd_dtype dt, unsigned w, int mode, unsigned ctx_lo, unsigned k,
                            const uint8_t *present, unsigned kp, unsigned char *out,
                            const unsigned char *base, size_t ne,
                            uint32_t pos[WD_LL_LANES][WD_LL_MAX_CTX], const unsigned char *planes,
                            wd_ll_hash *h);

/* Which gather wd_lossless_decode_kernel uses: the best this CPU has (what
 * wd_lossless_decode does), the scalar one, or AVX-512 (an error where the
 * CPU lacks it).  Either gives the same bytes and the same errors.  With
 * hashes (not NULL), a decoded block's wd_hash64(out, n, 0) goes to
 * hashes[0] and that of its stored bytes, wd_hash64(stored, stored_len, 0),
 * to hashes[1] (the vector gather computes both as it writes); after an
 * error they are unset. */
typedef enum wd_ll_kernel { WD_LL_AUTO = 0, WD_LL_SCALAR = 1, WD_LL_SIMD = 2 } wd_ll_kernel;
int wd_lossless_decode_kernel(wd_scratch *s, wd_codec codec, wd_dtype dt, const unsigned char *stored,
                              size_t stored_len, const unsigned char *base, unsigned char *out, size_t n,
                              wd_ll_kernel kernel, uint64_t hashes[2], wd_err *err);

#endif
