/* lossy.h - shared pieces of the lossy block codecs (int4, sparse,
 * bitdelta, axis1); internal to core/.  See core/FORMAT.md, "Lossy codecs".
 *
 * Every lossy block holds whole rows of a 2-D (or higher) floating tensor
 * (BF16, F16 or F32) and decodes alone, given the same rows of the base:
 *   rebuilt = round_to_dtype(float32(base) + D)   (round to nearest even)
 * where D is the float32 delta the codec decodes, except at "patched"
 * elements (int4 outliers, sparse's kept values), which are rebuilt exactly
 * from a key difference as in the lossless codec. */
#ifndef WDELTA_LOSSY_H
#define WDELTA_LOSSY_H

#include "codec/codec.h" /* wd_scratch, zstd, wd_codec_name, util */
#include <string.h>

#define WD_LOSSY_TAG 'L'
#define WD_LOSSY_HDR 24

/* ---- a growing output buffer (owned by a scratch slot) */
typedef struct lbuf {
    unsigned char *p;
    size_t len, cap;
    int oom;
} lbuf;
void lb_put(lbuf *b, const void *p, size_t n);
void lb_u32(lbuf *b, uint32_t v);
void lb_u16(lbuf *b, uint16_t v);
void lb_varint(lbuf *b, uint64_t v);
/* Append a section: u8 mode (0 raw, 1 zstd), u32 raw length, u32 stored
 * length, then the bytes; zstd is used only when it is smaller. */
int lb_section(lbuf *b, wd_scratch *s, const void *raw, size_t n, int level, wd_err *err);

/* ---- reading a stored block, every length checked */
typedef struct lrd {
    const unsigned char *p;
    size_t len, at;
} lrd;
int lr_u32(lrd *r, uint32_t *v, wd_err *err);
/* Read a section into dst of exactly `want` bytes (want known to the caller),
 * or, with want == SIZE_MAX, into a scratch buffer of its recorded size:
 * *out and *out_len are set.  slot: scratch slot for decompression. */
int lr_section(lrd *r, wd_scratch *s, int slot, size_t want, size_t maxlen,
               const unsigned char **out, size_t *out_len, wd_err *err);

/* ---- the common block header (WD_LOSSY_HDR bytes):
 *   u8 'L', u8 codec, u8 element width, u8 dtype (1 BF16, 2 F16, 3 F32),
 *   u32 cols, u32 rows, u32 p1, u32 p2, u32 0 */
typedef struct lhdr {
    unsigned codec, width, kind;
    uint32_t cols, rows, p1, p2;
    const char *name; /* the codec's, for messages (set by lh_get; not stored) */
} lhdr;
unsigned lh_kind(wd_dtype dt);
void lh_put(unsigned char *p, const lhdr *h);
int lh_get(const unsigned char *src, size_t slen, wd_codec codec, const char *name, wd_dtype dt, size_t n,
           lhdr *h, wd_err *err);

/* hot loops get an AVX2 clone next to the baseline one (chosen at load time) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WD_VEC __attribute__((optimize("tree-vectorize"), target_clones("avx2", "default")))
#else
#define WD_VEC __attribute__((optimize("tree-vectorize")))
#endif

/* ---- float helpers */
/* element i of a little-endian array of 2- or 4-byte words (w = 2 or 4) */
static inline uint32_t lf_loadw(const unsigned char *p, size_t i, unsigned w)
{
    if (w == 2) return (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
    return wd_get_u32(p + 4 * i);
}
static inline void lf_storew(unsigned char *p, size_t i, unsigned w, uint32_t v)
{
    if (w == 2) {
        p[2 * i] = (unsigned char)v;
        p[2 * i + 1] = (unsigned char)(v >> 8);
    } else {
        wd_put_u32(p + 4 * i, v);
    }
}
/* delta ft - base in float32 for n elements */
void lf_delta(const unsigned char *ft, const unsigned char *base, wd_dtype dt, size_t n, float *d);
/* out[i] = round(float(base[i]) + d[i]) for n elements */
void lf_apply(unsigned char *out, const unsigned char *base, wd_dtype dt, const float *d, size_t n);

/* Scales are FP16 times 2^-E, E a per-block exponent (0..100) chosen so
 * the largest scale is near 2^14: FP16 keeps 11 significant bits whatever
 * the size of the delta. */
unsigned ls_exponent(const float *v, size_t n);
static inline float ls_pow2m(unsigned e) /* 2^-e, exact, e <= 126 */
{
    uint32_t u = (uint32_t)(127 - e) << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t ls_to_half(float v, unsigned e);   /* half of v * 2^e, RNE */
static inline float ls_scale(uint16_t h, unsigned e)
{
    return wd_half_to_float(h) * ls_pow2m(e);
}

/* ---- the 1-bit codecs' scales (lossy_sign.c, lossy_ternary.c): a row
 * scale r_i per row, for the axis forms a column scale c_j per column too,
 * each stored as FP16 with its block exponent (p1 for r, p2 for c) */
typedef struct ls_bufs {
    float *d;      /* |delta|, ne elements (the caller fills it) */
    float *r, *c;  /* row scales (rows), column scales (cols + 1) */
    uint16_t *rh;  /* r as FP16 (rows) */
    uint16_t *ch;  /* c as FP16 (cols + 1) */
} ls_bufs;
/* the buffers above from scratch slots LS_A..LS_E; -1 when out of memory */
int ls_bufs_get(wd_scratch *s, size_t ne, size_t rows, size_t cols, ls_bufs *b);
/* c scaled to a largest value of 1, rounded to FP16 into ch, and c set to
 * the rounded values (what the decoder sees); returns c's exponent */
unsigned ls_round_cols(float *c, uint16_t *ch, size_t cols);
/* The start of a 1-bit block: rounds b->r to FP16 (b->rh), then writes the
 * header (p1 = r's exponent, p2 = ec), the row scales and, when axis, the
 * column scales b->ch.  -1 with err set on failure. */
int ls_put_scales(lbuf *out, wd_scratch *s, wd_codec codec, wd_dtype dt, int level, const ls_bufs *b, size_t rows,
                  size_t cols, int axis, unsigned ec, wd_err *err);
/* The decoder's side: checks h's exponents and reads the row scales (slot
 * LS_A) and, when axis, the column scales (slot LS_B, else *ch = NULL) as
 * raw little-endian FP16.  -1 with err set (prefixed by h->name). */
int ls_get_scales(lrd *r, wd_scratch *s, const lhdr *h, int axis, const unsigned char **rh,
                  const unsigned char **ch, wd_err *err);
/* element i of raw little-endian FP16 scales with exponent e */
static inline float ls_scale_at(const unsigned char *h, size_t i, unsigned e)
{
    return ls_scale((uint16_t)(h[2 * i] | h[2 * i + 1] << 8), e);
}

/* ---- exact patches: positions (varint gaps) and zigzag key differences */
/* Indices of the k largest |d| (ties by index), ascending, into idx. */
int wd_topk(const float *d, size_t n, size_t k, uint32_t *idx, wd_scratch *s, wd_err *err);
int patches_put(lbuf *b, wd_scratch *s, int level, const uint32_t *idx, size_t k,
                const unsigned char *ft, const unsigned char *base, unsigned w, wd_err *err);
/* Apply k patches (read from r) to out, given the base. */
int patches_apply(lrd *r, wd_scratch *s, size_t k, unsigned char *out, const unsigned char *base,
                  unsigned w, size_t n, wd_err *err);

/* scratch slots the lossy codecs use (codec.h names them all) */
#define LS_OUT WD_SLOT_OUT
#define LS_A WD_SLOT_LOSSY_A
#define LS_B WD_SLOT_LOSSY_B
#define LS_C WD_SLOT_LOSSY_C
#define LS_D WD_SLOT_LOSSY_D
#define LS_E WD_SLOT_LOSSY_E
#define LS_F WD_SLOT_LOSSY_F
#define LS_G WD_SLOT_LOSSY_G
#define LS_H WD_SLOT_LOSSY_H

/* per-codec entry points (lossy_int4.c, lossy_sparse.c, lossy_sign.c), of
 * the table's rows_encode / rows_decode shape (codec.h): rank_out only
 * lowrank sets, codec only the files coding two codecs read */
int wd_int4_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p, const unsigned char *ft,
                   const unsigned char *base, size_t n, lbuf *out, unsigned *rank_out, wd_err *err);
int wd_int4_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r, const unsigned char *base,
                   unsigned char *out, size_t n, wd_err *err);
