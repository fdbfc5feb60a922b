/* resolve.c - the one chain resolver: which source each delta gets.
 *
 * A delta's source is a base directory whose model hash (of the kind the
 * delta records) is its base_hash, or a parent: a v2 delta whose
 * result_hash is that base_hash and that has a source of its own.  The
 * resolver owns the policy (FORMAT.md, "Choosing a parent"): bases are
 * looked at first; then the candidates that claim to rebuild the delta's
 * base, tried by wd_chain_parent_rank, then by path (byte order); one whose
 * own chain does not resolve, or against which the delta does not check
 * out, is passed over for the next; a candidate on the way down to the
 * delta is a loop; a chain has at most WD_CHAIN_MAX links.  It writes every
 * message: missing link, chain loop, wrong base, no base given, bases still
 * being hashed.
 *
 * What a caller keeps is its own: where the candidates and bases come from
 * and how a source is attached (wd_chain_open: files and one base
 * directory; the mount: a scan of its source and bases hashed in the
 * background), through wd_resolver_ops.  A candidate's identity (hashes,
 * parent name, digest, path) is copied when the resolver is made, so the
 * caller may hand its delta on (to a served model) once attached. */
#include "delta/delta_impl.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ATTEMPTS 4096 /* candidates tried from one top-level resolve */

typedef struct rcand {
    char *path;   /* NULL: it did not open (never a parent) */
    char *parent_name;
    unsigned version, parent_depth, base_kind, result_kind;
    unsigned char base_hash[32], result_hash[32], digest[32], parent_digest[32];
    int has_parent_digest;
    int state;    /* 0 not looked at, 1 being resolved, 2 resolved, 3 failed */
    long parent;  /* the chosen parent, -1: none (a base, or no base given) */
    long base;    /* the base attached, -1: none */
    char *reason; /* state 3 */
} rcand;

struct wd_resolver {
    const wd_resolver_ops *ops;
    void *ctx;
    unsigned flags;
    rcand *c;
    size_t n, nbases;
    char *searched;
    size_t top, attempts;
    size_t stack[WD_CHAIN_MAX + 1]; /* candidates being resolved, by depth */
};

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static size_t dir_len(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? (size_t)(s - p) : 0;
}

/* wd_chain_parent_rank over what the resolver copied */
static int rank_of(const char *cpath, const char *pname, int has_pd, const unsigned char *pd, const char *path,
                   const unsigned char *digest)
{
    if (has_pd && !memcmp(pd, digest, 32)) return 0;
    if (pname && !strcmp(pname, base_name(path))) {
        size_t a = dir_len(cpath), b = dir_len(path);
        return a == b && !strncmp(cpath, path, a) ? 1 : 2;
    }
    return 3;
}

int wd_chain_parent_rank(const wd_delta *child, const wd_delta *cand)
{
    const wd_delta_info *ci = &child->info;
    return rank_of(child->path, ci->parent_name, ci->has_parent_digest, ci->parent_digest, cand->path,
                   cand->info.digest);
}

void wd_resolver_free(wd_resolver *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->c[i].path);
        free(r->c[i].parent_name);
        free(r->c[i].reason);
    }
    free(r->c);
    free(r->searched);
    free(r);
}

int wd_resolver_new(const wd_resolver_ops *ops, void *ctx, size_t n, size_t nbases, unsigned flags,
                    const char *searched, wd_resolver **out, wd_err *err)
{
    wd_resolver *r = calloc(1, sizeof *r);
    if (!r || !(r->c = calloc(n + 1, sizeof *r->c)) || !(r->searched = strdup(searched ? searched : ""))) {
        wd_resolver_free(r);
        return wd_errf(err, "out of memory");
    }
    r->ops = ops;
    r->ctx = ctx;
    r->flags = flags;
    r->nbases = nbases;
    for (; r->n < n; r->n++) {
        rcand *c = &r->c[r->n];
        c->parent = c->base = -1;
        const wd_delta *d = ops->delta(ctx, r->n);
        if (!d) continue;
        const wd_delta_info *in = &d->info;
        if (!(c->path = strdup(d->path)) || (in->parent_name && !(c->parent_name = strdup(in->parent_name)))) {
            r->n++;
            wd_resolver_free(r);
            return wd_errf(err, "out of memory");
        }
        c->version = in->version;
        c->parent_depth = in->parent_depth;
        c->base_kind = in->base_hash_kind;
        c->result_kind = in->result_hash_kind;
        memcpy(c->base_hash, in->base_hash, 32);
        memcpy(c->result_hash, in->result_hash, 32);
        memcpy(c->digest, in->digest, 32);
        c->has_parent_digest = in->has_parent_digest;
        memcpy(c->parent_digest, in->parent_digest, 32);
    }
    *out = r;
    return 0;
}

