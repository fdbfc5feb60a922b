/* tree.c - bases, model versions and snapshots of the mounted tree.
 *
 * Nothing here knows about FUSE.  A rescan walks SRC, reuses the model of
 * every .wdelta whose identity (device, inode, size, mtime) is unchanged,
 * opens new or replaced ones, and publishes a fresh immutable snapshot; the
 * previous snapshot lives on until its last reader lets go, and a model
 * version lives on while any open file uses it, so a file open across a
 * replace keeps reading the version it opened.
 *
 * Inode numbers are hashes of the entry's path (and, for files, of the
 * identity of the .wdelta they come from): the same across remounts, and a
 * replaced delta's files get new numbers, so the kernel never serves one
 * version's cached pages for another. */
#include "tree.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#define MAX_DEPTH 16
#define SMALL_BASE (256ull << 20) /* hashed before mounting when uncached */

/* ---- inode numbers ------------------------------------------------------ */
static uint64_t ino_of(const char *kind, const char *a, const char *b)
{
    uint64_t h = wd_hash64(kind, strlen(kind), 0x77646c74);
    h = wd_hash64(a, strlen(a), h);
    if (b) h = wd_hash64(b, strlen(b), h);
    h &= 0x7fffffffffffffffull; /* positive as a signed 64-bit number */
    return h < 16 ? h + 16 : h;
}

static void identity(const struct stat *st, char *buf, size_t n)
{
    snprintf(buf, n, "%llu:%llu:%lld:%lld.%09ld", (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
             (long long)st->st_size, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
}

static model *open_base_model(tree *t, base_ent *b);

/* ---- bases ------------------------------------------------------------ */
/* The digest cache key: the directory and, per weight file, name, size,
 * mtime and inode.  Any change to a shard means hashing again. */
static char *base_key(const base_ent *b)
{
    size_t cap = 256, len = 0;
    char *k = malloc(cap);
    if (!k) return NULL;
    len = (size_t)snprintf(k, cap, "%s", b->dir);
    for (size_t i = 0; i < b->model.nfiles; i++) {
        struct stat st;
        char part[600];
        if (stat(b->model.files[i].path, &st)) {
            free(k);
            return NULL;
        }
        int n = snprintf(part, sizeof part, "|%s:%lld:%lld.%09ld:%llu", b->model.files[i].name, (long long)st.st_size,
                         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (unsigned long long)st.st_ino);
        if (len + (size_t)n + 1 > cap) {
            cap = (len + (size_t)n + 1) * 2;
            char *nk = realloc(k, cap);
            if (!nk) {
                free(k);
                return NULL;
            }
            k = nk;
        }
        memcpy(k + len, part, (size_t)n + 1);
        len += (size_t)n;
    }
    return k;
}

static void cache_path(const tree *t, const base_ent *b, char *buf, size_t n)
{
    snprintf(buf, n, "%s/base-%016llx.digest", t->cache_dir,
             (unsigned long long)wd_hash64(b->dir, strlen(b->dir), 0));
}

/* The cache file: the key line, the identity (WD_ID_V2), then "v1 " and
 * the WD_HASH_V1 digest.  Files of older versions (no v1 line) are misses. */
static int load_cached_digest(const tree *t, base_ent *b)
{
    char path[4200], *key = base_key(b);
    if (!key) return -1;
    cache_path(t, b, path, sizeof path);
    FILE *f = fopen(path, "r");
    int rc = -1;
    if (f) {
        size_t kl = strlen(key);
        char *line = malloc(kl + 128);
        char hex[80], hex1[80];
        if (line && fgets(line, (int)(kl + 128), f) && strlen(line) == kl + 1 && !strncmp(line, key, kl) &&
            fgets(hex, sizeof hex, f) && strlen(hex) >= 64 && fgets(hex1, sizeof hex1, f) && strlen(hex1) >= 67 &&
            !strncmp(hex1, "v1 ", 3)) {
            hex[64] = 0;
            hex1[67] = 0;
            if (!wd_unhex(hex, b->id, 32) && !wd_unhex(hex1 + 3, b->hash, 32)) rc = 0;
        }
        free(line);
        fclose(f);
    }
    free(key);
    return rc;
}

static void store_digest(const tree *t, const base_ent *b)
{
    char path[4200], tmp[4300], hex[65], hex1[65], *key = base_key(b);
    if (!key) return;
    mkdir(t->cache_dir, 0755);
    cache_path(t, b, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid());
    wd_hex(b->id, 32, hex);
    wd_hex(b->hash, 32, hex1);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "%s\n%s\nv1 %s\n", key, hex, hex1);
        if (fclose(f) == 0 && rename(tmp, path) == 0) {
            free(key);
            return;
        }
        unlink(tmp);
    }
    t->log(LOG_WARNING, "cannot write the digest cache %s: %s (the base will be hashed again next mount)", path,
           strerror(errno));
    free(key);
}

