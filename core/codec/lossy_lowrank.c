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
 * Rank (issue 21): a merged LoRA's delta is a rank-r matrix plus the
 * rounding noise of the fine-tune's dtype; the rank test (wd_lowrank_detect)
 * counts the components of a sampled sub-block above that noise's edge,
 * growing the sketch geometrically up to 256.
 *
 * Fit: D = float32(ft) - float32(base) of the block's rows; a randomized
 * range finder in float32 (rank + 8 columns, started from rows of D; the
 * products cache-blocked, with FMA where the machine has it: the fit is
 * the encoder's alone), Cholesky QR in float64, then the small Gram
 * eigenproblem (Householder tridiagonal, bisection, inverse iteration).
 * Memory beyond the block and its float32 delta: O((rows + cols) x (rank +
 * 16)).
 *
 * Prediction (core/FORMAT.md, "lowrank"): u[i][k] = half(U16[i][k]) * 2^-eu,
 * v[k][j] = half(V16[k][j]) * 2^-ev (both exact in float32); for each
 * element, in float32 without contraction:
 *   acc = 0; for k = 0 .. rank-1: acc = acc + u[i][k] * v[k][j];
 *   P = round_to_dtype(float32(base) + acc)   (round to nearest even). */
#include "codec/lossy.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define LR_OVER 8 /* oversampling columns of every sketch */
#define LR_FALLBACK 32 /* lowrank on a delta the test does not find low-rank: components fitted */

typedef float lr_v8 __attribute__((vector_size(32)));
/* broadcast and load as macros: a function returning a vector type warns
 * about the ABI where AVX is off */
#define LR_BC(v, x) lr_v8 v = {(x), (x), (x), (x), (x), (x), (x), (x)}
#define LR_LD(v, p) lr_v8 v; memcpy(&v, (p), sizeof v)

/* The fit runs in the encoder only (any fit decodes the same way), so its
 * products may use fused multiply-add where the machine has it; decoding
 * (row_acc below) keeps -ffp-contract=off and plain WD_VEC. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WD_FIT __attribute__((optimize("tree-vectorize", "fp-contract=fast"), target_clones("arch=x86-64-v3", "default")))
#else
#define WD_FIT __attribute__((optimize("tree-vectorize")))
#endif

/* ---- float32 products of the fit ------------------------------------- */
/* c (m x l) = a (m x n) . b (n x l), row-major, l a multiple of 8: four rows
 * of a against 16 (or 8) columns of b, the sums in registers over all of n;
 * b's column strip (n x 16 floats) stays in cache across the rows. */
WD_FIT static void mm_nn(float *restrict c, const float *restrict a, const float *restrict b, size_t m, size_t n,
                         size_t l)
{
    for (size_t i = 0; i < m; i += 4) {
        size_t nr = m - i < 4 ? m - i : 4;
        const float *a0 = a + i * n, *a1 = nr > 1 ? a0 + n : a0, *a2 = nr > 2 ? a0 + 2 * n : a0,
                    *a3 = nr > 3 ? a0 + 3 * n : a0;
        size_t c0 = 0;
        for (; c0 + 16 <= l; c0 += 16) {
            lr_v8 s00 = {0}, s01 = {0}, s10 = {0}, s11 = {0}, s20 = {0}, s21 = {0}, s30 = {0}, s31 = {0};
            for (size_t j = 0; j < n; j++) {
                LR_LD(x0, b + j * l + c0);
                LR_LD(x1, b + j * l + c0 + 8);
                LR_BC(y0, a0[j]);
                LR_BC(y1, a1[j]);
                LR_BC(y2, a2[j]);
                LR_BC(y3, a3[j]);
                s00 += y0 * x0, s01 += y0 * x1, s10 += y1 * x0, s11 += y1 * x1;
                s20 += y2 * x0, s21 += y2 * x1, s30 += y3 * x0, s31 += y3 * x1;
            }
            float *o = c + i * l + c0;
            memcpy(o, &s00, 32), memcpy(o + 8, &s01, 32);
            if (nr > 1) memcpy(o + l, &s10, 32), memcpy(o + l + 8, &s11, 32);
            if (nr > 2) memcpy(o + 2 * l, &s20, 32), memcpy(o + 2 * l + 8, &s21, 32);
            if (nr > 3) memcpy(o + 3 * l, &s30, 32), memcpy(o + 3 * l + 8, &s31, 32);
        }
        for (; c0 < l; c0 += 8) {
            lr_v8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
            for (size_t j = 0; j < n; j++) {
                LR_LD(x0, b + j * l + c0);
                LR_BC(y0, a0[j]);
                LR_BC(y1, a1[j]);
                LR_BC(y2, a2[j]);
                LR_BC(y3, a3[j]);
                s0 += y0 * x0, s1 += y1 * x0, s2 += y2 * x0, s3 += y3 * x0;
            }
            float *o = c + i * l + c0;
            memcpy(o, &s0, 32);
            if (nr > 1) memcpy(o + l, &s1, 32);
            if (nr > 2) memcpy(o + 2 * l, &s2, 32);
            if (nr > 3) memcpy(o + 3 * l, &s3, 32);
        }
    }
}

/* c (n x l) = a^T b for a (m x n) and b (m x l), row-major, l a multiple of
 * 8: eight rows of a at a time with their eight rows of b in registers,
 * each 8-column strip of c loaded and stored once per eight rows of a.
 * upper (a Gram matrix, a = b): each strip only down to its last column
 * (rows j < c0 + 8 of strip c0: the upper triangle and a little more; the
 * rest of c is left 0), each entry summed as the full product sums it. */
WD_FIT static void mm_tn_part(float *restrict c, const float *restrict a, const float *restrict b, size_t m,
                              size_t n, size_t l, int upper)
{
    memset(c, 0, n * l * sizeof *c);
    size_t i = 0;
    for (; i + 8 <= m; i += 8) {
        const float *r = a + i * n;
        for (size_t c0 = 0; c0 < l; c0 += 8) {
            size_t jn = upper && c0 + 8 < n ? c0 + 8 : n;
            const float *bb = b + i * l + c0;
            LR_LD(b0, bb);
            LR_LD(b1, bb + l);
            LR_LD(b2, bb + 2 * l);
            LR_LD(b3, bb + 3 * l);
            LR_LD(b4, bb + 4 * l);
            LR_LD(b5, bb + 5 * l);
            LR_LD(b6, bb + 6 * l);
            LR_LD(b7, bb + 7 * l);
            for (size_t j = 0; j < jn; j++) {
                LR_LD(acc, c + j * l + c0);
                LR_BC(y0, r[j]);
                LR_BC(y1, r[n + j]);
                LR_BC(y2, r[2 * n + j]);
                LR_BC(y3, r[3 * n + j]);
                LR_BC(y4, r[4 * n + j]);
                LR_BC(y5, r[5 * n + j]);
                LR_BC(y6, r[6 * n + j]);
                LR_BC(y7, r[7 * n + j]);
                lr_v8 t0 = y0 * b0 + y1 * b1, t1 = y2 * b2 + y3 * b3, t2 = y4 * b4 + y5 * b5, t3 = y6 * b6 + y7 * b7;
                acc += (t0 + t1) + (t2 + t3);
                memcpy(c + j * l + c0, &acc, sizeof acc);
            }
        }
    }
    for (; i < m; i++)
        for (size_t c0 = 0; c0 < l; c0 += 8) {
            size_t jn = upper && c0 + 8 < n ? c0 + 8 : n;
            LR_LD(b0, b + i * l + c0);
            for (size_t j = 0; j < jn; j++) {
                LR_LD(acc, c + j * l + c0);
                LR_BC(y0, a[i * n + j]);
                acc += y0 * b0;
                memcpy(c + j * l + c0, &acc, sizeof acc);
            }
        }
}

static void mm_tn(float *restrict c, const float *restrict a, const float *restrict b, size_t m, size_t n,
                  size_t l)
{
    mm_tn_part(c, a, b, m, n, l, 0);
}

/* g (l x l, upper triangle) = y^T y in float64 */
WD_FIT static void gram(double *restrict g, const float *restrict y, size_t m, size_t l)
{
    memset(g, 0, l * l * sizeof *g);
    for (size_t i = 0; i < m; i++) {
        const float *r = y + i * l;
        for (size_t a = 0; a < l; a++) {
            double ya = r[a];
            double *restrict ga = g + a * l;
            for (size_t b = a; b < l; b++) ga[b] += ya * r[b];
        }
    }
}

/* Every row of y (m x l) times R^-1 (R upper triangular, l x l; a zero
 * diagonal drops that column), by rows of R so the inner loop is an axpy. */
WD_FIT static void solve_rows(float *restrict y, size_t m, size_t l, const double *restrict r, double *restrict v)
{
    for (size_t i = 0; i < m; i++) {
        float *yi = y + i * l;
        for (size_t a = 0; a < l; a++) v[a] = yi[a];
        for (size_t a = 0; a < l; a++) {
            double ra = r[a * l + a], xa = ra != 0 ? v[a] / ra : 0;
            v[a] = xa;
            const double *restrict ra_row = r + a * l;
            for (size_t b = a + 1; b < l; b++) v[b] -= xa * ra_row[b];
        }
        for (size_t a = 0; a < l; a++) yi[a] = (float)v[a];
    }
}

/* Orthonormalize the columns of y (m x l) by Cholesky QR, `passes` times (a
 * second pass repairs what float32 rounding left of the first).  A column
 * whose part independent of the earlier ones is below 1e-5 of its norm
 * (float32 cannot tell it from rounding) becomes zero.  g, r: l x l; x: l
 * doubles. */
static void orthonormalize(float *y, size_t m, size_t l, int passes, double *g, double *r, double *x)
{
    for (int pass = 0; pass < passes; pass++) {
        gram(g, y, m, l);
        memset(r, 0, l * l * sizeof *r);
        for (size_t a = 0; a < l; a++) {
            double dd = g[a * l + a];
            for (size_t k = 0; k < a; k++) dd -= r[k * l + a] * r[k * l + a];
            if (!(dd > 1e-10 * g[a * l + a]) || !(dd > 0)) continue; /* dependent: r row a stays 0 */
            double ra = sqrt(dd);
            r[a * l + a] = ra;
            for (size_t b = a + 1; b < l; b++) {
                double v = g[a * l + b];
                for (size_t k = 0; k < a; k++) v -= r[k * l + a] * r[k * l + b];
                r[a * l + b] = v / ra;
            }
        }
        solve_rows(y, m, l, r, x);
    }
}

/* Symmetric eigen-decomposition of g (l x l) by cyclic Jacobi: g's diagonal
 * ends as the eigenvalues, w (l x l, may be NULL) holds the eigenvectors as
 * columns. */
static void jacobi(double *g, double *w, size_t l)
{
    if (w)
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
                if (w)
                    for (size_t k = 0; k < l; k++) {
                        double wp = w[k * l + p], wq = w[k * l + q];
                        w[k * l + p] = c * wp - s * wq;
                        w[k * l + q] = s * wp + c * wq;
                    }
            }
    }
}