long wd_resolver_parent(const wd_resolver *r, size_t i)
{
    return i < r->n && r->c[i].state == 2 ? r->c[i].parent : -1;
}

long wd_resolver_base(const wd_resolver *r, size_t i)
{
    return i < r->n && r->c[i].state == 2 ? r->c[i].base : -1;
}

/* Does p claim to rebuild the model c was made against? */
static int claims(const rcand *c, const rcand *p)
{
    return p != c && p->path && p->version == 2 && c->version == 2 && p->result_kind == c->base_kind &&
           !memcmp(p->result_hash, c->base_hash, 32);
}

typedef struct order {
    int rank;
    size_t k;
    const char *path;
} order;

static int cmp_order(const void *a, const void *b)
{
    const order *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    int s = strcmp(x->path, y->path);
    if (s) return s;
    return x->k < y->k ? -1 : x->k > y->k;
}

static void append(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t cap, const char *fmt, ...)
{
    size_t l = strlen(buf);
    if (l + 16 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + l, cap - l, fmt, ap);
    va_end(ap);
}

/* the messages, and what they need, gathered while resolving one delta */
typedef struct findings {
    int waiting;           /* a base is still being hashed */
    char bases[600];       /* the ready bases: "DIR (HASH...)", for the mount */
    const char *base_dir;  /* the first ready base and its hash, for files */
    unsigned char base_hash[32];
    size_t nc, loops;      /* candidates, and those on the way down */
    char tried[700];       /* files: "PATH (why); ..." */
    long first;            /* the mount: the first that failed, and why */
    char why[1200];
    int loop;              /* the mount: a loop among the candidates' failures */
} findings;

static int fail(wd_resolver *r, size_t i, wd_err *err)
{
    rcand *c = &r->c[i];
    c->state = 3;
    free(c->reason);
    c->reason = strdup(err->msg);
    return -1;
}

