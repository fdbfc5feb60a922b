/* v1_view.c - present a deltatensors v1 file as a model directory.
 *
 * v1 records carry no file layout, so the layout is the base's: the same
 * shard names, each holding the same tensors in the same order, rebuilt
 * tensors as float32 (what the reference produces) or, on request, in the
 * base's dtype; tensors the v1 file lacks are the base's bytes.  Headers
 * (and index.json for sharded bases) are generated here when the base is
 * attached.  A v1 tensor can only be rebuilt whole, so the last one rebuilt
 * is kept for the blocks that follow it. */
#include "legacy/legacy.h"
#include "delta/delta_impl.h"
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int add_block_range(wd_delta *d, wd_ext_priv *e, uint64_t len, uint32_t bs, size_t *nb, size_t *cap,
                           wd_err *err)
{
    uint32_t n = (uint32_t)((len + bs - 1) / bs);
    if (*nb + n > *cap) {
        size_t nc = (*cap ? *cap * 2 : 64) + n;
        wd_block *p = realloc(d->blocks, nc * sizeof *p);
        if (!p) return wd_errf(err, "out of memory");
        d->blocks = p;
        *cap = nc;
    }
    e->pub.first_block = (uint32_t)*nb;
    e->pub.nblocks = n;
    e->pub.block_size = bs;
    for (uint32_t i = 0; i < n; i++) {
        wd_block *b = &d->blocks[*nb + i];
        memset(b, 0, sizeof *b);
        b->out_len = (uint32_t)((i + 1 < n) ? bs : len - (uint64_t)i * bs);
    }
    *nb += n;
    return 0;
}

/* Output dtype of a rebuilt v1 tensor. */
static wd_dtype v1_out_dtype(const wd_delta *d, wd_dtype base_dt)
{
    if (d->v1_base_dtype && (base_dt == WD_BF16 || base_dt == WD_F16 || base_dt == WD_F32)) return base_dt;
    return WD_F32;
}

static const char *dtype_string(wd_dtype t)
{
    switch (t) {
    case WD_BF16: return "BF16";
    case WD_F16: return "F16";
    default: return "F32";
    }
}

