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

/* 1 if this build and CPU run the AVX-512 gather (AVX-512 F, BW, VBMI and
 * VBMI2, as on Intel Ice Lake and AMD Zen 4 and later). */
int wd_lossless_simd_available(void);

/* The gather of one decoded block: out gets its ne elements of w bytes
 * (w = wd_codec_width(dt)), rebuilt from the base in mode 1; pos[l][c], the
 * next position of lane l in context c, advances by the base's count of
 * such elements, which the caller compares with the block's counts.  k
 * contexts from ctx_lo (k = 1: none); `present` lists the contexts with
 * codes in the block (kp of them): elements of any other context are
 * skipped, and show up as a count mismatch.  planes holds the w planes of
 * ne bytes, readable for WD_LL_PLANES_PAD(ne) bytes more.  Returns 0, or -1
 * (nothing done) where the CPU or build lacks the instructions. */
int wd_lossless_gather_simd(wd_dtype dt, unsigned w, int mode, unsigned ctx_lo, unsigned k,
                            const uint8_t *present, unsigned kp, unsigned char *out,
                            const unsigned char *base, size_t ne,
                            uint32_t pos[WD_LL_LANES][WD_LL_MAX_CTX], const unsigned char *planes);

/* Which gather wd_lossless_decode_kernel uses: the best this CPU has (what
 * wd_lossless_decode does), the scalar one, or AVX-512 (an error where the
 * CPU lacks it).  Either gives the same bytes and the same errors. */
typedef enum wd_ll_kernel { WD_LL_AUTO = 0, WD_LL_SCALAR = 1, WD_LL_SIMD = 2 } wd_ll_kernel;
int wd_lossless_decode_kernel(wd_scratch *s, wd_codec codec, wd_dtype dt, const unsigned char *stored,
                              size_t stored_len, const unsigned char *base, unsigned char *out, size_t n,
                              wd_ll_kernel kernel, wd_err *err);

#endif
