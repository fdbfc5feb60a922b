/* v1.c - deltatensors' .wdelta version 1: read, index and rebuild bit-exactly.
 *
 * Layout and arithmetic: ../shared/formats/deltatensors-v1.md.  v1 has no
 * index, so opening scans the records once (skipping data by its length) and
 * keys each by (tensor, field).  Rebuilding follows the reference's float32
 * arithmetic step by step; this file is compiled with -ffp-contract=off so
 * no multiply-add is fused. */
#include "model/model_int.h"
#include "format/layout.h"
#include <pthread.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define V1_MAX_HEADER (256u * 1024 * 1024)
#define V1_MAX_NAME 65536
#define V1_SUM_CHUNK (1u << 20)

typedef struct v1_field {
    char name[64];
    char dtype[32];
    int ndim;
    uint64_t dims[WD_MAX_DIMS];
    uint64_t offset, length; /* data */
    int present;
} v1_field;

enum { F_OUT_IDX, F_OUT_VALS, F_SCALE, F_ZERO, F_PACKED, F_SCALES, F_SIGNS, F_INDICES, F_VALUES, NFIELDS };
static const char *const field_names[NFIELDS] = {"outlier_idx", "outlier_vals", "scale",   "zero_point", "packed",
                                                 "scales",      "packed_signs", "indices", "values"};

typedef struct v1_tensor {
    wd_v1_tensor pub;
    char *name;
    char strategy[16];
    uint64_t n_elements, n_outliers, n_cols;
    v1_field f[NFIELDS];
} v1_tensor;

struct wd_v1 {
    char *path;
    int fd;
    /* per field (tensor * NFIELDS + field): wd_hash64 of its bytes, chained
     * over V1_SUM_CHUNK pieces, taken while the trailing SHA-256 was checked
     * and good; then every field read is compared with it, so a file changed
     * after its check (rewritten in place under an open descriptor) gives an
     * error, never its new bytes.  Set once, under sums_lock. */
    pthread_mutex_t sums_lock;
    uint64_t *sums;
    uint64_t size;
    char *strategy;
    char *options_json;
    unsigned char parent_hash[32];
    size_t n;
    v1_tensor *t; /* sorted by name */
};

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const v1_tensor *)a)->name, ((const v1_tensor *)b)->name);
}

static v1_tensor *find_tensor(wd_v1 *v, const char *name)
{
    v1_tensor key = {.name = (char *)name};
    return bsearch(&key, v->t, v->n, sizeof *v->t, cmp_tensor);
}

static int json_u64(const cJSON *o, const char *k, uint64_t *out)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0) || x->valuedouble > 9007199254740992.0 ||
        x->valuedouble != (double)(uint64_t)x->valuedouble)
        return -1;
    *out = (uint64_t)x->valuedouble;
    return 0;
}

static int parse_tensor_meta(wd_v1 *v, const cJSON *item, v1_tensor *t, wd_err *err)
{
    const char *name = item->string;
    t->name = strdup(name);
    if (!t->name) return wd_errf(err, "out of memory");
    t->pub.name = t->name;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(item, "strategy");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsString(st) || strlen(st->valuestring) >= sizeof t->strategy || !cJSON_IsArray(shape))
        return wd_errf(err, "%s: tensor %s: header lacks strategy or shape", v->path, name);
    strcpy(t->strategy, st->valuestring);
    t->pub.strategy = t->strategy;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    t->pub.dtype = cJSON_IsString(dt) && !strcmp(dt->valuestring, "float32") ? "float32" : NULL;
    if (!t->pub.dtype) return wd_errf(err, "%s: tensor %s: only float32 reconstructions exist in v1", v->path, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > WD_MAX_DIMS) return wd_errf(err, "%s: tensor %s: %d dimensions", v->path, name, nd);
    t->pub.ndim = nd;
    uint64_t ne = 1;
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(shape, i);
        /* range first: converting a double >= 2^64 to an integer is undefined */
        if (!cJSON_IsNumber(d) || !(d->valuedouble >= 0) || d->valuedouble > 9007199254740992.0 ||
            d->valuedouble != (double)(uint64_t)d->valuedouble)
            return wd_errf(err, "%s: tensor %s: bad shape", v->path, name);
        t->pub.shape[i] = (uint64_t)d->valuedouble;
        if (t->pub.shape[i] && ne > UINT64_MAX / 4 / t->pub.shape[i])
            return wd_errf(err, "%s: tensor %s: shape overflows", v->path, name);
        ne *= t->pub.shape[i];
    }
    t->pub.nelem = ne;
    if (!strcmp(t->strategy, "int4")) {
        if (json_u64(item, "n_elements", &t->n_elements) || json_u64(item, "n_outliers", &t->n_outliers))
            return wd_errf(err, "%s: tensor %s: int4 header lacks n_elements/n_outliers", v->path, name);
    } else if (!strcmp(t->strategy, "quantized")) {
        if (json_u64(item, "n_elements", &t->n_elements) || json_u64(item, "n_cols", &t->n_cols))
            return wd_errf(err, "%s: tensor %s: quantized header lacks n_elements/n_cols", v->path, name);
    } else if (!strcmp(t->strategy, "sparse")) {
        t->n_elements = ne;
    } else {
        return wd_errf(err, "%s: tensor %s: unknown strategy '%s'", v->path, name, t->strategy);
    }
    if (t->n_elements != ne)
        return wd_errf(err, "%s: tensor %s: n_elements %llu does not match shape (%llu)", v->path, name,
                       (unsigned long long)t->n_elements, (unsigned long long)ne);
    return 0;
}

