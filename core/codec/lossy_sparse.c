/* lossy_sparse.c - the sparse codec: in each block the k = round(density * n)
 * elements whose |ft - base| is largest are stored exactly (positions as
 * LEB128 gaps, values as zigzag key differences in byte planes, both
 * zstd-coded); every other element is rebuilt as the base element
 * (D = 0, so round(float(base)) = base). */
#include "codec/lossy.h"
#include <math.h>
#include <stdlib.h>

int wd_sparse_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p, const unsigned char *ft,
                     const unsigned char *base, size_t n, lbuf *out, unsigned *rank_out, wd_err *err)
{
    (void)codec;
    (void)rank_out;
    unsigned w = wd_dtype_size(dt);
    size_t ne = n / w, cols = p->cols;
    double dens = p->density > 0 ? p->density : 0.1;
    if (dens > 1) return wd_errf(err, "sparse density %g must be in (0, 1]", dens);
    size_t k = (size_t)llround(dens * (double)ne);
    float *d = (float *)(void *)wd_scratch_buf(s, LS_A, ne * 4);
    uint32_t *idx = (uint32_t *)(void *)wd_scratch_buf(s, LS_B, k * 4 + 4);
    if (!d || !idx) return wd_errf(err, "out of memory");
    lf_delta(ft, base, dt, ne, d);
    if (wd_topk(d, ne, k, idx, s, err)) return -1;
    unsigned char hdr[WD_LOSSY_HDR];
    lh_put(hdr, &(lhdr){WD_CODEC_SPARSE, w, lh_kind(dt), (uint32_t)cols, (uint32_t)(ne / cols), (uint32_t)k, 0, NULL});
    lb_put(out, hdr, sizeof hdr);
    int level = p->level ? p->level : 3;
    return k ? patches_put(out, s, level, idx, k, ft, base, w, err) : 0;
}

int wd_sparse_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const lhdr *h, lrd *r, const unsigned char *base,
                     unsigned char *out, size_t n, wd_err *err)
{
    (void)codec;
    (void)dt;
    size_t ne = n / h->width;
    if (h->p1 > ne || h->p2) return wd_errf(err, "sparse block keeps %u of %zu elements", h->p1, ne);
    memcpy(out, base, n);
    if (h->p1 && patches_apply(r, s, h->p1, out, base, h->width, ne, err)) return wd_errprefix(err, "sparse");
    return 0;
}
