/* main.c - wdeltafs: the FUSE daemon.  Options, start (the first scan, the
 * mount, the rescan, hashing and read-ahead threads) and logging.  The
 * operations are in ops.c, inodes in inodes.c, reads in read.c, read-ahead
 * in readahead.c, extended attributes in xattr.c, what is shown in tree.c.
 *
 *   wdeltafs SRC MOUNTPOINT [-f] [-d] [-o base=DIR[:DIR...],cache_size=1G,...]
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include "daemon.h"
#include "inodes.h"    /* known_free */
#include "ops.h"       /* fs_ops, handle_free */
#include "readahead.h" /* readahead_start, readahead_join */

/* ---- options ----------------------------------------------------------- */
typedef struct options {
    char *base, *cache_size, *cache_dir, *scan_interval, *readahead, *v1_dtype, *ra_threads;
    int help, version, bad, cross_fs;
} options;

enum { KEY_BASE = 1, KEY_MOUNT8 };
#define OPT(t, p) {t, offsetof(options, p), 1}
static const struct fuse_opt opt_spec[] = {
    FUSE_OPT_KEY("base=", KEY_BASE),
    OPT("cache_size=%s", cache_size),
    OPT("cache_dir=%s", cache_dir),
    OPT("scan_interval=%s", scan_interval),
    OPT("readahead=%s", readahead),
    OPT("v1_dtype=%s", v1_dtype),
    OPT("readahead_threads=%s", ra_threads),
    OPT("cross_fs", cross_fs),
    OPT("-h", help),
    OPT("--help", help),
    OPT("-V", version),
    OPT("--version", version),
    /* what mount(8) and fstab pass that only matters to mount(8) itself;
     * mount.fuse3 drops them, a direct call must not fail on them */
    FUSE_OPT_KEY("defaults", KEY_MOUNT8),
    FUSE_OPT_KEY("auto", KEY_MOUNT8),
    FUSE_OPT_KEY("noauto", KEY_MOUNT8),
    FUSE_OPT_KEY("user", KEY_MOUNT8),
    FUSE_OPT_KEY("users", KEY_MOUNT8),
    FUSE_OPT_KEY("nouser", KEY_MOUNT8),
    FUSE_OPT_KEY("owner", KEY_MOUNT8),
    FUSE_OPT_KEY("group", KEY_MOUNT8),
    FUSE_OPT_KEY("_netdev", KEY_MOUNT8),
    FUSE_OPT_KEY("nofail", KEY_MOUNT8),
    FUSE_OPT_END,
};

/* base= may be given several times (each a DIR or DIR:DIR...): all are
 * used, in order.  x-* and comment=* (fstab's notes for other programs)
 * are dropped; every other option goes on to libfuse, which refuses what
 * it does not know. */
static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    options *o = data;
    if (key == KEY_BASE) {
        const char *v = arg + 5;
        size_t have = o->base ? strlen(o->base) : 0, l = strlen(v);
        if (!l) {
            fprintf(stderr, "wdeltafs: base= needs a directory (-o base=DIR[:DIR...], or base= several times)\n");
            o->bad = 1;
            return 0;
        }
        char *p = realloc(o->base, have + l + 2);
        if (!p) return -1;
        if (have) p[have++] = ':';
        memcpy(p + have, v, l + 1);
        o->base = p;
        return 0;
    }
    if (key == KEY_MOUNT8) return 0;
    if (key == FUSE_OPT_KEY_OPT && (!strncmp(arg, "x-", 2) || !strncmp(arg, "comment=", 8))) return 0;
    return 1;
}

static daemon_state *G; /* only for the log function and signal-safe paths */

void logmsg(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!G || G->foreground || !G->detached) {
        flockfile(stderr); /* one whole line per message, whatever the thread */
        fprintf(stderr, "wdeltafs: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        funlockfile(stderr);
    } else {
        vsyslog(level, fmt, ap);
    }
    va_end(ap);
}

/* ---- background threads ---------------------------------------------- */
static void invalidate(void *ctx, uint64_t parent, const char *name)
{
    daemon_state *ds = ctx;
    fuse_lowlevel_notify_inval_entry(ds->se, parent, name, strlen(name));
    /* and the directory's attributes: its time moved (the kernel only does
     * this itself for names it has a dentry of) */
    fuse_lowlevel_notify_inval_inode(ds->se, parent, -1, 0);
}

/* Bases whose digest was neither cached nor small enough to hash before
 * mounting are hashed here, while the mount already serves everything
 * else; the deltas that need them appear at the rescan that follows. */
