/* delta_write.c - wd_create: one streaming pass from (base, fine-tune) to a
 * .wdelta v2 file.
 *
 * The reading thread walks the fine-tune in content-hash order (so the
 * result hash is computed on the way), cuts every stream into blocks and
 * queues them; worker threads encode them in parallel and place them in the
 * temporary file in the order they were queued, so the same inputs give the
 * same bytes whatever the number of threads (only the order in which file
 * offsets are claimed is serialized; the writes themselves are not).
 * The queue is bounded, so memory stays at a few blocks per thread whatever
 * the model's size.  The base's content hash is computed by one more thread
 * at the same time.  Only a complete file is renamed to the output name. */
#include "ops/ops.h"
#include "delta/delta.h"
#include "delta/xdtype.h"
#include "format/layout.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

/* ---- the plan: every output file as extents ------------------------- */
/* A plan record is 64 bytes, one per tensor of the fine-tune (issue 15: a
 * model may hold 100,000 tensors); what only the lossy and low-rank codecs
 * need lives in a record of its own, made for the extents that use it. */
typedef struct plan_lossy {
    wd_lossy_params lp;           /* lossy codecs' settings */
    unsigned rank_found;          /* lowrank codecs: largest rank of a block */
    char *why;                    /* why the strategy's codec changed (manifest "why"), or NULL */
} plan_lossy;

typedef struct plan_ext plan_ext;
struct plan_ext {
    uint64_t file_offset, length;
    const wd_tensor *tensor;      /* fine-tune tensor, NULL for header/extra */
    const wd_tensor *base_tensor; /* for WD_CODEC_LOSSLESS */
    plan_lossy *x;                /* NULL: no settings, no reason */
    uint32_t first_block, nblocks;
    uint32_t bs;                  /* block size (row-aligned for lossy codecs) */
    int base_file;                /* index into the base's files, -1 if none */
    wd_codec codec;
    wd_dtype dtype;
};

static const wd_lossy_params no_lossy_params;

static const wd_lossy_params *ext_lp(const plan_ext *e)
{
    return e->x ? &e->x->lp : &no_lossy_params;
}

/* e's own lossy record, made on first use; NULL when out of memory */
static plan_lossy *ext_x(plan_ext *e)
{
    if (!e->x) e->x = calloc(1, sizeof *e->x);
    return e->x;
}

typedef struct plan_file {
    char *name;
    char *src_path;     /* extra files: where to read them */
    uint64_t size;
    int is_st;
    size_t next;
    plan_ext *ext;
    uint32_t *ext_of;   /* safetensors: tensor index (file order) -> its extent, 0 if none */
} plan_file;

typedef struct job {
    uint32_t block;
    wd_codec codec;
    wd_dtype dtype;
    unsigned char *ft, *base;
    size_t n;
    const wd_lossy_params *lp;
    uint64_t seq;       /* submission order: the order blocks take file offsets */
    struct plan_ext *ext; /* the extent, when this is its only block (its codec may change) */
    int pred;           /* base is the predicted one of another dtype/shape (xdtype.h) */
} job;

/* an encoded block: its bytes (owned by `own` when copied out of a
 * worker's scratch) and where it goes */
typedef struct pending {
    int ready;
    const unsigned char *out;
    unsigned char *own;
    size_t len;
    uint32_t block, n;
    uint64_t out_hash, at;
} pending;

typedef struct writer {
    const wd_create_opts *o;
    int level;
    uint32_t block_size;
    int fd;
    const char *tmp_path;
    /* queue */
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full, turn;
    job *q;
    uint64_t seq_submitted, seq_placed;
    size_t qcap, qhead, qlen;
    int closing;
    /* blocks encoded ahead of their turn, waiting to be placed: slot seq %
     * pcap (issue 18: a worker that finishes early goes on to the next
     * block instead of waiting for the one before it) */
    struct pending *pend;
    size_t pcap;
    /* output */
    uint64_t next_offset;
    wd_block *blocks;
    uint32_t nblocks;
    int failed;
    wd_err err;
    /* progress */
    uint64_t total_bytes;
    size_t tensors_done, ntensors;
    int *parent_files; /* with o->parent: base file -> parent output file */
} writer;

static void fail(writer *w, const wd_err *e)
{
    pthread_mutex_lock(&w->lock);
    if (!w->failed) {
        w->failed = 1;
        w->err = *e;
    }
    pthread_cond_broadcast(&w->not_full);
    pthread_cond_broadcast(&w->not_empty);
    pthread_cond_broadcast(&w->turn);
    pthread_mutex_unlock(&w->lock);
}

static int submit(writer *w, job *j)
{
    pthread_mutex_lock(&w->lock);
    while (w->qlen == w->qcap && !w->failed) pthread_cond_wait(&w->not_full, &w->lock);
    int failed = w->failed;
    if (!failed) {
        j->seq = w->seq_submitted++;
        w->q[(w->qhead + w->qlen) % w->qcap] = *j;
        w->qlen++;
        pthread_cond_signal(&w->not_empty);
    }
    pthread_mutex_unlock(&w->lock);
    if (failed) {
        free(j->ft);
        free(j->base);
    }
    return failed ? -1 : 0;
}

static int encode_and_write(writer *w, wd_scratch *s, job *j, wd_err *err)
{
    const unsigned char *out;
    size_t len;
    uint64_t out_hash;
    if (wd_codec_is_rowblock(j->codec)) {
        /* the block's output is what our decoder makes of it */
        if (wd_lossy_encode(s, j->codec, j->dtype, j->lp, j->ft, j->base, j->n, &out, &len, err))
            return wd_errprefix(err, "block %u", j->block);
        unsigned char *dec = wd_scratch_buf(s, 0, j->n);
        if (!dec) return wd_errf(err, "out of memory");
        if (wd_lossy_decode(s, j->codec, j->dtype, out, len, j->base, dec, j->n, err))
            return wd_errprefix(err, "block %u: decoding what was just encoded", j->block);
        /* an exact codec (lowrank-exact) must give back the fine-tune's
         * bytes: checked here, where both are in memory (a memcmp, small
         * beside the decode), not first by the result hash at read time */
        if (!wd_codec_is_lossy(j->codec) && memcmp(dec, j->ft, j->n))
            return wd_errf(err, "block %u: the %s code does not decode to the fine-tune's bytes", j->block,
                           wd_codec_name(j->codec));
        out_hash = wd_hash64(dec, j->n, 0);
    } else {
        if (j->pred ? wd_xdtype_encode(s, j->dtype, w->level, j->ft, j->base, j->n, &out, &len, err)
                    : wd_encode_block(s, j->codec, j->dtype, w->level, j->ft, j->base, j->n, &out, &len, err))
            return wd_errprefix(err, "block %u", j->block);
        out_hash = wd_hash64(j->ft, j->n, 0);
        if (j->ext && j->codec == WD_CODEC_LOSSLESS && len > j->n) {
            /* a delta bigger than the bytes themselves (tiny tensors: the
             * codec's tables outweigh the data): store the bytes with zstd
             * if that is smaller; the extent is this one block, so its
             * codec can still change (the manifest is written last) */
            unsigned char *keep = malloc(len);
            const unsigned char *zo;
            size_t zl;
            if (!keep) return wd_errf(err, "out of memory");
            memcpy(keep, out, len);
            if (wd_encode_block(s, WD_CODEC_ZSTD, j->dtype, w->level, j->ft, NULL, j->n, &zo, &zl, err)) {
                free(keep);
                return wd_errprefix(err, "block %u", j->block);
            }
            if (zl < len) {
                j->ext->codec = WD_CODEC_ZSTD;
                j->ext->base_tensor = NULL;
                out = zo;
                len = zl;
                free(keep);
                keep = NULL;
            } else {
                unsigned char *dst = wd_scratch_buf(s, 2, len);
                if (!dst) {
                    free(keep);
                    return wd_errf(err, "out of memory");
                }
                memcpy(dst, keep, len);
                out = dst;
                free(keep);
            }
        }
    }
    if (len > UINT32_MAX) return wd_errf(err, "block %u: encoded size %zu too large", j->block, len);
    /* File offsets are taken in submission order.  At its turn a block
     * takes the next offset, and so do the blocks after it that were
     * encoded ahead of their turn (a copy of each in its slot); a block
     * whose turn has not come waits in a slot when one is free, else here.
     * The FIFO queue hands jobs out in order, so the lowest unplaced block
     * is always being encoded by some worker or in a slot: the wait ends. */
    pending mine = {1, out, NULL, len, j->block, (uint32_t)j->n, out_hash, 0};
    pending *todo = NULL; /* what this worker writes: its own block, then those it placed */
    size_t ntodo = 0;
    int rc = 0;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        if (w->failed) {
            pthread_mutex_unlock(&w->lock);
            free(mine.own);
            return wd_errf(err, "block %u: stopped after an earlier error", j->block);
        }
        if (w->seq_placed == j->seq) break;
        if (j->seq - w->seq_placed < w->pcap && !mine.own) { /* a slot: copy out of the scratch */
            pthread_mutex_unlock(&w->lock);
            mine.own = malloc(len ? len : 1);
            if (!mine.own) return wd_errf(err, "out of memory");
            memcpy(mine.own, out, len);
            mine.out = mine.own;
            pthread_mutex_lock(&w->lock);
            if (w->failed || w->seq_placed == j->seq) continue;
            w->pend[j->seq % w->pcap] = mine;
            pthread_mutex_unlock(&w->lock);
            return 0; /* whoever places the block before it places this one */
        }
        pthread_cond_wait(&w->turn, &w->lock);
    }
    /* our turn: this block, then every consecutive one waiting in a slot */
    size_t nready = 0;
    while (nready < w->pcap && w->pend[(j->seq + 1 + nready) % w->pcap].ready) nready++;
    todo = malloc((nready + 1) * sizeof *todo);
    if (!todo) {
        pthread_mutex_unlock(&w->lock);
        free(mine.own);
        return wd_errf(err, "out of memory");
    }
    todo[ntodo++] = mine;
    for (size_t i = 0; i < nready; i++) {
        pending *p = &w->pend[(j->seq + 1 + i) % w->pcap];
        todo[ntodo++] = *p;
        *p = (pending){0};
    }
    for (size_t i = 0; i < ntodo; i++) {
        todo[i].at = w->next_offset;
        w->next_offset += todo[i].len;
        w->seq_placed++;
    }
    pthread_cond_broadcast(&w->turn);
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < ntodo; i++) {
        pending *p = &todo[i];
        if (!rc && wd_pwrite_full(w->fd, p->out, p->len, p->at, w->tmp_path, err)) rc = -1;
        wd_block *b = &w->blocks[p->block];
        b->offset = p->at;
        b->stored_len = (uint32_t)p->len;
        b->out_len = p->n;
        b->stored_hash = wd_hash64(p->out, p->len, 0);
        b->out_hash = p->out_hash;
        free(p->own);
    }
    free(todo);
    return rc;
}

