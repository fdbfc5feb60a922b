/* lossless_avx512.c - the lossless codec's decode gather with AVX-512
 * byte expands: the same output as the scalar gather of lossless.c (whose
 * header describes the block), several times faster.
 *
 * The scalar gather takes, for each element i in turn, the next code of
 * lane i % 4 in the element's context: a dependent load per element.  Here
 * 256 elements go at once:
 *   1. the context byte of each element is computed from the base in
 *      vectors (the exponent field, c = min(sat_sub(e, ctx_lo), K - 1), as
 *      lossless.c's build_map), and dealt into the 4 lanes (64 each);
 *   2. for each lane and each context present in the block, `ctx == c` is a
 *      64-bit mask; a byte expand puts the next popcount(mask) bytes of that
 *      lane's region at the mask's places, and the position moves on by the
 *      popcount.  Done per byte plane with the same masks;
 *   3. the lanes are dealt back into element order, the planes zipped into
 *      codes, and each code rebuilt against the base, all while the chunk is
 *      in L1.
 *   4. where the caller asks (wd_ll_hash), the chunk's output, still in
 *      registers, feeds wd_hash64's lanes, and a share of the stored
 *      bytes feeds a second set: both hashes are latency-bound chains that
 *      run beside the gather's throughput-bound work instead of after it.
 * The last, partial chunk takes the same path with masked loads and stores.
 * Loads of 64 bytes at a position may run past a region (into the next, or
 * the planes buffer's padding: WD_LL_PLANES_PAD); only the bytes a mask
 * selects are used, and a base that is not the block's shows up in the
 * positions, which the caller checks. */
#include "codec/lossless_simd.h"
#include "util/hash.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vbmi2,bmi,bmi2,popcnt")))
#define AI static inline __attribute__((always_inline)) TGT
#define CH 256 /* elements per chunk: 64 per lane */
#define PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define UNROLL(n) PRAGMA(unroll n)
#else
#define UNROLL(n) PRAGMA(GCC unroll n)
#endif

int wd_lossless_simd_available(void)
{
    /* libgcc's constructor has filled in the CPU model (and checked that
     * the OS saves the AVX-512 state) before any of this runs */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vbmi") &&
           __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("bmi2") &&
           __builtin_cpu_supports("popcnt");
}

static inline uint64_t lowmask(unsigned n)
{
    return n >= 64 ? ~0ull : (1ull << n) - 1;
}

/* elements of a group of m starting at `at` that lie below nvalid */
static inline unsigned valid_in(unsigned nvalid, unsigned at, unsigned m)
{
    return nvalid <= at ? 0 : (nvalid - at >= m ? m : nvalid - at);
}

/* permutation tables, built once per block */
typedef struct perms {
    __m512i tr;    /* vpermb: 64 elements -> 4 lanes of 16, lane by lane */
    __m512i inv;   /* its inverse */
    __m512i even;  /* vpermt2b: the low byte of each 16-bit element of two vectors */
    __m512i z8lo, z8hi;   /* vpermt2b: zip the bytes of two vectors, first/second half */
    __m512i z16lo, z16hi; /* vpermt2w: zip 16-bit words */
    __m512i z32lo, z32hi; /* vpermt2d: zip 32-bit words */
} perms;

