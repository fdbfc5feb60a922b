/* cmd_create.c - wdelta create: make a delta (or a chain link). */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"  /* fail, usage_error, need_input, progress, chain_args, ... */
#include "cmds.h" /* the commands' entry points */
#include "json.h" /* json_add_str, json_print, ... */
#include "wdelta.h"

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

int cmd_create(int argc, char **argv)
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
    opts_begin();
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
        default: return opt_error("create", c, argv);
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
    create_run cr;
    create_run_start(&cr, &o, "create", quiet);
    int rc = wd_create(&o, &cr.cs, &err);
    progress_end(&cr.pr, rc == 0);
    size_t links = chain ? wd_chain_length(chain) : 0;
    wd_chain_close(chain);
    if (rc || wd_output_keep_mode(o.out_path, keep_mode, &err)) return fail(&err);
    inputs_sum is;
    memset(&is, 0, sizeof is);
    for (int k = 0; json && k < 8; k++) is.names[k] = cJSON_CreateArray();
    wd_err ierr = {0};
    int irc = wd_create_inputs(o.ft_dir, o.out_path, o.exclude, o.nexclude, inputs_cb, &is, &ierr);
    if (json) {
        int jrc = create_json(o.out_path, parent, links, &cr.cs, now_s() - cr.t0, &is, !irc);
        for (int k = 0; k < 8; k++) {
            free(is.text[k]);
            cJSON_Delete(is.names[k]);
        }
        return jrc;
    }
    if (parent) printf("link %zu of a chain: made against the model %s rebuilds\n", links + 1, parent);
    double el = now_s() - cr.t0;
    char in[32], out[32];
    double ratio = create_run_sizes(&cr, in, out, sizeof in);
    printf("created %s: input %s, delta %s, ratio %.3fx, %zu tensors, %zu blocks, %.2f s, %.1f MB/s\n",
           o.out_path, in, out, ratio, cr.cs.ntensors, cr.cs.nblocks, el,
           el > 0 ? (double)cr.cs.input_bytes / 1e6 / el : 0.0);
    if (!irc) inputs_print(&is);
    for (int k = 0; k < 8; k++) free(is.text[k]);
    return 0;
}

