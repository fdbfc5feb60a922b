/* chain.c - lineage: a delta whose base is the model another delta rebuilds.
 *
 * A delta's *source* is either a base model directory (wd_delta_set_base:
 * base bytes are pread from its files) or a parent delta that has a source
 * of its own (wd_delta_set_parent: base bytes are the parent's rebuilt
 * output, read with wd_read, so only the parent blocks a range overlaps are
 * decoded, recursively down to the base).  Nothing is ever written to disk.
 *
 * wd_chain_open finds the links of a chain by model hash: a link's
 * base_hash is its parent's result_hash, and the root link's base_hash is
 * the base directory's hash (of the kind the link records).  When several
 * deltas claim to rebuild a link's base, they are tried in one order
 * (wd_chain_parent_rank, then path) and the first that checks out is the
 * parent (FORMAT.md, "Choosing a parent").  Missing links, loops and links
 * that do not connect are errors naming the files and what to do.  That
 * choice and its messages are the resolver's (resolve.c, shared with the
 * mount): this file gives it the deltas searched and the base directory. */
#include "delta/delta_impl.h"
#include "lineage/lineage.h" /* wd_list_delta_names */
#include "delta/xdtype.h"
#include "cache/cache_int.h" /* wd_read_nested, wd_cache_pin_range: the parent source */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the parent source: base bytes are the parent's rebuilt output,
 * read through the block cache (wd_read_nested: the calling thread already
 * holds a decoder slot), pinned in place where a range lies in one block */
static int parent_read(wd_delta *d, const wd_ext_priv *e, unsigned char *buf, size_t n, uint64_t rel, wd_err *err)
{
    const wd_delta_info *pi = wd_delta_get_info(d->parent);
    ssize_t got = wd_read_nested(d->parent, d->parent_key, d->parent_cache, (size_t)e->base_fd_index, buf, n,
                                 e->base_offset + rel, err);
    if (got < 0) return wd_errprefix(err, "parent %s", d->parent->path);
    if ((size_t)got != n)
        return wd_errf(err, "parent %s: file %s ends before the base tensor %s does", d->parent->path,
                       pi->files[e->base_fd_index].name, e->base_tensor);
    return 0;
}

static int parent_view(wd_delta *d, const wd_ext_priv *e, size_t n, uint64_t rel, const unsigned char **base,
                       wd_cache_pin **pin, wd_err *err)
{
    if (!d->parent_cache) return 0;
    int r = wd_cache_pin_range(d->parent, d->parent_key, d->parent_cache, (size_t)e->base_fd_index,
                               e->base_offset + rel, n, base, pin, err);
    if (r < 0) return wd_errprefix(err, "parent %s", d->parent->path);
    return r;
}

static void parent_done(wd_delta *d, wd_cache_pin *pin)
{
    wd_cache_unpin(d->parent_cache, pin);
}

static const wd_base_source parent_source = {parent_read, parent_view, parent_done};