int tree_open_bases(tree *t, const char *list, wd_err *err)
{
    if (!list || !*list) return 0;
    char *copy = strdup(list), *save = NULL;
    if (!copy) return wd_errf(err, "out of memory");
    size_t n = 1;
    for (const char *p = list; *p; p++) n += *p == ':';
    t->bases = calloc(n, sizeof *t->bases);
    if (!t->bases) {
        free(copy);
        return wd_errf(err, "out of memory");
    }
    for (char *tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
        base_ent *b = &t->bases[t->nbases];
        char *real = realpath(tok, NULL);
        b->dir = real ? real : strdup(tok);
        t->nbases++;
        if (!b->dir) {
            free(copy);
            return wd_errf(err, "out of memory");
        }
        /* A damaged base must not keep the others from being served (nor a
         * restart after a crash from mounting): it is marked failed, its
         * deltas are listed unavailable, and the status file says why. */
        wd_err berr;
        if (wd_model_open(b->dir, &b->model, &berr)) {
            b->state = BASE_FAILED;
            snprintf(b->error, sizeof b->error, "%s", berr.msg);
            t->log(LOG_ERR, "base %s cannot be used: %s", b->dir, berr.msg);
            continue;
        }
        b->opened = 1;
        b->state = load_cached_digest(t, b) == 0 ? BASE_READY : BASE_PENDING;
    }
    free(copy);
    /* each base shows as /.wdeltafs/bases/NAME (its directory's name, made
     * unique), the target of the `parent` links of the deltas made on it */
    for (size_t i = 0; i < t->nbases; i++) {
        base_ent *b = &t->bases[i];
        const char *slash = strrchr(b->dir, '/');
        const char *bn = slash && slash[1] ? slash + 1 : b->dir;
        char name[300];
        snprintf(name, sizeof name, "%.250s", wd_safe_name(bn) ? bn : "base");
        for (int k = 2;; k++) {
            int clash = 0;
            for (size_t j = 0; j < i; j++) clash |= !strcmp(t->bases[j].name, name);
            if (!clash) break;
            snprintf(name, sizeof name, "%.250s-%d", wd_safe_name(bn) ? bn : "base", k);
        }
        if (!(b->name = strdup(name))) return wd_errf(err, "out of memory");
        if (b->opened) b->bm = open_base_model(t, b);
    }
    return 0;
}

static uint64_t base_bytes(const base_ent *b)
{
    uint64_t n = 0;
    for (size_t i = 0; i < b->model.nfiles; i++) n += b->model.files[i].size;
    return n;
}

void tree_hash_pending(tree *t, int only_small)
{
    for (size_t i = 0; i < t->nbases; i++) {
        base_ent *b = &t->bases[i];
        pthread_mutex_lock(&t->snap_lock);
        int todo = b->state == BASE_PENDING && (!only_small || base_bytes(b) <= SMALL_BASE);
        if (todo) b->state = BASE_HASHING;
        pthread_mutex_unlock(&t->snap_lock);
        if (!todo) continue;
        wd_err err;
        unsigned char h[32], id[32];
        /* both: deltas record one or the other (v1 and older v2 files the
         * sharding-dependent WD_HASH_V1) */
        int rc = wd_model_hashes(&b->model, h, id, &err);
        pthread_mutex_lock(&t->snap_lock);
        t->base_gen++;
        if (rc) {
            b->state = BASE_FAILED;
            snprintf(b->error, sizeof b->error, "%s", err.msg);
        } else {
            memcpy(b->hash, h, 32);
            memcpy(b->id, id, 32);
            b->state = BASE_READY;
        }
        pthread_mutex_unlock(&t->snap_lock);
        if (rc) t->log(LOG_ERR, "base %s cannot be hashed: %s", b->dir, err.msg);
        else store_digest(t, b);
    }
}

/* ---- models ---------------------------------------------------------- */
void model_ref(tree *t, model *m)
{
    pthread_mutex_lock(&t->model_lock);
    m->refs++;
    pthread_mutex_unlock(&t->model_lock);
}

static void model_free(tree *t, model *m)
{
    for (size_t i = 0; i < m->nfiles; i++) {
        free(m->files[i].name);
        free(m->files[i].extra_path);
    }
    free(m->files);
    wd_delta_close(m->d); /* before its parent: it reads the parent's delta */
    model_unref(t, m->parent);
    free(m->rel);
    free(m->delta_path);
    free(m);
}

void model_unref(tree *t, model *m)
{
    if (!m) return;
    pthread_mutex_lock(&t->model_lock);
    int last = --m->refs == 0;
    pthread_mutex_unlock(&t->model_lock);
    if (last) model_free(t, m);
}

static int add_file(model *m, const char *name, uint64_t size, int delta_file, const char *extra_path)
{
    mfile *f = &m->files[m->nfiles];
    char idn[128];
    identity(&m->st, idn, sizeof idn);
    size_t l = strlen(m->rel) + strlen(name) + strlen(idn) + 4;
    char *key = malloc(l);
    if (!key) return -1;
    snprintf(key, l, "%s/%s|%s", m->rel, name, idn);
    f->name = strdup(name);
    f->size = size;
    f->ino = ino_of("f", key, NULL);
    f->delta_file = delta_file;
    f->extra_path = extra_path ? strdup(extra_path) : NULL;
    free(key);
    if (!f->name || (extra_path && !f->extra_path)) return -1;
    m->nfiles++;
    return 0;
}

/* Open one .wdelta (or take `d`, already opened: owned from here on) with
 * its source: the base b, or the parent model pm.  On failure *reason says
 * why it is not served. */
static model *open_model(tree *t, const char *path, const char *rel, const struct stat *st, wd_delta *d, base_ent *b,
                         model *pm, char **reason)
{
    wd_err err;
    char buf[1400];
    model *m = calloc(1, sizeof *m);
    if (!m) {
        wd_delta_close(d);
        return NULL;
    }
    m->refs = 1;
    m->st = *st;
    m->rel = strdup(rel);
    m->delta_path = strdup(path);
    m->ino = ino_of("m", rel, NULL);
    m->d = d;
    if (!m->d && wd_delta_open(path, &m->d, &err)) {
        *reason = strdup(err.msg);
        goto fail;
    }
    const wd_delta_info *in = wd_delta_get_info(m->d);
    if (pm) {
        model_ref(t, pm);
        m->parent = pm;
        m->base = pm->base;
        if (wd_delta_set_parent(m->d, pm->d, pm->key, t->cache, &err)) {
            *reason = strdup(err.msg);
            goto fail;
        }
    } else {
        m->base = b;
        if (in->version == 1) wd_delta_v1_use_base_dtype(m->d, t->v1_base_dtype);
        if (wd_delta_set_base(m->d, &m->base->model, &err)) {
            *reason = strdup(err.msg);
            goto fail;
        }
    }
    const wd_model *bm = &m->base->model;
    m->files = calloc(in->nfiles + bm->nextras + 1, sizeof *m->files);
    if (!m->files) goto oom;
    for (size_t i = 0; i < in->nfiles; i++)
        if (add_file(m, in->files[i].name, in->files[i].size, (int)i, NULL)) goto oom;
    for (size_t i = 0; i < bm->nextras; i++) {
        if (wd_delta_find_file(m->d, bm->extras[i]) >= 0) continue;
        if (!strcmp(bm->extras[i], "model.safetensors.index.json")) continue; /* the delta's sharding rules */
        struct stat es;
        snprintf(buf, sizeof buf, "%s/%s", bm->dir, bm->extras[i]);
        if (stat(buf, &es) || !S_ISREG(es.st_mode)) continue;
        if (add_file(m, bm->extras[i], (uint64_t)es.st_size, -1, buf)) goto oom;
    }
    pthread_mutex_lock(&t->model_lock);
    m->key = ++t->next_key;
    pthread_mutex_unlock(&t->model_lock);
    return m;
oom:
    *reason = strdup("out of memory");
fail:
    model_free(t, m);
    return NULL;
}

