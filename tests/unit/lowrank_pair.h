/* lowrank_pair.h - the low-rank tests' inputs (test_lowrank_reject.c,
 * test_lowrank_ranks.c): a seeded Gaussian source and a bf16 pair whose
 * delta has a chosen rank and spectrum.  Each test file keeps its own seed
 * state, so its draws do not depend on the other suites. */
#ifndef WDELTA_TEST_LOWRANK_PAIR_H
#define WDELTA_TEST_LOWRANK_PAIR_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* uniform in [0, 1) from the xorshift state *st */
static inline double lp_unif(uint64_t *st)
{
    *st ^= *st << 13;
    *st ^= *st >> 7;
    *st ^= *st << 17;
    return (double)(*st >> 11) * 0x1p-53;
}
static inline double lp_gauss(uint64_t *st) /* N(0, 1), Box-Muller */
{
    double u = lp_unif(st) + 1e-12, v = lp_unif(st);
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
static inline uint16_t lp_to_bf16(float f) /* round to nearest even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
static inline float lp_from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* base: N(0, 0.02) in bf16 (m x n); ft = bf16(base + delta), delta =
 * A diag(s) B with r Gaussian components, s_k = (k + 1)^-decay (decay 0:
 * flat), or (r = 0) a full-rank Gaussian delta; its RMS is `scale` times
 * the base's.  Draws from *st: the base, A, B, then (r = 0) the delta. */
static inline void lp_make_pair(uint64_t *st, uint16_t *base, uint16_t *ft, size_t m, size_t n, unsigned r,
                                double decay, double scale)
{
    double *a = malloc((m * (r ? r : 1) + 1) * sizeof *a), *b = malloc(((r ? r : 1) * n + 1) * sizeof *b);
    double *d = malloc(m * n * sizeof *d), dd = 0, ww = 0;
    for (size_t i = 0; i < m * n; i++) base[i] = lp_to_bf16((float)(0.02 * lp_gauss(st)));
    for (size_t i = 0; i < m * r; i++) a[i] = lp_gauss(st);
    for (size_t k = 0; k < r; k++)
        for (size_t j = 0; j < n; j++) b[k * n + j] = lp_gauss(st) * pow((double)k + 1, -decay);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double acc = 0;
            if (r)
                for (unsigned k = 0; k < r; k++) acc += a[i * r + k] * b[k * n + j];
            else
                acc = lp_gauss(st);
            d[i * n + j] = acc;
            dd += acc * acc;
            ww += (double)lp_from_bf16(base[i * n + j]) * lp_from_bf16(base[i * n + j]);
        }
    double f = scale * sqrt(ww / dd);
    for (size_t i = 0; i < m * n; i++) ft[i] = lp_to_bf16((float)(lp_from_bf16(base[i]) + (float)(d[i] * f)));
    free(a), free(b), free(d);
}

#endif
