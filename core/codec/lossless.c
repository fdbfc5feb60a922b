/* lossless.c - the block codecs of .wdelta v2 that keep every bit: lossless
 * delta and plain zstd (registered in codec.c's table).
 *
 * Both work on one block (about 1 MiB of output) at a time, so that any
 * block decodes alone.  Elements of W bytes are split into W byte planes
 * ("plane p" holds byte p of every element), which zstd's entropy coder
 * compresses far better than interleaved bytes.
 *
 * Lossless delta (mode 1): for floats, every value is mapped to an integer
 * key that is monotone in the value (sign-magnitude -> offset binary), the
 * difference key(ft) - key(base) is taken modulo 2^(8W) and zigzag-coded, so
 * small moves in either direction become small numbers.  Integers take the
 * plain wrapping difference.
 *
 * Context modelling: the size of a fine-tuning update measured in units of
 * the base value's last place grows as the base value's exponent shrinks, so
 * the zigzag codes are grouped by the base element's exponent (K contexts,
 * a window of K = 8 consecutive exponents chosen per block; outside it
 * they clamp to the ends), and each (plane, context) region is its own zstd frame
 * with its own Huffman table.  On pairB this takes the zero-order entropy
 * from 6.84 to 6.15 bits per bf16 weight.  The decoder knows the base, so it
 * recomputes each element's context and needs no side information beyond
 * per-context counts.
 *
 * To keep the decoder's gather loop fast, elements are dealt round-robin to
 * L = 4 lanes, each with its own write position per context: four
 * independent dependency chains instead of one.  Where the CPU has AVX-512
 * VBMI2 the gather runs in vectors instead (lossless_avx512.c: byte expands
 * per lane and context, about 3x the scalar gather's speed); the scalar
 * gather stays for other CPUs and gives the exact error of a wrong base.
 *
 * Stored block layout (little-endian):
 *   u8 tag 'W', u8 mode (0 plain, 1 delta), u8 width W, u8 contexts K,
 *   u8 lanes L, u8 0, u16 ctx_lo,
 *   u32 count[L][K], u32 frame_size[W][K], then the frames in [p][c] order.
 * Plane p's region for context c lane l starts at
 *   sum_{c'<c} total(c') + sum_{l'<l} count[l'][c].
 */
#include "codec/codec.h"
#include "codec/lossless_simd.h"
#include "util/hash.h"
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the codecs assume a little-endian host"
#endif

#define LANES 4
#define MAX_CTX 16
#define FLOAT_CTX 8
#define HDR_FIXED 8

unsigned wd_codec_width(wd_dtype dt)
{
    unsigned w = wd_dtype_size(dt);
    return (w == 2 || w == 4 || w == 8) ? w : 1;
}

/* Exponent field of a float element, used as the context. */
typedef struct ctxspec {
    int shift;
    uint32_t mask;  /* 0: no contexts */
} ctxspec;

static ctxspec ctx_for(wd_dtype dt)
{
    switch (dt) {
    case WD_BF16: return (ctxspec){7, 0xff};
    case WD_F16: return (ctxspec){10, 0x1f};
    case WD_F32: return (ctxspec){23, 0xff};
    case WD_F64: return (ctxspec){52, 0x7ff};
    default: return (ctxspec){0, 0};
    }
}

size_t wd_codec_header_len(wd_codec c, wd_dtype dt)
{
    int mode = c == WD_CODEC_LOSSLESS;
    unsigned w = wd_codec_width(dt), k = mode && ctx_for(dt).mask ? FLOAT_CTX : 1;
    return HDR_FIXED + 4u * (LANES * k + w * k);
}

/* ---- per-width kernels, generated for uint8/16/32/64 ---------------- */
#define KEY(T, x, S) ((T)((x) ^ ((T)(-(T)((x) >> (sizeof(T) * 8 - 1))) | (S))))
#define UNKEY(T, k, S) ((T)((k) ^ ((S) | (T)(-(T)(((k) >> (sizeof(T) * 8 - 1)) ^ 1)))))
#define ZIG(T, d) ((T)(((T)((d) << 1)) ^ (T)(-(T)((d) >> (sizeof(T) * 8 - 1)))))
#define UNZIG(T, z) ((T)(((z) >> 1) ^ (T)(-(T)((z) & 1))))