static int parse_header(wd_v1 *v, const char *json, size_t len, wd_err *err)
{
    cJSON *h = cJSON_ParseWithLength(json, len);
    if (!h || !cJSON_IsObject(h)) {
        cJSON_Delete(h);
        return wd_errf(err, "%s: v1 header is not valid JSON", v->path);
    }
    int rc = -1;
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(h, "parent_hash");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(h, "strategy");
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(h, "tensors");
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(h, "options");
    if (!cJSON_IsString(ph) || wd_unhex(ph->valuestring, v->parent_hash, 32) || !cJSON_IsString(st) ||
        !cJSON_IsObject(ts)) {
        wd_errf(err, "%s: v1 header lacks parent_hash, strategy or tensors", v->path);
        goto out;
    }
    v->strategy = strdup(st->valuestring);
    v->options_json = op ? cJSON_PrintUnformatted(op) : strdup("{}");
    v->n = (size_t)cJSON_GetArraySize(ts);
    v->t = calloc(v->n + 1, sizeof *v->t);
    if (!v->strategy || !v->options_json || !v->t) {
        wd_errf(err, "out of memory");
        goto out;
    }
    size_t i = 0;
    for (const cJSON *it = ts->child; it; it = it->next, i++)
        if (!cJSON_IsObject(it) || parse_tensor_meta(v, it, &v->t[i], err)) {
            if (!err->msg[0]) wd_errf(err, "%s: v1 tensor entry is not an object", v->path);
            goto out;
        }
    qsort(v->t, v->n, sizeof *v->t, cmp_tensor);
    for (size_t k = 1; k < v->n; k++)
        if (!strcmp(v->t[k].name, v->t[k - 1].name)) {
            wd_errf(err, "%s: tensor %s appears twice", v->path, v->t[k].name);
            goto out;
        }
    rc = 0;
out:
    cJSON_Delete(h);
    return rc;
}

/* Read a u32-length-prefixed string of at most max bytes. */
static int read_str(wd_v1 *v, uint64_t *at, uint64_t end, char *buf, size_t max, const char *what, wd_err *err)
{
    unsigned char b4[4];
    if (*at + 4 > end || wd_pread_full(v->fd, b4, 4, *at, v->path, err))
        return wd_errf(err, "%s: record truncated at offset %llu (%s length)", v->path, (unsigned long long)*at, what);
    uint32_t n = wd_get_u32(b4);
    if (n >= max || *at + 4 + n > end)
        return wd_errf(err, "%s: record at offset %llu: %s of %u bytes is too long", v->path,
                       (unsigned long long)*at, what, n);
    if (wd_pread_full(v->fd, buf, n, *at + 4, v->path, err)) return -1;
    buf[n] = 0;
    *at += 4 + n;
    return 0;
}

