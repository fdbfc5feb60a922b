/* chain.c - lineage: a delta whose base is the model another delta rebuilds.
 *
 * A delta's *source* is either a base model directory (wd_delta_set_base:
 * base bytes are pread from its files) or a parent delta that has a source
 * of its own (wd_delta_set_parent: base bytes are the parent's rebuilt
 * output, read with wd_read, so only the parent blocks a range overlaps are
 * decoded, recursively down to the base).  Nothing is ever written to disk.
 *
 * wd_chain_open finds the links of a chain by content hash: a link's
 * base_hash is its parent's result_hash, and the root link's base_hash is
 * the base directory's content hash.  Missing links, loops and links that
 * do not connect are errors naming the files. */
#include "internal.h"
#include "xdtype.h"
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- reading base bytes ---------------------------------------------- */
int wd_delta_read_base(wd_delta *d, const wd_ext_priv *e, unsigned char *buf, size_t n, uint64_t rel, wd_err *err)
{
    if (d->parent) {
        const wd_delta_info *pi = wd_delta_get_info(d->parent);
        ssize_t got = wd_read_nested(d->parent, d->parent_key, d->parent_cache, (size_t)e->base_fd_index, buf, n,
                                     e->base_offset + rel, err);
        if (got < 0) return wd_errprefix(err, "parent %s", d->parent->path);
        if ((size_t)got != n)
            return wd_errf(err, "parent %s: file %s ends before the base tensor %s does", d->parent->path,
                           pi->files[e->base_fd_index].name, e->base_tensor);
        return 0;
    }
    return wd_pread_full(d->base_fds[e->base_fd_index], buf, n, e->base_offset + rel,
                         d->base->files[e->base_fd_index].path, err);
}

int wd_delta_base_view(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, size_t n, uint64_t rel,
                       const unsigned char **base, wd_cache_pin **pin, wd_err *err)
{
    *pin = NULL;
    if (d->parent && d->parent_cache) {
        int r = wd_cache_pin_range(d->parent, d->parent_key, d->parent_cache, (size_t)e->base_fd_index,
                                   e->base_offset + rel, n, base, pin, err);
        if (r < 0) return wd_errprefix(err, "parent %s", d->parent->path);
        if (r > 0) return 0;
    }
    unsigned char *buf = wd_scratch_buf(s, 1, n);
    if (!buf) return wd_errf(err, "out of memory reading %zu base bytes", n);
    *base = buf;
    return wd_delta_read_base(d, e, buf, n, rel, err);
}

void wd_delta_base_done(wd_delta *d, wd_cache_pin *pin)
{
    if (pin) wd_cache_unpin(d->parent_cache, pin);
}

/* ---- attaching a parent ---------------------------------------------- */
typedef struct out_tensor {
    const char *name;
    size_t file;
    const wd_extent *ext;
} out_tensor;

static int cmp_out_tensor(const void *a, const void *b)
{
    return strcmp(((const out_tensor *)a)->name, ((const out_tensor *)b)->name);
}

static int has_source(const wd_delta *d)
{
    return d->base != NULL || d->parent != NULL;
}