/* ---- attaching a parent ---------------------------------------------- */
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
    /* every tensor the parent rebuilds, by name, from its rebuilt headers
     * (not its extents: small tensors share one unnamed extent) */
    wd_model pm;
    if (wd_delta_output_model(parent, &pm, err)) return wd_errprefix(err, "%s: its parent", d->path);
    for (size_t i = 0; i < d->next; i++) {
        wd_ext_priv *e = d->ext_by_num[i];
        if (!e->base_tensor) continue;
        size_t fi;
        const wd_tensor *t = wd_model_find(&pm, e->base_tensor, &fi);
        int of = t ? wd_delta_find_file(parent, pm.files[fi].name) : -1;
        if (!t || of < 0) {
            wd_model_free(&pm);
            return wd_errf(err, "%s: its parent %s rebuilds no tensor %s", d->path, parent->path, e->base_tensor);
        }
        if (t->dtype != wd_ext_base_dtype(e) || t->length != wd_ext_base_length(e)) {
            unsigned long long have = (unsigned long long)t->length;
            wd_model_free(&pm);
            return wd_errf(err, "%s: tensor %s of its parent %s is %llu bytes (or another dtype), the delta expects %llu",
                           d->path, e->base_tensor, parent->path, have, (unsigned long long)wd_ext_base_length(e));
        }
        e->base_fd_index = of;
        e->base_offset = t->offset;
    }
    wd_model_free(&pm);
    d->parent = parent;
    d->parent_key = parent_key;
    d->parent_cache = cache;
    d->src = &parent_source;
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
            wd_st_parse_nocopy(hdr, (size_t)e->length, in->files[f].size, in->files[f].name, &m->files[m->nfiles],
                               err)) {
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

/* ---- is this the base? ------------------------------------------------ */
int wd_delta_check_base(const wd_delta *d, const wd_model *base, wd_err *err)
{
    unsigned kind = d->info.base_hash_kind;
    unsigned char h[32];
    char a[65], b[65];
    if (wd_model_hash_kind(base, kind, h, err)) return wd_errprefix(err, "hashing the base %s", base->dir);
    if (!memcmp(h, d->info.base_hash, 32)) return 0;
    wd_hex(d->info.base_hash, 32, a);
    wd_hex(h, 32, b);
    if (d->info.parent_name || d->info.parent_depth)
        return wd_errk(err, WD_ERR_MISSING,
                       "%s is a chain link made against the model its parent %s rebuilds (%s %s), not a base "
                       "directory; %s has %s. Give the parent with --chain DIR or put it beside the file",
                       d->path, d->info.parent_name ? d->info.parent_name : "(name not recorded)",
                       wd_hash_kind_name(kind), a, base->dir, b);
    return wd_errk(err, WD_ERR_MISSING, "wrong base: %s was made against the base with %s %s, but %s has %s",
                   d->path, wd_hash_kind_name(kind), a, base->dir, b);
}

/* ---- chains ---------------------------------------------------------- */
struct wd_chain {
    size_t n;          /* links: 0 = against the base, n-1 = the file asked for */
    wd_delta **links;
    wd_model base;
    int have_base;
    unsigned char base_hash[3][32]; /* by kind (WD_HASH_V1, WD_ID_V2) */
    int base_hashed[3];
    int base_unchecked; /* WD_OPEN_BLOCK_CHECKED_BASE took the base unhashed */
    wd_delta **nodes;  /* 0: the file; then every delta searched */
    size_t nnodes, cap;
    char searched[600]; /* where candidates were looked for, for messages */
};

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int add_node(wd_chain *c, wd_delta *d, wd_err *err)
{
    if (c->nnodes == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16;
        wd_delta **p = realloc(c->nodes, nc * sizeof *p);
        if (!p) return wd_errf(err, "out of memory");
        c->nodes = p;
        c->cap = nc;
    }
    c->nodes[c->nnodes++] = d;
    return 0;
}

static int add_cand(wd_chain *c, const char *path, int must, wd_err *err)
{
    for (size_t i = 0; i < c->nnodes; i++)
        if (same_file(path, c->nodes[i]->path)) return 0;
    wd_delta *d;
    wd_err e2;
    if (wd_delta_open(path, &d, &e2)) {
        if (must) {
            *err = e2;
            return -1;
        }
        return 0; /* a damaged file found by searching a directory is not a link */
    }
    if (add_node(c, d, err)) {
        wd_delta_close(d);
        return -1;
    }
    return 0;
}

static int search_path(wd_chain *c, const char *p, wd_err *err)
{
    struct stat st;
    size_t sl = strlen(c->searched);
    if (sl < sizeof c->searched - 8)
        snprintf(c->searched + sl, sizeof c->searched - sl, "%s%s", sl ? ", " : "", p);
    if (stat(p, &st)) return wd_errk(err, WD_ERR_MISSING, "%s: %s", p, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return add_cand(c, p, 1, err);
    DIR *dir = opendir(p);
    if (!dir) return wd_errf(err, "%s: %s", p, strerror(errno));
    char **names = NULL;
    size_t n = 0;
    int rc = wd_list_delta_names(dir, &names, &n, err);
    closedir(dir);
    for (size_t i = 0; i < n; i++) {
        char full[PATH_MAX];
        struct stat fs;
        if (!rc && snprintf(full, sizeof full, "%s/%s", p, names[i]) < (int)sizeof full && !stat(full, &fs) &&
            S_ISREG(fs.st_mode))
            rc = add_cand(c, full, 0, err);
        free(names[i]);
    }
    free(names);
    return rc;
}

void wd_chain_close(wd_chain *c)
{
    if (!c) return;
    /* children first: a link reads its parent until closed */
    for (size_t i = c->n; i-- > 0;) wd_delta_close(c->links[i]);
    for (size_t i = 0; i < c->nnodes; i++) {
        int link = 0;
        for (size_t k = 0; k < c->n; k++) link |= c->links[k] == c->nodes[i];
        if (!link) wd_delta_close(c->nodes[i]);
    }
    free(c->links);
    free(c->nodes);
    if (c->have_base) wd_model_free(&c->base);
    free(c);
}

static int hash_base(wd_chain *c, unsigned kind, wd_err *err)
{
    if (kind != WD_HASH_V1 && kind != WD_ID_V2) return wd_errf(err, "unknown model hash kind %u", kind);
    if (c->base_hashed[kind]) return 0;
    if (wd_model_hash_kind(&c->base, kind, c->base_hash[kind], err)) return wd_errprefix(err, "hashing the base");
    c->base_hashed[kind] = 1;
    return 0;
}

/* Does cand claim to rebuild the model child was made against? */
static int claims(const wd_delta *child, const wd_delta *cand)
{
    return cand != child && cand->info.version == 2 && child->info.version == 2 &&
           cand->info.result_hash_kind == child->info.base_hash_kind &&
           !memcmp(cand->info.result_hash, child->info.base_hash, 32);
}

int wd_delta_check_source(wd_delta *d, wd_err *err)
{
    if (d->v1) return 0; /* matched by its parent_hash; v1 blocks carry no checksums */
    if (!has_source(d)) return wd_errf(err, "%s: no base attached", d->path);
    for (size_t i = 0; i < d->next; i++) {
        const wd_ext_priv *e = d->ext_by_num[i];
        if (!e->base_tensor || !e->pub.nblocks) continue;
        unsigned char *buf = malloc(d->blocks[e->pub.first_block].out_len + 1);
        if (!buf) return wd_errf(err, "out of memory");
        int rc = wd_delta_decode_block(d, e->pub.first_block, buf, err);
        free(buf);
        if (rc) return wd_errprefix(err, "the first block of tensor %s does not decode against it", e->pub.tensor);
        return 0;
    }
    return 0; /* nothing of d reads its source */
}

/* Undo wd_delta_set_parent (the candidate did not check out). */
static void detach_parent(wd_delta *d)
{
    d->parent = NULL;
    d->parent_key = 0;
    d->parent_cache = NULL;
    d->src = NULL;
}

/* ---- the resolver's view of a chain being opened (resolve.c decides):
 * the deltas searched, the one base directory, sources attached directly
 * (the links are checked reading their parents without the cache) */
static const wd_delta *chain_delta(void *ctx, size_t i)
{
    return ((wd_chain *)ctx)->nodes[i];
}

static int chain_base(void *ctx, size_t j, unsigned kind, const char **dir, unsigned char hash[32], wd_err *err)
{
    wd_chain *c = ctx;
    (void)j;
    if (hash_base(c, kind, err)) return -1;
    *dir = c->base.dir;
    memcpy(hash, c->base_hash[kind], 32);
    return WD_BASE_READY;
}

static int chain_attach_base(void *ctx, size_t i, size_t j, wd_err *err)
{
    wd_chain *c = ctx;
    (void)j;
    return wd_delta_set_base(c->nodes[i], &c->base, err);
}

static int chain_attach_parent(void *ctx, size_t i, size_t k, wd_err *err)
{
    wd_chain *c = ctx;
    wd_delta *d = c->nodes[i];
    if (!wd_delta_set_parent(d, c->nodes[k], 0, NULL, err) && !wd_delta_check_source(d, err)) return 0;
    detach_parent(d);
    return -1;
}

static const wd_resolver_ops chain_ops = {chain_delta, chain_base, chain_attach_base, chain_attach_parent, NULL};

int wd_chain_open(const char *file, const char *const *search, size_t nsearch, const char *base_dir, wd_cache *cache,
                  wd_chain **out, wd_err *err)
{
    wd_chain *c = calloc(1, sizeof *c);
    wd_delta *top = NULL;
    if (!c) return wd_errf(err, "out of memory");
    if (wd_delta_open(file, &top, err)) goto fail;
    if (add_node(c, top, err)) {
        wd_delta_close(top);
        goto fail;
    }
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
        if (search_path(c, dir, err)) goto fail;
    }
    for (size_t i = 0; i < nsearch; i++)
        if (search_path(c, search[i], err)) goto fail;
    /* which delta is whose parent: the resolver's choice (resolve.c) */
    wd_resolver *r = NULL;
    if (wd_resolver_new(&chain_ops, c, c->nnodes, c->have_base, c->have_base ? 0 : WD_RESOLVE_UNCHECKED, c->searched,
                        &r, err) ||
        wd_resolver_resolve(r, 0, err)) {
        wd_resolver_free(r);
        goto fail;
    }
    /* the links, root first */
    size_t n = 0;
    for (long k = 0; k >= 0; k = wd_resolver_parent(r, (size_t)k)) n++;
    if (!(c->links = calloc(n, sizeof *c->links))) {
        wd_resolver_free(r);
        wd_errf(err, "out of memory");
        goto fail;
    }
    c->n = n;
    size_t j = n;
    for (long k = 0; k >= 0; k = wd_resolver_parent(r, (size_t)k)) c->links[--j] = c->nodes[k];
    wd_resolver_free(r);
    /* the links were checked reading their parents directly: now through
     * the cache, under keys 1..n-1 (link i reads link i-1 under key i) */
    if (c->have_base && cache)
        for (size_t i = 1; i < c->n; i++) {
            detach_parent(c->links[i]);
            if (wd_delta_set_parent(c->links[i], c->links[i - 1], (uint64_t)i, cache, err)) goto fail;
        }
    *out = c;
    return 0;
fail:
    wd_chain_close(c);
    return -1;
}

/* WD_OPEN_BLOCK_CHECKED_BASE: d (v2, recording no parent, so made against a
 * base directory) gets base_dir unhashed when it fits there: its base
 * tensors present with their dtypes and lengths, and its first block that
 * reads the base decoding to its output checksum.  0 with *out set (d is
 * the chain's), or -1: nothing kept, d closed, the full resolution decides
 * (and words the error). */
static int open_block_checked(wd_delta *d, const char *base_dir, wd_chain **out)
{
    wd_err e2;
    wd_chain *c = calloc(1, sizeof *c);
    if (!c || add_node(c, d, &e2)) {
        free(c);
        wd_delta_close(d);
        return -1;
    }
    if (wd_model_open(base_dir, &c->base, &e2)) goto fail;
    c->have_base = 1;
    if (wd_delta_set_base(d, &c->base, &e2) || wd_delta_check_source(d, &e2)) goto fail;
    if (!(c->links = calloc(1, sizeof *c->links))) goto fail;
    c->links[0] = d;
    c->n = 1;
    c->base_unchecked = 1;
    *out = c;
    return 0;
fail:
    wd_chain_close(c); /* closes d, a node */
    return -1;
}

int wd_chain_check_base(wd_chain *c, wd_err *err)
{
    /* only a block that failed to decode (delta_read.c names it: "block N
     * (delta offset M)") can be the base's doing: an interruption or a
     * failed write is not hashed for */
    if (!c || !c->base_unchecked || !c->n || !strstr(err->msg, "(delta offset ")) return 0;
    const wd_delta *root = c->links[0];
    unsigned kind = root->info.base_hash_kind;
    wd_err e2;
    if (hash_base(c, kind, &e2)) return 0; /* cannot tell: the failure already reported stands */
    c->base_unchecked = 0;
    if (!memcmp(c->base_hash[kind], root->info.base_hash, 32)) return 0;
    char h1[65], h2[65];
    wd_hex(root->info.base_hash, 32, h1);
    wd_hex(c->base_hash[kind], 32, h2);
    return wd_errk(err, WD_ERR_MISSING, "wrong base: %s was made against the base with %s %s, but %s has %s",
                   root->path, wd_hash_kind_name(kind), h1, c->base.dir, h2);
}

int wd_open_with_base(const char *file, const char *const *search, size_t nsearch, const char *base_dir,
                      unsigned flags, wd_cache *cache, wd_chain **out, wd_err *err)
{
    wd_delta *d = NULL;
    if (wd_delta_open(file, &d, err)) return -1;
    if (d->info.version == 2) { /* maybe a chain link: resolved through its parents */
        if ((flags & WD_OPEN_BLOCK_CHECKED_BASE) && base_dir && !d->info.parent_name && !d->info.parent_depth)
            return open_block_checked(d, base_dir, out) ? wd_chain_open(file, search, nsearch, base_dir, cache, out, err)
                                                        : 0;
        wd_delta_close(d);
        return wd_chain_open(file, search, nsearch, base_dir, cache, out, err);
    }
    wd_chain *c = calloc(1, sizeof *c);
    if (!c || add_node(c, d, err)) {
        if (!c) wd_errf(err, "out of memory");
        wd_delta_close(d);
        free(c);
        return -1;
    }
    if (!base_dir) {
        wd_errk(err, WD_ERR_USAGE, "%s is a deltatensors v1 file: it needs its base directory", file);
        goto fail;
    }
    if (wd_model_open(base_dir, &c->base, err)) goto fail;
    c->have_base = 1;
    if ((flags & WD_OPEN_CHECK_V1) && wd_delta_check_base(d, &c->base, err)) goto fail;
    if (flags & WD_OPEN_V1_BASE_DTYPE) wd_delta_v1_use_base_dtype(d, 1);
    if (wd_delta_set_base(d, &c->base, err)) goto fail;
    if (!(c->links = calloc(1, sizeof *c->links))) {
        wd_errf(err, "out of memory");
        goto fail;
    }
    c->links[0] = d;
    c->n = 1;
    *out = c;
    return 0;
fail:
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
    if (!c->have_base) return wd_errk(err, WD_ERR_USAGE, "no base directory given");
    unsigned kind = c->n ? c->links[0]->info.base_hash_kind : WD_ID_V2;
    if (hash_base(c, kind, err)) return -1;
    memcpy(out, c->base_hash[kind], 32);
    return 0;
}

/* Links in the order given: does each one's base_hash equal the result
 * hash of the one before?  Returns the index of the first that does not
 * connect, or n when all do. */
size_t wd_chain_check_order(wd_delta *const *links, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (!claims(links[i], links[i - 1])) return i;
    return n;
}
