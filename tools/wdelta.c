/* wdelta.c - the command-line tool: parses arguments and calls libwdelta.
 * No format logic lives here; see core/wdelta.h.
 *
 *   wdelta create  --base DIR --finetuned DIR -o OUT.wdelta [options]
 *   wdelta inspect FILE [--json]
 *   wdelta apply   FILE --base DIR -o OUTDIR [--threads N]
 *   wdelta verify  FILE [--base DIR]
 *   wdelta hash    DIR
 */
#include "wdelta.h"

#include "json.h"
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* exit codes (wdelta --help): 0 success, 1 bad or corrupt data / failure,
 * 2 usage error, 3 a needed input is missing or is the wrong one */
#define EXIT_USAGE 2
#define EXIT_MISSING 3

/* ------------------------------------------------------------ helpers */
static void die_msg(const char *msg)
{
    fprintf(stderr, "wdelta: %s\n", msg);
}

/* SIGINT, SIGTERM, SIGHUP while a command writes its output: the handler
 * only raises this flag; the library polls it between blocks, removes its
 * temporaries and fails ("interrupted"), and fail() then ends the process
 * by the same signal.  A second signal ends it at once. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    if (stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
}

static void catch_stop_signals(void)
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
static int fail(const wd_err *err)
{
    die_msg(err->msg[0] ? err->msg : "unknown error");
    if (stop_signal) {
        signal(stop_signal, SIG_DFL);
        raise(stop_signal);
    }
    return err->kind == WD_ERR_MISSING ? 3 : err->kind == WD_ERR_USAGE ? EXIT_USAGE : 1;
}

static int usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const char *cmd, const char *fmt, ...)
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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Parse a non-negative integer in [lo, hi]; accepts K/M/G suffixes (binary)
 * when allow_suffix. */
static int parse_num(const char *s, long long lo, long long hi, int allow_suffix, long long *out)
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

static void human(uint64_t b, char *out, size_t n)
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

static const char *dtype_str(wd_dtype t)
{
    static const char *names[] = {
        "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8",
        "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "OPAQUE",
    };
    if ((unsigned)t < sizeof names / sizeof names[0]) return names[t];
    return "?";
}

static const char *codec_str(wd_codec c)
{
    const char *n = wd_codec_name(c);
    return n ? n : "?";
}

/* An input the command needs (what: "--base"..., NULL for an argument): missing, or a
 * directory where a file is wanted or the other way round, exits 3.
 * kind: 'd' a directory, 'f' not a directory, '?' either. */
static int need_input(const char *what, const char *path, char kind)
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

static int need_chain_inputs(const char *const *paths, size_t n)
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

static void progress_init(progress *p, const char *label, int quiet)
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
static void progress_end(progress *p, int ok)
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

static void create_progress_cb(void *ctx, uint64_t done, uint64_t total, size_t tdone,
                               size_t ttotal)
{
    progress_show(ctx, done, total, tdone, ttotal, 1);
}

static void bytes_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    progress_show(ctx, done, total, 0, 0, 0);
}

/* ------------------------------------------------------------ chains */
#define MAX_CHAIN_ARGS 256
typedef struct chain_args {
    const char *paths[MAX_CHAIN_ARGS];
    size_t n;
} chain_args;

static int chain_arg(chain_args *ca, const char *cmd, const char *p)
{
    if (ca->n == MAX_CHAIN_ARGS) return usage_error(cmd, "too many --chain options (at most %d)", MAX_CHAIN_ARGS);
    ca->paths[ca->n++] = p;
    return 0;
}

/* ------------------------------------------------------------ create */
static const char create_help[] =
    "usage: wdelta create --base DIR --finetuned DIR -o OUT.wdelta [options]\n"
    "       wdelta create --parent PARENT.wdelta --base DIR --finetuned DIR -o OUT.wdelta\n"
    "\n"
    "Store the fine-tune DIR as a delta against the base model DIR, or, with\n"
    "--parent, against the model PARENT rebuilds (a chain link: PARENT may itself\n"
    "be a chain ending at the base DIR; nothing is written to disk but OUT).\n"
    "Exact (lossless, the default) or lossy for floating tensors of 2+ dimensions\n"
    "with the base's shape and dtype (1-D tensors such as norms and biases, and\n"
    "all other tensors, always stay exact).  The result hash of a lossy delta is\n"
    "that of the model its decoder rebuilds.\n"
    "\n"
    "  -b, --base DIR          base model directory (Hugging Face layout); with\n"
    "                          --parent, the base at the root of PARENT's chain\n"
    "  -f, --finetuned DIR     fine-tuned model directory\n"
    "  -o, --output FILE       the .wdelta to write\n"
    "  -p, --parent FILE       make a chain link: delta against what FILE rebuilds\n"
    "  -c, --chain PATH        where PARENT's own links are (a .wdelta or a\n"
    "                          directory of them; repeatable; default: PARENT's directory)\n"
    "  -s, --strategy NAME     lossless (default), int4, sparse, bitdelta, axis1,\n"
    "                          ternary, ternary-axis1, lowrank, auto.  bitdelta and\n"
    "                          axis1 take their zero-aware form (ternary, ternary-axis1)\n"
    "                          per tensor where most values did not change; a tensor\n"
    "                          any lossy codec would rebuild worse than the base alone\n"
    "                          (relative error > 1) falls back to int4 or lossless\n"
    "                          (inspect shows the codec and why)\n"
    "      --rank N            lowrank: components per block, 1..256 (default: found\n"
    "                          per block: the delta's components above its dtype's\n"
    "                          rounding noise, up to 256)\n"
    "      --no-lowrank        lossless: never predict a tensor by low-rank factors\n"
    "                          (by default each 2-D tensor takes the lowrank-exact\n"
    "                          codec where that makes it smaller)\n"
    "      --group-size N      int4: elements per FP16 scale (default 128)\n"
    "      --outliers F        int4: fraction of each block kept exactly (default 0.002)\n"
    "      --step F            int4: quantization step as a fraction of the RMS of\n"
    "                          the block's changed values (default 0.6; 0: per-group least-squares\n"
    "                          scales, which shrink the update and cost perplexity)\n"
    "      --density F         sparse: fraction of each block kept exactly (default 0.1)\n"
    "      --max-error E       auto: per tensor the cheapest codec and setting whose\n"
    "                          relative error ||rebuilt - ft|| / ||ft - base|| <= E\n"
    "  -t, --threads N         worker threads (default: online CPUs)\n"
    "  -l, --level N           zstd level 1..22 (default 3)\n"
    "      --block-size BYTES  output bytes per block, 4K..64M, a multiple of 8\n"
    "                          (default 1M; K/M suffix ok)\n"
    "  -x, --exclude GLOB      leave out the fine-tune's files matching GLOB\n"
    "                          (repeatable; not its safetensors weights)\n"
    "      --force             replace OUT if it is a .wdelta (anything else is\n"
    "                          refused); the new file keeps OUT's mode\n"
    "  -q, --quiet             no progress output\n"
    "  -j, --json              print the summary as one JSON object: \"output\",\n"
    "                          \"input_bytes\", \"delta_bytes\", \"ratio\", \"tensors\",\n"
    "                          \"blocks\", \"seconds\", \"parent\", \"chain_link\",\n"
    "                          \"inputs\" (file names by what create did with them)\n"
    "  -h, --help              this help\n"
    "\n"
    "Codec options belong to their strategy: --group-size, --outliers, --step:\n"
    "int4; --density: sparse; --rank: lowrank (or lossless, for its lowrank-exact\n"
    "trials); --max-error: auto, which needs it.  Others are usage errors (exit 2).\n"
    "\n"
    "What is taken from the fine-tune DIR (printed after the summary):\n"
    "  the safetensors weights (delta-coded); model files (*.json, *.txt, *.model,\n"
    "  *.tiktoken, *.jinja, *.md, *.py, LICENSE*) stored whole; any other file\n"
    "  (pytorch_model.bin, *.pt...) stored whole and named.  Left out and named:\n"
    "  training state (optimizer*.pt/.bin, scheduler*.pt, scaler*.pt,\n"
    "  rng_state*.pth, random_states*.pkl, training_args.bin, trainer_state.json,\n"
    "  DeepSpeed's latest and zero_to_fp32.py), this tool's outputs (*.wdelta, OUT\n"
    "  itself, NAME.tmp.XXXXXX temporaries), --exclude matches, subdirectories\n"
    "  (a delta stores one flat directory) and entries that are not regular files.\n";

/* the create summary: what was left out or stored whole unknown */
typedef struct inputs_sum {
    size_t n[8];
    char *text[8];
    size_t len[8], cap[8];
    cJSON *names[8]; /* create --json: the names per kind */
} inputs_sum;

static void inputs_cb(void *ctx, const char *name, wd_input_kind kind, uint64_t size)
{
    inputs_sum *is = ctx;
    unsigned k = (unsigned)kind & 7;
    is->n[k]++;
    if (is->names[k]) cJSON_AddItemToArray(is->names[k], json_str(name));
    if (kind == WD_INPUT_WEIGHTS || kind == WD_INPUT_STORED) return;
    char item[400], hs[32];
    human(size, hs, sizeof hs);
    if (kind == WD_INPUT_UNKNOWN) snprintf(item, sizeof item, "%s (%s)", name, hs);
    else snprintf(item, sizeof item, "%s%s", name, kind == WD_INPUT_SUBDIR ? "/" : "");
    size_t need = strlen(item) + 3;
    if (is->len[k] + need >= is->cap[k]) {
        size_t nc = (is->cap[k] + need) * 2;
        char *t = realloc(is->text[k], nc);
        if (!t) return;
        is->text[k] = t;
        is->cap[k] = nc;
    }
    is->len[k] += (size_t)snprintf(is->text[k] + is->len[k], is->cap[k] - is->len[k], "%s%s",
                                   is->len[k] ? ", " : "", item);
}

static void inputs_print(const inputs_sum *is)
{
    printf("inputs: %zu weights file%s delta-coded, %zu model file%s stored whole\n", is->n[WD_INPUT_WEIGHTS],
           is->n[WD_INPUT_WEIGHTS] == 1 ? "" : "s", is->n[WD_INPUT_STORED], is->n[WD_INPUT_STORED] == 1 ? "" : "s");
    static const wd_input_kind order[] = {WD_INPUT_UNKNOWN, WD_INPUT_TRAINING, WD_INPUT_OURS,
                                          WD_INPUT_EXCLUDED, WD_INPUT_SUBDIR, WD_INPUT_SKIPPED};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++)
        if (is->text[order[i]]) printf("  %s: %s\n", wd_input_kind_text(order[i]), is->text[order[i]]);
}

/* create --json: the summary as one object */
static int create_json(const char *out, const char *parent, size_t links, const wd_create_stats *cs, double el,
                       const inputs_sum *is, int have_inputs)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return json_print(NULL);
    json_add_str(root, "output", out);
    cJSON_AddNumberToObject(root, "input_bytes", (double)cs->input_bytes);
    cJSON_AddNumberToObject(root, "delta_bytes", (double)cs->output_bytes);
    cJSON_AddNumberToObject(root, "ratio", cs->output_bytes ? (double)cs->input_bytes / (double)cs->output_bytes : 0.0);
    cJSON_AddNumberToObject(root, "tensors", (double)cs->ntensors);
    cJSON_AddNumberToObject(root, "blocks", (double)cs->nblocks);
    cJSON_AddNumberToObject(root, "seconds", el);
    cJSON_AddNumberToObject(root, "input_megabytes_per_second", el > 0 ? (double)cs->input_bytes / 1e6 / el : 0.0);
    json_add_str(root, "parent", parent);
    if (parent) cJSON_AddNumberToObject(root, "chain_link", (double)(links + 1));
    else cJSON_AddNullToObject(root, "chain_link");
    if (have_inputs) {
        /* what the fine-tune's directory held, by what create did with it */
        static const struct { wd_input_kind k; const char *key; } kinds[] = {
            {WD_INPUT_WEIGHTS, "delta_coded"}, {WD_INPUT_STORED, "stored_whole"},
            {WD_INPUT_UNKNOWN, "stored_whole_unknown"}, {WD_INPUT_TRAINING, "left_out_training_state"},
            {WD_INPUT_OURS, "left_out_deltas"}, {WD_INPUT_EXCLUDED, "left_out_excluded"},
            {WD_INPUT_SUBDIR, "left_out_subdirectories"}, {WD_INPUT_SKIPPED, "left_out_skipped"},
        };
        cJSON *in = cJSON_AddObjectToObject(root, "inputs");
        for (size_t i = 0; in && i < sizeof kinds / sizeof *kinds; i++) {
            cJSON *a = is->names[kinds[i].k];
            cJSON_AddItemToObject(in, kinds[i].key, a ? cJSON_Duplicate(a, 1) : cJSON_CreateArray());
        }
    }
    return json_print(root);
}