static void *hasher_main(void *arg)
{
    daemon_state *ds = arg;
    tree_hash_pending(&ds->t, 0);
    pthread_mutex_lock(&ds->lock);
    ds->hashing_done = 1;
    ds->rescan_now = 1;
    pthread_cond_broadcast(&ds->stop_cv);
    pthread_mutex_unlock(&ds->lock);
    return NULL;
}

static void *scanner_main(void *arg)
{
    daemon_state *ds = arg;
    for (;;) {
        tree_rescan(&ds->t, invalidate, ds);
        pthread_mutex_lock(&ds->lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += ds->scan_interval;
        while (!ds->stopping && !ds->rescan_now &&
               pthread_cond_timedwait(&ds->stop_cv, &ds->lock, &until) != ETIMEDOUT) {
        }
        ds->rescan_now = 0;
        int stop = ds->stopping;
        pthread_mutex_unlock(&ds->lock);
        if (stop) return NULL;
    }
}

/* Tell systemd (Type=notify) that the mount is up, without libsystemd. */
static void notify_ready(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@')) return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t l = strlen(path);
    if (l >= sizeof sa.sun_path) l = sizeof sa.sun_path - 1;
    memcpy(sa.sun_path, path, l);
    if (sa.sun_path[0] == '@') sa.sun_path[0] = 0;
    const char msg[] = "READY=1";
    sendto(fd, msg, sizeof msg - 1, 0, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l));
    close(fd);
}

/* The kernel reads ahead only read_ahead_kb per mount (128 KiB by
 * default), which keeps sequential FUSE requests small; root may raise it
 * in sysfs.  Best effort: a failure only costs speed.  The device number
 * comes from /proc/self/mountinfo: stat() of the mountpoint would wait for
 * the INIT reply, which only the session loop (not started yet) sends. */
static void raise_readahead(const char *mnt)
{
    char *real = strdup(mnt); /* fuse_parse_cmdline made it absolute (realpath) */
    FILE *mi = fopen("/proc/self/mountinfo", "r");
    unsigned maj = 0, mnr = 0;
    int found = 0;
    if (real && mi) {
        char line[8192];
        while (fgets(line, sizeof line, mi)) {
            unsigned a, b;
            char where[4096];
            if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &a, &b, where) != 3) continue;
            /* mountinfo escapes space, tab, newline and backslash as \ooo */
            char un[4096];
            size_t k = 0;
            for (const char *p = where; *p && k + 1 < sizeof un; p++) {
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
                    p[3] <= '7') {
                    un[k++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                    p += 3;
                } else {
                    un[k++] = *p;
                }
            }
            un[k] = 0;
            if (!strcmp(un, real) && strstr(line, " - fuse")) { /* the last one is ours */
                maj = a;
                mnr = b;
                found = 1;
            }
        }
    }
    if (mi) fclose(mi);
    free(real);
    if (!found) return;
    char path[128];
    snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", maj, mnr);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "1024\n");
    if (fclose(f)) logmsg(LOG_INFO, "could not raise %s", path);
}

/* ---- main ------------------------------------------------------------- */
/* Exit statuses (the project's convention, as wdelta's) */
enum { EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_INPUT = 3 };

#define SIZE_MAX_BYTES ((uint64_t)INT64_MAX)

/* A size: digits, an optional fraction, an optional K/M/G/T suffix (powers
 * of 1024, optionally followed by "iB" or "B") or B.  Nothing else: no
 * sign, exponent, hex, nan or inf; more than SIZE_MAX_BYTES is refused. */
static int parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t whole = 0, frac = 0, scale = 1;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (whole > (UINT64_MAX - 9) / 10) return -1;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') return -1;
        for (; *p >= '0' && *p <= '9'; p++)
            if (scale < 1000000000000ull) { /* digits past 12 do not matter */
                frac = frac * 10 + (uint64_t)(*p - '0');
                scale *= 10;
            }
    }
    uint64_t mult = 1;
    switch (*p) {
    case 'k': case 'K': mult = 1ull << 10; p++; break;
    case 'm': case 'M': mult = 1ull << 20; p++; break;
    case 'g': case 'G': mult = 1ull << 30; p++; break;
    case 't': case 'T': mult = 1ull << 40; p++; break;
    default: break;
    }
    if (mult > 1 && *p == 'i' && p[1] == 'B') p += 2;
    else if (*p == 'B') p++;
    if (*p) return -1;
    if (whole > SIZE_MAX_BYTES / mult) return -1;
    /* frac < scale <= 1e12 and mult <= 2^40: the product fits in a double
     * exactly enough for a byte count */
    uint64_t v = whole * mult, f = (uint64_t)((double)frac * (double)mult / (double)scale);
    if (v > SIZE_MAX_BYTES - f) return -1;
    *out = v + f;
    return 0;
}

