/* main.c - wdeltafs: the FUSE daemon.  Options, the low-level FUSE
 * operations (each a thin translation to tree.c and the core's wd_read),
 * the rescan thread, read-ahead workers and logging.
 *
 *   wdeltafs SRC MOUNTPOINT [-f] [-d] [-o base=DIR[:DIR...],cache_size=1G,...]
 */
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include "tree.h"

#define MAX_PREFETCH_THREADS 16
#define SEQ_WINDOW (2u << 20) /* a read this close to the last one is sequential */
#define TIMEOUT 1.0 /* seconds the kernel may cache entries and attributes */

/* ---- options ----------------------------------------------------------- */
typedef struct options {
    char *base, *cache_size, *cache_dir, *scan_interval, *readahead, *v1_dtype, *ra_threads;
    int help, version, bad, cross_fs;
} options;

enum { KEY_BASE = 1, KEY_MOUNT8 };
#define OPT(t, p) {t, offsetof(options, p), 1}
static const struct fuse_opt opt_spec[] = {
    FUSE_OPT_KEY("base=", KEY_BASE),
    OPT("cache_size=%s", cache_size),
    OPT("cache_dir=%s", cache_dir),
    OPT("scan_interval=%s", scan_interval),
    OPT("readahead=%s", readahead),
    OPT("v1_dtype=%s", v1_dtype),
    OPT("readahead_threads=%s", ra_threads),
    OPT("cross_fs", cross_fs),
    OPT("-h", help),
    OPT("--help", help),
    OPT("-V", version),
    OPT("--version", version),
    /* what mount(8) and fstab pass that only matters to mount(8) itself;
     * mount.fuse3 drops them, a direct call must not fail on them */
    FUSE_OPT_KEY("defaults", KEY_MOUNT8),
    FUSE_OPT_KEY("auto", KEY_MOUNT8),
    FUSE_OPT_KEY("noauto", KEY_MOUNT8),
    FUSE_OPT_KEY("user", KEY_MOUNT8),
    FUSE_OPT_KEY("users", KEY_MOUNT8),
    FUSE_OPT_KEY("nouser", KEY_MOUNT8),
    FUSE_OPT_KEY("owner", KEY_MOUNT8),
    FUSE_OPT_KEY("group", KEY_MOUNT8),
    FUSE_OPT_KEY("_netdev", KEY_MOUNT8),
    FUSE_OPT_KEY("nofail", KEY_MOUNT8),
    FUSE_OPT_END,
};

/* base= may be given several times (each a DIR or DIR:DIR...): all are
 * used, in order.  x-* and comment=* (fstab's notes for other programs)
 * are dropped; every other option goes on to libfuse, which refuses what
 * it does not know. */
static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    options *o = data;
    if (key == KEY_BASE) {
        const char *v = arg + 5;
        size_t have = o->base ? strlen(o->base) : 0, l = strlen(v);
        if (!l) {
            fprintf(stderr, "wdeltafs: base= needs a directory (-o base=DIR[:DIR...], or base= several times)\n");
            o->bad = 1;
            return 0;
        }
        char *p = realloc(o->base, have + l + 2);
        if (!p) return -1;
        if (have) p[have++] = ':';
        memcpy(p + have, v, l + 1);
        o->base = p;
        return 0;
    }
    if (key == KEY_MOUNT8) return 0;
    if (key == FUSE_OPT_KEY_OPT && (!strncmp(arg, "x-", 2) || !strncmp(arg, "comment=", 8))) return 0;
    return 1;
}

/* ---- daemon state ------------------------------------------------------- */
typedef struct prefetch_job {
    model *m;
    uint32_t block;
} prefetch_job;

typedef struct daemon_state {
    tree t;
    struct fuse_session *se;
    int foreground;
    int detached; /* fuse_daemonize done: stderr is gone unless foreground */
    unsigned scan_interval;
    unsigned readahead;
    unsigned prefetch_threads;
    volatile int stopping;
    int hashing_done, rescan_now; /* under lock */
    pthread_mutex_t lock; /* open count, prefetch queue */
    pthread_cond_t work, stop_cv;
    int open_files;
    prefetch_job q[256];
    size_t qhead, qlen;
    /* inodes the kernel holds (lookup count > 0) of model dirs and files:
     * they stay valid after a rescan drops them, for fstat and open of a
     * file whose delta was replaced or removed */
    pthread_mutex_t klock;
    struct known **ktab;
    size_t knb, kcount;
    struct handle *handles; /* open handles (under lock), freed at exit */
} daemon_state;

static daemon_state *G; /* only for the log function and signal-safe paths */

static void logmsg(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!G || G->foreground || !G->detached) {
        flockfile(stderr); /* one whole line per message, whatever the thread */
        fprintf(stderr, "wdeltafs: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        funlockfile(stderr);
    } else {
        vsyslog(level, fmt, ap);
    }
    va_end(ap);
}

/* ---- handles ------------------------------------------------------------- */
typedef struct handle {
    node_kind kind;
    model *m;
    int fidx;
    int fd;          /* base extra file */
    char *text;      /* status document */
    size_t text_len;
    uint64_t next_off; /* where a sequential reader will read next */
    uint64_t ra_until; /* read-ahead has been queued up to here */
    char *listing;   /* readdir buffer */
    size_t listing_len;
    struct handle *prev, *next; /* daemon_state.handles */
} handle;

static void handle_track(daemon_state *ds, handle *h)
{
    pthread_mutex_lock(&ds->lock);
    h->prev = NULL;
    h->next = ds->handles;
    if (ds->handles) ds->handles->prev = h;
    ds->handles = h;
    pthread_mutex_unlock(&ds->lock);
}

/* Unlink and free; the daemon's open-file count goes down for files. */
static void handle_free(daemon_state *ds, handle *h)
{
    pthread_mutex_lock(&ds->lock);
    if (h->prev) h->prev->next = h->next;
    else ds->handles = h->next;
    if (h->next) h->next->prev = h->prev;
    if (h->kind == N_FILE) ds->open_files--;
    pthread_mutex_unlock(&ds->lock);
    if (h->fd >= 0) close(h->fd);
    if (h->m) model_unref(&ds->t, h->m);
    free(h->text);
    free(h->listing);
    free(h);
}

static daemon_state *state_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* Who sent the request (access.h checks them; the kernel's own checks with
 * default_permissions see only the attributes of one inode) */
static void req_cred(fuse_req_t req, cred *c)
{
    const struct fuse_ctx *x = fuse_req_ctx(req);
    c->uid = x->uid;
    c->gid = x->gid;
    int n = fuse_req_getgroups(req, CRED_MAX_GROUPS, c->groups);
    c->ngroups = n < 0 ? 0 : n > CRED_MAX_GROUPS ? CRED_MAX_GROUPS : n;
}

/* May the sender of req read what node n shows (a directory: list it)? */
static int node_allows(daemon_state *ds, const node *n, const cred *c)
{
    if (c->uid == 0) return 1;
    if (n->kind == N_DIR && n->perm) return perm_allows(n->perm, c);
    if (n->kind == N_MODEL || n->kind == N_FILE || n->kind == N_LINK) return tree_model_allows(&ds->t, n->m, c);
    return 1; /* the mount's root without a source, .wdeltafs, bases/, status */
}