/* The outputs: one file per base shard, plus a regenerated index. */
int wd_v1view_set_base(wd_delta *d, const wd_model *base, wd_err *err)
{
    size_t nfiles = base->nfiles + (base->nfiles > 1 ? 1 : 0);
    size_t nb = 0, capb = 0;
    d->files = calloc(nfiles + 1, sizeof *d->files);
    d->file_exts = calloc(nfiles + 1, sizeof *d->file_exts);
    d->file_pub_exts = calloc(nfiles + 1, sizeof *d->file_pub_exts);
    if (!d->files || !d->file_exts || !d->file_pub_exts) return wd_errf(err, "out of memory");
    d->info.nfiles = nfiles; /* so that wd_delta_close frees whatever is built */
    /* every v1 tensor must exist in the base with the same element count */
    for (size_t i = 0; i < wd_v1_count(d->v1); i++) {
        const wd_v1_tensor *t = wd_v1_get(d->v1, i);
        const wd_tensor *bt = wd_model_find(base, t->name, NULL);
        if (!bt) return wd_errf(err, "%s: tensor %s is not in base %s", d->path, t->name, base->dir);
        if (bt->nelem != t->nelem)
            return wd_errf(err, "%s: tensor %s has %llu elements, the base's has %llu", d->path, t->name,
                           (unsigned long long)t->nelem, (unsigned long long)bt->nelem);
        if (bt->dtype != WD_F32 && bt->dtype != WD_BF16 && bt->dtype != WD_F16 && bt->dtype != WD_F64)
            return wd_errf(err, "%s: base tensor %s is %s; v1 deltas apply to float tensors only", d->path, t->name,
                           bt->dtype_name);
    }
    cJSON *wmap = cJSON_CreateObject();
    uint64_t total = 0;
    for (size_t f = 0; f < base->nfiles; f++) {
        const wd_stfile *sf = &base->files[f];
        wd_tensor *tt = calloc(sf->ntensors + 1, sizeof *tt);
        wd_ext_priv *ex = calloc(sf->ntensors + 2, sizeof *ex);
        d->file_exts[f] = ex;
        if (!tt || !ex) {
            free(tt);
            cJSON_Delete(wmap);
            return wd_errf(err, "out of memory");
        }
        for (size_t k = 0; k < sf->ntensors; k++) {
            tt[k] = sf->tensors[k];
            int vi = wd_v1_find(d->v1, tt[k].name);
            if (vi >= 0) {
                tt[k].dtype = v1_out_dtype(d, sf->tensors[k].dtype);
                snprintf(tt[k].dtype_name, sizeof tt[k].dtype_name, "%s", dtype_string(tt[k].dtype));
            }
        }
        unsigned char *hdr;
        size_t hl;
        if (wd_st_build_header(tt, sf->ntensors, "{\"format\":\"pt\"}", &hdr, &hl, err)) {
            free(tt);
            cJSON_Delete(wmap);
            return wd_errprefix(err, "%s: building the header of %s", d->path, sf->name);
        }
        wd_outfile *of = &d->files[f];
        of->name = strdup(sf->name);
        of->is_safetensors = 1;
        size_t ne = 0;
        ex[ne].pub = (wd_extent){0, hl, 0, 0, 0, WD_CODEC_GENERATED, WD_U8, NULL, NULL, NULL};
        ex[ne].base_fd_index = -1;
        ex[ne].tensor = (char *)hdr; /* the blob; freed in wd_v1view_free */
        of->nextents = ++ne;
        if (add_block_range(d, &ex[0], hl, WD_DEFAULT_BLOCK_SIZE, &nb, &capb, err)) goto fail;
        for (size_t k = 0; k < sf->ntensors; k++) {
            if (tt[k].length == 0) continue;
            int vi = wd_v1_find(d->v1, tt[k].name);
            wd_ext_priv *e = &ex[ne];
            e->pub = (wd_extent){tt[k].offset, tt[k].length, 0, 0, 0,
                                 vi >= 0 ? WD_CODEC_V1 : WD_CODEC_BASE_COPY, tt[k].dtype, NULL, NULL, NULL};
            e->tensor = strdup(tt[k].name);
            e->base_tensor = strdup(tt[k].name);
            e->pub.tensor = e->tensor;
            e->pub.base_tensor = e->base_tensor;
            e->base_fd_index = (int)f;
            e->base_offset = sf->tensors[k].offset;
            of->nextents = ++ne;
            if (!e->tensor || !e->base_tensor ||
                add_block_range(d, e, tt[k].length, WD_DEFAULT_BLOCK_SIZE, &nb, &capb, err))
                goto fail;
        }
        for (size_t k = 0; k < sf->ntensors; k++) {
            total += tt[k].length;
            cJSON_AddStringToObject(wmap, tt[k].name, sf->name);
        }
        of->size = ne > 1 ? ex[ne - 1].pub.file_offset + ex[ne - 1].pub.length : hl;
        free(tt);
        continue;
    fail:
        free(tt);
        cJSON_Delete(wmap);
        return wd_errf(err, "out of memory");
    }
    if (base->nfiles > 1) {
        size_t f = base->nfiles;
        cJSON *idx = cJSON_CreateObject();
        cJSON *meta = cJSON_AddObjectToObject(idx, "metadata");
        cJSON_AddNumberToObject(meta, "total_size", (double)total);
        cJSON_AddItemToObject(idx, "weight_map", wmap);
        wmap = NULL;
        char *text = cJSON_Print(idx);
        cJSON_Delete(idx);
        wd_ext_priv *ex = calloc(1, sizeof *ex);
        if (!text || !ex) {
            free(text);
            free(ex);
            return wd_errf(err, "out of memory");
        }
        d->file_exts[f] = ex;
        d->files[f].nextents = 1;
        size_t len = strlen(text);
        ex->pub = (wd_extent){0, len, 0, 0, 0, WD_CODEC_GENERATED, WD_U8, NULL, NULL, NULL};
        ex->tensor = text;
        ex->base_fd_index = -1;
        if (add_block_range(d, ex, len, WD_DEFAULT_BLOCK_SIZE, &nb, &capb, err)) return -1;
        d->files[f].name = strdup("model.safetensors.index.json");
        d->files[f].size = len;
    }
    cJSON_Delete(wmap);
    d->info.nblocks = nb;
    d->info.blocks = d->blocks;
    d->info.files = d->files;
    d->info.output_size = 0;
    for (size_t f = 0; f < nfiles; f++) {
        d->info.output_size += d->files[f].size;
        d->file_pub_exts[f] = calloc(d->files[f].nextents + 1, sizeof(wd_extent));
        if (!d->file_pub_exts[f] || !d->files[f].name) return wd_errf(err, "out of memory");
        for (size_t k = 0; k < d->files[f].nextents; k++) {
            d->file_pub_exts[f][k] = d->file_exts[f][k].pub;
            /* the generated blob is not a tensor name */
            if (d->file_exts[f][k].pub.codec == WD_CODEC_GENERATED) d->file_pub_exts[f][k].tensor = NULL;
        }
        d->files[f].extents = d->file_pub_exts[f];
    }
    d->memo_tensor = -1;
    return 0;
}

