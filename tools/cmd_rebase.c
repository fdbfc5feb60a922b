/* cmd_rebase.c - wdelta rebase and convert: flatten a chain link, deltatensors v1 -> v2. */
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
    opts_begin();
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
        default: return opt_error(cmd, c, argv);
        }
    }
    if (one_file_arg(cmd, argc, argv)) return EXIT_USAGE;
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
    create_run cr;
    create_run_start(&cr, &o, cmd, quiet);
    int frc = wd_flatten(src, &o, &cr.cs, &err);
    progress_end(&cr.pr, frc == 0);
    if (frc || wd_output_keep_mode(o.out_path, keep_mode, &err)) goto done;
    double el = now_s() - cr.t0;
    char in[32], out[32];
    double ratio = create_run_sizes(&cr, in, out, sizeof in);
    printf("%s %s -> %s: input %s, delta %s, ratio %.3fx, %.2f s", convert ? "converted" : "rebased", path,
           o.out_path, in, out, ratio, el);
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

int cmd_rebase(int argc, char **argv)
{
    return flatten_cmd(argc, argv, 0);
}

int cmd_convert(int argc, char **argv)
{
    return flatten_cmd(argc, argv, 1);
}