/* A whole number in [lo, hi]: digits only. */
static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    unsigned long v = 0;
    if (!*s) return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > hi) return -1;
    }
    if (v < lo) return -1;
    *out = (unsigned)v;
    return 0;
}

static int bad_number(const char *name, const char *val, unsigned lo, unsigned hi, const char *what)
{
    fprintf(stderr, "wdeltafs: %s=%s: not a whole number from %u to %u (%s)\n", name, val, lo, hi, what);
    return EXIT_USAGE;
}

/* The -o values of wdeltafs's own options; 0 or EXIT_USAGE (said why). */
static int check_options(const options *o, daemon_state *ds, uint64_t *cache_size)
{
    if (o->bad) return EXIT_USAGE;
    if (o->cache_size && parse_size(o->cache_size, cache_size)) {
        fprintf(stderr,
                "wdeltafs: cache_size=%s: not a size; give bytes as a number with an optional K, M, G or T "
                "suffix (powers of 1024; KiB and KB mean K), e.g. cache_size=512M or cache_size=1.5G, at most 8388607T\n",
                o->cache_size);
        return EXIT_USAGE;
    }
    if (o->scan_interval && parse_uint(o->scan_interval, 1, 86400, &ds->scan_interval))
        return bad_number("scan_interval", o->scan_interval, 1, 86400, "seconds between rescans of SRC");
    if (o->ra_threads && parse_uint(o->ra_threads, 1, MAX_PREFETCH_THREADS, &ds->prefetch_threads))
        return bad_number("readahead_threads", o->ra_threads, 1, MAX_PREFETCH_THREADS, "threads decoding ahead");
    ds->readahead = 2 * ds->prefetch_threads < 8 ? 8 : 2 * ds->prefetch_threads;
    if (o->readahead && parse_uint(o->readahead, 0, 64, &ds->readahead))
        return bad_number("readahead", o->readahead, 0, 64, "blocks decoded ahead of a sequential reader");
    if (o->cache_dir && !*o->cache_dir) {
        fprintf(stderr, "wdeltafs: cache_dir= needs a directory\n");
        return EXIT_USAGE;
    }
    if (o->v1_dtype && strcmp(o->v1_dtype, "float32") && strcmp(o->v1_dtype, "base")) {
        fprintf(stderr, "wdeltafs: v1_dtype=%s: must be float32 or base\n", o->v1_dtype);
        return EXIT_USAGE;
    }
    return 0;
}

static void usage(const char *prog)
{
    printf("usage: %s SRC MOUNTPOINT [-f] [-d] [-o OPTION[,OPTION...]]\n"
           "\n"
           "Shows every SRC/**/NAME.wdelta as a model directory MOUNTPOINT/**/NAME/.\n"
           "Chains (deltas made against another delta's model) are served when they end\n"
           "at a given base.  Lineage: MOUNTPOINT/.wdeltafs/lineage/NAME is a symlink to\n"
           "NAME's parent model (or its base under .wdeltafs/bases), and the model\n"
           "directory's attribute user.wdelta.parent names it.\n"
           "\n"
           "  -o base=DIR[:DIR...]      base models, matched to deltas by content hash\n"
           "                            (required; base= may be repeated: all are used)\n"
           "  -o cache_size=SIZE        decoded-block cache (default 1G; bytes with an optional\n"
           "                            K/M/G/T suffix, powers of 1024, e.g. 512M or 1.5G)\n"
           "  -o cache_dir=DIR          where base digests are remembered (default\n"
           "                            /var/cache/wdeltafs; not root: ~/.cache/wdeltafs)\n"
           "  -o scan_interval=SECS     rescan SRC for changes this often (1..86400, default 2)\n"
           "  -o readahead=N            blocks decoded ahead of a sequential reader (0..64;\n"
           "                            default: 2 x readahead_threads, at least 8; 0 = none)\n"
           "  -o readahead_threads=N    threads decoding those blocks (1..16, default: CPUs, 2..16)\n"
           "  -o v1_dtype=float32|base  deltatensors v1 tensors as float32 (default) or the base's dtype\n"
           "  -o cross_fs               walk SRC's directories on other filesystems too (default: not)\n"
           "  -f                        foreground, log to stderr (else syslog once mounted)\n"
           "  -d                        FUSE debug output (implies -f)\n"
           "  and FUSE mount options (allow_other, ...); the mount is always read-only.\n"
           "  fstab's own options (defaults, auto, noauto, user, users, _netdev, nofail,\n"
           "  x-*, comment=*) are accepted and ignored.\n"
           "\n"
           "Errors in the configuration are printed before the mount goes to the background.\n"
           "Exit status: 0 mounted (deltas that cannot be served are named on stderr);\n"
           "1 failure (the mount itself failed); 2 usage error (bad option or value);\n"
           "3 missing or wrong input (SRC, MOUNTPOINT or a base not found, no base given,\n"
           "or none of the deltas under SRC can be served with the bases given).\n",
           prog);
}