static int scan_records(wd_v1 *v, uint64_t start, uint64_t end, wd_err *err)
{
    char *name = malloc(V1_MAX_NAME);
    if (!name) return wd_errf(err, "out of memory");
    int rc = -1;
    uint64_t at = start;
    while (at < end) {
        uint64_t rec = at;
        char field[64], dtype[32];
        if (read_str(v, &at, end, name, V1_MAX_NAME, "name", err) ||
            read_str(v, &at, end, field, sizeof field, "field", err) ||
            read_str(v, &at, end, dtype, sizeof dtype, "dtype", err))
            goto out;
        unsigned char b[8];
        if (at + 4 > end || wd_pread_full(v->fd, b, 4, at, v->path, err)) {
            wd_errf(err, "%s: record at %llu truncated", v->path, (unsigned long long)rec);
            goto out;
        }
        uint32_t nd = wd_get_u32(b);
        at += 4;
        if (nd > WD_MAX_DIMS || at + 8ull * nd + 8 > end) {
            wd_errf(err, "%s: record at %llu: bad dimension count %u", v->path, (unsigned long long)rec, nd);
            goto out;
        }
        uint64_t dims[WD_MAX_DIMS];
        for (uint32_t i = 0; i < nd; i++, at += 8) {
            if (wd_pread_full(v->fd, b, 8, at, v->path, err)) goto out;
            dims[i] = wd_get_u64(b);
        }
        if (wd_pread_full(v->fd, b, 8, at, v->path, err)) goto out;
        uint64_t len = wd_get_u64(b);
        at += 8;
        if (len > end - at) {
            wd_errf(err, "%s: record %s/%s at %llu: data of %llu bytes runs past the end", v->path, name, field,
                    (unsigned long long)rec, (unsigned long long)len);
            goto out;
        }
        v1_tensor *t = find_tensor(v, name);
        int fi = -1;
        for (int k = 0; k < NFIELDS; k++)
            if (!strcmp(field, field_names[k])) fi = k;
        if (!t || fi < 0) {
            wd_errf(err, "%s: record at %llu names %s/%s, which the header does not describe", v->path,
                     (unsigned long long)rec, name, field);
            goto out;
        }
        v1_field *f = &t->f[fi];
        if (f->present) {
            wd_errf(err, "%s: record %s/%s appears twice", v->path, name, field);
            goto out;
        }
        f->present = 1;
        snprintf(f->name, sizeof f->name, "%s", field);
        snprintf(f->dtype, sizeof f->dtype, "%s", dtype);
        f->ndim = (int)nd;
        memcpy(f->dims, dims, sizeof(uint64_t) * nd);
        f->offset = at;
        f->length = len;
        t->pub.stored_bytes += len;
        at += len;
    }
    rc = 0;
out:
    free(name);
    return rc;
}

int wd_v1_open(const char *path, wd_v1 **out, wd_err *err)
{
    return wd_v1_open_fd(-1, path, out, err);
}

int wd_v1_open_fd(int fd, const char *path, wd_v1 **out, wd_err *err)
{
    wd_v1 *v = calloc(1, sizeof *v);
    if (!v) return wd_errf(err, "out of memory");
    pthread_mutex_init(&v->sums_lock, NULL);
    v->path = strdup(path);
    v->fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    unsigned char pre[15];
    char *json = NULL;
    if (v->fd < 0 || fstat(v->fd, &st)) {
        wd_errf(err, "%s: %s", path, strerror(errno));
        goto fail;
    }
    v->size = (uint64_t)st.st_size;
    if (v->size < 15 + 32) {
        wd_errf(err, "%s: too short (%llu bytes) for a v1 file", path, (unsigned long long)v->size);
        goto fail;
    }
    if (wd_pread_full(v->fd, pre, 15, 0, path, err)) goto fail;
    if (memcmp(pre, WD_MAGIC, WD_MAGIC_LEN) || wd_get_u32(pre + 7) != 1) {
        wd_errf(err, "%s: not a .wdelta version 1 file", path);
        goto fail;
    }
    uint32_t hl = wd_get_u32(pre + 11);
    if (hl > V1_MAX_HEADER || 15ull + hl + 32 > v->size) {
        wd_errf(err, "%s: header length %u runs past the end of the file", path, hl);
        goto fail;
    }
    json = malloc(hl + 1);
    if (!json || wd_pread_full(v->fd, json, hl, 15, path, err)) {
        if (!json) wd_errf(err, "out of memory");
        goto fail;
    }
    if (parse_header(v, json, hl, err) || scan_records(v, 15ull + hl, v->size - 32, err)) goto fail;
    free(json);
    *out = v;
    return 0;
fail:
    free(json);
    wd_v1_close(v);
    return -1;
}