int wd_delta_set_parent(wd_delta *d, wd_delta *parent, uint64_t parent_key, wd_cache *cache, wd_err *err)
{
    char a[65], b[65];
    if (has_source(d)) return wd_errf(err, "%s: a base is already attached", d->path);
    if (d->v1)
        return wd_errf(err, "%s: a deltatensors v1 file applies to a base model directory, not to a delta (%s)",
                       d->path, parent->path);
    if (!has_source(parent))
        return wd_errf(err, "%s: its parent %s has no base attached", d->path, parent->path);
    if (parent->v1)
        return wd_errf(err, "%s: %s is a deltatensors v1 file, which records no result hash to chain to", d->path,
                       parent->path);
    if (memcmp(d->info.base_hash, parent->info.result_hash, 32)) {
        wd_hex(d->info.base_hash, 32, a);
        wd_hex(parent->info.result_hash, 32, b);
        return wd_errf(err, "%s was made against the model with content hash %s, but %s rebuilds %s", d->path, a,
                       parent->path, b);
    }
    /* every tensor the parent rebuilds, by name */
    size_t n = 0;
    for (size_t f = 0; f < parent->info.nfiles; f++)
        if (parent->files[f].is_safetensors) n += parent->files[f].nextents;
    out_tensor *t = calloc(n + 1, sizeof *t);
    if (!t) return wd_errf(err, "out of memory");
    n = 0;
    for (size_t f = 0; f < parent->info.nfiles; f++) {
        if (!parent->files[f].is_safetensors) continue;
        for (size_t k = 0; k < parent->files[f].nextents; k++) {
            const wd_extent *x = &parent->files[f].extents[k];
            if (x->tensor) t[n++] = (out_tensor){x->tensor, f, x};
        }
    }
    qsort(t, n, sizeof *t, cmp_out_tensor);
    for (size_t i = 0; i < d->next; i++) {
        wd_ext_priv *e = d->ext_by_num[i];
        if (!e->base_tensor) continue;
        out_tensor key = {e->base_tensor, 0, NULL};
        const out_tensor *hit = n ? bsearch(&key, t, n, sizeof *t, cmp_out_tensor) : NULL;
        if (!hit) {
            free(t);
            return wd_errf(err, "%s: its parent %s rebuilds no tensor %s", d->path, parent->path, e->base_tensor);
        }
        if (hit->ext->dtype != wd_ext_base_dtype(e) || hit->ext->length != wd_ext_base_length(e)) {
            unsigned long long have = (unsigned long long)hit->ext->length;
            free(t);
            return wd_errf(err, "%s: tensor %s of its parent %s is %llu bytes (or another dtype), the delta expects %llu",
                           d->path, e->base_tensor, parent->path, have, (unsigned long long)wd_ext_base_length(e));
        }
        e->base_fd_index = (int)hit->file;
        e->base_offset = hit->ext->file_offset;
    }
    free(t);
    d->parent = parent;
    d->parent_key = parent_key;
    d->parent_cache = cache;
    return 0;
}

wd_delta *wd_delta_get_parent(const wd_delta *d)
{
    return d->parent;
}

const char *wd_delta_path(const wd_delta *d)
{
    return d->path;
}

/* ---- the rebuilt model's tensors, as a model ------------------------- */
int wd_delta_output_model(wd_delta *d, wd_model *m, wd_err *err)
{
    memset(m, 0, sizeof *m);
    const wd_delta_info *in = &d->info;
    m->dir = strdup(d->path);
    m->files = calloc(in->nfiles + 1, sizeof *m->files);
    if (!m->dir || !m->files) {
        wd_model_free(m);
        return wd_errf(err, "out of memory");
    }
    for (size_t f = 0; f < in->nfiles; f++) {
        if (!in->files[f].is_safetensors) continue;
        const wd_extent *e = &in->files[f].extents[0];
        if (e->length > WD_ST_MAX_HEADER + 8) {
            wd_model_free(m);
            return wd_errf(err, "%s: the header of %s is too large", d->path, in->files[f].name);
        }
        unsigned char *hdr = malloc(e->length ? e->length : 1);
        if (!hdr) {
            wd_model_free(m);
            return wd_errf(err, "out of memory");
        }
        ssize_t got = wd_read(d, 0, NULL, f, hdr, (size_t)e->length, 0, err);
        if (got != (ssize_t)e->length ||
            wd_st_parse(hdr, (size_t)e->length, in->files[f].size, in->files[f].name, &m->files[m->nfiles], err)) {
            if (got >= 0 && got != (ssize_t)e->length) wd_errf(err, "%s: short header in %s", d->path, in->files[f].name);
            free(hdr);
            wd_model_free(m);
            return wd_errprefix(err, "%s", d->path);
        }
        free(hdr);
        wd_stfile *sf = &m->files[m->nfiles++];
        free(sf->path);
        free(sf->name);
        sf->path = NULL;
        sf->name = strdup(in->files[f].name);
        size_t pl = strlen(d->path) + strlen(in->files[f].name) + 4;
        sf->path = malloc(pl);
        if (!sf->path || !sf->name) {
            wd_model_free(m);
            return wd_errf(err, "out of memory");
        }
        snprintf(sf->path, pl, "%s:%s", d->path, in->files[f].name);
    }
    if (wd_model_index(m, err)) {
        wd_model_free(m);
        return wd_errprefix(err, "%s", d->path);
    }
    return 0;
}