/* Eigenvalues of the symmetric g (l x l; destroyed) into ev, descending:
 * Householder reduction to tridiagonal form, then bisection on Sturm counts
 * for all eigenvalues at once (60 halvings of the Gershgorin interval; the
 * counts of the l bisections vectorize).  No eigenvectors: the rank test
 * needs only the values.  t: 4 l doubles. */
WD_FIT static void sym_eigvals(double *restrict g, size_t l, double *restrict ev, double *restrict t,
                               double *restrict hv)
{
    double *p = t;
    if (hv) memset(hv, 0, l * l * sizeof *hv);
    for (size_t k = 0; k + 2 < l; k++) {
        double *col = g + k * l; /* row k = column k (symmetric) */
        double xx = 0;
        for (size_t i = k + 1; i < l; i++) xx += col[i] * col[i];
        if (!(xx > 0)) continue;
        double alpha = col[k + 1] > 0 ? -sqrt(xx) : sqrt(xx);
        double v0 = col[k + 1] - alpha, vv = xx - col[k + 1] * col[k + 1] + v0 * v0;
        if (!(vv > 0)) continue;
        col[k + 1] = v0; /* v = row k from k + 1 on, beta = 2 / v.v */
        double beta = 2 / vv, kk = 0;
        for (size_t i = k + 1; i < l; i++) p[i] = 0;
        for (size_t j = k + 1; j < l; j++) { /* p = T v, by rows of T (symmetric) */
            double vj = col[j];
            const double *restrict gj = g + j * l;
            for (size_t i = k + 1; i < l; i++) p[i] += gj[i] * vj;
        }
        for (size_t i = k + 1; i < l; i++) p[i] *= beta, kk += col[i] * p[i];
        kk *= beta / 2;
        if (hv) { /* keep H_k = I - beta v v^T: v in row k after column k, beta at [k][k] */
            memcpy(hv + k * l + k + 1, col + k + 1, (l - k - 1) * sizeof *hv);
            hv[k * l + k] = beta;
        }
        for (size_t i = k + 1; i < l; i++) p[i] -= kk * col[i]; /* q */
        for (size_t i = k + 1; i < l; i++) {
            double ci = col[i], pi = p[i];
            double *restrict gi = g + i * l;
            for (size_t j = k + 1; j < l; j++) gi[j] -= ci * p[j] + pi * col[j];
        }
        col[k + 1] = alpha;
        for (size_t i = k + 2; i < l; i++) col[i] = 0;
    }
    /* diagonal d_i = g[i][i], off-diagonal e_i = g[i][i+1] */
    double lo = 0, hi = 0;
    for (size_t i = 0; i < l; i++) {
        double r = (i > 0 ? fabs(g[(i - 1) * l + i]) : 0) + (i + 1 < l ? fabs(g[i * l + i + 1]) : 0);
        double x0 = g[i * l + i] - r, x1 = g[i * l + i] + r;
        if (i == 0 || x0 < lo) lo = x0;
        if (i == 0 || x1 > hi) hi = x1;
    }
    double tiny = (fabs(lo) + fabs(hi)) * 1e-200 + 1e-300;
    double *a = t, *b = t + l, *q = t + 2 * l, *x = t + 3 * l;
    for (size_t w = 0; w < l; w++) a[w] = lo, b[w] = hi;
    for (int it = 0; it < 60; it++) {
        /* a[w] <= (w+1)-th largest <= b[w]; count the eigenvalues below x */
        for (size_t w = 0; w < l; w++) x[w] = 0.5 * (a[w] + b[w]), q[w] = g[0] - x[w], ev[w] = q[w] < 0;
        for (size_t i = 1; i < l; i++) {
            double e = g[(i - 1) * l + i], e2 = e * e, di = g[i * l + i];
            for (size_t w = 0; w < l; w++) {
                double qq = q[w] != 0 ? q[w] : tiny;
                q[w] = di - x[w] - e2 / qq;
                ev[w] += q[w] < 0;
            }
        }
        for (size_t w = 0; w < l; w++) { /* l - below eigenvalues are >= x */
            if ((double)l - ev[w] > (double)w) a[w] = x[w];
            else b[w] = x[w];
        }
    }
    for (size_t w = 0; w < l; w++) ev[w] = 0.5 * (a[w] + b[w]);
}

/* Eigenvectors for the eigenvalues ev (descending) of the g that
 * sym_eigvals reduced (its tridiagonal: g[i][i], g[i][i+1]; its Householder
 * vectors in hv): inverse iteration on the tridiagonal (three solves from a
 * fixed start, each vector orthogonalized against the earlier ones, so
 * close eigenvalues get independent vectors), then back through the
 * Householder reflections.  w (l x l) gets the vectors as columns.  Returns
 * -1 where a vector is not finite (the caller falls back to Jacobi).
 * t: 4 l doubles. */
static int sym_eigvecs(const double *g, const double *hv, const double *ev, size_t l, double *w, double *t)
{
    double *y = t, *cp = t + l, *bp = t + 2 * l, *tmp = t + 3 * l;
    double scale = fabs(ev[0]) + fabs(ev[l - 1]) + 1e-300;
    for (size_t c = 0; c < l; c++) {
        double mu = ev[c] + scale * 1e-13;
        for (size_t i = 0; i < l; i++) y[i] = 1.0 / sqrt((double)l) * (1 + 0.1 * (double)((i * 7 + c) % 5));
        for (int it = 0; it < 3; it++) {
            /* (T - mu) x = y by elimination without pivoting; a tiny pivot
             * stays tiny (that is what makes inverse iteration converge) */
            for (size_t i = 0; i < l; i++) {
                double di = g[i * l + i] - mu, ei = i + 1 < l ? g[i * l + i + 1] : 0;
                double eprev = i > 0 ? g[(i - 1) * l + i] : 0;
                double den = di - (i > 0 ? eprev * cp[i - 1] : 0);
                if (fabs(den) < scale * 1e-300 + 1e-300) den = scale * 1e-16 + 1e-300;
                cp[i] = ei / den;
                bp[i] = (y[i] - (i > 0 ? eprev * bp[i - 1] : 0)) / den;
            }
            y[l - 1] = bp[l - 1];
            for (size_t i = l - 1; i-- > 0;) y[i] = bp[i] - cp[i] * y[i + 1];
            for (size_t q = 0; q < c; q++) { /* against the earlier vectors (in tridiagonal space: tmp rows) */
                double dot = 0;
                for (size_t i = 0; i < l; i++) dot += w[i * l + q] * y[i];
                for (size_t i = 0; i < l; i++) y[i] -= dot * w[i * l + q];
            }
            double nn = 0;
            for (size_t i = 0; i < l; i++) nn += y[i] * y[i];
            if (!(nn > 0) || !isfinite(nn)) return -1;
            nn = 1 / sqrt(nn);
            for (size_t i = 0; i < l; i++) y[i] *= nn;
        }
        for (size_t i = 0; i < l; i++) w[i * l + c] = y[i];
    }
    /* back-transform every column: x <- H_0 H_1 ... H_(l-3) x */
    for (size_t c = 0; c < l; c++) {
        for (size_t i = 0; i < l; i++) tmp[i] = w[i * l + c];
        for (size_t k = l >= 3 ? l - 2 : 0; k-- > 0;) {
            double beta = hv[k * l + k], dot = 0;
            if (beta == 0) continue;
            for (size_t i = k + 1; i < l; i++) dot += hv[k * l + i] * tmp[i];
            dot *= beta;
            for (size_t i = k + 1; i < l; i++) tmp[i] -= dot * hv[k * l + i];
        }
        for (size_t i = 0; i < l; i++) w[i * l + c] = tmp[i];
    }
    return 0;
}