TGT static void make_perms(perms *pm)
{
    uint8_t tr[64], inv[64], even[64], z8lo[64], z8hi[64];
    uint16_t z16lo[32], z16hi[32];
    uint32_t z32lo[16], z32hi[16];
    for (unsigned l = 0; l < 4; l++)
        for (unsigned j = 0; j < 16; j++) {
            tr[16 * l + j] = (uint8_t)(4 * j + l);
            inv[4 * j + l] = (uint8_t)(16 * l + j);
        }
    for (unsigned j = 0; j < 64; j++) even[j] = (uint8_t)(2 * j);
    for (unsigned j = 0; j < 32; j++) {
        z8lo[2 * j] = (uint8_t)j;
        z8lo[2 * j + 1] = (uint8_t)(64 + j);
        z8hi[2 * j] = (uint8_t)(32 + j);
        z8hi[2 * j + 1] = (uint8_t)(96 + j);
    }
    for (unsigned j = 0; j < 16; j++) {
        z16lo[2 * j] = (uint16_t)j;
        z16lo[2 * j + 1] = (uint16_t)(32 + j);
        z16hi[2 * j] = (uint16_t)(16 + j);
        z16hi[2 * j + 1] = (uint16_t)(48 + j);
    }
    for (unsigned j = 0; j < 8; j++) {
        z32lo[2 * j] = j;
        z32lo[2 * j + 1] = 16 + j;
        z32hi[2 * j] = 8 + j;
        z32hi[2 * j + 1] = 24 + j;
    }
    pm->tr = _mm512_loadu_si512(tr);
    pm->inv = _mm512_loadu_si512(inv);
    pm->even = _mm512_loadu_si512(even);
    pm->z8lo = _mm512_loadu_si512(z8lo);
    pm->z8hi = _mm512_loadu_si512(z8hi);
    pm->z16lo = _mm512_loadu_si512(z16lo);
    pm->z16hi = _mm512_loadu_si512(z16hi);
    pm->z32lo = _mm512_loadu_si512(z32lo);
    pm->z32hi = _mm512_loadu_si512(z32hi);
}

/* 64 bytes of elements of width W at p, of which nv are valid (the rest
 * read as 0, and not read at all where full) */
AI __m512i load_el(unsigned W, const unsigned char *p, unsigned nv, int full)
{
    if (full) return _mm512_loadu_si512(p);
    switch (W) {
    case 1: return _mm512_maskz_loadu_epi8(lowmask(nv), p);
    case 2: return _mm512_maskz_loadu_epi16((__mmask32)lowmask(nv), p);
    case 4: return _mm512_maskz_loadu_epi32((__mmask16)lowmask(nv), p);
    default: return _mm512_maskz_loadu_epi64((__mmask8)lowmask(nv), p);
    }
}

AI void store_el(unsigned W, unsigned char *p, __m512i v, unsigned nv, int full)
{
    if (full) {
        _mm512_storeu_si512(p, v);
        return;
    }
    switch (W) {
    case 1: _mm512_mask_storeu_epi8(p, lowmask(nv), v); break;
    case 2: _mm512_mask_storeu_epi16(p, (__mmask32)lowmask(nv), v); break;
    case 4: _mm512_mask_storeu_epi32(p, (__mmask16)lowmask(nv), v); break;
    default: _mm512_mask_storeu_epi64(p, (__mmask8)lowmask(nv), v); break;
    }
}

