/* apply.c - rebuild a whole fine-tune directory, and verify a delta.
 *
 * apply: worker threads take blocks from a shared counter, decode them and
 * pwrite them at their place in their output file, all inside a temporary
 * directory that is renamed to the output name only when every file is
 * complete.  verify: checks every stored checksum; with the base attached it
 * also decodes everything and recomputes the result's content hash from the
 * rebuilt safetensors headers and tensors. */
#include "ops/ops.h"
#include "delta/delta.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Reading, decoding, writing: one reader thread reads each block's inputs
 * in order (its stored bytes and the base bytes it uses: copies out of the
 * page cache) into a small pool; `threads` workers decode them into output
 * buffers of another pool and queue those; one writer thread pwrites each
 * at its place in its output file.  So `--threads N` is N decoding
 * threads, the reads and writes overlapped on a thread each, as `zstd -d`
 * overlaps its I/O (asyncio).  Memory: the two pools, threads + 2 blocks of
 * inputs and threads + 2 of output, of the largest block. */
typedef struct apply_in {
    wd_block_inputs in;
    struct apply_in *next;
} apply_in;

typedef struct apply_buf {
    unsigned char *data;
    uint32_t block;
    struct apply_buf *next;
} apply_buf;

typedef struct apply_ctx {
    wd_delta *d;
    int *fds;
    uint32_t *block_file;
    uint64_t *block_off;
    pthread_mutex_t lock;
    /* each thread kind waits on its own: the reader for a free input
     * buffer, the workers for read inputs and a free output buffer, the
     * writer for decoded blocks (a block handed on wakes only its taker) */
    pthread_cond_t in_cond, work_cond, out_cond;
    apply_in *free_in;      /* ready for a read */
    apply_in *rq, **rtail;  /* read, to decode, in block order */
    apply_buf *free_bufs;   /* ready for a decode */
    apply_buf *wq, **wtail; /* decoded, to write */
    int reading;            /* the reader still running */
    int decoding;           /* workers still running */
    uint64_t done;
    int failed;
    wd_err err;
    void (*progress)(void *, uint64_t, uint64_t);
    void *progress_ctx;
} apply_ctx;

static void wake_all_locked(apply_ctx *a)
{
    pthread_cond_broadcast(&a->in_cond);
    pthread_cond_broadcast(&a->work_cond);
    pthread_cond_broadcast(&a->out_cond);
}

static void apply_fail_locked(apply_ctx *a, const wd_err *e)
{
    if (!a->failed) a->err = *e;
    a->failed = 1;
    wake_all_locked(a);
}

static void *apply_reader(void *arg)
{
    apply_ctx *a = arg;
    const wd_delta_info *in = wd_delta_get_info(a->d);
    pthread_mutex_lock(&a->lock);
    for (uint32_t b = 0; b < in->nblocks; b++) {
        while (!a->failed && !a->free_in) pthread_cond_wait(&a->in_cond, &a->lock);
        if (a->failed) break;
        wd_err e;
        if (wd_stop_requested(wd_delta_get_stop(a->d), &e)) {
            apply_fail_locked(a, &e);
            break;
        }
        apply_in *x = a->free_in;
        a->free_in = x->next;
        pthread_mutex_unlock(&a->lock);
        int rc = wd_delta_read_inputs(a->d, b, &x->in, &e);
        pthread_mutex_lock(&a->lock);
        if (rc) {
            x->next = a->free_in;
            a->free_in = x;
            apply_fail_locked(a, &e);
            break;
        }
        x->next = NULL;
        *a->rtail = x;
        a->rtail = &x->next;
        pthread_cond_signal(&a->work_cond);
    }
    a->reading = 0;
    pthread_cond_broadcast(&a->work_cond);
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

static void *apply_worker(void *arg)
{
    apply_ctx *a = arg;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->failed && (!a->free_bufs || !a->rq) && (a->rq || a->reading)) pthread_cond_wait(&a->work_cond, &a->lock);
        if (a->failed || !a->rq) break;
        apply_in *x = a->rq;
        a->rq = x->next;
        if (!a->rq) a->rtail = &a->rq;
        apply_buf *b = a->free_bufs;
        a->free_bufs = b->next;
        b->block = x->in.block;
        pthread_mutex_unlock(&a->lock);
        wd_err e;
        int rc = wd_delta_decode_inputs(a->d, &x->in, b->data, &e);
        pthread_mutex_lock(&a->lock);
        x->next = a->free_in;
        a->free_in = x;
        pthread_cond_signal(&a->in_cond);
        if (rc) {
            b->next = a->free_bufs;
            a->free_bufs = b;
            apply_fail_locked(a, &e);
            break;
        }
        b->next = NULL;
        *a->wtail = b;
        a->wtail = &b->next;
        pthread_cond_signal(&a->out_cond);
        /* another worker may take what is left (read inputs, a buffer) */
        if (a->rq && a->free_bufs) pthread_cond_signal(&a->work_cond);
    }
    a->decoding--;
    pthread_cond_broadcast(&a->out_cond);
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