void wd_v1_close(wd_v1 *v)
{
    if (!v) return;
    if (v->fd >= 0) close(v->fd);
    for (size_t i = 0; v->t && i < v->n; i++) free(v->t[i].name);
    free(v->t);
    free(v->strategy);
    free(v->options_json);
    free(v->path);
    free(v->sums);
    pthread_mutex_destroy(&v->sums_lock);
    free(v);
}

size_t wd_v1_count(const wd_v1 *v) { return v->n; }
const wd_v1_tensor *wd_v1_get(const wd_v1 *v, size_t i) { return i < v->n ? &v->t[i].pub : NULL; }
const char *wd_v1_strategy(const wd_v1 *v) { return v->strategy; }
const char *wd_v1_options(const wd_v1 *v) { return v->options_json; }
const unsigned char *wd_v1_parent_hash(const wd_v1 *v) { return v->parent_hash; }
uint64_t wd_v1_file_size(const wd_v1 *v) { return v->size; }

int wd_v1_find(const wd_v1 *v, const char *name)
{
    v1_tensor *t = find_tensor((wd_v1 *)v, name);
    return t ? (int)(t - v->t) : -1;
}

typedef struct field_ref {
    uint64_t offset, length;
    size_t slot; /* tensor * NFIELDS + field */
} field_ref;