static uint64_t xs(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

/* The randomized range finder of both the fit and the rank test: an l-column
 * sketch (l a multiple of 8) of d (m x n; dt its transpose, n x m), `power`
 * power iterations; on return y (m x l) = Q, z (n x l) = d^T Q, sv[0..l-1]
 * the singular values of Q^T d descending, w (l x l, may be NULL) the
 * eigenvectors of z^T z with ord their descending order. */
typedef struct lr_work {
    float *y, *z;
    double *g, *r, *x, *w, *h;
    size_t *ord;
} lr_work;

static void lr_work_free(lr_work *k)
{
    free(k->y), free(k->z), free(k->g), free(k->r), free(k->x), free(k->w), free(k->h), free(k->ord);
}

static int lr_work_alloc(lr_work *k, size_t m, size_t n, size_t l, int want_w)
{
    memset(k, 0, sizeof *k);
    k->y = malloc(m * l * sizeof *k->y + 1), k->z = malloc(n * l * sizeof *k->z + 1);
    k->g = malloc(l * l * sizeof *k->g + 1);
    k->r = malloc(l * l * sizeof *k->r + 1), k->x = malloc(4 * l * sizeof *k->x + 1);
    k->w = want_w ? malloc(l * l * sizeof *k->w + 1) : NULL, k->ord = malloc(l * sizeof *k->ord + 1);
    k->h = want_w ? malloc(l * l * sizeof *k->h + 1) : NULL;
    if (k->y && k->z && k->g && k->r && k->x && k->ord && ((k->w && k->h) || !want_w)) return 0;
    lr_work_free(k);
    return -1;
}

/* The rank test's working memory: one buffer (a scratch slot the caller
 * does not hold, reused from block to block and tensor to tensor: no fresh
 * pages to fault in each time) handed out in order.  Taken by value by a
 * helper, what it takes is given back when it returns. */
typedef struct lr_arena {
    unsigned char *p;
    size_t cap, at;
} lr_arena;
#define LR_ALIGN 64
static void *ar_take(lr_arena *a, size_t n)
{
    size_t at = (a->at + LR_ALIGN - 1) / LR_ALIGN * LR_ALIGN;
    if (!a->p || at > a->cap || n > a->cap - at) return NULL;
    a->at = at + n;
    return a->p + at;
}
/* bytes ar_take needs for n bytes, at most */
#define AR_SZ(n) ((size_t)(n) + LR_ALIGN)

static size_t lr_work_bytes(size_t m, size_t n, size_t l)
{
    return AR_SZ(m * l * sizeof(float)) + AR_SZ(n * l * sizeof(float)) + 2 * AR_SZ(l * l * sizeof(double)) +
           AR_SZ(4 * l * sizeof(double)) + AR_SZ(l * sizeof(size_t));
}

/* lr_work_alloc (values only) from the arena */
static int lr_work_take(lr_work *k, lr_arena *a, size_t m, size_t n, size_t l)
{
    memset(k, 0, sizeof *k);
    k->y = ar_take(a, m * l * sizeof *k->y), k->z = ar_take(a, n * l * sizeof *k->z);
    k->g = ar_take(a, l * l * sizeof *k->g), k->r = ar_take(a, l * l * sizeof *k->r);
    k->x = ar_take(a, 4 * l * sizeof *k->x), k->ord = ar_take(a, l * sizeof *k->ord);
    return k->y && k->z && k->g && k->r && k->x && k->ord ? 0 : -1;
}

static void lr_sketch(lr_work *k, const float *d, size_t m, size_t n, size_t l, int power, int rowstart,
                      double *sv)
{
    uint64_t st = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n * l; i++) k->z[i] = (float)((double)(xs(&st) >> 11) * 0x1p-53 - 0.5);
    if (rowstart && m >= l) /* rows of d spread over the block (a zero row keeps its random column) */
        for (size_t a = 0; a < l; a++) {
            const float *row = d + (a * m / l) * n;
            size_t j = 0;
            while (j < n && row[j] == 0) j++;
            if (j < n)
                for (j = 0; j < n; j++) k->z[j * l + a] = row[j];
        }
    for (int it = 0; it <= power; it++) {
        mm_nn(k->y, d, k->z, m, n, l); /* y = d z */
        orthonormalize(k->y, m, l, it == power ? 2 : 1, k->g, k->r, k->x); /* Q itself: two passes */
        mm_tn(k->z, d, k->y, m, n, l); /* z = d^T y */
        if (it < power) orthonormalize(k->z, n, l, 1, k->g, k->r, k->x);
    }
    /* z = d^T Q = B^T; the singular values of B are the roots of z^T z's eigenvalues */
    gram(k->g, k->z, n, l);
    for (size_t a = 0; a < l; a++)
        for (size_t b = 0; b < a; b++) k->g[a * l + b] = k->g[b * l + a];
    if (!k->w) { /* values only */
        sym_eigvals(k->g, l, sv, k->x, NULL);
        for (size_t a = 0; a < l; a++) sv[a] = sv[a] > 0 ? sqrt(sv[a]) : 0;
        return;
    }
    /* values and vectors: tridiagonal + bisection + inverse iteration
     * (O(l^3) with a small constant); Jacobi where that fails */
    memcpy(k->r, k->g, l * l * sizeof *k->r); /* a copy for the fallback */
    sym_eigvals(k->g, l, sv, k->x, k->h);
    if (!sym_eigvecs(k->g, k->h, sv, l, k->w, k->x)) {
        for (size_t a = 0; a < l; a++) k->ord[a] = a, sv[a] = sv[a] > 0 ? sqrt(sv[a]) : 0;
        return;
    }
    memcpy(k->g, k->r, l * l * sizeof *k->g);
    jacobi(k->g, k->w, l);
    for (size_t a = 0; a < l; a++) k->ord[a] = a;
    for (size_t a = 0; a < l; a++) /* l is small: selection order */
        for (size_t b = a + 1; b < l; b++)
            if (k->g[k->ord[b] * l + k->ord[b]] > k->g[k->ord[a] * l + k->ord[a]]) {
                size_t t = k->ord[a];
                k->ord[a] = k->ord[b];
                k->ord[b] = t;
            }
    for (size_t a = 0; a < l; a++) {
        double lam = k->g[k->ord[a] * l + k->ord[a]];
        sv[a] = lam > 0 ? sqrt(lam) : 0;
    }
}

static size_t lr_cols(unsigned kmax, size_t m, size_t n)
{
    size_t l = ((size_t)kmax + LR_OVER + 7) / 8 * 8, lim = ((m < n ? m : n) + 7) / 8 * 8;
    return l < lim ? l : lim;
}

/* Fit d (m x n) with up to kmax components: `power` power iterations from a
 * random start, or with rowstart none (power 0) from rows of d, which for a
 * low-rank delta already span its rows (one pass of d and one of d^T). */
static int lr_fit_q(const float *d, size_t m, size_t n, unsigned kmax, int power, int rowstart, double *uf,
                    double *vf, double *sv, unsigned *kout, wd_err *err)
{
    *kout = 0;
    if (kmax == 0 || m == 0 || n == 0) return 0;
    size_t l = lr_cols(kmax, m, n);
    unsigned kk = (unsigned)(l < kmax ? l : kmax);
    if (kk > m) kk = (unsigned)m;
    if (kk > n) kk = (unsigned)n;
    size_t kp = ((size_t)kk + 7) / 8 * 8;
    lr_work k;
    double *s = malloc(l * sizeof *s);
    float *wk = malloc(l * kp * sizeof *wk + 1), *fu = malloc(m * kp * sizeof *fu + 1),
          *fv = malloc(n * kp * sizeof *fv + 1);
    if (!s || !wk || !fu || !fv || lr_work_alloc(&k, m, n, l, 1)) {
        free(s), free(wk), free(fu), free(fv);
        return wd_errf(err, "out of memory fitting a low-rank delta (%zu x %zu)", m, n);
    }
    lr_sketch(&k, d, m, n, l, power, rowstart, s);
    /* U = Q W_k, V^T = B^T W_k = z W_k, then the sqrt(s) scaling */
    memset(wk, 0, l * kp * sizeof *wk);
    for (size_t a = 0; a < l; a++)
        for (unsigned c = 0; c < kk; c++) wk[a * kp + c] = (float)k.w[a * l + k.ord[c]];
    mm_nn(fu, k.y, wk, m, l, kp);
    mm_nn(fv, k.z, wk, n, l, kp);
    for (unsigned c = 0; c < kk; c++) {
        double sc = s[c], rs = sqrt(sc), inv = sc > 0 ? 1.0 / sc : 0;
        sv[c] = sc;
        for (size_t i = 0; i < m; i++) uf[i * kmax + c] = fu[i * kp + c] * rs;
        for (size_t j = 0; j < n; j++) vf[c * n + j] = fv[j * kp + c] * inv * rs;
    }
    *kout = kk;
    lr_work_free(&k);
    free(s), free(wk), free(fu), free(fv);
    return 0;
}

int wd_lowrank_fit(const float *d, size_t m, size_t n, unsigned kmax, double *uf, double *vf, double *sv,
                   unsigned *kout, wd_err *err)
{
    return lr_fit_q(d, m, n, kmax, 1, 0, uf, vf, sv, kout, err);
}