/* The v1 view's blocks are 1 MiB: a base tensor's sum is chained over
 * pieces of that size, as wd_model_hash_ex hands them out. */
static uint64_t base_sum(const unsigned char *p, uint64_t n)
{
    uint64_t h = 0;
    for (uint64_t at = 0; at < n; at += WD_DEFAULT_BLOCK_SIZE)
        h = wd_hash64(p + at, (size_t)(n - at < WD_DEFAULT_BLOCK_SIZE ? n - at : WD_DEFAULT_BLOCK_SIZE), h);
    return h;
}

/* A changed base (or file) found: every later read of d fails, the status
 * says so (digest state -1), and err names what changed.  locked: the
 * caller holds memo_lock.  Returns -1. */
static int found_bad(wd_delta *d, int locked, wd_err *err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int found_bad(wd_delta *d, int locked, wd_err *err, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!locked) pthread_mutex_lock(&d->memo_lock);
    if (!atomic_load(&d->v1_bad)) snprintf(d->v1_why, sizeof d->v1_why, "%s", msg);
    d->v1_digest = -1;
    atomic_store(&d->v1_bad, 1);
    if (!locked) pthread_mutex_unlock(&d->memo_lock);
    return wd_errf(err, "%s: %s", d->path, msg);
}

static int rebuild_tensor(wd_delta *d, const wd_ext_priv *e, wd_err *err)
{
    int vi = wd_v1_find(d->v1, e->tensor);
    const wd_v1_tensor *t = wd_v1_get(d->v1, (size_t)vi);
    const wd_tensor *bt = wd_model_find(d->base, e->tensor, NULL);
    unsigned char *b = malloc(bt->length ? bt->length : 1);
    float *out = malloc(t->nelem * 4 + 4);
    if (!b || !out) {
        free(b);
        free(out);
        return wd_errf(err, "out of memory rebuilding %s (%llu elements)", e->tensor, (unsigned long long)t->nelem);
    }
    int rc = wd_pread_full(d->base_fds[e->base_fd_index], b, bt->length, bt->offset,
                           d->base->files[e->base_fd_index].path, err);
    const uint64_t *sums = atomic_load(&d->v1_base_sums);
    if (!rc && sums && base_sum(b, bt->length) != sums[e->pub.first_block])
        rc = found_bad(d, 1, err, "base tensor %s in %s changed since the base was checked", e->tensor,
                       d->base->files[e->base_fd_index].path);
    if (!rc) rc = wd_v1_rebuild(d->v1, (size_t)vi, b, bt->dtype, out, err);
    free(b);
    if (rc) {
        free(out);
        return -1;
    }
    if (e->pub.dtype != WD_F32) { /* narrow in place */
        uint16_t *o16 = (uint16_t *)(void *)out;
        for (uint64_t i = 0; i < t->nelem; i++) {
            uint32_t u;
            memcpy(&u, &out[i], 4);
            o16[i] = e->pub.dtype == WD_BF16 ? wd_f32_to_bf16(u) : wd_f32_to_f16(u);
        }
    }
    free(d->memo);
    d->memo = (unsigned char *)out;
    d->memo_tensor = vi;
    return 0;
}

