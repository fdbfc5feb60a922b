/* cli.c - what the wdelta commands share: error exits (the exit-code
 * convention), option parsing of numbers, input checks, interruption by a
 * signal, the progress line, --chain arguments. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"

/* ------------------------------------------------------------ helpers */
static void die_msg(const char *msg)
{
    fprintf(stderr, "wdelta: %s\n", msg);
}

/* SIGINT, SIGTERM, SIGHUP while a command writes its output: the handler
 * only raises this flag; the library polls it between blocks, removes its
 * temporaries and fails ("interrupted"), and fail() then ends the process
 * by the same signal.  A second signal ends it at once. */
volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    if (stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
}

void catch_stop_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction was;
        /* a signal the caller ignores (nohup, a shell's background job) stays ignored */
        if (sigaction(sigs[i], NULL, &was) == 0 && was.sa_handler == SIG_IGN) continue;
        sigaction(sigs[i], &sa, NULL);
    }
}

/* Exit status by the error's kind: 1 bad data or failure, 2 usage, 3 a
 * needed input missing or the wrong one (a link, a file, the base). */
int fail(const wd_err *err)
{
    die_msg(err->msg[0] ? err->msg : "unknown error");
    if (stop_signal) {
        signal(stop_signal, SIG_DFL);
        raise(stop_signal);
    }
    return err->kind == WD_ERR_MISSING ? 3 : err->kind == WD_ERR_USAGE ? EXIT_USAGE : 1;
}

int usage_error(const char *cmd, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "wdelta: %s (try 'wdelta %s --help')\n", buf, cmd);
    else
        fprintf(stderr, "wdelta: %s (try 'wdelta --help')\n", buf);
    return EXIT_USAGE;
}

void opts_begin(void)
{
    optind = 0;
    opterr = 0;
}

int opt_error(const char *cmd, int c, char **argv)
{
    if (c == ':') return usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
    return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
}

int one_file_arg(const char *cmd, int argc, char **argv)
{
    if (optind >= argc) return usage_error(cmd, "missing FILE");
    if (argc - optind > 1) return usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
    return 0;
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Parse a non-negative integer in [lo, hi]; accepts K/M/G suffixes (binary)
 * when allow_suffix. */
int parse_num(const char *s, long long lo, long long hi, int allow_suffix, long long *out)
{
    if (!s || !*s) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s) return -1;
    if (allow_suffix && *end) {
        long long mul = 1;
        switch (*end) {
        case 'k': case 'K': mul = 1024LL; break;
        case 'm': case 'M': mul = 1024LL * 1024; break;
        case 'g': case 'G': mul = 1024LL * 1024 * 1024; break;
        default: return -1;
        }
        end++;
        if (*end == 'i' && end[1] == 'B') end += 2;
        else if (*end == 'B') end++;
        if (v > LLONG_MAX / mul) return -1;
        v *= mul;
    }
    if (*end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

void human(uint64_t b, char *out, size_t n)
{
    if (b >= 1000ULL * 1000 * 1000)
        snprintf(out, n, "%.2f GB", (double)b / 1e9);
    else if (b >= 1000ULL * 1000)
        snprintf(out, n, "%.2f MB", (double)b / 1e6);
    else if (b >= 1000ULL)
        snprintf(out, n, "%.1f kB", (double)b / 1e3);
    else
        snprintf(out, n, "%" PRIu64 " B", b);
}

const char *dtype_str(wd_dtype t)
{
    static const char *names[] = {
        "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8",
        "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "OPAQUE",
    };
    if ((unsigned)t < sizeof names / sizeof names[0]) return names[t];
    return "?";
}

const char *codec_str(wd_codec c)
{
    const char *n = wd_codec_name(c);
    return n ? n : "?";
}

/* An input the command needs (what: "--base"..., NULL for an argument): missing, or a
 * directory where a file is wanted or the other way round, exits 3.
 * kind: 'd' a directory, 'f' not a directory, '?' either. */
int need_input(const char *what, const char *path, char kind)
{
    struct stat st;
    if (stat(path, &st)) {
        int e = errno;
        fprintf(stderr, "wdelta: %s%s%s: %s\n", what ? what : "", what ? " " : "", path, strerror(e));
        return e == ENOENT || e == ENOTDIR || e == ELOOP ? EXIT_MISSING : 1;
    }
    if (kind == 'd' && !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "wdelta: %s%s%s: not a directory (a model directory is wanted)\n", what ? what : "", what ? " " : "", path);
        return EXIT_MISSING;
    }
    if (kind == 'f' && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "wdelta: %s%s%s: a directory (a .wdelta file is wanted)\n", what ? what : "", what ? " " : "", path);
        return EXIT_MISSING;
    }
    return 0;
}

