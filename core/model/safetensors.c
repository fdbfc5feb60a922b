/* safetensors.c - parse, validate and build safetensors headers.
 *
 * A header is an 8-byte little-endian length N and N bytes of JSON; tensor
 * data follows, each tensor at data_offsets relative to byte 8+N.  Every
 * rule the format implies is checked here, so that nothing downstream ever
 * trusts an offset it was not given by this file. */
#include "model/model_int.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SAFE_INT 9007199254740992.0 /* 2^53: cJSON numbers are doubles */

void wd_st_free(wd_stfile *f)
{
    if (!f) return;
    free(f->tensors); /* and the names and dimensions stored after the records */
    free(f->header);
    free(f->path);
    free(f->name);
    memset(f, 0, sizeof *f);
}

static int as_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d >= MAX_SAFE_INT || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_metadata(const cJSON *m, const char *fname, wd_err *err)
{
    if (!cJSON_IsObject(m)) return wd_errf(err, "%s: __metadata__ is not an object", fname);
    for (const cJSON *it = m->child; it; it = it->next)
        if (!cJSON_IsString(it))
            return wd_errf(err, "%s: __metadata__ value '%s' is not a string", fname, it->string);
    return 0;
}

/* ---- where names and dimensions are kept --------------------------------
 * A parsed file's tensor names and dimensions are stored in the allocation
 * of its tensors array, after the records (one block: no malloc overhead
 * per tensor, and wd_st_free frees it all).  Parsed against a donor model
 * (a fine-tune against its base), a tensor whose name the donor holds uses
 * the donor's copy of the name, and of the dimensions when they are the
 * same: most of a fine-tune's header text costs nothing a second time. */
typedef struct names_room {
    wd_donor_find find;    /* NULL: no donor */
    const void *donor;
    char *at, *end;        /* the second pass: the free room */
} names_room;

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* The bytes tensor `name` (nd dimensions dims) needs of the room; *dn and
 * *dd: the donor's name and dimensions it can use instead, else NULL. */
static size_t room_for(const names_room *r, const char *name, const uint64_t *dims, int nd, const char **dn,
                       const uint64_t **dd)
{
    const wd_tensor *d = r->find ? r->find(r->donor, name) : NULL;
    *dn = d ? d->name : NULL;
    *dd = d && d->ndim == nd && (!nd || !memcmp(d->shape, dims, (size_t)nd * sizeof *dims)) ? d->shape : NULL;
    return (*dn ? 0 : align8(strlen(name) + 1)) + (*dd ? 0 : (size_t)nd * sizeof *dims);
}

/* The dimensions of a tensor entry's "shape", 0 if it is no list of at
 * most WD_MAX_DIMS integers (parse_tensor says why). */
static int shape_dims(const cJSON *sh, uint64_t *dims, int *nd, int *bad_at);