/* ---- base checksums ---------------------------------------------------- */
typedef struct sums_ctx {
    wd_delta *d;
    size_t **ext_of; /* per base file: tensor index -> extent index (0: none) */
    uint64_t *sums;
} sums_ctx;

static void sum_chunk(void *ctx, size_t file, size_t tensor, uint64_t rel, const unsigned char *buf, size_t n)
{
    sums_ctx *c = ctx;
    size_t k = c->ext_of[file][tensor];
    if (!k) return;
    const wd_ext_priv *e = &c->d->file_exts[file][k];
    if (e->pub.codec == WD_CODEC_BASE_COPY)
        c->sums[e->pub.first_block + rel / WD_DEFAULT_BLOCK_SIZE] = wd_hash64(buf, n, 0);
    else if (e->pub.codec == WD_CODEC_V1)
        c->sums[e->pub.first_block] = wd_hash64(buf, n, rel ? c->sums[e->pub.first_block] : 0);
}

/* Hash the attached base to its content hash (it must be the delta's
 * parent_hash) and take the per-block sums on the way: the bytes checked
 * against the hash are the bytes the sums describe. */
static int base_sums(wd_delta *d, uint64_t **out, wd_err *err)
{
    const wd_model *m = d->base;
    sums_ctx c = {d, calloc(m->nfiles + 1, sizeof(size_t *)), calloc(d->info.nblocks + 1, sizeof(uint64_t))};
    int rc = -1;
    if (!c.ext_of || !c.sums) {
        wd_errf(err, "out of memory");
        goto out;
    }
    for (size_t f = 0; f < m->nfiles; f++) {
        const wd_stfile *sf = &m->files[f];
        if (!(c.ext_of[f] = calloc(sf->ntensors + 1, sizeof(size_t)))) {
            wd_errf(err, "out of memory");
            goto out;
        }
        size_t k = 1;
        for (size_t t = 0; t < sf->ntensors; t++)
            if (sf->tensors[t].length) c.ext_of[f][t] = k++;
        if (k != d->files[f].nextents) {
            wd_errf(err, "%s: the view of base file %s has %zu extents, expected %zu", d->path, sf->name,
                    d->files[f].nextents, k);
            goto out;
        }
    }
    unsigned char h[32];
    if (wd_model_hash_ex(m, h, WD_DEFAULT_BLOCK_SIZE, sum_chunk, &c, d->stop, err)) {
        wd_errprefix(err, "%s: checking its base %s", d->path, m->dir);
        goto out;
    }
    if (memcmp(h, d->info.base_hash, 32)) {
        char a[65], b[65];
        wd_hex(h, 32, a);
        wd_hex(d->info.base_hash, 32, b);
        wd_errf(err, "%s: its base %s now has content hash %s, the delta needs %s (changed since it was attached?)",
                d->path, m->dir, a, b);
        goto out;
    }
    *out = c.sums;
    c.sums = NULL;
    rc = 0;
out:
    for (size_t f = 0; c.ext_of && f < m->nfiles; f++) free(c.ext_of[f]);
    free(c.ext_of);
    free(c.sums);
    return rc;
}

