/* ops.c - wdeltafs: the FUSE low-level operations.  Each translates one
 * request into a call on the tree (tree.c), the inode table (inodes.c), a
 * read (read.c) or the attributes (xattr.c), and its failure into an errno.
 * The mount is read-only: everything that would write is EROFS. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <syslog.h>
#include <unistd.h>
#include "inodes.h"
#include "ops.h"
#include "read.h"
#include "xattr.h"

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
void handle_free(daemon_state *ds, handle *h)
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

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    handle *h = (handle *)(uintptr_t)fi->fh;
    if (h->kind == N_STATUS) read_status(req, h, size, off);
    else if (h->m->files[h->fidx].delta_file >= 0) read_delta_file(req, state_of(req), h, size, off);
    else read_extra_file(req, h, size, off);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    handle_free(state_of(req), (handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
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
    if (n && n->kind == N_MODEL && !n->m->is_base) len = xattr_list(list, sizeof list);
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

const struct fuse_lowlevel_ops fs_ops = {
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