static int parse_tensor(const char *name, const cJSON *it, const char *fname, uint64_t data_size,
                        uint64_t data_start, names_room *room, wd_tensor *t, wd_err *err)
{
    if (!*name) return wd_errf(err, "%s: a tensor has an empty name", fname);
    if (!wd_utf8_valid(name, strlen(name))) return wd_errf(err, "%s: tensor name is not valid UTF-8", fname);
    if (!cJSON_IsObject(it)) return wd_errf(err, "%s: tensor %s: entry is not an object", fname, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dt)) return wd_errf(err, "%s: tensor %s: dtype missing or not a string", fname, name);
    if (!cJSON_IsArray(sh)) return wd_errf(err, "%s: tensor %s: shape missing or not a list", fname, name);
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return wd_errf(err, "%s: tensor %s: data_offsets must be a list of two integers", fname, name);
    if (strlen(dt->valuestring) >= sizeof t->dtype_name || !*dt->valuestring)
        return wd_errf(err, "%s: tensor %s: dtype '%.40s' is not a dtype", fname, name, dt->valuestring);
    int nd = cJSON_GetArraySize(sh), bad_at;
    if (nd > WD_MAX_DIMS) return wd_errf(err, "%s: tensor %s: %d dimensions (at most %d)", fname, name, nd, WD_MAX_DIMS);
    uint64_t dims[WD_MAX_DIMS];
    if (!shape_dims(sh, dims, &nd, &bad_at))
        return wd_errf(err, "%s: tensor %s: shape[%d] is not a non-negative integer", fname, name, bad_at);
    /* the name, then its dimensions (8-byte aligned), in the room after
     * the records or the donor's: no fixed array of WD_MAX_DIMS per
     * tensor, no allocation of its own (a model may have 100,000) */
    const char *dn;
    const uint64_t *dd;
    size_t need = room_for(room, name, dims, nd, &dn, &dd);
    if (need > (size_t)(room->end - room->at))
        return wd_errf(err, "%s: tensor %s: no room left for its name (the header changed while read?)", fname, name);
    char *own = room->at;
    room->at += need;
    if (dn) t->name = (char *)dn;
    else {
        t->name = own;
        memcpy(own, name, strlen(name) + 1);
        own += align8(strlen(name) + 1);
    }
    if (dd) t->shape = (uint64_t *)dd;
    else {
        t->shape = (uint64_t *)(void *)own;
        if (nd) memcpy(t->shape, dims, (size_t)nd * sizeof *dims);
    }
    strcpy(t->dtype_name, dt->valuestring);
    t->dtype = wd_dtype_from_name(t->dtype_name);
    t->ndim = nd;
    uint64_t ne = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        if (dims[i] && ne > UINT64_MAX / dims[i]) overflow = 1;
        else ne *= dims[i];
    }
    if (overflow && ne) return wd_errf(err, "%s: tensor %s: shape product overflows 64 bits", fname, name);
    if (overflow) ne = 0; /* a zero dimension makes any product zero */
    t->nelem = ne;
    uint64_t b, e;
    if (as_u64(cJSON_GetArrayItem(of, 0), &b) || as_u64(cJSON_GetArrayItem(of, 1), &e))
        return wd_errf(err, "%s: tensor %s: data_offsets must be non-negative integers", fname, name);
    if (e < b) return wd_errf(err, "%s: tensor %s: data_offsets end %llu before begin %llu", fname, name,
                              (unsigned long long)e, (unsigned long long)b);
    if (e > data_size)
        return wd_errf(err, "%s: tensor %s: data_offsets [%llu, %llu) run past the data (%llu bytes)", fname, name,
                       (unsigned long long)b, (unsigned long long)e, (unsigned long long)data_size);
    unsigned es = wd_dtype_size(t->dtype);
    if (es) {
        if (ne > UINT64_MAX / es)
            return wd_errf(err, "%s: tensor %s: byte size overflows 64 bits", fname, name);
        if (ne * es != e - b)
            return wd_errf(err, "%s: tensor %s: shape x %s size is %llu bytes but data_offsets span %llu", fname,
                           name, t->dtype_name, (unsigned long long)(ne * es), (unsigned long long)(e - b));
    }
    t->offset = data_start + b;
    t->length = e - b;
    return 0;
}

static int shape_dims(const cJSON *sh, uint64_t *dims, int *nd, int *bad_at)
{
    int n = cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : -1, i = 0;
    *nd = 0;
    *bad_at = 0;
    if (n < 0 || n > WD_MAX_DIMS) return 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) /* not GetArrayItem: quadratic */
        if (as_u64(d, &dims[i])) {
            *bad_at = i;
            return 0;
        }
    *nd = n;
    return 1;
}

static int cmp_offset(const void *a, const void *b)
{
    const wd_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->length != y->length) return x->length < y->length ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Duplicate keys: cJSON keeps them all, the format forbids them. */
static int check_duplicates(const wd_stfile *f, const char *fname, wd_err *err)
{
    if (f->ntensors < 2) return 0;
    char **names = malloc(f->ntensors * sizeof *names);
    if (!names) return wd_errf(err, "out of memory");
    for (size_t i = 0; i < f->ntensors; i++) names[i] = f->tensors[i].name;
    qsort(names, f->ntensors, sizeof *names, cmp_name_ptr);
    int rc = 0;
    for (size_t i = 1; i < f->ntensors && !rc; i++)
        if (!strcmp(names[i], names[i - 1])) rc = wd_errf(err, "%s: tensor %s appears twice", fname, names[i]);
    free(names);
    return rc;
}