static void *worker_main(void *arg)
{
    writer *w = arg;
    wd_scratch *s = wd_scratch_new();
    if (!s) {
        wd_err e;
        wd_errf(&e, "out of memory");
        fail(w, &e);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (w->qlen == 0 && !w->closing && !w->failed) pthread_cond_wait(&w->not_empty, &w->lock);
        if (w->failed || (w->qlen == 0 && w->closing)) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        job j = w->q[w->qhead];
        w->qhead = (w->qhead + 1) % w->qcap;
        w->qlen--;
        pthread_cond_signal(&w->not_full);
        pthread_mutex_unlock(&w->lock);
        wd_err e;
        int rc = encode_and_write(w, s, &j, &e);
        free(j.ft);
        free(j.base);
        if (rc) fail(w, &e);
    }
    /* drain anything left after a failure */
    pthread_mutex_lock(&w->lock);
    while (w->qlen) {
        job *j = &w->q[w->qhead];
        free(j->ft);
        free(j->base);
        w->qhead = (w->qhead + 1) % w->qcap;
        w->qlen--;
    }
    pthread_cond_broadcast(&w->not_full);
    pthread_mutex_unlock(&w->lock);
    wd_scratch_free(s);
    return NULL;
}

/* ---- planning -------------------------------------------------------- */
static int same_shape(const wd_tensor *a, const wd_tensor *b)
{
    if (a->ndim != b->ndim || a->dtype != b->dtype || a->length != b->length) return 0;
    if (strcmp(a->dtype_name, b->dtype_name)) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

static uint32_t blocks_for(uint64_t len, uint32_t bs)
{
    return (uint32_t)((len + bs - 1) / bs);
}

static void free_plan(plan_file *pf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(pf[i].name);
        free(pf[i].src_path);
        for (size_t k = 0; pf[i].ext && k < pf[i].next; k++)
            if (pf[i].ext[k].x) {
                free(pf[i].ext[k].x->why);
                free(pf[i].ext[k].x);
            }
        free(pf[i].ext);
        free(pf[i].ext_of);
    }
    free(pf);
}

static int plan_outputs(const wd_model *base, const wd_model *ft, plan_file **out, size_t *nout, wd_err *err)
{
    size_t n = ft->nfiles + ft->nextras;
    plan_file *pf = calloc(n ? n : 1, sizeof *pf);
    if (!pf) return wd_errf(err, "out of memory");
    for (size_t i = 0; i < ft->nfiles; i++) {
        const wd_stfile *sf = &ft->files[i];
        plan_file *p = &pf[i];
        p->name = strdup(sf->name);
        p->size = sf->size;
        p->is_st = 1;
        p->ext = calloc(sf->ntensors + 1, sizeof *p->ext);
        p->ext_of = calloc(sf->ntensors + 1, sizeof *p->ext_of);
        if (!p->name || !p->ext || !p->ext_of) goto oom;
        p->ext[p->next++] = (plan_ext){.length = sf->header_size, .base_file = -1, .codec = WD_CODEC_ZSTD,
                                       .dtype = WD_U8};
        for (size_t t = 0; t < sf->ntensors; t++) {
            const wd_tensor *tt = &sf->tensors[t];
            if (tt->length == 0) continue;
            size_t bfi = 0;
            const wd_tensor *bt = wd_model_find(base, tt->name, &bfi);
            /* another dtype or rows added/removed: against the converted base */
            int delta = bt && (same_shape(bt, tt) || wd_xdtype_fits(tt, bt));
            p->ext_of[t] = (uint32_t)p->next;
            p->ext[p->next++] = (plan_ext){.file_offset = tt->offset, .length = tt->length, .tensor = tt,
                                           .base_tensor = delta ? bt : NULL, .base_file = delta ? (int)bfi : -1,
                                           .codec = delta ? WD_CODEC_LOSSLESS : WD_CODEC_ZSTD, .dtype = tt->dtype};
        }
    }
    for (size_t i = 0; i < ft->nextras; i++) {
        plan_file *p = &pf[ft->nfiles + i];
        struct stat stt;
        p->name = strdup(ft->extras[i]);
        size_t pl = strlen(ft->dir) + strlen(ft->extras[i]) + 2;
        p->src_path = malloc(pl);
        p->ext = calloc(1, sizeof *p->ext);
        if (!p->name || !p->src_path || !p->ext) goto oom;
        snprintf(p->src_path, pl, "%s/%s", ft->dir, ft->extras[i]);
        if (stat(p->src_path, &stt)) {
            free_plan(pf, n);
            return wd_errf(err, "%s/%s: %s", ft->dir, ft->extras[i], strerror(errno));
        }
        p->size = (uint64_t)stt.st_size;
        if (p->size) {
            p->ext[0] = (plan_ext){.length = p->size, .base_file = -1, .codec = WD_CODEC_ZSTD, .dtype = WD_U8};
            p->next = 1;
        }
    }
    *out = pf;
    *nout = n;
    return 0;
oom:
    free_plan(pf, n);
    return wd_errf(err, "out of memory planning the delta");
}

/* Small tensors: an extent of its own costs a block-table entry and its
 * codec's block header (for a float tensor's lossless delta, 200 bytes and
 * more), whatever the tensor's size.  A tensor whose bytes are at most
 * twice that fixed cost gains nothing from a delta of its own, so runs of
 * consecutive small tensors (up to one block) are stored together as one
 * plain extent: zstd, no tensor name, like a header (no format change;
 * the rebuilt bytes are the fine-tune's exactly).  Lossy and low-rank
 * extents are never packed. */
static int is_small(const plan_ext *e)
{
    if (!e->tensor || (e->codec != WD_CODEC_LOSSLESS && e->codec != WD_CODEC_ZSTD)) return 0;
    size_t fixed = WD_BLOCK_ENTRY_LEN + wd_codec_header_len(WD_CODEC_LOSSLESS, e->dtype);
    return e->length <= 2 * fixed;
}

static void pack_small(plan_file *pf, size_t npf, const wd_model *ft, uint32_t bs)
{
    for (size_t i = 0; i < npf && i < ft->nfiles; i++) {
        plan_file *p = &pf[i];
        const wd_tensor *t0 = ft->files[i].tensors;
        size_t wi = 1, k = 1;
        while (k < p->next) {
            plan_ext e = p->ext[k];
            if (!is_small(&e)) {
                p->ext_of[e.tensor - t0] = wi;
                p->ext[wi++] = e;
                k++;
                continue;
            }
            plan_ext run = {.file_offset = e.file_offset, .bs = bs, .base_file = -1, .codec = WD_CODEC_ZSTD,
                            .dtype = WD_U8};
            while (k < p->next && is_small(&p->ext[k]) && run.length + p->ext[k].length <= bs &&
                   p->ext[k].file_offset == run.file_offset + run.length) {
                p->ext_of[p->ext[k].tensor - t0] = wi;
                run.length += p->ext[k].length;
                if (p->ext[k].x) { /* a reason kept for a tensor that is now in a run: none is written */
                    free(p->ext[k].x->why);
                    free(p->ext[k].x);
                }
                k++;
            }
            if (!run.length) { /* cannot happen: the first one always fits a block */
                p->ext_of[e.tensor - t0] = wi;
                p->ext[wi++] = e;
                k++;
                continue;
            }
            p->ext[wi++] = run;
        }
        p->next = wi;
        /* the records of the packed tensors are gone: give their room back
         * (a shrinking realloc that fails leaves the block as it was) */
        plan_ext *shrunk = realloc(p->ext, wi * sizeof *p->ext);
        if (shrunk) p->ext = shrunk;
    }
}

