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
#include <sys/resource.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* The scan of SRC cannot be trapped by what SRC holds: it goes at most
 * MAX_DEPTH directories deep, reads at most MAX_DIRS directories and
 * MAX_ENTRIES names per scan, never enters a directory twice (by device and
 * inode: symlink loops), never an ancestor of SRC (a link to / or ..), and
 * stays on SRC's filesystem unless -o cross_fs. */
#define MAX_DEPTH 16
#define MAX_DIRS 10000
#define MAX_ENTRIES 200000
#define FD_RESERVE 64   /* descriptors kept free of deltas */
#define RETRY_MAX 30.0 /* seconds: the longest wait before a temporary failure is retried */
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
/* The digest cache (core/model/digest_cache.c, shared with `wdelta find-base`):
 * a base hashed once is not hashed again at the next mount while its weight
 * files are unchanged. */
static int load_cached_digest(const tree *t, base_ent *b)
{
    return wd_digest_cache_load(t->cache_dir, b->dir, &b->model, b->id, b->hash);
}

static void store_digest(const tree *t, const base_ent *b)
{
    wd_err err;
    if (wd_digest_cache_store(t->cache_dir, b->dir, &b->model, b->id, b->hash, &err))
        t->log(LOG_WARNING, "%s (the base will be hashed again next mount)", err.msg);
}

static void fds_unref(base_fds *f)
{
    if (!f || __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL)) return;
    for (size_t i = 0; i < f->n; i++)
        if (f->fd[i] >= 0) close(f->fd[i]);
    free(f->fd);
    free(f);
}

/* Open every weight file of b; a file that cannot be opened leaves its
 * reason in err (the set is then not used).  NULL: out of memory. */
static base_fds *fds_open(const base_ent *b)
{
    base_fds *f = calloc(1, sizeof *f);
    if (!f || !(f->fd = malloc((b->model.nfiles + 1) * sizeof *f->fd))) {
        free(f);
        return NULL;
    }
    f->refs = 1;
    f->n = b->model.nfiles;
    for (size_t i = 0; i < f->n; i++) f->fd[i] = -1;
    for (size_t i = 0; i < f->n; i++) {
        const char *path = b->model.files[i].path;
        if ((f->fd[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0 && !f->err[0])
            snprintf(f->err, sizeof f->err, "%.600s: %s", path, strerror(errno));
    }
    return f;
}

/* Is every weight file of b still the one the set has open? */
static int fds_current(const base_ent *b, const base_fds *f)
{
    for (size_t i = 0; i < f->n; i++) {
        struct stat a, o;
        int gone = stat(b->model.files[i].path, &a) != 0;
        if (gone || f->fd[i] < 0) {
            if (gone != (f->fd[i] < 0)) return 0; /* removed, or back */
            continue;
        }
        if (fstat(f->fd[i], &o)) return 0;
        if (a.st_dev != o.st_dev || a.st_ino != o.st_ino || a.st_size != o.st_size ||
            a.st_mtim.tv_sec != o.st_mtim.tv_sec || a.st_mtim.tv_nsec != o.st_mtim.tv_nsec)
            return 0;
    }
    return 1;
}

/* Who may read b now: its directory, and each weight file it reads (the
 * descriptors of its current set), through their real paths. */
static int base_perm(const base_ent *b, perm *out, wd_err *err)
{
    char why[600];
    perm p;
    if (b->fds->err[0]) return wd_errf(err, "%s", b->fds->err);
    int dfd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return wd_errf(err, "%s: %s", b->dir, strerror(errno));
    int rc = perm_of_fd(dfd, PERM_R | PERM_X, out, why, sizeof why);
    close(dfd);
    if (rc) return wd_errf(err, "%s: %s", b->dir, why);
    for (size_t i = 0; i < b->model.nfiles; i++) {
        if (perm_of_fd(b->fds->fd[i], PERM_R, &p, why, sizeof why)) {
            perm_free(out);
            return wd_errf(err, "%s: %s", b->model.files[i].path, why);
        }
        rc = perm_append(out, &p);
        perm_free(&p);
        if (rc) {
            perm_free(out);
            return wd_errf(err, "out of memory");
        }
    }
    return 0;
}

/* The shared descriptors of b, and who may read b. */
static int open_base_access(base_ent *b, wd_err *err)
{
    if (!(b->fds = fds_open(b))) return wd_errf(err, "out of memory");
    return base_perm(b, &b->perm, err);
}

/* At each rescan: a weight file replaced or removed gets a new descriptor set
 * (deltas opened from now on read the new file, or fail with why; the bases
 * generation changes, so failed deltas are tried again), and a chmod or chown
 * of a base (or of a directory above it) takes effect without a remount.
 * When the permissions cannot be read now, the last reading stays. */
static void refresh_bases(tree *t)
{
    for (size_t i = 0; i < t->nbases; i++) {
        base_ent *b = &t->bases[i];
        if (!b->fds) continue;
        if (!fds_current(b, b->fds)) {
            base_fds *n = fds_open(b);
            if (n) {
                fds_unref(b->fds);
                b->fds = n;
                pthread_mutex_lock(&t->snap_lock);
                t->base_gen++;
                pthread_mutex_unlock(&t->snap_lock);
                if (n->err[0]) t->log(LOG_WARNING, "base %s: %s (its deltas cannot be opened again)", b->dir, n->err);
            }
        }
        perm np;
        wd_err err;
        if (base_perm(b, &np, &err)) continue;
        pthread_mutex_lock(&b->perm_lock);
        perm old = b->perm;
        b->perm = np;
        pthread_mutex_unlock(&b->perm_lock);
        perm_free(&old);
    }
}

int tree_base_allows(base_ent *b, const cred *c)
{
    if (!c || c->uid == 0) return 1;
    pthread_mutex_lock(&b->perm_lock);
    int ok = perm_allows(&b->perm, c);
    pthread_mutex_unlock(&b->perm_lock);
    return ok;
}

int tree_model_allows(const tree *t, const model *m, const cred *c)
{
    (void)t;
    if (!c) return 1;
    for (; m; m = m->parent) {
        if (!perm_allows(&m->perm, c)) return 0;
        if (!m->parent && m->base && !tree_base_allows(m->base, c)) return 0;
    }
    return 1;
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
        pthread_mutex_init(&b->perm_lock, NULL);
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
        if (open_base_access(b, &berr)) {
            b->state = BASE_FAILED;
            snprintf(b->error, sizeof b->error, "%s", berr.msg);
            t->log(LOG_ERR, "base %s cannot be used: %s", b->dir, berr.msg);
            continue;
        }
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

/* ---- descriptors ------------------------------------------------------- */
void tree_limit_fds(tree *t)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)1 << 40) t->fd_budget = 0;
    else t->fd_budget = rl.rlim_cur > 2 * FD_RESERVE ? (long)rl.rlim_cur - FD_RESERVE : (long)rl.rlim_cur / 2;
}