/* Tensors must tile the data region: no overlap, no gap, nothing after. */
static int check_layout(const wd_stfile *f, const char *fname, uint64_t data_start, wd_err *err)
{
    uint64_t at = data_start;
    for (size_t i = 0; i < f->ntensors; i++) {
        const wd_tensor *t = &f->tensors[i];
        if (t->offset < at)
            return wd_errf(err, "%s: tensor %s at data offset %llu overlaps the previous tensor (ends at %llu)", fname,
                           t->name, (unsigned long long)(t->offset - data_start),
                           (unsigned long long)(at - data_start));
        if (t->offset > at && at == data_start)
            return wd_errf(err, "%s: the data must start at data offset 0, but the first tensor %s starts at %llu",
                           fname, t->name, (unsigned long long)(t->offset - data_start));
        if (t->offset > at)
            return wd_errf(err, "%s: gap of %llu bytes before tensor %s (data offset %llu)", fname,
                           (unsigned long long)(t->offset - at), t->name, (unsigned long long)(at - data_start));
        at = t->offset + t->length;
    }
    if (at != f->size)
        return wd_errf(err, "%s: tensors end at byte %llu but the file has %llu (trailing bytes)", fname,
                       (unsigned long long)at, (unsigned long long)f->size);
    return 0;
}

/* cJSON is laxer than JSON: it skips any byte <= 0x20 between tokens, keeps
 * raw control bytes inside strings, and decodes \u0000 into a NUL that would
 * silently cut a name short.  The format is JSON, so reject all three here:
 * a control byte other than tab/newline/return anywhere, or an escaped NUL. */
static int check_json_bytes(const char *json, size_t n, const char *fname, wd_err *err)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)json[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return wd_errf(err, "%s: header has control byte 0x%02x at header byte %zu", fname, c, i);
        if (c != '\\' || i + 1 >= n) continue;
        /* a backslash starts an escape: the byte after it is consumed too */
        if (json[i + 1] == 'u' && i + 5 < n && !memcmp(json + i + 2, "0000", 4))
            return wd_errf(err, "%s: header has an escaped NUL (\\u0000) at header byte %zu", fname, i);
        i++;
    }
    return 0;
}

static int is_json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parse the JSON text; only whitespace (the format pads with spaces) may
 * follow the value.  NULL on error, with the message written. */
static cJSON *parse_json(const char *json, size_t n, const char *fname, wd_err *err)
{
    if (check_json_bytes(json, n, fname, err)) return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, n, &end, 0);
    if (!root) {
        /* end is set to the error position on failure; cJSON_GetErrorPtr
         * would read a global that other threads may be writing */
        size_t at = end && end >= json && end <= json + n ? (size_t)(end - json) : 0;
        wd_errf(err, "%s: header is not valid JSON (syntax error near header byte %zu)", fname, at);
        return NULL;
    }
    for (const char *p = end ? end : json + n; p < json + n; p++)
        if (!is_json_ws(*p)) {
            wd_errf(err, "%s: unexpected bytes after the header JSON (header byte %zu)", fname, (size_t)(p - json));
            cJSON_Delete(root);
            return NULL;
        }
    return root;
}

/* ---- one entry at a time ------------------------------------------------
 * The header of a model with many tensors is megabytes of JSON; a cJSON tree
 * of all of it costs about ten times its text.  So the object is walked with
 * a structural scanner, and each member's key and value, one at a time, are
 * parsed by cJSON (the same rules for strings and numbers as before) and
 * freed before the next: the transient tree is one entry. */

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && is_json_ws(s[i])) i++;
    return i;
}

/* Index past the closing quote of the string opening at s[i], 0 if none. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\') i++;
        else if (s[i] == '"') return i + 1;
    }
    return 0;
}

/* Index past the value starting at s[i] (its brackets balanced, strings
 * skipped; cJSON checks the rest), 0 if it runs off the end. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    size_t depth = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            if (!(i = skip_string(s, i, n))) return 0;
            if (!depth) return i;
            continue;
        }
        if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') {
            if (!depth) return i; /* a scalar ends at its container's close */
            if (!--depth) return i + 1;
        } else if (!depth && (c == ',' || is_json_ws(c)))
            return i;
        i++;
    }
    return depth ? 0 : i;
}

/* cJSON's tree of exactly the n bytes at s (one JSON value), NULL if they
 * are not; *bad the byte (relative to s) where parsing stopped. */