/* The writer: until the workers are done and the queue is empty, or a
 * failure (then what is queued is dropped: the temporary directory goes). */
static void *apply_writer(void *arg)
{
    apply_ctx *a = arg;
    const wd_delta_info *in = wd_delta_get_info(a->d);
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->failed && !a->wq && a->decoding) pthread_cond_wait(&a->out_cond, &a->lock);
        if (a->failed || !a->wq) break;
        apply_buf *b = a->wq;
        a->wq = b->next;
        if (!a->wq) a->wtail = &a->wq;
        pthread_mutex_unlock(&a->lock);
        wd_err e;
        size_t n = in->blocks[b->block].out_len;
        uint32_t f = a->block_file[b->block];
        int rc = wd_pwrite_full(a->fds[f], b->data, n, a->block_off[b->block], in->files[f].name, &e);
        pthread_mutex_lock(&a->lock);
        b->next = a->free_bufs;
        a->free_bufs = b;
        pthread_cond_signal(&a->work_cond);
        if (rc) {
            apply_fail_locked(a, &e);
            break;
        }
        a->done += n;
        if (a->progress) a->progress(a->progress_ctx, a->done, in->output_size);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

/* Run the reader, n decoding workers and the writer over every block of a->d. */
static void apply_run(apply_ctx *a, int n)
{
    const wd_delta_info *in = wd_delta_get_info(a->d);
    size_t maxb = 1;
    for (size_t b = 0; b < in->nblocks; b++)
        if (in->blocks[b].out_len > maxb) maxb = in->blocks[b].out_len;
    size_t nbufs = (size_t)n + 2;
    apply_buf *bufs = calloc(nbufs, sizeof *bufs);
    apply_in *ins = calloc(nbufs, sizeof *ins);
    pthread_t *tids = calloc((size_t)n, sizeof *tids);
    pthread_t wt, rt;
    wd_err e;
    a->wtail = &a->wq;
    a->rtail = &a->rq;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->in_cond, NULL);
    pthread_cond_init(&a->work_cond, NULL);
    pthread_cond_init(&a->out_cond, NULL);
    for (size_t i = 0; bufs && ins && i < nbufs; i++) {
        if (!(bufs[i].data = malloc(maxb))) break;
        bufs[i].next = a->free_bufs;
        a->free_bufs = &bufs[i];
        ins[i].next = a->free_in;
        a->free_in = &ins[i];
    }
    a->decoding = 1; /* this thread's, until the workers are started */
    a->reading = 1;
    int writer = 0, reader = 0;
    if (!bufs || !ins || !tids || !a->free_bufs) {
        wd_errf(&e, "out of memory");
        apply_fail_locked(a, &e);
    } else if ((errno = pthread_create(&wt, NULL, apply_writer, a)) != 0 ||
               !(writer = 1) || (errno = pthread_create(&rt, NULL, apply_reader, a)) != 0) {
        wd_errf(&e, "cannot start a thread: %s", strerror(errno));
        pthread_mutex_lock(&a->lock);
        apply_fail_locked(a, &e);
        pthread_mutex_unlock(&a->lock);
    } else {
        reader = 1;
        int started = 0;
        for (int i = 0; i < n; i++) {
            pthread_mutex_lock(&a->lock);
            a->decoding++;
            pthread_mutex_unlock(&a->lock);
            if (pthread_create(&tids[i], NULL, apply_worker, a) == 0) {
                tids[started++] = tids[i];
                continue;
            }
            pthread_mutex_lock(&a->lock);
            a->decoding--;
            pthread_mutex_unlock(&a->lock);
        }
        if (!started) apply_worker(a); /* no thread to be had: decode here */
        else {
            pthread_mutex_lock(&a->lock);
            a->decoding--;
            pthread_cond_broadcast(&a->out_cond);
            pthread_mutex_unlock(&a->lock);
        }
        for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
    }
    if (!writer) a->decoding = 0;
    if (reader) pthread_join(rt, NULL);
    if (writer) {
        pthread_mutex_lock(&a->lock);
        if (!reader) a->decoding = 0; /* no worker ran */
        wake_all_locked(a);
        pthread_mutex_unlock(&a->lock);
        pthread_join(wt, NULL);
    }
    for (size_t i = 0; bufs && i < nbufs; i++) free(bufs[i].data);
    for (size_t i = 0; ins && i < nbufs; i++) wd_block_inputs_free(&ins[i].in);
    free(bufs);
    free(ins);
    free(tids);
    pthread_cond_destroy(&a->in_cond);
    pthread_cond_destroy(&a->work_cond);
    pthread_cond_destroy(&a->out_cond);
    pthread_mutex_destroy(&a->lock);
}