/* Context bytes of the 64 elements at b (nv valid), in element order. */
AI __m512i ctx64(unsigned W, const unsigned char *b, unsigned nv, int full, unsigned shift, uint32_t emask,
                 unsigned lo, unsigned k, const perms *pm)
{
    __m128i sh = _mm_cvtsi32_si128((int)shift);
    if (W == 2) {
        __m512i m = _mm512_set1_epi16((short)emask), vlo = _mm512_set1_epi16((short)lo),
                vk = _mm512_set1_epi16((short)(k - 1));
        __m512i c[2];
        for (unsigned r = 0; r < 2; r++) {
            __m512i x = load_el(2, b + 64 * r, valid_in(nv, 32 * r, 32), full);
            __m512i e = _mm512_and_si512(_mm512_srl_epi16(x, sh), m);
            c[r] = _mm512_min_epu16(_mm512_subs_epu16(e, vlo), vk);
        }
        return _mm512_permutex2var_epi8(c[0], pm->even, c[1]);
    }
    if (W == 4) {
        __m512i m = _mm512_set1_epi32((int)emask), vlo = _mm512_set1_epi32((int)lo),
                vk = _mm512_set1_epi32((int)(k - 1));
        __m128i c[4];
        for (unsigned r = 0; r < 4; r++) {
            __m512i x = load_el(4, b + 64 * r, valid_in(nv, 16 * r, 16), full);
            __m512i e = _mm512_and_si512(_mm512_srl_epi32(x, sh), m);
            e = _mm512_min_epu32(_mm512_sub_epi32(_mm512_max_epu32(e, vlo), vlo), vk);
            c[r] = _mm512_cvtepi32_epi8(e);
        }
        __m512i v = _mm512_castsi128_si512(c[0]);
        v = _mm512_inserti32x4(v, c[1], 1);
        v = _mm512_inserti32x4(v, c[2], 2);
        return _mm512_inserti32x4(v, c[3], 3);
    }
    /* W == 8 */
    __m512i m = _mm512_set1_epi64((long long)emask), vlo = _mm512_set1_epi64((long long)lo),
            vk = _mm512_set1_epi64((long long)(k - 1));
    __m128i c[8];
    for (unsigned r = 0; r < 8; r++) {
        __m512i x = load_el(8, b + 64 * r, valid_in(nv, 8 * r, 8), full);
        __m512i e = _mm512_and_si512(_mm512_srl_epi64(x, sh), m);
        e = _mm512_min_epu64(_mm512_sub_epi64(_mm512_max_epu64(e, vlo), vlo), vk);
        c[r] = _mm512_cvtepi64_epi8(e);
    }
    __m512i v = _mm512_castsi128_si512(_mm_unpacklo_epi64(c[0], c[1]));
    v = _mm512_inserti32x4(v, _mm_unpacklo_epi64(c[2], c[3]), 1);
    v = _mm512_inserti32x4(v, _mm_unpacklo_epi64(c[4], c[5]), 2);
    return _mm512_inserti32x4(v, _mm_unpacklo_epi64(c[6], c[7]), 3);
}

/* Swap 128-bit blocks: out[i].j = in[j].i (its own inverse). */
AI void transpose128(__m512i v[4])
{
    __m512i a = _mm512_shuffle_i64x2(v[0], v[1], 0x88), b = _mm512_shuffle_i64x2(v[0], v[1], 0xdd);
    __m512i c = _mm512_shuffle_i64x2(v[2], v[3], 0x88), d = _mm512_shuffle_i64x2(v[2], v[3], 0xdd);
    v[0] = _mm512_shuffle_i64x2(a, c, 0x88);
    v[2] = _mm512_shuffle_i64x2(a, c, 0xdd);
    v[1] = _mm512_shuffle_i64x2(b, d, 0x88);
    v[3] = _mm512_shuffle_i64x2(b, d, 0xdd);
}

