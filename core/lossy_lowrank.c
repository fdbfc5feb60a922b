/* lossy_lowrank.c - the low-rank predictor (issue 8) and its two codecs:
 *   lowrank        (lossy)  the block's delta as U.V, FP16 factors only;
 *   lowrank-exact  (exact)  the same factors as a prediction, and the block
 *                           coded losslessly against it: a sparse residual
 *                           of the mispredicted values (below), or codec.c's
 *                           lossless codec with the prediction in place of
 *                           the base, whichever is smaller.
 * Each block holds whole rows and its own factors (its rows of U and a V of
 * all columns), so it decodes alone given its base rows.
 *
 * Fit: D = float32(ft) - float32(base) of the block's rows; randomized
 * subspace iteration (KMAX + 8 columns, 3 power iterations, float64), then
 * the small Gram eigenproblem by Jacobi rotations.  Memory beyond the block:
 * O((rows + cols) x (KMAX + 8)).
 *
 * Prediction (core/FORMAT.md, "lowrank"): u[i][k] = half(U16[i][k]) * 2^-eu,
 * v[k][j] = half(V16[k][j]) * 2^-ev (both exact in float32); for each
 * element, in float32 without contraction:
 *   acc = 0; for k = 0 .. rank-1: acc = acc + u[i][k] * v[k][j];
 *   P = round_to_dtype(float32(base) + acc)   (round to nearest even). */
#include "lossy.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define LR_OVER 8
#define LR_POWER 3

/* ---- dense helpers (float64) ----------------------------------------- */
/* Orthonormalize the l columns of a (m x l, row-major) by modified
 * Gram-Schmidt, twice; a column that vanishes becomes zero. */
static void orthonormalize(double *a, size_t m, size_t l)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t k = 0; k < l; k++) {
            for (size_t q = 0; q < k; q++) {
                double dot = 0;
                for (size_t i = 0; i < m; i++) dot += a[i * l + q] * a[i * l + k];
                for (size_t i = 0; i < m; i++) a[i * l + k] -= dot * a[i * l + q];
            }
            double nn = 0;
            for (size_t i = 0; i < m; i++) nn += a[i * l + k] * a[i * l + k];
            nn = sqrt(nn);
            double inv = nn > 1e-300 ? 1.0 / nn : 0.0;
            for (size_t i = 0; i < m; i++) a[i * l + k] *= inv;
        }
}

/* Symmetric eigen-decomposition of g (l x l) by cyclic Jacobi: g's diagonal
 * ends as the eigenvalues, w (l x l) holds the eigenvectors as columns. */
