/* checksum.c - wd_hash64, the fast per-block checksum.
 *
 * Four independent 64-bit lanes absorb 32 bytes per round (multiply and
 * rotate), then fold.  It only has to catch corruption, not resist attack,
 * and must stay far faster than block decoding (several GB/s per core). */
#include "wdelta.h"
#include "util/hash.h"
#include <string.h>

#define K1 WD_HASH_K1
#define K2 WD_HASH_K2
#define K3 WD_HASH_K3

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint64_t absorb(uint64_t acc, uint64_t v)
{
    acc += v * K2;
    acc = rotl(acc, 31);
    return acc * K1;
}

static inline uint64_t finish(uint64_t h)
{
    h ^= h >> 33;
    h *= K2;
    h ^= h >> 29;
    h *= K3;
    h ^= h >> 32;
    return h;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HASH_VEC 1
/* The four lanes in one 256-bit vector: the same arithmetic, but a round
 * costs the lanes' dependency chain (add, rotate, multiply) instead of the
 * scalar multiplier's throughput (eight 64-bit multiplies per 32 bytes).
 * Needs AVX-512 F, VL (the 256-bit rotate) and DQ (the 64-bit multiply). */
__attribute__((target("avx2,avx512f,avx512vl,avx512dq")))
static size_t absorb_vec(const unsigned char *p, size_t n, uint64_t lanes[4])
{
    __m256i acc = _mm256_loadu_si256((const void *)lanes);
    const __m256i k1 = _mm256_set1_epi64x((long long)K1), k2 = _mm256_set1_epi64x((long long)K2);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i v = _mm256_loadu_si256((const void *)(p + i));
        acc = _mm256_add_epi64(acc, _mm256_mullo_epi64(v, k2));
        acc = _mm256_mullo_epi64(_mm256_rol_epi64(acc, 31), k1);
    }
    _mm256_storeu_si256((void *)lanes, acc);
    return i;
}

static int have_vec(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#endif

void wd_hash64_start(uint64_t lanes[4], uint64_t seed)
{
    lanes[0] = seed + K1;
    lanes[1] = seed ^ K2;
    lanes[2] = seed + K3;
    lanes[3] = seed - K1;
}

uint64_t wd_hash64_end(const uint64_t lanes[4], const void *data, size_t n, size_t done)
{
    const unsigned char *p = data;
    uint64_t l[4] = {lanes[0], lanes[1], lanes[2], lanes[3]};
    size_t i = done;
#ifdef HASH_VEC
    if (n - done >= 256 && have_vec()) i += absorb_vec(p + done, n - done, l);
#endif
    uint64_t a = l[0], b = l[1], c = l[2], d = l[3];
    for (; i + 32 <= n; i += 32) {
        a = absorb(a, load64(p + i));
        b = absorb(b, load64(p + i + 8));
        c = absorb(c, load64(p + i + 16));
        d = absorb(d, load64(p + i + 24));
    }
    uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18) + (uint64_t)n;
    for (; i + 8 <= n; i += 8) h = absorb(h ^ load64(p + i), K3);
    for (; i < n; i++) h = absorb(h ^ p[i], K1);
    return finish(h);
}

uint64_t wd_hash64(const void *data, size_t n, uint64_t seed)
{
    uint64_t lanes[4];
    wd_hash64_start(lanes, seed);
    return wd_hash64_end(lanes, data, n, 0);
}
