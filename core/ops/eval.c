/* eval.c - wd_eval: how far a delta's rebuilt tensors are from the
 * fine-tune's, tensor by tensor, one block in memory at a time. */
#include "codec/lossy.h"
#include "delta/xdtype.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

static double getf(const unsigned char *p, wd_dtype dt, size_t i)
{
    if (dt == WD_F64) {
        double x;
        memcpy(&x, p + 8 * i, 8);
        return x;
    }
    return wd_float_at(p, dt, i);
}

static int eval_extent(wd_delta *d, const wd_ext_priv *ep, const wd_model *ft, int *ft_fds, int *base_fds,
                       unsigned char *out, unsigned char *fb, unsigned char *bb, wd_eval_tensor *r, wd_err *err)
{
    const wd_extent *e = &ep->pub;
    size_t fi, bfi = 0;
    const wd_tensor *t = wd_model_find(ft, e->tensor, &fi);
    if (!t || t->length != e->length)
        return wd_errf(err, "fine-tune %s has no tensor %s of %llu bytes", ft->dir, e->tensor,
                       (unsigned long long)e->length);
    /* a cross-dtype or resized tensor: its base is the predicted one */
    const wd_tensor *bt = e->base_tensor && wd_delta_base_model(d) && !ep->pred ? wd_model_find(wd_delta_base_model(d), e->base_tensor, &bfi) : NULL;
    if (bt && bt->length != e->length) bt = NULL;
    /* a chain link's base tensor is its parent's rebuilt output */
    int from_parent = wd_delta_get_parent(d) && e->base_tensor && ep->base_fd_index >= 0 && !ep->pred;
    if (ft_fds[fi] < 0 && (ft_fds[fi] = open(ft->files[fi].path, O_RDONLY | O_CLOEXEC)) < 0)
        return wd_errf(err, "%s: %s", ft->files[fi].path, strerror(errno));
    if (bt && base_fds[bfi] < 0 && (base_fds[bfi] = open(wd_delta_base_model(d)->files[bfi].path, O_RDONLY | O_CLOEXEC)) < 0)
        return wd_errf(err, "%s: %s", wd_delta_base_model(d)->files[bfi].path, strerror(errno));
    int isf = e->dtype == WD_BF16 || e->dtype == WD_F16 || e->dtype == WD_F32 || e->dtype == WD_F64;
    unsigned w = isf ? wd_dtype_size(e->dtype) : 1;
    r->nelem = e->length / w;
    for (uint32_t b = 0; b < e->nblocks; b++) {
        const wd_block *bl = &wd_delta_get_info(d)->blocks[e->first_block + b];
        uint64_t rel = (uint64_t)b * e->block_size;
        size_t n = bl->out_len;
        r->stored += bl->stored_len;
        if (wd_delta_decode_block(d, e->first_block + b, out, err) ||
            wd_pread_full(ft_fds[fi], fb, n, t->offset + rel, ft->files[fi].path, err) ||
            (bt && wd_pread_full(base_fds[bfi], bb, n, bt->offset + rel, wd_delta_base_model(d)->files[bfi].path, err)) ||
            (from_parent && wd_delta_read_base(d, ep, bb, n, rel, err)) ||
            (ep->pred && wd_xdtype_read_base(d, ep, bb, n, rel, err)))
            return wd_errprefix(err, "tensor %s", e->tensor);
        if (!isf) {
            if (memcmp(out, fb, n)) r->err2 = NAN;
            continue;
        }
        for (size_t i = 0; i < n / w; i++) {
            double f = getf(fb, e->dtype, i), x = getf(out, e->dtype, i),
                   bv = bt || from_parent || ep->pred ? getf(bb, e->dtype, i) : f;
            if (!isfinite(f) || !isfinite(x) || !isfinite(bv)) {
                if (memcmp(out + i * w, fb + i * w, w)) r->err2 = NAN;
                continue;
            }
            r->err2 += (x - f) * (x - f);
            r->delta2 += (f - bv) * (f - bv);
            if (fabs(x - f) > r->max_abs) r->max_abs = fabs(x - f);
        }
    }
    return 0;
}

int wd_eval(wd_delta *d, const wd_model *ft, void (*cb)(void *ctx, const wd_eval_tensor *t), void *ctx,
            wd_err *err)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    if (!wd_delta_has_source(d)) return wd_errf(err, "%s: eval needs the base model (or parent) attached", wd_delta_path(d));
    size_t nbase = wd_delta_base_model(d) ? wd_delta_base_model(d)->nfiles : 0;
    size_t maxb = 1;
    for (size_t b = 0; b < in->nblocks; b++)
        if (in->blocks[b].out_len > maxb) maxb = in->blocks[b].out_len;
    unsigned char *out = malloc(maxb), *fb = malloc(maxb), *bb = malloc(maxb);
    int *ft_fds = wd_fds_new(ft->nfiles);
    int *base_fds = wd_fds_new(nbase);
    int rc = -1;
    if (!out || !fb || !bb || !ft_fds || !base_fds) {
        wd_errf(err, "out of memory");
        goto done;
    }
    for (size_t f = 0; f < in->nfiles; f++)
        for (size_t k = 0; k < in->files[f].nextents; k++) {
            const wd_extent *e = &in->files[f].extents[k];
            if (!e->tensor) continue;
            wd_eval_tensor r = {e->tensor, e->codec, e->dtype, e->params, 0, 0, 0, 0, 0};
            if (eval_extent(d, wd_delta_ext(d, f, k), ft, ft_fds, base_fds, out, fb, bb, &r, err)) goto done;
            cb(ctx, &r);
        }
    rc = 0;
done:
    wd_fds_free(ft_fds, ft->nfiles);
    wd_fds_free(base_fds, nbase);
    free(out);
    free(fb);
    free(bb);
    return rc;
}
