/* nullfs - the ceiling for wdeltafs read speed: a do-nothing low-level
 * libfuse3 filesystem serving one read-only file, MOUNTPOINT/data, of SIZE
 * bytes, straight from a buffer in memory (a repeating 4 KiB pattern, no
 * copies, no decoding).  Same FUSE settings as wdeltafs (multi-threaded loop,
 * keep_cache, async reads, 1 MiB readahead), so the difference between the two
 * is the cost of wdeltafs itself.
 *
 *   cc -O2 -o nullfs nullfs.c $(pkg-config --cflags --libs fuse3)
 *   nullfs SIZE MOUNTPOINT [-f] [-o OPT,...]      (SIZE in bytes; K/M/G suffixes)
 *   fusermount3 -u MOUNTPOINT
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PERIOD 4096
#define MAXREAD (4u << 20)
static uint64_t fsize;
static char *pattern; /* MAXREAD + PERIOD bytes */
static const char fname[] = "data";

static void fill(fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)fsize;
        st->st_blocks = (blkcnt_t)((fsize + 511) / 512);
    }
}

static void op_init(void *u, struct fuse_conn_info *conn)
{
    (void)u;
    conn->max_readahead = conn->max_readahead > (1u << 20) ? conn->max_readahead : (1u << 20);
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (parent != FUSE_ROOT_ID || strcmp(name, fname)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.ino = 2;
    e.attr_timeout = e.entry_timeout = 3600;
    fill(2, &e.attr);
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    if (ino != FUSE_ROOT_ID && ino != 2) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    fill(ino, &st);
    fuse_reply_attr(req, &st, 3600);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    if (ino != FUSE_ROOT_ID) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    char buf[512];
    size_t len = 0;
    struct stat st;
    const char *names[] = {".", "..", fname};
    fuse_ino_t inos[] = {1, 1, 2};
    for (off_t i = off; i < 3; i++) {
        fill(inos[i], &st);
        size_t need = fuse_add_direntry(req, buf + len, sizeof buf - len, names[i], &st, i + 1);
        if (len + need > size || len + need > sizeof buf) break;
        len += need;
    }
    fuse_reply_buf(req, buf, len);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (ino != 2) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EROFS);
        return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino; (void)fi;
    if ((uint64_t)off >= fsize) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > MAXREAD) size = MAXREAD;
    if ((uint64_t)off + size > fsize) size = (size_t)(fsize - (uint64_t)off);
    fuse_reply_buf(req, pattern + (uint64_t)off % PERIOD, size);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init, .lookup = op_lookup, .getattr = op_getattr,
    .readdir = op_readdir, .open = op_open, .read = op_read,
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SIZE MOUNTPOINT [-f] [-o OPT,...]\n", argv[0]);
        return 2;
    }
    char *end;
    double v = strtod(argv[1], &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024; break;
    case 'm': case 'M': v *= 1024.0 * 1024; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
    default: break;
    }
    fsize = (uint64_t)v;
    pattern = malloc(MAXREAD + PERIOD);
    if (!pattern) return 1;
    for (size_t i = 0; i < MAXREAD + PERIOD; i++) pattern[i] = (char)(i * 131u + (i >> 12));
    for (size_t i = PERIOD; i < MAXREAD + PERIOD; i++) pattern[i] = pattern[i % PERIOD];

    /* argv without SIZE */
    for (int i = 1; i + 1 < argc; i++) argv[i] = argv[i + 1];
    argc--;
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts co;
    if (fuse_parse_cmdline(&args, &co) != 0 || !co.mountpoint) {
        fprintf(stderr, "nullfs: need MOUNTPOINT\n");
        return 2;
    }
    fuse_opt_add_arg(&args, "-oro,default_permissions,fsname=nullfs,subtype=nullfs");
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    int rc = 1;
    if (!se) goto out;
    if (fuse_set_signal_handlers(se) != 0) goto out_se;
    if (fuse_session_mount(se, co.mountpoint) != 0) goto out_sig;
    if (fuse_daemonize(co.foreground) != 0) goto out_um;
    struct fuse_loop_config lc = {.clone_fd = 0, .max_idle_threads = 16};
    rc = co.singlethread ? fuse_session_loop(se) : fuse_session_loop_mt(se, &lc);
out_um:
    fuse_session_unmount(se);
out_sig:
    fuse_remove_signal_handlers(se);
out_se:
    fuse_session_destroy(se);
out:
    free(co.mountpoint);
    fuse_opt_free_args(&args);
    free(pattern);
    return rc ? 1 : 0;
}