#define DEFINE_KERNELS(W, T)                                                          \
static inline T load_##W(const unsigned char *p, size_t i)                            \
{                                                                                     \
    T v;                                                                              \
    memcpy(&v, p + i * W, W);                                                         \
    return v;                                                                         \
}                                                                                     \
static inline void store_##W(unsigned char *p, size_t i, T v)                         \
{                                                                                     \
    memcpy(p + i * W, &v, W);                                                         \
}                                                                                     \
/* code of element i; ctx written to *c */                                            \
static inline T code_##W(const unsigned char *ft, const unsigned char *base, size_t i,\
                         int mode, int is_float, const uint8_t *map, ctxspec cs,      \
                         unsigned *c)                                                 \
{                                                                                     \
    const T S = (T)((T)1 << (W * 8 - 1));                                             \
    T f = load_##W(ft, i);                                                            \
    if (mode == 0) { *c = 0; return f; }                                              \
    T b = load_##W(base, i);                                                          \
    *c = cs.mask ? map[(uint64_t)b >> cs.shift & cs.mask] : 0;                        \
    T d = is_float ? (T)(KEY(T, f, S) - KEY(T, b, S)) : (T)(f - b);                   \
    return ZIG(T, d);                                                                 \
}                                                                                     \
static inline __attribute__((always_inline)) void count_##W(const unsigned char *ft, const unsigned char *base, size_t n,   \
                      int mode, int is_float, const uint8_t *map, ctxspec cs,         \
                      uint32_t cnt[LANES][MAX_CTX])                                   \
{                                                                                     \
    (void)ft; (void)is_float;                                                         \
    size_t i = 0;                                                                     \
    if (mode && cs.mask) {                                                            \
        for (; i + LANES <= n; i += LANES) {                                          \
            cnt[0][map[(uint64_t)load_##W(base, i) >> cs.shift & cs.mask]]++;         \
            cnt[1][map[(uint64_t)load_##W(base, i + 1) >> cs.shift & cs.mask]]++;     \
            cnt[2][map[(uint64_t)load_##W(base, i + 2) >> cs.shift & cs.mask]]++;     \
            cnt[3][map[(uint64_t)load_##W(base, i + 3) >> cs.shift & cs.mask]]++;     \
        }                                                                             \
    }                                                                                 \
    for (; i < n; i++) {                                                              \
        unsigned c = 0;                                                               \
        if (mode && cs.mask) c = map[(uint64_t)load_##W(base, i) >> cs.shift & cs.mask]; \
        cnt[i % LANES][c]++;                                                          \
    }                                                                                 \
}                                                                                     \
static inline __attribute__((always_inline)) void scatter_##W(const unsigned char *ft, const unsigned char *base, size_t n, \
                        int mode, int is_float, const uint8_t *map, ctxspec cs,       \
                        uint32_t pos[LANES][MAX_CTX], unsigned char *planes)          \
{                                                                                     \
    for (size_t i = 0; i < n; i++) {                                                  \
        unsigned c;                                                                   \
        T z = code_##W(ft, base, i, mode, is_float, map, cs, &c);                     \
        uint32_t j = pos[i % LANES][c]++;                                             \
        for (int p = 0; p < W; p++) planes[(size_t)p * n + j] = (unsigned char)((uint64_t)z >> (8 * p)); \
    }                                                                                 \
}                                                                                     \
static inline T gather1_##W(const unsigned char *planes, size_t n, uint32_t j)        \
{                                                                                     \
    T z = 0;                                                                          \
    for (int p = 0; p < W; p++) z |= (T)((T)planes[(size_t)p * n + j] << (8 * p));    \
    return z;                                                                         \
}                                                                                     \
static inline T rebuild_##W(T z, const unsigned char *base, size_t i, int mode,       \
                            int is_float)                                             \
{                                                                                     \
    const T S = (T)((T)1 << (W * 8 - 1));                                             \
    if (mode == 0) return z;                                                          \
    T b = load_##W(base, i);                                                          \
    T d = UNZIG(T, z);                                                                \
    if (!is_float) return (T)(b + d);                                                 \
    T k = (T)(KEY(T, b, S) + d);                                                      \
    return UNKEY(T, k, S);                                                            \
}                                                                                     \
/* Three passes: the byte planes are interleaved back into whole codes      \
 * (region order, vectorised), a scalar gather puts each code at its        \
 * element (four independent lanes; one code load per element instead of    \
 * W byte loads), and a branch-free, vectorisable rebuild works in place.    \
 * codes has room for 2 ne codes: with a wrong base the positions run up to  \
 * 2 ne (each element moves one counter by one); pos is advanced and the     \
 * caller checks it. */                                                      \
static inline __attribute__((always_inline)) void interleave_##W(T *restrict codes,  \
                       const unsigned char *restrict planes, size_t n)                \
{                                                                                     \
    for (size_t j = 0; j < n; j++) {                                                  \
        T z = 0;                                                                      \
        for (int p = 0; p < W; p++) z |= (T)((T)planes[(size_t)p * n + j] << (8 * p)); \
        codes[j] = z;                                                                 \
    }                                                                                 \
}                                                                                     \
/* map here is indexed by the sign and exponent bits (build_map2), which     \
 * saves masking every element. */                                           \
static inline __attribute__((always_inline)) void gather_##W(unsigned char *out,     \
                       const unsigned char *base, size_t n, int mode, int is_float,   \
                       const uint8_t *map, ctxspec cs, uint32_t pos[LANES][MAX_CTX],  \
                       const unsigned char *planes, void *zmem)                        \
{                                                                                     \
    T *restrict codes = zmem;                                                         \
    interleave_##W(codes, planes, n);                                                 \
    uint32_t p0[MAX_CTX], p1[MAX_CTX], p2[MAX_CTX], p3[MAX_CTX];                      \
    memcpy(p0, pos[0], sizeof p0); memcpy(p1, pos[1], sizeof p1);                     \
    memcpy(p2, pos[2], sizeof p2); memcpy(p3, pos[3], sizeof p3);                     \
    size_t i = 0;                                                                     \
    if (mode && cs.mask) {                                                            \
        for (; i + LANES <= n; i += LANES) {                                          \
            unsigned c0 = map[(uint64_t)load_##W(base, i) >> cs.shift];               \
            unsigned c1 = map[(uint64_t)load_##W(base, i + 1) >> cs.shift];           \
            unsigned c2 = map[(uint64_t)load_##W(base, i + 2) >> cs.shift];           \
            unsigned c3 = map[(uint64_t)load_##W(base, i + 3) >> cs.shift];           \
            store_##W(out, i, codes[p0[c0]++]);                                       \
            store_##W(out, i + 1, codes[p1[c1]++]);                                   \
            store_##W(out, i + 2, codes[p2[c2]++]);                                   \
            store_##W(out, i + 3, codes[p3[c3]++]);                                   \
        }                                                                             \
    } else {                                                                          \
        for (; i + LANES <= n; i += LANES) {                                          \
            store_##W(out, i, codes[p0[0]++]);                                        \
            store_##W(out, i + 1, codes[p1[0]++]);                                    \
            store_##W(out, i + 2, codes[p2[0]++]);                                    \
            store_##W(out, i + 3, codes[p3[0]++]);                                    \
        }                                                                             \
    }                                                                                 \
    uint32_t *pl[LANES] = {p0, p1, p2, p3};                                           \
    for (; i < n; i++) {                                                              \
        unsigned c = (mode && cs.mask) ? map[(uint64_t)load_##W(base, i) >> cs.shift] : 0; \
        store_##W(out, i, codes[pl[i % LANES][c]++]);                                 \
    }                                                                                 \
    if (mode)                                                                         \
        for (i = 0; i < n; i++) store_##W(out, i, rebuild_##W(load_##W(out, i), base, i, mode, is_float)); \
    memcpy(pos[0], p0, sizeof p0); memcpy(pos[1], p1, sizeof p1);                     \
    memcpy(pos[2], p2, sizeof p2); memcpy(pos[3], p3, sizeof p3);                     \
}

DEFINE_KERNELS(1, uint8_t)
DEFINE_KERNELS(2, uint16_t)
DEFINE_KERNELS(4, uint32_t)
DEFINE_KERNELS(8, uint64_t)

/* Dispatch with compile-time constants so each (dtype, mode) gets its own
 * specialised loop: the generic kernels are always_inline. */
#define CS(sh, m) ((ctxspec){sh, m})
#define DISPATCH(KIND, ...)                                                           \
    do {                                                                              \
        if (mode && dt == WD_BF16) KIND##_2(__VA_ARGS__, 1, 1, map, CS(7, 0xff), ARGS_TAIL); \
        else if (mode && dt == WD_F16) KIND##_2(__VA_ARGS__, 1, 1, map, CS(10, 0x1f), ARGS_TAIL); \
        else if (mode && dt == WD_F32) KIND##_4(__VA_ARGS__, 1, 1, map, CS(23, 0xff), ARGS_TAIL); \
        else if (mode && dt == WD_F64) KIND##_8(__VA_ARGS__, 1, 1, map, CS(52, 0x7ff), ARGS_TAIL); \
        else if (w == 1) KIND##_1(__VA_ARGS__, mode, 0, map, CS(0, 0), ARGS_TAIL);     \
        else if (w == 2) KIND##_2(__VA_ARGS__, mode, 0, map, CS(0, 0), ARGS_TAIL);     \
        else if (w == 4) KIND##_4(__VA_ARGS__, mode, 0, map, CS(0, 0), ARGS_TAIL);     \
        else KIND##_8(__VA_ARGS__, mode, 0, map, CS(0, 0), ARGS_TAIL);                 \
    } while (0)

static void run_count(wd_dtype dt, unsigned w, int mode, const unsigned char *base, size_t ne,
                      const uint8_t *map, uint32_t cnt[LANES][MAX_CTX])
{
#define ARGS_TAIL cnt
    DISPATCH(count, NULL, base, ne);
#undef ARGS_TAIL
}

static void run_scatter(wd_dtype dt, unsigned w, int mode, const unsigned char *ft,
                        const unsigned char *base, size_t ne, const uint8_t *map,
                        uint32_t pos[LANES][MAX_CTX], unsigned char *planes)
{
#define ARGS_TAIL pos, planes
    DISPATCH(scatter, ft, base, ne);
#undef ARGS_TAIL
}

__attribute__((optimize("tree-vectorize")))
static void run_gather(wd_dtype dt, unsigned w, int mode, unsigned char *out,
                       const unsigned char *base, size_t ne, const uint8_t *map,
                       uint32_t pos[LANES][MAX_CTX], const unsigned char *planes, void *zmem)
{
#define ARGS_TAIL pos, planes, zmem
    DISPATCH(gather, out, base, ne);
#undef ARGS_TAIL
}

/* ---- context window ------------------------------------------------- */
static void build_map(uint8_t *map, uint32_t mask, unsigned lo, unsigned k)
{
    for (uint32_t e = 0; e <= mask; e++) {
        unsigned c = e < lo ? 0 : (e - lo >= k ? k - 1 : e - lo);
        map[e] = (uint8_t)c;
    }
}

/* The same map indexed by sign and exponent together (every float dtype
 * has one sign bit above its exponent field): 2 (mask + 1) entries. */
static void build_map2(uint8_t *map2, uint32_t mask, unsigned lo, unsigned k)
{
    build_map(map2, mask, lo, k);
    memcpy(map2 + mask + 1, map2, mask + 1);
}

/* Histogram of the exponent field; w is a constant after inlining. */
static inline __attribute__((always_inline)) void exp_hist(const unsigned char *base, size_t n, unsigned w,
                                                           ctxspec cs, uint32_t *hist)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        memcpy(&v, base + i * w, w); /* little-endian host (checked above) */
        hist[v >> cs.shift & cs.mask]++;
    }
}

/* Pick the window of K exponents holding most elements. */
static unsigned choose_ctx_lo(const unsigned char *base, size_t n, unsigned w, ctxspec cs,
                              unsigned k)
{
    uint32_t hist[2048] = {0};
    if (w == 2) exp_hist(base, n, 2, cs, hist);
    else if (w == 4) exp_hist(base, n, 4, cs, hist);
    else exp_hist(base, n, 8, cs, hist);
    uint64_t best = 0, cur = 0;
    unsigned best_lo = 0;
    for (uint32_t e = 0; e <= cs.mask; e++) {
        cur += hist[e];
        if (e >= k) cur -= hist[e - k];
        if (cur > best) {
            best = cur;
            best_lo = e + 1 >= k ? e + 1 - k : 0;
        }
    }
    return best_lo;
}

/* Where each (context, lane) region starts in a plane: contexts in order,
 * lanes in order inside a context.  pos gets each lane's first position,
 * start[c] each context's first. */
static void region_starts(uint32_t cnt[LANES][MAX_CTX], unsigned k, uint32_t pos[LANES][MAX_CTX],
                          uint32_t start[MAX_CTX + 1])
{
    start[0] = 0;
    for (unsigned c = 0; c < k; c++) {
        uint32_t off = start[c];
        for (int l = 0; l < LANES; l++) {
            pos[l][c] = off;
            off += cnt[l][c];
        }
        start[c + 1] = off;
    }
}

/* ---- encode --------------------------------------------------------- */
/* One (plane, context) region of a delta block.  Its bytes are zigzag codes
 * with few repeats worth finding: zstd's match finder, at its default
 * minimum match of 4 or 5, turns chance repeats of low-entropy codes into
 * sequences that cost more bits than the Huffman-coded literals they
 * replace and decode slower (measured on pairB's chain links: byte plane 0
 * at about 1.1 GB/s instead of 1.8).  Matches of 7 bytes or more are mostly
 * real runs (stretches of unchanged weights); plain zstd (mode 0) keeps the
 * level's own settings. */
#define DELTA_MIN_MATCH 7

static size_t compress_region(ZSTD_CCtx *cc, void *dst, size_t cap, const void *src, size_t len, int level,
                              int mode)
{
    if (!mode) return ZSTD_compressCCtx(cc, dst, cap, src, len, level);
    size_t r = ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(cc, ZSTD_c_minMatch, DELTA_MIN_MATCH);
    return ZSTD_isError(r) ? r : ZSTD_compress2(cc, dst, cap, src, len);
}

int wd_lossless_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, int level,
                    const unsigned char *ft, const unsigned char *base, size_t n,
                    const unsigned char **out, size_t *out_len, wd_err *err)
{
    if (codec != WD_CODEC_ZSTD && codec != WD_CODEC_LOSSLESS)
        return wd_errf(err, "codec %d cannot encode", (int)codec);
    int mode = codec == WD_CODEC_LOSSLESS;
    if (mode && !base) return wd_errf(err, "lossless codec needs base data");
    unsigned w = wd_codec_width(dt);
    if (n % w) return wd_errf(err, "block of %zu bytes is not a multiple of the %u-byte element", n, w);
    if (n > UINT32_MAX) return wd_errf(err, "block of %zu bytes is too large", n);
    size_t ne = n / w;
    ctxspec cs = mode ? ctx_for(dt) : (ctxspec){0, 0};
    unsigned k = cs.mask ? FLOAT_CTX : 1;
    unsigned ctx_lo = cs.mask ? choose_ctx_lo(base, ne, w, cs, k) : 0;
    uint8_t map[2048];
    if (cs.mask) build_map(map, cs.mask, ctx_lo, k);

    uint32_t cnt[LANES][MAX_CTX] = {{0}}, pos[LANES][MAX_CTX];
    run_count(dt, w, mode, base, ne, map, cnt);
    uint32_t start[MAX_CTX + 1];
    region_starts(cnt, k, pos, start);
    unsigned char *planes = wd_scratch_buf(s, WD_SLOT_PLANES, n);
    size_t hdr = HDR_FIXED + 4u * (LANES * k + w * k);
    size_t bound = hdr;
    for (unsigned p = 0; p < w; p++)
        for (unsigned c = 0; c < k; c++) bound += ZSTD_compressBound(start[c + 1] - start[c]);
    unsigned char *dst = wd_scratch_buf(s, WD_SLOT_OUT, bound);
    if (!planes || !dst) return wd_errf(err, "out of memory encoding a %zu-byte block", n);
    ZSTD_CCtx *cctx = wd_scratch_cctx(s, err);
    if (!cctx) return -1;
    run_scatter(dt, w, mode, ft, base, ne, map, pos, planes);
    dst[0] = 'W';
    dst[1] = (unsigned char)mode;
    dst[2] = (unsigned char)w;
    dst[3] = (unsigned char)k;
    dst[4] = LANES;
    dst[5] = 0;
    dst[6] = (unsigned char)(ctx_lo & 0xff);
    dst[7] = (unsigned char)(ctx_lo >> 8);
    unsigned char *q = dst + HDR_FIXED;
    for (int l = 0; l < LANES; l++)
        for (unsigned c = 0; c < k; c++, q += 4) wd_put_u32(q, cnt[l][c]);
    unsigned char *sizes = q;
    size_t at = hdr;
    for (unsigned p = 0; p < w; p++) {
        for (unsigned c = 0; c < k; c++) {
            size_t len = start[c + 1] - start[c];
            size_t z = 0;
            if (len) {
                z = compress_region(cctx, dst + at, bound - at, planes + (size_t)p * ne + start[c], len,
                                    level, mode);
                if (ZSTD_isError(z)) return wd_errf(err, "zstd compression failed: %s", ZSTD_getErrorName(z));
            }
            wd_put_u32(sizes + 4 * (p * k + c), (uint32_t)z);
            at += z;
        }
    }
    *out = dst;
    *out_len = at;
    return 0;
}

/* ---- decode --------------------------------------------------------- */
int wd_lossless_decode(wd_scratch *s, wd_codec codec, wd_dtype dt,
                    const unsigned char *src, size_t slen,
                    const unsigned char *base, unsigned char *out, size_t n, wd_err *err)
{
    return wd_lossless_decode_kernel(s, codec, dt, src, slen, base, out, n, WD_LL_AUTO, NULL, err);
}

int wd_lossless_decode_kernel(wd_scratch *s, wd_codec codec, wd_dtype dt, const unsigned char *src, size_t slen,
                              const unsigned char *base, unsigned char *out, size_t n, wd_ll_kernel kernel,
                              uint64_t hashes[2], wd_err *err)
{
    if (kernel == WD_LL_SIMD && !wd_lossless_simd_available())
        return wd_errf(err, "this CPU lacks the AVX-512 instructions of the vector gather");
    int mode = codec == WD_CODEC_LOSSLESS;
    if (codec != WD_CODEC_ZSTD && codec != WD_CODEC_LOSSLESS)
        return wd_errf(err, "unknown codec %d", (int)codec);
    unsigned w = wd_codec_width(dt);
    if (slen < HDR_FIXED || src[0] != 'W')
        return wd_errf(err, "block header is malformed (%zu bytes)", slen);
    if (src[1] != mode || src[2] != w || src[4] != LANES || src[3] == 0 || src[3] > MAX_CTX)
        return wd_errf(err, "block header does not match its codec (mode %u width %u contexts %u lanes %u)",
                       src[1], src[2], src[3], src[4]);
    if (n % w) return wd_errf(err, "block of %zu bytes is not a multiple of %u", n, w);
    if (mode && !base) return wd_errf(err, "lossless block needs base data");
    ctxspec cs = mode ? ctx_for(dt) : (ctxspec){0, 0};
    unsigned k = src[3];
    if ((cs.mask == 0) != (k == 1))
        return wd_errf(err, "block has %u contexts, its dtype allows %u", k, cs.mask ? FLOAT_CTX : 1);
    unsigned ctx_lo = src[6] | (unsigned)src[7] << 8;
    size_t ne = n / w;
    size_t hdr = HDR_FIXED + 4u * (LANES * k + w * k);
    if (slen < hdr) return wd_errf(err, "block header is truncated (%zu < %zu bytes)", slen, hdr);

    uint32_t cnt[LANES][MAX_CTX], pos[LANES][MAX_CTX], start[MAX_CTX + 1];
    const unsigned char *q = src + HDR_FIXED;
    uint64_t total = 0;
    for (int l = 0; l < LANES; l++)
        for (unsigned c = 0; c < k; c++, q += 4) {
            cnt[l][c] = wd_get_u32(q);
            total += cnt[l][c];
        }
    if (total != ne) return wd_errf(err, "block counts %llu elements, expected %zu", (unsigned long long)total, ne);
    region_starts(cnt, k, pos, start);
    /* padded for the vector gather's loads (lossless_simd.h) */
    unsigned char *planes = wd_scratch_buf(s, WD_SLOT_PLANES, n + WD_LL_PLANES_PAD(ne));
    if (!planes) return wd_errf(err, "out of memory decoding a %zu-byte block", n);
    ZSTD_DCtx *dctx = wd_scratch_dctx(s, err);
    if (!dctx) return -1;
    const unsigned char *sizes = q;
    size_t at = hdr;
    for (unsigned p = 0; p < w; p++) {
        for (unsigned c = 0; c < k; c++) {
            size_t len = start[c + 1] - start[c];
            size_t z = wd_get_u32(sizes + 4 * (p * k + c));
            if (z > slen - at) return wd_errf(err, "block frame (plane %u, context %u) runs past the block", p, c);
            if ((len == 0) != (z == 0)) return wd_errf(err, "block frame (plane %u, context %u) has the wrong size", p, c);
            if (len) {
                size_t r = ZSTD_decompressDCtx(dctx, planes + (size_t)p * ne + start[c], len, src + at, z);
                if (ZSTD_isError(r)) return wd_errf(err, "block frame (plane %u, context %u): zstd: %s", p, c, ZSTD_getErrorName(r));
                if (r != len) return wd_errf(err, "block frame (plane %u, context %u) decodes to %zu bytes, expected %zu", p, c, r, len);
            }
            at += z;
        }
    }
    if (at != slen) return wd_errf(err, "block has %zu trailing bytes", slen - at);
    if (ne == 0) {
        if (hashes) hashes[0] = wd_hash64(out, 0, 0), hashes[1] = wd_hash64(src, slen, 0);
        return 0;
    }
    /* A base other than the one encoded against gives other contexts; the
     * end positions tell whether the counts matched. */
    uint32_t expect[LANES][MAX_CTX];
    for (int l = 0; l < LANES; l++)
        for (unsigned c = 0; c < k; c++) expect[l][c] = pos[l][c] + cnt[l][c];
    if (kernel != WD_LL_SCALAR && wd_lossless_simd_available()) {
        /* the vector gather (lossless_avx512.c) over the contexts that hold
         * codes; on a mismatch the scalar gather below runs again from the
         * start, so that output and error are exactly the scalar ones */
        uint8_t present[MAX_CTX];
        unsigned kp = 0;
        for (unsigned c = 0; c < k; c++)
            if (start[c + 1] > start[c]) present[kp++] = (uint8_t)c;
        uint32_t vpos[LANES][MAX_CTX];
        memcpy(vpos, pos, sizeof vpos);
        wd_ll_hash h = {.in = src, .in_len = slen};
        wd_hash64_start(h.out_lanes, 0);
        wd_hash64_start(h.in_lanes, 0);
        if (!wd_lossless_gather_simd(dt, w, mode, ctx_lo, k, present, kp, out, base, ne, vpos, planes,
                                     hashes ? &h : NULL)) {
            int same = 1;
            for (int l = 0; l < LANES; l++)
                for (unsigned c = 0; c < k; c++) same &= vpos[l][c] == expect[l][c];
            if (same) {
                if (hashes) {
                    hashes[0] = wd_hash64_end(h.out_lanes, out, n, h.out_done);
                    hashes[1] = wd_hash64_end(h.in_lanes, src, slen, h.in_done);
                }
                return 0;
            }
        } else if (kernel == WD_LL_SIMD) {
            return wd_errf(err, "the vector gather cannot take this block (dtype %d, %u contexts)", (int)dt, k);
        }
    }
    uint8_t map[4096];
    if (cs.mask) build_map2(map, cs.mask, ctx_lo, k);
    /* the codes buffer has room for 2 ne codes so the gather stays in bounds
     * with a wrong base */
    unsigned char *zmem = wd_scratch_buf(s, WD_SLOT_CODES, 2 * n);
    if (!zmem) return wd_errf(err, "out of memory decoding a %zu-byte block", n);
    run_gather(dt, w, mode, out, base, ne, map, pos, planes, zmem);
    for (int l = 0; l < LANES; l++)
        for (unsigned c = 0; c < k; c++)
            if (pos[l][c] != expect[l][c])
                return wd_errf(err, "base data does not match the block (context %u of lane %d: %u elements stored, %u in the base)",
                               c, l, cnt[l][c], cnt[l][c] + pos[l][c] - expect[l][c]);
    /* here the vector gather, had it run, found counts the scalar one did
     * not: a fault of the vector gather, which the tests ask to hear of */
    if (kernel == WD_LL_SIMD)
        return wd_errf(err, "the vector gather's counts differ from the scalar gather's");
    if (hashes) hashes[0] = wd_hash64(out, n, 0), hashes[1] = wd_hash64(src, slen, 0);
    return 0;
}
