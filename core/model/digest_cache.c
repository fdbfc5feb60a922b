/* digest_cache.c - the base digest cache, shared by the mount (wdeltafs
 * remembers its bases' hashes across mounts) and `wdelta find-base`.
 *
 * One file per base directory, CACHE_DIR/base-<wd_hash64 of the canonical
 * directory path, 16 hex>.digest, three lines: the key (the directory, then
 * per weight file "|name:size:mtime.ns:inode:ctime.ns"; any change to a
 * shard is a miss, also one that puts the old mtime back, as `cp -p` or
 * `rsync -t` over the same file do: the change time cannot be set), the
 * model identity (WD_ID_V2, hex), then "v1 " and the WD_HASH_V1 digest.
 * Files of older versions (no v1 line, no change time) are misses.  Written
 * to a temporary and renamed, mode 0600; the directory is made 0700 (a
 * user's) or 0755 (root's /var/cache/wdeltafs).
 *
 * wd_create takes its base's hashes from here too (wd_model_hashes_memo),
 * and stores them only when they cannot be stale: the weight files' stat
 * the same before and after hashing, and every change time older than the
 * hashing's start by more than the file system's timestamp granularity
 * can hide (a file rewritten within one clock tick of its hash keeps its
 * times). */
#include "model/model_int.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *wd_digest_cache_dir(char *buf, size_t n)
{
    if (geteuid() == 0) return "/var/cache/wdeltafs";
    const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (x && x[0] == '/' && snprintf(buf, n, "%s/wdeltafs", x) < (int)n) return buf;
    if (home && home[0] == '/' && snprintf(buf, n, "%s/.cache/wdeltafs", home) < (int)n) return buf;
    return "/var/cache/wdeltafs";
}

/* the key line; NULL when a weight file cannot be stat'ed or out of memory */
static char *cache_key(const char *dir, const wd_model *m)
{
    size_t cap = 256, len = 0;
    char *k = malloc(cap);
    if (!k) return NULL;
    len = (size_t)snprintf(k, cap, "%s", dir);
    if (len + 1 > cap) {
        cap = len + 256;
        char *nk = realloc(k, cap);
        if (!nk) {
            free(k);
            return NULL;
        }
        k = nk;
        snprintf(k, cap, "%s", dir);
    }
    for (size_t i = 0; i < m->nfiles; i++) {
        struct stat st;
        char part[600];
        if (stat(m->files[i].path, &st)) {
            free(k);
            return NULL;
        }
        int n = snprintf(part, sizeof part, "|%s:%lld:%lld.%09ld:%llu:%lld.%09ld", m->files[i].name,
                         (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                         (unsigned long long)st.st_ino, (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
        if (n < 0 || (size_t)n >= sizeof part) {
            free(k);
            return NULL;
        }
        if (len + (size_t)n + 1 > cap) {
            cap = (len + (size_t)n + 1) * 2;
            char *nk = realloc(k, cap);
            if (!nk) {
                free(k);
                return NULL;
            }
            k = nk;
        }
        memcpy(k + len, part, (size_t)n + 1);
        len += (size_t)n;
    }
    return k;
}

static int cache_file(const char *cache_dir, const char *dir, char *buf, size_t n)
{
    int w = snprintf(buf, n, "%s/base-%016llx.digest", cache_dir, (unsigned long long)wd_hash64(dir, strlen(dir), 0));
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

int wd_digest_cache_load(const char *cache_dir, const char *dir, const wd_model *m, unsigned char id[32],
                         unsigned char v1[32])
{
    char path[PATH_MAX + 64], *key;
    if (!cache_dir || cache_file(cache_dir, dir, path, sizeof path) || !(key = cache_key(dir, m))) return -1;
    FILE *f = fopen(path, "re");
    int rc = -1;
    if (f) {
        size_t kl = strlen(key);
        char *line = malloc(kl + 128);
        char hex[80], hex1[80];
        if (line && fgets(line, (int)(kl + 128), f) && strlen(line) == kl + 1 && !strncmp(line, key, kl) &&
            fgets(hex, sizeof hex, f) && strlen(hex) >= 64 && fgets(hex1, sizeof hex1, f) && strlen(hex1) >= 67 &&
            !strncmp(hex1, "v1 ", 3)) {
            unsigned char a[32], b[32];
            hex[64] = 0;
            hex1[67] = 0;
            if (!wd_unhex(hex, a, 32) && !wd_unhex(hex1 + 3, b, 32)) {
                memcpy(id, a, 32);
                memcpy(v1, b, 32);
                rc = 0;
            }
        }
        free(line);
        fclose(f);
    }
    free(key);
    return rc;
}

static void make_dirs(const char *dir)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return;
    mode_t mode = geteuid() == 0 ? 0755 : 0700;
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, mode);
            *s = '/';
        }
    mkdir(p, mode);
}

int wd_digest_cache_store(const char *cache_dir, const char *dir, const wd_model *m, const unsigned char id[32],
                          const unsigned char v1[32], wd_err *err)
{
    char path[PATH_MAX + 64], tmp[PATH_MAX + 96], hex[65], hex1[65], *key;
    if (cache_file(cache_dir, dir, path, sizeof path))
        return wd_errf(err, "digest cache %s: path too long", cache_dir);
    if (!(key = cache_key(dir, m))) return wd_errf(err, "digest cache for %s: a weight file changed or is gone", dir);
    make_dirs(cache_dir);
    snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid());
    wd_hex(id, 32, hex);
    wd_hex(v1, 32, hex1);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f && fd >= 0) close(fd);
    if (f) {
        fprintf(f, "%s\n%s\nv1 %s\n", key, hex, hex1);
        if (fclose(f) == 0 && rename(tmp, path) == 0) {
            free(key);
            return 0;
        }
        int e = errno;
        unlink(tmp);
        errno = e;
    }
    int e = errno;
    free(key);
    return wd_errf(err, "cannot write the digest cache %s: %s", path, strerror(e));
}