/* f from the base b and the code z (lossless.c's rebuild) */
AI __m512i rebuild(unsigned W, int mode, int is_float, __m512i z, __m512i b)
{
    if (!mode) return z;
    const __m512i ones = _mm512_set1_epi32(-1), zero = _mm512_setzero_si512();
    switch (W) {
    case 1: {
        __m512i d = _mm512_and_si512(_mm512_srli_epi16(z, 1), _mm512_set1_epi8(0x7f));
        d = _mm512_xor_si512(d, _mm512_sub_epi8(zero, _mm512_and_si512(z, _mm512_set1_epi8(1))));
        return _mm512_add_epi8(b, d);
    }
    case 2: {
        __m512i d = _mm512_xor_si512(_mm512_srli_epi16(z, 1),
                                     _mm512_sub_epi16(zero, _mm512_and_si512(z, _mm512_set1_epi16(1))));
        if (!is_float) return _mm512_add_epi16(b, d);
        const __m512i S = _mm512_set1_epi16((short)0x8000);
        __m512i kb = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi16(b, 15), S));
        __m512i k = _mm512_add_epi16(kb, d);
        return _mm512_xor_si512(k, _mm512_or_si512(_mm512_xor_si512(_mm512_srai_epi16(k, 15), ones), S));
    }
    case 4: {
        __m512i d = _mm512_xor_si512(_mm512_srli_epi32(z, 1),
                                     _mm512_sub_epi32(zero, _mm512_and_si512(z, _mm512_set1_epi32(1))));
        if (!is_float) return _mm512_add_epi32(b, d);
        const __m512i S = _mm512_set1_epi32((int)0x80000000u);
        __m512i kb = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi32(b, 31), S));
        __m512i k = _mm512_add_epi32(kb, d);
        return _mm512_xor_si512(k, _mm512_or_si512(_mm512_xor_si512(_mm512_srai_epi32(k, 31), ones), S));
    }
    default: {
        __m512i d = _mm512_xor_si512(_mm512_srli_epi64(z, 1),
                                     _mm512_sub_epi64(zero, _mm512_and_si512(z, _mm512_set1_epi64(1))));
        if (!is_float) return _mm512_add_epi64(b, d);
        const __m512i S = _mm512_set1_epi64((long long)0x8000000000000000ull);
        __m512i kb = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi64(b, 63), S));
        __m512i k = _mm512_add_epi64(kb, d);
        return _mm512_xor_si512(k, _mm512_or_si512(_mm512_xor_si512(_mm512_srai_epi64(k, 63), ones), S));
    }
    }
}

/* wd_hash64's four lanes (util/hash.h) absorb the 64 bytes of v: two
 * 32-byte rounds.  The lanes' chain (add, rotate, multiply) is latency-bound;
 * here it runs beside the gather's throughput-bound work. */
AI __m256i hash_absorb64(__m256i acc, __m512i v)
{
    const __m256i k1 = _mm256_set1_epi64x((long long)WD_HASH_K1), k2 = _mm256_set1_epi64x((long long)WD_HASH_K2);
    acc = _mm256_add_epi64(acc, _mm256_mullo_epi64(_mm512_castsi512_si256(v), k2));
    acc = _mm256_mullo_epi64(_mm256_rol_epi64(acc, 31), k1);
    acc = _mm256_add_epi64(acc, _mm256_mullo_epi64(_mm512_extracti64x4_epi64(v, 1), k2));
    return _mm256_mullo_epi64(_mm256_rol_epi64(acc, 31), k1);
}

/* One chunk of up to CH elements (nvalid of them; full: all CH).  The
 * loops over lanes and planes are unrolled (UNROLL) so that the vectors
 * stay in registers; the contexts are the one loop with a run-time count. */