/* ---- feeding ---------------------------------------------------------- */
/* The base bytes of a delta against a parent delta: decoded from it. */
static int read_parent(const wd_delta *parent, int out_file, unsigned char *buf, size_t n, uint64_t off, wd_err *err)
{
    ssize_t got = wd_read((wd_delta *)parent, 0, NULL, (size_t)out_file, buf, n, off, err);
    if (got >= 0 && (size_t)got != n) return wd_errf(err, "short read at offset %llu", (unsigned long long)off);
    return got < 0 ? wd_errprefix(err, "parent %s", wd_delta_path(parent)) : 0;
}

/* One base file's bytes, wherever they come from: the base directory's
 * file (opened on first use) or, for a chain link, the parent's output of
 * the same name.  Used outside the main feed (auto's trial encodes, the
 * lossy result-hash pass). */
typedef struct base_src {
    const wd_create_opts *o;
    const wd_model *base;
    size_t file;
    int fd, parent_file;
} base_src;

static int base_src_open(base_src *b, const wd_create_opts *o, const wd_model *base, size_t file, wd_err *err)
{
    *b = (base_src){o, base, file, -1, -1};
    if (o->parent) {
        b->parent_file = wd_delta_find_file(o->parent, base->files[file].name);
        if (b->parent_file < 0)
            return wd_errf(err, "parent %s rebuilds no file %s", wd_delta_path(o->parent), base->files[file].name);
        return 0;
    }
    if ((b->fd = open(base->files[file].path, O_RDONLY | O_CLOEXEC)) < 0)
        return wd_errf(err, "%s: %s", base->files[file].path, strerror(errno));
    return 0;
}

static void base_src_close(base_src *b)
{
    if (b->fd >= 0) close(b->fd);
    b->fd = -1;
}

static int base_src_read(void *ctx, unsigned char *buf, size_t n, uint64_t off, wd_err *err)
{
    base_src *b = ctx;
    if (b->o->parent) return read_parent(b->o->parent, b->parent_file, buf, n, off, err);
    return wd_pread_full(b->fd, buf, n, off, b->base->files[b->file].path, err);
}

/* The result's two hashes, fed together in wd_model_hash_order (the v1
 * order): the identity (result_hash) and deltatensors' content hash
 * (result_hash_v1, informational). */
typedef struct res_hash {
    wd_idhash *id, *v1;
} res_hash;

static int res_hash_new(res_hash *h)
{
    h->id = wd_idhash_new(WD_ID_V2);
    h->v1 = wd_idhash_new(WD_HASH_V1);
    return h->id && h->v1 ? 0 : -1;
}

static int res_hash_begin(res_hash *h, const wd_tensor *t)
{
    return wd_idhash_begin(h->id, t) || (h->v1 && wd_idhash_begin(h->v1, t)) ? -1 : 0;
}

static void res_hash_update(res_hash *h, const void *p, size_t n)
{
    wd_idhash_update(h->id, p, n);
    if (h->v1) wd_idhash_update(h->v1, p, n); /* NULL: another thread's (feed_all) */
}

/* The result's v1 hash on a thread of its own while feed_all feeds (issue
 * 18: the reading thread had both hashes to compute, and the workers waited
 * for it).  It hashes tensor t, in the same content-hash order, once the
 * reader has fed it, reading its bytes again from the fine-tune file (just
 * read, so from the page cache); memory: one chunk. */
typedef struct v1_hasher {
    const wd_model *ft;
    const struct wd_tref *order;
    const int *ft_fds;
    wd_idhash *h;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t fed;  /* tensors the reader has fed */
    int abort;   /* the reader failed: stop */
    int rc;
    wd_err err;
} v1_hasher;

static void *v1_hasher_main(void *arg)
{
    v1_hasher *v = arg;
    size_t cap = 4u << 20;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        v->rc = wd_errf(&v->err, "out of memory");
        return NULL;
    }
    for (size_t t = 0; t < v->ft->ntensors; t++) {
        pthread_mutex_lock(&v->lock);
        while (v->fed <= t && !v->abort) pthread_cond_wait(&v->cond, &v->lock);
        int stop = v->abort;
        pthread_mutex_unlock(&v->lock);
        if (stop) break;
        size_t fi = v->order[t].file;
        const wd_tensor *tt = &v->ft->files[fi].tensors[v->order[t].tensor];
        if (wd_idhash_begin(v->h, tt)) {
            v->rc = wd_errf(&v->err, "out of memory");
            break;
        }
        for (uint64_t at = 0; at < tt->length; at += cap) {
            size_t n = (size_t)(tt->length - at < cap ? tt->length - at : cap);
            if (wd_pread_full(v->ft_fds[fi], buf, n, tt->offset + at, v->ft->files[fi].path, &v->err)) {
                v->rc = wd_errprefix(&v->err, "tensor %s", tt->name);
                break;
            }
            wd_idhash_update(v->h, buf, n);
        }
        if (v->rc) break;
    }
    free(buf);
    return NULL;
}

/* Both finals run (each frees its hash); then nothing is left to free. */
static int res_hash_final(res_hash *h, unsigned char id[32], unsigned char v1[32], wd_err *err)
{
    int rc = wd_idhash_final(h->id, id, err);
    wd_err e2;
    int rc1 = wd_idhash_final(h->v1, v1, rc ? &e2 : err);
    h->id = h->v1 = NULL;
    return rc || rc1 ? -1 : 0;
}

static void res_hash_free(res_hash *h)
{
    wd_idhash_free(h->id);
    wd_idhash_free(h->v1);
    h->id = h->v1 = NULL;
}

static int feed_range(writer *w, int ft_fd, const char *ft_path, int base_fd, const char *base_path,
                      plan_ext *e, uint64_t src_off, uint64_t base_off, res_hash *sha,
                      uint64_t *done, wd_err *err)
{
    for (uint32_t b = 0; b < e->nblocks; b++) {
        if (wd_stop_requested(w->o->stop, err)) return -1;
        uint64_t rel = (uint64_t)b * e->bs;
        size_t n = (size_t)(e->length - rel < e->bs ? e->length - rel : e->bs);
        job j = {e->first_block + b, e->codec, e->dtype, malloc(n), NULL, n, ext_lp(e), 0, e->nblocks == 1 ? e : NULL, 0};
        if (!j.ft) return wd_errf(err, "out of memory");
        if (wd_pread_full(ft_fd, j.ft, n, src_off + rel, ft_path, err)) {
            free(j.ft);
            return e->tensor ? wd_errprefix(err, "tensor %s", e->tensor->name) : -1;
        }
        if (sha) res_hash_update(sha, j.ft, n);
        if (wd_codec_needs_base(e->codec)) {
            /* the base range this block reads: the same bytes, or for the
             * predictor (xdtype.h) the base elements of its element range */
            int pred = wd_xdtype_fits(e->tensor, e->base_tensor);
            uint64_t brel = rel;
            size_t bn = n;
            if (pred) wd_xdtype_range(e->dtype, e->base_tensor->dtype, e->base_tensor->length, rel, n, &brel, &bn);
            j.base = malloc(n);
            unsigned char *bb = pred ? malloc(bn ? bn : 1) : j.base;
            if (!j.base || !bb || (w->o->parent ? read_parent(w->o->parent, w->parent_files[e->base_file], bb, bn, base_off + brel, err)
                                                : wd_pread_full(base_fd, bb, bn, base_off + brel, base_path, err))) {
                free(j.ft);
                free(j.base);
                if (pred) free(bb);
                if (!j.base || !bb) return wd_errf(err, "out of memory");
                return wd_errprefix(err, "base tensor %s", e->tensor->name);
            }
            if (pred) {
                wd_xdtype_convert(e->dtype, e->base_tensor->dtype, bb, bn, j.base, n);
                free(bb);
                j.pred = 1;
            }
        }
        if (submit(w, &j)) return -1;
        *done += n;
        if (w->o->progress)
            w->o->progress(w->o->progress_ctx, *done, w->total_bytes, w->tensors_done, w->ntensors);
    }
    return 0;
}

