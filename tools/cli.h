/* cli.h - what the wdelta commands share (cli.c): error exits, number
 * parsing, input checks, interruption by a signal, the progress line,
 * --chain arguments. */
#ifndef WDELTA_TOOL_CLI_H
#define WDELTA_TOOL_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "wdelta.h" /* wd_err, wd_dtype, wd_codec */

/* exit codes (wdelta --help): 0 success, 1 bad or corrupt data / failure,
 * 2 usage error, 3 a needed input is missing or is the wrong one */
#define EXIT_USAGE 2
#define EXIT_MISSING 3

/* the signal (SIGINT, SIGTERM, SIGHUP) that asked to stop, once
 * catch_stop_signals is called; 0 if none */
extern volatile sig_atomic_t stop_signal;
void catch_stop_signals(void);
/* print err; the exit status its kind gives (1, 2 or 3).  After a stop
 * signal, ends the process by that signal. */
int fail(const wd_err *err);
/* print a usage error (cmd: the command, or NULL); EXIT_USAGE */
int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double now_s(void);
/* ---- option parsing (getopt_long): opts_begin before a command's loop;
 * opt_error for what the loop does not know (c ':' an option missing its
 * value, else an unknown one): EXIT_USAGE, said why; one_file_arg after
 * it: the command's FILE argument is there and is the only one (0), else
 * EXIT_USAGE */
void opts_begin(void);
int opt_error(const char *cmd, int c, char **argv);
int one_file_arg(const char *cmd, int argc, char **argv);
/* a non-negative integer in [lo, hi] (K/M/G suffixes when allow_suffix); 0 or -1 */
int parse_num(const char *s, long long lo, long long hi, int allow_suffix, long long *out);
/* b bytes as "1.23 GB" */
void human(uint64_t b, char *out, size_t n);
const char *dtype_str(wd_dtype t);
const char *codec_str(wd_codec c);
/* what: the option ("--base", ..., NULL for an argument); kind: 'd' a
 * directory, 'f' not a directory, '?' either.  0, or the exit status (said why). */
int need_input(const char *what, const char *path, char kind);
int need_chain_inputs(const char *const *paths, size_t n);

typedef struct progress {
    const char *label;
    int enabled;
    int tty;
    double start;
    double last_draw;
    int drawn;          /* something is on the tty line */
    int seen;           /* a call came */
    int choosing;       /* create's first pass: codecs being chosen */
    uint64_t done, total;
    size_t tdone, ttotal;
    int have_tensors;
} progress;

void progress_init(progress *p, const char *label, int quiet);
void progress_end(progress *p, int ok);
/* callbacks for wd_create (ctx: a progress) and for byte counts */
void create_progress_cb(void *ctx, uint64_t done, uint64_t total, size_t tdone, size_t ttotal);
void bytes_progress_cb(void *ctx, uint64_t done, uint64_t total);

/* one wd_create or wd_flatten call: its progress line, statistics and start */
typedef struct create_run {
    progress pr;
    wd_create_stats cs;
    double t0;
} create_run;
/* before the call: o reports to cr's progress line (label, quiet), cr's
 * statistics are zeroed and a stop signal stops the call */
void create_run_start(create_run *cr, wd_create_opts *o, const char *label, int quiet);
/* after it: the input and delta sizes as "1.23 GB" (in, out: n bytes each);
 * returns the ratio input / delta (0 for an empty delta) */
double create_run_sizes(const create_run *cr, char *in, char *out, size_t n);

#define MAX_CHAIN_ARGS 256
typedef struct chain_args {
    const char *paths[MAX_CHAIN_ARGS];
    size_t n;
} chain_args;

/* add a --chain PATH; EXIT_USAGE when there are too many */
int chain_arg(chain_args *ca, const char *cmd, const char *p);

#endif