int wd_sparse_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p, const unsigned char *ft,
                     const unsigned char *base, size_t n, lbuf *out, unsigned *rank_out, wd_err *err);
int wd_sparse_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r, const unsigned char *base,
                     unsigned char *out, size_t n, wd_err *err);
int wd_sign_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                   const unsigned char *ft, const unsigned char *base, size_t n, lbuf *out, unsigned *rank_out, wd_err *err);
int wd_sign_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r,
                   const unsigned char *base, unsigned char *out, size_t n, wd_err *err);

/* lossy_ternary.c: ternary and ternary-axis1 (zero-aware 1-bit tier) */
int wd_ternary_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                      const unsigned char *ft, const unsigned char *base, size_t n, lbuf *out, unsigned *rank_out, wd_err *err);
int wd_ternary_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r,
                      const unsigned char *base, unsigned char *out, size_t n, wd_err *err);

/* lossy_lowrank.c: lowrank and lowrank-exact.  rank_out (may be NULL): the
 * rank the block was coded with. */
int wd_lowrank_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                      const unsigned char *ft, const unsigned char *base, size_t n, lbuf *out,
                      unsigned *rank_out, wd_err *err);
int wd_lowrank_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r,
                      const unsigned char *base, unsigned char *out, size_t n, wd_err *err);
/* Truncated SVD of d (m x n) by randomized subspace iteration: kout <= kmax
 * components, sv descending, uf (m x kmax, row-major, columns scaled by
 * sqrt(s)), vf (kout x n, rows scaled by sqrt(s)); d ~ uf . vf. */
int wd_lowrank_fit(const float *d, size_t m, size_t n, unsigned kmax, double *uf, double *vf, double *sv,
                   unsigned *kout, wd_err *err);
unsigned wd_lowrank_gap_rank(const double *sv, unsigned k);
/* The rank test of an m x n block of rows (ft and base, dtype dt): the rank
 * r <= rmax of its delta when the delta is a rank-r matrix plus the dtype's
 * rounding noise (FORMAT.md, "lowrank"), else 0. */
unsigned wd_lowrank_detect(const unsigned char *ft, const unsigned char *base, wd_dtype dt, size_t m, size_t n,
                           unsigned rmax, unsigned *partial);
/* Append lowrank-exact's sparse residual ('S', FORMAT.md) of ft against the
 * prediction pred, ne elements of dt (BF16, F16 or F32); *misses (may be
 * NULL): the elements it lists. */
int wd_lowrank_sparse_put(lbuf *out, wd_scratch *s, int level, wd_dtype dt, const unsigned char *ft,
                          const unsigned char *pred, size_t ne, size_t *misses, wd_err *err);
/* The prediction in its documented float32 order (FORMAT.md); acc: cols floats. */
void wd_lowrank_predict(unsigned char *out, const unsigned char *base, wd_dtype dt, const float *u,
                        const float *v, size_t rows, size_t cols, unsigned rank, float *acc);

#endif
