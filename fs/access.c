/* access.c - the access rule of access.h: permission paths recorded from
 * open descriptors, and the check of a reader against them. */
#include "access.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int add_step(perm *p, const struct stat *st, unsigned need)
{
    perm_step *s = realloc(p->s, (p->n + 1) * sizeof *s);
    if (!s) return -1;
    p->s = s;
    s[p->n++] = (perm_step){st->st_uid, st->st_gid, st->st_mode & 07777, need};
    return 0;
}

void perm_free(perm *p)
{
    free(p->s);
    p->s = NULL;
    p->n = 0;
}

int perm_of_fd(int fd, unsigned need, perm *out, char *why, size_t whylen)
{
    char link[64], path[PATH_MAX];
    struct stat fst, st;
    int dfd = -1, e = 0;
    out->n = 0;
    out->s = NULL;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t l = readlink(link, path, sizeof path - 1);
    if (fstat(fd, &fst) || l <= 0) {
        e = errno ? errno : EIO;
        snprintf(why, whylen, "cannot tell the path of what was opened (%s): %s", link, strerror(e));
        goto fail;
    }
    if ((size_t)l >= sizeof path - 1 || path[0] != '/') {
        e = ENAMETOOLONG;
        snprintf(why, whylen, "cannot tell the path of what was opened (%s)", link);
        goto fail;
    }
    path[l] = 0;
    dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) || add_step(out, &st, PERM_X)) {
        e = errno ? errno : ENOMEM;
        snprintf(why, whylen, "/: %s", strerror(e));
        goto fail;
    }
    /* walk the directories; the last name must still be the file opened */
    for (char *p = path + 1; *p;) {
        char *slash = strchr(p, '/');
        if (!slash) {
            if (fstatat(dfd, p, &st, AT_SYMLINK_NOFOLLOW) || st.st_dev != fst.st_dev || st.st_ino != fst.st_ino) {
                e = EAGAIN;
                snprintf(why, whylen, "%s changed while its permissions were being read", path);
                goto fail;
            }
            break;
        }
        *slash = 0;
        int nfd = openat(dfd, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        e = errno;
        close(dfd);
        dfd = nfd;
        if (dfd < 0 || fstat(dfd, &st)) {
            if (dfd >= 0) e = errno;
            snprintf(why, whylen, "%s: %s (while reading the permissions of its path)", path, strerror(e));
            if (e == ENOENT || e == ELOOP || e == ENOTDIR) e = EAGAIN; /* moved meanwhile */
            goto fail;
        }
        *slash = '/';
        if (add_step(out, &st, PERM_X)) {
            e = ENOMEM;
            snprintf(why, whylen, "out of memory");
            goto fail;
        }
        p = slash + 1;
    }
    close(dfd);
    if (add_step(out, &fst, need)) {
        perm_free(out);
        snprintf(why, whylen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    return 0;
fail:
    if (dfd >= 0) close(dfd);
    perm_free(out);
    errno = e;
    return -1;
}

int perm_copy(const perm *a, perm *out)
{
    out->n = 0;
    out->s = NULL;
    if (!a->n) return 0;
    if (!(out->s = malloc(a->n * sizeof *out->s))) return -1;
    memcpy(out->s, a->s, a->n * sizeof *out->s);
    out->n = a->n;
    return 0;
}

int perm_extend(const perm *dir, const struct stat *st, unsigned need, perm *out)
{
    if (perm_copy(dir, out)) return -1;
    if (out->n) out->s[out->n - 1].need = PERM_X;
    if (add_step(out, st, need)) {
        perm_free(out);
        return -1;
    }
    return 0;
}

int perm_append(perm *a, const perm *b)
{
    if (!b->n) return 0;
    perm_step *s = realloc(a->s, (a->n + b->n) * sizeof *s);
    if (!s) return -1;
    memcpy(s + a->n, b->s, b->n * sizeof *s);
    a->s = s;
    a->n += b->n;
    return 0;
}

int perm_equal(const perm *a, const perm *b)
{
    return a->n == b->n && (!a->n || !memcmp(a->s, b->s, a->n * sizeof *a->s));
}

static int in_group(const cred *c, gid_t g)
{
    if (c->gid == g) return 1;
    for (int i = 0; i < c->ngroups; i++)
        if (c->groups[i] == g) return 1;
    return 0;
}

int perm_allows(const perm *p, const cred *c)
{
    if (c->uid == 0) return 1;
    for (size_t i = 0; i < p->n; i++) {
        const perm_step *s = &p->s[i];
        unsigned bits = c->uid == s->uid ? (s->mode >> 6) & 7 : in_group(c, s->gid) ? (s->mode >> 3) & 7 : s->mode & 7;
        if ((bits & s->need) != s->need) return 0;
    }
    return 1;
}