/* The v1 base extras wd_apply copies: those the delta does not itself hold. */
static int v1_copies(const wd_delta *d, size_t i)
{
    return wd_delta_find_file((wd_delta *)d, wd_delta_base_model(d)->extras[i]) < 0;
}

size_t wd_apply_count(const wd_delta *d)
{
    size_t n = wd_delta_get_info(d)->nfiles;
    for (size_t i = 0; wd_delta_is_v1(d) && wd_delta_base_model(d) && i < wd_delta_base_model(d)->nextras; i++) n += v1_copies(d, i);
    return n;
}

int wd_apply_writes(const wd_delta *d, const char *name)
{
    if (wd_delta_find_file((wd_delta *)d, name) >= 0) return 1;
    for (size_t i = 0; wd_delta_is_v1(d) && wd_delta_base_model(d) && i < wd_delta_base_model(d)->nextras; i++)
        if (!strcmp(wd_delta_base_model(d)->extras[i], name)) return 1;
    return 0;
}

/* Remove a directory wd_apply made for d: only the names it writes there
 * (the output files and, for v1, the base's extra files), then the
 * directory itself, which fails if anything else is in it. */
int wd_apply_remove(const wd_delta *d, const char *dir)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    const wd_model *base = wd_delta_is_v1(d) ? wd_delta_base_model(d) : NULL;
    char p[4096];
    for (size_t i = 0; i < in->nfiles; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, in->files[i].name);
        unlink(p);
    }
    for (size_t i = 0; base && i < base->nextras; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, base->extras[i]);
        unlink(p);
    }
    return rmdir(dir);
}

/* What is in dir that wd_apply of d would not write (a subdirectory, a
 * link, a file of another name): "a, b, c" into list (cut with ", ..."), the
 * count returned, *total = all entries; -1 if dir cannot be read. */
