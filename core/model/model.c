/* model.c - a Hugging Face model directory: its safetensors files (one file,
 * or the shards an index names), a by-name lookup over all tensors, and the
 * other files that travel with the weights (config, tokenizer, ...). */
#include "model/model_int.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

/* DIR/NAME into out; an error rather than a silently truncated path. */
static int join_path(char *out, size_t cap, const char *dir, const char *name, wd_err *err)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return wd_errf(err, "%s/%s: path too long", dir, name);
    return 0;
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
    char path[PATH_MAX];
    if (join_path(path, sizeof path, dir, INDEX_NAME, err)) return -1;
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

/* Every tensor the index names is in the shard it names, and every tensor
 * of the shards is in the index (exactly once: cJSON keeps duplicate keys). */
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
    /* each entry was found in its shard; now: no entry twice, and no shard
     * tensor left out (equal counts alone would miss "a twice, b never") */
    const char **keys = malloc((entries + 1) * sizeof *keys);
    if (!keys) return wd_errf(err, "out of memory");
    size_t k = 0;
    for (const cJSON *it = wm->child; it; it = it->next) keys[k++] = it->string;
    qsort(keys, k, sizeof *keys, cmp_str);
    int rc = 0;
    for (size_t i = 1; i < k && !rc; i++)
        if (!strcmp(keys[i], keys[i - 1]))
            rc = wd_errf(err, "%s/%s lists tensor %s twice", m->dir, INDEX_NAME, keys[i]);
    for (size_t i = 0; i < m->ntensors && !rc; i++) {
        const struct wd_tref *r = &m->by_name[i];
        const char *nm = m->files[r->file].tensors[r->tensor].name;
        if (!bsearch(&nm, keys, k, sizeof *keys, cmp_str))
            rc = wd_errf(err, "%s: tensor %s of %s is missing from %s", m->dir, nm, m->files[r->file].name,
                         INDEX_NAME);
    }
    free(keys);
    return rc;
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

int wd_model_index(wd_model *m, wd_err *err)
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

static int in_list(const strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return 1;
    return 0;
}

/* Sort the directory's regular files into shards and extras.  With an
 * index, shards already holds the files it names; a .safetensors file it
 * does not name travels as an extra file like any other. */
static int scan_dir(const char *dir, int have_index, strlist *shards, strlist *extras, wd_err *err)
{
    DIR *d = opendir(dir);
    if (!d) return wd_errf(err, "%s: %s", dir, strerror(errno));
    char path[PATH_MAX];
    int rc = 0;
    for (;;) {
        errno = 0; /* readdir signals errors only through errno */
        struct dirent *de = readdir(d);
        if (!de) break;
        const char *nm = de->d_name;
        struct stat st;
        /* unsafe names are skipped, never served; stat follows symlinks
         * (the Hugging Face cache links every file into its blob store) */
        if (!wd_safe_name(nm)) continue;
        if ((rc = join_path(path, sizeof path, dir, nm, err))) break;
        if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
        strlist *to = !have_index && ends_with(nm, ".safetensors") ? shards : in_list(shards, nm) ? NULL : extras;
        if (to && strlist_add(to, nm)) {
            rc = wd_errf(err, "out of memory");
            break;
        }
    }
    if (!rc && errno) rc = wd_errf(err, "%s: reading the directory: %s", dir, strerror(errno));
    closedir(d);
    return rc;
}

static const wd_tensor *donor_find(const void *donor, const char *name)
{
    return wd_model_find(donor, name, NULL);
}

static int open_shards(wd_model *m, const strlist *shards, const wd_model *donor, wd_err *err)
{
    char path[PATH_MAX];
    m->files = calloc(shards->n, sizeof *m->files);
    if (!m->files) return wd_errf(err, "out of memory");
    for (size_t i = 0; i < shards->n; i++) {
        if (join_path(path, sizeof path, m->dir, shards->v[i], err) || wd_st_open_shared(path, donor ? donor_find : NULL, donor, &m->files[i], err))
            return -1;
        m->nfiles++;
    }
    qsort(m->files, m->nfiles, sizeof *m->files, cmp_file);
    return 0;
}

int wd_model_open(const char *dir, wd_model *m, wd_err *err)
{
    return wd_model_open_shared(dir, NULL, m, err);
}