typedef struct base_hash_job {
    const wd_model *base;
    const volatile sig_atomic_t *stop;
    const unsigned char *known; /* the parent's result hash */
    unsigned kind;              /* of digest: the parent's result_hash_kind, else WD_ID_V2 */
    unsigned char digest[32];
    /* the base's v1 content hash (manifest base_hash_v1, informational):
     * computed with the identity, or the parent's result_hash_v1 */
    int has_v1;
    unsigned char v1[32];
    int rc;
    wd_err err;
} base_hash_job;

static void *base_hash_main(void *arg)
{
    base_hash_job *h = arg;
    if (h->known) {
        memcpy(h->digest, h->known, 32);
        h->rc = 0;
        return NULL;
    }
    /* the v1 content hash alone can be stopped; the identity reads its
     * tensors on several threads, the v1 hash beside it on one more */
    if (h->kind == WD_HASH_V1) {
        h->rc = wd_model_hash_ex(h->base, h->digest, 4u << 20, NULL, NULL, h->stop, &h->err);
        if (!h->rc) memcpy(h->v1, h->digest, 32);
    } else { /* the digest cache the mount and find-base keep: a base hashed once */
        char cbuf[4096];
        h->rc = wd_model_hashes_memo(h->base, wd_digest_cache_dir(cbuf, sizeof cbuf), h->digest, h->v1, NULL,
                                     &h->err);
    }
    h->has_v1 = h->rc == 0;
    return NULL;
}

/* ---- manifest -------------------------------------------------------- */
/* The options recorded are those that shape the output; not the thread
 * count, which does not (the same inputs give the same file anywhere).
 * The manifest is compressed as it is printed, one extent at a time, so
 * its memory is the compressed text, not a JSON tree of every extent. */
static cJSON *manifest_head(const wd_create_opts *o, int level, uint32_t bs, const unsigned char *base_hash,
                            unsigned base_kind, const unsigned char *result_hash, const unsigned char *base_v1,
                            const unsigned char *result_v1)
{
    char hex[65];
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", "wdelta");
    cJSON_AddNumberToObject(m, "version", WD_FORMAT_WRITTEN);
    cJSON_AddStringToObject(m, "tool", "wdelta " WD_VERSION_STRING);
    const char *strategy = o->strategy ? o->strategy : "lossless";
    cJSON_AddStringToObject(m, "strategy", strategy);
    cJSON *opt = cJSON_AddObjectToObject(m, "options");
    cJSON_AddStringToObject(opt, "strategy", strategy);
    if (!strcmp(strategy, "auto")) cJSON_AddNumberToObject(opt, "max_error", o->max_error);
    if (o->lossy.group) cJSON_AddNumberToObject(opt, "group_size", o->lossy.group);
    if (o->lossy.outliers > 0) cJSON_AddNumberToObject(opt, "outliers", o->lossy.outliers);
    if (o->lossy.step > 0) cJSON_AddNumberToObject(opt, "step", o->lossy.step);
    if (o->lossy.density > 0) cJSON_AddNumberToObject(opt, "density", o->lossy.density);
    cJSON_AddNumberToObject(opt, "level", level);
    cJSON_AddNumberToObject(opt, "block_size", bs);
    wd_hex(base_hash, 32, hex);
    cJSON_AddStringToObject(m, "base_hash", hex);
    wd_hex(result_hash, 32, hex);
    cJSON_AddStringToObject(m, "result_hash", hex);
    /* FORMAT.md "Model identity": absent means WD_HASH_V1 (older files) */
    cJSON_AddNumberToObject(m, "base_hash_kind", base_kind);
    cJSON_AddNumberToObject(m, "result_hash_kind", WD_ID_V2);
    /* informational: deltatensors' content hashes (NULL: not known) */
    if (base_v1) {
        wd_hex(base_v1, 32, hex);
        cJSON_AddStringToObject(m, "base_hash_v1", hex);
    }
    if (result_v1) {
        wd_hex(result_v1, 32, hex);
        cJSON_AddStringToObject(m, "result_hash_v1", hex);
    }
    if (o->parent) { /* lineage: base_hash is the parent delta's result_hash */
        const char *pp = wd_delta_path(o->parent), *slash = strrchr(pp, '/');
        unsigned depth = 0;
        for (wd_delta *p = o->parent; p; p = wd_delta_get_parent(p)) depth++;
        cJSON *par = cJSON_AddObjectToObject(m, "parent");
        cJSON_AddStringToObject(par, "name", slash ? slash + 1 : pp);
        cJSON_AddNumberToObject(par, "depth", depth);
        /* names the exact parent file: the first candidate readers try */
        wd_hex(wd_delta_get_info(o->parent)->digest, 32, hex);
        cJSON_AddStringToObject(par, "digest", hex);
    }
    return m;
}

static cJSON *extent_json(const plan_ext *e)
{
    cJSON *x = cJSON_CreateObject();
    cJSON_AddNumberToObject(x, "offset", (double)e->file_offset);
    cJSON_AddNumberToObject(x, "length", (double)e->length);
    cJSON_AddStringToObject(x, "codec", wd_codec_name(e->codec));
    cJSON_AddStringToObject(x, "dtype", e->tensor ? e->tensor->dtype_name : "U8");
    if (e->tensor) cJSON_AddStringToObject(x, "tensor", e->tensor->name);
    if (e->base_tensor) cJSON_AddStringToObject(x, "base", e->base_tensor->name);
    wd_xdtype_manifest(x, e->tensor, e->base_tensor);
    cJSON_AddNumberToObject(x, "first_block", e->first_block);
    cJSON_AddNumberToObject(x, "nblocks", e->nblocks);
    cJSON_AddNumberToObject(x, "block_size", e->bs);
    const wd_lossy_params *lp = ext_lp(e);
    const char *why = e->x ? e->x->why : NULL;
    if (wd_codec_is_rowblock(e->codec)) {
        cJSON *pj = cJSON_AddObjectToObject(x, "params");
        cJSON_AddNumberToObject(pj, "cols", lp->cols);
        if (e->codec == WD_CODEC_INT4) {
            cJSON_AddNumberToObject(pj, "group_size", lp->group);
            cJSON_AddNumberToObject(pj, "outliers", lp->outliers);
            if (lp->step > 0) cJSON_AddNumberToObject(pj, "step", lp->step);
        }
        if (e->codec == WD_CODEC_SPARSE) cJSON_AddNumberToObject(pj, "density", lp->density);
        if (e->codec == WD_CODEC_LOWRANK || e->codec == WD_CODEC_LOWRANK_EXACT)
            cJSON_AddNumberToObject(pj, "rank", lp->rank ? lp->rank : e->x ? e->x->rank_found : 0);
        if (why) cJSON_AddStringToObject(pj, "why", why);
    } else if (why) { /* a lossy strategy's tensor that fell back to lossless */
        cJSON *pj = cJSON_AddObjectToObject(x, "params");
        cJSON_AddStringToObject(pj, "why", why);
    }
    return x;
}

/* zstd stream into a growing buffer */
typedef struct zsink {
    ZSTD_CCtx *cc;
    unsigned char *buf;
    size_t len, cap;
    int bad;
} zsink;

static void zput(zsink *z, const char *text, size_t n, int end)
{
    if (z->bad) return;
    ZSTD_inBuffer in = {text, n, 0};
    for (;;) {
        if (z->cap - z->len < ZSTD_CStreamOutSize()) {
            size_t nc = z->cap * 2 + ZSTD_CStreamOutSize();
            unsigned char *p = realloc(z->buf, nc);
            if (!p) {
                z->bad = 1;
                return;
            }
            z->buf = p;
            z->cap = nc;
        }
        ZSTD_outBuffer out = {z->buf + z->len, z->cap - z->len, 0};
        size_t r = ZSTD_compressStream2(z->cc, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
        z->len += out.pos;
        if (ZSTD_isError(r)) {
            z->bad = 1;
            return;
        }
        if (end ? r == 0 : in.pos == in.size) return;
    }
}

static void zput_json(zsink *z, cJSON *j)
{
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!t) {
        z->bad = 1;
        return;
    }
    zput(z, t, strlen(t), 0);
    free(t);
}