static cJSON *parse_piece(const char *s, size_t n, size_t *bad)
{
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (v && end == s + n) return v;
    cJSON_Delete(v);
    *bad = end && end >= s && end <= s + n ? (size_t)(end - s) : 0;
    return NULL;
}

cJSON *wd_json_piece(const char *s, size_t n, size_t *bad)
{
    return parse_piece(s, n, bad);
}

int wd_jwalk_open(wd_jwalk *w, const char *s, size_t n, size_t i)
{
    i = skip_ws(s, i, n);
    memset(w, 0, sizeof *w);
    w->s = s;
    w->n = n;
    w->err_at = i;
    if (i >= n || (s[i] != '{' && s[i] != '[')) return -1;
    w->obj = s[i] == '{';
    w->i = i + 1;
    w->first = 1;
    return 0;
}

int wd_jwalk_next(wd_jwalk *w, size_t *ks, size_t *ke, size_t *vs, size_t *ve)
{
    const char *s = w->s;
    size_t n = w->n, i = skip_ws(s, w->i, n);
    char close = w->obj ? '}' : ']';
    w->err_at = i;
    if (i >= n) return -1;
    if (s[i] == close) {
        w->i = i + 1;
        return 0;
    }
    if (!w->first) { /* a comma, then the next member */
        if (s[i] != ',') return -1;
        i = skip_ws(s, i + 1, n);
        w->err_at = i;
    }
    w->first = 0;
    *ks = *ke = i;
    if (w->obj) {
        size_t e = i < n && s[i] == '"' ? skip_string(s, i, n) : 0;
        if (!e) return -1;
        *ke = e;
        i = skip_ws(s, e, n);
        w->err_at = i;
        if (i >= n || s[i] != ':') return -1;
        i = skip_ws(s, i + 1, n);
        w->err_at = i;
    }
    size_t e = skip_value(s, i, n);
    if (!e || e == i) return -1;
    *vs = i;
    *ve = w->i = e;
    return 1;
}

int wd_jwalk_end(const wd_jwalk *w)
{
    for (size_t i = w->i; i < w->n; i++)
        if (!is_json_ws(w->s[i])) return -1;
    return 0;
}

typedef struct entry_walk {
    const char *fname;
    uint64_t data_start;
    wd_stfile *out;
    size_t count;
    int have_meta;
    names_room room;
    size_t need; /* the first pass: room the names and dimensions take */
} entry_walk;

/* Every member of the header object, in order: with out->tensors NULL
 * counted and checked to be JSON, else parsed into it.  1: the text is not a JSON object
 * (nothing written, the caller says why). */
static int walk_entries(const char *s, size_t n, entry_walk *w, wd_err *err)
{
    const char *fname = w->fname;
    wd_jwalk jw;
    size_t ks, ke, vs, ve, at, bad = 0;
    if (wd_jwalk_open(&jw, s, n, 0) || !jw.obj) return 1;
    int r;
    while ((r = wd_jwalk_next(&jw, &ks, &ke, &vs, &ve)) == 1) {
        w->count++;
        cJSON *key = parse_piece(s + ks, ke - ks, &bad), *val = NULL;
        if (!key || !cJSON_IsString(key)) {
            at = ks + bad;
            cJSON_Delete(key);
            goto syntax;
        }
        if (!(val = parse_piece(s + vs, ve - vs, &bad))) {
            at = vs + bad;
            cJSON_Delete(key);
            goto syntax;
        }
        const char *name = key->valuestring;
        int rc = 0;
        if (!w->out->tensors) { /* the first pass: the JSON alone, so its errors come first */
            uint64_t dims[WD_MAX_DIMS];
            int nd, bad_at;
            const char *dn;
            const uint64_t *dd;
            if (strcmp(name, "__metadata__") && cJSON_IsObject(val) &&
                shape_dims(cJSON_GetObjectItemCaseSensitive(val, "shape"), dims, &nd, &bad_at))
                w->need += room_for(&w->room, name, dims, nd, &dn, &dd);
            /* else a bad entry: the second pass stops there, before its room */
        }
        else if (!strcmp(name, "__metadata__")) {
            if (w->have_meta++) rc = wd_errf(err, "%s: __metadata__ appears twice", fname);
            else rc = parse_metadata(val, fname, err);
        } else {
            wd_tensor *t = &w->out->tensors[w->out->ntensors++];
            rc = parse_tensor(name, val, fname, w->out->size - w->data_start, w->data_start, &w->room, t, err);
        }
        cJSON_Delete(val);
        cJSON_Delete(key);
        if (rc) return -1;
    }
    if (r < 0) {
        at = jw.err_at;
        goto syntax;
    }
    for (size_t i = jw.i; i < n; i++)
        if (!is_json_ws(s[i]))
            return wd_errf(err, "%s: unexpected bytes after the header JSON (header byte %zu)", fname, i);
    return 0;
syntax:
    return wd_errf(err, "%s: header is not valid JSON (syntax error near header byte %zu)", fname, at);
}

