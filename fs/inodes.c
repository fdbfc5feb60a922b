/* inodes.c - wdeltafs: the attributes of a node (what stat shows), and the
 * table of inodes the kernel knows: the newest version of a model file or
 * directory it has looked up, kept until the kernel forgets it, so that an
 * open or fstat of a version that a rescan replaced still works. */
#include <stdlib.h>
#include <string.h>
#include "inodes.h"

/* ---- attributes --------------------------------------------------------- */
void fill_attr(const node *n, struct stat *st)
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

void reply_entry_of(fuse_req_t req, const node *n)
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
void known_add(daemon_state *ds, const node *n)
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

void known_forget(daemon_state *ds, uint64_t ino, uint64_t nlookup)
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
int known_node(daemon_state *ds, uint64_t ino, node *out)
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

void known_free(daemon_state *ds)
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
