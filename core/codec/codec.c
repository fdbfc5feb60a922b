/* codec.c - the codec table: every block codec of .wdelta by id, with its
 * name, what it needs (flags) and its coder, and the two calls that code a
 * block through it (wd_encode_block, wd_decode_block).
 *
 * Whole-block codecs (zstd, lossless: lossless.c) code a block themselves.
 * Row-block codecs (the lossy ones and lowrank-exact: lossy_*.c) share
 * one block header (lossy.h: codec, width, dtype kind, rows, columns),
 * which this file writes and checks before their rows_encode/rows_decode
 * run, so each of them only codes its own part.  The v1 view's kinds
 * (v1, generated, base) have names but store no blocks. */
#include "codec/lossy.h"
#include <stdlib.h>
#include <string.h>

#define ROWS (WD_CF_ROWBLOCK | WD_CF_BASE | WD_CF_NAMED)
static const wd_codec_desc table[] = {
    {WD_CODEC_ZSTD, "zstd", WD_CF_NAMED, wd_lossless_encode, wd_lossless_decode, NULL, NULL},
    {WD_CODEC_LOSSLESS, "lossless", WD_CF_BASE | WD_CF_NAMED, wd_lossless_encode, wd_lossless_decode, NULL, NULL},
    {WD_CODEC_INT4, "int4", ROWS | WD_CF_LOSSY, NULL, NULL, wd_int4_encode, wd_int4_decode},
    {WD_CODEC_SPARSE, "sparse", ROWS | WD_CF_LOSSY, NULL, NULL, wd_sparse_encode, wd_sparse_decode},
    {WD_CODEC_BITDELTA, "bitdelta", ROWS | WD_CF_LOSSY, NULL, NULL, wd_sign_encode, wd_sign_decode},
    {WD_CODEC_AXIS1, "axis1", ROWS | WD_CF_LOSSY, NULL, NULL, wd_sign_encode, wd_sign_decode},
    {WD_CODEC_LOWRANK, "lowrank", ROWS | WD_CF_LOSSY, NULL, NULL, wd_lowrank_encode, wd_lowrank_decode},
    {WD_CODEC_LOWRANK_EXACT, "lowrank-exact", ROWS, NULL, NULL, wd_lowrank_encode, wd_lowrank_decode},
    {WD_CODEC_TERNARY, "ternary", ROWS | WD_CF_LOSSY, NULL, NULL, wd_ternary_encode, wd_ternary_decode},
    {WD_CODEC_TERNARY_AXIS1, "ternary-axis1", ROWS | WD_CF_LOSSY, NULL, NULL, wd_ternary_encode, wd_ternary_decode},
    {WD_CODEC_V1, "v1", 0, NULL, NULL, NULL, NULL},
    {WD_CODEC_GENERATED, "generated", 0, NULL, NULL, NULL, NULL},
    {WD_CODEC_BASE_COPY, "base", 0, NULL, NULL, NULL, NULL},
};
#define NCODECS (sizeof table / sizeof table[0])

const wd_codec_desc *wd_codec_get(wd_codec c)
{
    for (size_t i = 0; i < NCODECS; i++)
        if (table[i].id == c) return &table[i];
    return NULL;
}

static unsigned flags_of(wd_codec c)
{
    const wd_codec_desc *d = wd_codec_get(c);
    return d ? d->flags : 0;
}

const char *wd_codec_name(wd_codec c)
{
    const wd_codec_desc *d = wd_codec_get(c);
    return d ? d->name : "unknown";
}

int wd_codec_from_name(const char *name, wd_codec *out)
{
    for (size_t i = 0; i < NCODECS; i++)
        if ((table[i].flags & WD_CF_NAMED) && !strcmp(name, table[i].name)) {
            *out = table[i].id;
            return 0;
        }
    return -1;
}

int wd_codec_is_lossy(wd_codec c)
{
    return (flags_of(c) & WD_CF_LOSSY) != 0;
}