static int cmd_create(int argc, char **argv)
{
    static const struct option lo[] = {
        {"base", required_argument, 0, 'b'},
        {"finetuned", required_argument, 0, 'f'},
        {"output", required_argument, 0, 'o'},
        {"parent", required_argument, 0, 'p'},
        {"chain", required_argument, 0, 'c'},
        {"strategy", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'},
        {"level", required_argument, 0, 'l'},
        {"block-size", required_argument, 0, 'B'},
        {"group-size", required_argument, 0, 'G'},
        {"outliers", required_argument, 0, 'O'},
        {"density", required_argument, 0, 'D'},
        {"step", required_argument, 0, 'S'},
        {"max-error", required_argument, 0, 'E'},
        {"rank", required_argument, 0, 'R'},
        {"no-lowrank", no_argument, 0, 'N'},
        {"exclude", required_argument, 0, 'x'},
        {"force", no_argument, 0, 'F'},
        {"quiet", no_argument, 0, 'q'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    wd_create_opts o;
    memset(&o, 0, sizeof o);
    o.strategy = "lossless";
    o.level = 3;
    int force = 0, quiet = 0, json = 0, c;
    long long v;
    const char *parent = NULL;
    static chain_args ca;
    static chain_args ex; /* --exclude globs */
    ca.n = 0;
    ex.n = 0;
    /* codec options given, by letter: checked against the strategy below */
    const char *given_group = NULL, *given_outl = NULL, *given_step = NULL, *given_dens = NULL,
               *given_rank = NULL, *given_maxe = NULL;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:f:o:p:c:s:t:l:x:qjh", lo, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'x':
            if (ex.n == MAX_CHAIN_ARGS) return usage_error("create", "too many --exclude options (at most %d)", MAX_CHAIN_ARGS);
            ex.paths[ex.n++] = optarg;
            break;
        case 'p': parent = optarg; break;
        case 'c':
            if (chain_arg(&ca, "create", optarg)) return EXIT_USAGE;
            break;
        case 'b': o.base_dir = optarg; break;
        case 'f': o.ft_dir = optarg; break;
        case 'o': o.out_path = optarg; break;
        case 's': o.strategy = optarg; break;
        case 'N': o.no_lowrank = 1; break;
        case 'R':
            if (parse_num(optarg, 1, WD_LOWRANK_KMAX, 0, &v))
                return usage_error("create", "--rank: '%s' is not a number in 1..%d", optarg, WD_LOWRANK_KMAX);
            o.lossy.rank = (uint32_t)v;
            given_rank = "--rank";
            break;
        case 't':
            if (parse_num(optarg, 0, 4096, 0, &v))
                return usage_error("create", "--threads: '%s' is not a number in 0..4096", optarg);
            o.threads = (int)v;
            break;
        case 'l':
            if (parse_num(optarg, 1, 22, 0, &v))
                return usage_error("create", "--level: '%s' is not a number in 1..22", optarg);
            o.level = (int)v;
            break;
        case 'B':
            if (parse_num(optarg, 4096, 64LL << 20, 1, &v) || v % 8)
                return usage_error("create", "--block-size: '%s' is not a byte count from 4K to 64M, a multiple of 8", optarg);
            o.block_size = (uint32_t)v;
            break;
        case 'G':
            if (parse_num(optarg, 2, 65536, 0, &v) || v % 2)
                return usage_error("create", "--group-size: '%s' is not an even number in 2..65536", optarg);
            o.lossy.group = (uint32_t)v;
            given_group = "--group-size";
            break;
        case 'S': {
            char *end;
            errno = 0;
            double x = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(x >= 0 && x <= 16))
                return usage_error("create", "--step: '%s' is not a number in [0, 16]", optarg);
            o.lossy.step = x > 0 ? x : -1; /* -1: per-group least-squares scales */
            given_step = "--step";
            break;
        }
        case 'O':
        case 'D':
        case 'E': {
            char *end;
            errno = 0;
            double x = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(x >= 0 && x <= (c == 'E' ? 1e6 : 1.0)) || (c != 'O' && x == 0))
                return usage_error("create", "--%s: '%s' is not a number in %s", c == 'O' ? "outliers" : c == 'D' ? "density" : "max-error",
                                   optarg, c == 'O' ? "[0, 1]" : c == 'D' ? "(0, 1]" : "(0, 1e6]");
            if (c == 'O') {
                o.lossy.outliers = x > 0 ? x : -1; /* -1: none */
                given_outl = "--outliers";
            } else if (c == 'D') {
                o.lossy.density = x;
                given_dens = "--density";
            } else {
                o.max_error = x;
                given_maxe = "--max-error";
            }
            break;
        }
        case 'F': force = 1; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(create_help, stdout); return 0;
        case ':': return usage_error("create", "option '%s' needs a value", argv[optind - 1]);
        default: return usage_error("create", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return usage_error("create", "unexpected argument '%s'", argv[optind]);
    if (!o.base_dir) return usage_error("create", "missing --base DIR");
    if (!o.ft_dir) return usage_error("create", "missing --finetuned DIR");
    if (!o.out_path) return usage_error("create", "missing -o OUT.wdelta");
    static const char *const strategies[] = {"lossless", "int4",          "sparse",  "bitdelta", "axis1",
                                             "ternary",  "ternary-axis1", "lowrank", "auto"};
    int known = 0;
    for (size_t i = 0; i < sizeof strategies / sizeof *strategies; i++) known |= !strcmp(o.strategy, strategies[i]);
    if (!known)
        return usage_error("create", "--strategy: unknown '%s' (lossless, int4, sparse, bitdelta, axis1, ternary, "
                                     "ternary-axis1, lowrank or auto)",
                           o.strategy);
    /* a codec option with another strategy would be silently ignored */
    const struct { const char *const *given; const char *opt, *owner, *also; } belongs[] = {
        {&given_group, "--group-size", "int4", NULL}, {&given_outl, "--outliers", "int4", NULL},
        {&given_step, "--step", "int4", NULL},        {&given_dens, "--density", "sparse", NULL},
        {&given_maxe, "--max-error", "auto", NULL},   {&given_rank, "--rank", "lowrank", "lossless"},
    };
    for (size_t i = 0; i < sizeof belongs / sizeof *belongs; i++)
        if (*belongs[i].given && strcmp(o.strategy, belongs[i].owner) &&
            !(belongs[i].also && !strcmp(o.strategy, belongs[i].also)))
            return usage_error("create", "%s is an option of --strategy %s%s%s, not of %s", belongs[i].opt,
                               belongs[i].owner, belongs[i].also ? " or " : "", belongs[i].also ? belongs[i].also : "",
                               o.strategy);
    if (given_rank && !strcmp(o.strategy, "lossless") && o.no_lowrank)
        return usage_error("create", "--rank sets the lowrank-exact trials that --no-lowrank turns off");
    if (!strcmp(o.strategy, "auto") && !given_maxe)
        return usage_error("create", "--strategy auto needs --max-error E (largest relative error per tensor)");
    if (ca.n && !parent) return usage_error("create", "--chain needs --parent");
    int nrc;
    if ((nrc = need_input("--base", o.base_dir, 'd')) || (nrc = need_input("--finetuned", o.ft_dir, 'd')) ||
        (parent && (nrc = need_input("--parent", parent, 'f'))) || (nrc = need_chain_inputs(ca.paths, ca.n)))
        return nrc;
    o.exclude = ex.paths;
    o.nexclude = ex.n;

    wd_err err = {0};
    unsigned keep_mode = 0;
    if (wd_output_check(o.out_path, force, &keep_mode, &err)) return fail(&err);
    wd_chain *chain = NULL;
    if (parent) {
        if (wd_chain_open(parent, ca.paths, ca.n, o.base_dir, NULL, &chain, &err)) return fail(&err);
        o.parent = wd_chain_top(chain);
    }
    progress pr;
    progress_init(&pr, "create", quiet);
    o.progress = create_progress_cb;
    o.progress_ctx = &pr;
    wd_create_stats cs;
    memset(&cs, 0, sizeof cs);
    double t0 = now_s();
    o.stop = &stop_signal;
    catch_stop_signals();
    int rc = wd_create(&o, &cs, &err);
    progress_end(&pr, rc == 0);
    size_t links = chain ? wd_chain_length(chain) : 0;
    wd_chain_close(chain);
    if (rc || wd_output_keep_mode(o.out_path, keep_mode, &err)) return fail(&err);
    inputs_sum is;
    memset(&is, 0, sizeof is);
    for (int k = 0; json && k < 8; k++) is.names[k] = cJSON_CreateArray();
    wd_err ierr = {0};
    int irc = wd_create_inputs(o.ft_dir, o.out_path, o.exclude, o.nexclude, inputs_cb, &is, &ierr);
    if (json) {
        int jrc = create_json(o.out_path, parent, links, &cs, now_s() - t0, &is, !irc);
        for (int k = 0; k < 8; k++) {
            free(is.text[k]);
            cJSON_Delete(is.names[k]);
        }
        return jrc;
    }
    if (parent) printf("link %zu of a chain: made against the model %s rebuilds\n", links + 1, parent);
    double el = now_s() - t0;
    char in[32], out[32];
    human(cs.input_bytes, in, sizeof in);
    human(cs.output_bytes, out, sizeof out);
    printf("created %s: input %s, delta %s, ratio %.3fx, %zu tensors, %zu blocks, %.2f s, %.1f MB/s\n",
           o.out_path, in, out,
           cs.output_bytes ? (double)cs.input_bytes / (double)cs.output_bytes : 0.0,
           cs.ntensors, cs.nblocks, el, el > 0 ? (double)cs.input_bytes / 1e6 / el : 0.0);
    if (!irc) inputs_print(&is);
    for (int k = 0; k < 8; k++) free(is.text[k]);
    return 0;
}

/* ------------------------------------------------------------ inspect */
static uint64_t extent_stored(const wd_delta_info *in, const wd_extent *e)
{
    uint64_t s = 0;
    for (uint64_t b = e->first_block; b < (uint64_t)e->first_block + e->nblocks && b < in->nblocks; b++)
        s += in->blocks[b].stored_len;
    return s;
}

static const char inspect_help[] =
    "usage: wdelta inspect FILE|DIR [--json]\n"
    "\n"
    "Describe a .wdelta: format version, strategy, hashes, output files and,\n"
    "per tensor, its codec, output size and stored size.  DIR: a model directory\n"
    "inside a wdeltafs mount; the delta behind it is described (JSON: also\n"
    "\"model_dir\" and \"delta\").\n"
    "\n"
    "  -j, --json   print one JSON object instead of text\n"
    "  -h, --help   this help\n";

static int inspect_json(const wd_delta_info *in, const char *mount_dir, const char *path)
{
    char hex[65];
    cJSON *root = cJSON_CreateObject();
    if (!root) return -1;
    cJSON_AddNumberToObject(root, "format_version", in->version);
    if (mount_dir) { /* inspect DIR: a model directory a mount serves, and its delta */
        json_add_str(root, "model_dir", mount_dir);
        json_add_str(root, "delta", path);
    }
    json_add_str(root, "strategy", in->strategy ? in->strategy : "");
    json_add_str(root, "tool", in->tool ? in->tool : "");
    cJSON *opts = in->options_json ? cJSON_Parse(in->options_json) : NULL;
    if (opts)
        cJSON_AddItemToObject(root, "options", opts);
    else
        json_add_str(root, "options", in->options_json ? in->options_json : "");
    wd_hex(in->base_hash, 32, hex);
    json_add_str(root, "base_hash", hex);
    wd_hex(in->result_hash, 32, hex);
    json_add_str(root, "result_hash", hex);
    /* 2: model identity (wdelta hash), 1: content hash (wdelta hash --v1) */
    cJSON_AddNumberToObject(root, "base_hash_kind", in->base_hash_kind);
    cJSON_AddNumberToObject(root, "result_hash_kind", in->result_hash_kind);
    /* deltatensors' content hashes, where the file tells them */
    if (in->has_base_hash_v1) {
        wd_hex(in->base_hash_v1, 32, hex);
        json_add_str(root, "base_hash_v1", hex);
    }
    if (in->has_result_hash_v1) {
        wd_hex(in->result_hash_v1, 32, hex);
        json_add_str(root, "result_hash_v1", hex);
    }
    if (in->parent_name) {
        cJSON *par = cJSON_AddObjectToObject(root, "parent");
        json_add_str(par, "name", in->parent_name);
        cJSON_AddNumberToObject(par, "depth", in->parent_depth);
    }
    cJSON_AddNumberToObject(root, "file_size", (double)in->file_size);
    cJSON_AddNumberToObject(root, "output_size", (double)in->output_size);
    cJSON_AddNumberToObject(root, "ratio",
                            in->file_size ? (double)in->output_size / (double)in->file_size : 0.0);
    cJSON_AddNumberToObject(root, "nblocks", (double)in->nblocks);
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    cJSON *extras = cJSON_AddArrayToObject(root, "extra_files");
    size_t ntensors = 0;
    for (size_t i = 0; i < in->nfiles; i++) {
        const wd_outfile *f = &in->files[i];
        cJSON *jf = cJSON_CreateObject();
        json_add_str(jf, "name", f->name ? f->name : "");
        cJSON_AddNumberToObject(jf, "size", (double)f->size);
        cJSON_AddBoolToObject(jf, "safetensors", f->is_safetensors);
        uint64_t fstored = 0;
        cJSON *je = cJSON_AddArrayToObject(jf, "extents");
        for (size_t k = 0; k < f->nextents; k++) {
            const wd_extent *e = &f->extents[k];
            uint64_t s = extent_stored(in, e);
            fstored += s;
            cJSON *x = cJSON_CreateObject();
            cJSON_AddNumberToObject(x, "offset", (double)e->file_offset);
            cJSON_AddNumberToObject(x, "length", (double)e->length);
            cJSON_AddNumberToObject(x, "stored", (double)s);
            json_add_str(x, "codec", codec_str(e->codec));
            json_add_str(x, "dtype", dtype_str(e->dtype));
            if (e->tensor) {
                json_add_str(x, "tensor", e->tensor);
                ntensors++;
            } else {
                cJSON_AddNullToObject(x, "tensor");
            }
            if (e->base_tensor)
                json_add_str(x, "base_tensor", e->base_tensor);
            else
                cJSON_AddNullToObject(x, "base_tensor");
            cJSON_AddNumberToObject(x, "first_block", e->first_block);
            cJSON_AddNumberToObject(x, "nblocks", e->nblocks);
            cJSON_AddNumberToObject(x, "block_size", e->block_size);
            if (e->params) {
                cJSON *pj = cJSON_Parse(e->params);
                if (pj) cJSON_AddItemToObject(x, "params", pj);
            }
            cJSON_AddItemToArray(je, x);
        }
        cJSON_AddNumberToObject(jf, "stored", (double)fstored);
        cJSON_AddItemToArray(files, jf);
        if (!f->is_safetensors) cJSON_AddItemToArray(extras, json_str(f->name ? f->name : ""));
    }
    cJSON_AddNumberToObject(root, "ntensors", (double)ntensors);
    cJSON *blocks = cJSON_AddArrayToObject(root, "blocks");
    for (size_t b = 0; b < in->nblocks; b++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "offset", (double)in->blocks[b].offset);
        cJSON_AddNumberToObject(x, "stored_len", in->blocks[b].stored_len);
        cJSON_AddNumberToObject(x, "out_len", in->blocks[b].out_len);
        cJSON_AddItemToArray(blocks, x);
    }
    return json_print(root) ? -1 : 0;
}

/* Tensors of output file `fname` that lie in [off, off+len): an extent
 * holding small tensors together names none; the rebuilt header does.
 * print: list them.  Returns how many. */
static size_t packed_tensors(const wd_model *om, const char *fname, uint64_t off, uint64_t len, int print)
{
    size_t n = 0;
    for (size_t f = 0; om && f < om->nfiles; f++) {
        if (strcmp(om->files[f].name, fname)) continue;
        for (size_t t = 0; t < om->files[f].ntensors; t++) {
            const wd_tensor *x = &om->files[f].tensors[t];
            if (x->offset < off || x->offset >= off + len || !x->length) continue;
            n++;
            if (print)
                printf("  %-56s %-6s %-9s %12" PRIu64 " %12s  (small: stored with its neighbours)\n", x->name,
                       x->dtype_name, "zstd", x->length, "-");
        }
    }
    return n;
}

static void inspect_text(const char *path, const wd_delta_info *in, const wd_model *om)
{
    char hex[65], a[32], b[32];
    printf("file:            %s\n", path);
    printf("format version:  %u\n", in->version);
    printf("strategy:        %s\n", in->strategy ? in->strategy : "");
    printf("tool:            %s\n", in->tool ? in->tool : "");
    printf("options:         %s\n", in->options_json ? in->options_json : "{}");
    wd_hex(in->base_hash, 32, hex);
    printf("base hash:       %s (%s)\n", hex, wd_hash_kind_name(in->base_hash_kind));
    wd_hex(in->result_hash, 32, hex);
    printf("result hash:     %s (%s)\n", hex, wd_hash_kind_name(in->result_hash_kind));
    if (in->has_base_hash_v1 && in->base_hash_kind != WD_HASH_V1) {
        wd_hex(in->base_hash_v1, 32, hex);
        printf("base hash v1:    %s (%s)\n", hex, wd_hash_kind_name(WD_HASH_V1));
    }
    if (in->has_result_hash_v1 && in->result_hash_kind != WD_HASH_V1) {
        wd_hex(in->result_hash_v1, 32, hex);
        printf("result hash v1:  %s (%s)\n", hex, wd_hash_kind_name(WD_HASH_V1));
    }
    if (in->parent_name) /* a chain link: its base is what the parent rebuilds */
        printf("parent:          %s (made against its model; %u link%s down to the base; see inspect --chain)\n",
               in->parent_name, in->parent_depth, in->parent_depth == 1 ? "" : "s");
    printf("blocks:          %zu\n", in->nblocks);
    printf("\noutput files (%zu):\n", in->nfiles);
    printf("  %-44s %14s %14s %8s\n", "name", "size", "stored", "ratio");
    uint64_t tstored_all = 0;
    size_t ntensors = 0, nextra = 0;
    for (size_t i = 0; i < in->nfiles; i++) {
        const wd_outfile *f = &in->files[i];
        uint64_t s = 0;
        for (size_t k = 0; k < f->nextents; k++) {
            s += extent_stored(in, &f->extents[k]);
            if (f->extents[k].tensor) ntensors++;
            else if (k && f->is_safetensors)
                ntensors += packed_tensors(om, f->name, f->extents[k].file_offset, f->extents[k].length, 0);
        }
        tstored_all += s;
        if (!f->is_safetensors) nextra++;
        printf("  %-44s %14" PRIu64 " %14" PRIu64 " %7.2fx\n", f->name ? f->name : "", f->size, s,
               s ? (double)f->size / (double)s : 0.0);
    }
    printf("\ntensors (%zu):\n", ntensors);
    printf("  %-56s %-6s %-9s %12s %12s %8s %7s\n", "name", "dtype", "codec", "size", "stored", "ratio", "bits/p");
    for (size_t i = 0; i < in->nfiles; i++) {
        const wd_outfile *f = &in->files[i];
        for (size_t k = 0; k < f->nextents; k++) {
            const wd_extent *e = &f->extents[k];
            if (!e->tensor && k && f->is_safetensors) packed_tensors(om, f->name, e->file_offset, e->length, 1);
            if (!e->tensor) continue;
            uint64_t s = extent_stored(in, e);
            unsigned es = wd_dtype_size(e->dtype) ? wd_dtype_size(e->dtype) : 1;
            printf("  %-56s %-6s %-9s %12" PRIu64 " %12" PRIu64 " %7.2fx %7.3f%s%s%s%s\n", e->tensor,
                   dtype_str(e->dtype), codec_str(e->codec), e->length, s,
                   s ? (double)e->length / (double)s : 0.0, e->length ? (double)s * 8 * es / (double)e->length : 0.0,
                   e->params ? "  " : "", e->params ? e->params : "",
                   e->base_tensor && strcmp(e->base_tensor, e->tensor) ? "  base=" : "",
                   e->base_tensor && strcmp(e->base_tensor, e->tensor) ? e->base_tensor : "");
        }
    }
    printf("\nextra files (%zu):", nextra);
    for (size_t i = 0; i < in->nfiles; i++)
        if (!in->files[i].is_safetensors) printf(" %s", in->files[i].name ? in->files[i].name : "");
    printf("\n\n");
    human(in->output_size, a, sizeof a);
    human(in->file_size, b, sizeof b);
    printf("total: output %s (%" PRIu64 " bytes), delta %s (%" PRIu64 " bytes, %" PRIu64
           " in blocks), ratio %.3fx\n",
           a, in->output_size, b, in->file_size, tstored_all,
           in->file_size ? (double)in->output_size / (double)in->file_size : 0.0);
}

/* deltatensors v1 files (read-only description) */
static int inspect_v1(const char *path, wd_v1 *v, int json)
{
    char hex[65];
    wd_hex(wd_v1_parent_hash(v), 32, hex);
    size_t n = wd_v1_count(v);
    uint64_t stored = 0, nelem = 0;
    for (size_t i = 0; i < n; i++) {
        stored += wd_v1_get(v, i)->stored_bytes;
        nelem += wd_v1_get(v, i)->nelem;
    }
    if (json) {
        cJSON *root = cJSON_CreateObject();
        if (!root) return 1;
        cJSON_AddNumberToObject(root, "format_version", 1);
        json_add_str(root, "strategy", wd_v1_strategy(v) ? wd_v1_strategy(v) : "");
        cJSON *opts = wd_v1_options(v) ? cJSON_Parse(wd_v1_options(v)) : NULL;
        if (opts) cJSON_AddItemToObject(root, "options", opts);
        else json_add_str(root, "options", wd_v1_options(v) ? wd_v1_options(v) : "");
        json_add_str(root, "base_hash", hex);
        cJSON_AddNumberToObject(root, "file_size", (double)wd_v1_file_size(v));
        cJSON_AddNumberToObject(root, "ntensors", (double)n);
        cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
        for (size_t i = 0; i < n; i++) {
            const wd_v1_tensor *t = wd_v1_get(v, i);
            cJSON *x = cJSON_CreateObject();
            json_add_str(x, "tensor", t->name ? t->name : "");
            json_add_str(x, "strategy", t->strategy ? t->strategy : "");
            json_add_str(x, "dtype", t->dtype ? t->dtype : "");
            cJSON *sh = cJSON_AddArrayToObject(x, "shape");
            for (int k = 0; k < t->ndim && k < WD_MAX_DIMS; k++)
                cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[k]));
            cJSON_AddNumberToObject(x, "stored", (double)t->stored_bytes);
            cJSON_AddItemToArray(arr, x);
        }
        return json_print(root);
    }
    printf("file:            %s\n", path);
    printf("format version:  1 (deltatensors)\n");
    printf("strategy:        %s\n", wd_v1_strategy(v) ? wd_v1_strategy(v) : "");
    printf("options:         %s\n", wd_v1_options(v) ? wd_v1_options(v) : "{}");
    printf("base hash:       %s\n", hex);
    printf("\ntensors (%zu):\n", n);
    printf("  %-56s %-10s %-8s %14s %12s\n", "name", "strategy", "dtype", "elements", "stored");
    for (size_t i = 0; i < n; i++) {
        const wd_v1_tensor *t = wd_v1_get(v, i);
        printf("  %-56s %-10s %-8s %14" PRIu64 " %12" PRIu64 "\n", t->name ? t->name : "",
               t->strategy ? t->strategy : "", t->dtype ? t->dtype : "", t->nelem, t->stored_bytes);
    }
    printf("\ntotal: %zu tensors, %" PRIu64 " elements, %" PRIu64 " bytes of records, file %" PRIu64
           " bytes (%.2f bits/param)\n",
           n, nelem, stored, wd_v1_file_size(v),
           nelem ? 8.0 * (double)wd_v1_file_size(v) / (double)nelem : 0.0);
    return 0;
}