static int cmp_field_ref(const void *a, const void *b)
{
    const field_ref *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* wd_hash64 of n bytes, chained over V1_SUM_CHUNK pieces (seed: the hash so far) */
static uint64_t sum_pieces(const unsigned char *p, uint64_t n, uint64_t h)
{
    for (uint64_t at = 0; at < n; at += V1_SUM_CHUNK)
        h = wd_hash64(p + at, (size_t)(n - at < V1_SUM_CHUNK ? n - at : V1_SUM_CHUNK), h);
    return h;
}

int wd_v1_check_digest(wd_v1 *v, wd_err *err)
{
    unsigned char *buf = malloc(V1_SUM_CHUNK), want[32], got[32];
    wd_sha256 *h = wd_sha256_new();
    size_t nf = 0;
    for (size_t i = 0; i < v->n; i++)
        for (int k = 0; k < NFIELDS; k++) nf += v->t[i].f[k].present;
    field_ref *fr = malloc((nf + 1) * sizeof *fr);
    uint64_t *sums = calloc(v->n * NFIELDS + 1, sizeof *sums);
    int rc = -1;
    if (!buf || !h || !fr || !sums) {
        wd_errf(err, "out of memory");
        goto out;
    }
    nf = 0;
    for (size_t i = 0; i < v->n; i++)
        for (int k = 0; k < NFIELDS; k++)
            if (v->t[i].f[k].present) fr[nf++] = (field_ref){v->t[i].f[k].offset, v->t[i].f[k].length, i * NFIELDS + k};
    qsort(fr, nf, sizeof *fr, cmp_field_ref);
    /* one pass: the SHA-256 of everything, and each field's sum, its
     * pieces counted from its first byte as load_field counts them (fields
     * never overlap: the records were scanned one after another) */
    uint64_t end = v->size - 32;
    size_t fi = 0;
    for (uint64_t at = 0; at < end;) {
        while (fi < nf && fr[fi].offset + fr[fi].length <= at) fi++;
        uint64_t stop = at + V1_SUM_CHUNK < end ? at + V1_SUM_CHUNK : end;
        int in_field = fi < nf && fr[fi].offset <= at;
        if (in_field) {
            uint64_t piece_end = fr[fi].offset + ((at - fr[fi].offset) / V1_SUM_CHUNK + 1) * V1_SUM_CHUNK;
            uint64_t fend = fr[fi].offset + fr[fi].length;
            if (piece_end < stop) stop = piece_end;
            if (fend < stop) stop = fend;
        } else if (fi < nf && fr[fi].offset < stop) {
            stop = fr[fi].offset;
        }
        size_t n = (size_t)(stop - at);
        if (wd_pread_full(v->fd, buf, n, at, v->path, err)) goto out;
        wd_sha256_update(h, buf, n);
        if (in_field) sums[fr[fi].slot] = wd_hash64(buf, n, sums[fr[fi].slot]);
        at = stop;
    }
    if (wd_pread_full(v->fd, want, 32, end, v->path, err)) goto out;
    wd_sha256_final(h, got);
    h = NULL;
    if (memcmp(want, got, 32)) {
        wd_errf(err, "%s: trailing SHA-256 does not match the file's contents (corrupt or truncated)", v->path);
        goto out;
    }
    pthread_mutex_lock(&v->sums_lock);
    if (!v->sums) {
        v->sums = sums;
        sums = NULL;
    }
    pthread_mutex_unlock(&v->sums_lock);
    rc = 0;
out:
    if (h) wd_sha256_free(h);
    free(buf);
    free(fr);
    free(sums);
    return rc;
}

static int base_to_float(const void *base, wd_dtype dt, uint64_t i, float *out)
{
    const unsigned char *p = base;
    switch (dt) {
    case WD_F32:
    case WD_BF16:
    case WD_F16:
        *out = wd_float_at(p, dt, (size_t)i);
        return 0;
    case WD_F64: {
        double d;
        memcpy(&d, p + 8 * i, 8);
        *out = (float)d;
        return 0;
    }
    default:
        return -1;
    }
}

/* ---- rebuilding ------------------------------------------------------- */
static int load_field(wd_v1 *v, v1_tensor *t, int fi, const char *dtype, uint64_t count, size_t esize, void **out,
                      wd_err *err)
{
    v1_field *f = &t->f[fi];
    if (!f->present) return wd_errf(err, "%s: tensor %s: field %s is missing", v->path, t->name, field_names[fi]);
    if (strcmp(f->dtype, dtype))
        return wd_errf(err, "%s: tensor %s: field %s is %s, expected %s", v->path, t->name, field_names[fi], f->dtype,
                       dtype);
    if (count > UINT64_MAX / esize || f->length != count * esize)
        return wd_errf(err, "%s: tensor %s: field %s holds %llu bytes, expected %llu", v->path, t->name,
                       field_names[fi], (unsigned long long)f->length, (unsigned long long)(count * esize));
    *out = malloc(f->length ? f->length : 1);
    if (!*out) return wd_errf(err, "out of memory loading %s/%s", t->name, field_names[fi]);
    if (wd_pread_full(v->fd, *out, f->length, f->offset, v->path, err)) {
        free(*out);
        *out = NULL;
        return -1;
    }
    pthread_mutex_lock(&v->sums_lock);
    const uint64_t *sums = v->sums;
    pthread_mutex_unlock(&v->sums_lock);
    if (sums && sum_pieces(*out, f->length, 0) != sums[(size_t)(t - v->t) * NFIELDS + (size_t)fi]) {
        free(*out);
        *out = NULL;
        return wd_errf(err, "%s: tensor %s: field %s (offset %llu) changed after the file's digest was checked "
                       "(file rewritten in place?)", v->path, t->name, field_names[fi], (unsigned long long)f->offset);
    }
    return 0;
}

static uint16_t rd16(const void *p, uint64_t i)
{
    uint16_t u;
    memcpy(&u, (const unsigned char *)p + 2 * i, 2);
    return u;
}
static uint64_t rd64(const void *p, uint64_t i)
{
    return wd_get_u64((const unsigned char *)p + 8 * i);
}

/* delta of every element into out (n floats) */
static int delta_int4(wd_v1 *v, v1_tensor *t, float *out, wd_err *err)
{
    uint64_t n = t->n_elements, k = t->n_outliers;
    void *idx = NULL, *vals = NULL, *scale = NULL, *zero = NULL, *packed = NULL;
    int rc = -1;
    if (k > n) return wd_errf(err, "%s: tensor %s: %llu outliers of %llu elements", v->path, t->name,
                              (unsigned long long)k, (unsigned long long)n);
    if (load_field(v, t, F_OUT_IDX, "int64", k, 8, &idx, err) ||
        load_field(v, t, F_OUT_VALS, "float16", k, 2, &vals, err) ||
        load_field(v, t, F_SCALE, "float16", 1, 2, &scale, err) ||
        load_field(v, t, F_ZERO, "float16", 1, 2, &zero, err) ||
        load_field(v, t, F_PACKED, "uint8", (n - k + 1) / 2, 1, &packed, err))
        goto out;
    const float step = (float)((double)wd_half_to_float(rd16(scale, 0)) * 15.0);
    const float zp = wd_half_to_float(rd16(zero, 0));
    uint64_t o = 0, q = 0, prev = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (o < k) {
            uint64_t oi = rd64(idx, o);
            if (oi >= n || (o && oi <= prev)) {
                wd_errf(err, "%s: tensor %s: outlier index %llu out of order or range", v->path, t->name,
                        (unsigned long long)oi);
                goto out;
            }
            if (oi == i) {
                out[i] = wd_half_to_float(rd16(vals, o));
                prev = oi;
                o++;
                continue;
            }
        }
        /* n - k codes are stored: outlier indices that end before all k
         * are used (one >= n after the last element) would read past them */
        if (q >= n - k) {
            wd_errf(err, "%s: tensor %s: outlier indices are not ascending", v->path, t->name);
            goto out;
        }
        unsigned byte = ((const unsigned char *)packed)[q / 2];
        unsigned code = (q % 2 == 0) ? byte >> 4 : byte & 15;
        q++;
        float a = (float)code / 15.0f;
        float b = a * step;
        out[i] = b + zp;
    }
    if (o != k) {
        wd_errf(err, "%s: tensor %s: outlier indices are not ascending", v->path, t->name);
        goto out;
    }
    rc = 0;
out:
    free(idx);
    free(vals);
    free(scale);
    free(zero);
    free(packed);
    return rc;
}