/* A base model shown as a directory of its own files (for `parent`
 * links): its weight files and extras, read straight from the base. */
static model *open_base_model(tree *t, base_ent *b)
{
    model *m = calloc(1, sizeof *m);
    char rel[600], path[4200];
    if (!m) return NULL;
    m->refs = 1;
    m->is_base = 1;
    m->base = b;
    snprintf(rel, sizeof rel, ".wdeltafs/bases/%s", b->name);
    m->rel = strdup(rel);
    m->delta_path = strdup(b->dir);
    m->ino = ino_of("m", rel, NULL);
    if (stat(b->dir, &m->st) || !m->rel || !m->delta_path) goto fail;
    m->files = calloc(b->model.nfiles + b->model.nextras + 1, sizeof *m->files);
    if (!m->files) goto fail;
    for (size_t i = 0; i < b->model.nfiles; i++)
        if (add_file(m, b->model.files[i].name, b->model.files[i].size, -1, b->model.files[i].path)) goto fail;
    for (size_t i = 0; i < b->model.nextras; i++) {
        struct stat es;
        snprintf(path, sizeof path, "%s/%s", b->dir, b->model.extras[i]);
        if (stat(path, &es) || !S_ISREG(es.st_mode)) continue;
        if (add_file(m, b->model.extras[i], (uint64_t)es.st_size, -1, path)) goto fail;
    }
    pthread_mutex_lock(&t->model_lock);
    m->key = ++t->next_key;
    pthread_mutex_unlock(&t->model_lock);
    return m;
fail:
    model_free(t, m);
    return NULL;
}

/* ---- snapshots --------------------------------------------------------- */
static int snap_add(snapshot *s, uint64_t ino, node_kind kind, const char *name, uint64_t parent, model *m, int fidx)
{
    if (s->nnodes == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        node *p = realloc(s->nodes, nc * sizeof *p);
        if (!p) return -1;
        s->nodes = p;
        s->cap = nc;
    }
    node *n = &s->nodes[s->nnodes];
    memset(n, 0, sizeof *n);
    n->ino = ino;
    n->kind = kind;
    n->name = strdup(name);
    n->parent = parent;
    n->m = m;
    n->fidx = fidx;
    if (!n->name) return -1;
    return (int)s->nnodes++;
}

static int add_child(snapshot *s, uint32_t dir, uint32_t child)
{
    node *d = &s->nodes[dir];
    if (d->nchild == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 8;
        uint32_t *p = realloc(d->child, nc * sizeof *p);
        if (!p) return -1;
        d->child = p;
        d->cap = nc;
    }
    d->child[d->nchild++] = child;
    return 0;
}

static int build_index(snapshot *s)
{
    s->index_size = 16;
    while (s->index_size < s->nnodes * 2) s->index_size *= 2;
    s->index = calloc(s->index_size, sizeof *s->index);
    if (!s->index) return -1;
    for (size_t i = 0; i < s->nnodes; i++) {
        size_t h = (size_t)(s->nodes[i].ino * 0x9E3779B97F4A7C15ull) & (s->index_size - 1);
        while (s->index[h]) h = (h + 1) & (s->index_size - 1);
        s->index[h] = (uint32_t)i + 1;
    }
    return 0;
}

node *snap_node(snapshot *s, uint64_t ino)
{
    size_t h = (size_t)(ino * 0x9E3779B97F4A7C15ull) & (s->index_size - 1);
    while (s->index[h]) {
        node *n = &s->nodes[s->index[h] - 1];
        if (n->ino == ino) return n;
        h = (h + 1) & (s->index_size - 1);
    }
    return NULL;
}

node *snap_child(snapshot *s, const node *dir, const char *name)
{
    for (size_t i = 0; i < dir->nchild; i++)
        if (!strcmp(s->nodes[dir->child[i]].name, name)) return &s->nodes[dir->child[i]];
    return NULL;
}

static void snap_free(tree *t, snapshot *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nnodes; i++) {
        free(s->nodes[i].name);
        free(s->nodes[i].child);
        free(s->nodes[i].link);
    }
    free(s->nodes);
    free(s->index);
    for (size_t i = 0; i < s->nmodels; i++) model_unref(t, s->models[i]);
    free(s->models);
    for (size_t i = 0; i < s->nunav; i++) {
        free(s->unav[i].delta);
        free(s->unav[i].reason);
    }
    free(s->unav);
    free(s);
}

snapshot *tree_snapshot(tree *t)
{
    pthread_mutex_lock(&t->snap_lock);
    snapshot *s = t->cur;
    s->refs++;
    pthread_mutex_unlock(&t->snap_lock);
    return s;
}

