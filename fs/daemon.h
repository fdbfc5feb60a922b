/* daemon.h - the state every part of the wdeltafs daemon shares: the tree
 * it serves, the read-ahead queue, the inodes the kernel holds, the open
 * handles; and its log function (main.c). */
#ifndef WDELTAFS_DAEMON_H
#define WDELTAFS_DAEMON_H

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h> /* struct fuse_session */
#include <pthread.h>
#include <stdint.h>
#include "tree.h" /* tree, model, node_kind */

#define MAX_PREFETCH_THREADS 16
#define SEQ_WINDOW (2u << 20) /* a read this close to the last one is sequential */
#define TIMEOUT 1.0 /* seconds the kernel may cache entries and attributes */

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

/* main.c: one line to stderr (before the daemon is detached, or in the
 * foreground), else to syslog */
void logmsg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