static void jacobi(double *g, double *w, size_t l)
{
    for (size_t i = 0; i < l; i++)
        for (size_t j = 0; j < l; j++) w[i * l + j] = i == j;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, tot = 0;
        for (size_t i = 0; i < l; i++)
            for (size_t j = 0; j < l; j++) {
                tot += g[i * l + j] * g[i * l + j];
                if (i != j) off += g[i * l + j] * g[i * l + j];
            }
        if (off <= 1e-30 * tot || off == 0) break;
        for (size_t p = 0; p < l; p++)
            for (size_t q = p + 1; q < l; q++) {
                double apq = g[p * l + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (g[q * l + q] - g[p * l + p]) / (2 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (size_t k = 0; k < l; k++) { /* columns p, q */
                    double gp = g[k * l + p], gq = g[k * l + q];
                    g[k * l + p] = c * gp - s * gq;
                    g[k * l + q] = s * gp + c * gq;
                }
                for (size_t k = 0; k < l; k++) { /* rows p, q */
                    double gp = g[p * l + k], gq = g[q * l + k];
                    g[p * l + k] = c * gp - s * gq;
                    g[q * l + k] = s * gp + c * gq;
                }
                for (size_t k = 0; k < l; k++) {
                    double wp = w[k * l + p], wq = w[k * l + q];
                    w[k * l + p] = c * wp - s * wq;
                    w[k * l + q] = s * wp + c * wq;
                }
            }
    }
}

static uint64_t xs(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

/* WD_VEC: the two products below are the whole cost of a fit (perf: 2/3 of
 * a lossless pairB create); their inner loops over the l columns vectorize. */
WD_VEC int wd_lowrank_fit(const float *d, size_t m, size_t n, unsigned kmax, double *uf, double *vf, double *sv,
                          unsigned *kout, wd_err *err)
{
    size_t l = kmax + LR_OVER;
    if (l > m) l = m;
    if (l > n) l = n;
    *kout = 0;
    if (l == 0) return 0;
    double *y = malloc(m * l * sizeof *y), *z = malloc(n * l * sizeof *z), *g = malloc(l * l * sizeof *g),
           *w = malloc(l * l * sizeof *w);
    if (!y || !z || !g || !w) {
        free(y), free(z), free(g), free(w);
        return wd_errf(err, "out of memory fitting a low-rank delta (%zu x %zu)", m, n);
    }
    uint64_t st = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n * l; i++) z[i] = (double)(xs(&st) >> 11) * 0x1p-53 - 0.5;
    for (int it = 0; it <= LR_POWER; it++) {
        /* y = D z */
        memset(y, 0, m * l * sizeof *y);
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double dij = d[i * n + j];
                for (size_t k = 0; k < l; k++) y[i * l + k] += dij * z[j * l + k];
            }
        orthonormalize(y, m, l);
        /* z = D^T y */
        memset(z, 0, n * l * sizeof *z);
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double dij = d[i * n + j];
                for (size_t k = 0; k < l; k++) z[j * l + k] += dij * y[i * l + k];
            }
        if (it < LR_POWER) orthonormalize(z, n, l);
    }
    /* now z = D^T Q = B^T (n x l); G = B B^T = z^T z */
    for (size_t a = 0; a < l; a++)
        for (size_t b = 0; b < l; b++) {
            double acc = 0;
            for (size_t j = 0; j < n; j++) acc += z[j * l + a] * z[j * l + b];
            g[a * l + b] = acc;
        }
    jacobi(g, w, l);
    /* order eigenvalues descending */
    size_t ord[128];
    for (size_t a = 0; a < l; a++) ord[a] = a;
    for (size_t a = 0; a < l; a++)
        for (size_t b = a + 1; b < l; b++)
            if (g[ord[b] * l + ord[b]] > g[ord[a] * l + ord[a]]) {
                size_t t = ord[a];
                ord[a] = ord[b];
                ord[b] = t;
            }
    unsigned k = (unsigned)(l < kmax ? l : kmax);
    for (unsigned c = 0; c < k; c++) {
        double lam = g[ord[c] * l + ord[c]];
        double s = lam > 0 ? sqrt(lam) : 0;
        sv[c] = s;
        double rs = sqrt(s), inv = s > 0 ? 1.0 / s : 0;
        /* left vector: Q w_c; right: B^T w_c / s */
        for (size_t i = 0; i < m; i++) {
            double acc = 0;
            for (size_t a = 0; a < l; a++) acc += y[i * l + a] * w[a * l + ord[c]];
            uf[i * kmax + c] = acc * rs;
        }
        for (size_t j = 0; j < n; j++) {
            double acc = 0;
            for (size_t a = 0; a < l; a++) acc += z[j * l + a] * w[a * l + ord[c]];
            vf[c * n + j] = acc * inv * rs;
        }
    }
    *kout = k;
    free(y), free(z), free(g), free(w);
    return 0;
}

/* Rank from the spectrum: the largest gap s_k / s_{k+1} if it is at least
 * 4; no gap: every computed component; 0 for a zero delta. */
unsigned wd_lowrank_gap_rank(const double *sv, unsigned k)
{
    if (k == 0 || !(sv[0] > 0)) return 0;
    unsigned best = k;
    double bestr = 4;
    for (unsigned c = 0; c + 1 < k; c++) {
        double den = sv[c + 1] > sv[0] * 1e-12 ? sv[c + 1] : sv[0] * 1e-12;
        double r = sv[c] / den;
        if (r >= bestr) {
            bestr = r;
            best = c + 1;
        }
    }
    return best;
}

/* ---- prediction -------------------------------------------------------- */
static unsigned fexp(const double *v, size_t n, size_t stride, unsigned k)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        for (unsigned c = 0; c < k; c++) m = fabs(v[i * stride + c]) > m ? fabs(v[i * stride + c]) : m;
    if (!(m > 0) || !isfinite(m)) return 0;
    int e = (int)floor(log2(16384.0 / m));
    return e < 0 ? 0 : e > 100 ? 100 : (unsigned)e;
}

/* acc[j] = sum over k of u[k] * v[k][j], k ascending, in float32.  The
 * columns go in chunks of 64 (8 vectors of 8) whose partial sums stay in
 * registers for the whole k loop: a row of acc kept in memory cost a load
 * and a store per k, and one vector's chain of dependent adds is
 * latency-bound.  Vector lanes are plain IEEE float operations and
 * -ffp-contract=off keeps mul and add apart, so each element still sees
 * 0 + u0 v0 + u1 v1 + ... rounded step by step, as the scalar tail does. */
typedef float lr_v8 __attribute__((vector_size(32)));
#define LR_MAC(a, t) do { lr_v8 x_; memcpy(&x_, vk + 8 * (t), sizeof x_); a = a + b * x_; } while (0)