/* The first and second arguments that are not options (SRC, MOUNTPOINT). */
static void positional(const struct fuse_args *args, int *src_i, int *mnt_i)
{
    *src_i = *mnt_i = -1;
    for (int i = 1; i < args->argc; i++) {
        if (args->argv[i][0] == '-') {
            if (!strcmp(args->argv[i], "-o")) i++;
            continue;
        }
        if (*src_i < 0) *src_i = i;
        else if (*mnt_i < 0) *mnt_i = i;
    }
}

/* After the first scan: 0 if something can be served (or may be, once a
 * base is hashed, or when deltas are added), else EXIT_INPUT (said why). */
static int servable(daemon_state *ds, const char *mnt)
{
    tree *t = &ds->t;
    size_t usable = 0, pending = 0;
    for (size_t i = 0; i < t->nbases; i++) {
        if (t->bases[i].state != BASE_FAILED) usable++;
        if (t->bases[i].state == BASE_PENDING || t->bases[i].state == BASE_HASHING) pending++;
    }
    if (!usable) {
        fprintf(stderr, "wdeltafs: none of the %zu base%s given can be used (see above): nothing can be served; not mounting\n",
                t->nbases, t->nbases == 1 ? "" : "s");
        return EXIT_INPUT;
    }
    snapshot *s = tree_snapshot(t);
    size_t served = s->nmodels, unav = s->nunav;
    tree_snapshot_put(t, s);
    if (!served && unav && !pending) {
        fprintf(stderr, "wdeltafs: none of the %zu delta%s under %s can be served (reasons above) with the base%s given:",
                unav, unav == 1 ? "" : "s", t->src, t->nbases == 1 ? "" : "s");
        for (size_t i = 0; i < t->nbases; i++) {
            char hex[65];
            wd_hex(t->bases[i].hash, 32, hex);
            fprintf(stderr, "%s %s (%s%s)", i ? ";" : "", t->bases[i].dir,
                    t->bases[i].state == BASE_READY ? "content hash " : "failed: ",
                    t->bases[i].state == BASE_READY ? hex : t->bases[i].error);
        }
        fprintf(stderr, "; not mounting\n");
        return EXIT_INPUT;
    }
    if (unav)
        fprintf(stderr, "wdeltafs: warning: %zu of %zu deltas under %s are not served (reasons above; "
                        "also in %s/.wdeltafs/status)\n",
                unav, unav + served, t->src, mnt);
    return 0;
}

/* SRC (made absolute into *src), MOUNTPOINT and a base given: 0, or
 * EXIT_INPUT (said why). */
static int check_inputs(const char *src_arg, const char *mnt, const char *base, char **src)
{
    struct stat sst, mst;
    if (!(*src = realpath(src_arg, NULL)) || stat(*src, &sst) || !S_ISDIR(sst.st_mode)) {
        fprintf(stderr, "wdeltafs: SRC %s: %s\n", src_arg, *src ? "not a directory" : strerror(errno));
        return EXIT_INPUT;
    }
    if (stat(mnt, &mst)) {
        fprintf(stderr, "wdeltafs: MOUNTPOINT %s: %s\n", mnt, strerror(errno));
        return EXIT_INPUT;
    }
    if (!S_ISDIR(mst.st_mode)) {
        fprintf(stderr, "wdeltafs: MOUNTPOINT %s: not a directory\n", mnt);
        return EXIT_INPUT;
    }
    if (!base) {
        fprintf(stderr, "wdeltafs: no base given: every delta is made against a base model; "
                        "name its directory with -o base=DIR (several: base=DIR:DIR or base= repeated)\n");
        return EXIT_INPUT;
    }
    return 0;
}