static int inspect_chain(int argc, char **argv, int json);
static void inspect_chain_usage(void);

static int cmd_inspect(int argc, char **argv)
{
    static const struct option lo[] = {
        {"json", no_argument, 0, 'j'},
        {"chain", no_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int json = 0, chain = 0, c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":jch", lo, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'c': chain = 1; break;
        case 'h':
            fputs(inspect_help, stdout);
            inspect_chain_usage();
            return 0;
        default: return usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage_error("inspect", "missing FILE");
    if (chain) {
        for (int i = optind; i < argc; i++) {
            int nrc = need_input(NULL, argv[i], '?');
            if (nrc) return nrc;
        }
        return inspect_chain(argc - optind, argv + optind, json);
    }
    if (argc - optind > 1) return usage_error("inspect", "unexpected argument '%s'", argv[optind + 1]);
    const char *path = argv[optind];
    const char *mount_dir = NULL;
    char behind[PATH_MAX];
    wd_err err = {0};
    struct stat dst;
    if (stat(path, &dst) == 0 && S_ISDIR(dst.st_mode)) {
        /* a model directory inside a mount: the delta behind it */
        if (wd_mount_delta_of(path, behind, sizeof behind, &err)) return fail(&err);
        mount_dir = path;
        path = behind;
    }
    int nrc = need_input(NULL, path, 'f');
    if (nrc) return nrc;
    wd_delta *d = NULL;
    if (wd_delta_open(path, &d, &err)) return fail(&err);
    if (wd_delta_get_info(d)->version == 1) {
        /* deltatensors v1: its outputs exist only with a base; describe
         * the records through the v1 reader */
        wd_delta_close(d);
        wd_v1 *v = NULL;
        if (wd_v1_open(path, &v, &err)) return fail(&err);
        int rc = inspect_v1(path, v, json);
        wd_v1_close(v);
        return rc;
    }
    const wd_delta_info *in = wd_delta_get_info(d);
    int rc = 0;
    if (json) {
        if (inspect_json(in, mount_dir, path)) rc = 1;
    } else {
        wd_model om;
        int have = wd_delta_output_model(d, &om, &err) == 0; /* names the small tensors stored together */
        if (mount_dir) printf("model dir:       %s (served by wdeltafs from the delta below)\n", mount_dir);
        inspect_text(path, in, have ? &om : NULL);
        if (have) wd_model_free(&om);
    }
    wd_delta_close(d);
    return rc;
}

/* ------------------------------------------------------------ apply */
static const char apply_help[] =
    "usage: wdelta apply FILE --base DIR -o OUTDIR [--chain PATH]... [--threads N]\n"
    "\n"
    "Rebuild the fine-tune stored in FILE into OUTDIR (byte-identical files).\n"
    "A chain link is rebuilt through its parents, found by content hash.\n"
    "\n"
    "  -b, --base DIR      the base model the delta (or its chain) was made against\n"
    "  -c, --chain PATH    where FILE's parent links are: a .wdelta or a directory\n"
    "                      of them (repeatable; default: FILE's own directory)\n"
    "  -o, --output DIR    directory to create (or an existing empty one)\n"
    "  -t, --threads N     worker threads (default: online CPUs)\n"
    "      --base-dtype    deltatensors v1 files: write tensors in the base's dtype\n"
    "                      (default: float32, as the reference does)\n"
    "      --force         replace OUTDIR if it holds only files this delta\n"
    "                      rebuilds; anything else there is named and refused\n"
    "  -q, --quiet         no progress output\n"
    "  -h, --help          this help\n";

static int cmd_apply(int argc, char **argv)
{
    static const struct option lo[] = {
        {"base", required_argument, 0, 'b'},
        {"output", required_argument, 0, 'o'},
        {"chain", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'},
        {"force", no_argument, 0, 'F'},
        {"base-dtype", no_argument, 0, 'D'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *base = NULL, *out = NULL;
    int threads = 0, force = 0, quiet = 0, base_dtype = 0, c;
    long long v;
    static chain_args ca;
    ca.n = 0;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:o:c:t:qh", lo, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (chain_arg(&ca, "apply", optarg)) return EXIT_USAGE;
            break;
        case 'b': base = optarg; break;
        case 'o': out = optarg; break;
        case 't':
            if (parse_num(optarg, 0, 4096, 0, &v))
                return usage_error("apply", "--threads: '%s' is not a number in 0..4096", optarg);
            threads = (int)v;
            break;
        case 'F': force = 1; break;
        case 'D': base_dtype = 1; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(apply_help, stdout); return 0;
        case ':': return usage_error("apply", "option '%s' needs a value", argv[optind - 1]);
        default: return usage_error("apply", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage_error("apply", "missing FILE");
    if (argc - optind > 1) return usage_error("apply", "unexpected argument '%s'", argv[optind + 1]);
    if (!base) return usage_error("apply", "missing --base DIR");
    if (!out) return usage_error("apply", "missing -o OUTDIR");
    const char *path = argv[optind];
    int nrc;
    if ((nrc = need_input(NULL, path, 'f')) || (nrc = need_input("--base", base, 'd')) ||
        (nrc = need_chain_inputs(ca.paths, ca.n)))
        return nrc;

    wd_err err = {0};
    int rc = 1;
    wd_chain *chain = NULL;
    wd_delta *top;
    if (wd_open_with_base(path, ca.paths, ca.n, base, WD_OPEN_CHECK_V1 | (base_dtype ? WD_OPEN_V1_BASE_DTYPE : 0u),
                          NULL, &chain, &err))
        goto done;
    top = wd_chain_top(chain);
    /* wd_apply builds in a temporary directory and renames it into place */
    size_t ol = strlen(out);
    while (ol > 1 && out[ol - 1] == '/') ol--;
    char outbuf[PATH_MAX];
    snprintf(outbuf, sizeof outbuf, "%.*s", (int)ol, out);
    progress pr;
    progress_init(&pr, "apply", quiet);
    double t0 = now_s();
    wd_delta_set_stop(top, &stop_signal);
    catch_stop_signals();
    int arc = force ? wd_apply_replace(top, outbuf, threads, bytes_progress_cb, &pr, &err)
                    : wd_apply(top, outbuf, threads, bytes_progress_cb, &pr, &err);
    progress_end(&pr, arc == 0);
    if (arc) goto done;
    double el = now_s() - t0;
    const wd_delta_info *in = wd_delta_get_info(top);
    char hs[32];
    human(in->output_size, hs, sizeof hs);
    printf("applied %s -> %s: %zu files, %s, %.2f s, %.1f MB/s", path, outbuf, wd_apply_count(top), hs, el,
           el > 0 ? (double)in->output_size / 1e6 / el : 0.0);
    if (chain && wd_chain_length(chain) > 1) printf(" (chain of %zu links)", wd_chain_length(chain));
    printf("\n");
    rc = 0;
done:
    if (rc) rc = fail(&err);
    wd_chain_close(chain);
    return rc;
}

/* ------------------------------------------------------------ verify */
static const char verify_help[] =
    "usage: wdelta verify FILE [--base DIR] [--chain PATH]... [--json]\n"
    "\n"
    "Without --base: check the file's structure and every block's stored checksum.\n"
    "With --base: also check that DIR is the base the delta was made against\n"
    "(content hash), decode everything and check the result hash.\n"
    "A chain link is checked with every link below it, root first: each one's\n"
    "checksums and (with --base) its result hash.\n"
    "\n"
    "  -b, --base DIR   the base model directory (of the chain's root)\n"
    "  -c, --chain PATH where FILE's parent links are: a .wdelta or a directory\n"
    "                   of them (repeatable; default: FILE's own directory)\n"
    "  -q, --quiet      no progress output\n"
    "  -j, --json       one JSON object instead of the OK lines: \"file\", \"base\",\n"
    "                   \"format_version\", \"files\", \"blocks\", \"base_hash\" (with\n"
    "                   --base), \"links\" (root first: \"path\", \"checksums_ok\",\n"
    "                   \"result_hash\", \"result_hash_matches\", \"output_bytes\"),\n"
    "                   \"ok\", \"error\"; printed on failure too (exit status as\n"
    "                   without --json)\n"
    "  -h, --help       this help\n";

/* verify --json: one object a run, built as the checks pass */
static cJSON *verify_link_json(cJSON *j, const char *path, const wd_delta_info *in)
{
    cJSON *links = cJSON_GetObjectItem(j, "links");
    cJSON *x = cJSON_CreateObject();
    if (!links || !x) {
        cJSON_Delete(x);
        return NULL;
    }
    json_add_str(x, "path", path);
    cJSON_AddNumberToObject(x, "format_version", in->version);
    cJSON_AddNumberToObject(x, "blocks", (double)in->nblocks);
    cJSON_AddItemToArray(links, x);
    return x;
}

/* the end of a verify --json run: "ok" and "error", then print */
static int verify_json_end(cJSON *j, int rc, const wd_err *err)
{
    cJSON_AddBoolToObject(j, "ok", rc == 0);
    if (rc) json_add_str(j, "error", err->msg[0] ? err->msg : "unknown error");
    else cJSON_AddNullToObject(j, "error");
    int prc = json_print(j);
    if (rc) return fail(err);
    return prc;
}

/* verify a v2 file and the links below it, root first */
static int verify_chain(const char *path, const char *base, const chain_args *ca, int quiet, cJSON *j)
{
    wd_err err = {0};
    wd_chain *chain = NULL;
    char hex[65], hex2[65];
    unsigned char rh[32], bh[32];
    int rc = 1;
    if (wd_chain_open(path, ca->paths, ca->n, base, NULL, &chain, &err)) goto done;
    size_t n = wd_chain_length(chain);
    const wd_delta_info *top = wd_delta_get_info(wd_chain_top(chain));
    if (j) {
        cJSON_AddNumberToObject(j, "format_version", top->version);
        cJSON_AddNumberToObject(j, "files", (double)top->nfiles);
        cJSON_AddNumberToObject(j, "blocks", (double)top->nblocks);
    } else
        printf("OK: %s opens (format version %u, %zu files, %zu blocks)\n", path, top->version, top->nfiles,
               top->nblocks);
    if (n > 1 && !j) {
        printf("OK: chain of %zu links, root first:", n);
        for (size_t i = 0; i < n; i++) printf(" %s", wd_delta_path(wd_chain_link(chain, i)));
        printf("\n");
    }
    fflush(stdout);
    if (base) {
        const wd_delta_info *root = wd_delta_get_info(wd_chain_link(chain, 0));
        if (wd_chain_base_hash(chain, bh, &err)) goto done;
        if (memcmp(bh, root->base_hash, 32)) {
            wd_hex(bh, 32, hex);
            wd_hex(root->base_hash, 32, hex2);
            wd_errf(&err, "%s is not the base of %s: its content hash is %s, the delta needs %s", base,
                    wd_delta_path(wd_chain_link(chain, 0)), hex, hex2);
            goto done;
        }
        wd_hex(bh, 32, hex);
        if (j) json_add_str(j, "base_hash", hex);
        else printf("OK: base %s matches base hash %s\n", base, hex);
        fflush(stdout);
    }
    for (size_t i = 0; i < n; i++) {
        wd_delta *l = wd_chain_link(chain, i);
        const wd_delta_info *in = wd_delta_get_info(l);
        char label[64];
        if (n > 1) snprintf(label, sizeof label, "link %zu/%zu: ", i + 1, n);
        else label[0] = 0;
        progress pr;
        progress_init(&pr, "verify", quiet);
        cJSON *jl = j ? verify_link_json(j, wd_delta_path(l), in) : NULL;
        int vrc = wd_verify(l, base != NULL, rh, bytes_progress_cb, &pr, &err);
        progress_end(&pr, vrc == 0);
        if (vrc) goto done;
        char who[PATH_MAX + 80] = "";
        if (n > 1) snprintf(who, sizeof who, "%s%s: ", label, wd_delta_path(l));
        if (jl) {
            cJSON_AddBoolToObject(jl, "checksums_ok", 1);
            if (base) {
                json_add_hash(jl, "result_hash", rh);
                cJSON_AddBoolToObject(jl, "result_hash_matches", 1);
                cJSON_AddNumberToObject(jl, "output_bytes", (double)in->output_size);
            }
            continue;
        }
        printf("OK: %sall %zu block checksums (stored data) match\n", who, in->nblocks);
        if (base) {
            wd_hex(rh, 32, hex);
            printf("OK: %sdecoded %zu files (%" PRIu64 " bytes), result hash %s matches\n", who, in->nfiles,
                   in->output_size, hex);
        }
        fflush(stdout);
    }
    rc = 0;
done:
    fflush(stdout);
    wd_chain_close(chain);
    if (j) return verify_json_end(j, rc, &err);
    if (rc) rc = fail(&err);
    return rc;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option lo[] = {
        {"base", required_argument, 0, 'b'},
        {"chain", required_argument, 0, 'c'},
        {"quiet", no_argument, 0, 'q'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *base = NULL;
    int quiet = 0, json = 0, c;
    static chain_args ca;
    ca.n = 0;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:c:qjh", lo, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (chain_arg(&ca, "verify", optarg)) return EXIT_USAGE;
            break;
        case 'b': base = optarg; break;
        case 'q': quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': fputs(verify_help, stdout); return 0;
        case ':': return usage_error("verify", "option '%s' needs a value", argv[optind - 1]);
        default: return usage_error("verify", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage_error("verify", "missing FILE");
    if (argc - optind > 1) return usage_error("verify", "unexpected argument '%s'", argv[optind + 1]);
    const char *path = argv[optind];
    int nrc;
    if ((nrc = need_input(NULL, path, 'f')) || (base && (nrc = need_input("--base", base, 'd'))) ||
        (nrc = need_chain_inputs(ca.paths, ca.n)))
        return nrc;

    wd_err err = {0};
    cJSON *j = NULL;
    if (json) {
        j = cJSON_CreateObject();
        if (!j || !json_add_str(j, "file", path) || !json_add_str(j, "base", base) ||
            !cJSON_AddArrayToObject(j, "links")) {
            cJSON_Delete(j);
            return json_print(NULL);
        }
    }
    wd_delta *d = NULL;
    wd_model m;
    memset(&m, 0, sizeof m);
    int have_model = 0, rc = 1;
    unsigned char rh[32];
    char hex[65], hex2[65];
    if (wd_delta_open(path, &d, &err)) goto done;
    if (wd_delta_get_info(d)->version == 2) {
        wd_delta_close(d);
        return verify_chain(path, base, &ca, quiet, j);
    }
    const wd_delta_info *in = wd_delta_get_info(d);
    cJSON *jl = NULL;
    if (j) {
        cJSON_AddNumberToObject(j, "format_version", in->version);
        cJSON_AddNumberToObject(j, "files", (double)in->nfiles);
        cJSON_AddNumberToObject(j, "blocks", (double)in->nblocks);
        jl = verify_link_json(j, path, in);
    } else
        printf("OK: %s opens (format version %u, %zu files, %zu blocks)\n", path, in->version,
               in->nfiles, in->nblocks);
    fflush(stdout);
    if (base) {
        if (wd_model_open(base, &m, &err)) goto done;
        have_model = 1;
        if (wd_delta_check_base(d, &m, &err)) goto done;
        wd_hex(in->base_hash, 32, hex);
        if (j) json_add_str(j, "base_hash", hex);
        else printf("OK: base %s matches base hash %s\n", base, hex);
        fflush(stdout);
        if (wd_delta_set_base(d, &m, &err)) goto done;
    }
    progress pr;
    progress_init(&pr, "verify", quiet);
    int vrc = wd_verify(d, base != NULL, rh, bytes_progress_cb, &pr, &err);
    progress_end(&pr, vrc == 0);
    if (vrc) goto done;
    if (jl) {
        /* v1: the trailing SHA-256 of the file; v2: the block checksums */
        cJSON_AddBoolToObject(jl, "checksums_ok", 1);
        if (base && in->version == 2 && memcmp(rh, in->result_hash, 32)) {
            wd_hex(rh, 32, hex);
            wd_hex(in->result_hash, 32, hex2);
            wd_errf(&err, "%s: decoded result hash %s differs from the recorded %s", path, hex, hex2);
            goto done;
        }
        if (base) {
            json_add_hash(jl, "result_hash", rh);
            /* v1 records no result hash: null, nothing to match */
            if (in->version == 2) cJSON_AddBoolToObject(jl, "result_hash_matches", 1);
            else cJSON_AddNullToObject(jl, "result_hash_matches");
            cJSON_AddNumberToObject(jl, "output_bytes", (double)in->output_size);
        }
        rc = 0;
        goto done;
    }
    if (in->version == 1) printf("OK: trailing SHA-256 of the v1 file matches\n");
    else printf("OK: all %zu block checksums (stored data) match\n", in->nblocks);
    if (base && in->version == 1) {
        wd_hex(rh, 32, hex);
        printf("OK: rebuilt %zu files (%" PRIu64 " bytes); v1 records no result hash, the rebuilt model's is %s\n",
               in->nfiles, in->output_size, hex);
    } else if (base) {
        if (memcmp(rh, in->result_hash, 32)) {
            wd_hex(rh, 32, hex);
            wd_hex(in->result_hash, 32, hex2);
            wd_errf(&err, "%s: decoded result hash %s differs from the recorded %s", path, hex, hex2);
            goto done;
        }
        wd_hex(rh, 32, hex);
        printf("OK: decoded %zu files (%" PRIu64 " bytes), result hash %s matches\n", in->nfiles,
               in->output_size, hex);
    }
    rc = 0;
done:
    fflush(stdout);
    if (d) wd_delta_close(d);
    if (have_model) wd_model_free(&m);
    if (j) return verify_json_end(j, rc, &err);
    if (rc) rc = fail(&err);
    return rc;
}

/* ------------------------------------------------------------ hash */
/* ------------------------------------------------------------ eval */
static const char eval_help[] =
    "usage: wdelta eval FILE --base DIR --finetuned DIR [--chain PATH]... [--json]\n"
    "\n"
    "How close the model rebuilt from FILE and the base DIR is to the fine-tune:\n"
    "per tensor its codec, bits per parameter (stored bytes of its blocks * 8 /\n"
    "parameters), relative error ||rebuilt - ft|| / ||ft - base|| and largest\n"
    "absolute error, then the totals (the whole-file figure counts every byte of\n"
    "FILE).\n"
    "\n"
    "  -b, --base DIR        base model directory\n"
    "  -f, --finetuned DIR   the fine-tune the delta was made from\n"
    "  -c, --chain PATH      where a chain link's parents are (a .wdelta or a\n"
    "                        directory; repeatable; default: FILE's directory);\n"
    "                        a link's errors are measured against its parent\n"
    "  -j, --json            one JSON object instead of a table: \"tensors\" (per\n"
    "                        tensor: name, codec, dtype, settings (the codec's,\n"
    "                        when it has any), params (its parameter count),\n"
    "                        stored_bytes, bits_per_param, rel_error,\n"
    "                        max_abs_error) and \"total\"\n"
    "  -h, --help            this help\n";

typedef struct eval_rows {
    wd_eval_tensor *r;
    size_t n, cap;
    int oom;
} eval_rows;

static void eval_cb(void *ctx, const wd_eval_tensor *t)
{
    eval_rows *er = ctx;
    if (er->oom) return;
    if (er->n == er->cap) {
        size_t nc = er->cap ? er->cap * 2 : 64;
        wd_eval_tensor *p = realloc(er->r, nc * sizeof *p);
        if (!p) {
            er->oom = 1;
            return;
        }
        er->r = p;
        er->cap = nc;
    }
    wd_eval_tensor *x = &er->r[er->n];
    *x = *t;
    x->name = strdup(t->name);
    x->params = t->params ? strdup(t->params) : NULL;
    if (!x->name) er->oom = 1;
    else er->n++;
}

static double rel_err(double e2, double d2)
{
    if (e2 != e2) return e2;
    if (d2 > 0) return sqrt(e2 / d2);
    return e2 > 0 ? INFINITY : 0.0;
}

static int cmd_eval(int argc, char **argv)
{
    static const struct option lo[] = {
        {"base", required_argument, 0, 'b'},
        {"finetuned", required_argument, 0, 'f'},
        {"json", no_argument, 0, 'j'},
        {"chain", required_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *base = NULL, *ftdir = NULL;
    static chain_args ca;
    ca.n = 0;
    int json = 0, c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:f:c:jh", lo, NULL)) != -1) {
        switch (c) {
        case 'b': base = optarg; break;
        case 'f': ftdir = optarg; break;
        case 'j': json = 1; break;
        case 'c':
            if (chain_arg(&ca, "eval", optarg)) return EXIT_USAGE;
            break;
        case 'h': fputs(eval_help, stdout); return 0;
        case ':': return usage_error("eval", "option '%s' needs a value", argv[optind - 1]);
        default: return usage_error("eval", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage_error("eval", "missing FILE");
    if (argc - optind > 1) return usage_error("eval", "unexpected argument '%s'", argv[optind + 1]);
    if (!base) return usage_error("eval", "missing --base DIR");
    if (!ftdir) return usage_error("eval", "missing --finetuned DIR");
    const char *path = argv[optind];
    int nrc;
    if ((nrc = need_input(NULL, path, 'f')) || (nrc = need_input("--base", base, 'd')) ||
        (nrc = need_input("--finetuned", ftdir, 'd')) || (nrc = need_chain_inputs(ca.paths, ca.n)))
        return nrc;
    wd_err err = {0};
    wd_model fm;
    memset(&fm, 0, sizeof fm);
    eval_rows er = {0};
    int rc = 1, hf = 0;
    wd_chain *chain = NULL;
    wd_delta *top = NULL;
    if (wd_model_open(ftdir, &fm, &err)) goto done;
    hf = 1;
    /* a chain link's errors are against its parent */
    if (wd_open_with_base(path, ca.paths, ca.n, base, 0, NULL, &chain, &err)) goto done;
    top = wd_chain_top(chain);
    if (wd_eval(top, &fm, eval_cb, &er, &err)) goto done;
    if (er.oom) {
        wd_errf(&err, "out of memory");
        goto done;
    }
    const wd_delta_info *in = wd_delta_get_info(top);
    double te2 = 0, td2 = 0, tmax = 0;
    uint64_t tp = 0, ts = 0;
    for (size_t i = 0; i < er.n; i++) {
        te2 += er.r[i].err2;
        td2 += er.r[i].delta2;
        if (er.r[i].max_abs > tmax) tmax = er.r[i].max_abs;
        tp += er.r[i].nelem;
        ts += er.r[i].stored;
    }
    double bpp = tp ? (double)ts * 8 / (double)tp : 0, fbpp = tp ? (double)in->file_size * 8 / (double)tp : 0;
    if (json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "tensors");
        for (size_t i = 0; i < er.n; i++) {
            const wd_eval_tensor *t = &er.r[i];
            cJSON *x = cJSON_CreateObject();
            double re = rel_err(t->err2, t->delta2);
            json_add_str(x, "name", t->name);
            json_add_str(x, "codec", codec_str(t->codec));
            json_add_str(x, "dtype", dtype_str(t->dtype));
            /* "settings": the codec's settings; "params": the tensor's parameter count
             * (as "params" in "total") */
            if (t->params) cJSON_AddItemToObject(x, "settings", cJSON_Parse(t->params));
            cJSON_AddNumberToObject(x, "params", (double)t->nelem);
            cJSON_AddNumberToObject(x, "stored_bytes", (double)t->stored);
            cJSON_AddNumberToObject(x, "bits_per_param", t->nelem ? (double)t->stored * 8 / (double)t->nelem : 0);
            if (isfinite(re)) cJSON_AddNumberToObject(x, "rel_error", re);
            else cJSON_AddNullToObject(x, "rel_error");
            cJSON_AddNumberToObject(x, "max_abs_error", t->max_abs);
            cJSON_AddItemToArray(arr, x);
        }
        cJSON *tot = cJSON_AddObjectToObject(root, "total");
        cJSON_AddNumberToObject(tot, "params", (double)tp);
        cJSON_AddNumberToObject(tot, "tensor_stored_bytes", (double)ts);
        cJSON_AddNumberToObject(tot, "file_bytes", (double)in->file_size);
        cJSON_AddNumberToObject(tot, "bits_per_param", bpp);
        cJSON_AddNumberToObject(tot, "file_bits_per_param", fbpp);
        double re = rel_err(te2, td2);
        if (isfinite(re)) cJSON_AddNumberToObject(tot, "rel_error", re);
        else cJSON_AddNullToObject(tot, "rel_error");
        cJSON_AddNumberToObject(tot, "max_abs_error", tmax);
        if (json_print(root)) {
            wd_errf(&err, "out of memory");
            goto done;
        }
    } else {
        printf("%-52s %-9s %10s %8s %10s %10s\n", "tensor", "codec", "params", "bits/p", "rel.err", "max.abs");
        for (size_t i = 0; i < er.n; i++) {
            const wd_eval_tensor *t = &er.r[i];
            printf("%-52s %-9s %10" PRIu64 " %8.3f %10.3g %10.3g\n", t->name, codec_str(t->codec), t->nelem,
                   t->nelem ? (double)t->stored * 8 / (double)t->nelem : 0.0, rel_err(t->err2, t->delta2),
                   t->max_abs);
        }
        printf("%-52s %-9s %10" PRIu64 " %8.3f %10.3g %10.3g\n", "total (tensor blocks)", in->strategy ? in->strategy : "",
               tp, bpp, rel_err(te2, td2), tmax);
        printf("whole file: %" PRIu64 " bytes, %.3f bits/param\n", in->file_size, fbpp);
    }
    rc = 0;
done:
    if (rc) rc = fail(&err);
    for (size_t i = 0; i < er.n; i++) {
        free((char *)er.r[i].name);
        free((char *)er.r[i].params);
    }
    free(er.r);
    if (chain) wd_chain_close(chain);
    if (hf) wd_model_free(&fm);
    return rc;
}

static const char hash_help[] =
    "usage: wdelta hash [--v1] [--json] DIR\n"
    "\n"
    "Print the model identity of a model directory: SHA-256 over every tensor's\n"
    "name, dtype, shape and bytes, in name order.  It does not depend on how the\n"
    "tensors are split into shards, their order or offsets, safetensors metadata\n"
    "or the other files (config, tokenizer).  Deltas record it for their base\n"
    "and their result.\n"
    "\n"
    "  --v1        print deltatensors' parent_hash instead (SHA-256 over names and\n"
    "              bytes, shards in the order of their smallest tensor name: it\n"
    "              depends on the sharding), what v1 files and v2 files written\n"
    "              before the identity record\n"
    "  -j, --json  one JSON object: \"path\", \"hash\", \"hash_kind\" (\"model\n"
    "              identity\" or \"content hash v1\"), \"tensors\", \"tensor_bytes\"\n"
    "  -h, --help  this help\n";

static int cmd_hash(int argc, char **argv)
{
    static const struct option lo[] = {
        {"v1", no_argument, 0, '1'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c, v1 = 0, json = 0;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":jh", lo, NULL)) != -1) {
        switch (c) {
        case '1': v1 = 1; break;
        case 'j': json = 1; break;
        case 'h': fputs(hash_help, stdout); return 0;
        default: return usage_error("hash", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage_error("hash", "missing DIR");
    if (argc - optind > 1) return usage_error("hash", "unexpected argument '%s'", argv[optind + 1]);
    int nrc = need_input(NULL, argv[optind], 'd');
    if (nrc) return nrc;
    wd_err err = {0};
    wd_model m;
    memset(&m, 0, sizeof m);
    if (wd_model_open(argv[optind], &m, &err)) return fail(&err);
    unsigned char h[32];
    char hex[65];
    int rc = wd_model_hash_kind(&m, v1 ? WD_HASH_V1 : WD_ID_V2, h, &err);
    size_t nt = 0;
    uint64_t tb = 0;
    for (size_t f = 0; f < m.nfiles; f++)
        for (size_t t = 0; t < m.files[f].ntensors; t++) {
            nt++;
            tb += m.files[f].tensors[t].length;
        }
    wd_model_free(&m);
    if (rc) return fail(&err);
    if (json) {
        cJSON *root = cJSON_CreateObject();
        if (!root) return json_print(NULL);
        json_add_str(root, "path", argv[optind]);
        json_add_hash(root, "hash", h);
        json_add_str(root, "hash_kind", wd_hash_kind_name(v1 ? WD_HASH_V1 : WD_ID_V2));
        cJSON_AddNumberToObject(root, "tensors", (double)nt);
        cJSON_AddNumberToObject(root, "tensor_bytes", (double)tb);
        return json_print(root);
    }
    wd_hex(h, 32, hex);
    printf("%s\n", hex);
    return 0;
}

/* ------------------------------------------------------------ find-base */
static const char find_base_help[] =
    "usage: wdelta find-base FILE DIR... [--chain PATH]... [--no-cache] [--json]\n"
    "\n"
    "Tell which of the model directories DIR... is the base FILE was made\n"
    "against (for a chain link: the base at the root of its chain): prints each\n"
    "DIR that is (copies of the base all are), one a line.  Each DIR's hash comes from the digest cache the mount keeps\n"
    "(/var/cache/wdeltafs for root, else $XDG_CACHE_HOME/wdeltafs or\n"
    "~/.cache/wdeltafs) or is computed and stored there.\n"
    "\n"
    "  -c, --chain PATH   where FILE's parent links are (a .wdelta or a directory;\n"
    "                     repeatable; default: FILE's directory)\n"
    "      --cache-dir D  the digest cache to use (default above)\n"
    "      --no-cache     hash every DIR, read and write no cache\n"
    "  -v, --verbose      also list each DIR with its hash on stderr\n"
    "  -j, --json         one JSON object: \"file\", \"base_hash\", \"base_hash_kind\",\n"
    "                     \"base\" (the first that is, or null), \"bases\" (all),\n"
    "                     \"candidates\" (\"dir\",\n"
    "                     \"hash\", \"cached\", \"match\", \"error\")\n"
    "  -h, --help         this help\n"
    "\n"
    "exit status: 0 found, 3 none of the DIRs is the base (or FILE, a parent\n"
    "link is missing), 2 usage, 1 FILE is unreadable.\n";

typedef struct find_ctx {
    const char *const *dirs;
    cJSON *cands; /* --json */
    int verbose;
    char *match;  /* per candidate: it is a base (copies of a model all are) */
} find_ctx;

static void find_cb(void *ctx, size_t i, const unsigned char *hash, int cached, int match, const char *msg)
{
    find_ctx *fc = ctx;
    char hex[65] = "";
    if (hash) wd_hex(hash, 32, hex);
    fc->match[i] = (char)match;
    if (fc->cands) {
        cJSON *x = cJSON_CreateObject();
        json_add_str(x, "dir", fc->dirs[i]);
        json_add_str(x, "hash", hash ? hex : NULL);
        cJSON_AddBoolToObject(x, "cached", cached);
        cJSON_AddBoolToObject(x, "match", match);
        json_add_str(x, "error", msg);
        cJSON_AddItemToArray(fc->cands, x);
    }
    if (fc->verbose)
        fprintf(stderr, "%s %s  %s%s\n", match ? "BASE" : "no  ", hash ? hex : "(not a model)", fc->dirs[i],
                msg ? msg : cached ? " (cached)" : "");
}

static int cmd_find_base(int argc, char **argv)
{
    static const struct option lo[] = {
        {"chain", required_argument, 0, 'c'},
        {"cache-dir", required_argument, 0, 'D'},
        {"no-cache", no_argument, 0, 'N'},
        {"verbose", no_argument, 0, 'v'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int json = 0, verbose = 0, nocache = 0, c;
    const char *cache_dir = NULL;
    static chain_args ca;
    ca.n = 0;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:vjh", lo, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (chain_arg(&ca, "find-base", optarg)) return EXIT_USAGE;
            break;
        case 'D': cache_dir = optarg; break;
        case 'N': nocache = 1; break;
        case 'v': verbose = 1; break;
        case 'j': json = 1; break;
        case 'h': fputs(find_base_help, stdout); return 0;
        case ':': return usage_error("find-base", "option '%s' needs a value", argv[optind - 1]);
        default: return usage_error("find-base", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage_error("find-base", "missing FILE");
    if (optind + 1 >= argc) return usage_error("find-base", "missing DIR (the candidate base directories)");
    if (nocache && cache_dir) return usage_error("find-base", "--cache-dir and --no-cache do not go together");
    const char *path = argv[optind];
    int nrc;
    if ((nrc = need_input(NULL, path, 'f')) || (nrc = need_chain_inputs(ca.paths, ca.n))) return nrc;
    char cbuf[PATH_MAX];
    if (!nocache && !cache_dir) cache_dir = wd_digest_cache_dir(cbuf, sizeof cbuf);
    wd_err err = {0};
    wd_delta *d = NULL;
    wd_chain *chain = NULL;
    if (wd_delta_open(path, &d, &err)) return fail(&err);
    const wd_delta_info *in = wd_delta_get_info(d);
    if (in->version == 2 && (in->parent_name || in->parent_depth)) {
        /* a chain link: its base is the model its parent rebuilds; the
         * chain's root holds the base directory's hash */
        wd_delta_close(d);
        d = NULL;
        if (wd_chain_open(path, ca.paths, ca.n, NULL, NULL, &chain, &err)) return fail(&err);
        in = wd_delta_get_info(wd_chain_link(chain, 0));
        if (in->parent_name || in->parent_depth) {
            wd_errk(&err, WD_ERR_MISSING,
                    "%s is a chain link whose parent %s (depth %u) is not found, so its base is not known (put the "
                    "parent beside it, or name its directory with --chain DIR)",
                    wd_delta_path(wd_chain_link(chain, 0)), in->parent_name ? in->parent_name : "(name not recorded)",
                    in->parent_depth);
            wd_chain_close(chain);
            return fail(&err);
        }
    }
    unsigned char bh[32];
    unsigned kind = in->base_hash_kind;
    memcpy(bh, in->base_hash, 32);
    size_t ndirs = (size_t)(argc - optind - 1);
    find_ctx fc = {(const char *const *)argv + optind + 1, NULL, verbose, calloc(ndirs, 1)};
    if (!fc.match) {
        if (d) wd_delta_close(d);
        wd_chain_close(chain);
        return fail(&(wd_err){.msg = "out of memory"});
    }
    cJSON *root = NULL;
    if (json) {
        root = cJSON_CreateObject();
        if (root) {
            json_add_str(root, "file", path);
            json_add_hash(root, "base_hash", bh);
            json_add_str(root, "base_hash_kind", wd_hash_kind_name(kind));
            fc.cands = cJSON_AddArrayToObject(root, "candidates");
        }
        if (!fc.cands) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    size_t found;
    int rc = wd_find_base(bh, kind, fc.dirs, ndirs, cache_dir, find_cb, &fc, &found, &err);
    if (d) wd_delta_close(d);
    wd_chain_close(chain);
    int prc = 0;
    if (json) {
        if (root) {
            json_add_str(root, "base", rc ? NULL : fc.dirs[found]);
            cJSON *all = cJSON_AddArrayToObject(root, "bases");
            for (size_t i = 0; all && i < ndirs; i++)
                if (fc.match[i]) cJSON_AddItemToArray(all, json_str(fc.dirs[i]));
        }
        prc = json_print(root);
    } else
        for (size_t i = 0; i < ndirs; i++)
            if (fc.match[i]) printf("%s\n", fc.dirs[i]);
    free(fc.match);
    return rc ? fail(&err) : prc;
}

/* ------------------------------------------------------------ chains: inspect */
static const char inspect_chain_help[] =
    "usage: wdelta inspect --chain [--json] FILE...\n"
    "       wdelta inspect --chain [--json] DIR\n"
    "\n"
    "Describe a chain of deltas, one link a line: codec, stored and output sizes,\n"
    "base and result hashes, and whether each link's base is the model the link\n"
    "before it rebuilds.  Several FILEs are taken in the order given (root first)\n"
    "and must connect; one FILE is followed down through the deltas of its own\n"
    "directory; a DIR shows every chain (a forest) among its .wdelta files.\n"
    "With --json: one object, \"links\" (root first; each with \"path\",\n"
    "\"format_version\", \"strategy\", \"codecs\", \"delta_bytes\", \"output_bytes\",\n"
    "\"base_hash\", \"result_hash\", \"parent_name\", \"parent_depth\", \"note\"; for a\n"
    "DIR also \"chain\" and \"depth\"), then \"connected\" and \"break_at\" (FILEs)\n"
    "or \"deltas\" and \"chains\" (a DIR).\n";

static void inspect_chain_usage(void)
{
    fputs("\n", stdout);
    fputs(inspect_chain_help, stdout);
}

static void codecs_used(const wd_delta_info *in, char *out, size_t n)
{
    int used[32] = {0};
    size_t len = (size_t)snprintf(out, n, "%s", in->strategy ? in->strategy : "?");
    for (size_t f = 0; f < in->nfiles; f++)
        for (size_t k = 0; k < in->files[f].nextents; k++) used[in->files[f].extents[k].codec & 31] = 1;
    const char *sep = " (";
    for (int c = 0; c < 32 && len + 1 < n; c++)
        if (used[c]) {
            len += (size_t)snprintf(out + len, n - len, "%s%s", sep, wd_codec_name((wd_codec)c));
            sep = ",";
        }
    if (len + 2 < n && sep[0] == ',') snprintf(out + len, n - len, ")");
}

/* What the first link found says about its source: a base model, or (a
 * chain link whose parent was not found) the parent it records. */
static const char *root_note(wd_delta *d, const char *why, char *buf, size_t n)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    if (in->parent_name || in->parent_depth)
        snprintf(buf, n,
                 "PARENT MISSING: a chain link (depth %u) made against what %s rebuilds, which is not found "
                 "(put it beside this file, or name its directory with --chain DIR)",
                 in->parent_depth, in->parent_name ? in->parent_name : "its parent (name not recorded)");
    else
        snprintf(buf, n, "root: made against a base model (%s)", why);
    return buf;
}

static void print_link(const char *indent, size_t k, wd_delta *d, const char *connects)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    char codecs[128], st[32], out[32], bh[65], rh[65];
    codecs_used(in, codecs, sizeof codecs);
    human(in->file_size, st, sizeof st);
    human(in->output_size, out, sizeof out);
    wd_hex(in->base_hash, 32, bh);
    wd_hex(in->result_hash, 32, rh);
    printf("%s%zu. %s\n", indent, k, wd_delta_path(d));
    printf("%s   codec %s, stored %s, output %s, ratio %.3fx\n", indent, codecs, st, out,
           in->file_size ? (double)in->output_size / (double)in->file_size : 0.0);
    printf("%s   base   %s\n", indent, bh);
    if (in->version == 2) printf("%s   result %s\n", indent, rh);
    else printf("%s   result (not recorded: deltatensors v1)\n", indent);
    printf("%s   %s\n", indent, connects);
}

/* inspect --chain --json: one link */
static cJSON *link_json(wd_delta *d, const char *note)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    cJSON *x = cJSON_CreateObject();
    if (!x) return NULL;
    json_add_str(x, "path", wd_delta_path(d));
    cJSON_AddNumberToObject(x, "format_version", in->version);
    json_add_str(x, "strategy", in->strategy ? in->strategy : "");
    int used[32] = {0};
    cJSON *codecs = cJSON_AddArrayToObject(x, "codecs");
    for (size_t f = 0; f < in->nfiles; f++)
        for (size_t k = 0; k < in->files[f].nextents; k++) used[in->files[f].extents[k].codec & 31] = 1;
    for (int c = 0; c < 32; c++)
        if (used[c]) cJSON_AddItemToArray(codecs, json_str(wd_codec_name((wd_codec)c)));
    cJSON_AddNumberToObject(x, "delta_bytes", (double)in->file_size);
    cJSON_AddNumberToObject(x, "output_bytes", (double)in->output_size);
    json_add_hash(x, "base_hash", in->base_hash);
    if (in->version == 2) json_add_hash(x, "result_hash", in->result_hash);
    else cJSON_AddNullToObject(x, "result_hash"); /* deltatensors v1 records none */
    json_add_str(x, "parent_name", in->parent_name);
    cJSON_AddNumberToObject(x, "parent_depth", in->parent_depth);
    json_add_str(x, "note", note);
    return x;
}

/* One delta of the forest's walk (wd_forest_walk): printed, or added to
 * links (--json) with its chain and depth. */
static void print_forest_link(wd_delta *d, unsigned depth, size_t chain, cJSON *links)
{
    char indent[80];
    int w = depth * 2 < 70 ? (int)depth * 2 : 70;
    memset(indent, ' ', (size_t)w);
    indent[w] = 0;
    char msg[600];
    if (depth == 0)
        root_note(d, "none of these deltas rebuilds its base", msg, sizeof msg);
    else
        snprintf(msg, sizeof msg, "connects: its base is what the link above rebuilds");
    if (links) {
        cJSON *x = link_json(d, msg);
        cJSON_AddNumberToObject(x, "chain", (double)chain);
        cJSON_AddNumberToObject(x, "depth", depth);
        cJSON_AddItemToArray(links, x);
    } else
        print_link(indent, (size_t)depth + 1, d, msg);
}

static int inspect_forest(const char *dir, int json)
{
    wd_err err = {0};
    wd_forest *f;
    if (wd_forest_open(dir, &f, &err)) {
        fprintf(stderr, "wdelta: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    for (size_t k = 0; k < wd_forest_unreadable(f); k++) {
        if (json) fprintf(stderr, "wdelta: unreadable: %s\n", wd_forest_unreadable_error(f, k));
        else printf("unreadable: %s\n", wd_forest_unreadable_error(f, k));
        rc = 1;
    }
    cJSON *root = NULL, *links = NULL;
    if (json) {
        root = cJSON_CreateObject();
        links = root ? cJSON_AddArrayToObject(root, "links") : NULL;
    }
    size_t nw;
    const wd_forest_entry *w = wd_forest_walk(f, &nw);
    for (size_t i = 0; (!json || links) && i < nw; i++) {
        if (w[i].depth == 0 && !json) {
            if (w[i].loop)
                printf("chain %zu (a loop: each of its links rebuilds the base of another, so the root is not known):\n",
                       w[i].chain);
            else
                printf("chain %zu:\n", w[i].chain);
        }
        print_forest_link(wd_forest_delta(f, w[i].delta), w[i].depth, w[i].chain, links);
    }
    if (json) {
        if (!links) {
            rc = 1;
            cJSON_Delete(root);
            fprintf(stderr, "wdelta: out of memory\n");
        } else {
            cJSON_AddNumberToObject(root, "deltas", (double)wd_forest_size(f));
            cJSON_AddNumberToObject(root, "chains", (double)wd_forest_chains(f));
            if (json_print(root)) rc = 1;
        }
    } else
        printf("%zu deltas, %zu chains\n", wd_forest_size(f), wd_forest_chains(f));
    wd_forest_close(f);
    return rc;
}

static int inspect_chain(int argc, char **argv, int json)
{
    int nfiles = argc;
    if (nfiles == 1) {
        struct stat st;
        if (stat(argv[0], &st) == 0 && S_ISDIR(st.st_mode)) return inspect_forest(argv[0], json);
        wd_err err = {0};
        wd_chain *c = NULL;
        if (wd_chain_open(argv[0], NULL, 0, NULL, NULL, &c, &err)) return fail(&err);
        size_t n = wd_chain_length(c);
        char note[600];
        if (json) {
            cJSON *root = cJSON_CreateObject(), *links = root ? cJSON_AddArrayToObject(root, "links") : NULL;
            for (size_t i = 0; links && i < n; i++)
                cJSON_AddItemToArray(links, link_json(wd_chain_link(c, i),
                                                      i ? "connects: its base is what the link above rebuilds"
                                                        : root_note(wd_chain_link(c, 0),
                                                                    "no delta beside it rebuilds its base", note,
                                                                    sizeof note)));
            if (root) cJSON_AddBoolToObject(root, "connected", 1);
            wd_chain_close(c);
            return json_print(root);
        }
        printf("chain of %zu link%s, root first:\n", n, n == 1 ? "" : "s");
        for (size_t i = 0; i < n; i++)
            print_link("", i + 1, wd_chain_link(c, i),
                       i ? "connects: its base is what link above rebuilds"
                         : root_note(wd_chain_link(c, 0), "no delta beside it rebuilds its base", note, sizeof note));
        wd_chain_close(c);
        return 0;
    }
    wd_delta **d = calloc((size_t)nfiles, sizeof *d);
    if (!d) return fail(&(wd_err){.msg = "out of memory"});
    int rc = 0;
    wd_err err = {0};
    for (int i = 0; i < nfiles; i++)
        if (wd_delta_open(argv[i], &d[i], &err)) {
            rc = fail(&err);
            goto out;
        }
    size_t bad = wd_chain_check_order(d, (size_t)nfiles);
    cJSON *root = NULL, *links = NULL;
    if (json) {
        root = cJSON_CreateObject();
        links = root ? cJSON_AddArrayToObject(root, "links") : NULL;
        if (!links) {
            cJSON_Delete(root);
            rc = json_print(NULL);
            goto out;
        }
    } else
        printf("chain of %d links, in the order given:\n", nfiles);
    for (int i = 0; i < nfiles; i++) {
        const char *note = i == 0                ? "root"
                           : (size_t)i < bad    ? "connects: its base is what the link above rebuilds"
                           : (size_t)i == bad   ? "DOES NOT CONNECT to the link above"
                                                : "(after a break)";
        if (links) cJSON_AddItemToArray(links, link_json(d[i], note));
        else print_link("", (size_t)i + 1, d[i], note);
    }
    if (root) {
        cJSON_AddBoolToObject(root, "connected", bad >= (size_t)nfiles);
        if (bad < (size_t)nfiles) cJSON_AddNumberToObject(root, "break_at", (double)bad);
        else cJSON_AddNullToObject(root, "break_at");
        if (json_print(root)) rc = 1;
    }
    if (bad < (size_t)nfiles) {
        /* would another order connect?  (the files given in the wrong order) */
        /* another order connects when exactly one link has no parent among them */
        int roots = 0;
        for (int i = 0; i < nfiles; i++) {
            int found = 0;
            for (int j = 0; j < nfiles; j++)
                if (j != i && !memcmp(wd_delta_get_info(d[j])->result_hash, wd_delta_get_info(d[i])->base_hash, 32))
                    found = 1;
            roots += !found;
        }
        int reorder = roots == 1;
        char a[17], b[17];
        wd_hex(wd_delta_get_info(d[bad])->base_hash, 8, a);
        wd_hex(wd_delta_get_info(d[bad - 1])->result_hash, 8, b);
        fprintf(stderr, "wdelta: links do not connect: %s was made against the model %s..., but %s rebuilds %s...%s\n",
                argv[bad], a, argv[bad - 1], b,
                reorder ? " (wrong order? give the links root first)" : " (a link is missing)");
        rc = 1;
    }
out:
    for (int i = 0; i < nfiles; i++) wd_delta_close(d[i]);
    free(d);
    return rc;
}

/* ------------------------------------------------------------ rebase / convert */
static const char rebase_help[] =
    "usage: wdelta rebase FILE --base DIR -o OUT.wdelta [--chain PATH]... [options]\n"
    "\n"
    "Flatten a chain link: store the model FILE rebuilds (through its parents)\n"
    "as a direct delta against the base DIR.  The model is rebuilt into a\n"
    "temporary directory next to OUT, removed when done.\n"
    "\n"
    "  -b, --base DIR          the base at the root of FILE's chain\n"
    "  -o, --output FILE       the .wdelta to write\n"
    "  -c, --chain PATH        where FILE's parent links are (a .wdelta or a\n"
    "                          directory; repeatable; default: FILE's directory)\n"
    "  -t, --threads N         worker threads (default: online CPUs)\n"
    "  -l, --level N           zstd level 1..22 (default 3)\n"
    "      --force             replace OUT if it is a .wdelta (keeping its mode)\n"
    "  -q, --quiet             no progress output\n"
    "  -h, --help              this help\n";

static const char convert_help[] =
    "usage: wdelta convert IN.wdelta --base DIR -o OUT.wdelta [--base-dtype] [options]\n"
    "\n"
    "Rewrite a deltatensors (version 1) file as a version 2 delta against DIR\n"
    "whose rebuilt files are byte-identical to what `wdelta apply IN` writes:\n"
    "tensors as float32 (default) or, with --base-dtype, in the base's dtype.\n"
    "\n"
    "  -b, --base DIR          the base model IN was made against\n"
    "  -o, --output FILE       the .wdelta to write\n"
    "      --base-dtype        present rebuilt tensors in the base's dtype\n"
    "  -t, --threads N         worker threads (default: online CPUs)\n"
    "  -l, --level N           zstd level 1..22 (default 3)\n"
    "      --force             replace OUT if it is a .wdelta (keeping its mode)\n"
    "  -q, --quiet             no progress output\n"
    "  -h, --help              this help\n";

static int flatten_cmd(int argc, char **argv, int convert)
{
    static const struct option lo[] = {
        {"base", required_argument, 0, 'b'},
        {"output", required_argument, 0, 'o'},
        {"chain", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'},
        {"level", required_argument, 0, 'l'},
        {"base-dtype", no_argument, 0, 'D'},
        {"force", no_argument, 0, 'F'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = convert ? "convert" : "rebase";
    wd_create_opts o;
    memset(&o, 0, sizeof o);
    o.strategy = "lossless";
    o.level = 3;
    int force = 0, quiet = 0, base_dtype = 0, c;
    long long v;
    static chain_args ca;
    ca.n = 0;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:o:c:t:l:qh", lo, NULL)) != -1) {
        switch (c) {
        case 'b': o.base_dir = optarg; break;
        case 'o': o.out_path = optarg; break;
        case 'c':
            if (convert) return usage_error(cmd, "unknown option '--chain'");
            if (chain_arg(&ca, cmd, optarg)) return EXIT_USAGE;
            break;
        case 't':
            if (parse_num(optarg, 0, 4096, 0, &v))
                return usage_error(cmd, "--threads: '%s' is not a number in 0..4096", optarg);
            o.threads = (int)v;
            break;
        case 'l':
            if (parse_num(optarg, 1, 22, 0, &v)) return usage_error(cmd, "--level: '%s' is not a number in 1..22", optarg);
            o.level = (int)v;
            break;
        case 'D':
            if (!convert) return usage_error(cmd, "unknown option '--base-dtype'");
            base_dtype = 1;
            break;
        case 'F': force = 1; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(convert ? convert_help : rebase_help, stdout); return 0;
        case ':': return usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage_error(cmd, "missing FILE");
    if (argc - optind > 1) return usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
    if (!o.base_dir) return usage_error(cmd, "missing --base DIR");
    if (!o.out_path) return usage_error(cmd, "missing -o OUT.wdelta");
    const char *path = argv[optind];
    int nrc;
    if ((nrc = need_input(NULL, path, 'f')) || (nrc = need_input("--base", o.base_dir, 'd')) ||
        (nrc = need_chain_inputs(ca.paths, ca.n)))
        return nrc;
    wd_err err = {0};
    unsigned keep_mode = 0;
    if (wd_output_check(o.out_path, force, &keep_mode, &err)) return fail(&err);
    wd_chain *chain = NULL;
    wd_delta *d = NULL;
    wd_model m;
    memset(&m, 0, sizeof m);
    int have_model = 0, rc = 1;
    if (convert) {
        if (wd_delta_open(path, &d, &err)) goto done;
        if (wd_delta_get_info(d)->version != 1) {
            wd_errf(&err, "%s is a version %u file; convert reads deltatensors version 1 files", path,
                    wd_delta_get_info(d)->version);
            goto done;
        }
        if (wd_model_open(o.base_dir, &m, &err)) goto done;
        have_model = 1;
        if (wd_delta_check_base(d, &m, &err)) goto done;
        wd_delta_v1_use_base_dtype(d, base_dtype);
        if (wd_delta_set_base(d, &m, &err)) goto done;
    } else {
        if (wd_chain_open(path, ca.paths, ca.n, o.base_dir, NULL, &chain, &err)) goto done;
    }
    wd_delta *src = convert ? d : wd_chain_top(chain);
    if (!quiet) fprintf(stderr, "%s: rebuilding %s, then storing it against %s\n", cmd, path, o.base_dir);
    progress pr;
    progress_init(&pr, cmd, quiet);
    o.progress = create_progress_cb;
    o.progress_ctx = &pr;
    wd_create_stats cs;
    memset(&cs, 0, sizeof cs);
    double t0 = now_s();
    o.stop = &stop_signal;
    catch_stop_signals();
    int frc = wd_flatten(src, &o, &cs, &err);
    progress_end(&pr, frc == 0);
    if (frc || wd_output_keep_mode(o.out_path, keep_mode, &err)) goto done;
    double el = now_s() - t0;
    char in[32], out[32];
    human(cs.input_bytes, in, sizeof in);
    human(cs.output_bytes, out, sizeof out);
    printf("%s %s -> %s: input %s, delta %s, ratio %.3fx, %.2f s", convert ? "converted" : "rebased", path,
           o.out_path, in, out, cs.output_bytes ? (double)cs.input_bytes / (double)cs.output_bytes : 0.0, el);
    if (chain) printf(" (was link %zu of a chain)", wd_chain_length(chain));
    printf("\n");
    rc = 0;
done:
    if (rc) rc = fail(&err);
    wd_chain_close(chain);
    if (d) wd_delta_close(d);
    if (have_model) wd_model_free(&m);
    return rc;
}

static int cmd_rebase(int argc, char **argv)
{
    return flatten_cmd(argc, argv, 0);
}

static int cmd_convert(int argc, char **argv)
{
    return flatten_cmd(argc, argv, 1);
}

/* ------------------------------------------------------------ main */
static const char main_help[] =
    "usage: wdelta COMMAND [ARGS]\n"
    "\n"
    "Store fine-tuned models as deltas (lossless or lossy) against their base model.\n"
    "\n"
    "commands:\n"
    "  create   --base DIR --finetuned DIR -o OUT.wdelta   make a delta\n"
    "  inspect  FILE [--json]                             describe a delta\n"
    "  apply    FILE --base DIR -o OUTDIR                 rebuild the fine-tune\n"
    "  verify   FILE [--base DIR] [--json]                check checksums / hashes\n"
    "  eval     FILE --base DIR --finetuned DIR [--json]  error and bits/param per tensor\n"
    "  inspect  --chain FILE...|DIR [--json]              describe a chain of deltas\n"
    "  rebase   FILE --base DIR -o OUT.wdelta             flatten a chain link\n"
    "  convert  IN.v1.wdelta --base DIR -o OUT.wdelta     deltatensors v1 -> version 2\n"
    "  hash     DIR [--json]                              content hash of a model\n"
    "  find-base FILE DIR... [--json]                     which DIR is FILE's base\n"
    "\n"
    "  chains: create --parent PARENT.wdelta makes a link; apply, verify and rebase\n"
    "  find a link's parents by content hash (--chain PATH, default: its directory)\n"
    "\n"
    "  wdelta COMMAND --help   help for one command\n"
    "  create, inspect, verify, eval, hash: --json prints one JSON object\n"
    "  (sizes in *_bytes, times in seconds; names that are not UTF-8 have\n"
    "  U+FFFD there and their exact bytes in KEY_hex)\n"
    "\n"
    "  wdelta --version        print the version and the format versions read/written\n"
    "\n"
    "exit status:\n"
    "  0  success\n"
    "  1  bad or corrupt data, or another failure (the message says which)\n"
    "  2  usage error: an unknown or malformed option or argument, or options\n"
    "     that do not go together (e.g. --density without --strategy sparse)\n"
    "  3  a needed input is missing or is the wrong one (no such file or\n"
    "     directory, a file where a directory is wanted, a wrong base)\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(main_help, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V") || !strcmp(cmd, "version")) {
        printf("wdelta %s\n", WD_VERSION_STRING);
        printf(".wdelta format: reads versions %u (deltatensors) to %u, writes version %u\n", WD_FORMAT_READ_MIN,
               WD_FORMAT_READ_MAX, WD_FORMAT_WRITTEN);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"create", cmd_create}, {"inspect", cmd_inspect}, {"apply", cmd_apply},
        {"verify", cmd_verify}, {"hash", cmd_hash}, {"eval", cmd_eval},
        {"rebase", cmd_rebase}, {"convert", cmd_convert}, {"find-base", cmd_find_base},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (!strcmp(cmd, cmds[i].name)) {
            int rc = cmds[i].fn(argc - 1, argv + 1);
            if (fflush(stdout) != 0 || ferror(stdout)) {
                if (rc == 0) {
                    fprintf(stderr, "wdelta: error writing to standard output: %s\n", strerror(errno));
                    rc = 1;
                }
            }
            return rc;
        }
    }
    if (cmd[0] == '-') return usage_error(NULL, "unknown option '%s'", cmd);
    return usage_error(NULL, "unknown command '%s'", cmd);
}
