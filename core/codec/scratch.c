/* scratch.c - per-thread working memory of the codecs: named buffers
 * (wd_slot, codec.h: which code holds which while it runs), the zstd
 * contexts, and a small pool of idle scratches (wd_scratch_pool) so that
 * decoders reuse them instead of growing fresh ones. */
#include "codec/codec.h"
#include <stdlib.h>
#include <zstd.h>

struct wd_scratch {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    unsigned char *buf[WD_NSLOTS];
    size_t cap[WD_NSLOTS];
};

wd_scratch *wd_scratch_new(void)
{
    return calloc(1, sizeof(wd_scratch));
}

void wd_scratch_free(wd_scratch *s)
{
    if (!s) return;
    ZSTD_freeCCtx(s->cctx);
    ZSTD_freeDCtx(s->dctx);
    for (int i = 0; i < WD_NSLOTS; i++) free(s->buf[i]);
    free(s);
}

size_t wd_scratch_bytes(const wd_scratch *s)
{
    size_t n = 0;
    if (s)
        for (int i = 0; i < WD_NSLOTS; i++) n += s->cap[i];
    return n;
}

unsigned char *wd_scratch_buf(wd_scratch *s, wd_slot slot, size_t n)
{
    if (n == 0) n = 1;
    if (s->cap[slot] < n) {
        /* grown in steps (a quarter more, whole 64 KiB) rather than to each
         * new largest block's size: every growth moves the buffer to fresh
         * pages that fault in */
        size_t want = s->cap[slot] + s->cap[slot] / 4;
        if (n >= (64u << 10)) n = ((n > want ? n : want) + (64u << 10) - 1) & ~(size_t)((64u << 10) - 1);
        unsigned char *p = realloc(s->buf[slot], n);
        if (!p) return NULL;
        s->buf[slot] = p;
        s->cap[slot] = n;
    }
    return s->buf[slot];
}
int wd_zstd_compress(wd_scratch *s, void *dst, size_t cap, const void *src, size_t n, int level,
                     size_t *out, wd_err *err)
{
    if (!s->cctx && !(s->cctx = ZSTD_createCCtx())) return wd_errf(err, "out of memory creating a zstd compressor");
    size_t z = ZSTD_compressCCtx(s->cctx, dst, cap, src, n, level);
    if (ZSTD_isError(z)) return wd_errf(err, "zstd compression failed: %s", ZSTD_getErrorName(z));
    *out = z;
    return 0;
}

int wd_zstd_decompress(wd_scratch *s, void *dst, size_t cap, const void *src, size_t n,
                       size_t *out, wd_err *err)
{
    if (!s->dctx && !(s->dctx = ZSTD_createDCtx())) return wd_errf(err, "out of memory creating a zstd decompressor");
    size_t r = ZSTD_decompressDCtx(s->dctx, dst, cap, src, n);
    if (ZSTD_isError(r)) return wd_errf(err, "zstd: %s", ZSTD_getErrorName(r));
    *out = r;
    return 0;
}

ZSTD_CCtx *wd_scratch_cctx(wd_scratch *s, wd_err *err)
{
    if (!s->cctx && !(s->cctx = ZSTD_createCCtx())) wd_errf(err, "out of memory creating a zstd compressor");
    return s->cctx;
}

ZSTD_DCtx *wd_scratch_dctx(wd_scratch *s, wd_err *err)
{
    if (!s->dctx && !(s->dctx = ZSTD_createDCtx())) wd_errf(err, "out of memory creating a zstd decompressor");
    return s->dctx;
}

/* ---- the pool ------------------------------------------------------- */
void wd_scratch_pool_init(wd_scratch_pool *p, size_t keep)
{
    pthread_mutex_init(&p->lock, NULL);
    p->items = NULL;
    p->n = p->cap = 0;
    p->keep = keep;
}

void wd_scratch_pool_destroy(wd_scratch_pool *p)
{
    for (size_t i = 0; i < p->n; i++) wd_scratch_free(p->items[i]);
    free(p->items);
    p->items = NULL;
    p->n = p->cap = 0;
    pthread_mutex_destroy(&p->lock);
}

wd_scratch *wd_scratch_pool_get(wd_scratch_pool *p)
{
    wd_scratch *s = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->n) s = p->items[--p->n];
    pthread_mutex_unlock(&p->lock);
    return s ? s : wd_scratch_new();
}

void wd_scratch_pool_put(wd_scratch_pool *p, wd_scratch *s)
{
    if (!s) return;
    pthread_mutex_lock(&p->lock);
    if (p->n < p->keep) { /* idle scratches hold megabytes each: keep few */
        if (p->n == p->cap) {
            size_t nc = p->cap ? p->cap * 2 : 8;
            wd_scratch **np = realloc(p->items, nc * sizeof *np);
            if (np) {
                p->items = np;
                p->cap = nc;
            }
        }
        if (p->n < p->cap) {
            p->items[p->n++] = s;
            s = NULL;
        }
    }
    pthread_mutex_unlock(&p->lock);
    wd_scratch_free(s);
}
