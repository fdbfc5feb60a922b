/* checksum.c - wd_hash64, the fast per-block checksum.
 *
 * Four independent 64-bit lanes absorb 32 bytes per round (multiply and
 * rotate), then fold.  It only has to catch corruption, not resist attack,
 * and must stay far faster than block decoding (several GB/s per core). */
#include "wdelta.h"
#include <string.h>

#define K1 0x9E3779B185EBCA87ull
#define K2 0xC2B2AE3D27D4EB4Full
#define K3 0x165667B19E3779F9ull

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

uint64_t wd_hash64(const void *data, size_t n, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t a = seed + K1, b = seed ^ K2, c = seed + K3, d = seed - K1;
    size_t i = 0;
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