/* Parse every entry of the header object into out->tensors (the names and
 * dimensions after the records, or the donor's). */
static int parse_entries(const char *json, size_t n, const char *fname, uint64_t data_start, wd_donor_find find,
                         const void *donor, wd_stfile *out, wd_err *err)
{
    if (check_json_bytes(json, n, fname, err)) return -1;
    entry_walk w = {fname, data_start, out, 0, 0, {find, donor, NULL, NULL}, 0};
    int rc = walk_entries(json, n, &w, err); /* count */
    if (rc == 1) { /* not an object: the whole text says why (it holds no entries) */
        cJSON *root = parse_json(json, n, fname, err);
        if (root) wd_errf(err, "%s: header is not a JSON object", fname);
        cJSON_Delete(root);
        return -1;
    }
    if (rc) return -1;
    size_t recs = (w.count + 1) * sizeof *out->tensors; /* sizeof is a multiple of 8: the room is aligned */
    if (w.need > SIZE_MAX - recs || !(out->tensors = calloc(1, recs + w.need))) return wd_errf(err, "out of memory");
    w.room.at = (char *)out->tensors + recs;
    w.room.end = w.room.at + w.need;
    w.count = 0;
    return walk_entries(json, n, &w, err) ? -1 : 0;
}

/* The parse, without keeping the header text. */
static int parse_nocopy(const unsigned char *buf, size_t buflen, uint64_t file_size, const char *fname,
                        wd_donor_find find, const void *donor, wd_stfile *out, wd_err *err)
{
    memset(out, 0, sizeof *out);
    if (buflen < 8 || file_size < 8)
        return wd_errf(err, "%s: too short for a safetensors header (%llu bytes, the length alone takes 8)", fname,
                       (unsigned long long)(file_size < buflen ? file_size : buflen));
    uint64_t n = wd_get_u64(buf);
    /* checked before anything is allocated or read: n comes from the file */
    if (n == 0 || n > WD_ST_MAX_HEADER)
        return wd_errf(err, "%s: absurd header size %llu (limit %u)", fname, (unsigned long long)n, WD_ST_MAX_HEADER);
    if (8 + n > file_size)
        return wd_errf(err, "%s: header length %llu runs past the end of the file (%llu bytes)", fname,
                       (unsigned long long)n, (unsigned long long)file_size);
    if (8 + n > buflen)
        return wd_errf(err, "%s: header buffer holds %zu of %llu bytes", fname, buflen, (unsigned long long)(8 + n));
    out->size = file_size;
    out->header_size = 8 + n;
    if (parse_entries((const char *)buf + 8, (size_t)n, fname, 8 + n, find, donor, out, err)) goto fail;
    qsort(out->tensors, out->ntensors, sizeof *out->tensors, cmp_offset);
    if (check_duplicates(out, fname, err) || check_layout(out, fname, 8 + n, err)) goto fail;
    return 0;
fail:
    wd_st_free(out);
    return -1;
}

int wd_st_parse_nocopy(const unsigned char *buf, size_t buflen, uint64_t file_size, const char *fname, wd_stfile *out,
                       wd_err *err)
{
    return parse_nocopy(buf, buflen, file_size, fname, NULL, NULL, out, err);
}