/* ---- attributes --------------------------------------------------------- */
static void fill_attr(const node *n, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = n->ino;
    st->st_nlink = 1;
    st->st_blksize = 1 << 20;
    switch (n->kind) {
    case N_DIR:
    case N_META:
        /* a directory of SRC shows its source's owner and mode (less the
         * write bits); .wdeltafs and its bases directory: 0555 root */
        st->st_mode = S_IFDIR | (n->perm ? n->mode & 0555 : 0555);
        st->st_nlink = 2;
        st->st_uid = n->perm ? n->uid : 0;
        st->st_gid = n->perm ? n->gid : 0;
        st->st_mtim = st->st_ctim = st->st_atim = n->mtime;
        break;
    case N_STATUS:
        st->st_mode = S_IFREG | 0444;
        st->st_mtim = st->st_ctim = st->st_atim = n->mtime;
        break;
    case N_LINK:
        st->st_mode = S_IFLNK | 0444;
        st->st_size = n->link ? (off_t)strlen(n->link) : 0;
        st->st_uid = n->m->st.st_uid;
        st->st_gid = n->m->st.st_gid;
        st->st_mtim = n->m->st.st_mtim;
        st->st_ctim = n->m->st.st_mtim;
        st->st_atim = n->m->st.st_mtim;
        break;
    case N_MODEL: {
        const struct stat *ds = &n->m->st;
        mode_t r = ds->st_mode & 0444;
        st->st_mode = S_IFDIR | r | (r >> 2); /* x wherever r */
        st->st_nlink = 2;
        st->st_uid = ds->st_uid;
        st->st_gid = ds->st_gid;
        st->st_mtim = ds->st_mtim;
        st->st_ctim = ds->st_mtim;
        st->st_atim = ds->st_mtim;
        break;
    }
    case N_FILE: {
        const struct stat *ds = &n->m->st;
        const mfile *f = &n->m->files[n->fidx];
        st->st_mode = S_IFREG | (ds->st_mode & 0444);
        st->st_uid = ds->st_uid;
        st->st_gid = ds->st_gid;
        st->st_size = (off_t)f->size;
        struct stat es; /* a file passed through (config.json...): its size now */
        if (f->delta_file < 0 && f->extra_path && !stat(f->extra_path, &es)) st->st_size = es.st_size;
        st->st_blocks = (blkcnt_t)(((uint64_t)st->st_size + 511) / 512);
        st->st_mtim = ds->st_mtim;
        st->st_ctim = ds->st_mtim;
        st->st_atim = ds->st_mtim;
        break;
    }
    }
}

static void reply_entry_of(fuse_req_t req, const node *n)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.ino = n->ino;
    e.generation = 1;
    e.attr_timeout = TIMEOUT;
    e.entry_timeout = TIMEOUT;
    fill_attr(n, &e.attr);
    fuse_reply_entry(req, &e);
}

/* ---- inodes the kernel knows -------------------------------------------- */
typedef struct known {
    uint64_t ino, nlookup;
    node_kind kind;
    model *m; /* a reference */
    int fidx;
    struct known *next;
} known;

static size_t kslot(const daemon_state *ds, uint64_t ino)
{
    return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 20) & (ds->knb - 1);
}

/* A lookup reply for n is about to go out: count it.  The newest version
 * of the model replaces the one remembered (same inode: same content). */
static void known_add(daemon_state *ds, const node *n)
{
    if (n->kind != N_FILE && n->kind != N_MODEL) return;
    model *drop = NULL;
    pthread_mutex_lock(&ds->klock);
    if (!ds->ktab || ds->kcount >= ds->knb) { /* grow */
        size_t nb = ds->knb ? ds->knb * 2 : 1024;
        known **t = calloc(nb, sizeof *t);
        if (t) {
            for (size_t i = 0; i < ds->knb; i++)
                for (known *k = ds->ktab[i], *nx; k; k = nx) {
                    nx = k->next;
                    size_t b = (size_t)((k->ino * 0x9E3779B97F4A7C15ull) >> 20) & (nb - 1);
                    k->next = t[b];
                    t[b] = k;
                }
            free(ds->ktab);
            ds->ktab = t;
            ds->knb = nb;
        }
    }
    if (ds->ktab) {
        known *k = ds->ktab[kslot(ds, n->ino)];
        while (k && k->ino != n->ino) k = k->next;
        if (!k && (k = calloc(1, sizeof *k))) {
            k->ino = n->ino;
            k->kind = n->kind;
            size_t b = kslot(ds, n->ino);
            k->next = ds->ktab[b];
            ds->ktab[b] = k;
            ds->kcount++;
        }
        if (k) {
            k->nlookup++;
            if (k->m != n->m) {
                drop = k->m;
                model_ref(&ds->t, n->m);
                k->m = n->m;
                k->fidx = n->fidx;
            }
        }
    }
    pthread_mutex_unlock(&ds->klock);
    model_unref(&ds->t, drop);
}

static void known_forget(daemon_state *ds, uint64_t ino, uint64_t nlookup)
{
    model *drop = NULL;
    pthread_mutex_lock(&ds->klock);
    if (ds->ktab) {
        known **p = &ds->ktab[kslot(ds, ino)];
        while (*p && (*p)->ino != ino) p = &(*p)->next;
        known *k = *p;
        if (k && (k->nlookup <= nlookup || (k->nlookup -= nlookup) == 0)) {
            *p = k->next;
            ds->kcount--;
            drop = k->m;
            free(k);
        }
    }
    pthread_mutex_unlock(&ds->klock);
    model_unref(&ds->t, drop);
}

/* Fill *out for an inode no longer in the snapshot; 0 if known. */
static int known_node(daemon_state *ds, uint64_t ino, node *out)
{
    int found = 0;
    pthread_mutex_lock(&ds->klock);
    if (ds->ktab) {
        known *k = ds->ktab[kslot(ds, ino)];
        while (k && k->ino != ino) k = k->next;
        if (k) {
            memset(out, 0, sizeof *out);
            out->ino = ino;
            out->kind = k->kind;
            out->m = k->m;
            out->fidx = k->fidx;
            model_ref(&ds->t, k->m); /* the caller unrefs out->m */
            found = 1;
        }
    }
    pthread_mutex_unlock(&ds->klock);
    return found ? 0 : -1;
}