/* The whole manifest, zstd-compressed, into *out (malloc'd). */
static int manifest_z(const wd_create_opts *o, int level, uint32_t bs, const unsigned char *base_hash,
                      unsigned base_kind, const unsigned char *result_hash, const unsigned char *base_v1,
                      const unsigned char *result_v1, const plan_file *pf, size_t npf, unsigned char **out,
                      size_t *out_len, wd_err *err)
{
    zsink z = {ZSTD_createCCtx(), NULL, 0, 0, 0};
    if (!z.cc) return wd_errf(err, "out of memory writing the manifest");
    ZSTD_CCtx_setParameter(z.cc, ZSTD_c_compressionLevel, level);
    char *head = NULL;
    cJSON *m = manifest_head(o, level, bs, base_hash, base_kind, result_hash, base_v1, result_v1);
    if (m) head = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    size_t hl = head ? strlen(head) : 0;
    if (!head || hl < 2 || head[hl - 1] != '}') z.bad = 1;
    else {
        zput(&z, head, hl - 1, 0); /* without its closing brace: the files follow */
        zput(&z, ",\"files\":[", 10, 0);
    }
    free(head);
    for (size_t i = 0; i < npf && !z.bad; i++) {
        const plan_file *p = &pf[i];
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "name", p->name);
        cJSON_AddNumberToObject(f, "size", (double)p->size);
        cJSON_AddBoolToObject(f, "safetensors", p->is_st);
        char *ft = cJSON_PrintUnformatted(f);
        cJSON_Delete(f);
        size_t fl = ft ? strlen(ft) : 0;
        if (!ft || fl < 2) {
            free(ft);
            z.bad = 1;
            break;
        }
        if (i) zput(&z, ",", 1, 0);
        zput(&z, ft, fl - 1, 0);
        free(ft);
        zput(&z, ",\"extents\":[", 12, 0);
        for (size_t k = 0; k < p->next; k++) {
            if (k) zput(&z, ",", 1, 0);
            zput_json(&z, extent_json(&p->ext[k]));
        }
        zput(&z, "]}", 2, 0);
    }
    zput(&z, "]}", 2, 1);
    ZSTD_freeCCtx(z.cc);
    if (z.bad) {
        free(z.buf);
        return wd_errf(err, "out of memory writing the manifest");
    }
    *out = z.buf;
    *out_len = z.len;
    return 0;
}

static int write_tail(writer *w, unsigned char *manifest, size_t mlen, uint64_t *total, wd_err *err)
{
    /* the manifest is stored zstd-compressed (preamble flag WD_FLAG_ZMANIFEST):
     * its JSON repeats every tensor name and key, ~200 bytes an extent */
    unsigned char flags[4];
    wd_put_u32(flags, WD_FLAG_ZMANIFEST);
    if (wd_pwrite_full(w->fd, flags, 4, WD_PREAMBLE_FLAGS_AT, w->tmp_path, err)) {
        free(manifest);
        return -1;
    }
    uint64_t moff = w->next_offset, toff = moff + mlen;
    size_t tlen = (size_t)w->nblocks * WD_BLOCK_ENTRY_LEN;
    unsigned char *table = malloc(tlen ? tlen : 1);
    if (!table) {
        free(manifest);
        return wd_errf(err, "out of memory");
    }
    for (uint32_t i = 0; i < w->nblocks; i++) wd_block_entry_put(table + (size_t)i * WD_BLOCK_ENTRY_LEN, &w->blocks[i]);
    unsigned char foot[WD_FOOTER_LEN];
    uint64_t size = toff + tlen + WD_FOOTER_LEN;
    wd_footer ft = {moff, mlen, toff, w->nblocks, size, {0}};
    if (wd_footer_put(foot, &ft, manifest, table, err)) {
        free(table);
        free(manifest);
        return -1;
    }
    int rc = wd_pwrite_full(w->fd, manifest, mlen, moff, w->tmp_path, err) ||
             wd_pwrite_full(w->fd, table, tlen, toff, w->tmp_path, err) ||
             wd_pwrite_full(w->fd, foot, WD_FOOTER_LEN, toff + tlen, w->tmp_path, err);
    free(table);
    free(manifest);
    *total = size;
    return rc ? -1 : 0;
}

/* ---- the driver ------------------------------------------------------ */
static int feed_all(writer *w, const wd_model *base, const wd_model *ft, plan_file *pf, size_t npf,
                    unsigned char result_hash[32], unsigned char result_v1[32], wd_err *err);

static int choose_codecs(const wd_create_opts *o, wd_codec fixed, int is_auto, int threads, uint32_t bs,
                         const wd_model *base, const wd_model *ft, plan_file *pf, size_t npf, wd_err *err);