/* Rank from the spectrum: the largest gap s_k / s_{k+1} if it is at least
 * 4; no gap: every computed component; 0 for a zero delta.  (The fallback
 * of `lowrank` for a delta the noise test below does not find low-rank.) */
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

/* ---- the rank test: low rank plus the dtype's rounding noise ------------ */
/* A merged LoRA is ft = round_dtype(base + L), L of rank r, so D = ft - base
 * = L + e with e the rounding error: at most half a step of the fine-tune's
 * dtype at each element, variance step^2 / 12 when L is not small against
 * the step.  The noise's largest singular value is at most about
 * sqrt(max row energy) + sqrt(max column energy) of e; components of D
 * above that edge are the delta's, those below are rounding.  (The edge is
 * also kept at least s_1 * 2^-12: the FP16 factors' rounding, 11
 * significant bits, cannot code components below it.) */

/* step^2 / 12 by the exponent field of an element's bits (0 for inf/NaN,
 * whose delta is taken as 0) */
typedef struct lr_ntab {
    double v[256];
    unsigned shift, mask;
} lr_ntab;

static void lr_ntab_init(lr_ntab *t, wd_dtype dt)
{
    int bias = dt == WD_F16 ? 15 : 127, mant = dt == WD_F32 ? 23 : dt == WD_F16 ? 10 : 7;
    t->shift = (unsigned)mant;
    t->mask = dt == WD_F16 ? 0x1f : 0xff;
    for (unsigned e = 0; e <= t->mask; e++)
        t->v[e] = e == t->mask ? 0 : ldexp(1.0, 2 * ((int)(e ? e : 1) - bias - mant)) / 12.0;
}
#define LR_NOISE(t, u) ((t)->v[(u) >> (t)->shift & (t)->mask])

typedef struct lr_stats {
    double tot;   /* sum of D^2 */
    double noise; /* expected rounding-noise energy */
    double edge;  /* the noise's largest singular value, bounded */
} lr_stats;

/* Stats of the sub-block of rows ri[0..S-1] and columns ci[0..C-1] of the
 * m x n block (ft, base), and that sub-block's delta into x (S x C). */
/* lr_gather's loop for one dtype (a constant after inlining: no per-element
 * dtype switch); the sums in locals (the column sums' array could alias
 * them in memory), in the same order as ever */
static inline __attribute__((always_inline)) void lr_gather_dt(const unsigned char *ft, const unsigned char *base,
                                                               wd_dtype dt, size_t n, const size_t *ri, size_t S,
                                                               const size_t *ci, size_t C, float *x,
                                                               const lr_ntab *nt, double *cn, lr_stats *st,
                                                               double *mr)
{
    unsigned w = wd_dtype_size(dt);
    double tot = 0, noise = 0, m = 0;
    for (size_t s = 0; s < S; s++) {
        double rn = 0;
        const size_t r0 = ri[s] * n;
        float *xs = x + s * C;
        for (size_t c = 0; c < C; c++) {
            size_t e = r0 + ci[c];
            float v = wd_float_at(ft, dt, e) - wd_float_at(base, dt, e);
            if (!isfinite(v)) v = 0;
            xs[c] = v;
            double z = LR_NOISE(nt, lf_loadw(ft, e, w));
            tot += (double)v * v;
            rn += z, cn[c] += z;
        }
        noise += rn;
        m = rn > m ? rn : m;
    }
    st->tot = tot, st->noise = noise, *mr = m;
}

static int lr_gather(lr_arena a, const unsigned char *ft, const unsigned char *base, wd_dtype dt, size_t n,
                     const size_t *ri, size_t S, const size_t *ci, size_t C, float *x, lr_stats *st)
{
    double *cn = ar_take(&a, (C + 1) * sizeof *cn), mr = 0, mc = 0;
    if (!cn) return -1;
    memset(cn, 0, (C + 1) * sizeof *cn);
    lr_ntab nt;
    lr_ntab_init(&nt, dt);
    if (dt == WD_BF16) lr_gather_dt(ft, base, WD_BF16, n, ri, S, ci, C, x, &nt, cn, st, &mr);
    else if (dt == WD_F16) lr_gather_dt(ft, base, WD_F16, n, ri, S, ci, C, x, &nt, cn, st, &mr);
    else lr_gather_dt(ft, base, WD_F32, n, ri, S, ci, C, x, &nt, cn, st, &mr);
    for (size_t c = 0; c < C; c++) mc = cn[c] > mc ? cn[c] : mc;
    st->edge = sqrt(mr) + sqrt(mc);
    return 0;
}

/* components above the edge */
static unsigned lr_count(const double *sv, size_t l, const lr_stats *st)
{
    double edge = st->edge > sv[0] * 0x1p-12 ? st->edge : sv[0] * 0x1p-12;
    unsigned r = 0;
    while (r < l && sv[r] > edge) r++;
    return r;
}

/* The largest rank worth coding for an m x n block: factors (r x (m + n)
 * halves) at most half the block's elements, at most KMAX, and at most half
 * of the smaller side less the oversampling, so the test can see the noise
 * beyond it. */
static unsigned lr_rmax(size_t m, size_t n)
{
    double worth = (double)m * n / (2.0 * (double)(m + n));
    size_t side = m < n ? m : n;
    size_t lim = side > LR_OVER ? (side - LR_OVER) / 2 : 0;
    double r = worth < (double)lim ? worth : (double)lim;
    return r >= WD_LOWRANK_KMAX ? WD_LOWRANK_KMAX : (unsigned)r;
}

/* Is the symmetric d x d matrix a (upper triangle, row-major; destroyed)
 * less e2 I positive definite?  Right-looking Cholesky, the trailing update
 * row by row as axpys (vectorized); a pivot counts only above 1e-6 of the
 * matrix's diagonal there, diag (the float32 Gram's rounding). */
WD_FIT static int lr_chol_above(double *restrict a, size_t d, double e2, const double *restrict diag)
{
    for (size_t k = 0; k < d; k++) {
        double *rk = a + k * d;
        double p = rk[k] - e2;
        if (!(p > 1e-6 * diag[k])) return 0;
        double inv = 1.0 / sqrt(p);
        for (size_t j = k + 1; j < d; j++) rk[j] *= inv; /* row k of R */
        for (size_t i = k + 1; i < d; i++) {
            double f = rk[i], *restrict ri = a + i * d;
            for (size_t j = i; j < d; j++) ri[j] -= f * rk[j];
        }
    }
    return 1;
}

/* The quick reject of the rank test (issue 18): under the test's model
 * (D = L + e, L of rank <= rmax, e the rounding noise, whose largest
 * singular value is below the edge), x (S x C) restricted to any subspace
 * of rmax + 1 dimensions has its smallest singular value below the edge
 * too (Courant-Fischer: it is at most sigma_{rmax+1}(x), and Weyl:
 * sigma_{rmax+1}(L + e) <= sigma_1(e) <= edge).  So when x's smallest
 * singular value on some such subspace is above the edge, x has more than
 * rmax components above the noise and no rank the test could pass fits:
 * the block is not low-rank.  Two subspaces, the cheaper first:
 *   - rmax + 1 evenly spaced columns: the Gram matrix of those columns
 *     less edge^2 I positive definite (S (rmax + 1)^2 steps);
 *   - the span of the rmax + 1 rows of x with the most energy: a row w of x
 *     weighs x's right singular vectors by their singular values, so their
 *     span leans to x's top (twice the columns' smallest value on pairB's
 *     full fine-tune, where evenly spaced columns often fall below the
 *     edge and the larger sketches ran).  With R those rows (rmax + 1 x C),
 *     P = x R^T, A = P^T P and G = R R^T, x's singular values on that span
 *     are the roots of the generalized eigenvalues of (A, G): all above
 *     the edge when A - edge^2 G is positive definite (S C (rmax + 1) steps
 *     more).
 * Products in float32 (the margins are far wider than their rounding),
 * factorizations in float64.  Returns 1 to reject, 0 otherwise (and on out
 * of memory: the full test decides). */
static size_t lr_reject_bytes(size_t S, size_t C, unsigned rmax)
{
    size_t d = (size_t)rmax + 1, d8 = (d + 7) / 8 * 8;
    return AR_SZ((S * d8 + C * d8) * sizeof(float)) + AR_SZ(d8 * d8 * sizeof(float)) +
           AR_SZ((2 * d * d + d) * sizeof(double)) + AR_SZ((S > d ? S : d) * sizeof(size_t)) +
           AR_SZ(S * sizeof(double)) + AR_SZ(S * 8 * sizeof(float)) + AR_SZ(d * C * sizeof(float)) +
           2 * AR_SZ(d8 * 8 * sizeof(float));
}

