/* cmd_apply.c - wdelta apply: rebuild the fine-tuned model. */
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
    "  -t, --threads N     decoding threads (default: online CPUs)\n"
    "      --check-base    hash the whole base and compare it with the identity\n"
    "                      the delta records before decoding (default: each\n"
    "                      block's checksum checks the base bytes it uses, and\n"
    "                      the base is hashed only to explain a failure)\n"
    "      --base-dtype    deltatensors v1 files: write tensors in the base's dtype\n"
    "                      (default: float32, as the reference does)\n"
    "      --force         replace OUTDIR if it holds only files this delta\n"
    "                      rebuilds; anything else there is named and refused\n"
    "  -q, --quiet         no progress output\n"
    "  -h, --help          this help\n";

int cmd_apply(int argc, char **argv)
{
    static const struct option lo[] = {
        {"base", required_argument, 0, 'b'},
        {"output", required_argument, 0, 'o'},
        {"chain", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'},
        {"force", no_argument, 0, 'F'},
        {"base-dtype", no_argument, 0, 'D'},
        {"check-base", no_argument, 0, 'C'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *base = NULL, *out = NULL;
    int threads = 0, force = 0, quiet = 0, base_dtype = 0, check_base = 0, c;
    long long v;
    static chain_args ca;
    ca.n = 0;
    opts_begin();
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
        case 'C': check_base = 1; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(apply_help, stdout); return 0;
        default: return opt_error("apply", c, argv);
        }
    }
    if (one_file_arg("apply", argc, argv)) return EXIT_USAGE;
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
    /* every block wd_apply writes is decoded to its output checksum, which
     * checks the base bytes it used: the whole base is hashed only with
     * --check-base, or to say whether a failure was the base's */
    unsigned oflags = WD_OPEN_CHECK_V1 | (base_dtype ? WD_OPEN_V1_BASE_DTYPE : 0u) |
                      (check_base ? 0u : WD_OPEN_BLOCK_CHECKED_BASE);
    if (wd_open_with_base(path, ca.paths, ca.n, base, oflags, NULL, &chain, &err))
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
    if (arc) {
        wd_chain_check_base(chain, &err); /* a wrong base replaces the block's error */
        goto done;
    }
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