static int any_lossy(const plan_file *pf, size_t npf);
static int hash_decoded(writer *w, const wd_model *base, const wd_model *ft, plan_file *pf,
                        unsigned char result_hash[32], unsigned char result_v1[32], wd_err *err);

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int wd_create(const wd_create_opts *o, wd_create_stats *st, wd_err *err)
{
    if ((!o->base_dir && !o->parent) || !o->ft_dir || !o->out_path)
        return wd_errf(err, "create needs a base, a fine-tune and an output path");
    wd_codec fixed = WD_CODEC_LOSSLESS;
    int is_auto = o->strategy && !strcmp(o->strategy, "auto");
    if (o->strategy && !is_auto && (wd_codec_from_name(o->strategy, &fixed) || fixed == WD_CODEC_ZSTD ||
                                          fixed == WD_CODEC_LOWRANK_EXACT))
        return wd_errf(err, "unknown strategy '%s' (lossless, int4, sparse, bitdelta, axis1, ternary, ternary-axis1, lowrank or auto)", o->strategy);
    if (is_auto && !(o->max_error > 0))
        return wd_errf(err, "strategy auto needs a maximum relative error > 0 (--max-error)");
    if (o->lossy.group && (o->lossy.group < 2 || o->lossy.group > 65536 || o->lossy.group % 2))
        return wd_errf(err, "group size %u must be even, 2..65536", o->lossy.group);
    if (o->lossy.outliers > 1)
        return wd_errf(err, "outlier fraction %g must be in [0, 1]", o->lossy.outliers);
    if (o->lossy.density < 0 || o->lossy.density > 1)
        return wd_errf(err, "density %g must be in (0, 1]", o->lossy.density);
    uint32_t bs = o->block_size ? o->block_size : WD_DEFAULT_BLOCK_SIZE;
    if (bs < 4096 || bs > (64u << 20) || bs % 8)
        return wd_errf(err, "block size %u must be a multiple of 8 between 4096 and 64 MiB", bs);
    int threads = o->threads > 0 ? o->threads : online_cpus();
    if (threads > 256) threads = 256;
    int level = o->level ? o->level : 1;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
        return wd_errf(err, "zstd level %d out of range (%d..%d)", level, ZSTD_minCLevel(), ZSTD_maxCLevel());

    wd_err e0;
    if (wd_remove_stale(o->out_path, &e0) < 0) {
        *err = e0;
        return -1;
    }
    if (wd_stop_requested(o->stop, err)) return -1;
    wd_model base = {0}, ft = {0};
    if (o->parent ? wd_delta_output_model(o->parent, &base, err) : wd_model_open(o->base_dir, &base, err))
        return wd_errprefix(err, o->parent ? "parent" : "base");
    /* the fine-tune's names and dimensions: the base's where they are the
     * same (both models are held to the end; freeing reads no name) */
    if (wd_model_open_shared(o->ft_dir, &base, &ft, err) ||
        wd_input_filter(&ft, o->out_path, o->exclude, o->nexclude, err)) {
        wd_model_free(&ft);
        wd_model_free(&base);
        return wd_errprefix(err, "fine-tune");
    }
    plan_file *pf = NULL;
    size_t npf = 0;
    int rc = -1;
    char *tmp = NULL;
    writer w = {0};
    base_hash_job bh = {.base = &base,
                        .stop = o->stop,
                        .known = o->parent ? wd_delta_get_info(o->parent)->result_hash : NULL,
                        .kind = o->parent ? wd_delta_get_info(o->parent)->result_hash_kind : WD_ID_V2};
    if (o->parent && wd_delta_get_info(o->parent)->has_result_hash_v1) { /* the parent's result, v1 */
        bh.has_v1 = 1;
        memcpy(bh.v1, wd_delta_get_info(o->parent)->result_hash_v1, 32);
    }
    pthread_t bh_thread, *tids = NULL;
    int bh_started = 0, nstarted = 0;
    if (plan_outputs(&base, &ft, &pf, &npf, err)) goto out;
    /* the base's hash from the start: it overlaps the codec choice (issue 18) */
    if (pthread_create(&bh_thread, NULL, base_hash_main, &bh) == 0) bh_started = 1;
    else {
        wd_errf(err, "cannot start a thread");
        goto out;
    }
    if (choose_codecs(o, fixed, is_auto, threads, bs, &base, &ft, pf, npf, err)) goto out;
    pack_small(pf, npf, &ft, bs);

    /* Blocks are numbered in the order they will be fed: headers and extra
     * files first, then the runs of small tensors, then tensors in
     * content-hash order. */
    uint32_t nb = 0;
    for (size_t i = 0; i < npf; i++) {
        if (pf[i].next) { /* a safetensors header, or a non-empty extra file */
            pf[i].ext[0].bs = bs;
            pf[i].ext[0].first_block = nb;
            pf[i].ext[0].nblocks = blocks_for(pf[i].ext[0].length, bs);
            nb += pf[i].ext[0].nblocks;
        }
    }
    for (size_t i = 0; i < npf; i++)
        for (size_t k = 1; pf[i].is_st && k < pf[i].next; k++)
            if (!pf[i].ext[k].tensor) { /* a run of small tensors: one block */
                pf[i].ext[k].first_block = nb;
                pf[i].ext[k].nblocks = blocks_for(pf[i].ext[k].length, pf[i].ext[k].bs);
                nb += pf[i].ext[k].nblocks;
            }
    struct wd_tref *order = calloc(ft.ntensors + 1, sizeof *order);
    if (!order) {
        wd_errf(err, "out of memory");
        goto out;
    }
    wd_model_hash_order(&ft, order);
    for (size_t t = 0; t < ft.ntensors; t++) {
        const wd_tensor *tt = &ft.files[order[t].file].tensors[order[t].tensor];
        plan_file *p = &pf[order[t].file];
        size_t k = p->ext_of[order[t].tensor];
        if (k && p->ext[k].tensor == tt) {
                uint32_t ebs = p->ext[k].bs ? p->ext[k].bs : bs;
                p->ext[k].bs = ebs;
                uint64_t need = (uint64_t)nb + blocks_for(tt->length, ebs);
                if (need > WD_MAX_BLOCKS) {
                    free(order);
                    wd_errf(err, "model needs more than %u blocks; use a larger --block-size", WD_MAX_BLOCKS);
                    goto out;
                }
                p->ext[k].first_block = nb;
                p->ext[k].nblocks = blocks_for(tt->length, ebs);
                nb = (uint32_t)need;
            }
    }
    free(order);

    /* temporary output next to the final name */
    /* a new file: 0666 less the umask (the kernel applies it); replacing a
     * regular file: that file's mode, set before any byte is written */
    w.fd = wd_tmp_file(o->out_path, "tmp", 0666, &tmp, err);
    if (w.fd < 0) goto out;
    struct stat old;
    if (lstat(o->out_path, &old) == 0 && S_ISREG(old.st_mode) && fchmod(w.fd, old.st_mode & 07777)) {
        wd_errf(err, "%s: cannot give it the mode of %s: %s", tmp, o->out_path, strerror(errno));
        goto out;
    }
    w.o = o;
    w.level = level;
    w.block_size = bs;
    w.tmp_path = tmp;
    w.qcap = (size_t)threads * 2;
    w.q = calloc(w.qcap, sizeof *w.q);
    w.pcap = (size_t)threads * 2 + 2;
    w.pend = calloc(w.pcap, sizeof *w.pend);
    w.blocks = calloc(nb ? nb : 1, sizeof *w.blocks);
    w.nblocks = nb;
    w.next_offset = WD_PREAMBLE_LEN;
    w.ntensors = ft.ntensors;
    for (size_t i = 0; i < npf; i++) w.total_bytes += pf[i].size;
    if (!w.q || !w.blocks || !w.pend) {
        wd_errf(err, "out of memory");
        goto out;
    }
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.not_empty, NULL);
    pthread_cond_init(&w.not_full, NULL);
    pthread_cond_init(&w.turn, NULL);
    unsigned char pre[WD_PREAMBLE_LEN];
    wd_preamble_put(pre, WD_FORMAT_WRITTEN, 0);
    if (wd_pwrite_full(w.fd, pre, sizeof pre, 0, tmp, err)) goto out_sync;

    tids = calloc((size_t)threads, sizeof *tids);
    for (int i = 0; tids && i < threads; i++)
        if (pthread_create(&tids[i], NULL, worker_main, &w) == 0) nstarted++;
    if (nstarted == 0) {
        wd_errf(err, "cannot start worker threads");
        goto out_sync;
    }
    unsigned char result_hash[32], result_v1[32];
    int feed_rc = feed_all(&w, &base, &ft, pf, npf, result_hash, result_v1, err);
    pthread_mutex_lock(&w.lock);
    w.closing = 1;
    pthread_cond_broadcast(&w.not_empty);
    pthread_mutex_unlock(&w.lock);
    for (int i = 0; i < nstarted; i++) pthread_join(tids[i], NULL);
    nstarted = 0;
    pthread_join(bh_thread, NULL);
    bh_started = 0;
    if (w.failed) {
        *err = w.err;
        wd_errprefix(err, "cannot write %s", o->out_path);
        goto out_sync;
    }
    if (feed_rc) goto out_sync;
    if (bh.rc) {
        *err = bh.err;
        wd_errprefix(err, "hashing the base");
        goto out_sync;
    }
    if (any_lossy(pf, npf) && hash_decoded(&w, &base, &ft, pf, result_hash, result_v1, err)) goto out_sync;
    unsigned char *zm = NULL;
    size_t zl = 0;
    if (manifest_z(o, level, bs, bh.digest, bh.kind, result_hash, bh.has_v1 ? bh.v1 : NULL, result_v1, pf, npf, &zm,
                   &zl, err))
        goto out_sync;
    uint64_t total = 0;
    if (write_tail(&w, zm, zl, &total, err)) goto out_sync; /* frees zm */
    if (fsync(w.fd)) {
        wd_errf(err, "%s: fsync failed: %s", tmp, strerror(errno));
        goto out_sync;
    }
    if (close(w.fd)) {
        w.fd = -1;
        wd_errf(err, "%s: close failed: %s", tmp, strerror(errno));
        goto out_sync;
    }
    w.fd = -1;
    if (rename(tmp, o->out_path)) {
        wd_errf(err, "cannot rename %s to %s: %s", tmp, o->out_path, strerror(errno));
        goto out_sync;
    }
    if (st) {
        st->input_bytes = 0;
        for (size_t i = 0; i < npf; i++) st->input_bytes += pf[i].size;
        st->output_bytes = total;
        st->ntensors = ft.ntensors;
        st->nblocks = nb;
    }
    rc = 0;
out_sync:
    if (nstarted || bh_started) {
        wd_err e2;
        wd_errf(&e2, "aborted");
        fail(&w, &e2);
        for (int i = 0; i < nstarted; i++) pthread_join(tids[i], NULL);
        if (bh_started) pthread_join(bh_thread, NULL);
        bh_started = 0;
    }
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.not_empty);
    pthread_cond_destroy(&w.not_full);
    pthread_cond_destroy(&w.turn);
out:
    if (bh_started) pthread_join(bh_thread, NULL); /* a failure before the writer started */
    free(tids);
    if (w.fd > 0) close(w.fd);
    if (rc && tmp) unlink(tmp);
    free(tmp);
    free(w.q);
    for (size_t i = 0; w.pend && i < w.pcap; i++) /* left by a failure */
        if (w.pend[i].ready) free(w.pend[i].own);
    free(w.pend);
    free(w.blocks);
    free_plan(pf, npf);
    wd_model_free(&base);
    wd_model_free(&ft);
    return rc;
}

