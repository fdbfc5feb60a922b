/* model.c - a Hugging Face model directory: its safetensors files (one file,
 * or the shards an index names), a by-name lookup over all tensors, and the
 * other files that travel with the weights (config, tokenizer, ...). */
#include "internal.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"
#define MAX_INDEX (64u * 1024 * 1024)

void wd_model_free(wd_model *m)
{
    if (!m) return;
    for (size_t i = 0; m->files && i < m->nfiles; i++) wd_st_free(&m->files[i]);
    free(m->files);
    free(m->by_name);
    for (size_t i = 0; m->extras && i < m->nextras; i++) free(m->extras[i]);
    free(m->extras);
    free(m->dir);
    memset(m, 0, sizeof *m);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist;

static int strlist_add(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        char **p = realloc(l->v, nc * sizeof *p);
        if (!p) return -1;
        l->v = p;
        l->cap = nc;
    }
    if (!(l->v[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static char *read_small_file(const char *path, size_t max, size_t *len, wd_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        wd_errf(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st)) wd_errf(err, "%s: %s", path, strerror(errno));
    else if ((uint64_t)st.st_size > max) wd_errf(err, "%s: %lld bytes is too large (limit %zu)", path, (long long)st.st_size, max);
    else if (!(buf = malloc((size_t)st.st_size + 1))) wd_errf(err, "out of memory");
    else if (wd_pread_full(fd, buf, (size_t)st.st_size, 0, path, err)) {
        free(buf);
        buf = NULL;
    } else {
        buf[st.st_size] = 0;
        *len = (size_t)st.st_size;
    }
    close(fd);
    return buf;
}

/* Shard names from the index's weight_map; the map itself is returned for
 * the cross-check once the shards are open. */
static int index_shards(const char *dir, strlist *shards, cJSON **map_out, wd_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, INDEX_NAME);
    size_t len;
    char *text = read_small_file(path, MAX_INDEX, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return wd_errf(err, "%s: not JSON with a weight_map object", path);
    }
    for (const cJSON *it = wm->child; it; it = it->next) {
        int rc = 0;
        if (!cJSON_IsString(it)) rc = wd_errf(err, "%s: weight_map entry %s is not a file name", path, it->string);
        else if (!wd_safe_name(it->valuestring))
            rc = wd_errf(err, "%s: shard name '%s' is not a plain file name", path, it->valuestring);
        if (rc) {
            cJSON_Delete(root); /* after the message: it points into root */
            return rc;
        }
        int seen = 0;
        for (size_t i = 0; i < shards->n && !seen; i++) seen = !strcmp(shards->v[i], it->valuestring);
        if (!seen && strlist_add(shards, it->valuestring)) {
            cJSON_Delete(root);
            return wd_errf(err, "out of memory");
        }
    }
    if (!shards->n) {
        cJSON_Delete(root);
        return wd_errf(err, "%s: weight_map is empty", path);
    }
    *map_out = root;
    return 0;
}

/* Every tensor the index names is in its shard, and every tensor of the
 * shards is in the index. */
static int check_index(const wd_model *m, const cJSON *root, wd_err *err)
{
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    size_t entries = 0;
    for (const cJSON *it = wm->child; it; it = it->next, entries++) {
        size_t fi;
        const wd_tensor *t = wd_model_find(m, it->string, &fi);
        if (!t) return wd_errf(err, "%s/%s names tensor %s, which no shard holds", m->dir, INDEX_NAME, it->string);
        if (strcmp(m->files[fi].name, it->valuestring))
            return wd_errf(err, "%s/%s puts tensor %s in %s, but it is in %s", m->dir, INDEX_NAME, it->string,
                           it->valuestring, m->files[fi].name);
    }
    if (entries != m->ntensors)
        return wd_errf(err, "%s: the shards hold %zu tensors but %s names %zu (duplicate or missing entries)", m->dir,
                       m->ntensors, INDEX_NAME, entries);
    return 0;
}

/* Sorting carries each name next to its reference, so the comparator needs
 * no access to the model. */
typedef struct name_ref {
    const char *name;
    struct wd_tref ref;
} name_ref;

static int cmp_name_ref(const void *a, const void *b)
{
    return strcmp(((const name_ref *)a)->name, ((const name_ref *)b)->name);
}

static int build_by_name(wd_model *m, wd_err *err)
{
    size_t n = 0;
    for (size_t f = 0; f < m->nfiles; f++) n += m->files[f].ntensors;
    name_ref *tmp = malloc((n + 1) * sizeof *tmp);
    m->by_name = malloc((n + 1) * sizeof *m->by_name);
    if (!tmp || !m->by_name) {
        free(tmp);
        return wd_errf(err, "out of memory");
    }
    size_t k = 0;
    for (size_t f = 0; f < m->nfiles; f++)
        for (size_t t = 0; t < m->files[f].ntensors; t++)
            tmp[k++] = (name_ref){m->files[f].tensors[t].name, {(uint32_t)f, (uint32_t)t}};
    qsort(tmp, n, sizeof *tmp, cmp_name_ref);
    for (size_t i = 0; i < n; i++) {
        if (i && !strcmp(tmp[i].name, tmp[i - 1].name)) {
            int rc = wd_errf(err, "%s: tensor %s is in both %s and %s", m->dir, tmp[i].name,
                             m->files[tmp[i - 1].ref.file].name, m->files[tmp[i].ref.file].name);
            free(tmp);
            return rc;
        }
        m->by_name[i] = tmp[i].ref;
    }
    m->ntensors = n;
    free(tmp);
    return 0;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const wd_stfile *)a)->name, ((const wd_stfile *)b)->name);
}