static int lr_quick_reject(lr_arena a, const float *x, size_t S, size_t C, unsigned rmax, double edge)
{
    size_t d = (size_t)rmax + 1;
    if (d > S || d > C || !(edge > 0)) return 0;
    size_t d8 = (d + 7) / 8 * 8; /* the columns, zero-padded for mm_tn */
    float *xc = ar_take(&a, (S * d8 + C * d8) * sizeof *xc), *xr = xc ? xc + S * d8 : NULL;
    float *g = ar_take(&a, d8 * d8 * sizeof *g);
    double *lo = ar_take(&a, (2 * d * d + d) * sizeof *lo), *gg = lo ? lo + d * d : NULL, *diag = lo ? gg + d * d : NULL;
    size_t *col = ar_take(&a, (S > d ? S : d) * sizeof *col);
    double *rn = ar_take(&a, S * sizeof *rn);
    int rej = 0;
    if (!xc || !g || !lo || !col || !rn) goto out;
    for (size_t c = 0; c < d; c++) col[c] = c * C / d;
    for (size_t i = 0; i < S; i++) {
        for (size_t c = 0; c < d; c++) xc[i * d8 + c] = x[i * C + col[c]];
        for (size_t c = d; c < d8; c++) xc[i * d8 + c] = 0;
    }
    /* their Gram matrix (float32: the edge's margin is far wider than its rounding) */
    mm_tn_part(g, xc, xc, S, d8, d8, 1);
    for (size_t i = 0; i < d; i++) /* the upper triangle in float64 */
        for (size_t j = i; j < d; j++) lo[i * d + j] = g[i * d8 + j];
    for (size_t i = 0; i < d; i++) diag[i] = lo[i * d + i];
    if ((rej = lr_chol_above(lo, d, edge * edge, diag))) goto out;
    /* the rows with the most energy (ties: the first), none of them zero */
    for (size_t i = 0; i < S; i++) {
        double e = 0;
        for (size_t c = 0; c < C; c++) e += (double)x[i * C + c] * x[i * C + c];
        rn[i] = e;
        col[i] = i;
    }
    for (size_t a = 0; a < d; a++) { /* partial selection sort: d of S */
        size_t b = a;
        for (size_t i = a + 1; i < S; i++)
            if (rn[col[i]] > rn[col[b]]) b = i;
        size_t t = col[a];
        col[a] = col[b], col[b] = t;
        if (!(rn[col[a]] > 0)) goto out;
    }
    /* A - edge^2 G by an up-looking Cholesky (R in lo, row-major, upper),
     * eight of the rows at a time: their columns of P (P^T in xc), then the
     * new columns of A and G (against every row so far), each in one
     * product, then the pivots.  It stops at the first pivot that fails,
     * so a low-rank block (the columns' test fails there too) pays for its
     * rank's rows, not all of them. */
    float *pt = xc, *rb = xr, *pb = ar_take(&a, S * 8 * sizeof *pb), *xs = ar_take(&a, d * C * sizeof *xs);
    float *ab = ar_take(&a, d8 * 8 * sizeof *ab), *gb = ar_take(&a, d8 * 8 * sizeof *gb);
    double e2 = edge * edge;
    if (!pb || !xs || !ab || !gb) goto out;
    rej = 1;
    for (size_t k0 = 0; k0 < d && rej; k0 += 8) {
        size_t kb = d - k0 < 8 ? d - k0 : 8, nr = k0 + kb;
        for (size_t b = 0; b < kb; b++) memcpy(xs + (k0 + b) * C, x + col[k0 + b] * C, C * sizeof *xs);
        for (size_t c = 0; c < C; c++)
            for (size_t b = 0; b < 8; b++) rb[c * 8 + b] = b < kb ? xs[(k0 + b) * C + c] : 0;
        mm_nn(pb, x, rb, S, C, 8); /* P's columns k0.. */
        for (size_t b = 0; b < kb; b++)
            for (size_t i = 0; i < S; i++) pt[(k0 + b) * S + i] = pb[i * 8 + b];
        mm_nn(ab, pt, pb, nr, S, 8); /* A[j][k0 + b], j < nr */
        mm_nn(gb, xs, rb, nr, C, 8); /* G[j][k0 + b] */
        for (size_t k = k0; k < nr && rej; k++) {
            size_t b = k - k0;
            double gkk = gb[k * 8 + b], p = ab[k * 8 + b] - e2 * gkk;
            for (size_t j = 0; j < k; j++) {
                double m = ab[j * 8 + b] - e2 * gb[j * 8 + b];
                for (size_t i = 0; i < j; i++) m -= lo[i * d + j] * lo[i * d + k];
                lo[j * d + k] = m / lo[j * d + j];
                p -= lo[j * d + k] * lo[j * d + k];
            }
            /* a pivot counts only above 1e-5 of what it was before the
             * subtraction: A and G come from float32 products */
            if (!(p > 1e-5 * (p + e2 * gkk))) rej = 0;
            else lo[k * d + k] = sqrt(p);
        }
    }
out:
    return rej;
}

/* An upper estimate of ||x^T x||_F^2 (the sum of the spectrum to the
 * fourth) of x (S x C): its mean over 16 Rademacher probes g of
 * ||x^T x g||^2 plus 4 standard errors of their scatter; -1 on out of
 * memory.  Two products of x, against the first sketch's two and its
 * orthonormalizations and eigenvalues. */
#define LR_PROBES 16
static double lr_fourth(lr_arena a, const float *x, size_t S, size_t C)
{
    float *g = ar_take(&a, C * LR_PROBES * sizeof *g), *u = ar_take(&a, S * LR_PROBES * sizeof *u),
          *v = ar_take(&a, C * LR_PROBES * sizeof *v);
    double q[LR_PROBES] = {0}, mean = 0, var = 0;
    if (!g || !u || !v) return -1;
    uint64_t st = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < C * LR_PROBES; i++) g[i] = xs(&st) >> 63 ? 1.0f : -1.0f;
    mm_nn(u, x, g, S, C, LR_PROBES); /* x g */
    mm_tn(v, x, u, S, C, LR_PROBES); /* x^T x g */
    for (size_t i = 0; i < C; i++)
        for (size_t j = 0; j < LR_PROBES; j++) q[j] += (double)v[i * LR_PROBES + j] * v[i * LR_PROBES + j];
    for (size_t j = 0; j < LR_PROBES; j++) mean += q[j] / LR_PROBES;
    for (size_t j = 0; j < LR_PROBES; j++) var += (q[j] - mean) * (q[j] - mean) / (LR_PROBES - 1);
    return mean + 4 * sqrt(var / LR_PROBES);
}

/* The rank test on the m x n block (ft, base): S = min(m, 2 rmax + 16)
 * evenly spaced rows and as many columns, a sketch of k + 8 columns started
 * from rows of the sub-block, for k = 8, 16, 32, ... up to rmax (values by
 * bisection, no vectors).  Passes at the first k
 * whose count r of components above the noise edge is at most k, when the
 * rest of the sub-block's energy is at most twice the expected rounding
 * noise and the r components hold at least that noise again (a delta
 * buried in rounding gains nothing from a prediction).  Fails as soon as
 * the energy beyond k cannot be held by rmax - k more components no larger
 * than s_k plus the noise.
 * Returns r, 0 when the block is not low-rank (or on out of memory). */
static unsigned lr_detect(wd_scratch *sc, const unsigned char *ft, const unsigned char *base, wd_dtype dt,
                          size_t m, size_t n, unsigned rmax, unsigned *partial)
{
    if (partial) *partial = 0;
    if (rmax == 0 || m == 0 || n == 0) return 0;
    size_t S = m < 2 * (size_t)rmax + 16 ? m : 2 * (size_t)rmax + 16;
    size_t C = n < 2 * (size_t)rmax + 16 ? n : 2 * (size_t)rmax + 16;
    size_t lmax = lr_cols(rmax, S, C);
    /* the arena: what lives to the end, then the largest of the helpers' */
    size_t keep = AR_SZ((S + C) * sizeof(size_t)) + AR_SZ(S * C * sizeof(float)) + AR_SZ(lmax * sizeof(double)) +
                  lr_work_bytes(S, C, lmax);
    size_t tmp = lr_reject_bytes(S, C, rmax), t2 = AR_SZ((2 * C + S) * LR_PROBES * sizeof(float)) + AR_SZ((C + 1) * 8);
    lr_arena a = {NULL, keep + (tmp > t2 ? tmp : t2), 0};
    unsigned char *own = NULL;
    a.p = sc ? wd_scratch_buf(sc, LS_A, a.cap) : (own = malloc(a.cap));
    size_t *ri = ar_take(&a, (S + C) * sizeof *ri), *ci = ri ? ri + S : NULL;
    float *x = ar_take(&a, S * C * sizeof *x);
    double *sv = ar_take(&a, lmax * sizeof *sv);
    lr_work k = {0};
    unsigned found = 0;
    lr_stats st;
    if (!ri || !x || !sv || lr_work_take(&k, &a, S, C, lmax)) goto out;
    for (size_t s = 0; s < S; s++) ri[s] = s * m / S;
    for (size_t c = 0; c < C; c++) ci[c] = c * n / C;
    if (lr_gather(a, ft, base, dt, n, ri, S, ci, C, x, &st) || !(st.tot > 0)) goto out;
    /* below the rounding noise, what neither the float32 sketch nor FP16
     * factors (11 significant bits) resolve: 2^-20 of the delta's energy
     * (F32 fine-tunes, whose own rounding is far finer) */
    st.noise += st.tot * 0x1p-20;
    /* Before the first sketch: where it can neither pass (its <= 8
     * components hold all but 2 x noise) nor find a dominant part (<= l
     * components holding 80%), the quick reject alone decides.  Both need
     * the top components' energy, at most sqrt(k ||x^T x||_F^2) for k of
     * them (Cauchy-Schwarz); s_1 <= ||x^T x||_F^(1/2) bounds the FP16
     * floor of the edge. */
    unsigned k0 = rmax < 8 ? rmax : 8;
    if (k0 < rmax) {
        double q = lr_fourth(a, x, S, C), l0 = (double)lr_cols(k0, S, C);
        if (q >= 0 && sqrt(l0 * q) < 0.8 * st.tot && sqrt(k0 * q) < st.tot - 2 * st.noise) {
            double s1 = sqrt(sqrt(q));
            if (lr_quick_reject(a, x, S, C, rmax, st.edge > s1 * 0x1p-12 ? st.edge : s1 * 0x1p-12)) goto out;
        }
    }
    for (unsigned kk = rmax < 8 ? rmax : 8;; kk = 2 * kk < rmax ? 2 * kk : rmax) {
        size_t l = lr_cols(kk, S, C);
        lr_sketch(&k, x, S, C, l, 0, 1, sv);
        unsigned r = lr_count(sv, l, &st);
        if (partial && kk == (rmax < 8 ? rmax : 8)) {
            /* a dominant low-rank part over a delta that is not low-rank
             * (some full fine-tunes' embeddings and heads): a gap of 4 or
             * more in the first sketch, holding 80% of the energy */
            unsigned g = wd_lowrank_gap_rank(sv, (unsigned)l);
            double cg = 0;
            for (unsigned c = 0; c < g; c++) cg += sv[c] * sv[c];
            if (g < l && cg >= 0.8 * st.tot) *partial = g;
        }
        double cap = 0;
        for (unsigned c = 0; c < r; c++) cap += sv[c] * sv[c];
        if (r <= kk) {
            if (r > 0 && st.tot - cap <= 2 * st.noise && cap >= st.noise) found = r;
            break;
        }
        double capk = 0;
        for (unsigned c = 0; c < kk && c < l; c++) capk += sv[c] * sv[c];
        double s_k = sv[kk - 1 < l ? kk - 1 : l - 1];
        if (kk >= rmax || st.tot - capk > (double)(rmax - kk) * s_k * s_k + 2 * st.noise) break;
        /* after the first sketch: larger ones only where some rank <= rmax
         * could still pass (most full fine-tunes stop here) */
        if (kk == (rmax < 8 ? rmax : 8) &&
            lr_quick_reject(a, x, S, C, rmax, st.edge > sv[0] * 0x1p-12 ? st.edge : sv[0] * 0x1p-12))
            break;
    }
out:
    free(own);
    return found;
}

