/* float.h - the float conversions of core/ in one place (inline: they sit in
 * the codecs' inner loops).  Bit-exact and independent of the rounding mode's
 * fused operations (-ffp-contract=off): every reader and writer of a .wdelta
 * rebuilds the same bits. */
#ifndef WDELTA_FLOAT_H
#define WDELTA_FLOAT_H

#include <stdint.h> /* uint16_t, uint32_t */
#include <string.h> /* memcpy */

static inline uint32_t wd_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float wd_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half -> float32, exact (every half is a float; subnormals too). */
static inline float wd_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return wd_f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (!man) return wd_f32_from_bits(sign);
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    return wd_f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

/* ---- float32 -> bf16 / f16, round to nearest even (NaN kept quiet) ---- */
static inline uint16_t wd_f32_to_bf16(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static inline uint16_t wd_f32_to_f16(uint32_t u)
{
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to infinity */
    if (a < 0x38800000u) { /* subnormal half or zero */
        if (a < 0x33000000u) return (uint16_t)sign; /* below half of the smallest subnormal */
        /* value = man * 2^(E-150); in units of 2^-24 that is man >> (126-E) */
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23);
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1) - 0x38000000u;
    return (uint16_t)(sign | (r >> 13));
}

#endif