static int feed_all(writer *w, const wd_model *base, const wd_model *ft, plan_file *pf, size_t npf,
                    unsigned char result_hash[32], unsigned char result_v1[32], wd_err *err)
{
    uint64_t done = 0;
    int rc = -1;
    int *ft_fds = wd_fds_new(ft->nfiles), *base_fds = wd_fds_new(base->nfiles);
    struct wd_tref *order = calloc(ft->ntensors + 1, sizeof *order);
    res_hash sha_, *sha = &sha_;
    int sha_ok = !res_hash_new(sha);
    v1_hasher v1h = {0};
    pthread_t v1_tid;
    int v1_started = 0;
    pthread_mutex_init(&v1h.lock, NULL);
    pthread_cond_init(&v1h.cond, NULL);
    if (!ft_fds || !base_fds || !order || !sha_ok) {
        wd_errf(err, "out of memory");
        goto out;
    }
    if (w->o->parent) { /* base files are the parent's outputs of the same name */
        w->parent_files = base_fds;
        for (size_t i = 0; i < base->nfiles; i++) base_fds[i] = wd_delta_find_file(w->o->parent, base->files[i].name);
    }
    for (size_t i = 0; i < ft->nfiles; i++)
        if ((ft_fds[i] = open(ft->files[i].path, O_RDONLY | O_CLOEXEC)) < 0) {
            wd_errf(err, "%s: %s", ft->files[i].path, strerror(errno));
            goto out;
        }
    for (size_t i = 0; i < base->nfiles && !w->o->parent; i++)
        if ((base_fds[i] = open(base->files[i].path, O_RDONLY | O_CLOEXEC)) < 0) {
            wd_errf(err, "%s: %s", base->files[i].path, strerror(errno));
            goto out;
        }
    /* headers and extra files */
    for (size_t i = 0; i < npf; i++) {
        plan_file *p = &pf[i];
        if (p->is_st) {
            if (feed_range(w, ft_fds[i], ft->files[i].path, -1, NULL, &p->ext[0], 0, 0, NULL, &done, err))
                goto out;
        } else if (p->next) {
            int fd = open(p->src_path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                wd_errf(err, "%s: %s", p->src_path, strerror(errno));
                goto out;
            }
            struct stat s2;
            if (fstat(fd, &s2) || (uint64_t)s2.st_size != p->size) {
                close(fd);
                wd_errf(err, "%s changed size while the delta was being written", p->src_path);
                goto out;
            }
            int r = feed_range(w, fd, p->src_path, -1, NULL, &p->ext[0], 0, 0, NULL, &done, err);
            close(fd);
            if (r) goto out;
        }
    }
    /* runs of small tensors */
    for (size_t i = 0; i < npf; i++)
        for (size_t k = 1; pf[i].is_st && k < pf[i].next; k++)
            if (!pf[i].ext[k].tensor &&
                feed_range(w, ft_fds[i], ft->files[i].path, -1, NULL, &pf[i].ext[k], pf[i].ext[k].file_offset, 0,
                           NULL, &done, err))
                goto out;
    /* tensors, in content-hash order, hashing on the way (a small one's
     * bytes read again for the hash: it was fed in its run); the v1 hash
     * on a thread of its own, a tensor behind */
    wd_model_hash_order(ft, order);
    v1h.ft = ft, v1h.order = order, v1h.ft_fds = ft_fds, v1h.h = sha->v1;
    res_hash idonly = {sha->id, NULL}, *rh = sha;
    if (pthread_create(&v1_tid, NULL, v1_hasher_main, &v1h) == 0) v1_started = 1, rh = &idonly;
    for (size_t t = 0; t < ft->ntensors; t++) {
        size_t fi = order[t].file;
        const wd_tensor *tt = &ft->files[fi].tensors[order[t].tensor];
        if (res_hash_begin(rh, tt)) {
            wd_errf(err, "out of memory");
            goto out;
        }
        plan_file *p = &pf[fi];
        size_t k = p->ext_of[order[t].tensor];
        if (k && !p->ext[k].tensor) {
            unsigned char *sb = malloc(tt->length ? tt->length : 1);
            if (!sb) {
                wd_errf(err, "out of memory");
                goto out;
            }
            int r = wd_pread_full(ft_fds[fi], sb, tt->length, tt->offset, ft->files[fi].path, err);
            if (!r) res_hash_update(rh, sb, tt->length);
            free(sb);
            if (r) goto out;
        } else if (k) {
            plan_ext *e = &p->ext[k];
            int bfd = e->base_file >= 0 ? base_fds[e->base_file] : -1;
            const char *bpath = e->base_file >= 0 ? base->files[e->base_file].path : NULL;
            if (feed_range(w, ft_fds[fi], ft->files[fi].path, bfd, bpath, e, tt->offset,
                           e->base_tensor ? e->base_tensor->offset : 0, rh, &done, err))
                goto out;
        }
        w->tensors_done++;
        pthread_mutex_lock(&v1h.lock);
        v1h.fed = t + 1;
        pthread_cond_signal(&v1h.cond);
        pthread_mutex_unlock(&v1h.lock);
    }
    if (v1_started) {
        pthread_join(v1_tid, NULL);
        v1_started = 0;
        if (v1h.rc) {
            *err = v1h.err;
            goto out;
        }
    }
    if (w->o->progress) w->o->progress(w->o->progress_ctx, done, w->total_bytes, w->tensors_done, w->ntensors);
    rc = res_hash_final(sha, result_hash, result_v1, err);
out:
    if (v1_started) { /* a failure while feeding */
        pthread_mutex_lock(&v1h.lock);
        v1h.abort = 1;
        pthread_cond_signal(&v1h.cond);
        pthread_mutex_unlock(&v1h.lock);
        pthread_join(v1_tid, NULL);
    }
    pthread_mutex_destroy(&v1h.lock);
    pthread_cond_destroy(&v1h.cond);
    res_hash_free(sha);
    wd_fds_free(ft_fds, ft->nfiles);
    wd_fds_free(base_fds, w->o->parent ? 0 : base->nfiles); /* with a parent: its file numbers */
    free(order);
    return rc;
}

/* ---- lossy strategies ------------------------------------------------- */
/* Give every eligible delta extent (a floating tensor of 2+ dims with the
 * base's shape and dtype) the strategy's codec, or for `auto` the codec
 * wd_lossy_auto picks; 1-D tensors (norms, biases) and everything else stay
 * as planned (lossless or zstd).  Extents are independent: `threads`
 * threads take them in plan order (issue 18: the trials on every core),
 * each with its own file descriptors; the result does not depend on the
 * thread count. */
typedef struct choose_ctx {
    const wd_create_opts *o;
    wd_codec fixed;
    int is_auto, try_exact, lossy_level;
    uint32_t bs;
    const wd_model *base, *ft;
    plan_file *pf;
    size_t npf;
    pthread_mutex_t lock;
    size_t next_i, next_k; /* the next extent to take */
    size_t done;           /* tensors chosen (progress) */
    int failed;
    wd_err err;
} choose_ctx;

/* One extent of fine-tune file i; *ffd, *bfile, *bsrc, sc: the calling
 * thread's open fine-tune file, base file and its source, and scratch
 * (reused across calls). */
static int choose_one(choose_ctx *c, size_t i, plan_ext *e, int *ffd, int *bfile, base_src *bsrc, wd_scratch *sc,
                      wd_err *err)
{
    const wd_create_opts *o = c->o;
    const wd_model *base = c->base, *ft = c->ft;
    uint32_t bs = c->bs;
    int try_exact = c->try_exact, lossy_level = c->lossy_level, rc = 0;
    if (e->codec != WD_CODEC_LOSSLESS || !wd_lossy_eligible(e->tensor)) return 0;
    if (wd_stop_requested(o->stop, err)) return -1;
    if (wd_xdtype_fits(e->tensor, e->base_tensor)) return 0; /* predicted base: stays lossless */
    uint32_t lbs = wd_lossy_block_size(e->tensor, bs);
    if (!lbs) return 0;
    wd_codec cd = c->fixed;
    wd_lossy_params lp = {(uint32_t)e->tensor->shape[e->tensor->ndim - 1], o->lossy.group,
                          o->lossy.outliers, o->lossy.density, lossy_level, o->lossy.step, o->lossy.rank};
    if (cd == WD_CODEC_INT4) { /* defaults measured on pairB (core/FORMAT.md) */
        if (!lp.group) lp.group = 128;
        if (lp.outliers == 0) lp.outliers = 0.002; /* negative: none */
        if (lp.outliers < 0) lp.outliers = 0;
        if (lp.step == 0) lp.step = 0.6; /* negative: per-group least-squares scales */
        if (lp.step < 0) lp.step = 0;
    }
    if (cd == WD_CODEC_SPARSE && lp.density <= 0) lp.density = 0.1;
    int need_data = c->is_auto || try_exact || wd_codec_is_lossy(cd);
    if (need_data) {
        if (*ffd < 0 && (*ffd = open(ft->files[i].path, O_RDONLY | O_CLOEXEC)) < 0) {
            rc = wd_errf(err, "%s: %s", ft->files[i].path, strerror(errno));
            return -1;
        }
        if (*bfile != e->base_file) { /* base bytes: the base's file, or the parent's output */
            base_src_close(bsrc);
            *bfile = e->base_file;
            if ((rc = base_src_open(bsrc, o, base, (size_t)*bfile, err))) return -1;
        }
    }
    if (c->is_auto) {
        rc = wd_lossy_auto(e->tensor, *ffd, ft->files[i].path, base_src_read, bsrc,
                           e->base_tensor->offset, o->max_error, lossy_level, bs, &cd, &lp, err);
        if (rc) return -1;
    }
    unsigned rank = 0;
    if (cd == WD_CODEC_LOWRANK && !lp.rank) { /* the rank found (for inspect) and the block size */
        uint64_t st, pl;
        uint32_t xbs;
        rc = wd_lowrank_measure(sc, e->tensor, *ffd, ft->files[i].path, base_src_read, bsrc, !o->parent,
                                e->base_tensor->offset, cd, lossy_level, bs, &st, &pl, &rank, &xbs, err);
        if (rc) return -1;
        if (!c->is_auto) lbs = xbs; /* auto's error bound was measured on blocks of lbs */
    }
    if (!c->is_auto && wd_codec_is_lossy(cd)) { /* zero-aware 1-bit tier; never worse than the base */
        char why[384];
        wd_lossy_stats picked;
        rc = wd_lossy_choose(e->tensor, *ffd, ft->files[i].path, base_src_read, bsrc, e->base_tensor->offset,
                             bs, &cd, &lp, why, sizeof why, &picked, err);
        if (rc) return -1;
        /* a low-rank delta (a merged LoRA): lowrank where it beats the
         * strategy's code on both bytes and error.  The rank test is
         * cheap where it fails; lowrank is coded only where it passes. */
        unsigned lr = 0;
        uint32_t xbs = 0;
        if (try_exact && wd_codec_is_lossy(cd) && cd != WD_CODEC_LOWRANK &&
            (rc = wd_lowrank_test(sc, e->tensor, *ffd, ft->files[i].path, base_src_read, bsrc, !o->parent,
                                  e->base_tensor->offset, bs, &lr, &xbs, err)))
            return -1;
        if (lr) {
            wd_codec c0 = cd;
            rc = wd_lossy_lowrank_dominates(e->tensor, *ffd, ft->files[i].path, base_src_read, bsrc,
                                            e->base_tensor->offset, xbs, &picked, &cd, &lp, &rank, why,
                                            sizeof why, err);
            if (rc) return -1;
            if (cd != c0) lbs = wd_lossy_block_size(e->tensor, xbs);
        }
        if (why[0] && (!ext_x(e) || !(e->x->why = strdup(why)))) {
            rc = wd_errf(err, "out of memory");
            return -1;
        }
    }
    if (cd == WD_CODEC_LOSSLESS && try_exact) {
        uint64_t st, pl;
        uint32_t xbs;
        rc = wd_lowrank_measure(sc, e->tensor, *ffd, ft->files[i].path, base_src_read, bsrc, !o->parent,
                                e->base_tensor->offset, WD_CODEC_LOWRANK_EXACT, lossy_level, bs, &st,
                                &pl, &rank, &xbs, err);
        if (rc) return -1;
        /* the trial's rank, fixed for the tensor's blocks: the writer's
         * encode skips the rank test */
        if (st < pl) cd = WD_CODEC_LOWRANK_EXACT, lbs = xbs, lp.rank = rank;
    }
    if (need_data && o->progress) { /* choosing; calls serialized, the count in order */
        pthread_mutex_lock(&c->lock);
        o->progress(o->progress_ctx, 0, 0, ++c->done, ft->ntensors);
        pthread_mutex_unlock(&c->lock);
    }
    if (wd_codec_is_rowblock(cd)) {
        if (!ext_x(e)) return wd_errf(err, "out of memory");
        e->codec = cd;
        e->x->lp = lp;
        e->bs = lbs;
        e->x->rank_found = rank;
    }
    (void)rc;
    return 0;
}