WD_VEC
static void row_acc(float *restrict acc, const float *restrict u, const float *restrict v, size_t cols,
                    unsigned rank)
{
    size_t j = 0;
    for (; j + 64 <= cols; j += 64) {
        lr_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
        for (unsigned k = 0; k < rank; k++) {
            float uk = u[k];
            lr_v8 b = {uk, uk, uk, uk, uk, uk, uk, uk};
            const float *vk = v + (size_t)k * cols + j;
            LR_MAC(a0, 0); LR_MAC(a1, 1); LR_MAC(a2, 2); LR_MAC(a3, 3);
            LR_MAC(a4, 4); LR_MAC(a5, 5); LR_MAC(a6, 6); LR_MAC(a7, 7);
        }
        float *o = acc + j; /* one store per register: an array of them would live on the stack */
        memcpy(o, &a0, 32), memcpy(o + 8, &a1, 32), memcpy(o + 16, &a2, 32), memcpy(o + 24, &a3, 32);
        memcpy(o + 32, &a4, 32), memcpy(o + 40, &a5, 32), memcpy(o + 48, &a6, 32), memcpy(o + 56, &a7, 32);
    }
    for (; j + 8 <= cols; j += 8) {
        lr_v8 a0 = {0};
        for (unsigned k = 0; k < rank; k++) {
            float uk = u[k];
            lr_v8 b = {uk, uk, uk, uk, uk, uk, uk, uk};
            const float *vk = v + (size_t)k * cols + j;
            LR_MAC(a0, 0);
        }
        memcpy(acc + j, &a0, sizeof a0);
    }
    for (; j < cols; j++) {
        float a = 0.0f;
        for (unsigned k = 0; k < rank; k++) a = a + u[k] * v[(size_t)k * cols + j];
        acc[j] = a;
    }
}

/* out = prediction of rows x cols from float factors u (rows x rank) and
 * v (rank x cols); acc: cols floats. */
void wd_lowrank_predict(unsigned char *out, const unsigned char *base, wd_dtype dt, const float *u,
                        const float *v, size_t rows, size_t cols, unsigned rank, float *acc)
{
    unsigned w = wd_dtype_size(dt);
    for (size_t i = 0; i < rows; i++) {
        row_acc(acc, u + i * rank, v, cols, rank);
        lf_apply(out + i * cols * w, base + i * cols * w, dt, acc, cols);
    }
}

/* FP16 factors -> float32 (times 2^-e), the value ls_scale gives: the half's
 * bits moved into a float and multiplied by 2^112 rebase the exponent
 * exactly (subnormal halves included), inline and vectorizable.  Returns the
 * number of infinite or NaN halves (exponent field 31), which make a block
 * corrupt (the encoder never writes them). */
WD_VEC
static size_t unhalf(float *restrict dst, const unsigned char *restrict src, size_t n, unsigned e)
{
    float sc = ls_pow2m(e);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t h = (uint32_t)src[2 * i] | (uint32_t)src[2 * i + 1] << 8;
        float mag = lf_from_bits((h & 0x7fffu) << 13) * 0x1p112f;
        dst[i] = lf_from_bits(lf_bits(mag) | (h & 0x8000u) << 16) * sc;
        bad += (h & 0x7c00u) == 0x7c00u;
    }
    return bad;
}

/* ---- the sparse residual of lowrank-exact ('S') ---------------------- */
/* Most predicted values are exact (pairLoRA: 85%), so the residual lists
 * only the elements that differ: their positions as gaps (bytes; 255 means
 * "add 255 and read on"), and their zigzag key differences (as in the
 * lossless codec) in w byte planes, split by the predicted element's
 * exponent into up to SR_K contexts, since how far a miss lands in units of
 * the last place grows as the exponent shrinks.  Decoding touches only the
 * listed elements: the prediction goes straight into the output, which the
 * plain lossless codec (a pass over every element's code) could not do. */
#define SR_TAG 'S'
#define SR_K 8
#define SR_RAW_BELOW 64 /* frames shorter than this are stored raw */

typedef struct srspec {
    unsigned w, shift, mask, lo, k;
} srspec;

static srspec sr_spec(wd_dtype dt)
{
    if (dt == WD_F32) return (srspec){4, 23, 0xff, 0, SR_K};
    if (dt == WD_F16) return (srspec){2, 10, 0x1f, 0, SR_K};
    return (srspec){2, 7, 0xff, 0, SR_K};
}


static inline unsigned sr_ctx(uint32_t x, const srspec *c)
{
    unsigned e = x >> c->shift & c->mask;
    return e < c->lo ? 0 : e - c->lo >= c->k ? c->k - 1 : e - c->lo;
}

/* order-preserving key of a float's bits (sign-magnitude -> offset
 * binary), branch-free: the sign of a missed value is a coin toss */
static inline uint32_t sr_key(uint32_t x, unsigned w)
{
    uint32_t top = 8 * w - 1, mask = w == 2 ? 0xffffu : 0xffffffffu;
    return (x ^ ((uint32_t) - (x >> top & 1) | 1u << top)) & mask;
}