/* The message for delta i, none of whose sources can be used. */
static int no_source(wd_resolver *r, size_t i, findings *f, wd_err *err)
{
    rcand *c = &r->c[i];
    const char *kn = wd_hash_kind_name(c->base_kind);
    const char *pname = c->parent_name ? c->parent_name : "(name not recorded)";
    int linked = c->parent_name || c->parent_depth;
    char h1[65], h2[65];
    wd_hex(c->base_hash, 32, h1);
    if (f->base_dir) wd_hex(f->base_hash, 32, h2);
    if (r->flags & WD_RESOLVE_MOUNT) { /* the mount names the delta itself: "not serving PATH: ..." */
        if (f->first >= 0) return wd_errk(err, WD_ERR_MISSING, "%s", f->why);
        if (f->loop || f->loops)
            return wd_errk(err, WD_ERR_MISSING,
                           "chain loop: every delta that rebuilds its base (%s...) is, through its own parents, "
                           "made against this delta's result", h1);
        if (f->waiting)
            return wd_errk(err, WD_ERR_MISSING, "needs the base with %s %s; bases are still being hashed", kn, h1);
        if (c->version == 2 && ((c->parent_name && c->parent_name[0]) || c->parent_depth))
            return wd_errk(err, WD_ERR_MISSING,
                           "missing link: its parent %s (a chain link, depth %u) is not under the source: no delta "
                           "there rebuilds the model with %s %s (add the parent delta beside it)",
                           c->parent_name && c->parent_name[0] ? c->parent_name : "(name not recorded)",
                           c->parent_depth, kn, h1);
        if (!r->nbases)
            return wd_errk(err, WD_ERR_MISSING,
                           "no base given: it needs the base with %s %s (pass its directory with -o base=DIR)", kn, h1);
        return wd_errk(err, WD_ERR_MISSING,
                       "wrong base: it was made against the base with %s %s, and no base given has it (%s); pass "
                       "its directory with -o base=DIR",
                       kn, h1, f->bases[0] ? f->bases : "none could be hashed");
    }
    if (linked) {
        char notbase[400] = "";
        if (f->base_dir) snprintf(notbase, sizeof notbase, " (nor is it the base %s, %s)", f->base_dir, h2);
        if (f->nc)
            return wd_errk(err, WD_ERR_MISSING,
                           "missing link: %s is a chain link (depth %u) made against the model its parent %s "
                           "rebuilds (%s %s)%s; no delta that claims to rebuild it can be used: %s. Put the parent "
                           "beside it or name its directory with --chain DIR",
                           c->path, c->parent_depth, pname, kn, h1, notbase, f->tried);
        return wd_errk(err, WD_ERR_MISSING,
                       "missing link: %s is a chain link (depth %u) made against the model its parent %s rebuilds "
                       "(%s %s)%s; no delta searched (%s) rebuilds it. Put %s beside it or name its directory "
                       "with --chain DIR",
                       c->path, c->parent_depth, pname, kn, h1, notbase, r->searched,
                       c->parent_name ? c->parent_name : "the parent");
    }
    if (f->base_dir) {
        /* a direct delta: the base given is the cause; deltas that claim
         * to rebuild its base are only named (their own failures, loops
         * through this one included, are consequences) */
        char names[400] = "";
        size_t shown = 0;
        for (size_t k = 0; k < r->n; k++)
            if (claims(c, &r->c[k]) && shown++ < 4) append(names, sizeof names, "%s%s", names[0] ? ", " : "", r->c[k].path);
        return wd_errk(err, WD_ERR_MISSING, "wrong base: %s was made against the base with %s %s, but %s has %s%s%s%s",
                       c->path, kn, h1, f->base_dir, h2,
                       f->nc ? " (and none of the deltas that rebuild that model leads to that base: " : "", names,
                       f->nc ? ")" : "");
    }
    return wd_errk(err, WD_ERR_MISSING, "%s: no base given", c->path);
}