int wd_delta_check_digest(wd_delta *d, wd_err *err)
{
    if (!d->v1) return 0;
    pthread_mutex_lock(&d->memo_lock);
    int state = d->v1_digest;
    pthread_mutex_unlock(&d->memo_lock);
    if (state > 0) return 0;
    if (state < 0) {
        pthread_mutex_lock(&d->memo_lock);
        wd_errf(err, "%s: %s", d->path, d->v1_why[0] ? d->v1_why : "trailing SHA-256 does not match the file's contents");
        pthread_mutex_unlock(&d->memo_lock);
        return -1;
    }
    /* no lock held: these read the whole file, and the whole base */
    int rc = wd_v1_check_digest(d->v1, err);
    uint64_t *sums = NULL;
    if (!rc && d->base) rc = base_sums(d, &sums, err);
    pthread_mutex_lock(&d->memo_lock);
    if (rc && !d->v1_why[0]) {
        const char *m = err->msg;
        size_t pl = strlen(d->path);
        if (!strncmp(m, d->path, pl) && m[pl] == ':' && m[pl + 1] == ' ') m += pl + 2; /* the path is added back */
        size_t ml = strlen(m);
        if (ml >= sizeof d->v1_why) ml = sizeof d->v1_why - 1;
        memcpy(d->v1_why, m, ml);
        d->v1_why[ml] = 0;
    }
    if (!rc && atomic_load(&d->v1_bad)) rc = wd_errf(err, "%s: %s", d->path, d->v1_why);
    d->v1_digest = rc ? -1 : 1;
    if (rc) atomic_store(&d->v1_bad, 1);
    if (!rc && sums) {
        atomic_store(&d->v1_base_sums, sums);
        sums = NULL;
    }
    pthread_mutex_unlock(&d->memo_lock);
    free(sums);
    return rc;
}

int wd_delta_digest_state(wd_delta *d)
{
    if (!d->v1) return 1;
    pthread_mutex_lock(&d->memo_lock);
    int state = d->v1_digest;
    pthread_mutex_unlock(&d->memo_lock);
    return state;
}

int wd_v1view_decode(wd_delta *d, uint32_t block, unsigned char *out, wd_err *err)
{
    const wd_ext_priv *e = d->ext_by_num[d->block_ext[block]];
    const wd_block *b = &d->blocks[block];
    uint64_t rel = (uint64_t)(block - e->pub.first_block) * e->pub.block_size;
    switch (e->pub.codec) {
    case WD_CODEC_GENERATED:
        memcpy(out, (const unsigned char *)e->tensor + rel, b->out_len);
        return 0;
    case WD_CODEC_BASE_COPY: {
        if (atomic_load(&d->v1_bad)) /* a wrong or changed base, or a corrupt file: nothing from it */
            return wd_errf(err, "%s: tensor %s: not served: the delta or its base failed its check", d->path,
                           e->tensor);
        if (wd_pread_full(d->base_fds[e->base_fd_index], out, b->out_len, e->base_offset + rel,
                          d->base->files[e->base_fd_index].path, err))
            return wd_errprefix(err, "%s: tensor %s", d->path, e->tensor);
        const uint64_t *sums = atomic_load(&d->v1_base_sums);
        if (sums && wd_hash64(out, b->out_len, 0) != sums[block])
            return found_bad(d, 0, err, "base tensor %s in %s changed since the base was checked (block %u)",
                             e->tensor, d->base->files[e->base_fd_index].path, block);
        return 0;
    }
    case WD_CODEC_V1: {
        pthread_mutex_lock(&d->memo_lock);
        int rc = 0;
        if (d->v1_digest < 0) { /* never data from a file known to be corrupt, or a changed base */
            wd_errf(err, "%s: tensor %s: not served: %s", d->path, e->tensor,
                    d->v1_why[0] ? d->v1_why : "the file's trailing SHA-256 does not match (corrupt file)");
            pthread_mutex_unlock(&d->memo_lock);
            return -1;
        }
        if (d->memo_tensor != wd_v1_find(d->v1, e->tensor)) rc = rebuild_tensor(d, e, err);
        if (!rc) memcpy(out, d->memo + rel, b->out_len);
        pthread_mutex_unlock(&d->memo_lock);
        return rc ? wd_errprefix(err, "%s: tensor %s", d->path, e->tensor) : 0;
    }
    default:
        return wd_errf(err, "%s: block %u: codec %d is not part of a v1 view", d->path, block, (int)e->pub.codec);
    }
}

/* Generated blobs live in their extents' tensor field and are freed with
 * them by wd_delta_close; only the rebuilt tensor is ours. */
void wd_v1view_free(wd_delta *d)
{
    free(d->memo);
    d->memo = NULL;
    free(atomic_load(&d->v1_base_sums));
    atomic_store(&d->v1_base_sums, NULL);
}