unsigned wd_lowrank_detect(const unsigned char *ft, const unsigned char *base, wd_dtype dt, size_t m, size_t n,
                           unsigned rmax, unsigned *partial)
{
    return lr_detect(NULL, ft, base, dt, m, n, rmax, partial);
}

/* The rank of a fitted block: its components above the block's noise edge. */
static unsigned lr_block_rank(const unsigned char *ft, const unsigned char *base, wd_dtype dt, size_t m,
                              size_t n, const double *sv, unsigned k)
{
    unsigned w = wd_dtype_size(dt);
    double *cn = calloc(n + 1, sizeof *cn), mr = 0, mc = 0;
    if (!cn || k == 0) {
        free(cn);
        return 0;
    }
    (void)base;
    lr_ntab nt;
    lr_ntab_init(&nt, dt);
    for (size_t i = 0; i < m; i++) {
        double rn = 0;
        for (size_t j = 0; j < n; j++) {
            double z = LR_NOISE(&nt, lf_loadw(ft, i * n + j, w));
            rn += z, cn[j] += z;
        }
        mr = rn > mr ? rn : mr;
    }
    for (size_t j = 0; j < n; j++) mc = cn[j] > mc ? cn[j] : mc;
    free(cn);
    lr_stats st = {0, 0, sqrt(mr) + sqrt(mc)};
    return lr_count(sv, k, &st);
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
        float mag = wd_f32_from_bits((h & 0x7fffu) << 13) * 0x1p112f;
        dst[i] = wd_f32_from_bits(wd_f32_bits(mag) | (h & 0x8000u) << 16) * sc;
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

/* Which of the SR_RUN elements from e on are missed: a bit each, computed
 * without a branch per element (a miss is a coin toss: a branch on each
 * one mispredicts about as often), so the passes below branch once per
 * run and once per miss.  w is a constant after inlining. */
#define SR_RUN 16
static inline __attribute__((always_inline)) unsigned sr_missed(const unsigned char *ft, const unsigned char *pred,
                                                               size_t e, unsigned w)
{
    unsigned m = 0;
#if defined(__SSE2__)
    /* 16 compares at once (SSE2: every x86-64): equal lanes packed to one
     * byte each, in element order, their top bits the equal mask */
    if (w == 2) {
        const __m128i *x = (const __m128i *)(const void *)(ft + 2 * e), *y = (const __m128i *)(const void *)(pred + 2 * e);
        __m128i q0 = _mm_cmpeq_epi16(_mm_loadu_si128(x), _mm_loadu_si128(y));
        __m128i q1 = _mm_cmpeq_epi16(_mm_loadu_si128(x + 1), _mm_loadu_si128(y + 1));
        return ~(unsigned)_mm_movemask_epi8(_mm_packs_epi16(q0, q1)) & 0xffffu;
    } else {
        const __m128i *x = (const __m128i *)(const void *)(ft + 4 * e), *y = (const __m128i *)(const void *)(pred + 4 * e);
        __m128i q[4];
        for (unsigned k = 0; k < 4; k++) q[k] = _mm_cmpeq_epi32(_mm_loadu_si128(x + k), _mm_loadu_si128(y + k));
        __m128i h = _mm_packs_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3]));
        return ~(unsigned)_mm_movemask_epi8(h) & 0xffffu;
    }
#endif
    if (w == 2) { /* equal words are equal bytes: no byte order involved */
        uint16_t a[SR_RUN], b[SR_RUN];
        memcpy(a, ft + 2 * e, sizeof a), memcpy(b, pred + 2 * e, sizeof b);
        for (unsigned k = 0; k < SR_RUN; k++) m |= (unsigned)(a[k] != b[k]) << k;
    } else {
        uint32_t a[SR_RUN], b[SR_RUN];
        memcpy(a, ft + 4 * e, sizeof a), memcpy(b, pred + 4 * e, sizeof b);
        for (unsigned k = 0; k < SR_RUN; k++) m |= (unsigned)(a[k] != b[k]) << k;
    }
    return m;
}

/* Misses per exponent of the prediction (hist, 256 entries), their total
 * returned; one pass, a run of SR_RUN elements at a time.  w is a constant
 * after inlining. */
static inline __attribute__((always_inline)) size_t sr_hist_w(const unsigned char *ft, const unsigned char *pred,
                                                              size_t ne, unsigned w, const srspec *c,
                                                              uint32_t *hist)
{
    size_t total = 0, e = 0;
    memset(hist, 0, 256 * sizeof *hist);
    for (; e + SR_RUN <= ne; e += SR_RUN)
        for (unsigned m = sr_missed(ft, pred, e, w); m; m &= m - 1) {
            uint32_t p = lf_loadw(pred, e + (unsigned)__builtin_ctz(m), w);
            hist[p >> c->shift & c->mask]++, total++;
        }
    for (; e < ne; e++) {
        uint32_t p = lf_loadw(pred, e, w);
        if (lf_loadw(ft, e, w) != p) hist[p >> c->shift & c->mask]++, total++;
    }
    return total;
}

static size_t sr_hist(const unsigned char *ft, const unsigned char *pred, size_t ne, const srspec *c, uint32_t *hist)
{
    return c->w == 2 ? sr_hist_w(ft, pred, ne, 2, c, hist) : sr_hist_w(ft, pred, ne, 4, c, hist);
}

/* The misses in element order: position gaps into gaps (returns their
 * count), codes into w planes of total bytes by context. */
static inline __attribute__((always_inline)) size_t sr_gather_w(const unsigned char *ft, const unsigned char *pred,
                                                                size_t ne, unsigned w, const srspec *c,
                                                                uint32_t *pos, unsigned char *gaps,
                                                                unsigned char *planes, size_t total)
{
    uint8_t map[256];
    for (unsigned e = 0; e <= c->mask; e++) map[e] = (uint8_t)sr_ctx(e << c->shift, c);
    size_t ng = 0, next = 0;
/* one missed element i, in element order */
#define SR_GATHER_ONE(i)                                                                                     \
    do {                                                                                                     \
        uint32_t f_ = lf_loadw(ft, (i), w), p_ = lf_loadw(pred, (i), w);                                     \
        size_t g_ = (i) - next;                                                                              \
        for (; g_ >= 255; g_ -= 255) gaps[ng++] = 255;                                                       \
        gaps[ng++] = (unsigned char)g_;                                                                      \
        next = (i) + 1;                                                                                      \
        uint32_t z_ = sr_code(f_, p_, w), q_ = pos[map[p_ >> c->shift & c->mask]]++;                        \
        for (unsigned b_ = 0; b_ < w; b_++) planes[b_ * total + q_] = (unsigned char)(z_ >> (8 * b_));       \
    } while (0)
    size_t e = 0;
    for (; e + SR_RUN <= ne; e += SR_RUN)
        for (unsigned m = sr_missed(ft, pred, e, w); m; m &= m - 1) SR_GATHER_ONE(e + (unsigned)__builtin_ctz(m));
    for (; e < ne; e++)
        if (lf_loadw(ft, e, w) != lf_loadw(pred, e, w)) SR_GATHER_ONE(e);
#undef SR_GATHER_ONE
    return ng;
}