static long foreign_entries(const wd_delta *d, const char *dir, char *list, size_t cap, size_t *total, wd_err *err)
{
    *total = 0;
    DIR *dd = opendir(dir);
    if (!dd) return wd_errf(err, "%s: %s", dir, strerror(errno));
    long n = 0;
    size_t len = 0;
    list[0] = 0;
    char p[4096];
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(dd);
        if (!e) break;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        ++*total;
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        int ok = lstat(p, &st) == 0;
        if (ok && S_ISREG(st.st_mode) && wd_apply_writes(d, e->d_name)) continue;
        if (n < 8 && len + strlen(e->d_name) + 8 < cap)
            len += (size_t)snprintf(list + len, cap - len, "%s%s%s", n ? ", " : "", e->d_name,
                                    ok && S_ISDIR(st.st_mode) ? "/" : "");
        else if (n == 8 && len + 6 < cap)
            len += (size_t)snprintf(list + len, cap - len, ", ...");
        n++;
    }
    int e = errno;
    closedir(dd);
    if (e) return wd_errf(err, "%s: reading the directory: %s", dir, strerror(e));
    return n;
}

static int copy_file(const char *from, const char *to, wd_err *err)
{
    int in = open(from, O_RDONLY | O_CLOEXEC), out = -1;
    if (in < 0) return wd_errf(err, "%s: %s", from, strerror(errno));
    out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (out < 0) {
        close(in);
        return wd_errf(err, "%s: %s", to, strerror(errno));
    }
    unsigned char buf[65536];
    uint64_t off = 0;
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = wd_errf(err, "%s: %s", from, strerror(errno));
            break;
        }
        if (n == 0) break;
        if (wd_pwrite_full(out, buf, (size_t)n, off, to, err)) {
            rc = -1;
            break;
        }
        off += (uint64_t)n;
    }
    close(in);
    if (close(out) && !rc) rc = wd_errf(err, "%s: %s", to, strerror(errno));
    return rc;
}

/* A v1 delta rebuilds only weights: the rest of the directory (config,
 * tokenizer) is the base's. */
static int copy_base_extras(wd_delta *d, const char *dir, wd_err *err)
{
    char from[4096], to[4096];
    for (size_t i = 0; i < wd_delta_base_model(d)->nextras; i++) {
        if (!v1_copies(d, i)) continue;
        snprintf(from, sizeof from, "%s/%s", wd_delta_base_model(d)->dir, wd_delta_base_model(d)->extras[i]);
        snprintf(to, sizeof to, "%s/%s", dir, wd_delta_base_model(d)->extras[i]);
        if (copy_file(from, to, err)) return -1;
    }
    return 0;
}

/* Build everything in a temporary directory next to out_dir, then put it in
 * place: renamed to out_dir (which must be absent or an empty directory), or
 * with replace, swapped with the existing out_dir, whose files (all ours,
 * checked by the caller) are then removed.  mode: the directory's (0: 0777 less the umask). */
