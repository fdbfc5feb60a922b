/* access.h - who may read what the mount shows.
 *
 * The rule: a user may read a model only if they could read its .wdelta
 * through the file's real path (search permission on every directory from /
 * down, read permission on the file) and, the same way, the base it needs
 * (its directory and every weight shard) and every parent delta of a chain.
 * A directory of SRC may be listed by whoever could list it in SRC.
 *
 * A `perm` is such a path, recorded from what was actually opened: the
 * file's own owner and mode come from fstat of the open descriptor, and the
 * directories from a walk of the descriptor's real path that is checked to
 * lead to that same file (so a symlink or directory swapped meanwhile is
 * found, never trusted). */
#ifndef WDELTAFS_ACCESS_H
#define WDELTAFS_ACCESS_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#define PERM_R 4 /* read */
#define PERM_X 1 /* search (directories) */

typedef struct perm_step {
    uid_t uid;
    gid_t gid;
    mode_t mode;
    unsigned need; /* PERM_R, PERM_X or both */
} perm_step;

typedef struct perm {
    size_t n;
    perm_step *s;
} perm;

/* A reader: a FUSE request's uid, gid and supplementary groups. */
#define CRED_MAX_GROUPS 256
typedef struct cred {
    uid_t uid;
    gid_t gid;
    int ngroups; /* -1: unknown (then only uid and gid count) */
    gid_t groups[CRED_MAX_GROUPS];
} cred;

/* The path of the open file fd: every directory from / (PERM_X) and the file
 * itself (`need`), from fd's real path (/proc/self/fd).  -1 with errno set
 * (EAGAIN: the path no longer leads to fd's file) and why[] filled. */
int perm_of_fd(int fd, unsigned need, perm *out, char *why, size_t whylen);
/* dir's path with its last step needing only PERM_X, then one step for st
 * with `need`: a file or directory inside dir. */
int perm_extend(const perm *dir, const struct stat *st, unsigned need, perm *out);
/* Append every step of b to a. */
int perm_append(perm *a, const perm *b);
int perm_copy(const perm *a, perm *out);
int perm_equal(const perm *a, const perm *b);
void perm_free(perm *p);

/* 1 if c may do what every step needs (uid 0 may always: it reads and
 * searches regardless of modes). */
int perm_allows(const perm *p, const cred *c);

#endif