static void known_free(daemon_state *ds)
{
    for (size_t i = 0; i < ds->knb; i++)
        for (known *k = ds->ktab[i], *nx; k; k = nx) {
            nx = k->next;
            model_unref(&ds->t, k->m);
            free(k);
        }
    free(ds->ktab);
    ds->ktab = NULL;
    ds->knb = ds->kcount = 0;
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    known_forget(state_of(req), ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++) known_forget(state_of(req), forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

/* ---- lookups -------------------------------------------------------- */
static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    daemon_state *ds = state_of(req);
    snapshot *s = tree_snapshot(&ds->t);
    node *dir = snap_node(s, parent);
    node *n = NULL;
    if (dir && !strcmp(name, ".")) n = dir; /* NFS export: any node by its id */
    else if (dir && (dir->kind == N_DIR || dir->kind == N_META || dir->kind == N_MODEL)) {
        if (!strcmp(name, "..")) n = snap_node(s, dir->parent);
        else n = snap_child(s, dir, name);
    }
    if (n) {
        known_add(ds, n);
        reply_entry_of(req, n);
    } else {
        fuse_reply_err(req, dir ? ENOENT : ESTALE);
    }
    tree_snapshot_put(&ds->t, s);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    daemon_state *ds = state_of(req);
    struct stat st;
    handle *h = fi ? (handle *)(uintptr_t)fi->fh : NULL;
    if (h && h->kind == N_FILE) { /* an open file keeps its version */
        node n = {.ino = ino, .kind = N_FILE, .m = h->m, .fidx = h->fidx};
        fill_attr(&n, &st);
        fuse_reply_attr(req, &st, TIMEOUT);
        return;
    }
    snapshot *s = tree_snapshot(&ds->t);
    node *n = snap_node(s, ino), old;
    if (n) {
        fill_attr(n, &st);
        fuse_reply_attr(req, &st, TIMEOUT);
    } else if (known_node(ds, ino, &old) == 0) { /* replaced or removed since */
        fill_attr(&old, &st);
        model_unref(&ds->t, old.m);
        fuse_reply_attr(req, &st, TIMEOUT);
    } else {
        fuse_reply_err(req, ENOENT);
    }
    tree_snapshot_put(&ds->t, s);
}

/* Reply with a copy of data that belongs to a handle (see op_readdir). */
static void reply_copy(fuse_req_t req, const char *data, size_t n)
{
    char small[4096], *buf = n <= sizeof small ? small : malloc(n);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memcpy(buf, data, n);
    fuse_reply_buf(req, buf, n);
    if (buf != small) free(buf);
}

/* ---- directories ----------------------------------------------------- */
static int listing_add(fuse_req_t req, handle *h, size_t *cap, const char *name, const node *n)
{
    struct stat st;
    fill_attr(n, &st);
    size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
    if (h->listing_len + need > *cap) {
        size_t nc = (*cap + need) * 2;
        char *p = realloc(h->listing, nc);
        if (!p) return -1;
        h->listing = p;
        *cap = nc;
    }
    fuse_add_direntry(req, h->listing + h->listing_len, need, name, &st, (off_t)(h->listing_len + need));
    h->listing_len += need;
    return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    daemon_state *ds = state_of(req);
    snapshot *s = tree_snapshot(&ds->t);
    node *n = snap_node(s, ino);
    cred cr;
    req_cred(req, &cr);
    if (!n || (n->kind != N_DIR && n->kind != N_META && n->kind != N_MODEL) || !node_allows(ds, n, &cr)) {
        fuse_reply_err(req, !n ? ENOENT : n->kind != N_DIR && n->kind != N_META && n->kind != N_MODEL ? ENOTDIR : EACCES);
        tree_snapshot_put(&ds->t, s);
        return;
    }
    handle *h = calloc(1, sizeof *h);
    size_t cap = 0;
    int bad = !h;
    if (h) {
        h->kind = n->kind;
        h->fd = -1;
        node *parent = snap_node(s, n->parent);
        bad = listing_add(req, h, &cap, ".", n) || listing_add(req, h, &cap, "..", parent ? parent : n);
        for (size_t i = 0; !bad && i < n->nchild; i++) {
            node *c = &s->nodes[n->child[i]];
            bad = listing_add(req, h, &cap, c->name, c);
        }
    }
    tree_snapshot_put(&ds->t, s);
    if (bad) {
        if (h) free(h->listing);
        free(h);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    handle_track(ds, h);
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->cache_readdir = 0;
    fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    handle *h = (handle *)(uintptr_t)fi->fh;
    if ((size_t)off >= h->listing_len) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    /* entries are whole: find the last one that fits in size */
    size_t end = (size_t)off, at = (size_t)off;
    while (at < h->listing_len) {
        /* each entry's off field (the next entry's position) is at a fixed
         * place in struct fuse_dirent: ino(8) off(8) namelen(4) type(4) */
        uint64_t next;
        memcpy(&next, h->listing + at + 8, 8);
        if (next - (size_t)off > size) break;
        end = (size_t)next;
        at = (size_t)next;
    }
    /* reply from a copy: once the kernel has the reply, the directory may
     * be closed and releasedir (another thread) free the listing while
     * fuse_reply_buf is still returning */
    reply_copy(req, h->listing + off, end - (size_t)off);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    handle_free(state_of(req), (handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* ---- files ---------------------------------------------------------- */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    daemon_state *ds = state_of(req);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    snapshot *s = tree_snapshot(&ds->t);
    node *n = snap_node(s, ino), old;
    model *old_ref = NULL; /* an inode from a version no longer in SRC */
    if (!n && known_node(ds, ino, &old) == 0) {
        n = &old;
        old_ref = old.m;
    }
    handle *h = NULL;
    int err = 0;
    cred cr;
    req_cred(req, &cr);
    if (!n) err = ENOENT;
    else if (n->kind != N_FILE && n->kind != N_STATUS) err = EISDIR;
    else if (!node_allows(ds, n, &cr)) err = EACCES;
    else if (!(h = calloc(1, sizeof *h))) err = ENOMEM;
    if (!err) {
        h->kind = n->kind;
        h->fd = -1;
        if (n->kind == N_STATUS) {
            pthread_mutex_lock(&ds->lock);
            int open_files = ds->open_files;
            pthread_mutex_unlock(&ds->lock);
            h->text = tree_status_json(&ds->t, open_files, cr.uid == 0 ? NULL : &cr);
            h->text_len = h->text ? strlen(h->text) : 0;
            if (!h->text) err = ENOMEM;
            fi->direct_io = 1; /* its size is not known in advance */
        } else {
            h->m = n->m;
            h->fidx = n->fidx;
            model_ref(&ds->t, h->m);
            const mfile *f = &h->m->files[h->fidx];
            if (f->delta_file < 0 && (h->fd = open(f->extra_path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
                err = errno;
                logmsg(LOG_ERR, "%s: %s", f->extra_path, strerror(errno));
            } else if (f->delta_file < 0 && cr.uid != 0) {
                /* a file passed through: the reader must be able to read it
                 * too, through its own real path */
                perm p;
                char why[600];
                if (perm_of_fd(h->fd, PERM_R, &p, why, sizeof why)) err = EACCES;
                else if (!perm_allows(&p, &cr)) err = EACCES;
                perm_free(&p);
            }
            /* immutable: a new version has new inodes.  A file passed
             * through may be replaced or changed in its directory: its pages
             * are kept only while it is the same file, unchanged. */
            fi->keep_cache = f->delta_file >= 0;
            struct stat fs;
            if (!err && f->delta_file < 0 && !fstat(h->fd, &fs)) {
                char idn[96];
                snprintf(idn, sizeof idn, "%llu:%llu:%lld:%lld.%09ld", (unsigned long long)fs.st_dev,
                         (unsigned long long)fs.st_ino, (long long)fs.st_size, (long long)fs.st_mtim.tv_sec,
                         fs.st_mtim.tv_nsec);
                mfile *fw = &h->m->files[h->fidx];
                pthread_mutex_lock(&ds->lock);
                fi->keep_cache = !strcmp(fw->seen, idn);
                if (!fi->keep_cache) snprintf(fw->seen, sizeof fw->seen, "%s", idn);
                pthread_mutex_unlock(&ds->lock);
            }
        }
    }
    tree_snapshot_put(&ds->t, s);
    model_unref(&ds->t, old_ref);
    if (err) {
        if (h) {
            if (h->m) model_unref(&ds->t, h->m);
            free(h->text);
            free(h);
        }
        fuse_reply_err(req, err);
        return;
    }
    if (h->kind == N_FILE) {
        pthread_mutex_lock(&ds->lock);
        ds->open_files++;
        pthread_mutex_unlock(&ds->lock);
    }
    handle_track(ds, h);
    fi->fh = (uint64_t)(uintptr_t)h;
    fuse_reply_open(req, fi);
}

/* Queue the `count` blocks that follow file offset `pos` of output file f,
 * in file order (block numbers follow the writer's order, not the file's).
 * Blocks already queued for this handle are skipped.  ds->lock held. */
static void queue_prefetch_locked(daemon_state *ds, handle *h, size_t f, uint64_t pos, unsigned count)
{
    model *m = h->m;
    const wd_delta_info *in = wd_delta_get_info(m->d);
    uint64_t size = in->files[f].size;
    if (pos < h->ra_until) pos = h->ra_until;
    for (unsigned k = 0; k < count && pos < size; k++) {
        uint32_t b;
        uint64_t boff;
        if (ds->qlen == sizeof ds->q / sizeof *ds->q || wd_delta_locate(m->d, f, pos, &b, &boff)) break;
        model_ref(&ds->t, m);
        ds->q[(ds->qhead + ds->qlen) % (sizeof ds->q / sizeof *ds->q)] = (prefetch_job){m, b};
        ds->qlen++;
        pos = boff + in->blocks[b].out_len;
    }
    h->ra_until = pos;
    pthread_cond_broadcast(&ds->work);
}

static void read_delta_file(fuse_req_t req, daemon_state *ds, handle *h, size_t size, off_t off)
{
    const mfile *f = &h->m->files[h->fidx];
    if ((uint64_t)off >= f->size) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    /* answered from the cache's blocks, pinned until the reply is written */
    wd_readv rv;
    wd_err err;
    ssize_t n = wd_read_pinned(h->m->d, h->m->key, ds->t.cache, (size_t)f->delta_file, size, (uint64_t)off, &rv,
                               &err);
    if (n < 0) {
        logmsg(LOG_ERR, "read of %s/%s at offset %lld failed: %s", h->m->rel, f->name, (long long)off, err.msg);
        fuse_reply_err(req, EIO);
        return;
    }
    /* a sequential reader: decode the next blocks on other threads.
     * All of this before replying: once the reply is out, the kernel
     * may release the handle.  The kernel sends reads of one handle in
     * parallel and they may finish out of order, so "sequential" means
     * near where the reader was; the state is kept under ds->lock. */
    uint64_t end = (uint64_t)off + (uint64_t)n, u = (uint64_t)off;
    pthread_mutex_lock(&ds->lock);
    int seq = u + SEQ_WINDOW >= h->next_off && u <= h->next_off + SEQ_WINDOW;
    if (ds->readahead && seq && end < f->size) {
        /* keep `readahead` blocks queued beyond what was just read */
        uint64_t want = end + (uint64_t)ds->readahead * WD_DEFAULT_BLOCK_SIZE;
        if (h->ra_until < want) queue_prefetch_locked(ds, h, (size_t)f->delta_file, end, ds->readahead);
    }
    if (!seq) h->ra_until = end; /* a jump: read-ahead starts over from here */
    if (!seq || end > h->next_off) h->next_off = end;
    pthread_mutex_unlock(&ds->lock);
    if (rv.niov) fuse_reply_iov(req, rv.iov, rv.niov);
    else fuse_reply_buf(req, NULL, 0);
    wd_read_release(ds->t.cache, &rv);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    daemon_state *ds = state_of(req);
    handle *h = (handle *)(uintptr_t)fi->fh;
    if (h->kind == N_STATUS) {
        size_t o = (size_t)off < h->text_len ? (size_t)off : h->text_len;
        size_t n = h->text_len - o < size ? h->text_len - o : size;
        reply_copy(req, h->text + o, n);
        return;
    }
    const mfile *f = &h->m->files[h->fidx];
    if (f->delta_file >= 0) {
        read_delta_file(req, ds, h, size, off);
        return;
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ssize_t n = pread(h->fd, buf, size, off);
    if (n < 0) {
        logmsg(LOG_ERR, "read of %s at offset %lld failed: %s", f->extra_path, (long long)off, strerror(errno));
        fuse_reply_err(req, EIO);
    } else {
        fuse_reply_buf(req, buf, (size_t)n);
    }
    free(buf);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    handle_free(state_of(req), (handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* ---- extended attributes on model directories ------------------------- */
static const char *const xattr_names[] = {"user.wdelta.codec", "user.wdelta.base_hash", "user.wdelta.result_hash",
                                          "user.wdelta.stored_size", "user.wdelta.ratio", "user.wdelta.delta",
                                          "user.wdelta.parent"};

static int xattr_value(const model *m, const char *name, char *out, size_t n)
{
    const wd_delta_info *in = wd_delta_get_info(m->d);
    char hex[65];
    if (!strcmp(name, xattr_names[0])) {
        /* the strategy, plus the codecs its extents use */
        int used[32] = {0};
        size_t len = (size_t)snprintf(out, n, "%s", in->strategy);
        for (size_t f = 0; f < in->nfiles; f++)
            for (size_t k = 0; k < in->files[f].nextents; k++) used[in->files[f].extents[k].codec & 31] = 1;
        const char *sep = " (";
        for (int c = 0; c < 32 && len < n; c++)
            if (used[c]) {
                len += (size_t)snprintf(out + len, n - len, "%s%s", sep, wd_codec_name((wd_codec)c));
                sep = ",";
            }
        if (len < n && strcmp(sep, " (")) snprintf(out + len, n - len, ")");
    } else if (!strcmp(name, xattr_names[1])) {
        wd_hex(in->base_hash, 32, hex);
        snprintf(out, n, "%s", hex);
    } else if (!strcmp(name, xattr_names[2])) {
        wd_hex(in->result_hash, 32, hex);
        snprintf(out, n, "%s", in->version == 1 ? "none (deltatensors v1 records none)" : hex);
    } else if (!strcmp(name, xattr_names[3])) {
        snprintf(out, n, "%llu", (unsigned long long)in->file_size);
    } else if (!strcmp(name, xattr_names[4])) {
        snprintf(out, n, "%.3f", in->file_size ? (double)in->output_size / (double)in->file_size : 0.0);
    } else if (!strcmp(name, xattr_names[5])) {
        snprintf(out, n, "%s", m->delta_path);
    } else if (!strcmp(name, xattr_names[6])) {
        /* lineage: the parent's directory under the mount (as
         * .wdeltafs/lineage/NAME links to it), else its base's path */
        const char *p = m->parent ? m->parent->rel : m->base->bm ? m->base->bm->rel : m->base->dir;
        snprintf(out, n, "%s", p);
    } else {
        return -1;
    }
    return 0;
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    daemon_state *ds = state_of(req);
    snapshot *s = tree_snapshot(&ds->t);
    node *n = snap_node(s, ino);
    if (n && n->kind == N_LINK && n->link) fuse_reply_readlink(req, n->link);
    else fuse_reply_err(req, n ? EINVAL : ENOENT);
    tree_snapshot_put(&ds->t, s);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    daemon_state *ds = state_of(req);
    snapshot *s = tree_snapshot(&ds->t);
    node *n = snap_node(s, ino);
    char val[4200];
    cred cr;
    req_cred(req, &cr);
    if (n && n->kind == N_MODEL && !node_allows(ds, n, &cr)) {
        fuse_reply_err(req, EACCES);
    } else if (!n || n->kind != N_MODEL || n->m->is_base || xattr_value(n->m, name, val, sizeof val)) {
        fuse_reply_err(req, n ? ENODATA : ENOENT);
    } else {
        size_t len = strlen(val);
        if (size == 0) fuse_reply_xattr(req, len);
        else if (size < len) fuse_reply_err(req, ERANGE);
        else fuse_reply_buf(req, val, len);
    }
    tree_snapshot_put(&ds->t, s);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    daemon_state *ds = state_of(req);
    snapshot *s = tree_snapshot(&ds->t);
    node *n = snap_node(s, ino);
    char list[512];
    size_t len = 0;
    if (n && n->kind == N_MODEL && !n->m->is_base)
        for (size_t i = 0; i < sizeof xattr_names / sizeof *xattr_names; i++) {
            size_t l = strlen(xattr_names[i]) + 1;
            memcpy(list + len, xattr_names[i], l);
            len += l;
        }
    tree_snapshot_put(&ds->t, s);
    if (!n) fuse_reply_err(req, ENOENT);
    else if (size == 0) fuse_reply_xattr(req, len);
    else if (size < len) fuse_reply_err(req, ERANGE);
    else fuse_reply_buf(req, list, len);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct statvfs sv;
    memset(&sv, 0, sizeof sv);
    sv.f_bsize = sv.f_frsize = 4096;
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &sv);
}

/* ---- everything that would write ------------------------------------- */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *a, int to_set, struct fuse_file_info *fi)
{
    (void)ino, (void)a, (void)to_set, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_mknod(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, dev_t r)
{
    (void)p, (void)n, (void)m, (void)r;
    fuse_reply_err(req, EROFS);
}
static void op_mkdir(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m)
{
    (void)p, (void)n, (void)m;
    fuse_reply_err(req, EROFS);
}
static void op_unlink(fuse_req_t req, fuse_ino_t p, const char *n)
{
    (void)p, (void)n;
    fuse_reply_err(req, EROFS);
}
static void op_symlink(fuse_req_t req, const char *l, fuse_ino_t p, const char *n)
{
    (void)l, (void)p, (void)n;
    fuse_reply_err(req, EROFS);
}
static void op_rename(fuse_req_t req, fuse_ino_t p, const char *n, fuse_ino_t np, const char *nn, unsigned int f)
{
    (void)p, (void)n, (void)np, (void)nn, (void)f;
    fuse_reply_err(req, EROFS);
}
static void op_link(fuse_req_t req, fuse_ino_t i, fuse_ino_t p, const char *n)
{
    (void)i, (void)p, (void)n;
    fuse_reply_err(req, EROFS);
}
static void op_create(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, struct fuse_file_info *fi)
{
    (void)p, (void)n, (void)m, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_write(fuse_req_t req, fuse_ino_t i, const char *b, size_t s, off_t o, struct fuse_file_info *fi)
{
    (void)i, (void)b, (void)s, (void)o, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_setxattr(fuse_req_t req, fuse_ino_t i, const char *n, const char *v, size_t s, int f)
{
    (void)i, (void)n, (void)v, (void)s, (void)f;
    fuse_reply_err(req, EROFS);
}
static void op_removexattr(fuse_req_t req, fuse_ino_t i, const char *n)
{
    (void)i, (void)n;
    fuse_reply_err(req, EROFS);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    /* Large requests: libfuse derives the kernel's max_pages (the largest
     * read too) from max_write, so raise it although nothing is written. */
    conn->max_write = 1u << 20;
    conn->max_readahead = conn->max_readahead > (1u << 20) ? conn->max_readahead : (1u << 20);
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
    /* NFS re-export: lookups of "." and ".." are answered, node ids are
     * hashes that are never reused for other content */
    if (conn->capable & FUSE_CAP_EXPORT_SUPPORT) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .readlink = op_readlink,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .statfs = op_statfs,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .create = op_create,
    .write = op_write,
    .setxattr = op_setxattr,
    .removexattr = op_removexattr,
};

/* ---- background threads ---------------------------------------------- */
static void *prefetch_main(void *arg)
{
    daemon_state *ds = arg;
    for (;;) {
        pthread_mutex_lock(&ds->lock);
        while (!ds->qlen && !ds->stopping) pthread_cond_wait(&ds->work, &ds->lock);
        if (ds->stopping) {
            pthread_mutex_unlock(&ds->lock);
            return NULL;
        }
        prefetch_job j = ds->q[ds->qhead];
        ds->qhead = (ds->qhead + 1) % (sizeof ds->q / sizeof *ds->q);
        ds->qlen--;
        pthread_mutex_unlock(&ds->lock);
        /* a failure is not logged here: the read that needs the block
         * fails too and logs it, once per read rather than per guess */
        wd_err err;
        (void)wd_cache_prefetch(j.m->d, j.m->key, ds->t.cache, j.block, &err);
        model_unref(&ds->t, j.m);
    }
}

static void invalidate(void *ctx, uint64_t parent, const char *name)
{
    daemon_state *ds = ctx;
    fuse_lowlevel_notify_inval_entry(ds->se, parent, name, strlen(name));
    /* and the directory's attributes: its time moved (the kernel only does
     * this itself for names it has a dentry of) */
    fuse_lowlevel_notify_inval_inode(ds->se, parent, -1, 0);
}

/* Bases whose digest was neither cached nor small enough to hash before
 * mounting are hashed here, while the mount already serves everything
 * else; the deltas that need them appear at the rescan that follows. */
static void *hasher_main(void *arg)
{
    daemon_state *ds = arg;
    tree_hash_pending(&ds->t, 0);
    pthread_mutex_lock(&ds->lock);
    ds->hashing_done = 1;
    ds->rescan_now = 1;
    pthread_cond_broadcast(&ds->stop_cv);
    pthread_mutex_unlock(&ds->lock);
    return NULL;
}

static void *scanner_main(void *arg)
{
    daemon_state *ds = arg;
    for (;;) {
        tree_rescan(&ds->t, invalidate, ds);
        pthread_mutex_lock(&ds->lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += ds->scan_interval;
        while (!ds->stopping && !ds->rescan_now &&
               pthread_cond_timedwait(&ds->stop_cv, &ds->lock, &until) != ETIMEDOUT) {
        }
        ds->rescan_now = 0;
        int stop = ds->stopping;
        pthread_mutex_unlock(&ds->lock);
        if (stop) return NULL;
    }
}

/* Tell systemd (Type=notify) that the mount is up, without libsystemd. */
static void notify_ready(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@')) return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t l = strlen(path);
    if (l >= sizeof sa.sun_path) l = sizeof sa.sun_path - 1;
    memcpy(sa.sun_path, path, l);
    if (sa.sun_path[0] == '@') sa.sun_path[0] = 0;
    const char msg[] = "READY=1";
    sendto(fd, msg, sizeof msg - 1, 0, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l));
    close(fd);
}

/* The kernel reads ahead only read_ahead_kb per mount (128 KiB by
 * default), which keeps sequential FUSE requests small; root may raise it
 * in sysfs.  Best effort: a failure only costs speed.  The device number
 * comes from /proc/self/mountinfo: stat() of the mountpoint would wait for
 * the INIT reply, which only the session loop (not started yet) sends. */
static void raise_readahead(const char *mnt)
{
    char *real = strdup(mnt); /* fuse_parse_cmdline made it absolute (realpath) */
    FILE *mi = fopen("/proc/self/mountinfo", "r");
    unsigned maj = 0, mnr = 0;
    int found = 0;
    if (real && mi) {
        char line[8192];
        while (fgets(line, sizeof line, mi)) {
            unsigned a, b;
            char where[4096];
            if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &a, &b, where) != 3) continue;
            /* mountinfo escapes space, tab, newline and backslash as \ooo */
            char un[4096];
            size_t k = 0;
            for (const char *p = where; *p && k + 1 < sizeof un; p++) {
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
                    p[3] <= '7') {
                    un[k++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                    p += 3;
                } else {
                    un[k++] = *p;
                }
            }
            un[k] = 0;
            if (!strcmp(un, real) && strstr(line, " - fuse")) { /* the last one is ours */
                maj = a;
                mnr = b;
                found = 1;
            }
        }
    }
    if (mi) fclose(mi);
    free(real);
    if (!found) return;
    char path[128];
    snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", maj, mnr);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "1024\n");
    if (fclose(f)) logmsg(LOG_INFO, "could not raise %s", path);
}

/* ---- main ------------------------------------------------------------- */
/* Exit statuses (the project's convention, as wdelta's) */
enum { EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_INPUT = 3 };

#define SIZE_MAX_BYTES ((uint64_t)INT64_MAX)

/* A size: digits, an optional fraction, an optional K/M/G/T suffix (powers
 * of 1024, optionally followed by "iB" or "B") or B.  Nothing else: no
 * sign, exponent, hex, nan or inf; more than SIZE_MAX_BYTES is refused. */
static int parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t whole = 0, frac = 0, scale = 1;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (whole > (UINT64_MAX - 9) / 10) return -1;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') return -1;
        for (; *p >= '0' && *p <= '9'; p++)
            if (scale < 1000000000000ull) { /* digits past 12 do not matter */
                frac = frac * 10 + (uint64_t)(*p - '0');
                scale *= 10;
            }
    }
    uint64_t mult = 1;
    switch (*p) {
    case 'k': case 'K': mult = 1ull << 10; p++; break;
    case 'm': case 'M': mult = 1ull << 20; p++; break;
    case 'g': case 'G': mult = 1ull << 30; p++; break;
    case 't': case 'T': mult = 1ull << 40; p++; break;
    default: break;
    }
    if (mult > 1 && *p == 'i' && p[1] == 'B') p += 2;
    else if (*p == 'B') p++;
    if (*p) return -1;
    if (whole > SIZE_MAX_BYTES / mult) return -1;
    /* frac < scale <= 1e12 and mult <= 2^40: the product fits in a double
     * exactly enough for a byte count */
    uint64_t v = whole * mult, f = (uint64_t)((double)frac * (double)mult / (double)scale);
    if (v > SIZE_MAX_BYTES - f) return -1;
    *out = v + f;
    return 0;
}

/* A whole number in [lo, hi]: digits only. */
static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    unsigned long v = 0;
    if (!*s) return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > hi) return -1;
    }
    if (v < lo) return -1;
    *out = (unsigned)v;
    return 0;
}

static int bad_number(const char *name, const char *val, unsigned lo, unsigned hi, const char *what)
{
    fprintf(stderr, "wdeltafs: %s=%s: not a whole number from %u to %u (%s)\n", name, val, lo, hi, what);
    return EXIT_USAGE;
}

/* The -o values of wdeltafs's own options; 0 or EXIT_USAGE (said why). */
static int check_options(const options *o, daemon_state *ds, uint64_t *cache_size)
{
    if (o->bad) return EXIT_USAGE;
    if (o->cache_size && parse_size(o->cache_size, cache_size)) {
        fprintf(stderr,
                "wdeltafs: cache_size=%s: not a size; give bytes as a number with an optional K, M, G or T "
                "suffix (powers of 1024; KiB and KB mean K), e.g. cache_size=512M or cache_size=1.5G, at most 8388607T\n",
                o->cache_size);
        return EXIT_USAGE;
    }
    if (o->scan_interval && parse_uint(o->scan_interval, 1, 86400, &ds->scan_interval))
        return bad_number("scan_interval", o->scan_interval, 1, 86400, "seconds between rescans of SRC");
    if (o->ra_threads && parse_uint(o->ra_threads, 1, MAX_PREFETCH_THREADS, &ds->prefetch_threads))
        return bad_number("readahead_threads", o->ra_threads, 1, MAX_PREFETCH_THREADS, "threads decoding ahead");
    ds->readahead = 2 * ds->prefetch_threads < 8 ? 8 : 2 * ds->prefetch_threads;
    if (o->readahead && parse_uint(o->readahead, 0, 64, &ds->readahead))
        return bad_number("readahead", o->readahead, 0, 64, "blocks decoded ahead of a sequential reader");
    if (o->cache_dir && !*o->cache_dir) {
        fprintf(stderr, "wdeltafs: cache_dir= needs a directory\n");
        return EXIT_USAGE;
    }
    if (o->v1_dtype && strcmp(o->v1_dtype, "float32") && strcmp(o->v1_dtype, "base")) {
        fprintf(stderr, "wdeltafs: v1_dtype=%s: must be float32 or base\n", o->v1_dtype);
        return EXIT_USAGE;
    }
    return 0;
}

static void usage(const char *prog)
{
    printf("usage: %s SRC MOUNTPOINT [-f] [-d] [-o OPTION[,OPTION...]]\n"
           "\n"
           "Shows every SRC/**/NAME.wdelta as a model directory MOUNTPOINT/**/NAME/.\n"
           "Chains (deltas made against another delta's model) are served when they end\n"
           "at a given base.  Lineage: MOUNTPOINT/.wdeltafs/lineage/NAME is a symlink to\n"
           "NAME's parent model (or its base under .wdeltafs/bases), and the model\n"
           "directory's attribute user.wdelta.parent names it.\n"
           "\n"
           "  -o base=DIR[:DIR...]      base models, matched to deltas by content hash\n"
           "                            (required; base= may be repeated: all are used)\n"
           "  -o cache_size=SIZE        decoded-block cache (default 1G; bytes with an optional\n"
           "                            K/M/G/T suffix, powers of 1024, e.g. 512M or 1.5G)\n"
           "  -o cache_dir=DIR          where base digests are remembered (default\n"
           "                            /var/cache/wdeltafs; not root: ~/.cache/wdeltafs)\n"
           "  -o scan_interval=SECS     rescan SRC for changes this often (1..86400, default 2)\n"
           "  -o readahead=N            blocks decoded ahead of a sequential reader (0..64;\n"
           "                            default: 2 x readahead_threads, at least 8; 0 = none)\n"
           "  -o readahead_threads=N    threads decoding those blocks (1..16, default: CPUs, 2..16)\n"
           "  -o v1_dtype=float32|base  deltatensors v1 tensors as float32 (default) or the base's dtype\n"
           "  -o cross_fs               walk SRC's directories on other filesystems too (default: not)\n"
           "  -f                        foreground, log to stderr (else syslog once mounted)\n"
           "  -d                        FUSE debug output (implies -f)\n"
           "  and FUSE mount options (allow_other, ...); the mount is always read-only.\n"
           "  fstab's own options (defaults, auto, noauto, user, users, _netdev, nofail,\n"
           "  x-*, comment=*) are accepted and ignored.\n"
           "\n"
           "Errors in the configuration are printed before the mount goes to the background.\n"
           "Exit status: 0 mounted (deltas that cannot be served are named on stderr);\n"
           "1 failure (the mount itself failed); 2 usage error (bad option or value);\n"
           "3 missing or wrong input (SRC, MOUNTPOINT or a base not found, no base given,\n"
           "or none of the deltas under SRC can be served with the bases given).\n",
           prog);
}

/* The first and second arguments that are not options (SRC, MOUNTPOINT). */
static void positional(const struct fuse_args *args, int *src_i, int *mnt_i)
{
    *src_i = *mnt_i = -1;
    for (int i = 1; i < args->argc; i++) {
        if (args->argv[i][0] == '-') {
            if (!strcmp(args->argv[i], "-o")) i++;
            continue;
        }
        if (*src_i < 0) *src_i = i;
        else if (*mnt_i < 0) *mnt_i = i;
    }
}

/* After the first scan: 0 if something can be served (or may be, once a
 * base is hashed, or when deltas are added), else EXIT_INPUT (said why). */
static int servable(daemon_state *ds, const char *mnt)
{
    tree *t = &ds->t;
    size_t usable = 0, pending = 0;
    for (size_t i = 0; i < t->nbases; i++) {
        if (t->bases[i].state != BASE_FAILED) usable++;
        if (t->bases[i].state == BASE_PENDING || t->bases[i].state == BASE_HASHING) pending++;
    }
    if (!usable) {
        fprintf(stderr, "wdeltafs: none of the %zu base%s given can be used (see above): nothing can be served; not mounting\n",
                t->nbases, t->nbases == 1 ? "" : "s");
        return EXIT_INPUT;
    }
    snapshot *s = tree_snapshot(t);
    size_t served = s->nmodels, unav = s->nunav;
    tree_snapshot_put(t, s);
    if (!served && unav && !pending) {
        fprintf(stderr, "wdeltafs: none of the %zu delta%s under %s can be served (reasons above) with the base%s given:",
                unav, unav == 1 ? "" : "s", t->src, t->nbases == 1 ? "" : "s");
        for (size_t i = 0; i < t->nbases; i++) {
            char hex[65];
            wd_hex(t->bases[i].hash, 32, hex);
            fprintf(stderr, "%s %s (%s%s)", i ? ";" : "", t->bases[i].dir,
                    t->bases[i].state == BASE_READY ? "content hash " : "failed: ",
                    t->bases[i].state == BASE_READY ? hex : t->bases[i].error);
        }
        fprintf(stderr, "; not mounting\n");
        return EXIT_INPUT;
    }
    if (unav)
        fprintf(stderr, "wdeltafs: warning: %zu of %zu deltas under %s are not served (reasons above; "
                        "also in %s/.wdeltafs/status)\n",
                unav, unav + served, t->src, mnt);
    return 0;
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    options o;
    memset(&o, 0, sizeof o);
    struct fuse_cmdline_opts co;
    memset(&co, 0, sizeof co);
    static daemon_state ds;
    G = &ds;
    char *src = NULL;
    /* Reads allocate 1 MiB buffers on many threads: a fixed mmap threshold
     * (glibc otherwise raises it as buffers are freed) and few arenas return
     * that memory, so the daemon stays near its cache size. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    mallopt(M_ARENA_MAX, 4);
    int rc = EXIT_USAGE;
    if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) == -1) goto out;
    if (o.help) {
        usage(argv[0]);
        fuse_opt_free_args(&args);
        free(o.base);
        return 0;
    }
    if (o.version) {
        printf("wdeltafs %s (libfuse %s)\n", WD_VERSION_STRING, fuse_pkgversion());
        printf(".wdelta format: serves versions %u (deltatensors) to %u\n", WD_FORMAT_READ_MIN, WD_FORMAT_READ_MAX);
        fuse_opt_free_args(&args);
        free(o.base);
        return 0;
    }
    int src_i, mnt_i;
    positional(&args, &src_i, &mnt_i);
    if (src_i < 0 || mnt_i < 0) {
        fprintf(stderr, "wdeltafs: %s; usage: wdeltafs SRC MOUNTPOINT [-f] [-o OPTION,...] (try --help)\n",
                src_i < 0 ? "need SRC and MOUNTPOINT" : "need MOUNTPOINT after SRC");
        goto out;
    }
    ds.scan_interval = 2;
    /* read-ahead: one decoding thread per CPU (decoding is what limits a
     * cold read), each with two blocks in flight */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ds.prefetch_threads = ncpu < 2 ? 2 : ncpu > MAX_PREFETCH_THREADS ? MAX_PREFETCH_THREADS : (unsigned)ncpu;
    uint64_t cache_size = 1ull << 30;
    if ((rc = check_options(&o, &ds, &cache_size))) goto out;
    rc = EXIT_INPUT;
    struct stat sst, mst;
    if (!(src = realpath(args.argv[src_i], NULL)) || stat(src, &sst) || !S_ISDIR(sst.st_mode)) {
        fprintf(stderr, "wdeltafs: SRC %s: %s\n", args.argv[src_i], src ? "not a directory" : strerror(errno));
        goto out;
    }
    if (stat(args.argv[mnt_i], &mst)) {
        fprintf(stderr, "wdeltafs: MOUNTPOINT %s: %s\n", args.argv[mnt_i], strerror(errno));
        goto out;
    }
    if (!S_ISDIR(mst.st_mode)) {
        fprintf(stderr, "wdeltafs: MOUNTPOINT %s: not a directory\n", args.argv[mnt_i]);
        goto out;
    }
    if (!o.base) {
        fprintf(stderr, "wdeltafs: no base given: every delta is made against a base model; "
                        "name its directory with -o base=DIR (several: base=DIR:DIR or base= repeated)\n");
        goto out;
    }
    /* SRC is taken out of the arguments; fuse_parse_cmdline takes MOUNTPOINT */
    free(args.argv[src_i]);
    for (int k = src_i; k + 1 < args.argc; k++) args.argv[k] = args.argv[k + 1];
    args.argc--;
    args.argv[args.argc] = NULL;
    rc = EXIT_USAGE;
    if (fuse_parse_cmdline(&args, &co) != 0 || !co.mountpoint) {
        fprintf(stderr, "wdeltafs: bad arguments (above); usage: wdeltafs SRC MOUNTPOINT [-f] [-o OPTION,...]\n");
        goto out;
    }
    ds.foreground = co.foreground;
    fuse_opt_add_arg(&args, "-oro,default_permissions,subtype=wdeltafs");
    char fsname[4200];
    snprintf(fsname, sizeof fsname, "-ofsname=%s", src);
    for (char *p = fsname + 9; *p; p++)
        if (*p == ',') *p = '_'; /* a comma would end the option */
    fuse_opt_add_arg(&args, fsname);
    /* the session parses the FUSE options: an unknown one is refused here,
     * before any work */
    ds.se = fuse_session_new(&args, &ops, sizeof ops, &ds);
    if (!ds.se) {
        fprintf(stderr, "wdeltafs: unknown or bad mount option (above); `wdeltafs --help` lists wdeltafs's own "
                        "options, and FUSE's (allow_other, ...) are accepted\n");
        goto out;
    }
    rc = EXIT_FAIL;
    if (!ds.foreground) openlog("wdeltafs", LOG_PID, LOG_DAEMON);
    ds.t.v1_base_dtype = o.v1_dtype && !strcmp(o.v1_dtype, "base");
    ds.t.src = src;
    ds.t.cross_fs = o.cross_fs;
    ds.t.scan_interval = ds.scan_interval;
    char user_cache[4200];
    ds.t.cache_dir = o.cache_dir ? o.cache_dir : wd_digest_cache_dir(user_cache, sizeof user_cache);
    ds.t.log = logmsg;
    ds.t.cache = wd_cache_new(cache_size);
    pthread_mutex_init(&ds.t.snap_lock, NULL);
    pthread_mutex_init(&ds.t.model_lock, NULL);
    pthread_mutex_init(&ds.lock, NULL);
    pthread_mutex_init(&ds.klock, NULL);
    pthread_cond_init(&ds.work, NULL);
    pthread_cond_init(&ds.stop_cv, NULL);
    wd_err err;
    if (!ds.t.cache) {
        fprintf(stderr, "wdeltafs: out of memory\n");
        goto out_session;
    }
    tree_limit_fds(&ds.t);
    if (tree_open_bases(&ds.t, o.base, &err)) {
        fprintf(stderr, "wdeltafs: %s\n", err.msg);
        goto out_session;
    }
    /* small bases are hashed now so the first listing is complete; larger
     * ones (when their digest is not cached) in the background */
    tree_hash_pending(&ds.t, 1);
    tree_rescan(&ds.t, NULL, NULL);
    /* what cannot be served has been said on stderr (logmsg writes there
     * until the daemon is detached); nothing at all: do not mount */
    if ((rc = servable(&ds, co.mountpoint))) goto out_session;
    rc = EXIT_FAIL;
    if (fuse_set_signal_handlers(ds.se) != 0) goto out_session;
    if (fuse_session_mount(ds.se, co.mountpoint) != 0) goto out_signals;
    raise_readahead(co.mountpoint);
    if (fuse_daemonize(co.foreground) != 0) goto out_unmount;
    ds.detached = 1; /* from here on, a daemon in the background logs to syslog */
    notify_ready();
    pthread_t scanner, hasher, pf[MAX_PREFETCH_THREADS];
    int nthreads = 0, scanning = pthread_create(&scanner, NULL, scanner_main, &ds) == 0;
    if (pthread_create(&hasher, NULL, hasher_main, &ds) == 0) pthread_detach(hasher);
    else ds.hashing_done = 1;
    for (unsigned i = 0; i < ds.prefetch_threads; i++)
        if (pthread_create(&pf[nthreads], NULL, prefetch_main, &ds) == 0) nthreads++;
    logmsg(LOG_INFO, "serving %s on %s", src, co.mountpoint);
    struct fuse_loop_config lc = {.clone_fd = 0, .max_idle_threads = 16};
    rc = co.singlethread ? fuse_session_loop(ds.se) : fuse_session_loop_mt(ds.se, &lc);
    /* libfuse reports the signal that ended the loop; a stop by signal is
     * a clean exit (systemd's stop sends SIGTERM) */
    rc = rc == 0 || rc == SIGTERM || rc == SIGINT || rc == SIGHUP ? 0 : EXIT_FAIL;
    pthread_mutex_lock(&ds.lock);
    ds.stopping = 1;
    pthread_cond_broadcast(&ds.work);
    pthread_cond_broadcast(&ds.stop_cv);
    pthread_mutex_unlock(&ds.lock);
    if (scanning) pthread_join(scanner, NULL);
    for (int i = 0; i < nthreads; i++) pthread_join(pf[i], NULL);
    while (ds.qlen) { /* drop read-ahead not done */
        model_unref(&ds.t, ds.q[ds.qhead].m);
        ds.qhead = (ds.qhead + 1) % (sizeof ds.q / sizeof *ds.q);
        ds.qlen--;
    }
    pthread_mutex_lock(&ds.lock);
    int hashing = !ds.hashing_done;
    pthread_mutex_unlock(&ds.lock);
    if (hashing) {
        /* a base is still being hashed (it cannot be interrupted): unmount
         * and leave without freeing what that thread reads */
        logmsg(LOG_INFO, "stopping while a base is being hashed; its digest is not cached");
        fuse_session_unmount(ds.se);
        fuse_remove_signal_handlers(ds.se);
        _exit(rc ? 1 : 0);
    }
out_unmount:
    fuse_session_unmount(ds.se);
    known_free(&ds);
    while (ds.handles) handle_free(&ds, ds.handles); /* still open at a SIGTERM */
out_signals:
    fuse_remove_signal_handlers(ds.se);
out_session:
    fuse_session_destroy(ds.se);
out:
    tree_free(&ds.t);
    wd_cache_free(ds.t.cache);
    free(src);
    free(co.mountpoint);
    fuse_opt_free_args(&args);
    free(o.base);
    free(o.cache_size);
    free(o.cache_dir);
    free(o.scan_interval);
    free(o.readahead);
    free(o.v1_dtype);
    free(o.ra_threads);
    return rc;
}