/* ---- chains ---------------------------------------------------------- */
#define MAX_CHAIN 64

struct wd_chain {
    size_t n;          /* links: 0 = against the base, n-1 = the file asked for */
    wd_delta **links;
    wd_model base;
    int have_base;
    unsigned char base_hash[32];
    int base_hashed;
    /* the other deltas searched (not links) */
    wd_delta **cands;
    size_t ncands;
};

static int is_wdelta_name(const char *s)
{
    size_t l = strlen(s);
    return s[0] != '.' && l > 7 && !strcmp(s + l - 7, ".wdelta");
}

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int add_cand(wd_chain *c, size_t *cap, const char *path, const char *top, int must, wd_err *err)
{
    if (same_file(path, top)) return 0;
    for (size_t i = 0; i < c->ncands; i++)
        if (same_file(path, c->cands[i]->path)) return 0;
    wd_delta *d;
    wd_err e2;
    if (wd_delta_open(path, &d, &e2)) {
        if (must) {
            *err = e2;
            return -1;
        }
        return 0; /* a damaged file found by searching a directory is not a link */
    }
    if (c->ncands == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        wd_delta **p = realloc(c->cands, nc * sizeof *p);
        if (!p) {
            wd_delta_close(d);
            return wd_errf(err, "out of memory");
        }
        c->cands = p;
        *cap = nc;
    }
    c->cands[c->ncands++] = d;
    return 0;
}

static int search_path(wd_chain *c, size_t *cap, const char *p, const char *top, wd_err *err)
{
    struct stat st;
    if (stat(p, &st)) return wd_errf(err, "%s: %s", p, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return add_cand(c, cap, p, top, 1, err);
    DIR *dir = opendir(p);
    if (!dir) return wd_errf(err, "%s: %s", p, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(dir))) {
        if (!is_wdelta_name(de->d_name)) continue;
        char full[PATH_MAX];
        if (snprintf(full, sizeof full, "%s/%s", p, de->d_name) >= (int)sizeof full) continue;
        struct stat fs;
        if (stat(full, &fs) || !S_ISREG(fs.st_mode)) continue;
        rc = add_cand(c, cap, full, top, 0, err);
    }
    closedir(dir);
    return rc;
}

static void short_hex(const unsigned char *h, char *out)
{
    wd_hex(h, 8, out); /* 16 hex digits name a model well enough in messages */
}

void wd_chain_close(wd_chain *c)
{
    if (!c) return;
    /* children first: a link reads its parent until closed */
    for (size_t i = c->n; i-- > 0;) wd_delta_close(c->links[i]);
    for (size_t i = 0; i < c->ncands; i++) wd_delta_close(c->cands[i]);
    free(c->links);
    free(c->cands);
    if (c->have_base) wd_model_free(&c->base);
    free(c);
}

static int hash_base(wd_chain *c, wd_err *err)
{
    if (c->base_hashed) return 0;
    if (wd_model_hash(&c->base, c->base_hash, err)) return wd_errprefix(err, "hashing the base");
    c->base_hashed = 1;
    return 0;
}