AI void chunk(unsigned W, int mode, int is_float, int has_ctx, unsigned shift, uint32_t emask, unsigned lo,
              unsigned k, const uint8_t *present, unsigned kp, unsigned char *out, const unsigned char *base,
              unsigned nvalid, int full, uint32_t pos[WD_LL_LANES][WD_LL_MAX_CTX],
              const unsigned char *planes, size_t ne, const perms *pm, int hash, __m256i *hacc)
{
    uint64_t vm[4];
    UNROLL(4) for (unsigned l = 0; l < 4; l++)
        vm[l] = full ? ~0ull : lowmask(nvalid > l ? (nvalid - l + 3) / 4 : 0);
    __m512i L[4]; /* context bytes of each lane's 64 elements */
    if (has_ctx) {
        UNROLL(4) for (unsigned q = 0; q < 4; q++)
            L[q] = _mm512_permutexvar_epi8(pm->tr, ctx64(W, base + (size_t)64 * q * W, valid_in(nvalid, 64 * q, 64),
                                                         full, shift, emask, lo, k, pm));
        transpose128(L);
    } else {
        UNROLL(4) for (unsigned l = 0; l < 4; l++) L[l] = _mm512_setzero_si512();
    }
    /* planes in groups of G: per context, its mask serves G planes */
    const unsigned G = W >= 4 ? 4 : W;
    __m512i P[8][4]; /* plane p's bytes of elements 64 q .. 64 q + 63 */
    UNROLL(2) for (unsigned pg = 0; pg < W; pg += G) {
        __m512i V[4][4];
        UNROLL(4) for (unsigned g = 0; g < G; g++)
            UNROLL(4) for (unsigned l = 0; l < 4; l++) V[g][l] = _mm512_setzero_si512();
        for (unsigned t = 0; t < kp; t++) {
            unsigned c = present[t];
            __m512i bc = _mm512_set1_epi8((char)c);
            UNROLL(4) for (unsigned l = 0; l < 4; l++) {
                /* the contexts' masks are disjoint: expand each into zeros
                 * and OR them in */
                uint64_t m = has_ctx ? _mm512_cmpeq_epi8_mask(L[l], bc) & vm[l] : vm[l];
                uint32_t at = pos[l][c], cnt = (uint32_t)_mm_popcnt_u64(m);
                /* a context rarely has more than 32 of a lane's 64: load
                 * 32 bytes then, which less often straddle a cache line */
                if (cnt <= 32) {
                    UNROLL(4) for (unsigned g = 0; g < G; g++) {
                        __m512i x = _mm512_castsi256_si512(
                            _mm256_loadu_si256((const void *)(planes + (size_t)(pg + g) * ne + at)));
                        /* keep the load apart from the expand: the memory
                         * form of vpexpandb is slower on Zen 4 */
                        __asm__("" : "+v"(x));
                        V[g][l] = _mm512_mask_expand_epi8(V[g][l], m, x);
                    }
                } else {
                    UNROLL(4) for (unsigned g = 0; g < G; g++) {
                        __m512i x = _mm512_loadu_si512(planes + (size_t)(pg + g) * ne + at);
                        __asm__("" : "+v"(x));
                        V[g][l] = _mm512_mask_expand_epi8(V[g][l], m, x);
                    }
                }
                if (pg + G >= W) pos[l][c] = at + cnt;
            }
        }
        UNROLL(4) for (unsigned g = 0; g < G; g++) {
            transpose128(V[g]);
            UNROLL(4) for (unsigned q = 0; q < 4; q++)
                P[pg + g][q] = _mm512_permutexvar_epi8(pm->inv, V[g][q]);
        }
    }

    /* zip the planes into codes, 64 elements at a time, and rebuild */
    UNROLL(4) for (unsigned q = 0; q < 4; q++) {
        if (!full && 64 * q >= nvalid) break;
        __m512i z[8];
        if (W == 1) {
            z[0] = P[0][q];
        } else if (W == 2) {
            __m512i a = P[0][q], b = P[1][q];
            z[0] = _mm512_permutex2var_epi8(a, pm->z8lo, b);
            z[1] = _mm512_permutex2var_epi8(a, pm->z8hi, b);
        } else {
            __m512i h[4][2]; /* pairs of planes zipped: 16-bit pieces, elements 0-31 and 32-63 */
            UNROLL(4) for (unsigned r = 0; r < W / 2; r++) {
                __m512i a = P[2 * r][q], b = P[2 * r + 1][q];
                h[r][0] = _mm512_permutex2var_epi8(a, pm->z8lo, b);
                h[r][1] = _mm512_permutex2var_epi8(a, pm->z8hi, b);
            }
            __m512i f[2][4]; /* quads of planes: 32-bit pieces, elements 16 s .. 16 s + 15 */
            UNROLL(2) for (unsigned r = 0; r < W / 4; r++)
                UNROLL(2) for (unsigned s = 0; s < 2; s++) {
                    f[r][2 * s] = _mm512_permutex2var_epi16(h[2 * r][s], pm->z16lo, h[2 * r + 1][s]);
                    f[r][2 * s + 1] = _mm512_permutex2var_epi16(h[2 * r][s], pm->z16hi, h[2 * r + 1][s]);
                }
            if (W == 4) {
                UNROLL(4) for (unsigned s = 0; s < 4; s++) z[s] = f[0][s];
            } else {
                UNROLL(4) for (unsigned s = 0; s < 4; s++) {
                    z[2 * s] = _mm512_permutex2var_epi32(f[0][s], pm->z32lo, f[1][s]);
                    z[2 * s + 1] = _mm512_permutex2var_epi32(f[0][s], pm->z32hi, f[1][s]);
                }
            }
        }
        unsigned per = 64 / W;
        UNROLL(8) for (unsigned r = 0; r < W; r++) {
            unsigned at = 64 * q + per * r, nv = valid_in(nvalid, at, per);
            if (!full && !nv) break;
            size_t off = (size_t)at * W;
            __m512i v = z[r];
            if (mode) v = rebuild(W, mode, is_float, v, load_el(W, base + off, nv, full));
            store_el(W, out + off, v, nv, full);
            /* the output in order, 64 bytes at a time (full chunks only) */
            if (hash && full) *hacc = hash_absorb64(*hacc, v);
        }
    }
}