static void *choose_main(void *arg)
{
    choose_ctx *c = arg;
    int ffd = -1, bfile = -1;
    size_t fi = (size_t)-1;
    base_src bsrc = {.fd = -1};
    wd_scratch *sc = wd_scratch_new(); /* NULL: the trials make their own */
    wd_err e;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        while (c->next_i < c->npf && c->next_i < c->ft->nfiles && c->next_k >= c->pf[c->next_i].next)
            c->next_i++, c->next_k = 1;
        int go = !c->failed && c->next_i < c->npf && c->next_i < c->ft->nfiles;
        size_t i = c->next_i, k = c->next_k++;
        pthread_mutex_unlock(&c->lock);
        if (!go) break;
        if (i != fi) { /* another fine-tune file: its own descriptors */
            if (ffd >= 0) close(ffd);
            base_src_close(&bsrc);
            ffd = bfile = -1;
            fi = i;
        }
        if (choose_one(c, i, &c->pf[i].ext[k], &ffd, &bfile, &bsrc, sc, &e)) {
            pthread_mutex_lock(&c->lock);
            if (!c->failed) c->err = e;
            c->failed = 1;
            pthread_mutex_unlock(&c->lock);
            break;
        }
    }
    if (ffd >= 0) close(ffd);
    base_src_close(&bsrc);
    wd_scratch_free(sc);
    return NULL;
}

static int choose_codecs(const wd_create_opts *o, wd_codec fixed, int is_auto, int threads, uint32_t bs,
                         const wd_model *base, const wd_model *ft, plan_file *pf, size_t npf, wd_err *err)
{
    int try_exact = !o->no_lowrank; /* lossless tensors: lowrank-exact where smaller */
    if (!is_auto && !wd_codec_is_lossy(fixed) && !try_exact) return 0;
    choose_ctx c = {.o = o, .fixed = fixed, .is_auto = is_auto, .try_exact = try_exact,
                    .lossy_level = o->lossy.level ? o->lossy.level : o->level ? o->level : 3,
                    .bs = bs, .base = base, .ft = ft, .pf = pf, .npf = npf, .next_k = 1};
    pthread_mutex_init(&c.lock, NULL);
    pthread_t tids[64];
    int n = 0;
    for (int t = 1; t < threads && t < 64; t++)
        if (pthread_create(&tids[n], NULL, choose_main, &c) == 0) n++;
    choose_main(&c); /* the calling thread works too */
    for (int t = 0; t < n; t++) pthread_join(tids[t], NULL);
    pthread_mutex_destroy(&c.lock);
    if (c.failed) {
        *err = c.err;
        return -1;
    }
    return 0;
}

static int any_lossy(const plan_file *pf, size_t npf)
{
    for (size_t i = 0; i < npf; i++)
        for (size_t k = 0; k < pf[i].next; k++)
            if (wd_codec_is_lossy(pf[i].ext[k].codec)) return 1;
    return 0;
}

/* The result hash of a lossy delta is the content hash of what the decoder
 * produces: a second pass in content-hash order that decodes every lossy
 * block back from the temporary file (checking its output checksum) and
 * reads every other tensor from the fine-tune.  One block in memory. */
static int hash_decoded(writer *w, const wd_model *base, const wd_model *ft, plan_file *pf,
                        unsigned char result_hash[32], unsigned char result_v1[32], wd_err *err)
{
    struct wd_tref *order = calloc(ft->ntensors + 1, sizeof *order);
    res_hash sha_, *sha = &sha_;
    int sha_ok = !res_hash_new(sha);
    wd_scratch *s = wd_scratch_new();
    size_t cap = 0;
    for (uint32_t b = 0; b < w->nblocks; b++)
        if (w->blocks[b].out_len > cap) cap = w->blocks[b].out_len;
    if (cap < (1u << 20)) cap = 1u << 20;
    unsigned char *buf = malloc(cap), *bbuf = malloc(cap);
    int rc = -1, fd = -1;
    base_src bsrc = {.fd = -1};
    if (!order || !sha_ok || !s || !buf || !bbuf) {
        wd_errf(err, "out of memory");
        goto out;
    }
    wd_model_hash_order(ft, order);
    for (size_t t = 0; t < ft->ntensors; t++) {
        size_t fi = order[t].file;
        const wd_tensor *tt = &ft->files[fi].tensors[order[t].tensor];
        if (wd_stop_requested(w->o->stop, err)) goto out;
        if (res_hash_begin(sha, tt)) {
            wd_errf(err, "out of memory");
            goto out;
        }
        size_t k = pf[fi].ext_of[order[t].tensor];
        if (!k) continue; /* empty tensor */
        plan_ext *e = &pf[fi].ext[k];
        if (!wd_codec_is_lossy(e->codec)) {
            if ((fd = open(ft->files[fi].path, O_RDONLY | O_CLOEXEC)) < 0) {
                wd_errf(err, "%s: %s", ft->files[fi].path, strerror(errno));
                goto out;
            }
            for (uint64_t at = 0; at < tt->length; at += cap) {
                size_t n = (size_t)(tt->length - at < cap ? tt->length - at : cap);
                if (wd_pread_full(fd, buf, n, tt->offset + at, ft->files[fi].path, err)) goto out;
                res_hash_update(sha, buf, n);
            }
            close(fd);
            fd = -1;
            continue;
        }
        if (base_src_open(&bsrc, w->o, base, (size_t)e->base_file, err)) goto out;
        for (uint32_t b = 0; b < e->nblocks; b++) {
            const wd_block *bl = &w->blocks[e->first_block + b];
            unsigned char *stored = wd_scratch_buf(s, 0, bl->stored_len);
            if (!stored) {
                wd_errf(err, "out of memory");
                goto out;
            }
            if (wd_pread_full(w->fd, stored, bl->stored_len, bl->offset, w->tmp_path, err) ||
                base_src_read(&bsrc, bbuf, bl->out_len, e->base_tensor->offset + (uint64_t)b * e->bs, err) ||
                wd_decode_block(s, e->codec, e->dtype, stored, bl->stored_len, bbuf, buf, bl->out_len, err)) {
                wd_errprefix(err, "tensor %s block %u", tt->name, e->first_block + b);
                goto out;
            }
            if (wd_hash64(buf, bl->out_len, 0) != bl->out_hash) {
                wd_errf(err, "tensor %s block %u decodes differently the second time (base changed?)", tt->name,
                        e->first_block + b);
                goto out;
            }
            res_hash_update(sha, buf, bl->out_len);
        }
        base_src_close(&bsrc);
    }
    rc = res_hash_final(sha, result_hash, result_v1, err);
out:
    if (fd >= 0) close(fd);
    base_src_close(&bsrc);
    res_hash_free(sha);
    wd_scratch_free(s);
    free(order);
    free(buf);
    free(bbuf);
    return rc;
}