int need_chain_inputs(const char *const *paths, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = need_input("--chain", paths[i], '?');
        if (rc) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------ progress */
/* On a terminal: one line, redrawn at most 10 times a second and cleared at
 * the end.  Otherwise (a log, a pipe): a line at most every 5 seconds, and
 * one final line. */
#define PROGRESS_LOG_EVERY 5.0

void progress_init(progress *p, const char *label, int quiet)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->enabled = !quiet;
    p->tty = isatty(STDERR_FILENO);
    p->start = now_s();
    p->last_draw = p->start;
}

static void progress_line(progress *p, char *buf, size_t n, double t)
{
    double el = t - p->start;
    char tens[64] = "";
    if (p->choosing) {
        snprintf(buf, n, "%s: choosing codecs, %zu/%zu tensors", p->label, p->tdone, p->ttotal);
        return;
    }
    double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 100.0;
    if (pct > 100.0) pct = 100.0;
    double rate = el > 0 ? (double)p->done / el / 1e6 : 0.0;
    if (p->have_tensors) snprintf(tens, sizeof tens, ", %zu/%zu tensors", p->tdone, p->ttotal);
    if (p->tty) {
        char eta[32] = "--";
        if (rate > 0 && p->done > 0 && p->done <= p->total) {
            double rem = (double)(p->total - p->done) / 1e6 / rate;
            snprintf(eta, sizeof eta, "%dm%02ds", (int)(rem / 60), (int)rem % 60);
        }
        const int width = 30;
        int fillc = (int)(pct / 100.0 * width);
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fillc ? '#' : '.';
        bar[width] = 0;
        snprintf(buf, n, "%s [%s] %5.1f%%%s, %.1f MB/s, ETA %s", p->label, bar, pct, tens, rate, eta);
    } else {
        snprintf(buf, n, "%s: %3.0f%%%s, %.1f MB/s, %.1f s", p->label, pct, tens, rate, el);
    }
}

static void progress_show(progress *p, uint64_t done, uint64_t total, size_t tdone,
                          size_t ttotal, int have_tensors)
{
    if (!p->enabled) return;
    p->seen = 1;
    p->choosing = have_tensors && total == 0;
    p->done = done;
    p->total = total;
    p->tdone = tdone;
    p->ttotal = ttotal;
    p->have_tensors = have_tensors;
    double t = now_s();
    char line[256];
    if (p->tty) {
        if (t - p->last_draw < 0.1) return;
        p->last_draw = t;
        progress_line(p, line, sizeof line, t);
        fprintf(stderr, "\r\033[K%s", line);
        fflush(stderr);
        p->drawn = 1;
    } else {
        if (t - p->last_draw < PROGRESS_LOG_EVERY) return;
        p->last_draw = t;
        progress_line(p, line, sizeof line, t);
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
    }
}

/* ok: the command succeeded; off a terminal the last state is printed */
void progress_end(progress *p, int ok)
{
    if (!p->enabled) return;
    if (p->tty) {
        if (p->drawn) {
            fprintf(stderr, "\r\033[K");
            fflush(stderr);
        }
    } else if (ok && p->seen) {
        char line[256];
        p->choosing = 0;
        progress_line(p, line, sizeof line, now_s());
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
    }
}

void create_progress_cb(void *ctx, uint64_t done, uint64_t total, size_t tdone,
                               size_t ttotal)
{
    progress_show(ctx, done, total, tdone, ttotal, 1);
}

void bytes_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    progress_show(ctx, done, total, 0, 0, 0);
}

void create_run_start(create_run *cr, wd_create_opts *o, const char *label, int quiet)
{
    progress_init(&cr->pr, label, quiet);
    o->progress = create_progress_cb;
    o->progress_ctx = &cr->pr;
    memset(&cr->cs, 0, sizeof cr->cs);
    cr->t0 = now_s();
    o->stop = &stop_signal;
    catch_stop_signals();
}

double create_run_sizes(const create_run *cr, char *in, char *out, size_t n)
{
    human(cr->cs.input_bytes, in, n);
    human(cr->cs.output_bytes, out, n);
    return cr->cs.output_bytes ? (double)cr->cs.input_bytes / (double)cr->cs.output_bytes : 0.0;
}

/* ------------------------------------------------------------ chains */

int chain_arg(chain_args *ca, const char *cmd, const char *p)
{
    if (ca->n == MAX_CHAIN_ARGS) return usage_error(cmd, "too many --chain options (at most %d)", MAX_CHAIN_ARGS);
    ca->paths[ca->n++] = p;
    return 0;
}