/* The window of k exponents holding the most misses: their contexts. */
static unsigned sr_window(const uint32_t *hist, const srspec *c)
{
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
                          const unsigned char *pred, size_t ne, size_t *misses, wd_err *err)
{
    srspec c = sr_spec(dt);
    uint32_t hist[256], cnt[SR_K] = {0}, pos[SR_K];
    size_t total = sr_hist(ft, pred, ne, &c, hist);
    c.lo = sr_window(hist, &c);
    for (unsigned e = 0; e <= c.mask; e++) cnt[sr_ctx(e << c.shift, &c)] += hist[e];
    if (misses) *misses = total;
    size_t cap = ZSTD_COMPRESSBOUND(total + 1);
    unsigned char *gaps = malloc(total + ne / 255 + 1), *planes = malloc(c.w * total + 1), *tmp = malloc(cap);
    if (!gaps || !planes || !tmp) {
        free(gaps), free(planes), free(tmp);
        return wd_errf(err, "out of memory");
    }
    for (unsigned k = 0, at = 0; k < c.k; at += cnt[k], k++) pos[k] = at;
    size_t ng = c.w == 2 ? sr_gather_w(ft, pred, ne, 2, &c, pos, gaps, planes, total)
                         : sr_gather_w(ft, pred, ne, 4, &c, pos, gaps, planes, total);
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
    lhdr h = {(unsigned)codec, w, lh_kind(dt), (uint32_t)cols, (uint32_t)rows, rank, eu | ev << 8, NULL};
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
        size_t misses = 0;
        if (wd_lowrank_sparse_put(&sp, s, level, dt, ft, pred, rows * cols, &misses, err)) {
            free(sp.p);
            return -1;
        }
        if (sp.oom) return wd_errf(err, "out of memory encoding a block");
        enc = sp.p, len = sp.len;
        /* the dense form only where most elements miss: a list of more
         * than half the positions costs more than coding every element */
        const unsigned char *wenc;
        size_t wlen;
        if (misses > rows * cols / 2) {
            if (wd_lossless_encode(s, WD_CODEC_LOSSLESS, dt, level, ft, pred, n, &wenc, &wlen, err)) {
                free(sp.p);
                return -1;
            }
            if (wlen < len) enc = wenc, len = wlen;
        }
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
    unsigned w = wd_dtype_size(dt);
    size_t ne = n / w, cols = p->cols, rows = ne / cols;
    unsigned fixed = p->rank ? (p->rank < WD_LOWRANK_KMAX ? p->rank : WD_LOWRANK_KMAX) : 0, det = 0, kmax;
    if (fixed) {
        kmax = fixed;
    } else { /* the rank test first: cheap where the block is not low-rank */
        unsigned rmax = lr_rmax(rows, cols);
        det = lr_detect(s, ft, base, dt, rows, cols, rmax, NULL);
        kmax = det ? (det + LR_OVER < rmax ? det + LR_OVER : rmax) : codec == WD_CODEC_LOWRANK ? LR_FALLBACK : 0;
    }
    /* the block-sized buffers in scratch slots the decoder alone uses
     * (LS_E, LS_F): a worker's blocks reuse their pages */
    float *d = kmax ? (float *)(void *)wd_scratch_buf(s, LS_F, ne * sizeof *d + 1) : NULL;
    double *uf = malloc(rows * kmax * sizeof *uf + 8), *vf = malloc(kmax * cols * sizeof *vf + 8);
    double *sv = malloc(kmax * sizeof *sv + 8);
    unsigned char *pred = wd_scratch_buf(s, LS_E, n + 1);
    int rc = -1;
    if ((kmax && !d) || !uf || !vf || !sv || !pred) {
        wd_errf(err, "out of memory");
        goto out;
    }
    unsigned k = 0, rank;
    if (kmax) {
        lf_delta(ft, base, dt, ne, d);
        /* a low-rank delta (the test passed, or lowrank-exact's rank from
         * the tensor's trial): rows of D already span it, no power
         * iteration; otherwise (lowrank's fallback, a fixed --rank on any
         * delta) the best rank-k approximation needs power iterations */
        int lowrank = det || codec == WD_CODEC_LOWRANK_EXACT;
        if (lr_fit_q(d, rows, cols, kmax, lowrank ? 0 : 2, lowrank, uf, vf, sv, &k, err)) goto out;
    }
    if (fixed) rank = k < fixed ? k : fixed;
    else if (det) rank = lr_block_rank(ft, base, dt, rows, cols, sv, k);
    else rank = wd_lowrank_gap_rank(sv, k); /* lowrank's fallback (0 for lowrank-exact: k = 0) */
    while (rank > 0 && !(sv[rank - 1] > 0)) rank--;
    /* lowrank-exact tries the one rank: the test's (or the fixed one) */
    if (put_block(s, codec, dt, p, ft, base, rows, cols, uf, vf, kmax ? kmax : 1, rank, pred, out, err)) goto out;
    if (rank_out) *rank_out = rank;
    rc = out->oom ? wd_errf(err, "out of memory") : 0;
out:
    free(uf), free(vf), free(sv);
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
    if (wd_lossless_decode(s, WD_CODEC_LOSSLESS, dt, res, len, pred, out, n, err))
        return wd_errprefix(err, "lowrank-exact residual");
    return 0;
}

/* ---- per tensor: is lowrank-exact smaller than plain lossless? --------- */
/* Low-rank blocks are larger than the others: each carries a V of all
 * columns (rank x cols halves), so rows per block should be many against
 * the rank; a tensor up to LR_BLOCK_MAX is one block, a larger one splits
 * into equal blocks below it. */
#define LR_BLOCK_MAX (32u << 20)

static uint32_t lr_block_bytes(const wd_tensor *t)
{
    uint64_t w = wd_dtype_size(t->dtype), row = t->shape[t->ndim - 1] * w, rows = t->length / row;
    uint64_t nb = (t->length + LR_BLOCK_MAX - 1) / LR_BLOCK_MAX, per = (rows + nb - 1) / nb;
    if (per * row > LR_BLOCK_MAX) per = LR_BLOCK_MAX / row;
    return wd_lossy_block_size(t, (uint32_t)(per * row));
}

/* Reading sampled rows: one read call costs about what copying RR_GAP bytes
 * does (measured here: ~1.5 us a pread of a cached page, against ~5 GB/s
 * for its copy), so wanted rows closer than that are read with the rows
 * between them (at most RR_SEG bytes at a time) and picked out, farther
 * ones by runs of their own. */
#define RR_GAP (8u << 10)
#define RR_SEG (1u << 20)
typedef int (*rr_read_fn)(void *ctx, unsigned char *buf, size_t n, uint64_t off, wd_err *err);
typedef struct rr_file {
    int fd;
    const char *path;
} rr_file;
static int rr_pread(void *ctx, unsigned char *buf, size_t n, uint64_t off, wd_err *err)
{
    rr_file *f = ctx;
    return wd_pread_full(f->fd, buf, n, off, f->path, err);
}

/* rows s * rows / cnt (s < cnt) of the row-major data at off into dst;
 * the scratch's slot PRED (RR_SEG bytes) holds what is read between */
static int rr_sampled(rr_read_fn rd, void *ctx, uint64_t off, size_t rows, size_t row, size_t cnt,
                      unsigned char *dst, wd_scratch *sc, wd_err *err)
{
    for (size_t a = 0; a < cnt;) {
        size_t r0 = a * rows / cnt, b = a + 1, last = r0;
        int dense = 1; /* consecutive rows: straight into place */
        while (b < cnt) {
            size_t rb = b * rows / cnt;
            if ((rb - last - 1) * row > RR_GAP || (rb - r0 + 1) * row > RR_SEG) break;
            if (rb != last + 1) dense = 0;
            last = rb, b++;
        }
        if (dense) {
            if (rd(ctx, dst + a * row, (b - a) * row, off + (uint64_t)r0 * row, err)) return -1;
        } else {
            unsigned char *tmp = wd_scratch_buf(sc, WD_SLOT_PRED, RR_SEG);
            if (!tmp) return wd_errf(err, "out of memory");
            if (rd(ctx, tmp, (last - r0 + 1) * row, off + (uint64_t)r0 * row, err)) return -1;
            for (size_t k = a; k < b; k++) memcpy(dst + k * row, tmp + (k * rows / cnt - r0) * row, row);
        }
        a = b;
    }
    return 0;
}

/* `cnt` rows of the tensor spread evenly (row s * rows / cnt) into ft, base
 * (rr_sampled).  The base's likewise where `chunk` is 0 (a base file: any
 * range costs its bytes), else in whole chunks of `chunk` bytes (the block
 * size) that hold a wanted row: a base that is a parent delta's output
 * decodes each of its blocks once, not once per row. */