static int build(wd_delta *d, const char *out_dir, int replace, mode_t mode, int threads,
                 void (*progress)(void *ctx, uint64_t done, uint64_t total), void *progress_ctx, wd_err *err)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    size_t tl = strlen(out_dir) + 16;
    if (wd_remove_stale(out_dir, err) < 0) return -1;
    if (wd_stop_requested(wd_delta_get_stop(d), err)) return -1;
    char *tmp = NULL;
    apply_ctx a = {.d = d, .progress = progress, .progress_ctx = progress_ctx};
    a.fds = calloc(in->nfiles + 1, sizeof *a.fds);
    a.block_file = malloc((in->nblocks + 1) * sizeof *a.block_file);
    a.block_off = malloc((in->nblocks + 1) * sizeof *a.block_off);
    int rc = -1;
    if (!a.fds || !a.block_file || !a.block_off) {
        wd_errf(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < in->nfiles; i++) a.fds[i] = -1;
    /* 0777 and files 0666, less the umask: the modes of any new output;
     * an existing directory's mode is kept */
    if (wd_tmp_dir(out_dir, "tmp", 0777, &tmp, err) < 0) goto out;
    if (mode && chmod(tmp, mode)) {
        wd_errf(err, "cannot set the mode of %s: %s", tmp, strerror(errno));
        goto out;
    }
    char path[4096];
    for (size_t f = 0; f < in->nfiles; f++) {
        const wd_outfile *of = &in->files[f];
        snprintf(path, sizeof path, "%s/%s", tmp, of->name);
        a.fds[f] = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (a.fds[f] < 0 || ftruncate(a.fds[f], (off_t)of->size)) {
            wd_errf(err, "%s: %s", path, strerror(errno));
            goto out;
        }
        for (size_t k = 0; k < of->nextents; k++) {
            const wd_extent *e = &of->extents[k];
            for (uint32_t b = 0; b < e->nblocks; b++) {
                a.block_file[e->first_block + b] = (uint32_t)f;
                a.block_off[e->first_block + b] = e->file_offset + (uint64_t)b * e->block_size;
            }
        }
    }
    int n = threads > 0 ? threads : online_cpus();
    if (n > 256) n = 256;
    apply_run(&a, n);
    if (a.failed) {
        *err = a.err;
        goto out;
    }
    for (size_t f = 0; f < in->nfiles; f++) {
        if (fsync(a.fds[f]) || close(a.fds[f])) {
            a.fds[f] = -1;
            wd_errf(err, "%s/%s: %s", tmp, in->files[f].name, strerror(errno));
            goto out;
        }
        a.fds[f] = -1;
    }
    if (wd_delta_is_v1(d) && wd_delta_base_model(d) && copy_base_extras(d, tmp, err)) goto out;
    if (replace) {
        /* out_dir moves aside under a fresh name (rename onto the empty
         * directory mkdtemp made), the new one takes its place, then the
         * old one's files, every one a file d writes, are removed */
        char *old = malloc(tl + 8);
        if (!old) {
            wd_errf(err, "out of memory");
            goto out;
        }
        snprintf(old, tl + 8, "%s.old.XXXXXX", out_dir);
        if (!mkdtemp(old) || rename(out_dir, old)) {
            wd_errf(err, "cannot move %s aside to replace it: %s", out_dir, strerror(errno));
            rmdir(old);
            free(old);
            goto out;
        }
        if (rename(tmp, out_dir)) {
            wd_errf(err, "cannot rename %s to %s: %s", tmp, out_dir, strerror(errno));
            rename(old, out_dir);
            free(old);
            goto out;
        }
        /* only our names are removed: anything put into out_dir since the
         * caller's check stays, in `old`, which then is not removed */
        wd_apply_remove(d, old);
        free(old);
    } else if (rename(tmp, out_dir)) {
        wd_errf(err, "cannot rename %s to %s: %s", tmp, out_dir, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    for (size_t f = 0; a.fds && f < in->nfiles; f++)
        if (a.fds[f] >= 0) close(a.fds[f]);
    if (rc && tmp) wd_apply_remove(d, tmp);
    free(tmp);
    free(a.fds);
    free(a.block_file);
    free(a.block_off);
    return rc;
}

/* An existing output directory: empty is taken as it is (its mode kept);
 * with replace, one holding only files d writes is replaced; anything else
 * is refused, naming what is there. */
static int apply_to(wd_delta *d, const char *out_dir, int replace, int threads,
                    void (*progress)(void *ctx, uint64_t done, uint64_t total), void *progress_ctx, wd_err *err)
{
    struct stat st;
    if (lstat(out_dir, &st)) {
        if (errno != ENOENT) return wd_errf(err, "%s: %s", out_dir, strerror(errno));
        return build(d, out_dir, 0, 0, threads, progress, progress_ctx, err);
    }
    if (!S_ISDIR(st.st_mode))
        return wd_errf(err, "%s exists and is not a directory; not replacing it", out_dir);
    char list[512];
    size_t total = 0;
    long nforeign = foreign_entries(d, out_dir, list, sizeof list, &total, err);
    if (nforeign < 0) return -1;
    if (nforeign)
        return wd_errf(err, "%s holds %ld entr%s this delta does not write: %s; not replacing it "
                            "(--force replaces only the files the delta rebuilds: move these away or "
                            "choose another output directory)",
                       out_dir, nforeign, nforeign == 1 ? "y" : "ies", list);
    /* only our files (or none) are there; an empty directory is replaced
     * by the rename itself (rename(2) onto an empty directory), its mode kept */
    if (!total) return build(d, out_dir, 0, st.st_mode & 07777, threads, progress, progress_ctx, err);
    if (!replace)
        return wd_errf(err, "%s already exists and holds this delta's files; use --force to replace them", out_dir);
    return build(d, out_dir, 1, st.st_mode & 07777, threads, progress, progress_ctx, err);
}

int wd_apply(wd_delta *d, const char *out_dir, int threads,
             void (*progress)(void *ctx, uint64_t done, uint64_t total), void *progress_ctx, wd_err *err)
{
    return apply_to(d, out_dir, 0, threads, progress, progress_ctx, err);
}

int wd_apply_replace(wd_delta *d, const char *out_dir, int threads,
                     void (*progress)(void *ctx, uint64_t done, uint64_t total), void *progress_ctx,
                     wd_err *err)
{
    return apply_to(d, out_dir, 1, threads, progress, progress_ctx, err);
}

/* ---- verify ---------------------------------------------------------- */
/* Decode [off, off+len) of file f, feeding it to the hash.  *have: the
 * block buf holds (UINT32_MAX: none), so that the many small tensors of one
 * block cost one decode, not one each (80k tiny tensors: 64 s before). */
static int hash_range(wd_delta *d, size_t f, uint64_t off, uint64_t len, wd_idhash *h, unsigned char *buf,
                      uint32_t *have, wd_err *err)
{
    while (len) {
        uint32_t b;
        uint64_t boff;
        if (wd_delta_locate(d, f, off, &b, &boff))
            return wd_errf(err, "%s: offset %llu outside file %s", wd_delta_path(d), (unsigned long long)off,
                           wd_delta_get_info(d)->files[f].name);
        if (b != *have) {
            *have = UINT32_MAX;
            if (wd_delta_decode_block(d, b, buf, err)) return -1;
            *have = b;
        }
        uint64_t in_block = off - boff, avail = wd_delta_get_info(d)->blocks[b].out_len - in_block;
        uint64_t take = avail < len ? avail : len;
        wd_idhash_update(h, buf + in_block, (size_t)take);
        off += take;
        len -= take;
    }
    return 0;
}

/* The result hash, of the kind the delta records: the rebuilt safetensors
 * headers are decoded and parsed into a model of their own, whose tensors
 * are then hashed in the content-hash order (wd_model_hash_order), decoding
 * as it goes. */
static int result_hash(wd_delta *d, unsigned char out[32], wd_err *err)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    int rc = -1;
    size_t maxb = 1;
    for (size_t b = 0; b < in->nblocks; b++)
        if (in->blocks[b].out_len > maxb) maxb = in->blocks[b].out_len;
    wd_model vm = {.dir = (char *)wd_delta_path(d)}; /* borrowed: named in messages, never freed */
    wd_stfile *sf = calloc(in->nfiles + 1, sizeof *sf);
    size_t *fidx = calloc(in->nfiles + 1, sizeof *fidx);
    unsigned char *buf = malloc(maxb);
    struct wd_tref *order = NULL;
    /* v1 files record no result hash: the identity of what they rebuild */
    wd_idhash *h = wd_idhash_new(wd_delta_is_v1(d) ? WD_ID_V2 : in->result_hash_kind);
    if (!sf || !fidx || !buf || !h) {
        wd_errf(err, "out of memory");
        goto out;
    }
    for (size_t f = 0; f < in->nfiles; f++) {
        if (!in->files[f].is_safetensors) continue;
        const wd_extent *e = &in->files[f].extents[0];
        unsigned char *hdr = malloc(e->length ? e->length : 1);
        if (!hdr) {
            wd_errf(err, "out of memory");
            goto out;
        }
        uint64_t at = 0;
        int ok = 1;
        for (uint32_t b = 0; ok && b < e->nblocks; b++) {
            if (wd_delta_decode_block(d, e->first_block + b, buf, err)) ok = 0;
            else {
                memcpy(hdr + at, buf, wd_delta_get_info(d)->blocks[e->first_block + b].out_len);
                at += wd_delta_get_info(d)->blocks[e->first_block + b].out_len;
            }
        }
        if (!ok ||
            wd_st_parse_nocopy(hdr, (size_t)e->length, in->files[f].size, in->files[f].name, &sf[vm.nfiles], err)) {
            free(hdr);
            goto out;
        }
        free(hdr);
        fidx[vm.nfiles++] = f;
    }
    vm.files = sf;
    if (wd_model_index(&vm, err)) goto out;
    order = malloc((vm.ntensors + 1) * sizeof *order);
    if (!order) {
        wd_errf(err, "out of memory");
        goto out;
    }
    wd_model_hash_order(&vm, order);
    uint32_t have = UINT32_MAX; /* buf held the headers' blocks until now */
    for (size_t k = 0; k < vm.ntensors; k++) {
        const wd_tensor *t = &sf[order[k].file].tensors[order[k].tensor];
        if (wd_idhash_begin(h, t)) {
            wd_errf(err, "out of memory");
            goto out;
        }
        if (hash_range(d, fidx[order[k].file], t->offset, t->length, h, buf, &have, err)) goto out;
    }
    rc = wd_idhash_final(h, out, err);
    h = NULL;
out:
    wd_idhash_free(h);
    for (size_t s = 0; sf && s < vm.nfiles; s++) wd_st_free(&sf[s]);
    free(sf);
    free(vm.by_name);
    free(fidx);
    free(buf);
    free(order);
    return rc;
}

/* v1: the trailing SHA-256, then (with the base) every tensor rebuilt; v1
 * records no result hash, so the rebuilt model's is reported, not compared. */
static int verify_v1(wd_delta *d, int with_base, unsigned char out_hash[32], wd_err *err)
{
    if (wd_delta_check_digest(d, err)) return -1;
    if (!with_base) return 0;
    if (!wd_delta_base_model(d)) return wd_errf(err, "%s: verifying the result needs the base model", wd_delta_path(d));
    return result_hash(d, out_hash, err);
}

int wd_verify(wd_delta *d, int with_base, unsigned char out_hash[32],
              void (*progress)(void *ctx, uint64_t done, uint64_t total), void *progress_ctx, wd_err *err)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    if (wd_delta_is_v1(d)) return verify_v1(d, with_base, out_hash, err);
    unsigned char *buf = NULL;
    size_t cap = 0;
    uint64_t total = 0, done = 0;
    for (size_t b = 0; b < in->nblocks; b++) total += in->blocks[b].stored_len;
    for (size_t b = 0; b < in->nblocks; b++) {
        if (wd_delta_read_stored(d, (uint32_t)b, &buf, &cap, err)) {
            free(buf);
            return -1;
        }
        done += in->blocks[b].stored_len;
        if (progress) progress(progress_ctx, done, total);
    }
    free(buf);
    if (!with_base) return 0;
    if (!wd_delta_has_source(d)) return wd_errf(err, "%s: verifying the result needs the base model", wd_delta_path(d));
    if (result_hash(d, out_hash, err)) return -1;
    if (memcmp(out_hash, in->result_hash, 32)) {
        char a[65], b[65];
        wd_hex(out_hash, 32, a);
        wd_hex(in->result_hash, 32, b);
        return wd_errf(err, "%s: rebuilt model hashes to %s, the delta records %s", wd_delta_path(d), a, b);
    }
    return 0;
}