void tree_snapshot_put(tree *t, snapshot *s)
{
    pthread_mutex_lock(&t->snap_lock);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&t->snap_lock);
    if (last) snap_free(t, s);
}

/* ---- scanning ---------------------------------------------------------- */
/* A .wdelta found under SRC, before it is served.  A rescan first lists
 * them all (with their hashes) and then resolves each one's source: a base
 * with its base_hash, or (a chain) the delta whose result_hash it is, which
 * is resolved first, recursively. */
typedef struct cand {
    char *path, *rel;
    struct stat st;
    model *old;        /* the previous snapshot's version, if unchanged (a ref) */
    wd_delta *d;       /* opened now (when there is no old one) */
    char *err;         /* cannot be opened (or known to fail unchanged) */
    unsigned version;
    unsigned char base_hash[32], result_hash[32];
    unsigned base_kind, result_kind; /* WD_HASH_V1 or WD_ID_V2 */
    int state;         /* 0 unresolved, 1 resolving, 2 served, 3 failed */
    model *m;          /* state 2: a ref */
    char *reason;      /* state 3 */
    int fail_stable;   /* the failure does not depend on other deltas */
} cand;

typedef struct scan {
    tree *t;
    snapshot *old, *s;
    size_t cap_models, cap_unav;
    cand *c;
    size_t nc, capc, hint;
    uint32_t *mnodes; /* node index of each delta's model directory */
    size_t nmnodes, capmnodes;
} scan;

static model *reuse(scan *sc, const char *path, const struct stat *st)
{
    if (!sc->old) return NULL;
    for (size_t i = 0; i < sc->old->nmodels; i++) {
        model *m = sc->old->models[i];
        if (!strcmp(m->delta_path, path) && m->st.st_dev == st->st_dev && m->st.st_ino == st->st_ino &&
            m->st.st_size == st->st_size && m->st.st_mtim.tv_sec == st->st_mtim.tv_sec &&
            m->st.st_mtim.tv_nsec == st->st_mtim.tv_nsec && m->st.st_mode == st->st_mode &&
            m->st.st_uid == st->st_uid && m->st.st_gid == st->st_gid) {
            /* (a chmod/chown opens it again: the model shows new owner/mode) */
            model_ref(sc->t, m);
            return m;
        }
    }
    return NULL;
}

static void note_unavailable(scan *sc, const char *path, const char *reason, const struct stat *st)
{
    snapshot *s = sc->s;
    if (s->nunav == sc->cap_unav) {
        size_t nc = sc->cap_unav ? sc->cap_unav * 2 : 8;
        unavailable *p = realloc(s->unav, nc * sizeof *p);
        if (!p) return;
        s->unav = p;
        sc->cap_unav = nc;
    }
    unavailable *u = &s->unav[s->nunav];
    memset(u, 0, sizeof *u);
    u->delta = strdup(path);
    u->reason = strdup(reason);
    if (!u->delta || !u->reason) {
        free(u->delta);
        free(u->reason);
        return;
    }
    if (st) {
        u->st = *st;
        u->has_st = 1;
    }
    pthread_mutex_lock(&sc->t->snap_lock);
    u->base_gen = sc->t->base_gen;
    pthread_mutex_unlock(&sc->t->snap_lock);
    s->nunav++;
}