static int read_rows(wd_scratch *sc, const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                     void *base_ctx, uint64_t base_off, size_t rows, size_t row, size_t cnt, size_t chunk,
                     unsigned char *ft, unsigned char *base, wd_err *err)
{
    size_t per = chunk / row ? chunk / row : 1, s = 0;
    unsigned char *cb;
    rr_file f = {ft_fd, ft_path};
    if (rr_sampled(rr_pread, &f, t->offset, rows, row, cnt, ft, sc, err) ||
        (!chunk && rr_sampled(read_base, base_ctx, base_off, rows, row, cnt, base, sc, err)))
        return wd_errprefix(err, "tensor %s", t->name);
    if (!chunk) return 0;
    if (!(cb = wd_scratch_buf(sc, WD_SLOT_PRED, per * row))) return wd_errf(err, "out of memory");
    for (size_t r0 = 0; r0 < rows && s < cnt; r0 += per) {
        size_t r1 = rows - r0 < per ? rows : r0 + per;
        if (s * rows / cnt >= r1) continue; /* no wanted row in this chunk */
        uint64_t at = (uint64_t)r0 * row;
        size_t n = (r1 - r0) * row;
        if (read_base(base_ctx, cb, n, base_off + at, err)) return wd_errprefix(err, "tensor %s", t->name);
        for (; s < cnt && s * rows / cnt < r1; s++) memcpy(base + s * row, cb + (s * rows / cnt - r0) * row, row);
    }
    return 0;
}

/* The rank test's sample, shared by wd_lowrank_measure and wd_lowrank_test:
 * the tensor's row-block size and geometry, and S = 2 rmax + 16 rows spread
 * over it read into the scratch's slots STORED and BASE (which the codecs
 * leave to their caller); a scratch of its own when sc is NULL
 * (sample_free gives it back). */
typedef struct lr_sample {
    wd_scratch *own, *s;
    unsigned char *ft, *base;
    size_t cols, row, rows, S;
    unsigned rmax;
    uint32_t bs;  /* row-block size for target_bs */
    uint32_t cbs; /* the base's chunks read_rows reads (0: just the rows) */
} lr_sample;

static int sample_read(lr_sample *x, wd_scratch *sc, const wd_tensor *t, int ft_fd, const char *ft_path,
                       wd_base_read_fn read_base, void *base_ctx, int base_file, uint64_t base_off,
                       uint32_t target_bs, wd_err *err)
{
    memset(x, 0, sizeof *x);
    x->bs = wd_lossy_block_size(t, target_bs);
    if (!x->bs) return wd_errf(err, "tensor %s: rows too long for row blocks", t->name);
    x->cbs = base_file ? 0 : x->bs;
    x->cols = (size_t)t->shape[t->ndim - 1];
    x->row = x->cols * wd_dtype_size(t->dtype);
    x->rows = (size_t)(t->length / x->row);
    x->rmax = lr_rmax(x->rows, x->cols);
    x->S = x->rows < 2 * (size_t)x->rmax + 16 ? x->rows : 2 * (size_t)x->rmax + 16;
    x->own = sc ? NULL : wd_scratch_new();
    x->s = sc ? sc : x->own;
    x->ft = x->s ? wd_scratch_buf(x->s, WD_SLOT_STORED, x->S * x->row + 1) : NULL;
    x->base = x->s ? wd_scratch_buf(x->s, WD_SLOT_BASE, x->S * x->row + 1) : NULL;
    if (!x->s || !x->ft || !x->base) return wd_errf(err, "out of memory");
    return read_rows(x->s, t, ft_fd, ft_path, read_base, base_ctx, base_off, x->rows, x->row, x->S, x->cbs, x->ft,
                     x->base, err);
}

static void sample_free(lr_sample *x)
{
    wd_scratch_free(x->own);
}

int wd_lowrank_measure(wd_scratch *sc, const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                       void *base_ctx, int base_file, uint64_t base_off, wd_codec codec, int level,
                       uint32_t target_bs, uint64_t *stored, uint64_t *plain, unsigned *max_rank, uint32_t *bs_out,
                       wd_err *err)
{
    *stored = *plain = 0;
    *max_rank = 0;
    /* the rank test on rows spread over the whole tensor */
    lr_sample x;
    int rc = -1;
    *bs_out = wd_lossy_block_size(t, target_bs);
    if (sample_read(&x, sc, t, ft_fd, ft_path, read_base, base_ctx, base_file, base_off, target_bs, err)) goto out;
    wd_scratch *s = x.s;
    unsigned char *ft = x.ft, *base = x.base;
    size_t cols = x.cols, row = x.row, rows = x.rows, S = x.S;
    uint32_t bs = x.bs;
    const uint32_t cbs = x.cbs;
    wd_lossy_params p = {(uint32_t)cols, 0, 0, 0, level, 0, 0};
    unsigned part = 0, r = lr_detect(s, ft, base, t->dtype, S, cols, x.rmax, &part);
    if (r) {
        uint32_t lbs = lr_block_bytes(t);
        if (lbs) *bs_out = bs = lbs;
    }
    if (codec == WD_CODEC_LOWRANK_EXACT) {
        if (!r) r = part; /* a dominant low-rank part: worth a trial (default blocks) */
        if (!r) { /* not low-rank: plain lossless */
            *stored = 1, *plain = 0;
            rc = 0;
            goto out;
        }
        /* The factors alone (raw halves) against the plain codec's size,
         * estimated from the test's rows: a rank that cannot pay for its
         * factors skips the trial. */
        const unsigned char *penc;
        size_t plen;
        if (wd_lossless_encode(s, WD_CODEC_LOSSLESS, t->dtype, level, ft, base, S * row, &penc, &plen, err)) {
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        double nb = (double)((t->length + bs - 1) / bs);
        if (2.0 * r * ((double)rows + (double)cols * nb) >= (double)plen * (double)rows / (double)S) {
            *stored = 1, *plain = 0;
            rc = 0;
            goto out;
        }
        /* A trial on E rows spread over the tensor, coded as one block both
         * ways; scaled to the tensor, with V (2 bytes x rank x cols, raw)
         * counted once per block of the tensor instead of per trial. */
        size_t E = 4 * (size_t)r > 128 ? 4 * (size_t)r : 128;
        if (E > rows) E = rows;
        ft = wd_scratch_buf(s, WD_SLOT_STORED, E * row + 1), base = wd_scratch_buf(s, WD_SLOT_BASE, E * row + 1);
        if (!ft || !base) {
            wd_errf(err, "out of memory");
            goto out;
        }
        if (read_rows(s, t, ft_fd, ft_path, read_base, base_ctx, base_off, rows, row, E, cbs, ft, base, err))
            goto out;
        lbuf ob = {0};
        unsigned rt = 0;
        p.rank = r; /* the rank the test found */
        const unsigned char *enc;
        size_t len;
        if (wd_lowrank_encode(s, codec, t->dtype, &p, ft, base, E * row, &ob, &rt, err) ||
            wd_lossless_encode(s, WD_CODEC_LOSSLESS, t->dtype, level, ft, base, E * row, &enc, &len, err)) {
            free(ob.p);
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        double scale = (double)rows / (double)E, vb = 2.0 * rt * (double)cols;
        double nblk = (double)((t->length + bs - 1) / bs), st = ((double)ob.len + WD_LOSSY_HDR - vb) * scale;
        st = (st > 0 ? st : 0) + vb * nblk;
        *stored = (uint64_t)st;
        *plain = (uint64_t)((double)len * scale);
        *max_rank = rt;
        free(ob.p);
        rc = 0;
        goto out;
    }
    /* lowrank: every block, for the rank found (inspect) */
    ft = wd_scratch_buf(s, WD_SLOT_STORED, bs), base = wd_scratch_buf(s, WD_SLOT_BASE, bs);
    if (!ft || !base) {
        wd_errf(err, "out of memory");
        goto out;
    }
    for (uint64_t at = 0; at < t->length; at += bs) {
        size_t n = (size_t)(t->length - at < bs ? t->length - at : bs);
        if (wd_pread_full(ft_fd, ft, n, t->offset + at, ft_path, err) ||
            read_base(base_ctx, base, n, base_off + at, err)) {
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        lbuf ob = {0};
        unsigned rk = 0;
        if (wd_lowrank_encode(s, codec, t->dtype, &p, ft, base, n, &ob, &rk, err)) {
            free(ob.p);
            wd_errprefix(err, "tensor %s", t->name);
            goto out;
        }
        free(ob.p);
        if (rk > *max_rank) *max_rank = rk;
    }
    rc = 0;
out:
    sample_free(&x);
    return rc;
}

int wd_lowrank_test(wd_scratch *sc, const wd_tensor *t, int ft_fd, const char *ft_path, wd_base_read_fn read_base,
                    void *base_ctx, int base_file, uint64_t base_off, uint32_t target_bs, unsigned *rank,
                    uint32_t *bs_out, wd_err *err)
{
    *rank = 0;
    lr_sample x;
    int rc = -1;
    *bs_out = wd_lossy_block_size(t, target_bs);
    if (sample_read(&x, sc, t, ft_fd, ft_path, read_base, base_ctx, base_file, base_off, target_bs, err)) goto out;
    *rank = lr_detect(x.s, x.ft, x.base, t->dtype, x.S, x.cols, x.rmax, NULL);
    if (*rank) {
        uint32_t lbs = lr_block_bytes(t);
        if (lbs) *bs_out = lbs;
    }
    rc = 0;
out:
    sample_free(&x);
    return rc;
}