int wd_model_hashes_cached(const char *dir, const char *cache_dir, unsigned char id[32], unsigned char v1[32],
                           int *cached, wd_err *err)
{
    char *real = realpath(dir, NULL);
    if (!real) return wd_errk(err, WD_ERR_MISSING, "%s: %s", dir, strerror(errno));
    wd_model m;
    if (wd_model_open(real, &m, err)) {
        free(real);
        return -1;
    }
    int rc = 0;
    if (cached) *cached = 0;
    if (wd_digest_cache_load(cache_dir, real, &m, id, v1) == 0) {
        if (cached) *cached = 1;
    } else if (wd_model_hashes(&m, v1, id, err)) {
        rc = -1;
    } else if (cache_dir) {
        wd_err cerr; /* a cache that cannot be written costs a rehash next time, nothing else */
        (void)wd_digest_cache_store(cache_dir, real, &m, id, v1, &cerr);
    }
    wd_model_free(&m);
    free(real);
    return rc;
}

/* Is any weight file of m changed (status or contents) at or after `since`
 * less the slack?  Then a hash taken from `since` on may not be the hash
 * of what the key will describe.  Also 1 where a file cannot be stat'ed. */
#define RACY_SLACK_S 2 /* well above any file system's timestamp tick */
static int racy(const wd_model *m, time_t since)
{
    for (size_t i = 0; i < m->nfiles; i++) {
        struct stat st;
        if (stat(m->files[i].path, &st) || st.st_ctim.tv_sec >= since - RACY_SLACK_S ||
            st.st_mtim.tv_sec >= since - RACY_SLACK_S)
            return 1;
    }
    return 0;
}

int wd_model_hashes_memo(const wd_model *m, const char *cache_dir, unsigned char id[32], unsigned char v1[32],
                         int *cached, wd_err *err)
{
    if (cached) *cached = 0;
    char *real = cache_dir ? realpath(m->dir, NULL) : NULL;
    if (real && wd_digest_cache_load(cache_dir, real, m, id, v1) == 0) {
        if (cached) *cached = 1;
        free(real);
        return 0;
    }
    time_t start = time(NULL);
    char *before = real ? cache_key(real, m) : NULL;
    int rc = wd_model_hashes(m, v1, id, err);
    if (!rc && before && !racy(m, start)) {
        char *after = cache_key(real, m);
        wd_err cerr; /* a cache that cannot be written costs a rehash next time, nothing else */
        if (after && !strcmp(before, after)) (void)wd_digest_cache_store(cache_dir, real, m, id, v1, &cerr);
        free(after);
    }
    free(before);
    free(real);
    return rc;
}

int wd_find_base(const unsigned char base_hash[32], unsigned kind, const char *const *dirs, size_t n,
                 const char *cache_dir, wd_find_base_cb cb, void *ctx, size_t *found, wd_err *err)
{
    if (kind != WD_ID_V2 && kind != WD_HASH_V1) return wd_errf(err, "unknown base hash kind %u", kind);
    *found = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        unsigned char id[32], v1[32];
        int cached = 0;
        wd_err e = {0};
        int rc = wd_model_hashes_cached(dirs[i], cache_dir, id, v1, &cached, &e);
        int match = !rc && !memcmp(kind == WD_ID_V2 ? id : v1, base_hash, 32);
        if (match && *found == (size_t)-1) *found = i;
        if (cb) cb(ctx, i, rc ? NULL : kind == WD_ID_V2 ? id : v1, cached, match, rc ? e.msg : NULL);
    }
    if (*found == (size_t)-1) {
        char hex[65];
        wd_hex(base_hash, 32, hex);
        return wd_errk(err, WD_ERR_MISSING, "none of the %zu director%s given is the base (%s %s)", n,
                       n == 1 ? "y" : "ies", wd_hash_kind_name(kind), hex);
    }
    return 0;
}