static int same_identity(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* A delta that could not be served and has not changed since (nor have
 * the bases) is not opened again on every rescan: its old reason stands. */
static const char *known_failure(scan *sc, const char *path, const struct stat *st)
{
    if (!sc->old) return NULL;
    pthread_mutex_lock(&sc->t->snap_lock);
    uint64_t gen = sc->t->base_gen;
    pthread_mutex_unlock(&sc->t->snap_lock);
    for (size_t i = 0; i < sc->old->nunav; i++) {
        const unavailable *u = &sc->old->unav[i];
        if (u->has_st && u->base_gen == gen && !strcmp(u->delta, path) && same_identity(&u->st, st))
            return u->reason;
    }
    return NULL;
}

/* Unavailable deltas are logged once per version, not on every rescan. */
static int was_unavailable(scan *sc, const char *path, const char *reason)
{
    if (!sc->old) return 0;
    for (size_t i = 0; i < sc->old->nunav; i++)
        if (!strcmp(sc->old->unav[i].delta, path) && !strcmp(sc->old->unav[i].reason, reason)) return 1;
    return 0;
}

static int add_model_nodes(scan *sc, uint32_t dir, const char *name, model *m)
{
    snapshot *s = sc->s;
    int mi = snap_add(s, m->ino, N_MODEL, name, s->nodes[dir].ino, m, -1);
    if (mi < 0 || add_child(s, dir, (uint32_t)mi)) return -1;
    for (size_t f = 0; f < m->nfiles; f++) {
        int fi = snap_add(s, m->files[f].ino, N_FILE, m->files[f].name, m->ino, m, (int)f);
        if (fi < 0 || add_child(s, (uint32_t)mi, (uint32_t)fi)) return -1;
    }
    if (m->is_base) return 0; /* the tree holds base models */
    if (sc->nmnodes == sc->capmnodes) {
        size_t nc = sc->capmnodes ? sc->capmnodes * 2 : 16;
        uint32_t *p = realloc(sc->mnodes, nc * sizeof *p);
        if (!p) return -1;
        sc->mnodes = p;
        sc->capmnodes = nc;
    }
    sc->mnodes[sc->nmnodes++] = (uint32_t)mi;
    if (s->nmodels == sc->cap_models) {
        size_t nc = sc->cap_models ? sc->cap_models * 2 : 16;
        model **p = realloc(s->models, nc * sizeof *p);
        if (!p) return -1;
        s->models = p;
        sc->cap_models = nc;
    }
    s->models[s->nmodels++] = m;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- chains: listing and resolving ------------------------------------ */
static void add_cand(scan *sc, const char *path, const char *rel, const struct stat *st)
{
    if (sc->nc == sc->capc) {
        size_t nc = sc->capc ? sc->capc * 2 : 32;
        cand *p = realloc(sc->c, nc * sizeof *p);
        if (!p) return;
        sc->c = p;
        sc->capc = nc;
    }
    cand *c = &sc->c[sc->nc];
    memset(c, 0, sizeof *c);
    c->path = strdup(path);
    c->rel = strdup(rel);
    c->st = *st;
    if (!c->path || !c->rel) {
        free(c->path);
        free(c->rel);
        return;
    }
    sc->nc++;
    c->old = reuse(sc, path, st);
    const char *known = c->old ? NULL : known_failure(sc, path, st);
    wd_err err;
    if (known) {
        c->err = strdup(known);
    } else if (!c->old && wd_delta_open(path, &c->d, &err)) {
        c->err = strdup(err.msg);
        c->d = NULL;
    }
    if (c->err) {
        c->state = 3;
        c->reason = strdup(c->err);
        c->fail_stable = 1;
        return;
    }
    const wd_delta_info *in = wd_delta_get_info(c->old ? c->old->d : c->d);
    c->version = in->version;
    memcpy(c->base_hash, in->base_hash, 32);
    memcpy(c->result_hash, in->result_hash, 32);
    c->base_kind = in->base_hash_kind;
    c->result_kind = in->result_hash_kind;
}

/* List every .wdelta under SRC, as scan_dir will meet them. */
static void collect(scan *sc, const char *path, const char *rel, int depth)
{
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char child[4096], crel[4096];
        if (snprintf(child, sizeof child, "%s/%s", path, de->d_name) >= (int)sizeof child) continue;
        struct stat st;
        if (stat(child, &st)) continue;
        size_t nl = strlen(de->d_name);
        if (S_ISDIR(st.st_mode)) {
            if (depth >= MAX_DEPTH || !wd_safe_name(de->d_name)) continue;
            if (snprintf(crel, sizeof crel, "%s%s%s", rel, *rel ? "/" : "", de->d_name) >= (int)sizeof crel) continue;
            collect(sc, child, crel, depth + 1);
        } else if (S_ISREG(st.st_mode) && nl > 7 && !strcmp(de->d_name + nl - 7, ".wdelta")) {
            if (snprintf(crel, sizeof crel, "%s%s%.*s", rel, *rel ? "/" : "", (int)(nl - 7), de->d_name) >=
                (int)sizeof crel)
                continue;
            add_cand(sc, child, crel, &st);
        }
    }
    closedir(d);
}

static cand *find_cand(scan *sc, const char *path)
{
    for (size_t k = 0; k < sc->nc; k++) {
        size_t i = (sc->hint + k) % sc->nc;
        if (!strcmp(sc->c[i].path, path)) {
            sc->hint = i + 1;
            return &sc->c[i];
        }
    }
    return NULL;
}

static void cand_fail(cand *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cand_fail(cand *c, const char *fmt, ...)
{
    char buf[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    c->state = 3;
    free(c->reason);
    c->reason = strdup(buf);
}

/* c's model over the base b or the parent model pm: the old one when
 * neither changed, else opened; a new link over a parent is checked
 * (wd_delta_check_source).  NULL: *reason says why. */
static model *attach(scan *sc, cand *c, base_ent *b, model *pm, char **reason)
{
    if (c->old && c->old->parent == pm && (pm || c->old->base == b)) {
        model *m = c->old; /* unchanged, and so is its source */
        c->old = NULL;
        return m;
    }
    wd_delta *d = c->d;
    c->d = NULL;
    model *m = open_model(sc->t, c->path, c->rel, &c->st, d, b, pm, reason);
    if (m && pm) {
        wd_err err;
        if (wd_delta_check_source(m->d, &err)) {
            *reason = strdup(err.msg);
            model_unref(sc->t, m);
            return NULL;
        }
    }
    return m;
}

typedef struct pcand {
    int rank;
    cand *p;
} pcand;

static int cmp_pcand(const void *a, const void *b)
{
    const pcand *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return strcmp(x->p->path, y->p->path);
}

/* The model of c, served with its source, or NULL (c->reason says why). */
static model *resolve(scan *sc, cand *c)
{
    tree *t = sc->t;
    if (c->state == 2) return c->m;
    if (c->state == 3) return NULL;
    if (c->state == 1) {
        cand_fail(c, "chain loop: this delta is (through its parents) its own parent");
        return NULL;
    }
    c->state = 1;
    char want[65], bases[600] = "";
    size_t bl = 0;
    wd_hex(c->base_hash, 32, want);
    const wd_delta_info *in = wd_delta_get_info(c->old ? c->old->d : c->d);
    char pname[300] = "";
    unsigned pdepth = in->parent_depth;
    if (in->parent_name) snprintf(pname, sizeof pname, "%s", in->parent_name);
    base_ent *b = NULL;
    int waiting = 0;
    for (size_t i = 0; i < t->nbases && !b; i++) {
        pthread_mutex_lock(&t->snap_lock);
        base_state st = t->bases[i].state;
        pthread_mutex_unlock(&t->snap_lock);
        const unsigned char *bh = c->base_kind == WD_ID_V2 ? t->bases[i].id : t->bases[i].hash;
        if (st == BASE_READY && !memcmp(bh, c->base_hash, 32)) b = &t->bases[i];
        else if (st == BASE_PENDING || st == BASE_HASHING) waiting = 1;
        if (st == BASE_READY && bl < sizeof bases - 40) {
            char h[17];
            wd_hex(bh, 8, h);
            bl += (size_t)snprintf(bases + bl, sizeof bases - bl, "%s%s (%s...)", bl ? ", " : "", t->bases[i].dir, h);
        }
    }
    if (b) {
        char *reason = NULL;
        model *m = attach(sc, c, b, NULL, &reason);
        if (!m) {
            cand_fail(c, "%s", reason ? reason : "out of memory");
            c->fail_stable = 1;
            free(reason);
            return NULL;
        }
        c->m = m;
        c->state = 2;
        return m;
    }
    cand *first = NULL;
    int loop = 0;
    char why[1200] = "";
    if (c->version == 2) {
        /* several deltas may claim to rebuild the same model: tried in the
         * library's order (wd_chain_parent_rank, then path); the first whose
         * own chain is served and against which c checks out is the parent */
        pcand *pc = calloc(sc->nc + 1, sizeof *pc);
        size_t np = 0;
        for (size_t i = 0; pc && i < sc->nc; i++) {
            cand *p = &sc->c[i];
            if (p == c || p->version != 2 || p->err || p->result_kind != c->base_kind ||
                memcmp(p->result_hash, c->base_hash, 32))
                continue;
            const wd_delta *pd = p->old ? p->old->d : p->d ? p->d : p->m ? p->m->d : NULL;
            const wd_delta *cd = c->old ? c->old->d : c->d;
            pc[np].rank = pd && cd ? wd_chain_parent_rank(cd, pd) : 3;
            pc[np++].p = p;
        }
        if (np) qsort(pc, np, sizeof *pc, cmp_pcand);
        for (size_t i = 0; i < np; i++) {
            cand *p = pc[i].p;
            if (p->state == 1) { /* on the way down to here: a loop */
                loop = 1;
                continue;
            }
            model *pm = resolve(sc, p);
            if (pm) {
                char *reason = NULL;
                model *m = attach(sc, c, NULL, pm, &reason);
                if (m) {
                    free(pc);
                    c->m = m;
                    c->state = 2;
                    return m;
                }
                t->log(LOG_WARNING, "%s: %s claims to rebuild its base but is passed over: %s", c->path, p->path,
                       reason ? reason : "out of memory");
                if (!first) {
                    first = p;
                    snprintf(why, sizeof why, "%s does not fit it: %s", p->path, reason ? reason : "out of memory");
                }
                free(reason);
                continue;
            }
            if (!first) {
                first = p;
                snprintf(why, sizeof why, "its parent %s is unavailable: %s", p->path, p->reason ? p->reason : "?");
            }
            if (p->reason && strstr(p->reason, "chain loop")) loop = 1;
        }
        free(pc);
    }
    c->fail_stable = 0;
    if (first || loop) {
        if (loop && !first)
            cand_fail(c, "chain loop: every delta that rebuilds its base (%s...) is, through its own parents, "
                         "made against this delta's result", want);
        else
            cand_fail(c, "%s", why);
    } else if (waiting) {
        cand_fail(c, "needs the base with %s %s; bases are still being hashed", wd_hash_kind_name(c->base_kind), want);
    } else if (c->version == 2 && (pname[0] || pdepth)) {
        cand_fail(c, "missing link: its parent %s (a chain link, depth %u) is not under the source: no delta there "
                     "rebuilds the model with %s %s (add the parent delta beside it)",
                  pname[0] ? pname : "(name not recorded)", pdepth, wd_hash_kind_name(c->base_kind), want);
    } else if (!t->nbases) {
        cand_fail(c, "no base given: it needs the base with %s %s (pass its directory with -o base=DIR)",
                  wd_hash_kind_name(c->base_kind), want);
    } else {
        cand_fail(c, "wrong base: it was made against the base with %s %s, and no base given has it (%s); pass "
                     "its directory with -o base=DIR",
                  wd_hash_kind_name(c->base_kind), want, bl ? bases : "none could be hashed");
    }
    return NULL;
}

static void free_cands(scan *sc)
{
    for (size_t i = 0; i < sc->nc; i++) {
        cand *c = &sc->c[i];
        model_unref(sc->t, c->old);
        model_unref(sc->t, c->m);
        wd_delta_close(c->d);
        free(c->path);
        free(c->rel);
        free(c->err);
        free(c->reason);
    }
    free(sc->c);
    free(sc->mnodes);
}

/* Each delta's directory gets `parent`, a relative symlink to its parent
 * model's directory or to its base's under /.wdeltafs/bases. */
static void add_parent_links(scan *sc)
{
    snapshot *s = sc->s;
    for (size_t i = 0; i < sc->nmnodes; i++) {
        uint32_t mi = sc->mnodes[i];
        model *m = s->nodes[mi].m;
        const char *to = m->parent ? m->parent->rel : m->base && m->base->bm ? m->base->bm->rel : NULL;
        if (!to || snap_child(s, &s->nodes[mi], "parent")) continue;
        char target[8192];
        size_t l = 0;
        for (const char *p = m->rel; *p && l + 4 < sizeof target; p++)
            if (p == m->rel || *p == '/') l += (size_t)snprintf(target + l, sizeof target - l, "../");
        if (snprintf(target + l, sizeof target - l, "%s", to) >= (int)(sizeof target - l)) continue;
        int li = snap_add(s, ino_of("l", m->rel, target), N_LINK, "parent", m->ino, m, -1);
        if (li < 0) continue;
        if (!(s->nodes[li].link = strdup(target)) || add_child(s, mi, (uint32_t)li)) {
            free(s->nodes[li].link);
            s->nodes[li].link = NULL;
        }
    }
}

/* /.wdeltafs/bases/NAME: every base opened */
static void add_base_dirs(scan *sc, uint32_t meta)
{
    snapshot *s = sc->s;
    int bi = snap_add(s, INO_BASES, N_DIR, "bases", INO_META, NULL, -1);
    if (bi < 0 || add_child(s, meta, (uint32_t)bi)) return;
    for (size_t i = 0; i < sc->t->nbases; i++) {
        model *bm = sc->t->bases[i].bm;
        if (bm) add_model_nodes(sc, (uint32_t)bi, sc->t->bases[i].name, bm);
    }
}

/* Walk one directory of SRC; rel is its path under the mount ("" = root). */
static void scan_dir(scan *sc, const char *path, const char *rel, uint32_t dir, int depth)
{
    DIR *d = opendir(path);
    if (!d) {
        sc->t->log(LOG_WARNING, "cannot read %s: %s", path, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue; /* hidden, temporary, . and .. */
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **p = realloc(names, cap * sizeof *p);
            if (!p) break;
            names = p;
        }
        if (!(names[n] = strdup(de->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char child[4096], crel[4096];
        if (snprintf(child, sizeof child, "%s/%s", path, names[i]) >= (int)sizeof child) continue;
        struct stat st;
        if (stat(child, &st)) continue;
        size_t nl = strlen(names[i]);
        if (S_ISDIR(st.st_mode)) {
            if (depth >= MAX_DEPTH || !wd_safe_name(names[i])) continue;
            if (snprintf(crel, sizeof crel, "%s%s%s", rel, *rel ? "/" : "", names[i]) >= (int)sizeof crel) continue;
            if (snap_child(sc->s, &sc->s->nodes[dir], names[i])) continue;
            int di = snap_add(sc->s, ino_of("d", crel, NULL), N_DIR, names[i], sc->s->nodes[dir].ino, NULL, -1);
            if (di < 0) continue;
            scan_dir(sc, child, crel, (uint32_t)di, depth + 1);
            /* directories without any model are not shown */
            if (sc->s->nodes[di].nchild) add_child(sc->s, dir, (uint32_t)di);
        } else if (S_ISREG(st.st_mode) && nl > 7 && !strcmp(names[i] + nl - 7, ".wdelta")) {
            char mname[256];
            snprintf(mname, sizeof mname, "%.*s", (int)(nl - 7), names[i]);
            if (snprintf(crel, sizeof crel, "%s%s%s", rel, *rel ? "/" : "", mname) >= (int)sizeof crel) continue;
            if (!wd_safe_name(mname) || snap_child(sc->s, &sc->s->nodes[dir], mname)) {
                note_unavailable(sc, child, "its name clashes with another entry or is not a safe name", NULL);
                continue;
            }
            cand *c = find_cand(sc, child);
            if (!c) continue; /* appeared since the listing: next rescan */
            model *m = resolve(sc, c);
            if (!m) {
                const char *r = c->reason ? c->reason : "out of memory";
                if (!was_unavailable(sc, child, r)) sc->t->log(LOG_WARNING, "not serving %s: %s", child, r);
                note_unavailable(sc, child, r, c->fail_stable ? &c->st : NULL);
                continue;
            }
            model_ref(sc->t, m);
            if (add_model_nodes(sc, dir, mname, m)) model_unref(sc->t, m);
        }
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Names under `parent` whose node differs between old and new snapshots. */
static void report_changes(snapshot *old, snapshot *s, void (*changed)(void *, uint64_t, const char *), void *ctx)
{
    if (!old || !changed) return;
    for (size_t i = 0; i < old->nnodes; i++) {
        node *o = &old->nodes[i];
        if (o->kind == N_META || o->kind == N_STATUS || o->ino == INO_ROOT) continue;
        node *n = snap_node(s, o->ino);
        if (!n || (o->kind == N_MODEL && n->m != o->m)) changed(ctx, o->parent, o->name);
    }
    for (size_t i = 0; i < s->nnodes; i++) {
        node *n = &s->nodes[i];
        if (n->ino != INO_ROOT && n->kind != N_META && n->kind != N_STATUS && !snap_node(old, n->ino))
            changed(ctx, n->parent, n->name);
    }
}

void tree_rescan(tree *t, void (*changed)(void *, uint64_t, const char *), void *ctx)
{
    scan sc = {.t = t};
    pthread_mutex_lock(&t->snap_lock);
    sc.old = t->cur;
    if (sc.old) sc.old->refs++;
    pthread_mutex_unlock(&t->snap_lock);
    sc.s = calloc(1, sizeof *sc.s);
    if (!sc.s) goto out;
    sc.s->refs = 1;
    sc.nc = 0;
    int root = snap_add(sc.s, INO_ROOT, N_DIR, "", INO_ROOT, NULL, -1);
    int meta = snap_add(sc.s, INO_META, N_META, ".wdeltafs", INO_ROOT, NULL, -1);
    int st = snap_add(sc.s, INO_STATUS, N_STATUS, "status", INO_META, NULL, -1);
    if (root < 0 || meta < 0 || st < 0 || add_child(sc.s, (uint32_t)root, (uint32_t)meta) ||
        add_child(sc.s, (uint32_t)meta, (uint32_t)st)) {
        snap_free(t, sc.s);
        goto out;
    }
    collect(&sc, t->src, "", 0);
    scan_dir(&sc, t->src, "", (uint32_t)root, 0);
    add_base_dirs(&sc, (uint32_t)meta);
    add_parent_links(&sc);
    free_cands(&sc);
    sc.c = NULL;
    sc.nc = 0;
    sc.mnodes = NULL;
    if (build_index(sc.s)) {
        snap_free(t, sc.s);
        goto out;
    }
    pthread_mutex_lock(&t->snap_lock);
    snapshot *prev = t->cur;
    t->cur = sc.s;
    pthread_mutex_unlock(&t->snap_lock);
    report_changes(sc.old, sc.s, changed, ctx);
    if (prev) tree_snapshot_put(t, prev);
    /* deltatensors v1 files carry only a whole-file digest: check each new
     * one once, after publishing, so reads are not held up; a failure makes
     * every later read of it fail (EIO) rather than serve bad bytes. */
    for (size_t i = 0; i < sc.s->nmodels; i++) {
        model *m = sc.s->models[i];
        wd_err err;
        if (wd_delta_digest_state(m->d) == 0 && wd_delta_check_digest(m->d, &err))
            t->log(LOG_ERR, "%s", err.msg);
    }
out:
    if (sc.old) tree_snapshot_put(t, sc.old);
}

/* ---- status --------------------------------------------------------- */
static const char *state_name(base_state s)
{
    switch (s) {
    case BASE_PENDING: return "waiting";
    case BASE_HASHING: return "hashing";
    case BASE_READY: return "ready";
    default: return "failed";
    }
}

static cJSON *forest_children(snapshot *s, base_ent *b, model *parent, int depth)
{
    cJSON *a = cJSON_CreateArray();
    if (depth > 64) return a;
    for (size_t i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        if (m->parent != parent || (!parent && m->base != b)) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", m->rel);
        cJSON_AddStringToObject(o, "delta", m->delta_path);
        cJSON_AddItemToObject(o, "children", forest_children(s, b, m, depth + 1));
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

char *tree_status_json(tree *t, int open_files)
{
    snapshot *s = tree_snapshot(t);
    cJSON *root = cJSON_CreateObject();
    char hex[65];
    cJSON_AddStringToObject(root, "source", t->src);
    cJSON *ms = cJSON_AddArrayToObject(root, "models");
    for (size_t i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        const wd_delta_info *in = wd_delta_get_info(m->d);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", m->rel);
        cJSON_AddStringToObject(o, "delta", m->delta_path);
        cJSON_AddStringToObject(o, "base", m->base->dir);
        if (m->parent) cJSON_AddStringToObject(o, "parent", m->parent->rel);
        else cJSON_AddStringToObject(o, "parent", m->base->bm ? m->base->bm->rel : m->base->dir);
        int depth = 1;
        for (model *p = m->parent; p; p = p->parent) depth++;
        cJSON_AddNumberToObject(o, "chain_length", depth);
        cJSON_AddNumberToObject(o, "format_version", in->version);
        cJSON_AddStringToObject(o, "strategy", in->strategy);
        if (in->version == 1) {
            int dg = wd_delta_digest_state(m->d);
            cJSON_AddStringToObject(o, "digest", dg > 0 ? "verified" : dg < 0 ? "MISMATCH (reads fail)" : "being checked");
        }
        cJSON_AddNumberToObject(o, "stored_bytes", (double)in->file_size);
        cJSON_AddNumberToObject(o, "output_bytes", (double)in->output_size);
        cJSON_AddNumberToObject(o, "files", (double)m->nfiles);
        cJSON_AddItemToArray(ms, o);
    }
    /* the forest: each base, and under it the models made on it, each with
     * the models made against it */
    cJSON *forest = cJSON_AddArrayToObject(root, "forest");
    for (size_t i = 0; i < t->nbases; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "base", t->bases[i].dir);
        if (t->bases[i].bm) cJSON_AddStringToObject(o, "dir", t->bases[i].bm->rel);
        cJSON_AddItemToObject(o, "children", forest_children(s, &t->bases[i], NULL, 0));
        cJSON_AddItemToArray(forest, o);
    }
    cJSON *un = cJSON_AddArrayToObject(root, "unavailable");
    for (size_t i = 0; i < s->nunav; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "delta", s->unav[i].delta);
        cJSON_AddStringToObject(o, "reason", s->unav[i].reason);
        cJSON_AddItemToArray(un, o);
    }
    cJSON *bs = cJSON_AddArrayToObject(root, "bases");
    pthread_mutex_lock(&t->snap_lock);
    for (size_t i = 0; i < t->nbases; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "dir", t->bases[i].dir);
        cJSON_AddStringToObject(o, "state", state_name(t->bases[i].state));
        if (t->bases[i].state == BASE_READY) {
            wd_hex(t->bases[i].id, 32, hex);
            cJSON_AddStringToObject(o, "hash", hex);
            wd_hex(t->bases[i].hash, 32, hex);
            cJSON_AddStringToObject(o, "hash_v1", hex);
        }
        if (t->bases[i].state == BASE_FAILED) cJSON_AddStringToObject(o, "error", t->bases[i].error);
        cJSON_AddItemToArray(bs, o);
    }
    pthread_mutex_unlock(&t->snap_lock);
    wd_cache_stats cs;
    wd_cache_stats_get(t->cache, &cs);
    cJSON *c = cJSON_AddObjectToObject(root, "cache");
    cJSON_AddNumberToObject(c, "capacity", (double)cs.capacity);
    cJSON_AddNumberToObject(c, "used", (double)cs.used);
    cJSON_AddNumberToObject(c, "hits", (double)cs.hits);
    cJSON_AddNumberToObject(c, "misses", (double)cs.misses);
    cJSON_AddNumberToObject(c, "evictions", (double)cs.evictions);
    cJSON_AddNumberToObject(c, "decoded_bytes", (double)cs.decoded_bytes);
    cJSON_AddNumberToObject(c, "decode_seconds", (double)cs.decode_ns / 1e9);
    cJSON_AddNumberToObject(c, "decode_mb_per_s",
                            cs.decode_ns ? (double)cs.decoded_bytes / 1e6 / ((double)cs.decode_ns / 1e9) : 0.0);
    cJSON_AddNumberToObject(root, "open_files", open_files);
    cJSON_AddNumberToObject(root, "models_served", (double)s->nmodels);
    cJSON_AddNumberToObject(root, "models_unavailable", (double)s->nunav);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    tree_snapshot_put(t, s);
    if (text) {
        size_t l = strlen(text);
        char *p = realloc(text, l + 2);
        if (p) {
            p[l] = '\n';
            p[l + 1] = 0;
            text = p;
        }
    }
    return text;
}

void tree_free(tree *t)
{
    if (t->cur) tree_snapshot_put(t, t->cur);
    t->cur = NULL;
    for (size_t i = 0; i < t->nbases; i++) {
        model_unref(t, t->bases[i].bm);
        if (t->bases[i].opened) wd_model_free(&t->bases[i].model);
        free(t->bases[i].dir);
        free(t->bases[i].name);
    }
    free(t->bases);
}