static int delta_quantized(wd_v1 *v, v1_tensor *t, float *out, wd_err *err)
{
    uint64_t n = t->n_elements, cols = t->n_cols;
    if (cols == 0 || n % cols)
        return wd_errf(err, "%s: tensor %s: n_cols %llu does not divide %llu elements", v->path, t->name,
                       (unsigned long long)cols, (unsigned long long)n);
    uint64_t rows = n / cols;
    void *scales = NULL, *signs = NULL;
    int rc = -1;
    if (load_field(v, t, F_SCALES, "float16", rows, 2, &scales, err) ||
        load_field(v, t, F_SIGNS, "uint8", (n + 7) / 8, 1, &signs, err))
        goto out;
    for (uint64_t r = 0; r < rows; r++) {
        float s = wd_half_to_float(rd16(scales, r));
        for (uint64_t c = 0; c < cols; c++) {
            uint64_t i = r * cols + c;
            unsigned bit = (((const unsigned char *)signs)[i / 8] >> (7 - i % 8)) & 1;
            out[i] = bit ? s : -s;
        }
    }
    rc = 0;
out:
    free(scales);
    free(signs);
    return rc;
}

static int delta_sparse(wd_v1 *v, v1_tensor *t, float *out, wd_err *err)
{
    v1_field *fi = &t->f[F_INDICES];
    if (!fi->present) return wd_errf(err, "%s: tensor %s: field indices is missing", v->path, t->name);
    uint64_t m = fi->length / 8, n = t->n_elements;
    void *idx = NULL, *vals = NULL;
    int rc = -1;
    if (m > n) return wd_errf(err, "%s: tensor %s: %llu sparse values for %llu elements", v->path, t->name,
                              (unsigned long long)m, (unsigned long long)n);
    if (load_field(v, t, F_INDICES, "int64", m, 8, &idx, err) ||
        load_field(v, t, F_VALUES, "float32", m, 4, &vals, err))
        goto out;
    for (uint64_t i = 0; i < n; i++) out[i] = 0.0f;
    for (uint64_t j = 0; j < m; j++) {
        uint64_t ix = rd64(idx, j);
        if (ix >= n || (j && ix <= rd64(idx, j - 1))) {
            wd_errf(err, "%s: tensor %s: sparse index %llu out of order or range", v->path, t->name,
                    (unsigned long long)ix);
            goto out;
        }
        uint32_t u = wd_get_u32((const unsigned char *)vals + 4 * j);
        out[ix] = wd_f32_from_bits(u);
    }
    rc = 0;
out:
    free(idx);
    free(vals);
    return rc;
}

int wd_v1_rebuild(wd_v1 *v, size_t ti, const void *base, wd_dtype base_dtype, float *out, wd_err *err)
{
    if (ti >= v->n) return wd_errf(err, "%s: no tensor %zu", v->path, ti);
    v1_tensor *t = &v->t[ti];
    int rc;
    if (!strcmp(t->strategy, "int4")) rc = delta_int4(v, t, out, err);
    else if (!strcmp(t->strategy, "quantized")) rc = delta_quantized(v, t, out, err);
    else rc = delta_sparse(v, t, out, err);
    if (rc) return -1;
    for (uint64_t i = 0; i < t->n_elements; i++) {
        float b;
        if (base_to_float(base, base_dtype, i, &b))
            return wd_errf(err, "%s: tensor %s: base dtype cannot be rebuilt in float32", v->path, t->name);
        out[i] = b + out[i];
    }
    return 0;
}