int wd_chain_open(const char *file, const char *const *search, size_t nsearch, const char *base_dir, wd_cache *cache,
                  wd_chain **out, wd_err *err)
{
    wd_chain *c = calloc(1, sizeof *c);
    wd_delta **rev = calloc(MAX_CHAIN + 1, sizeof *rev); /* file first, root last */
    size_t nrev = 0, cap = 0;
    char h1[17], h2[17];
    if (!c || !rev) {
        free(c);
        free(rev);
        return wd_errf(err, "out of memory");
    }
    if (wd_delta_open(file, &rev[0], err)) goto fail;
    nrev = 1;
    if (base_dir) {
        if (wd_model_open(base_dir, &c->base, err)) {
            wd_errprefix(err, "base");
            goto fail;
        }
        c->have_base = 1;
    }
    if (nsearch == 0) { /* the file's own directory */
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", file);
        char *slash = strrchr(dir, '/');
        if (slash == dir) dir[1] = 0;
        else if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
        if (search_path(c, &cap, dir, file, err)) goto fail;
    }
    for (size_t i = 0; i < nsearch; i++)
        if (search_path(c, &cap, search[i], file, err)) goto fail;
    /* the base's hash tells where the chain ends; needed as soon as there
     * is anything else to follow */
    if (c->ncands && c->have_base && hash_base(c, err)) goto fail;
    for (;;) {
        wd_delta *cur = rev[nrev - 1];
        const unsigned char *want = cur->info.base_hash;
        if (cur->info.version == 1) break; /* v1 files apply to a base directory only */
        if (c->base_hashed && !memcmp(want, c->base_hash, 32)) break;
        wd_delta *next = NULL;
        size_t ni = 0;
        for (size_t i = 0; i < c->ncands && !next; i++)
            if (c->cands[i] && c->cands[i]->info.version == 2 && !memcmp(c->cands[i]->info.result_hash, want, 32)) {
                next = c->cands[i];
                ni = i;
            }
        for (size_t i = 0; i < nrev && !next; i++) /* a loop through links already taken */
            if (!memcmp(rev[i]->info.result_hash, want, 32)) {
                if (!c->have_base) {
                    /* without a base the chain's end is not known: a delta
                     * rebuilding the base of one already taken (a revert)
                     * was followed; the chain ends before the loop */
                    for (size_t k = i + 1; k < nrev; k++)
                        for (size_t j = 0; j < c->ncands; j++)
                            if (!c->cands[j]) {
                                c->cands[j] = rev[k];
                                break;
                            }
                    nrev = i + 1;
                    goto resolved;
                }
                char msg[900];
                size_t l = 0;
                for (size_t k = i; k < nrev && l < sizeof msg - 8; k++)
                    l += (size_t)snprintf(msg + l, sizeof msg - l, "%s -> ", rev[k]->path);
                if (l < sizeof msg) snprintf(msg + l, sizeof msg - l, "%s", rev[i]->path);
                wd_errf(err, "chain loop: %s (each was made against the model the next one rebuilds), and none of "
                             "them against the base%s%s",
                        msg, c->have_base ? " " : "", c->have_base ? c->base.dir : "");
                goto fail;
            }
        if (!next) {
            if (!c->ncands && nrev == 1) break; /* a plain delta: the base's checksums decide */
            if (!c->have_base) break;
            if (hash_base(c, err)) goto fail;
            short_hex(want, h1);
            short_hex(c->base_hash, h2);
            char names[600] = "";
            size_t l = 0, shown = 0, left = 0;
            for (size_t i = 0; i < c->ncands; i++) {
                if (!c->cands[i]) continue;
                if (shown < 4 && l < sizeof names - 8) {
                    l += (size_t)snprintf(names + l, sizeof names - l, "%s%s", shown ? ", " : ": ", c->cands[i]->path);
                    shown++;
                } else {
                    left++;
                }
            }
            if (left && l < sizeof names - 8) snprintf(names + l, sizeof names - l, " and %zu more", left);
            wd_errf(err, "missing link: %s was made against the model with content hash %s..., which is neither "
                         "the base %s (%s...) nor rebuilt by any of the %zu other deltas searched%s",
                    cur->path, h1, c->base.dir, h2, shown + left, names);
            goto fail;
        }
        if (nrev == MAX_CHAIN) {
            wd_errf(err, "%s: chain longer than %d links", file, MAX_CHAIN);
            goto fail;
        }
        rev[nrev++] = next;
        c->cands[ni] = NULL;
    }
resolved:
    /* links, root first; attach sources from the root up */
    c->links = calloc(nrev, sizeof *c->links);
    if (!c->links) {
        wd_errf(err, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nrev; i++) c->links[i] = rev[nrev - 1 - i];
    c->n = nrev;
    nrev = 0;
    size_t k = 0;
    for (size_t i = 0; i < c->ncands; i++) /* compact: the unused candidates */
        if (c->cands[i]) c->cands[k++] = c->cands[i];
    c->ncands = k;
    if (c->have_base) {
        if (wd_delta_set_base(c->links[0], &c->base, err)) goto fail;
        for (size_t i = 1; i < c->n; i++)
            if (wd_delta_set_parent(c->links[i], c->links[i - 1], (uint64_t)i, cache, err)) goto fail;
    }
    free(rev);
    *out = c;
    return 0;
fail:
    for (size_t i = 0; i < nrev; i++) {
        int cand = 0;
        for (size_t j = 0; j < c->ncands; j++) cand |= c->cands[j] == rev[i];
        if (!cand) wd_delta_close(rev[i]);
    }
    free(rev);
    wd_chain_close(c);
    return -1;
}

size_t wd_chain_length(const wd_chain *c)
{
    return c->n;
}

wd_delta *wd_chain_link(const wd_chain *c, size_t i)
{
    return i < c->n ? c->links[i] : NULL;
}

wd_delta *wd_chain_top(const wd_chain *c)
{
    return c->links[c->n - 1];
}

const wd_model *wd_chain_base(const wd_chain *c)
{
    return c->have_base ? &c->base : NULL;
}

int wd_chain_base_hash(wd_chain *c, unsigned char out[32], wd_err *err)
{
    if (!c->have_base) return wd_errf(err, "no base directory given");
    if (hash_base(c, err)) return -1;
    memcpy(out, c->base_hash, 32);
    return 0;
}

/* Links in the order given: does each one's base_hash equal the result
 * hash of the one before?  Returns the index of the first that does not
 * connect, or n when all do. */
size_t wd_chain_check_order(wd_delta *const *links, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (memcmp(links[i]->info.base_hash, links[i - 1]->info.result_hash, 32)) return i;
    return n;
}

/* ---- flattening ------------------------------------------------------ */
int wd_flatten(wd_delta *d, const wd_create_opts *o, wd_create_stats *st, wd_err *err)
{
    if (!o->base_dir || !o->out_path) return wd_errf(err, "flatten needs a base directory and an output path");
    if (!has_source(d)) return wd_errf(err, "%s: no base attached", d->path);
    /* the model d rebuilds, next to the output, removed when done: the
     * fine-tune side of a delta must be a directory to create from */
    size_t tl = strlen(o->out_path) + 32;
    char *tmp = malloc(tl);
    if (!tmp) return wd_errf(err, "out of memory");
    snprintf(tmp, tl, "%s.rebuild.XXXXXX", o->out_path);
    if (!mkdtemp(tmp)) {
        int e = errno;
        free(tmp);
        return wd_errf(err, "cannot create a temporary directory next to %s: %s", o->out_path, strerror(e));
    }
    rmdir(tmp); /* wd_apply creates it itself */
    int rc = wd_apply(d, tmp, o->threads, NULL, NULL, err);
    if (!rc) {
        wd_create_opts c = *o;
        c.ft_dir = tmp;
        c.parent = NULL;
        rc = wd_create(&c, st, err);
    }
    wd_apply_remove(d, tmp); /* nothing there if wd_apply failed: it cleans up its own */
    free(tmp);
    return rc;
}