/* With hash, h's lanes absorb the output of the full chunks (256 W bytes
 * each, whole 32-byte rounds for every width) and, spread over the same
 * chunks, the stored bytes' whole rounds. */
AI void gather(unsigned W, int mode, int is_float, int has_ctx, unsigned shift, uint32_t emask, unsigned lo,
               unsigned k, const uint8_t *present, unsigned kp, unsigned char *out, const unsigned char *base,
               size_t ne, uint32_t pos[WD_LL_LANES][WD_LL_MAX_CTX], const unsigned char *planes, int hash,
               wd_ll_hash *h)
{
    perms pm;
    make_perms(&pm);
    __m256i hacc = _mm256_setzero_si256(), sacc = _mm256_setzero_si256();
    const unsigned char *in = NULL;
    size_t in_rounds = 0, per = 0, sdone = 0;
    if (hash) {
        hacc = _mm256_loadu_si256((const void *)h->out_lanes);
        sacc = _mm256_loadu_si256((const void *)h->in_lanes);
        in = h->in;
        in_rounds = h->in ? h->in_len / 32 : 0;
        size_t chunks = ne / CH;
        per = chunks ? (in_rounds + chunks - 1) / chunks : 0;
    }
    const __m256i k1 = _mm256_set1_epi64x((long long)WD_HASH_K1), k2 = _mm256_set1_epi64x((long long)WD_HASH_K2);
    size_t i = 0, r = 0;
    for (; i + CH <= ne; i += CH) {
        chunk(W, mode, is_float, has_ctx, shift, emask, lo, k, present, kp, out + i * W, mode ? base + i * W : NULL,
              CH, 1, pos, planes, ne, &pm, hash, &hacc);
        if (hash) {
            size_t end = r + per < in_rounds ? r + per : in_rounds;
            for (; r < end; r++) {
                __m256i v = _mm256_loadu_si256((const void *)(in + 32 * r));
                sacc = _mm256_add_epi64(sacc, _mm256_mullo_epi64(v, k2));
                sacc = _mm256_mullo_epi64(_mm256_rol_epi64(sacc, 31), k1);
            }
        }
    }
    if (hash) {
        sdone = 32 * r;
        _mm256_storeu_si256((void *)h->out_lanes, hacc);
        _mm256_storeu_si256((void *)h->in_lanes, sacc);
        h->out_done = i * W;
        h->in_done = sdone;
    }
    if (i < ne)
        chunk(W, mode, is_float, has_ctx, shift, emask, lo, k, present, kp, out + i * W, mode ? base + i * W : NULL,
              (unsigned)(ne - i), 0, pos, planes, ne, &pm, 0, &hacc);
}

