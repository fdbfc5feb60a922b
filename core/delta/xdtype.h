/* xdtype.h - the cross-dtype / resized-tensor predictor (core/delta/xdtype.c);
 * private to core/.
 *
 * A fine-tune tensor whose dtype or first dimension differs from its base
 * tensor's (an F32 checkpoint over a BF16 base, rows added to an embedding)
 * is coded against a *predicted* base: the base's elements converted to the
 * fine-tune's dtype, element i predicting element i (row-major, so equal
 * trailing dimensions make the overlap a prefix), zeros past the base's
 * last element.  A block's prediction needs only the base elements of its
 * own element range, so random access and bounded memory are kept.  The
 * manifest records the predictor per extent (core/FORMAT.md "Cross-dtype and
 * resized tensors"). */
#ifndef WDELTA_XDTYPE_H
#define WDELTA_XDTYPE_H

#include "delta/delta.h" /* struct wd_delta, wd_ext_priv, wd_scratch */

struct cJSON;

/* 1 if fine-tune tensor ft is coded against base tensor bt through the
 * predictor: both BF16, F16 or F32, the same number of dimensions and the
 * same dimensions after the first, and not already the same dtype and shape. */
int wd_xdtype_fits(const wd_tensor *ft, const wd_tensor *bt);

/* The base bytes [*brel, *brel + *bn) (of a base tensor of base_len bytes
 * of base_dt) that predict output bytes [rel, rel + n) of an ft_dt tensor;
 * *bn is 0 when the range lies past the base's last element. */
void wd_xdtype_range(wd_dtype ft_dt, wd_dtype base_dt, uint64_t base_len, uint64_t rel, size_t n, uint64_t *brel,
                     size_t *bn);

/* Convert the bn bytes of base_dt elements at src to ft_dt into dst (n
 * bytes), zeros past them (FORMAT.md gives the exact conversions). */
void wd_xdtype_convert(wd_dtype ft_dt, wd_dtype base_dt, const unsigned char *src, size_t bn, unsigned char *dst,
                       size_t n);

/* The predicted base of output bytes [rel, rel + n) of extent e: the base
 * range read through wd_delta_base_view, converted into scratch slot 2. */
int wd_xdtype_base_view(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, size_t n, uint64_t rel,
                        const unsigned char **base, wd_err *err);

/* Blocks of predicted (lossless) extents: a form byte, then a lossless
 * block, in the extent's dtype or (F32 extents whose block holds only BF16 or
 * F16 values) in that narrower dtype.  Encode: ft and the predicted base pbase
 * are n bytes of dt; *out in scratch slot 0.  Decode: predicts the base of
 * output bytes [rel, rel + n) of e itself and rebuilds n bytes into out. */
int wd_xdtype_encode(wd_scratch *s, wd_dtype dt, int level, const unsigned char *ft, const unsigned char *pbase,
                     size_t n, const unsigned char **out, size_t *out_len, wd_err *err);
int wd_xdtype_decode(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, const unsigned char *stored,
                     size_t stored_len, uint64_t rel, unsigned char *out, size_t n, wd_err *err);

/* The same into dst (n bytes), with a scratch of d's pool. */
int wd_xdtype_read_base(wd_delta *d, const wd_ext_priv *e, unsigned char *dst, size_t n, uint64_t rel, wd_err *err);

/* The dtype and byte length the base tensor of extent e must have. */
static inline wd_dtype wd_ext_base_dtype(const wd_ext_priv *e)
{
    return e->pred ? e->pred_dtype : e->pub.dtype;
}
static inline uint64_t wd_ext_base_length(const wd_ext_priv *e)
{
    return e->pred ? e->pred_length : e->pub.length;
}

/* Manifest: read extent x's optional "predict" object into e (checked:
 * known float dtypes, a length that is whole elements, the lossless codec
 * with a base tensor); its description becomes e->params when the extent has none, so
 * inspect shows it.  Writer: add "predict" to extent x when ft is coded
 * against bt through the predictor. */
int wd_xdtype_parse(const struct cJSON *x, wd_ext_priv *e, const char *path, const char *fname, size_t k,
                    wd_err *err);
void wd_xdtype_manifest(struct cJSON *x, const wd_tensor *ft, const wd_tensor *bt);

#endif
