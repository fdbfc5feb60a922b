/* hash.c - SHA-256 (OpenSSL) and the two model hashes.
 *
 * WD_HASH_V1, deltatensors' parent_hash: SHA-256 over every tensor's name
 * bytes followed by its raw bytes, in wd_model_hash_order.  It depends on
 * names, bytes and which tensors share a shard (that fixes the order), not
 * on where in a file a tensor lies.  NOTE: name and bytes are concatenated
 * with no separator or length, as the reference does; that is its
 * definition, so it is reproduced as is.
 *
 * WD_ID_V2, the model identity (core/FORMAT.md, "Model identity"): SHA-256
 * over a tag and, for every tensor in name order, its name, dtype, shape,
 * byte length and the SHA-256 of its bytes.  Nothing about files, sharding
 * or order enters it.  Each tensor's digest is independent of the others,
 * so the tensors are hashed by several threads.
 *
 * Both read with pread in bounded chunks; wd_model_hashes takes both from
 * one read. */
#include "model/model_int.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct wd_sha256 {
    EVP_MD_CTX *ctx;
};

wd_sha256 *wd_sha256_new(void)
{
    wd_sha256 *h = malloc(sizeof *h);
    if (!h) return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void wd_sha256_update(wd_sha256 *h, const void *p, size_t n)
{
    if (n) EVP_DigestUpdate(h->ctx, p, n);
}

void wd_sha256_final(wd_sha256 *h, unsigned char out[32])
{
    unsigned int len = 32;
    EVP_DigestFinal_ex(h->ctx, out, &len);
    wd_sha256_free(h);
}

void wd_sha256_free(wd_sha256 *h)
{
    if (!h) return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void wd_hex(const unsigned char *bin, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bin[i] >> 4];
        out[2 * i + 1] = digits[bin[i] & 15];
    }
    out[2 * n] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int wd_unhex(const char *hex, unsigned char *out, size_t n)
{
    if (strlen(hex) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int a = hexval(hex[2 * i]), b = hexval(hex[2 * i + 1]);
        if (a < 0 || b < 0) return -1;
        out[i] = (unsigned char)(a << 4 | b);
    }
    return 0;
}

/* Feed a tensor's bytes to h in chunks of at most `cap` (counted from the
 * tensor's first byte), each also given to cb (NULL: none). */
static int hash_bytes(wd_sha256 *h, int fd, const wd_stfile *f, const wd_tensor *t, unsigned char *buf,
                      size_t cap, const struct wd_tref *ref, wd_hash_chunk_fn cb, void *ctx,
                      const volatile sig_atomic_t *stop, wd_err *err)
{
    for (uint64_t at = 0; at < t->length;) {
        size_t n = t->length - at < cap ? (size_t)(t->length - at) : cap;
        if (wd_stop_requested(stop, err)) return -1;
        if (wd_pread_full(fd, buf, n, t->offset + at, f->path, err))
            return wd_errprefix(err, "hashing tensor %s (at its byte %llu)", t->name, (unsigned long long)at);
        wd_sha256_update(h, buf, n);
        if (cb) cb(ctx, ref->file, ref->tensor, at, buf, n);
        at += n;
    }
    return 0;
}

/* Hash one tensor as the v1 content hash takes it: its name, then its bytes. */
static int hash_tensor(wd_sha256 *h, int fd, const wd_stfile *f, const wd_tensor *t, unsigned char *buf,
                       size_t cap, const struct wd_tref *ref, wd_hash_chunk_fn cb, void *ctx,
                       const volatile sig_atomic_t *stop, wd_err *err)
{
    wd_sha256_update(h, t->name, strlen(t->name));
    return hash_bytes(h, fd, f, t, buf, cap, ref, cb, ctx, stop, err);
}

/* Open every shard of m for a front-to-back read into fds (from
 * wd_fds_new; wd_fds_free closes what is open whatever happened). */
static int open_shards(const wd_model *m, int *fds, wd_err *err)
{
    for (size_t i = 0; i < m->nfiles; i++) {
        if ((fds[i] = open(m->files[i].path, O_RDONLY | O_CLOEXEC)) < 0)
            return wd_errf(err, "%s: %s", m->files[i].path, strerror(errno));
        /* shards are read about once, mostly front to back */
        posix_fadvise(fds[i], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    return 0;
}

int wd_model_hash_ex(const wd_model *m, unsigned char out[32], size_t chunk, wd_hash_chunk_fn cb, void *ctx,
                     const volatile sig_atomic_t *stop, wd_err *err)
{
    if (m->ntensors && !m->by_name) return wd_errf(err, "%s: model not indexed", m->dir);
    struct wd_tref *order = malloc((m->ntensors + 1) * sizeof *order);
    int *fds = wd_fds_new(m->nfiles);
    unsigned char *buf = malloc(chunk);
    wd_sha256 *h = wd_sha256_new();
    int rc = -1;
    if (!order || !fds || !buf || !h) {
        wd_errf(err, "out of memory hashing %s", m->dir);
        goto out;
    }
    if (open_shards(m, fds, err)) goto out;
    wd_model_hash_order(m, order);
    for (size_t k = 0; k < m->ntensors; k++) {
        const wd_stfile *f = &m->files[order[k].file];
        if (hash_tensor(h, fds[order[k].file], f, &f->tensors[order[k].tensor], buf, chunk, &order[k], cb, ctx,
                        stop, err))
            goto out;
    }
    wd_sha256_final(h, out);
    h = NULL;
    rc = 0;
out:
    wd_fds_free(fds, m->nfiles);
    wd_sha256_free(h);
    free(buf);
    free(order);
    return rc;
}

int wd_model_hash(const wd_model *m, unsigned char out[32], wd_err *err)
{
    /* bounded memory whatever the model's size: 4 MiB at a time */
    return wd_model_hash_ex(m, out, 4u << 20, NULL, NULL, NULL, err);
}

/* ---- the model identity (WD_ID_V2) ------------------------------------- */
#define ID_TAG "wdelta-model-id-2\n"

/* One tensor's record: the tensor itself (borrowed: its model outlives the
 * hash) and the digest of its bytes.  40 bytes, no copies: a model may
 * hold 100,000 tensors. */
typedef struct id_rec {
    const wd_tensor *t;
    unsigned char digest[32];
} id_rec;

static void put_len_str(wd_sha256 *h, const char *s)
{
    unsigned char b[4];
    size_t n = strlen(s);
    wd_put_u32(b, (uint32_t)n);
    wd_sha256_update(h, b, 4);
    wd_sha256_update(h, s, n);
}

/* The identity is composed of n records in name order (names unique):
 * id_start, id_put for each, then wd_sha256_final. */
static wd_sha256 *id_start(size_t n)
{
    wd_sha256 *h = wd_sha256_new();
    if (!h) return NULL;
    unsigned char b[8];
    wd_sha256_update(h, ID_TAG, strlen(ID_TAG));
    wd_put_u64(b, (uint64_t)n);
    wd_sha256_update(h, b, 8);
    return h;
}

static void id_put(wd_sha256 *h, const wd_tensor *t, const unsigned char digest[32])
{
    unsigned char b[8];
    int nd = t->ndim < 0 ? 0 : t->ndim > WD_MAX_DIMS ? WD_MAX_DIMS : t->ndim;
    put_len_str(h, t->name);
    put_len_str(h, t->dtype_name);
    wd_put_u32(b, (uint32_t)nd);
    wd_sha256_update(h, b, 4);
    for (int k = 0; k < nd; k++) {
        wd_put_u64(b, t->shape[k]);
        wd_sha256_update(h, b, 8);
    }
    wd_put_u64(b, t->length);
    wd_sha256_update(h, b, 8);
    wd_sha256_update(h, digest, 32);
}

/* The identity of records already in name order (names unique). */
static int id_compose(const id_rec *r, size_t n, unsigned char out[32], wd_err *err)
{
    wd_sha256 *h = id_start(n);
    if (!h) return wd_errf(err, "out of memory");
    for (size_t i = 0; i < n; i++) id_put(h, r[i].t, r[i].digest);
    wd_sha256_final(h, out);
    return 0;
}

/* ---- incremental: tensors fed one at a time, in any order ----------- */
struct wd_idhash {
    unsigned kind;
    wd_sha256 *run;   /* WD_HASH_V1: the one running hash; WD_ID_V2: the open tensor's */
    id_rec *r;
    size_t n, cap;
    int oom;
};

wd_idhash *wd_idhash_new(unsigned kind)
{
    if (kind != WD_HASH_V1 && kind != WD_ID_V2) return NULL;
    wd_idhash *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->kind = kind;
    if (kind == WD_HASH_V1 && !(h->run = wd_sha256_new())) {
        free(h);
        return NULL;
    }
    return h;
}

static void id_close_tensor(wd_idhash *h)
{
    if (h->kind == WD_ID_V2 && h->run) {
        wd_sha256_final(h->run, h->r[h->n - 1].digest);
        h->run = NULL;
    }
}

int wd_idhash_begin(wd_idhash *h, const wd_tensor *t)
{
    if (h->oom) return -1;
    if (h->kind == WD_HASH_V1) {
        wd_sha256_update(h->run, t->name, strlen(t->name));
        return 0;
    }
    id_close_tensor(h);
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        id_rec *p = realloc(h->r, nc * sizeof *p);
        if (!p) return h->oom = -1;
        h->r = p;
        h->cap = nc;
    }
    id_rec *r = &h->r[h->n];
    memset(r, 0, sizeof *r);
    r->t = t;
    if (!(h->run = wd_sha256_new())) return h->oom = -1;
    h->n++;
    return 0;
}

void wd_idhash_update(wd_idhash *h, const void *p, size_t n)
{
    if (h->run) wd_sha256_update(h->run, p, n);
}

static int cmp_rec(const void *a, const void *b)
{
    return strcmp(((const id_rec *)a)->t->name, ((const id_rec *)b)->t->name);
}

void wd_idhash_free(wd_idhash *h)
{
    if (!h) return;
    wd_sha256_free(h->run);
    free(h->r);
    free(h);
}

int wd_idhash_final(wd_idhash *h, unsigned char out[32], wd_err *err)
{
    int rc = 0;
    if (h->oom) {
        rc = wd_errf(err, "out of memory hashing the model");
    } else if (h->kind == WD_HASH_V1) {
        wd_sha256_final(h->run, out);
        h->run = NULL;
    } else {
        id_close_tensor(h);
        if (h->n > 1) qsort(h->r, h->n, sizeof *h->r, cmp_rec);
        for (size_t i = 1; i < h->n && !rc; i++)
            if (!strcmp(h->r[i].t->name, h->r[i - 1].t->name)) rc = wd_errf(err, "tensor %s appears twice", h->r[i].t->name);
        if (!rc) rc = id_compose(h->r, h->n, out, err);
    }
    wd_idhash_free(h);
    return rc;
}

/* ---- a whole model directory, several threads ------------------------- */
typedef struct id_job {
    const wd_model *m;
    const int *fds;
    unsigned char (*digests)[32]; /* in file order: file f's tensor t at fstart[f] + t */
    const size_t *fstart;
    pthread_mutex_t lock;
    size_t next;           /* next tensor to take, in file order */
    int failed;
    wd_err err;
} id_job;

static void *id_worker(void *arg)
{
    enum { CHUNK = 4 << 20 };
    id_job *j = arg;
    unsigned char *buf = malloc(CHUNK);
    for (;;) {
        pthread_mutex_lock(&j->lock);
        size_t k = j->next++;
        int stop = j->failed || k >= j->m->ntensors || !buf;
        if (!buf && !j->failed) {
            j->failed = 1;
            wd_errf(&j->err, "out of memory hashing %s", j->m->dir);
        }
        pthread_mutex_unlock(&j->lock);
        if (stop) break;
        size_t lo = 0, hi = j->m->nfiles; /* the file holding the k-th tensor */
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (j->fstart[mid] <= k) lo = mid;
            else hi = mid;
        }
        struct wd_tref ref = {(uint32_t)lo, (uint32_t)(k - j->fstart[lo])};
        const wd_stfile *f = &j->m->files[ref.file];
        const wd_tensor *t = &f->tensors[ref.tensor];
        wd_sha256 *h = wd_sha256_new();
        wd_err e;
        int rc = h ? hash_bytes(h, j->fds[ref.file], f, t, buf, CHUNK, &ref, NULL, NULL, NULL, &e)
                   : wd_errf(&e, "out of memory");
        if (rc) {
            wd_sha256_free(h);
            pthread_mutex_lock(&j->lock);
            if (!j->failed) j->err = e;
            j->failed = 1;
            pthread_mutex_unlock(&j->lock);
            break;
        }
        wd_sha256_final(h, j->digests[k]);
    }
    free(buf);
    return NULL;
}

/* The identity of an indexed model from its tensors' digests in file
 * order (file f's tensor t at fstart[f] + t), composed in name order
 * through by_name: 32 bytes a tensor, no record of its own. */
static int id_compose_model(const wd_model *m, const unsigned char (*digests)[32], const size_t *fstart,
                            unsigned char out[32], wd_err *err)
{
    wd_sha256 *h = id_start(m->ntensors);
    if (!h) return wd_errf(err, "out of memory");
    for (size_t i = 0; i < m->ntensors; i++) {
        const struct wd_tref *r = &m->by_name[i];
        id_put(h, &m->files[r->file].tensors[r->tensor], digests[fstart[r->file] + r->tensor]);
    }
    wd_sha256_final(h, out);
    return 0;
}

int wd_model_identity(const wd_model *m, unsigned char out[32], wd_err *err)
{
    if (m->ntensors && !m->by_name) return wd_errf(err, "%s: model not indexed", m->dir);
    size_t nt = m->ntensors;
    id_job j = {.m = m};
    /* a digest per tensor (32 bytes: a model may hold 100,000 tensors),
     * in file order; composed in name order through by_name */
    unsigned char (*digests)[32] = calloc(nt + 1, sizeof *digests);
    int *fds = wd_fds_new(m->nfiles);
    size_t *fstart = calloc(m->nfiles + 1, sizeof *fstart);
    int rc = -1, nthreads = 0;
    pthread_t tids[8];
    if (!digests || !fds || !fstart) {
        wd_errf(err, "out of memory hashing %s", m->dir);
        goto out;
    }
    if (open_shards(m, fds, err)) goto out;
    /* work handed out file by file, front to back within a file, so reads
     * stay mostly sequential */
    for (size_t f = 0; f < m->nfiles; f++) fstart[f + 1] = fstart[f] + m->files[f].ntensors;
    j.fds = fds;
    j.digests = digests;
    j.fstart = fstart;
    pthread_mutex_init(&j.lock, NULL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t want = cpus > 0 ? (size_t)cpus : 1;
    if (want > sizeof tids / sizeof *tids) want = sizeof tids / sizeof *tids;
    if (want > nt) want = nt;
    for (size_t i = 1; i < want; i++)
        if (pthread_create(&tids[nthreads], NULL, id_worker, &j) == 0) nthreads++;
    id_worker(&j); /* the calling thread works too */
    for (int i = 0; i < nthreads; i++) pthread_join(tids[i], NULL);
    pthread_mutex_destroy(&j.lock);
    if (j.failed) {
        *err = j.err;
        goto out;
    }
    rc = id_compose_model(m, (const unsigned char (*)[32])digests, fstart, out, err);
out:
    wd_fds_free(fds, m->nfiles);
    free(digests);
    free(fstart);
    return rc;
}

/* ---- both hashes from one read (wd_model_hashes) ---------------------- */
/* The calling thread reads the tensors once, in wd_model_hash_order, a
 * chunk at a time into a small ring, and feeds each tensor's identity
 * digest; a thread of its own feeds the v1 content hash from the same
 * chunks, in the same order.  Each byte read (copied) once, the two
 * SHA-256 passes on two cores (issue 18: two full reads before). */
#define HB_SLOTS 4
#define HB_CHUNK (1u << 20)
typedef struct hb_slot {
    unsigned char *buf;
    size_t n, k; /* bytes, position of the tensor in the order */
    uint64_t at; /* of the tensor's bytes */
    int full;
} hb_slot;
typedef struct hb_ring {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    hb_slot s[HB_SLOTS];
    size_t head, tail; /* next slot filled, next consumed */
    int done;          /* the reader is through (or failed) */
    const wd_model *m;
    const struct wd_tref *order;
    wd_sha256 *v1;
} hb_ring;

static const wd_tensor *hb_tensor(const hb_ring *r, size_t k)
{
    return &r->m->files[r->order[k].file].tensors[r->order[k].tensor];
}

static void *hb_v1_main(void *arg)
{
    hb_ring *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (!r->s[r->tail % HB_SLOTS].full && !r->done) pthread_cond_wait(&r->cond, &r->lock);
        hb_slot *sl = &r->s[r->tail % HB_SLOTS];
        int go = sl->full;
        pthread_mutex_unlock(&r->lock);
        if (!go) break; /* done, nothing left */
        if (sl->at == 0) {
            const char *name = hb_tensor(r, sl->k)->name;
            wd_sha256_update(r->v1, name, strlen(name));
        }
        wd_sha256_update(r->v1, sl->buf, sl->n);
        pthread_mutex_lock(&r->lock);
        sl->full = 0;
        r->tail++;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
    }
    return NULL;
}

/* The reader's side; 0 or -1 with err set (the ring marked done either way). */
static int hb_read_all(hb_ring *r, const int *fds, unsigned char (*digests)[32], const size_t *fstart, wd_err *err)
{
    const wd_model *m = r->m;
    int rc = 0;
    for (size_t k = 0; k < m->ntensors && !rc; k++) {
        const wd_stfile *f = &m->files[r->order[k].file];
        const wd_tensor *t = hb_tensor(r, k);
        wd_sha256 *h = wd_sha256_new();
        if (!h) {
            rc = wd_errf(err, "out of memory hashing %s", m->dir);
            break;
        }
        uint64_t at = 0;
        do { /* an empty tensor: one empty chunk (v1 takes its name) */
            size_t n = t->length - at < HB_CHUNK ? (size_t)(t->length - at) : HB_CHUNK;
            pthread_mutex_lock(&r->lock);
            while (r->s[r->head % HB_SLOTS].full) pthread_cond_wait(&r->cond, &r->lock);
            pthread_mutex_unlock(&r->lock);
            hb_slot *sl = &r->s[r->head % HB_SLOTS];
            if (n && wd_pread_full(fds[r->order[k].file], sl->buf, n, t->offset + at, f->path, err)) {
                rc = wd_errprefix(err, "hashing tensor %s (at its byte %llu)", t->name, (unsigned long long)at);
                break;
            }
            wd_sha256_update(h, sl->buf, n);
            sl->n = n, sl->k = k, sl->at = at;
            pthread_mutex_lock(&r->lock);
            sl->full = 1;
            r->head++;
            pthread_cond_broadcast(&r->cond);
            pthread_mutex_unlock(&r->lock);
            at += n;
        } while (at < t->length);
        if (rc) {
            wd_sha256_free(h);
            break;
        }
        wd_sha256_final(h, digests[fstart[r->order[k].file] + r->order[k].tensor]);
    }
    pthread_mutex_lock(&r->lock);
    r->done = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int wd_model_hashes(const wd_model *m, unsigned char v1[32], unsigned char id[32], wd_err *err)
{
    if (m->ntensors && !m->by_name) return wd_errf(err, "%s: model not indexed", m->dir);
    size_t nt = m->ntensors;
    hb_ring r = {.m = m};
    /* a digest per tensor in file order (32 bytes), composed in name order
     * through by_name as wd_model_identity does */
    unsigned char (*digests)[32] = calloc(nt + 1, sizeof *digests);
    int *fds = wd_fds_new(m->nfiles);
    struct wd_tref *order = malloc((nt + 1) * sizeof *order);
    size_t *fstart = calloc(m->nfiles + 1, sizeof *fstart);
    int rc = -1, ok = digests && fds && order && fstart && (r.v1 = wd_sha256_new());
    for (size_t i = 0; ok && i < HB_SLOTS; i++)
        if (!(r.s[i].buf = malloc(HB_CHUNK))) ok = 0;
    if (!ok) {
        wd_errf(err, "out of memory hashing %s", m->dir);
        goto out;
    }
    if (open_shards(m, fds, err)) goto out;
    wd_model_hash_order(m, order);
    r.order = order;
    for (size_t f = 0; f < m->nfiles; f++) fstart[f + 1] = fstart[f] + m->files[f].ntensors;
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    pthread_t tid;
    int threaded = pthread_create(&tid, NULL, hb_v1_main, &r) == 0;
    if (!threaded) { /* no thread: one after the other */
        pthread_mutex_destroy(&r.lock);
        pthread_cond_destroy(&r.cond);
        rc = wd_model_identity(m, id, err) || wd_model_hash(m, v1, err) ? -1 : 0;
        goto out;
    }
    int rrc = hb_read_all(&r, fds, digests, fstart, err);
    pthread_join(tid, NULL);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.cond);
    if (rrc || id_compose_model(m, (const unsigned char (*)[32])digests, fstart, id, err)) goto out;
    wd_sha256_final(r.v1, v1);
    r.v1 = NULL;
    rc = 0;
out:
    wd_sha256_free(r.v1);
    for (size_t i = 0; i < HB_SLOTS; i++) free(r.s[i].buf);
    wd_fds_free(fds, m->nfiles);
    free(digests);
    free(order);
    free(fstart);
    return rc;
}

int wd_model_hash_kind(const wd_model *m, unsigned kind, unsigned char out[32], wd_err *err)
{
    if (kind == WD_HASH_V1) return wd_model_hash(m, out, err);
    if (kind == WD_ID_V2) return wd_model_identity(m, out, err);
    return wd_errf(err, "unknown model hash kind %u", kind);
}

const char *wd_hash_kind_name(unsigned kind)
{
    return kind == WD_ID_V2 ? "model identity" : kind == WD_HASH_V1 ? "content hash (v1)" : "unknown hash";
}
