/* tree.h - what the mount shows, apart from FUSE: bases, model versions and
 * immutable snapshots of the tree that a rescan of SRC replaces. */
#ifndef WDELTAFS_TREE_H
#define WDELTAFS_TREE_H

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include "access.h"
#include "wdelta.h"

#define INO_ROOT 1
#define INO_META 2   /* /.wdeltafs */
#define INO_STATUS 3 /* /.wdeltafs/status */
#define INO_BASES 4  /* /.wdeltafs/bases: each base model as a directory */
#define INO_LINEAGE 5 /* /.wdeltafs/lineage: NAME -> its parent, per model */

struct model;

typedef enum base_state { BASE_PENDING, BASE_HASHING, BASE_READY, BASE_FAILED } base_state;

/* One open descriptor per weight file of a base, shared by every delta on
 * it (wd_delta_set_base_fds).  When a file is replaced or removed under the
 * mount, a new set is opened for the deltas opened from then on; a set lives
 * while any model holds it. */
typedef struct base_fds {
    int refs;       /* atomic */
    size_t n;
    int *fd;
    char err[700];  /* not empty: a file could not be opened (why) */
} base_fds;

typedef struct base_ent {
    char *dir;
    wd_model model;
    int opened;
    base_state state;
    unsigned char hash[32]; /* WD_HASH_V1 (v1 files, older v2 files) */
    unsigned char id[32];   /* WD_ID_V2, the model identity (v2 files since) */
    char error[1024];
    char *name;        /* its directory under /.wdeltafs/bases (unique) */
    struct model *bm;  /* that directory's contents: the base's own files */
    base_fds *fds;     /* the current set (changed only by the scan) */
    perm perm;         /* its directory (read, search) and every weight file,
                          each through its real path: who may read it
                          (read again at every rescan, under perm_lock) */
    pthread_mutex_t perm_lock;
} base_ent;

typedef struct mfile {
    char *name;
    uint64_t size;
    uint64_t ino;
    int delta_file;   /* index of the delta's output file, or -1: a base extra */
    char *extra_path; /* base extra: its path */
    char seen[96];    /* base extra: identity (dev:ino:size:mtime) at its last
                         open, under the daemon's lock: the kernel keeps its
                         pages while it stays the same */
} mfile;

/* One version of one .wdelta file, shared by snapshots and open files. */
typedef struct model {
    int refs; /* under tree.model_lock */
    char *rel;        /* path under the mount, e.g. "team/chat-v2" */
    char *delta_path;
    struct stat st;   /* of the .wdelta when opened (fstat): its identity */
    base_fds *bfds;   /* made on a base directly: the set it reads (a ref) */
    perm perm;        /* the .wdelta's real path when opened (access.h) */
    wd_delta *d;
    base_ent *base;
    uint64_t key;     /* cache key: unique per version */
    uint64_t ino;     /* its directory */
    size_t nfiles;
    mfile *files;
    /* lineage: the model this delta's base is (a reference), or NULL when
     * it was made against `base` directly; `base` is the chain's root */
    struct model *parent;
    int is_base;      /* a base model directory (d is NULL) */
} model;

typedef enum node_kind { N_DIR, N_MODEL, N_FILE, N_META, N_STATUS, N_LINK } node_kind;

typedef struct node {
    uint64_t ino;
    node_kind kind;
    char *name;
    uint64_t parent;
    model *m;    /* N_MODEL and N_FILE */
    int fidx;    /* N_FILE */
    char *link;  /* N_LINK: the symlink's target */
    struct timespec mtime; /* N_DIR, N_META, N_STATUS: when its listing last changed */
    uid_t uid;   /* N_DIR of SRC: its source directory's owner, group, mode */
    gid_t gid;
    mode_t mode;
    const perm *perm; /* N_DIR of SRC: who may list it (owned by the snapshot) */
    size_t nchild, cap;
    uint32_t *child; /* node indices */
} node;

typedef struct unavailable {
    char *delta;
    char *reason;
    struct stat st;    /* identity of the .wdelta when it failed (has_st) */
    int has_st;
    uint64_t base_gen; /* tree.base_gen then: retried when bases change */
    int temporary;     /* a failure that may go away by itself (EMFILE, ENOMEM...):
                          retried at retry_at (CLOCK_MONOTONIC seconds), with the
                          delay doubling after each failed try */
    unsigned tries;
    double retry_at;
    const perm *dir;   /* who may list the directory that holds it (or NULL) */
} unavailable;

typedef struct snapshot {
    int refs; /* under tree.snap_lock */
    node *nodes;
    size_t nnodes, cap;
    uint32_t *index; /* open-addressed ino -> node index + 1 */
    size_t index_size;
    model **models;
    size_t nmodels;
    unavailable *unav;
    size_t nunav;
    perm **perms; /* owned: the directories' (node.perm, unavailable.dir) */
    size_t nperms;
} snapshot;

typedef struct tree {
    char *src;
    base_ent *bases;
    size_t nbases;
    const char *cache_dir;
    int v1_base_dtype;
    wd_cache *cache;
    pthread_mutex_t snap_lock, model_lock;
    snapshot *cur;
    uint64_t next_key;
    uint64_t base_gen; /* bumped (under snap_lock) when a base is hashed */
    struct timespec mounted; /* the first scan: directories' time until they change */
    int cross_fs;      /* walk into directories of other filesystems than SRC's */
    unsigned scan_interval; /* seconds between rescans (for retry delays) */
    char *scan_note;   /* the last scan's limit message (logged when it changes) */
    long open_fds;     /* descriptors held by open deltas (atomic) */
    long fd_budget;    /* at most this many (0: no limit); see tree_limit_fds */
    void (*log)(int level, const char *fmt, ...);
} tree;

/* Bases: open each, and take its digest from the cache file when the base
 * is unchanged; returns the number still to hash (hash_pending does it). */
int tree_open_bases(tree *t, const char *colon_list, wd_err *err);
void tree_hash_pending(tree *t, int only_small);

/* Rescan SRC and publish a new snapshot.  `changed(ctx, parent_ino, name)`
 * is called for every entry that appeared, vanished or changed, so the FUSE
 * side can tell the kernel. */
void tree_rescan(tree *t, void (*changed)(void *ctx, uint64_t parent, const char *name), void *ctx);

snapshot *tree_snapshot(tree *t);
void tree_snapshot_put(tree *t, snapshot *s);
node *snap_node(snapshot *s, uint64_t ino);
node *snap_child(snapshot *s, const node *dir, const char *name);

void model_ref(tree *t, model *m);
void model_unref(tree *t, model *m);

/* The status document (JSON) as reader c may see it (NULL: everything);
 * caller frees. */
char *tree_status_json(tree *t, int open_files, const cred *c);

/* 1 if reader c may read model m (its delta, its parents' and its base,
 * each through its real path); a base model directory: its base. */
int tree_model_allows(const tree *t, const model *m, const cred *c);
int tree_base_allows(base_ent *b, const cred *c);

/* Raise the soft descriptor limit to the hard one and keep deltas below it
 * with room to spare (FUSE, the scan, open files), so that a full table
 * makes new deltas wait (retried) rather than the scan or reads fail. */
void tree_limit_fds(tree *t);

void tree_free(tree *t);

#endif