/* one specialised loop per element kind */
#define GATHER_FN(NAME, W, MODE, FLT, CTX, SHIFT, EMASK)                                                         \
    TGT static void NAME(unsigned lo, unsigned k, const uint8_t *present, unsigned kp, unsigned char *out,      \
                         const unsigned char *base, size_t ne, uint32_t pos[WD_LL_LANES][WD_LL_MAX_CTX],        \
                         const unsigned char *planes, wd_ll_hash *h)                                             \
    {                                                                                                            \
        if (h) gather(W, MODE, FLT, CTX, SHIFT, EMASK, lo, k, present, kp, out, base, ne, pos, planes, 1, h);   \
        else gather(W, MODE, FLT, CTX, SHIFT, EMASK, lo, k, present, kp, out, base, ne, pos, planes, 0, NULL);  \
    }
GATHER_FN(g_bf16, 2, 1, 1, 1, 7, 0xff)
GATHER_FN(g_f16, 2, 1, 1, 1, 10, 0x1f)
GATHER_FN(g_f32, 4, 1, 1, 1, 23, 0xff)
GATHER_FN(g_f64, 8, 1, 1, 1, 52, 0x7ff)
GATHER_FN(g_int1, 1, 1, 0, 0, 0, 0)
GATHER_FN(g_int2, 2, 1, 0, 0, 0, 0)
GATHER_FN(g_int4, 4, 1, 0, 0, 0, 0)
GATHER_FN(g_int8, 8, 1, 0, 0, 0, 0)
GATHER_FN(g_raw1, 1, 0, 0, 0, 0, 0)
GATHER_FN(g_raw2, 2, 0, 0, 0, 0, 0)
GATHER_FN(g_raw4, 4, 0, 0, 0, 0, 0)
GATHER_FN(g_raw8, 8, 0, 0, 0, 0, 0)

int wd_lossless_gather_simd(wd_dtype dt, unsigned w, int mode, unsigned ctx_lo, unsigned k,
                            const uint8_t *present, unsigned kp, unsigned char *out,
                            const unsigned char *base, size_t ne,
                            uint32_t pos[WD_LL_LANES][WD_LL_MAX_CTX], const unsigned char *planes,
                            wd_ll_hash *h)
{
    if (!wd_lossless_simd_available()) return -1;
    typedef void (*fn)(unsigned, unsigned, const uint8_t *, unsigned, unsigned char *, const unsigned char *,
                       size_t, uint32_t (*)[WD_LL_MAX_CTX], const unsigned char *, wd_ll_hash *);
    fn f;
    int has_ctx = mode && k > 1;
    if (has_ctx && dt == WD_BF16) f = g_bf16;
    else if (has_ctx && dt == WD_F16) f = g_f16;
    else if (has_ctx && dt == WD_F32) f = g_f32;
    else if (has_ctx && dt == WD_F64) f = g_f64;
    else if (has_ctx) return -1; /* contexts only come with float dtypes (lossless.c checks) */
    else if (mode) f = w == 1 ? g_int1 : w == 2 ? g_int2 : w == 4 ? g_int4 : g_int8;
    else f = w == 1 ? g_raw1 : w == 2 ? g_raw2 : w == 4 ? g_raw4 : g_raw8;
    if (!has_ctx) { /* one context: every element counts in context 0 */
        static const uint8_t zero = 0;
        present = &zero;
        kp = 1;
    }
    if (kp == 0) return -1;
    f(ctx_lo, k, present, kp, out, base, ne, pos, planes, h);
    return 0;
}

#else /* not x86-64 with GCC or clang: the scalar gather only */

int wd_lossless_simd_available(void)
{
    return 0;
}

int wd_lossless_gather_simd(wd_dtype dt, unsigned w, int mode, unsigned ctx_lo, unsigned k,
                            const uint8_t *present, unsigned kp, unsigned char *out,
                            const unsigned char *base, size_t ne,
                            uint32_t pos[WD_LL_LANES][WD_LL_MAX_CTX], const unsigned char *planes,
                            wd_ll_hash *h)
{
    (void)dt, (void)w, (void)mode, (void)ctx_lo, (void)k, (void)present, (void)kp;
    (void)out, (void)base, (void)ne, (void)pos, (void)planes, (void)h;
    return -1;
}
#endif