/* Give delta i a source (see the top of the file). */
static int resolve(wd_resolver *r, size_t i, size_t depth, wd_err *err)
{
    rcand *c = &r->c[i];
    const wd_resolver_ops *ops = r->ops;
    int mount = !!(r->flags & WD_RESOLVE_MOUNT);
    if (c->state == 2) return 0;
    if (c->state == 3) return wd_errk(err, WD_ERR_MISSING, "%s", c->reason ? c->reason : "cannot be used");
    if (!c->path) return wd_errk(err, WD_ERR_MISSING, "it did not open");
    if (c->state == 1)
        return wd_errk(err, WD_ERR_MISSING, "chain loop: this delta is (through its parents) its own parent");
    if (depth >= WD_CHAIN_MAX)
        return wd_errf(err, "%s: chain longer than %d links", r->c[r->top].path, WD_CHAIN_MAX);
    if (++r->attempts > MAX_ATTEMPTS)
        return wd_errf(err, "%s: more than %d candidate links tried; too many deltas claim the same models",
                       r->c[r->top].path, MAX_ATTEMPTS);
    c->state = 1;
    r->stack[depth] = i;
    findings *f = calloc(1, sizeof *f);
    if (!f) {
        wd_errf(err, "out of memory");
        return fail(r, i, err);
    }
    f->first = -1;
    /* a base with the hash the delta records */
    for (size_t j = 0; j < r->nbases; j++) {
        const char *dir = NULL;
        unsigned char h[32];
        int st = ops->base(r->ctx, j, c->base_kind, &dir, h, err);
        if (st < 0) goto failed;
        if (st == WD_BASE_WAITING) f->waiting = 1;
        if (st != WD_BASE_READY) continue;
        if (!memcmp(h, c->base_hash, 32)) {
            if (ops->attach_base(r->ctx, i, j, err)) goto failed;
            c = &r->c[i];
            c->base = (long)j;
            c->state = 2;
            free(f);
            return 0;
        }
        if (!f->base_dir) {
            f->base_dir = dir;
            memcpy(f->base_hash, h, 32);
        }
        char h8[17];
        wd_hex(h, 8, h8);
        if (strlen(f->bases) < sizeof f->bases - 40)
            append(f->bases, sizeof f->bases, "%s%s (%s...)", f->bases[0] ? ", " : "", dir, h8);
    }
    int open = !!(r->flags & WD_RESOLVE_UNCHECKED);
    if (open && !c->parent_name && !c->parent_depth) {
        /* no base given: a delta that records no parent was made against a
         * base directory, so the chain ends here (a delta that happens to
         * rebuild that base, e.g. a revert, is not its parent) */
        c->state = 2;
        free(f);
        return 0;
    }
    /* the candidates, best first */
    order *o = malloc((r->n + 1) * sizeof *o);
    if (!o) {
        wd_errf(err, "out of memory");
        goto failed;
    }
    for (size_t k = 0; k < r->n; k++)
        if (claims(c, &r->c[k])) {
            const rcand *p = &r->c[k];
            o[f->nc].rank = rank_of(c->path, c->parent_name, c->has_parent_digest, c->parent_digest, p->path, p->digest);
            o[f->nc].path = p->path;
            o[f->nc++].k = k;
        }
    if (f->nc > 1) qsort(o, f->nc, sizeof *o, cmp_order);
    for (size_t q = 0; q < f->nc; q++) {
        size_t k = o[q].k;
        rcand *p = &r->c[k];
        wd_err e2 = {{0}, 0};
        if (p->state == 1) { /* on the way down to here: name the loop */
            f->loops++;
            if (!mount) {
                size_t s = 0;
                while (s < depth && r->stack[s] != k) s++;
                char lp[400] = "";
                for (size_t s2 = s; s2 <= depth; s2++) append(lp, sizeof lp, "%s -> ", r->c[r->stack[s2]].path);
                append(lp, sizeof lp, "%s", p->path);
                append(f->tried, sizeof f->tried, "%s%s (chain loop: %s)", f->tried[0] ? "; " : "", p->path, lp);
            }
            continue;
        }
        if (resolve(r, k, depth + 1, &e2)) {
            if (f->first < 0) {
                f->first = (long)k;
                snprintf(f->why, sizeof f->why, "its parent %s is unavailable: %s", p->path, e2.msg);
            }
            if (strstr(e2.msg, "chain loop")) f->loop = 1;
        } else if (open || !ops->attach_parent(r->ctx, i, k, &e2)) {
            c = &r->c[i];
            c->parent = (long)k;
            c->state = 2;
            free(o);
            free(f);
            return 0;
        } else {
            if (ops->log) {
                char line[1600];
                snprintf(line, sizeof line, "%s: %s claims to rebuild its base but is passed over: %s", r->c[i].path,
                         p->path, e2.msg);
                ops->log(r->ctx, line);
            }
            if (f->first < 0) {
                f->first = (long)k;
                snprintf(f->why, sizeof f->why, "%s does not fit it: %s", p->path, e2.msg);
            }
        }
        append(f->tried, sizeof f->tried, "%s%s (%s)", f->tried[0] ? "; " : "", p->path, e2.msg);
    }
    free(o);
    c = &r->c[i];
    if (open && f->nc == f->loops) { /* no base given: the chain ends here */
        c->state = 2;
        free(f);
        return 0;
    }
    no_source(r, i, f, err);
failed:
    free(f);
    return fail(r, i, err);
}

int wd_resolver_resolve(wd_resolver *r, size_t i, wd_err *err)
{
    if (i >= r->n) return wd_errf(err, "no delta %zu to resolve", i);
    r->top = i;
    r->attempts = 0;
    return resolve(r, i, 0, err);
}