int wd_model_open(const char *dir, wd_model *m, wd_err *err)
{
    memset(m, 0, sizeof *m);
    strlist shards = {0}, extras = {0};
    cJSON *index = NULL;
    char path[4096];
    int rc = -1;
    struct stat st;
    if (stat(dir, &st)) return wd_errf(err, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return wd_errf(err, "%s: not a directory", dir);
    m->dir = strdup(dir);
    if (!m->dir) return wd_errf(err, "out of memory");
    snprintf(path, sizeof path, "%s/%s", dir, INDEX_NAME);
    int have_index = access(path, F_OK) == 0;
    if (have_index && index_shards(dir, &shards, &index, err)) goto out;

    DIR *d = opendir(dir);
    if (!d) {
        wd_errf(err, "%s: %s", dir, strerror(errno));
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (!strcmp(nm, ".") || !strcmp(nm, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        if (stat(path, &st) || !S_ISREG(st.st_mode) || !wd_safe_name(nm)) continue;
        int is_weight = ends_with(nm, ".safetensors");
        if (is_weight && !have_index) {
            if (strlist_add(&shards, nm)) goto oom_dir;
        } else if (!is_weight || !have_index) {
            if (strlist_add(&extras, nm)) goto oom_dir;
        } else {
            /* with an index, a .safetensors file it does not name is kept as
             * an extra file only if it is not one of the shards */
            int listed = 0;
            for (size_t i = 0; i < shards.n && !listed; i++) listed = !strcmp(shards.v[i], nm);
            if (!listed && strlist_add(&extras, nm)) goto oom_dir;
        }
    }
    closedir(d);
    if (!shards.n) {
        wd_errf(err, "%s: no safetensors files (no model.safetensors, no *.safetensors, no index)", dir);
        goto out;
    }
    m->files = calloc(shards.n, sizeof *m->files);
    if (!m->files) {
        wd_errf(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < shards.n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, shards.v[i]);
        if (wd_st_open(path, &m->files[i], err)) goto out;
        m->nfiles++;
    }
    qsort(m->files, m->nfiles, sizeof *m->files, cmp_file);
    if (build_by_name(m, err)) goto out;
    if (index && check_index(m, index, err)) goto out;
    if (extras.n) qsort(extras.v, extras.n, sizeof *extras.v, cmp_str);
    m->extras = extras.v;
    m->nextras = extras.n;
    extras.v = NULL;
    extras.n = 0;
    rc = 0;
    goto out;
oom_dir:
    closedir(d);
    wd_errf(err, "out of memory");
out:
    cJSON_Delete(index);
    strlist_free(&shards);
    strlist_free(&extras);
    if (rc) wd_model_free(m);
    return rc;
}

const wd_tensor *wd_model_find(const wd_model *m, const char *name, size_t *file_index)
{
    size_t lo = 0, hi = m->ntensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct wd_tref *r = &m->by_name[mid];
        const wd_tensor *t = &m->files[r->file].tensors[r->tensor];
        int c = strcmp(name, t->name);
        if (c == 0) {
            if (file_index) *file_index = r->file;
            return t;
        }
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

/* by_name is sorted, so the first entry of each file is its smallest name:
 * shards are ordered by that, then by_name is walked once per shard. */
void wd_model_hash_order(const wd_model *m, struct wd_tref *refs)
{
    size_t nf = m->nfiles, k = 0;
    uint32_t *order = malloc((nf + 1) * sizeof *order);
    char *seen = calloc(nf + 1, 1);
    if (!order || !seen) { /* cannot happen for sane sizes; fall back to name order */
        free(order);
        free(seen);
        memcpy(refs, m->by_name, m->ntensors * sizeof *refs);
        return;
    }
    size_t no = 0;
    for (size_t i = 0; i < m->ntensors; i++)
        if (!seen[m->by_name[i].file]) {
            seen[m->by_name[i].file] = 1;
            order[no++] = m->by_name[i].file;
        }
    for (size_t o = 0; o < no; o++)
        for (size_t i = 0; i < m->ntensors; i++)
            if (m->by_name[i].file == order[o]) refs[k++] = m->by_name[i];
    free(order);
    free(seen);
}