static long delta_fds(wd_delta *d)
{
    return wd_delta_get_info(d)->version == 1 ? 2 : 1; /* v1: the v1 reader's own copy too */
}

/* Open the delta on fd unless the budget is spent (then a temporary
 * failure, retried once descriptors are free again). */
static int open_counted(tree *t, int fd, const char *path, wd_delta **d, wd_err *err)
{
    long used = __atomic_load_n(&t->open_fds, __ATOMIC_RELAXED);
    if (t->fd_budget && used + 2 > t->fd_budget)
        return wd_errf(err, "%s: %s (deltas hold %ld descriptors; the daemon keeps %d of its limit of %ld free: raise "
                            "it with ulimit -n or LimitNOFILE=)",
                       path, strerror(EMFILE), used, FD_RESERVE, t->fd_budget + FD_RESERVE);
    if (wd_delta_open_fd(fd, path, d, err)) return -1;
    __atomic_add_fetch(&t->open_fds, delta_fds(*d), __ATOMIC_RELAXED);
    return 0;
}

static void close_counted(tree *t, wd_delta *d)
{
    if (!d) return;
    __atomic_sub_fetch(&t->open_fds, delta_fds(d), __ATOMIC_RELAXED);
    wd_delta_close(d);
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
    close_counted(t, m->d); /* before its parent: it reads the parent's delta */
    fds_unref(m->bfds);     /* and the base's files */
    model_unref(t, m->parent);
    perm_free(&m->perm);
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
 * its source: the base b, or the parent model pm.  st and p are what the
 * scan found by fstat of the file it opened: opened again here (no `d`), it
 * must still be that file.  On failure *reason says why it is not served. */
static model *open_model(tree *t, const char *path, const char *rel, const struct stat *st, const perm *p,
                         wd_delta *d, base_ent *b, model *pm, char **reason)
{
    wd_err err;
    char buf[1400];
    model *m = calloc(1, sizeof *m);
    if (!m) {
        close_counted(t, d);
        return NULL;
    }
    m->refs = 1;
    m->st = *st;
    m->rel = strdup(rel);
    m->delta_path = strdup(path);
    m->ino = ino_of("m", rel, NULL);
    m->d = d;
    if (perm_copy(p, &m->perm)) goto oom;
    if (!m->d) {
        struct stat now;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &now) || now.st_dev != st->st_dev || now.st_ino != st->st_ino ||
            now.st_size != st->st_size || now.st_mtim.tv_sec != st->st_mtim.tv_sec ||
            now.st_mtim.tv_nsec != st->st_mtim.tv_nsec || now.st_mode != st->st_mode || now.st_uid != st->st_uid ||
            now.st_gid != st->st_gid) {
            snprintf(buf, sizeof buf, "%s: %s", path, fd < 0 ? strerror(errno) : "changed while being opened");
            if (fd >= 0) close(fd);
            *reason = strdup(buf);
            goto fail;
        }
        int rc = open_counted(t, fd, path, &m->d, &err);
        close(fd);
        if (rc) {
            *reason = strdup(err.msg);
            goto fail;
        }
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
        base_fds *f = m->base->fds;
        if (!f || f->err[0]) {
            *reason = strdup(f ? f->err : "the base's files are not open");
            goto fail;
        }
        __atomic_add_fetch(&f->refs, 1, __ATOMIC_ACQ_REL);
        m->bfds = f;
        if (wd_delta_set_base_fds(m->d, &m->base->model, f->fd, &err)) {
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
    for (size_t i = 0; i < s->nperms; i++) {
        perm_free(s->perms[i]);
        free(s->perms[i]);
    }
    free(s->perms);
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
 * them all and then has the library's resolver (wd_resolver) give each its
 * source: a base with its base_hash, or (a chain) the delta whose
 * result_hash it is, which is resolved first, recursively. */
typedef struct cand {
    char *path, *rel;
    char *mname;       /* its model's name in its directory */
    size_t dir;        /* its directory (scan.dirs) */
    struct stat st;    /* fstat of the file opened (or, reused, its lstat) */
    perm perm;         /* its real path (access.h) */
    model *old;        /* the previous snapshot's version, if unchanged (a ref) */
    wd_delta *d;       /* opened now (when there is no old one) */
    char *err;         /* cannot be opened (or known to fail unchanged) */
    unsigned tries;    /* failed tries in a row (temporary failures) */
    double retry_at;   /* a temporary failure: not tried again before then */
    model *m;          /* served: a ref (attached by the resolver) */
    char *reason;      /* why it is not served */
    int fail_stable;   /* the failure does not depend on other deltas */
} cand;

/* A directory of SRC met by the walk; dirs[0] is SRC itself. */
typedef struct sdir {
    char *rel, *name;
    size_t parent;
    struct stat st;
    perm *perm; /* who may list it; owned by the snapshot (snapshot.perms) */
    int node;   /* its node, -1 while none */
} sdir;

/* path -> index, open addressing (the previous snapshot's models and
 * unavailable deltas: a rescan looks each delta up once, not in a list) */
typedef struct pathmap {
    uint32_t *slot; /* index + 1, 0 = empty */
    size_t mask;
} pathmap;

typedef struct devino {
    dev_t dev;
    ino_t ino;
} devino;

/* A symlink to a directory, walked after the real ones (walk_links). */
typedef struct pending {
    char *path, *rel, *name;
    size_t dir;
    int depth;
} pending;

typedef struct scan {
    tree *t;
    snapshot *old, *s;
    size_t cap_models, cap_unav;
    cand *c;
    size_t nc, capc;
    sdir *dirs;
    size_t ndirs, capdirs;
    devino *seen; /* directories entered (open addressing, dev 0 ino 0 = empty) */
    size_t seen_mask;
    devino *anc;  /* SRC's ancestors */
    size_t nanc;
    dev_t src_dev;
    size_t nentries;
    pathmap old_models, old_unav;
    double now;
    pending *pending;
    size_t npending, cappending;
    char notes[8192]; /* what the walk skipped, one line each (logged once) */
    size_t notes_len;
    uint32_t *mnodes; /* node index of each delta's model directory */
    wd_resolver *res; /* which source each delta gets (build) */
    size_t nmnodes, capmnodes;
} scan;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void scan_note(scan *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void scan_note(scan *sc, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
    if (sc->notes_len + (size_t)n + 2 > sizeof sc->notes) return;
    memcpy(sc->notes + sc->notes_len, line, (size_t)n);
    sc->notes_len += (size_t)n;
    sc->notes[sc->notes_len++] = '\n';
    sc->notes[sc->notes_len] = 0;
}

static int pm_init(pathmap *pm, size_t n)
{
    size_t size = 16;
    while (size < n * 2) size *= 2;
    pm->slot = calloc(size, sizeof *pm->slot);
    pm->mask = size - 1;
    return pm->slot ? 0 : -1;
}

static void pm_put(pathmap *pm, const char *key, uint32_t idx)
{
    if (!pm->slot) return;
    size_t h = (size_t)wd_hash64(key, strlen(key), 0) & pm->mask;
    while (pm->slot[h]) h = (h + 1) & pm->mask;
    pm->slot[h] = idx + 1;
}

/* The index stored for key; keyof(ctx, i) gives index i's key. */
static long pm_get(const pathmap *pm, const char *key, const char *(*keyof)(const snapshot *, uint32_t),
                   const snapshot *ctx)
{
    if (!pm->slot) return -1;
    size_t h = (size_t)wd_hash64(key, strlen(key), 0) & pm->mask;
    for (; pm->slot[h]; h = (h + 1) & pm->mask)
        if (!strcmp(keyof(ctx, pm->slot[h] - 1), key)) return (long)pm->slot[h] - 1;
    return -1;
}

static const char *model_key(const snapshot *s, uint32_t i)
{
    return s->models[i]->delta_path;
}

static const char *unav_key(const snapshot *s, uint32_t i)
{
    return s->unav[i].delta;
}

/* 1 if the directory (dev, ino) was entered already in this scan; else
 * marks it entered and returns 0 (-1: out of memory) */
static int seen_before(scan *sc, const struct stat *st)
{
    if (!sc->seen || sc->ndirs * 2 > sc->seen_mask) {
        size_t size = sc->seen ? (sc->seen_mask + 1) * 2 : 256;
        devino *n = calloc(size, sizeof *n);
        if (!n) return -1;
        for (size_t i = 0; sc->seen && i <= sc->seen_mask; i++) {
            if (!sc->seen[i].dev && !sc->seen[i].ino) continue;
            size_t h = (size_t)((sc->seen[i].ino * 0x9E3779B97F4A7C15ull) ^ sc->seen[i].dev) & (size - 1);
            while (n[h].dev || n[h].ino) h = (h + 1) & (size - 1);
            n[h] = sc->seen[i];
        }
        free(sc->seen);
        sc->seen = n;
        sc->seen_mask = size - 1;
    }
    size_t h = (size_t)((st->st_ino * 0x9E3779B97F4A7C15ull) ^ st->st_dev) & sc->seen_mask;
    for (; sc->seen[h].dev || sc->seen[h].ino; h = (h + 1) & sc->seen_mask)
        if (sc->seen[h].dev == st->st_dev && sc->seen[h].ino == st->st_ino) return 1;
    sc->seen[h] = (devino){st->st_dev, st->st_ino};
    return 0;
}

static int is_ancestor(const scan *sc, const struct stat *st)
{
    for (size_t i = 0; i < sc->nanc; i++)
        if (sc->anc[i].dev == st->st_dev && sc->anc[i].ino == st->st_ino) return 1;
    return 0;
}

/* The directories above SRC (a symlink to one of them would take the walk
 * over everything under it). */
static void find_ancestors(scan *sc)
{
    const char *src = sc->t->src;
    size_t l = strlen(src);
    char *p = malloc(l + 2);
    if (!p) return;
    sc->anc = calloc(l + 2, sizeof *sc->anc);
    for (size_t i = 0; sc->anc && i < l; i++) {
        if (src[i] != '/') continue;
        memcpy(p, src, i ? i : 1);
        p[i ? i : 1] = 0;
        struct stat st;
        if (!stat(p, &st)) sc->anc[sc->nanc++] = (devino){st.st_dev, st.st_ino};
    }
    free(p);
}

static void snap_own_perm(snapshot *s, perm *p)
{
    perm **n = realloc(s->perms, (s->nperms + 1) * sizeof *n);
    if (!n) {
        perm_free(p);
        free(p);
        return;
    }
    s->perms = n;
    s->perms[s->nperms++] = p;
}

/* A failure that may go away by itself: retried later, not kept. */
static int temporary_failure(const char *reason)
{
    static const int temp[] = {EMFILE, ENFILE, ENOMEM, EAGAIN, ENOBUFS, EINTR};
    if (strstr(reason, "out of memory") || strstr(reason, "changed while")) return 1;
    for (size_t i = 0; i < sizeof temp / sizeof *temp; i++)
        if (strstr(reason, strerror(temp[i]))) return 1;
    return 0;
}

/* The previous snapshot's model of path, when it is still the same file
 * with the same permission path. */
static model *reuse(scan *sc, const char *path, const struct stat *st, const perm *p)
{
    if (!sc->old) return NULL;
    long i = pm_get(&sc->old_models, path, model_key, sc->old);
    if (i < 0) return NULL;
    model *m = sc->old->models[i];
    if (m->st.st_dev == st->st_dev && m->st.st_ino == st->st_ino && m->st.st_size == st->st_size &&
        m->st.st_mtim.tv_sec == st->st_mtim.tv_sec && m->st.st_mtim.tv_nsec == st->st_mtim.tv_nsec &&
        m->st.st_mode == st->st_mode && m->st.st_uid == st->st_uid && m->st.st_gid == st->st_gid &&
        perm_equal(&m->perm, p)) {
        /* (a chmod/chown, of it or of a directory on its way, opens it
         * again: the model shows new owner/mode) */
        model_ref(sc->t, m);
        return m;
    }
    return NULL;
}

static void note_unavailable(scan *sc, const char *path, const char *reason, const struct stat *st, const cand *c,
                             const perm *dir)
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
    u->dir = dir;
    if (!u->delta || !u->reason) {
        free(u->delta);
        free(u->reason);
        return;
    }
    if (st) {
        u->st = *st;
        u->has_st = 1;
    }
    if (st && temporary_failure(reason)) {
        /* tried again after 1, 2, 4... scan intervals (at most RETRY_MAX s) */
        u->temporary = 1;
        u->tries = c ? c->tries : 0;
        if (c && c->retry_at > sc->now) {
            u->retry_at = c->retry_at; /* not tried in this scan: the wait goes on */
        } else {
            double delay = (double)(sc->t->scan_interval ? sc->t->scan_interval : 1);
            for (unsigned k = 0; k < u->tries && delay < RETRY_MAX; k++) delay *= 2;
            u->retry_at = sc->now + (delay < RETRY_MAX ? delay : RETRY_MAX) - 0.5;
            u->tries++;
        }
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
 * the bases) is not opened again on every rescan: its old reason stands.
 * A temporary failure stands until its retry time, then is tried again. */
static const char *known_failure(scan *sc, cand *c)
{
    if (!sc->old) return NULL;
    long i = pm_get(&sc->old_unav, c->path, unav_key, sc->old);
    if (i < 0) return NULL;
    const unavailable *u = &sc->old->unav[i];
    pthread_mutex_lock(&sc->t->snap_lock);
    uint64_t gen = sc->t->base_gen;
    pthread_mutex_unlock(&sc->t->snap_lock);
    if (!u->has_st || !same_identity(&u->st, &c->st)) return NULL;
    if (u->temporary) {
        c->tries = u->tries;
        c->retry_at = u->retry_at;
        return sc->now < u->retry_at ? u->reason : NULL;
    }
    return u->base_gen == gen ? u->reason : NULL;
}

/* Unavailable deltas are logged once per version, not on every rescan. */
static int was_unavailable(scan *sc, const char *path, const char *reason)
{
    if (!sc->old) return 0;
    long i = pm_get(&sc->old_unav, path, unav_key, sc->old);
    return i >= 0 && !strcmp(sc->old->unav[i].reason, reason);
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

/* ---- the walk ----------------------------------------------------------- */
/* A .wdelta: open it (unless unchanged since the last scan), from what is
 * opened take its identity and permission path.  A symlink is followed and
 * its target's real path checked (access.h); a plain file is opened with
 * O_NOFOLLOW, inside the directory descriptor the walk holds. */
static void add_cand(scan *sc, int dfd, const char *name, const char *path, const char *rel, const char *mname,
                     size_t dir, const struct stat *lst)
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
    c->mname = strdup(mname);
    c->dir = dir;
    c->st = *lst;
    if (!c->path || !c->rel || !c->mname) {
        free(c->path);
        free(c->rel);
        free(c->mname);
        return;
    }
    sc->nc++;
    int is_link = S_ISLNK(lst->st_mode);
    const perm *dperm = sc->dirs[dir].perm;
    char why[1400], sub[600];
    int fd = -1;
    if (!is_link && !perm_extend(dperm, lst, PERM_R, &c->perm)) c->old = reuse(sc, path, lst, &c->perm);
    const char *known = c->old ? NULL : known_failure(sc, c);
    if (c->old || known) goto opened;
    perm_free(&c->perm);
    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (is_link ? 0 : O_NOFOLLOW));
    if (fd < 0 || fstat(fd, &c->st)) {
        snprintf(why, sizeof why, "%.1000s: %s", path, strerror(errno));
        c->err = strdup(why);
        goto opened;
    }
    if (!S_ISREG(c->st.st_mode)) {
        snprintf(why, sizeof why, "%.1000s: not a regular file", path);
        c->err = strdup(why);
        goto opened;
    }
    int prc = is_link ? perm_of_fd(fd, PERM_R, &c->perm, sub, sizeof sub) : perm_extend(dperm, &c->st, PERM_R, &c->perm);
    if (prc) {
        if (!is_link) snprintf(sub, sizeof sub, "out of memory");
        snprintf(why, sizeof why, "%.700s: %s", path, sub);
        c->err = strdup(why);
        goto opened;
    }
    if ((c->old = reuse(sc, path, &c->st, &c->perm))) goto opened;
    wd_err err;
    if (open_counted(sc->t, fd, path, &c->d, &err)) {
        c->err = strdup(err.msg);
        c->d = NULL;
    }
opened:
    if (fd >= 0) close(fd);
    if (known) c->err = strdup(known);
    if (c->err) {
        c->reason = strdup(c->err);
        c->fail_stable = 1;
    }
}

static long add_dir(scan *sc, const char *rel, const char *name, size_t parent, const struct stat *st, perm *p)
{
    if (sc->ndirs == sc->capdirs) {
        size_t nc = sc->capdirs ? sc->capdirs * 2 : 16;
        sdir *n = realloc(sc->dirs, nc * sizeof *n);
        if (!n) return -1;
        sc->dirs = n;
        sc->capdirs = nc;
    }
    sdir *d = &sc->dirs[sc->ndirs];
    memset(d, 0, sizeof *d);
    d->rel = strdup(rel);
    d->name = strdup(name);
    d->parent = parent;
    d->st = *st;
    d->node = -1;
    d->perm = malloc(sizeof *d->perm);
    if (!d->rel || !d->name || !d->perm) {
        free(d->rel);
        free(d->name);
        free(d->perm);
        return -1;
    }
    *d->perm = *p; /* taken over */
    p->s = NULL;
    p->n = 0;
    snap_own_perm(sc->s, d->perm);
    return (long)sc->ndirs++;
}

static void walk(scan *sc, int dfd, const char *path, const char *rel, size_t di, int depth);

/* Walk the directory cfd (closed here), met as `name` in sc->dirs[di], unless
 * it is on another filesystem, above SRC or walked already. */
static void enter_dir(scan *sc, int cfd, const char *path, const char *rel, const char *name, size_t di, int depth,
                      int is_link)
{
    struct stat st;
    perm p = {0, NULL};
    char why[600];
    if (fstat(cfd, &st))
        scan_note(sc, "cannot read %s: %s", path, strerror(errno));
    else if (st.st_dev != sc->src_dev && !sc->t->cross_fs)
        scan_note(sc, "%s is on another filesystem than the source; not walked (-o cross_fs walks it)", path);
    else if (is_ancestor(sc, &st))
        scan_note(sc, "%s leads to a directory above the source; not walked", path);
    else if (seen_before(sc, &st))
        scan_note(sc, "%s leads to a directory walked already (a symlink loop or a second link); not walked", path);
    else if (is_link ? perm_of_fd(cfd, PERM_R | PERM_X, &p, why, sizeof why)
                     : perm_extend(sc->dirs[di].perm, &st, PERM_R | PERM_X, &p))
        scan_note(sc, "%s: %s; not walked", path, is_link ? why : "out of memory");
    else {
        long ci = add_dir(sc, rel, name, di, &st, &p);
        if (ci >= 0) walk(sc, cfd, path, rel, (size_t)ci, depth + 1);
    }
    perm_free(&p);
    close(cfd);
}

/* A symlink to a directory is walked after every real directory of SRC, so
 * that a directory reached both ways shows at its real place. */
static void add_pending(scan *sc, const char *path, const char *rel, const char *name, size_t di, int depth)
{
    if (sc->npending == sc->cappending) {
        size_t nc = sc->cappending ? sc->cappending * 2 : 8;
        pending *n = realloc(sc->pending, nc * sizeof *n);
        if (!n) return;
        sc->pending = n;
        sc->cappending = nc;
    }
    pending *q = &sc->pending[sc->npending];
    q->path = strdup(path);
    q->rel = strdup(rel);
    q->name = strdup(name);
    q->dir = di;
    q->depth = depth;
    if (!q->path || !q->rel || !q->name) {
        free(q->path);
        free(q->rel);
        free(q->name);
        return;
    }
    sc->npending++;
}

static void walk_links(scan *sc)
{
    for (size_t i = 0; i < sc->npending; i++) { /* walking one may add more */
        pending q = sc->pending[i];
        if (sc->ndirs >= MAX_DIRS) {
            scan_note(sc, "%s: more than %d directories under the source; the rest is not walked", q.path, MAX_DIRS);
            continue;
        }
        int cfd = open(q.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cfd < 0) scan_note(sc, "cannot read %s: %s", q.path, strerror(errno));
        else enter_dir(sc, cfd, q.path, q.rel, q.name, q.dir, q.depth, 1);
    }
}

/* List the directory dfd (SRC/path, `rel` under the mount, sc->dirs[di])
 * into sc: its .wdelta files as candidates, its subdirectories walked. */
static void walk(scan *sc, int dfd, const char *path, const char *rel, size_t di, int depth)
{
    int lfd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
    if (!d) {
        scan_note(sc, "cannot read %s: %s", path, strerror(errno));
        if (lfd >= 0) close(lfd);
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue; /* hidden, temporary, . and .. */
        if (sc->nentries >= MAX_ENTRIES) {
            scan_note(sc, "%s: more than %d names under the source; the rest is not served", path, MAX_ENTRIES);
            break;
        }
        sc->nentries++;
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
        struct stat lst, st;
        if (fstatat(dfd, names[i], &lst, AT_SYMLINK_NOFOLLOW)) continue;
        int is_link = S_ISLNK(lst.st_mode);
        st = lst;
        if (is_link && fstatat(dfd, names[i], &st, 0)) continue; /* dangling */
        size_t nl = strlen(names[i]);
        if (S_ISDIR(st.st_mode)) {
            if (!wd_safe_name(names[i])) continue;
            if (depth >= MAX_DEPTH) {
                scan_note(sc, "%s: more than %d directories deep; not walked", child, MAX_DEPTH);
                continue;
            }
            if (sc->ndirs >= MAX_DIRS) {
                scan_note(sc, "%s: more than %d directories under the source; the rest is not walked", child, MAX_DIRS);
                continue;
            }
            if (snprintf(crel, sizeof crel, "%s%s%s", rel, *rel ? "/" : "", names[i]) >= (int)sizeof crel) continue;
            if (is_link) { /* after every real directory: see walk_links */
                add_pending(sc, child, crel, names[i], di, depth);
                continue;
            }
            int cfd = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
            if (cfd < 0) {
                scan_note(sc, "cannot read %s: %s", child, strerror(errno));
                continue;
            }
            enter_dir(sc, cfd, child, crel, names[i], di, depth, 0);
        } else if (S_ISREG(st.st_mode) && nl > 7 && !strcmp(names[i] + nl - 7, ".wdelta")) {
            char mname[256];
            snprintf(mname, sizeof mname, "%.*s", (int)(nl - 7), names[i]);
            if (snprintf(crel, sizeof crel, "%s%s%s", rel, *rel ? "/" : "", mname) >= (int)sizeof crel) continue;
            add_cand(sc, dfd, names[i], child, crel, mname, di, &lst);
        }
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
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
    model *m = open_model(sc->t, c->path, c->rel, &c->st, &c->perm, d, b, pm, reason);
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

/* ---- the library's chain resolver (wd_resolver) over the scan: the
 * candidates are the deltas found, the bases those given with -o base=DIR
 * (ready once hashed in the background); attaching opens the model */
static const wd_delta *res_delta(void *ctx, size_t i)
{
    const cand *c = &((scan *)ctx)->c[i];
    if (c->err) return NULL;
    return c->old ? c->old->d : c->d ? c->d : c->m ? c->m->d : NULL;
}

static int res_base(void *ctx, size_t j, unsigned kind, const char **dir, unsigned char hash[32], wd_err *err)
{
    tree *t = ((scan *)ctx)->t;
    (void)err;
    pthread_mutex_lock(&t->snap_lock);
    base_state st = t->bases[j].state;
    pthread_mutex_unlock(&t->snap_lock);
    if (st == BASE_PENDING || st == BASE_HASHING) return WD_BASE_WAITING;
    if (st != BASE_READY) return WD_BASE_NONE;
    *dir = t->bases[j].dir;
    memcpy(hash, kind == WD_ID_V2 ? t->bases[j].id : t->bases[j].hash, 32);
    return WD_BASE_READY;
}

static int res_attach(scan *sc, size_t i, base_ent *b, model *pm, wd_err *err)
{
    cand *c = &sc->c[i];
    char *reason = NULL;
    model *m = attach(sc, c, b, pm, &reason);
    if (!m) {
        wd_errf(err, "%s", reason ? reason : "out of memory");
        free(reason);
        if (b) c->fail_stable = 1; /* the base does not change with other deltas */
        return -1;
    }
    c->m = m;
    return 0;
}

static int res_attach_base(void *ctx, size_t i, size_t j, wd_err *err)
{
    scan *sc = ctx;
    return res_attach(sc, i, &sc->t->bases[j], NULL, err);
}

static int res_attach_parent(void *ctx, size_t i, size_t k, wd_err *err)
{
    scan *sc = ctx;
    return res_attach(sc, i, NULL, sc->c[k].m, err);
}

static void res_log(void *ctx, const char *line)
{
    ((scan *)ctx)->t->log(LOG_WARNING, "%s", line);
}

static const wd_resolver_ops res_ops = {res_delta, res_base, res_attach_base, res_attach_parent, res_log};

/* The model of c, served with its source, or NULL (c->reason says why). */
static model *resolve(scan *sc, cand *c)
{
    if (c->m) return c->m;
    if (c->err) return NULL; /* did not open: c->reason */
    wd_err err;
    if (!sc->res || wd_resolver_resolve(sc->res, (size_t)(c - sc->c), &err)) {
        free(c->reason);
        c->reason = strdup(sc->res ? err.msg : "out of memory");
        return NULL;
    }
    return c->m;
}

static void free_cands(scan *sc)
{
    for (size_t i = 0; i < sc->nc; i++) {
        cand *c = &sc->c[i];
        model_unref(sc->t, c->old);
        model_unref(sc->t, c->m);
        close_counted(sc->t, c->d);
        perm_free(&c->perm);
        free(c->path);
        free(c->rel);
        free(c->mname);
        free(c->err);
        free(c->reason);
    }
    free(sc->c);
    free(sc->mnodes);
    for (size_t i = 0; i < sc->ndirs; i++) {
        free(sc->dirs[i].rel);
        free(sc->dirs[i].name);
    }
    free(sc->dirs);
    for (size_t i = 0; i < sc->npending; i++) {
        free(sc->pending[i].path);
        free(sc->pending[i].rel);
        free(sc->pending[i].name);
    }
    free(sc->pending);
    free(sc->seen);
    free(sc->anc);
    free(sc->old_models.slot);
    free(sc->old_unav.slot);
}

/* Lineage, outside the model directories (a link inside one would make
 * `du -L`, `cp -rL` or an upload tool that follows links take in the whole
 * parent and base): /.wdeltafs/lineage/REL is a relative symlink to the
 * directory of REL's parent model, or of its base under /.wdeltafs/bases;
 * the directories above it mirror the mount's.  Models come in scan order,
 * so the last directory made is remembered and found again cheaply. */
static void add_lineage(scan *sc, uint32_t root, uint32_t meta)
{
    snapshot *s = sc->s;
    int li = snap_add(s, INO_LINEAGE, N_DIR, "lineage", INO_META, NULL, -1);
    if (li < 0 || add_child(s, meta, (uint32_t)li)) return;
    char last[4096] = "";
    uint32_t last_di = (uint32_t)li;
    for (size_t i = 0; i < sc->nmnodes; i++) {
        model *m = s->nodes[sc->mnodes[i]].m;
        const char *to = m->parent ? m->parent->rel : m->base && m->base->bm ? m->base->bm->rel : NULL;
        const char *slash = strrchr(m->rel, '/');
        size_t dl = slash ? (size_t)(slash - m->rel) : 0;
        if (!to || dl >= sizeof last) continue;
        uint32_t di = (uint32_t)li;
        if (dl && strlen(last) == dl && !strncmp(last, m->rel, dl)) {
            di = last_di;
        } else if (dl) { /* each directory of rel, made if not there yet */
            char prefix[4096];
            int bad = 0;
            long real = (long)root; /* the directory of the mount it mirrors */
            for (size_t k = 0; k <= dl && !bad; k++) {
                if (k < dl && m->rel[k] != '/') continue;
                memcpy(prefix, m->rel, k);
                prefix[k] = 0;
                const char *comp = strrchr(prefix, '/');
                comp = comp ? comp + 1 : prefix;
                node *rn = real >= 0 ? snap_child(s, &s->nodes[real], comp) : NULL;
                real = rn && rn->kind == N_DIR ? (long)(rn - s->nodes) : -1;
                node *c = snap_child(s, &s->nodes[di], comp);
                if (c && c->kind == N_DIR) {
                    di = (uint32_t)(c - s->nodes);
                    continue;
                }
                /* no mirror of a directory the mount does not show */
                int ni = c || real < 0 ? -1 : snap_add(s, ino_of("ld", prefix, NULL), N_DIR, comp, s->nodes[di].ino, NULL, -1);
                if (ni < 0 || add_child(s, di, (uint32_t)ni)) {
                    bad = 1;
                } else {
                    /* it lists the names of the directory it mirrors: the
                     * same owner, mode and readers (a private directory's
                     * models stay unlisted to others) */
                    s->nodes[ni].uid = s->nodes[real].uid;
                    s->nodes[ni].gid = s->nodes[real].gid;
                    s->nodes[ni].mode = s->nodes[real].mode;
                    s->nodes[ni].perm = s->nodes[real].perm;
                    di = (uint32_t)ni;
                }
            }
            if (bad) continue;
            memcpy(last, m->rel, dl);
            last[dl] = 0;
            last_di = di;
        }
        /* from .wdeltafs/lineage/REL's directory up to the root: one ../
         * for .wdeltafs, one for lineage, one per directory of REL */
        char target[8192];
        size_t l = (size_t)snprintf(target, sizeof target, "../../");
        for (const char *p = m->rel; *p && l + 4 < sizeof target; p++)
            if (*p == '/') l += (size_t)snprintf(target + l, sizeof target - l, "../");
        if (snprintf(target + l, sizeof target - l, "%s", to) >= (int)(sizeof target - l)) continue;
        const char *name = slash ? slash + 1 : m->rel;
        if (snap_child(s, &s->nodes[di], name)) continue;
        int ki = snap_add(s, ino_of("L", m->rel, target), N_LINK, name, s->nodes[di].ino, m, -1);
        if (ki < 0) continue;
        if (!(s->nodes[ki].link = strdup(target)) || add_child(s, di, (uint32_t)ki)) {
            free(s->nodes[ki].link);
            s->nodes[ki].link = NULL;
        }
    }
}

/* Times of what is not a file of SRC: a directory keeps the time of the
 * previous snapshot while it lists the same entries, and takes the time of
 * this scan when one appeared or vanished (the first scan: the mount's
 * time); the status file has the newest of them. */
static uint64_t listing_sum(const snapshot *s, const node *n)
{
    /* order-independent: a sum of mixed inode numbers (which name the
     * entries: they are hashes of their paths) */
    uint64_t sum = 0;
    for (size_t i = 0; i < n->nchild; i++) {
        uint64_t x = s->nodes[n->child[i]].ino * 0x9E3779B97F4A7C15ull;
        x ^= x >> 29;
        sum += x * 0xBF58476D1CE4E5B9ull;
    }
    return sum;
}

static int same_listing(const snapshot *old, const snapshot *s, const node *n, const node *o)
{
    return o->nchild == n->nchild && listing_sum(old, o) == listing_sum(s, n);
}

static struct timespec later(struct timespec a, struct timespec b)
{
    return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec) ? a : b;
}

static void stamp_times(tree *t, snapshot *old, snapshot *s)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!t->mounted.tv_sec) t->mounted = now;
    node *status = NULL;
    struct timespec newest = t->mounted;
    for (size_t i = 0; i < s->nnodes; i++) {
        node *n = &s->nodes[i];
        if (n->kind == N_STATUS) status = n;
        if (n->kind != N_DIR && n->kind != N_META) continue;
        const node *o = old ? snap_node(old, n->ino) : NULL;
        n->mtime = !old ? t->mounted : o && same_listing(old, s, n, o) ? o->mtime : now;
        newest = later(newest, n->mtime);
    }
    if (status) { /* the list of unavailable deltas is in it too */
        const node *o = old ? snap_node(old, INO_STATUS) : NULL;
        status->mtime = !o ? newest : old->nunav != s->nunav ? now : later(o->mtime, newest);
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

/* A directory NAME/ of SRC and a model file NAME.wdelta beside it claim
 * the same name in the mount.  The one the mount showed under it before
 * keeps it (a newcomer never takes a served model down); when neither was
 * shown (at mount time), the model file does.  Returns the directory's
 * index in sc->dirs when it keeps the name, else -1. */
static long dir_kept_name(scan *sc, const cand *c)
{
    if (!sc->old) return -1;
    node *o = snap_node(sc->old, ino_of("d", c->rel, NULL));
    if (!o || o->kind != N_DIR) return -1;
    node *po = snap_node(sc->old, o->parent);
    if (!po || snap_child(sc->old, po, c->mname) != o) return -1; /* it was not shown */
    for (size_t i = 1; i < sc->ndirs; i++) /* rare: only where a directory had the name */
        if (sc->dirs[i].parent == c->dir && !strcmp(sc->dirs[i].name, c->mname)) return (long)i;
    return -1;
}

/* The snapshot's nodes from what the walk found: a node per directory (shown
 * only when it holds a model), a model per served delta. */
static void build(scan *sc, uint32_t root)
{
    snapshot *s = sc->s;
    sc->dirs[0].node = (int)root;
    s->nodes[root].uid = sc->dirs[0].st.st_uid;
    s->nodes[root].gid = sc->dirs[0].st.st_gid;
    s->nodes[root].mode = sc->dirs[0].st.st_mode;
    s->nodes[root].perm = sc->dirs[0].perm;
    for (size_t i = 1; i < sc->ndirs; i++) { /* parents come first */
        sdir *d = &sc->dirs[i];
        int pn = sc->dirs[d->parent].node;
        if (pn < 0) continue;
        int di = snap_add(s, ino_of("d", d->rel, NULL), N_DIR, d->name, s->nodes[pn].ino, NULL, -1);
        if (di < 0) continue;
        s->nodes[di].uid = d->st.st_uid;
        s->nodes[di].gid = d->st.st_gid;
        s->nodes[di].mode = d->st.st_mode;
        s->nodes[di].perm = d->perm;
        d->node = di;
    }
    wd_err rerr;
    if (wd_resolver_new(&res_ops, sc, sc->nc, sc->t->nbases, WD_RESOLVE_MOUNT, NULL, &sc->res, &rerr)) sc->res = NULL;
    for (size_t i = 0; i < sc->nc; i++) {
        cand *c = &sc->c[i];
        int dn = sc->dirs[c->dir].node;
        const perm *dp = sc->dirs[c->dir].perm;
        if (dn < 0) continue;
        if (!wd_safe_name(c->mname)) {
            note_unavailable(sc, c->path, "its name is not a safe name for the mount (control characters or invalid UTF-8)",
                             NULL, NULL, dp);
            continue;
        }
        long sib = dir_kept_name(sc, c);
        if (sib >= 0) {
            char why[9000];
            (void)!snprintf(why, sizeof why,
                     "its name %s clashes with the directory %s/%s/, which the mount already shows under that name "
                     "(the entry that had the name first keeps it); rename one of them",
                     c->rel, sc->t->src, sc->dirs[sib].rel);
            if (!was_unavailable(sc, c->path, why)) sc->t->log(LOG_WARNING, "not serving %s: %s", c->path, why);
            note_unavailable(sc, c->path, why, NULL, NULL, dp);
            continue;
        }
        model *m = resolve(sc, c);
        if (!m) {
            const char *r = c->reason ? c->reason : "out of memory";
            if (!was_unavailable(sc, c->path, r)) sc->t->log(LOG_WARNING, "not serving %s: %s", c->path, r);
            note_unavailable(sc, c->path, r, c->fail_stable || temporary_failure(r) ? &c->st : NULL, c, dp);
            continue;
        }
        model_ref(sc->t, m);
        if (add_model_nodes(sc, (uint32_t)dn, c->mname, m)) model_unref(sc->t, m);
    }
    wd_resolver_free(sc->res);
    sc->res = NULL;
    /* directories without any model are not shown; a model of the same name
     * (NAME.wdelta next to NAME/) served now keeps the name (dir_kept_name
     * gave way to the directory where the directory had it first) */
    for (size_t i = sc->ndirs; i-- > 1;) {
        sdir *d = &sc->dirs[i];
        int pn = sc->dirs[d->parent].node;
        if (d->node < 0 || pn < 0 || !s->nodes[d->node].nchild) continue;
        node *clash = snap_child(s, &s->nodes[pn], d->name);
        if (clash) {
            char what[4200], why[9000];
            (void)!snprintf(what, sizeof what, "%s/%s/", sc->t->src, d->rel);
            (void)!snprintf(why, sizeof why,
                     "directory not shown: its name %s clashes with the model file %s, which the mount serves "
                     "as %s (the entry that had the name first keeps it; at mount time the model file does); "
                     "rename one of them",
                     d->rel, clash->m && clash->m->delta_path ? clash->m->delta_path : d->rel, d->rel);
            if (!was_unavailable(sc, what, why)) sc->t->log(LOG_WARNING, "not serving %s: %s", what, why);
            note_unavailable(sc, what, why, NULL, NULL, sc->dirs[d->parent].perm);
            continue;
        }
        add_child(s, (uint32_t)pn, (uint32_t)d->node);
    }
}

/* Names under `parent` whose node differs between old and new snapshots. */
static void report_changes(snapshot *old, snapshot *s, void (*changed)(void *, uint64_t, const char *), void *ctx)
{
    if (!old || !changed) return;
    for (size_t i = 0; i < old->nnodes; i++) {
        node *o = &old->nodes[i];
        if (o->kind == N_META || o->kind == N_STATUS || o->ino == INO_ROOT) continue;
        node *n = snap_node(s, o->ino);
        if (!n || (o->kind == N_MODEL && n->m != o->m) ||
            (o->kind == N_DIR && (n->uid != o->uid || n->gid != o->gid || n->mode != o->mode)))
            changed(ctx, o->parent, o->name);
    }
    for (size_t i = 0; i < s->nnodes; i++) {
        node *n = &s->nodes[i];
        if (n->ino != INO_ROOT && n->kind != N_META && n->kind != N_STATUS && !snap_node(old, n->ino))
            changed(ctx, n->parent, n->name);
    }
}

/* Log what the walk skipped, each line once (not again on every rescan
 * while it stays the same). */
static void log_notes(scan *sc)
{
    tree *t = sc->t;
    char *p = sc->notes;
    while (*p) {
        char *nl = strchr(p, '\n');
        *nl = 0;
        int seen = 0;
        if (t->scan_note) {
            size_t l = strlen(p);
            for (const char *q = t->scan_note; (q = strstr(q, p)); q++)
                if ((q == t->scan_note || q[-1] == '\n') && q[l] == '\n') {
                    seen = 1;
                    break;
                }
        }
        if (!seen) t->log(LOG_WARNING, "%s", p);
        *nl = '\n';
        p = nl + 1;
    }
    free(t->scan_note);
    t->scan_note = strdup(sc->notes);
}

void tree_rescan(tree *t, void (*changed)(void *, uint64_t, const char *), void *ctx)
{
    scan sc;
    memset(&sc, 0, sizeof sc);
    sc.t = t;
    sc.now = mono_now();
    refresh_bases(t);
    pthread_mutex_lock(&t->snap_lock);
    sc.old = t->cur;
    if (sc.old) sc.old->refs++;
    pthread_mutex_unlock(&t->snap_lock);
    if (sc.old && (pm_init(&sc.old_models, sc.old->nmodels) || pm_init(&sc.old_unav, sc.old->nunav))) goto out;
    for (size_t i = 0; sc.old && i < sc.old->nmodels; i++) pm_put(&sc.old_models, sc.old->models[i]->delta_path, (uint32_t)i);
    for (size_t i = 0; sc.old && i < sc.old->nunav; i++) pm_put(&sc.old_unav, sc.old->unav[i].delta, (uint32_t)i);
    sc.s = calloc(1, sizeof *sc.s);
    if (!sc.s) goto out;
    sc.s->refs = 1;
    int root = snap_add(sc.s, INO_ROOT, N_DIR, "", INO_ROOT, NULL, -1);
    int meta = snap_add(sc.s, INO_META, N_META, ".wdeltafs", INO_ROOT, NULL, -1);
    int st = snap_add(sc.s, INO_STATUS, N_STATUS, "status", INO_META, NULL, -1);
    if (root < 0 || meta < 0 || st < 0 || add_child(sc.s, (uint32_t)root, (uint32_t)meta) ||
        add_child(sc.s, (uint32_t)meta, (uint32_t)st)) {
        snap_free(t, sc.s);
        goto out;
    }
    /* SRC itself: when it cannot be read now (EMFILE...), the last snapshot
     * stays (a first scan publishes an empty tree) */
    char why[600];
    struct stat sst;
    perm sp = {0, NULL};
    int sfd = open(t->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0 || fstat(sfd, &sst) || perm_of_fd(sfd, PERM_R | PERM_X, &sp, why, sizeof why) ||
        add_dir(&sc, "", "", 0, &sst, &sp) < 0) {
        if (sfd < 0) snprintf(why, sizeof why, "%s", strerror(errno));
        scan_note(&sc, "cannot read the source %s: %s", t->src, why);
        perm_free(&sp);
        if (sfd >= 0) close(sfd);
        log_notes(&sc);
        if (sc.old) {
            snap_free(t, sc.s);
            goto out;
        }
    } else {
        sc.src_dev = sst.st_dev;
        find_ancestors(&sc);
        seen_before(&sc, &sst);
        walk(&sc, sfd, t->src, "", 0, 0);
        close(sfd);
        walk_links(&sc);
        build(&sc, (uint32_t)root);
        log_notes(&sc);
    }
    add_base_dirs(&sc, (uint32_t)meta);
    add_lineage(&sc, (uint32_t)root, (uint32_t)meta);
    if (build_index(sc.s)) {
        snap_free(t, sc.s);
        goto out;
    }
    stamp_times(t, sc.old, sc.s);
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
    free_cands(&sc);
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

/* Add key: text, valid UTF-8 whatever the file names hold: a byte that is
 * not part of a valid UTF-8 sequence is written as the four characters \xNN. */
static void add_str(cJSON *o, const char *key, const char *text)
{
    size_t n = strlen(text), k = 0;
    char *out = malloc(n * 4 + 1);
    if (!out) return;
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        int ok = len > 0 && i + len <= n;
        for (size_t j = 1; ok && j < len; j++) ok = (p[i + j] & 0xC0) == 0x80;
        if (ok && len > 1) { /* no overlong forms, surrogates or values past U+10FFFF */
            uint32_t v = len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
            for (size_t j = 1; j < len; j++) v = (v << 6) | (p[i + j] & 0x3F);
            ok = v >= (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u) && v <= 0x10FFFF && (v < 0xD800 || v > 0xDFFF);
        }
        if (ok) {
            memcpy(out + k, p + i, len);
            k += len;
            i += len;
        } else {
            k += (size_t)snprintf(out + k, 5, "\\x%02x", c);
            i++;
        }
    }
    out[k] = 0;
    cJSON_AddStringToObject(o, key, out);
    free(out);
}

static cJSON *forest_children(tree *t, snapshot *s, base_ent *b, model *parent, int depth, const cred *cr)
{
    cJSON *a = cJSON_CreateArray();
    if (depth > 64) return a;
    for (size_t i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        if (m->parent != parent || (!parent && m->base != b) || !tree_model_allows(t, m, cr)) continue;
        cJSON *o = cJSON_CreateObject();
        add_str(o, "model", m->rel);
        add_str(o, "delta", m->delta_path);
        cJSON_AddItemToObject(o, "children", forest_children(t, s, b, m, depth + 1, cr));
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

char *tree_status_json(tree *t, int open_files, const cred *cr)
{
    snapshot *s = tree_snapshot(t);
    cJSON *root = cJSON_CreateObject();
    char hex[65];
    add_str(root, "source", t->src);
    cJSON *ms = cJSON_AddArrayToObject(root, "models");
    size_t nserved = 0, nunav = 0;
    for (size_t i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        if (!tree_model_allows(t, m, cr)) continue; /* each reader sees what they may read */
        nserved++;
        const wd_delta_info *in = wd_delta_get_info(m->d);
        cJSON *o = cJSON_CreateObject();
        add_str(o, "name", m->rel);
        add_str(o, "delta", m->delta_path);
        add_str(o, "base", m->base->dir);
        if (m->parent) add_str(o, "parent", m->parent->rel);
        else add_str(o, "parent", m->base->bm ? m->base->bm->rel : m->base->dir);
        int depth = 1;
        for (model *p = m->parent; p; p = p->parent) depth++;
        cJSON_AddNumberToObject(o, "chain_length", depth);
        cJSON_AddNumberToObject(o, "format_version", in->version);
        add_str(o, "strategy", in->strategy);
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
        if (cr && !tree_base_allows(&t->bases[i], cr)) continue;
        cJSON *o = cJSON_CreateObject();
        add_str(o, "base", t->bases[i].dir);
        if (t->bases[i].bm) add_str(o, "dir", t->bases[i].bm->rel);
        cJSON_AddItemToObject(o, "children", forest_children(t, s, &t->bases[i], NULL, 0, cr));
        cJSON_AddItemToArray(forest, o);
    }
    cJSON *un = cJSON_AddArrayToObject(root, "unavailable");
    for (size_t i = 0; i < s->nunav; i++) {
        /* shown to whoever may list the directory that holds it */
        if (cr && (!s->unav[i].dir || !perm_allows(s->unav[i].dir, cr))) continue;
        nunav++;
        cJSON *o = cJSON_CreateObject();
        add_str(o, "delta", s->unav[i].delta);
        add_str(o, "reason", s->unav[i].reason);
        cJSON_AddItemToArray(un, o);
    }
    cJSON *bs = cJSON_AddArrayToObject(root, "bases");
    pthread_mutex_lock(&t->snap_lock);
    for (size_t i = 0; i < t->nbases; i++) {
        if (cr && !tree_base_allows(&t->bases[i], cr)) continue;
        cJSON *o = cJSON_CreateObject();
        add_str(o, "dir", t->bases[i].dir);
        cJSON_AddStringToObject(o, "state", state_name(t->bases[i].state));
        if (t->bases[i].state == BASE_READY) {
            wd_hex(t->bases[i].id, 32, hex);
            cJSON_AddStringToObject(o, "hash", hex);
            wd_hex(t->bases[i].hash, 32, hex);
            cJSON_AddStringToObject(o, "hash_v1", hex);
        }
        if (t->bases[i].state == BASE_FAILED) add_str(o, "error", t->bases[i].error);
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
    cJSON_AddNumberToObject(root, "models_served", (double)nserved);
    cJSON_AddNumberToObject(root, "models_unavailable", (double)nunav);
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
        fds_unref(t->bases[i].fds);
        perm_free(&t->bases[i].perm);
        pthread_mutex_destroy(&t->bases[i].perm_lock);
        if (t->bases[i].opened) wd_model_free(&t->bases[i].model);
        free(t->bases[i].dir);
        free(t->bases[i].name);
    }
    free(t->bases);
    free(t->scan_note);
}