static inline uint32_t sr_unkey(uint32_t k, unsigned w)
{
    uint32_t top = 8 * w - 1, mask = w == 2 ? 0xffffu : 0xffffffffu;
    return (k ^ ((uint32_t) - ((k >> top & 1) ^ 1) | 1u << top)) & mask;
}

/* zigzag code of ft's key minus the prediction's, modulo 2^(8w); 0 = exact */
static inline uint32_t sr_code(uint32_t f, uint32_t p, unsigned w)
{
    uint32_t mask = w == 2 ? 0xffffu : 0xffffffffu, top = 8 * w - 1;
    uint32_t d = (sr_key(f, w) - sr_key(p, w)) & mask;
    return ((d << 1) ^ (uint32_t) - (int32_t)((d >> top) & 1)) & mask;
}

static inline uint32_t sr_rebuild(uint32_t p, uint32_t z, unsigned w)
{
    uint32_t mask = w == 2 ? 0xffffu : 0xffffffffu;
    uint32_t d = ((z >> 1) ^ (uint32_t) - (int32_t)(z & 1)) & mask;
    return sr_unkey((sr_key(p, w) + d) & mask, w);
}

/* The window of k exponents holding the most misses: their contexts. */
static unsigned sr_window(const unsigned char *ft, const unsigned char *pred, size_t ne, const srspec *c)
{
    uint32_t hist[256] = {0};
    for (size_t i = 0; i < ne; i++) {
        uint32_t p = lf_loadw(pred, i, c->w);
        if (lf_loadw(ft, i, c->w) != p) hist[p >> c->shift & c->mask]++;
    }
    uint64_t best = 0, cur = 0;
    unsigned lo = 0;
    for (unsigned e = 0; e <= c->mask; e++) {
        cur += hist[e];
        if (e >= c->k) cur -= hist[e - c->k];
        if (cur > best) best = cur, lo = e + 1 >= c->k ? e + 1 - c->k : 0;
    }
    return lo;
}

/* A frame of n bytes: u32 z, then z bytes, raw when z == n, else zstd. */
static int sr_frame_put(lbuf *out, wd_scratch *s, const unsigned char *src, size_t n, int level,
                        unsigned char *tmp, size_t cap, wd_err *err)
{
    size_t z = n;
    if (n >= SR_RAW_BELOW && wd_zstd_compress(s, tmp, cap, src, n, level, &z, err)) return -1;
    if (z >= n) z = n, tmp = NULL;
    lb_u32(out, (uint32_t)z);
    lb_put(out, tmp ? tmp : src, z);
    return 0;
}

int wd_lowrank_sparse_put(lbuf *out, wd_scratch *s, int level, wd_dtype dt, const unsigned char *ft,
                     const unsigned char *pred, size_t ne, wd_err *err)
{
    srspec c = sr_spec(dt);
    c.lo = sr_window(ft, pred, ne, &c);
    uint32_t cnt[SR_K] = {0}, pos[SR_K];
    size_t total = 0;
    for (size_t i = 0; i < ne; i++) {
        uint32_t p = lf_loadw(pred, i, c.w);
        if (lf_loadw(ft, i, c.w) != p) cnt[sr_ctx(p, &c)]++, total++;
    }
    size_t cap = ZSTD_COMPRESSBOUND(total + 1);
    unsigned char *gaps = malloc(total + ne / 255 + 1), *planes = malloc(c.w * total + 1), *tmp = malloc(cap);
    if (!gaps || !planes || !tmp) {
        free(gaps), free(planes), free(tmp);
        return wd_errf(err, "out of memory");
    }
    for (unsigned k = 0, at = 0; k < c.k; at += cnt[k], k++) pos[k] = at;
    size_t ng = 0, next = 0;
    for (size_t i = 0; i < ne; i++) {
        uint32_t f = lf_loadw(ft, i, c.w), p = lf_loadw(pred, i, c.w);
        if (f == p) continue;
        size_t g = i - next;
        for (; g >= 255; g -= 255) gaps[ng++] = 255;
        gaps[ng++] = (unsigned char)g;
        next = i + 1;
        uint32_t z = sr_code(f, p, c.w), q = pos[sr_ctx(p, &c)]++;
        for (unsigned b = 0; b < c.w; b++) planes[b * total + q] = (unsigned char)(z >> (8 * b));
    }
    unsigned char hdr[4] = {SR_TAG, (unsigned char)c.k, (unsigned char)c.lo, 0};
    lb_put(out, hdr, 4);
    for (unsigned k = 0; k < c.k; k++) lb_u32(out, cnt[k]);
    int rc = lb_section(out, s, gaps, ng, level, err);
    for (unsigned b = 0; b < c.w && !rc; b++)
        for (unsigned k = 0, at = 0; k < c.k && !rc; at += cnt[k], k++)
            rc = sr_frame_put(out, s, planes + b * total + at, cnt[k], level, tmp, cap, err);
    free(gaps), free(planes), free(tmp);
    return rc;
}