/* The daemon's state before the first scan (the tree, its cache, locks);
 * cache_dir_buf holds the default digest cache directory. */
static void state_init(daemon_state *ds, const options *o, char *src, uint64_t cache_size, char *cache_dir_buf,
                       size_t n)
{
    ds->t.v1_base_dtype = o->v1_dtype && !strcmp(o->v1_dtype, "base");
    ds->t.src = src;
    ds->t.cross_fs = o->cross_fs;
    ds->t.scan_interval = ds->scan_interval;
    ds->t.cache_dir = o->cache_dir ? o->cache_dir : wd_digest_cache_dir(cache_dir_buf, n);
    ds->t.log = logmsg;
    ds->t.cache = wd_cache_new(cache_size);
    pthread_mutex_init(&ds->t.snap_lock, NULL);
    pthread_mutex_init(&ds->t.model_lock, NULL);
    pthread_mutex_init(&ds->lock, NULL);
    pthread_mutex_init(&ds->klock, NULL);
    pthread_cond_init(&ds->work, NULL);
    pthread_cond_init(&ds->stop_cv, NULL);
}

/* Mounted and detached: serve until unmounted or stopped by a signal, with
 * the rescan, hashing and read-ahead threads; join them.  The exit status;
 * does not return when a base is still being hashed (see below). */