int wd_model_open_shared(const char *dir, const wd_model *donor, wd_model *m, wd_err *err)
{
    memset(m, 0, sizeof *m);
    strlist shards = {0}, extras = {0};
    cJSON *index = NULL;
    char path[PATH_MAX];
    struct stat st;
    if (stat(dir, &st))
        return wd_errk(err, errno == ENOENT || errno == ENOTDIR ? WD_ERR_MISSING : WD_ERR_DATA, "%s: %s", dir,
                       strerror(errno));
    if (!S_ISDIR(st.st_mode)) return wd_errk(err, WD_ERR_MISSING, "%s: not a directory", dir);
    if (join_path(path, sizeof path, dir, INDEX_NAME, err)) return -1;
    if (!(m->dir = strdup(dir))) return wd_errf(err, "out of memory");
    int rc = -1, have_index = access(path, F_OK) == 0;
    if (have_index && index_shards(dir, &shards, &index, err)) goto out;
    if (scan_dir(dir, have_index, &shards, &extras, err)) goto out;
    if (!shards.n) {
        wd_errf(err, "%s: no safetensors files (no model.safetensors, no *.safetensors, no index)", dir);
        goto out;
    }
    if (open_shards(m, &shards, donor, err) || wd_model_index(m, err)) goto out;
    if (index && check_index(m, index, err)) goto out;
    if (extras.n) qsort(extras.v, extras.n, sizeof *extras.v, cmp_str);
    m->extras = extras.v;
    m->nextras = extras.n;
    extras = (strlist){0};
    rc = 0;
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

/* The smallest tensor name of a shard (NULL if it holds none). */
static const char *min_name(const wd_stfile *f)
{
    const char *best = NULL;
    for (size_t i = 0; i < f->ntensors; i++)
        if (!best || strcmp(f->tensors[i].name, best) < 0) best = f->tensors[i].name;
    return best;
}

/* Fallback when two small arrays cannot be had (the function cannot fail):
 * repeatedly pick the shard with the next larger smallest name.  Slower,
 * O(files x tensors), but it needs no memory. */
static void hash_order_nomem(const wd_model *m, struct wd_tref *refs)
{
    size_t k = 0;
    const char *prev = NULL;
    for (;;) {
        size_t next = m->nfiles;
        const char *next_min = NULL;
        for (size_t f = 0; f < m->nfiles; f++) {
            const char *mn = min_name(&m->files[f]);
            if (mn && (!prev || strcmp(mn, prev) > 0) && (!next_min || strcmp(mn, next_min) < 0))
                next = f, next_min = mn;
        }
        if (next == m->nfiles) return;
        for (size_t i = 0; i < m->ntensors; i++)
            if (m->by_name[i].file == next) refs[k++] = m->by_name[i];
        prev = next_min;
    }
}

/* by_name is sorted, so a shard's first entry in it holds its smallest name:
 * that gives each shard its rank, and a counting sort by rank (stable, so
 * names stay sorted inside a shard) gives the order.  O(tensors + files). */
void wd_model_hash_order(const wd_model *m, struct wd_tref *refs)
{
    size_t nf = m->nfiles;
    size_t *rank = malloc((nf + 1) * sizeof *rank), *start = malloc((nf + 1) * sizeof *start);
    if (!rank || !start) {
        free(rank);
        free(start);
        hash_order_nomem(m, refs);
        return;
    }
    for (size_t f = 0; f < nf; f++) rank[f] = SIZE_MAX;
    size_t nr = 0;
    for (size_t i = 0; i < m->ntensors; i++)
        if (rank[m->by_name[i].file] == SIZE_MAX) rank[m->by_name[i].file] = nr++;
    /* start[r] = where the shard of rank r begins in refs */
    memset(start, 0, (nf + 1) * sizeof *start);
    for (size_t f = 0; f < nf; f++)
        if (rank[f] != SIZE_MAX) start[rank[f] + 1] = m->files[f].ntensors;
    for (size_t r = 0; r < nr; r++) start[r + 1] += start[r];
    for (size_t i = 0; i < m->ntensors; i++) refs[start[rank[m->by_name[i].file]]++] = m->by_name[i];
    free(rank);
    free(start);
}