/* Read the frames of the code planes into planes (w x total bytes). */
static int sr_frames_get(lrd *r, wd_scratch *s, const uint32_t *cnt, const srspec *c, size_t total,
                         unsigned char *planes, wd_err *err)
{
    for (unsigned b = 0; b < c->w; b++)
        for (unsigned k = 0, at = 0; k < c->k; at += cnt[k], k++) {
            uint32_t z;
            if (lr_u32(r, &z, err)) return -1;
            unsigned char *dst = planes + b * total + at;
            if (z > cnt[k] || z > r->len - r->at)
                return wd_errf(err, "residual frame (plane %u, context %u) of %u bytes is corrupt", b, k, z);
            size_t got = z;
            if (z == cnt[k]) memcpy(dst, r->p + r->at, z);
            else if (wd_zstd_decompress(s, dst, cnt[k], r->p + r->at, z, &got, err))
                return wd_errprefix(err, "residual frame (plane %u, context %u)", b, k);
            if (got != cnt[k])
                return wd_errf(err, "residual frame (plane %u, context %u) holds %zu bytes, expected %u", b, k, got,
                               cnt[k]);
            r->at += z;
        }
    return 0;
}

/* Patch the listed elements of out (which holds the prediction).  w is a
 * constant after inlining. */
static inline __attribute__((always_inline)) int sr_patch(unsigned char *out, size_t ne, unsigned w,
                                                          const srspec *c, const unsigned char *g, size_t glen,
                                                          const unsigned char *planes, size_t total,
                                                          const uint32_t *start, wd_err *err)
{
    uint32_t pos[SR_K];
    memcpy(pos, start, sizeof pos);
    uint8_t map[256]; /* exponent -> context, a lookup instead of two unpredictable branches */
    for (unsigned e = 0; e <= c->mask; e++) map[e] = (uint8_t)sr_ctx(e << c->shift, c);
    size_t at = 0, i = 0;
    for (size_t j = 0; j < total; j++, i++) {
        unsigned b;
        do {
            if (at >= glen) return wd_errf(err, "residual positions end after %zu of %zu", j, total);
            b = g[at++];
            i += b;
        } while (b == 255);
        if (i >= ne) return wd_errf(err, "residual position %zu is past the block (%zu elements)", i, ne);
        uint32_t p = lf_loadw(out, i, w);
        unsigned k = map[p >> c->shift & c->mask];
        uint32_t q = pos[k]++;
        if (q >= start[k + 1]) return wd_errf(err, "residual context %u has more positions than codes", k);
        uint32_t z = planes[q] | (uint32_t)planes[total + q] << 8;
        if (w == 4) z |= (uint32_t)planes[2 * total + q] << 16 | (uint32_t)planes[3 * total + q] << 24;
        if (!z) return wd_errf(err, "residual lists element %zu with a zero difference", i);
        lf_storew(out, i, w, sr_rebuild(p, z, w));
    }
    if (at != glen) return wd_errf(err, "residual has %zu stray position bytes", glen - at);
    for (unsigned k = 0; k < c->k; k++)
        if (pos[k] != start[k + 1]) return wd_errf(err, "residual context %u has fewer positions than codes", k);
    return 0;
}

/* Decode a sparse residual of len bytes at src onto out (the prediction). */
static int sr_decode(wd_scratch *s, wd_dtype dt, const unsigned char *src, size_t len, unsigned char *out,
                     size_t ne, wd_err *err)
{
    srspec c = sr_spec(dt);
    if (len < 4 || src[0] != SR_TAG || src[1] == 0 || src[1] > SR_K || src[2] > c.mask || src[3] != 0)
        return wd_errf(err, "residual header is corrupt");
    c.k = src[1], c.lo = src[2];
    lrd r = {src, len, 4};
    uint32_t cnt[SR_K], start[SR_K + 1] = {0};
    for (unsigned k = 0; k < c.k; k++) {
        if (lr_u32(&r, &cnt[k], err)) return -1;
        if (cnt[k] > ne - start[k]) return wd_errf(err, "residual lists more than %zu elements", ne);
        start[k + 1] = start[k] + cnt[k];
    }
    size_t total = start[c.k], glen;
    const unsigned char *g;
    if (lr_section(&r, s, LS_C, SIZE_MAX, total + ne / 255 + 1, &g, &glen, err))
        return wd_errprefix(err, "residual positions");
    unsigned char *planes = wd_scratch_buf(s, LS_D, c.w * total + 1);
    if (!planes) return wd_errf(err, "out of memory");
    if (sr_frames_get(&r, s, cnt, &c, total, planes, err)) return -1;
    if (r.at != len) return wd_errf(err, "residual has %zu trailing bytes", len - r.at);
    if (c.w == 2) return sr_patch(out, ne, 2, &c, g, glen, planes, total, start, err);
    return sr_patch(out, ne, 4, &c, g, glen, planes, total, start, err);
}