int wd_st_parse(const unsigned char *buf, size_t buflen, uint64_t file_size, const char *fname, wd_stfile *out,
                wd_err *err)
{
    if (wd_st_parse_nocopy(buf, buflen, file_size, fname, out, err)) return -1;
    if (!(out->header = malloc((size_t)out->header_size))) {
        wd_st_free(out);
        return wd_errf(err, "out of memory");
    }
    memcpy(out->header, buf, (size_t)out->header_size);
    return 0;
}

static char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return strdup(s ? s + 1 : path);
}

int wd_st_open_shared(const char *path, wd_donor_find find, const void *donor, wd_stfile *out, wd_err *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return wd_errf(err, "%s: %s", path, strerror(errno));
    struct stat st;
    unsigned char len8[8], *buf = NULL;
    int rc = -1;
    uint64_t n = 0;
    if (fstat(fd, &st)) {
        wd_errf(err, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        wd_errf(err, "%s: not a regular file", path);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        wd_errf(err, "%s: too short for a safetensors file (%llu bytes)", path, (unsigned long long)size);
        goto out;
    }
    if (wd_pread_full(fd, len8, 8, 0, path, err)) goto out;
    n = wd_get_u64(len8);
    if (n == 0 || n > WD_ST_MAX_HEADER) { /* before allocating anything */
        wd_errf(err, "%s: absurd header size %llu (limit %u)", path, (unsigned long long)n, WD_ST_MAX_HEADER);
        goto out;
    }
    if (8 + n > size) {
        wd_errf(err, "%s: header length %llu runs past the end of the file (%llu bytes)", path,
                (unsigned long long)n, (unsigned long long)size);
        goto out;
    }
    /* the text is held only while it is parsed: mapped memory of its own,
     * so that it goes back to the system when unmapped, whatever malloc
     * would do with a free block of megabytes between the records parsed
     * (it stays resident: a model of 80,000 tensors has a 7.7 MB header) */
    buf = mmap(NULL, (size_t)(8 + n), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        buf = NULL;
        wd_errf(err, "out of memory reading the header of %s", path);
        goto out;
    }
    memcpy(buf, len8, 8);
    if (wd_pread_full(fd, buf + 8, (size_t)n, 8, path, err)) goto out;
    if (parse_nocopy(buf, (size_t)(8 + n), size, path, find, donor, out, err)) goto out;
    out->path = strdup(path);
    out->name = base_name(path);
    if (!out->path || !out->name) {
        wd_st_free(out);
        wd_errf(err, "out of memory");
        goto out;
    }
    rc = 0;
out:
    if (buf) munmap(buf, (size_t)(8 + n));
    close(fd);
    return rc;
}

int wd_st_open(const char *path, wd_stfile *out, wd_err *err)
{
    return wd_st_open_shared(path, NULL, NULL, out, err);
}

const wd_tensor *wd_st_find(const wd_stfile *f, const char *name)
{
    for (size_t i = 0; i < f->ntensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* ---- building ---------------------------------------------------------- */

/* cJSON prints numbers with "%1.15g", which turns 10^15 into "1e+15": legal
 * JSON, but readers that want integers (the Rust safetensors crate) refuse
 * it.  Offsets and dimensions are therefore written as raw integer text. */
static int add_uint(cJSON *arr, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    cJSON *x = cJSON_CreateRaw(num);
    return x && cJSON_AddItemToArray(arr, x) ? 0 : -1;
}

/* One tensor's entry; t->offset (relative for now) and t->length are set. */
static int build_entry(cJSON *root, wd_tensor *t, uint64_t at, wd_err *err)
{
    unsigned es = wd_dtype_size(t->dtype);
    if (!es || wd_dtype_from_name(t->dtype_name) != t->dtype)
        return wd_errf(err, "tensor %s: dtype '%s' has no known element size or does not match its dtype code",
                       t->name, t->dtype_name);
    if (t->ndim < 0 || t->ndim > WD_MAX_DIMS) return wd_errf(err, "tensor %s: %d dimensions", t->name, t->ndim);
    uint64_t ne = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] && ne > UINT64_MAX / es / t->shape[d])
            return wd_errf(err, "tensor %s: shape overflows 64 bits", t->name);
        ne *= t->shape[d];
    }
    t->nelem = ne;
    t->length = ne * es;
    /* readers hold offsets in doubles (cJSON, Python): stay below 2^53 */
    if (t->length >= (uint64_t)MAX_SAFE_INT || at + t->length >= (uint64_t)MAX_SAFE_INT)
        return wd_errf(err, "tensor %s: data offset %llu + %llu bytes reaches 2^53", t->name, (unsigned long long)at,
                       (unsigned long long)t->length);
    t->offset = at;
    cJSON *o = cJSON_CreateObject(), *sh = NULL, *of = NULL;
    if (!o || !cJSON_AddItemToObject(root, t->name, o)) {
        cJSON_Delete(o);
        return wd_errf(err, "out of memory");
    }
    int bad = !cJSON_AddStringToObject(o, "dtype", t->dtype_name) || !(sh = cJSON_AddArrayToObject(o, "shape")) ||
              !(of = cJSON_AddArrayToObject(o, "data_offsets"));
    for (int d = 0; !bad && d < t->ndim; d++) bad = add_uint(sh, t->shape[d]);
    if (bad || add_uint(of, at) || add_uint(of, at + t->length)) return wd_errf(err, "out of memory");
    return 0;
}

