/* forest.c - the deltas of one directory as a forest of chains, for
 * `wdelta inspect --chain DIR`: every *.wdelta file there (by name), each
 * linked under the delta whose result is its base (by model hash), walked
 * root first.  A root is a delta no v2 delta there rebuilds the base of;
 * what no root reaches lies in loops (deltas rebuilding each other's bases:
 * a delta that reverts to its base makes one), walked from its first file.
 * Files that do not open are kept with their error, in name order. */
#include "lineage/lineage.h" /* wd_list_delta_names */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wd_forest {
    wd_delta **d;
    size_t n;
    char **bad; /* the errors of files that did not open */
    size_t nbad;
    wd_forest_entry *walk;
    size_t nwalk, chains;
    int *shown;
};

void wd_forest_close(wd_forest *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) wd_delta_close(f->d[i]);
    for (size_t i = 0; i < f->nbad; i++) free(f->bad[i]);
    free(f->d);
    free(f->bad);
    free(f->walk);
    free(f->shown);
    free(f);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_delta_name(const char *s)
{
    size_t l = strlen(s);
    return s[0] != '.' && l > 7 && !strcmp(s + l - 7, ".wdelta");
}

int wd_list_delta_names(DIR *dir, char ***names_out, size_t *n_out, wd_err *err)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(dir))) {
        if (!is_delta_name(e->d_name)) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **p = realloc(names, nc * sizeof *p);
            if (!p) {
                rc = wd_errf(err, "out of memory");
                break;
            }
            names = p;
            cap = nc;
        }
        if (!(names[n] = strdup(e->d_name))) rc = wd_errf(err, "out of memory");
        else n++;
    }
    if (rc) {
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
        return -1;
    }
    if (n) qsort(names, n, sizeof *names, cmp_str);
    *names_out = names;
    *n_out = n;
    return 0;
}

/* i and, below it, every delta not yet walked whose base i rebuilds */
static void walk(wd_forest *f, size_t i, unsigned depth, int loop)
{
    f->shown[i] = 1;
    f->walk[f->nwalk++] = (wd_forest_entry){i, depth, f->chains, loop};
    const wd_delta_info *in = wd_delta_get_info(f->d[i]);
    if (in->version != 2) return;
    for (size_t j = 0; j < f->n; j++)
        if (!f->shown[j] && !memcmp(wd_delta_get_info(f->d[j])->base_hash, in->result_hash, 32))
            walk(f, j, depth + 1, loop);
}

int wd_forest_open(const char *dir, wd_forest **out, wd_err *err)
{
    DIR *dd = opendir(dir);
    if (!dd) return wd_errk(err, errno == ENOENT ? WD_ERR_MISSING : WD_ERR_DATA, "%s: %s", dir, strerror(errno));
    wd_forest *f = calloc(1, sizeof *f);
    char **names = NULL;
    size_t nn = 0;
    int rc = f ? wd_list_delta_names(dd, &names, &nn, err) : wd_errf(err, "out of memory");
    closedir(dd);
    if (!rc && (!(f->d = calloc(nn + 1, sizeof *f->d)) || !(f->bad = calloc(nn + 1, sizeof *f->bad))))
        rc = wd_errf(err, "out of memory");
    for (size_t i = 0; !rc && i < nn; i++) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) >= (int)sizeof p) {
            rc = wd_errf(err, "%s/%s: path too long", dir, names[i]);
            break;
        }
        wd_err e1 = {0};
        wd_delta *d;
        if (wd_delta_open(p, &d, &e1) == 0) f->d[f->n++] = d;
        else if (!(f->bad[f->nbad] = strdup(e1.msg))) rc = wd_errf(err, "out of memory");
        else f->nbad++;
    }
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names);
    if (!rc && (!(f->walk = calloc(f->n + 1, sizeof *f->walk)) || !(f->shown = calloc(f->n + 1, sizeof *f->shown))))
        rc = wd_errf(err, "out of memory");
    if (rc) {
        wd_forest_close(f);
        return -1;
    }
    /* roots: no v2 delta here rebuilds their base */
    for (size_t i = 0; i < f->n; i++) {
        int has_parent = 0;
        for (size_t j = 0; j < f->n && !has_parent; j++)
            has_parent = j != i && wd_delta_get_info(f->d[j])->version == 2 &&
                         !memcmp(wd_delta_get_info(f->d[j])->result_hash, wd_delta_get_info(f->d[i])->base_hash, 32);
        if (has_parent) continue;
        f->chains++;
        walk(f, i, 0, 0);
    }
    for (size_t i = 0; i < f->n; i++)
        if (!f->shown[i]) {
            f->chains++;
            walk(f, i, 0, 1);
        }
    *out = f;
    return 0;
}

size_t wd_forest_size(const wd_forest *f)
{
    return f->n;
}

wd_delta *wd_forest_delta(const wd_forest *f, size_t i)
{
    return i < f->n ? f->d[i] : NULL;
}

size_t wd_forest_chains(const wd_forest *f)
{
    return f->chains;
}

size_t wd_forest_unreadable(const wd_forest *f)
{
    return f->nbad;
}

const char *wd_forest_unreadable_error(const wd_forest *f, size_t k)
{
    return k < f->nbad ? f->bad[k] : NULL;
}

const wd_forest_entry *wd_forest_walk(const wd_forest *f, size_t *n)
{
    *n = f->nwalk;
    return f->walk;
}