static int serve(daemon_state *ds, const struct fuse_cmdline_opts *co, const char *src)
{
    pthread_t scanner, hasher, pf[MAX_PREFETCH_THREADS];
    int scanning = pthread_create(&scanner, NULL, scanner_main, ds) == 0;
    if (pthread_create(&hasher, NULL, hasher_main, ds) == 0) pthread_detach(hasher);
    else ds->hashing_done = 1;
    unsigned nthreads = readahead_start(ds, pf);
    logmsg(LOG_INFO, "serving %s on %s", src, co->mountpoint);
    struct fuse_loop_config lc = {.clone_fd = 0, .max_idle_threads = 16};
    int rc = co->singlethread ? fuse_session_loop(ds->se) : fuse_session_loop_mt(ds->se, &lc);
    /* libfuse reports the signal that ended the loop; a stop by signal is
     * a clean exit (systemd's stop sends SIGTERM) */
    rc = rc == 0 || rc == SIGTERM || rc == SIGINT || rc == SIGHUP ? 0 : EXIT_FAIL;
    pthread_mutex_lock(&ds->lock);
    ds->stopping = 1;
    pthread_cond_broadcast(&ds->work);
    pthread_cond_broadcast(&ds->stop_cv);
    pthread_mutex_unlock(&ds->lock);
    if (scanning) pthread_join(scanner, NULL);
    readahead_join(ds, pf, nthreads);
    pthread_mutex_lock(&ds->lock);
    int hashing = !ds->hashing_done;
    pthread_mutex_unlock(&ds->lock);
    if (hashing) {
        /* a base is still being hashed (it cannot be interrupted): unmount
         * and leave without freeing what that thread reads */
        logmsg(LOG_INFO, "stopping while a base is being hashed; its digest is not cached");
        fuse_session_unmount(ds->se);
        fuse_remove_signal_handlers(ds->se);
        _exit(rc ? 1 : 0);
    }
    return rc;
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    options o;
    memset(&o, 0, sizeof o);
    struct fuse_cmdline_opts co;
    memset(&co, 0, sizeof co);
    static daemon_state ds;
    G = &ds;
    char *src = NULL;
    /* Reads allocate 1 MiB buffers on many threads: a fixed mmap threshold
     * (glibc otherwise raises it as buffers are freed) and few arenas return
     * that memory, so the daemon stays near its cache size. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    mallopt(M_ARENA_MAX, 4);
    int rc = EXIT_USAGE;
    if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) == -1) goto out;
    if (o.help) {
        usage(argv[0]);
        fuse_opt_free_args(&args);
        free(o.base);
        return 0;
    }
    if (o.version) {
        printf("wdeltafs %s (libfuse %s)\n", WD_VERSION_STRING, fuse_pkgversion());
        printf(".wdelta format: serves versions %u (deltatensors) to %u\n", WD_FORMAT_READ_MIN, WD_FORMAT_READ_MAX);
        fuse_opt_free_args(&args);
        free(o.base);
        return 0;
    }
    int src_i, mnt_i;
    positional(&args, &src_i, &mnt_i);
    if (src_i < 0 || mnt_i < 0) {
        fprintf(stderr, "wdeltafs: %s; usage: wdeltafs SRC MOUNTPOINT [-f] [-o OPTION,...] (try --help)\n",
                src_i < 0 ? "need SRC and MOUNTPOINT" : "need MOUNTPOINT after SRC");
        goto out;
    }
    ds.scan_interval = 2;
    /* read-ahead: one decoding thread per CPU (decoding is what limits a
     * cold read), each with two blocks in flight */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ds.prefetch_threads = ncpu < 2 ? 2 : ncpu > MAX_PREFETCH_THREADS ? MAX_PREFETCH_THREADS : (unsigned)ncpu;
    uint64_t cache_size = 1ull << 30;
    if ((rc = check_options(&o, &ds, &cache_size))) goto out;
    if ((rc = check_inputs(args.argv[src_i], args.argv[mnt_i], o.base, &src))) goto out;
    /* SRC is taken out of the arguments; fuse_parse_cmdline takes MOUNTPOINT */
    free(args.argv[src_i]);
    for (int k = src_i; k + 1 < args.argc; k++) args.argv[k] = args.argv[k + 1];
    args.argc--;
    args.argv[args.argc] = NULL;
    rc = EXIT_USAGE;
    if (fuse_parse_cmdline(&args, &co) != 0 || !co.mountpoint) {
        fprintf(stderr, "wdeltafs: bad arguments (above); usage: wdeltafs SRC MOUNTPOINT [-f] [-o OPTION,...]\n");
        goto out;
    }
    ds.foreground = co.foreground;
    fuse_opt_add_arg(&args, "-oro,default_permissions,subtype=wdeltafs");
    char fsname[4200];
    snprintf(fsname, sizeof fsname, "-ofsname=%s", src);
    for (char *p = fsname + 9; *p; p++)
        if (*p == ',') *p = '_'; /* a comma would end the option */
    fuse_opt_add_arg(&args, fsname);
    /* the session parses the FUSE options: an unknown one is refused here,
     * before any work */
    ds.se = fuse_session_new(&args, &fs_ops, sizeof fs_ops, &ds);
    if (!ds.se) {
        fprintf(stderr, "wdeltafs: unknown or bad mount option (above); `wdeltafs --help` lists wdeltafs's own "
                        "options, and FUSE's (allow_other, ...) are accepted\n");
        goto out;
    }
    rc = EXIT_FAIL;
    if (!ds.foreground) openlog("wdeltafs", LOG_PID, LOG_DAEMON);
    char user_cache[4200];
    state_init(&ds, &o, src, cache_size, user_cache, sizeof user_cache);
    wd_err err;
    if (!ds.t.cache) {
        fprintf(stderr, "wdeltafs: out of memory\n");
        goto out_session;
    }
    tree_limit_fds(&ds.t);
    if (tree_open_bases(&ds.t, o.base, &err)) {
        fprintf(stderr, "wdeltafs: %s\n", err.msg);
        goto out_session;
    }
    /* small bases are hashed now so the first listing is complete; larger
     * ones (when their digest is not cached) in the background */
    tree_hash_pending(&ds.t, 1);
    tree_rescan(&ds.t, NULL, NULL);
    /* what cannot be served has been said on stderr (logmsg writes there
     * until the daemon is detached); nothing at all: do not mount */
    if ((rc = servable(&ds, co.mountpoint))) goto out_session;
    rc = EXIT_FAIL;
    if (fuse_set_signal_handlers(ds.se) != 0) goto out_session;
    if (fuse_session_mount(ds.se, co.mountpoint) != 0) goto out_signals;
    raise_readahead(co.mountpoint);
    if (fuse_daemonize(co.foreground) != 0) goto out_unmount;
    ds.detached = 1; /* from here on, a daemon in the background logs to syslog */
    notify_ready();
    rc = serve(&ds, &co, src);
out_unmount:
    fuse_session_unmount(ds.se);
    known_free(&ds);
    while (ds.handles) handle_free(&ds, ds.handles); /* still open at a SIGTERM */
out_signals:
    fuse_remove_signal_handlers(ds.se);
out_session:
    fuse_session_destroy(ds.se);
out:
    tree_free(&ds.t);
    wd_cache_free(ds.t.cache);
    free(src);
    free(co.mountpoint);
    fuse_opt_free_args(&args);
    free(o.base);
    free(o.cache_size);
    free(o.cache_dir);
    free(o.scan_interval);
    free(o.readahead);
    free(o.v1_dtype);
    free(o.ra_threads);
    return rc;
}