/* ---- encode ---------------------------------------------------------- */
/* Write header + factors of `rank` components (+ for exact, the residual);
 * pred (n bytes) receives the prediction. */
static int put_block(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                     const unsigned char *ft, const unsigned char *base, size_t rows, size_t cols,
                     const double *uf, const double *vf, unsigned kmax, unsigned rank, unsigned char *pred,
                     lbuf *out, wd_err *err)
{
    unsigned w = wd_dtype_size(dt);
    size_t n = rows * cols * w;
    unsigned eu = fexp(uf, rows, kmax, rank), ev;
    {   /* v is rank x cols */
        double m = 0;
        for (size_t i = 0; i < (size_t)rank * cols; i++) m = fabs(vf[i]) > m ? fabs(vf[i]) : m;
        int e = m > 0 && isfinite(m) ? (int)floor(log2(16384.0 / m)) : 0;
        ev = e < 0 ? 0 : e > 100 ? 100 : (unsigned)e;
    }
    {   /* factors FP16 cannot hold (deltas beyond 2^15): no prediction */
        double m = 0;
        for (size_t i = 0; i < rows; i++)
            for (unsigned c = 0; c < rank; c++) m = fabs(uf[i * kmax + c]) > m ? fabs(uf[i * kmax + c]) : m;
        for (size_t i = 0; i < (size_t)rank * cols; i++) m = fabs(vf[i]) > m ? fabs(vf[i]) : m;
        if (!(m < 32768.0)) rank = 0, eu = ev = 0;
    }
    size_t nu = rows * rank, nv = (size_t)rank * cols;
    unsigned char *hu = malloc(2 * nu + 2 * nv + 2);
    float *fu = malloc((nu + nv + cols + 1) * sizeof(float));
    if (!hu || !fu) {
        free(hu), free(fu);
        return wd_errf(err, "out of memory");
    }
    unsigned char *hv = hu + 2 * nu;
    for (size_t i = 0; i < rows; i++)
        for (unsigned c = 0; c < rank; c++) {
            uint16_t h = ls_to_half((float)uf[i * kmax + c], eu);
            hu[2 * (i * rank + c)] = (unsigned char)h;
            hu[2 * (i * rank + c) + 1] = (unsigned char)(h >> 8);
        }
    for (size_t i = 0; i < nv; i++) {
        uint16_t h = ls_to_half((float)vf[i], ev);
        hv[2 * i] = (unsigned char)h;
        hv[2 * i + 1] = (unsigned char)(h >> 8);
    }
    float *fv = fu + nu, *acc = fv + nv;
    unhalf(fu, hu, nu, eu);
    unhalf(fv, hv, nv, ev);
    wd_lowrank_predict(pred, base, dt, fu, fv, rows, cols, rank, acc);
    unsigned char hdr[WD_LOSSY_HDR];
    lhdr h = {(unsigned)codec, w, lh_kind(dt), (uint32_t)cols, (uint32_t)rows, rank, eu | ev << 8};
    lh_put(hdr, &h);
    lb_put(out, hdr, sizeof hdr);
    int rc = lb_section(out, s, hu, 2 * nu, p->level ? p->level : 3, err);
    if (!rc) rc = lb_section(out, s, hv, 2 * nv, p->level ? p->level : 3, err);
    free(hu), free(fu);
    if (rc) return -1;
    if (codec == WD_CODEC_LOWRANK_EXACT) { /* the smaller residual: sparse or the lossless codec */
        int level = p->level ? p->level : 3;
        const unsigned char *enc;
        size_t len;
        lbuf sp = {0};
        if (wd_lowrank_sparse_put(&sp, s, level, dt, ft, pred, rows * cols, err) ||
            wd_encode_block(s, WD_CODEC_LOSSLESS, dt, level, ft, pred, n, &enc, &len, err)) {
            free(sp.p);
            return -1;
        }
        if (sp.oom) return wd_errf(err, "out of memory encoding a block");
        if (sp.len <= len) enc = sp.p, len = sp.len;
        lb_u32(out, (uint32_t)len);
        lb_put(out, enc, len);
        free(sp.p);
    }
    return out->oom ? wd_errf(err, "out of memory encoding a block") : 0;
}