/* Names must be what wd_st_parse accepts: non-empty UTF-8, all distinct,
 * and not the metadata key. */
static int check_build_names(const wd_tensor *tensors, size_t n, wd_err *err)
{
    const char **names = malloc((n + 1) * sizeof *names);
    if (!names) return wd_errf(err, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *nm = tensors[i].name;
        if (!nm || !*nm || !wd_utf8_valid(nm, strlen(nm)) || !strcmp(nm, "__metadata__"))
            rc = wd_errf(err, "tensor %zu: name '%s' is empty, not UTF-8 or reserved", i, nm ? nm : "(null)");
        names[i] = nm;
    }
    if (!rc) qsort(names, n, sizeof *names, cmp_name_ptr);
    for (size_t i = 1; i < n && !rc; i++)
        if (!strcmp(names[i], names[i - 1])) rc = wd_errf(err, "tensor %s appears twice", names[i]);
    free(names);
    return rc;
}

static cJSON *parse_build_metadata(const char *metadata_json, wd_err *err)
{
    const char *end = NULL;
    cJSON *m = cJSON_ParseWithOpts(metadata_json, &end, 1);
    if (!m) {
        wd_errf(err, "metadata is not valid JSON (near byte %zu)",
                end && end >= metadata_json ? (size_t)(end - metadata_json) : (size_t)0);
        return NULL;
    }
    if (parse_metadata(m, "metadata", err)) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

int wd_st_build_header(wd_tensor *tensors, size_t n, const char *metadata_json, unsigned char **out,
                       size_t *out_len, wd_err *err)
{
    if (check_build_names(tensors, n, err)) return -1;
    cJSON *root = cJSON_CreateObject();
    if (!root) return wd_errf(err, "out of memory");
    int rc = -1;
    char *text = NULL;
    if (metadata_json) { /* first, as the format's own writer puts it */
        cJSON *m = parse_build_metadata(metadata_json, err);
        if (!m) goto out;
        if (!cJSON_AddItemToObject(root, "__metadata__", m)) {
            cJSON_Delete(m);
            wd_errf(err, "out of memory");
            goto out;
        }
    }
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (build_entry(root, &tensors[i], at, err)) goto out;
        at += tensors[i].length;
    }
    text = cJSON_PrintUnformatted(root);
    if (!text) {
        wd_errf(err, "out of memory");
        goto out;
    }
    /* pad with spaces so the data starts 8-byte aligned */
    size_t jl = strlen(text), pad = (8 - (8 + jl) % 8) % 8, hn = jl + pad;
    if (hn > WD_ST_MAX_HEADER) {
        wd_errf(err, "header of %zu tensors would take %zu bytes (limit %u)", n, hn, WD_ST_MAX_HEADER);
        goto out;
    }
    unsigned char *b = malloc(8 + hn);
    if (!b) {
        wd_errf(err, "out of memory");
        goto out;
    }
    wd_put_u64(b, hn);
    memcpy(b + 8, text, jl);
    memset(b + 8 + jl, ' ', pad);
    for (size_t i = 0; i < n; i++) tensors[i].offset += 8 + hn;
    *out = b;
    *out_len = 8 + hn;
    rc = 0;
out:
    free(text);
    cJSON_Delete(root);
    return rc;
}