int wd_codec_is_rowblock(wd_codec c)
{
    return (flags_of(c) & WD_CF_ROWBLOCK) != 0;
}

int wd_codec_needs_base(wd_codec c)
{
    return (flags_of(c) & WD_CF_BASE) != 0;
}

int wd_encode_block(wd_scratch *s, wd_codec codec, wd_dtype dt, int level, const unsigned char *ft,
                    const unsigned char *base, size_t n, const unsigned char **out, size_t *out_len, wd_err *err)
{
    const wd_codec_desc *d = wd_codec_get(codec);
    if (!d || !d->encode) return wd_errf(err, "codec %d cannot encode", (int)codec);
    return d->encode(s, codec, dt, level, ft, base, n, out, out_len, err);
}

int wd_decode_block(wd_scratch *s, wd_codec codec, wd_dtype dt, const unsigned char *src, size_t slen,
                    const unsigned char *base, unsigned char *out, size_t n, wd_err *err)
{
    const wd_codec_desc *d = wd_codec_get(codec);
    if (d && d->rows_decode) return wd_lossy_decode(s, codec, dt, src, slen, base, out, n, err);
    if (!d || !d->decode) return wd_errf(err, "unknown codec %d", (int)codec);
    return d->decode(s, codec, dt, src, slen, base, out, n, err);
}

/* ---- row blocks: the common header, then the codec's own part ------- */
int wd_lossy_encode(wd_scratch *s, wd_codec codec, wd_dtype dt, const wd_lossy_params *p,
                    const unsigned char *ft, const unsigned char *base, size_t n,
                    const unsigned char **out, size_t *out_len, wd_err *err)
{
    const wd_codec_desc *d = wd_codec_get(codec);
    const char *name = wd_codec_name(codec);
    unsigned w = wd_dtype_size(dt);
    if (dt != WD_BF16 && dt != WD_F16 && dt != WD_F32)
        return wd_errf(err, "codec %s needs a BF16, F16 or F32 tensor", name);
    if (!base) return wd_errf(err, "codec %s needs base data", name);
    if (!p->cols || n % ((size_t)p->cols * w))
        return wd_errf(err, "a %s block of %zu bytes does not hold whole rows of %u", name, n, p->cols);
    if (n / w > UINT32_MAX) return wd_errf(err, "block of %zu bytes is too large", n);
    if (!d || !d->rows_encode) return wd_errf(err, "codec %s is not lossy", name);
    lbuf ob = {0};
    int rc = d->rows_encode(s, codec, dt, p, ft, base, n, &ob, NULL, err);
    if (!rc && ob.oom) rc = wd_errf(err, "out of memory encoding a block");
    if (rc) {
        free(ob.p);
        return -1;
    }
    unsigned char *dst = wd_scratch_buf(s, LS_OUT, ob.len);
    if (!dst) {
        free(ob.p);
        return wd_errf(err, "out of memory");
    }
    memcpy(dst, ob.p, ob.len);
    free(ob.p);
    *out = dst;
    *out_len = ob.len;
    return 0;
}

int wd_lossy_decode(wd_scratch *s, wd_codec codec, wd_dtype dt, const unsigned char *src, size_t slen,
                    const unsigned char *base, unsigned char *out, size_t n, wd_err *err)
{
    const wd_codec_desc *d = wd_codec_get(codec);
    const char *name = wd_codec_name(codec);
    lhdr h;
    if (!base) return wd_errf(err, "codec %s needs base data", name);
    if (lh_get(src, slen, codec, name, dt, n, &h, err)) return -1;
    if (!d || !d->rows_decode) return wd_errf(err, "codec %s is not lossy", name);
    lrd r = {src, slen, WD_LOSSY_HDR};
    if (d->rows_decode(s, codec, dt, &h, &r, base, out, n, err)) return -1;
    if (r.at != slen) return wd_errf(err, "lossy block has %zu trailing bytes", slen - r.at);
    return 0;
}