int wd_lowrank_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                      const unsigned char *ft, const unsigned char *base, size_t n, lbuf *out,
                      unsigned *rank_out, wd_err *err)
{
    unsigned w = wd_dtype_size(dt), kmax = p->rank ? p->rank : WD_LOWRANK_KMAX;
    if (kmax > WD_LOWRANK_KMAX) kmax = WD_LOWRANK_KMAX;
    size_t ne = n / w, cols = p->cols, rows = ne / cols;
    float *d = malloc(ne * sizeof *d + 1);
    double *uf = malloc(rows * kmax * sizeof *uf + 8), *vf = malloc(kmax * cols * sizeof *vf + 8);
    double sv[WD_LOWRANK_KMAX];
    unsigned char *pred = malloc(n + 1);
    lbuf best = {0};
    int rc = -1;
    if (!d || !uf || !vf || !pred) {
        wd_errf(err, "out of memory");
        goto out;
    }
    lf_delta(ft, base, dt, ne, d);
    unsigned k;
    if (wd_lowrank_fit(d, rows, cols, kmax, uf, vf, sv, &k, err)) goto out;
    /* v as rank rows of cols (fit stores it so) */
    unsigned rank;
    if (codec == WD_CODEC_LOWRANK) {
        rank = p->rank ? (k < p->rank ? k : p->rank) : wd_lowrank_gap_rank(sv, k);
        while (rank > 0 && !(sv[rank - 1] > 0)) rank--;
        if (put_block(s, codec, dt, p, ft, base, rows, cols, uf, vf, kmax, rank, pred, out, err)) goto out;
    } else {
        /* exact: try candidate ranks and keep the smallest block */
        static const unsigned cand[] = {0, 1, 2, 4, 6, 8, 12, 16, 24, 32};
        unsigned gap = wd_lowrank_gap_rank(sv, k);
        rank = 0;
        size_t ncand = sizeof cand / sizeof cand[0];
        for (size_t c = 0; c <= ncand; c++) {
            unsigned r = c < ncand ? cand[c] : gap;
            if (r > k || (c == ncand && (gap == 0 || gap > k))) continue;
            if (r > 0 && !(sv[r - 1] > 0)) continue;
            if (p->rank && r != (k < p->rank ? k : p->rank)) continue;
            lbuf t = {0};
            if (put_block(s, codec, dt, p, ft, base, rows, cols, uf, vf, kmax, r, pred, &t, err)) {
                free(t.p);
                goto out;
            }
            if (!best.p || t.len < best.len) {
                free(best.p);
                best = t;
                rank = r;
            } else {
                free(t.p);
            }
        }
        if (!best.p) { /* p->rank above what the fit found */
            if (put_block(s, codec, dt, p, ft, base, rows, cols, uf, vf, kmax, 0, pred, &best, err)) goto out;
        }
        lb_put(out, best.p, best.len);
    }
    if (rank_out) *rank_out = rank;
    rc = out->oom ? wd_errf(err, "out of memory") : 0;
out:
    free(d), free(uf), free(vf), free(pred), free(best.p);
    return rc;
}

/* ---- decode ---------------------------------------------------------- */
int wd_lowrank_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r,
                      const unsigned char *base, unsigned char *out, size_t n, wd_err *err)
{
    size_t rows = h->rows, cols = h->cols;
    unsigned rank = h->p1, eu = h->p2 & 0xff, ev = (h->p2 >> 8) & 0xff;
    if (rank > WD_LOWRANK_KMAX || eu > 100 || ev > 100 || (h->p2 >> 16))
        return wd_errf(err, "lowrank block has rank %u and exponents %u/%u (corrupt)", rank, eu, ev);
    size_t nu = rows * rank, nv = (size_t)rank * cols;
    const unsigned char *hu, *hv;
    size_t lu, lv;
    if (lr_section(r, s, LS_C, 2 * nu, 2 * nu, &hu, &lu, err)) return wd_errprefix(err, "lowrank U");
    if (lr_section(r, s, LS_D, 2 * nv, 2 * nv, &hv, &lv, err)) return wd_errprefix(err, "lowrank V");
    float *fu = (float *)(void *)wd_scratch_buf(s, LS_E, (nu + nv + cols + 1) * sizeof(float));
    if (!fu) return wd_errf(err, "out of memory");
    float *fv = fu + nu, *acc = fv + nv;
    if (unhalf(fu, hu, nu, eu) + unhalf(fv, hv, nv, ev))
        return wd_errf(err, "lowrank block has a non-finite factor (corrupt)");
    if (codec == WD_CODEC_LOWRANK) {
        wd_lowrank_predict(out, base, dt, fu, fv, rows, cols, rank, acc);
        return 0;
    }
    uint32_t len;
    if (lr_u32(r, &len, err)) return -1;
    if (len == 0 || len > r->len - r->at)
        return wd_errf(err, "lowrank-exact residual of %u bytes does not fit the block", len);
    const unsigned char *res = r->p + r->at;
    r->at += len;
    if (res[0] == SR_TAG) { /* sparse: patch the prediction in place */
        wd_lowrank_predict(out, base, dt, fu, fv, rows, cols, rank, acc);
        return sr_decode(s, dt, res, len, out, rows * cols, err) ? wd_errprefix(err, "lowrank-exact") : 0;
    }
    unsigned char *pred = wd_scratch_buf(s, LS_F, n + 1);
    if (!pred) return wd_errf(err, "out of memory");
    wd_lowrank_predict(pred, base, dt, fu, fv, rows, cols, rank, acc);
    if (wd_decode_block(s, WD_CODEC_LOSSLESS, dt, res, len, pred, out, n, err))
        return wd_errprefix(err, "lowrank-exact residual");
    return 0;
}

/* ---- per tensor: is lowrank-exact smaller than plain lossless? --------- */
int wd_lowrank_measure(const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base, void *base_ctx,
                       uint64_t base_off, wd_codec codec, int level, uint32_t target_bs, uint64_t *stored,
                       uint64_t *plain, unsigned *max_rank, wd_err *err)
{
    *stored = *plain = 0;
    *max_rank = 0;
    uint32_t bs = wd_lossy_block_size(t, target_bs);
    if (!bs) return wd_errf(err, "tensor %s: rows too long for row blocks", t->name);
    wd_scratch *s = wd_scratch_new();
    unsigned char *ft = malloc(bs), *base = malloc(bs);
    int rc = -1;
    if (!s || !ft || !base) {
        wd_errf(err, "out of memory");
        goto out;
    }
    wd_lossy_params p = {(uint32_t)t->shape[t->ndim - 1], 0, 0, 0, level, 0, 0};
    if (codec == WD_CODEC_LOWRANK_EXACT) {
        /* cheap test first (full fine-tunes fail it): up to 64 rows of the
         * first block need a spectral gap at rank <= 16 holding 80% of
         * their squared delta */
        size_t w = wd_dtype_size(t->dtype), cols = p.cols, rows = bs / (cols * w);
        if (rows > 64) rows = 64; /* 64 show a rank <= 16; 256 made pairB create 0.68 s, not 0.41 */
        size_t n = rows * cols * w;
        if (n > t->length) n = (size_t)t->length, rows = n / (cols * w);
        if (wd_pread_full(ft_fd, ft, n, t->offset, ft_path, err) ||
            read_base(base_ctx, base, n, base_off, err)) {
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        float *d = malloc(rows * cols * sizeof *d + 1);
        double *uf = malloc(rows * 16 * sizeof *uf + 8), *vf = malloc(16 * cols * sizeof *vf + 8), sv[16];
        unsigned k = 0, r = 0;
        int ok = d && uf && vf;
        if (!ok) wd_errf(err, "out of memory");
        if (ok) {
            lf_delta(ft, base, t->dtype, rows * cols, d);
            ok = wd_lowrank_fit(d, rows, cols, 16, uf, vf, sv, &k, err) == 0;
        }
        double tot = 0, cap = 0;
        if (ok) {
            for (size_t i = 0; i < rows * cols; i++) tot += (double)d[i] * d[i];
            r = wd_lowrank_gap_rank(sv, k);
            for (unsigned c = 0; c < r && r < k; c++) cap += sv[c] * sv[c];
        }
        free(d), free(uf), free(vf);
        if (!ok) {
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        if (!(r > 0 && r < k && cap >= 0.8 * tot)) { /* not low-rank: plain lossless */
            *stored = 1, *plain = 0;
            rc = 0;
            goto out;
        }
    }
    for (uint64_t at = 0; at < t->length; at += bs) {
        size_t n = (size_t)(t->length - at < bs ? t->length - at : bs);
        if (wd_pread_full(ft_fd, ft, n, t->offset + at, ft_path, err) ||
            read_base(base_ctx, base, n, base_off + at, err)) {
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        lbuf ob = {0};
        unsigned r = 0;
        if (wd_lowrank_encode(s, codec, t->dtype, &p, ft, base, n, &ob, &r, err)) {
            free(ob.p);
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        *stored += ob.len + WD_LOSSY_HDR;
        free(ob.p);
        if (r > *max_rank) *max_rank = r;
        if (codec == WD_CODEC_LOWRANK_EXACT) {
            const unsigned char *enc;
            size_t len;
            if (wd_encode_block(s, WD_CODEC_LOSSLESS, t->dtype, level, ft, base, n, &enc, &len, err)) {
                wd_errprefix(err, "tensor %s", t->name);
                goto out;
            }
            *plain += len;
        }
    }
    rc = 0;
out:
    wd_scratch_free(s);
    free(ft);
    free(base);
    return rc;
}
