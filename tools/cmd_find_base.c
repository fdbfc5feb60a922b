/* cmd_find_base.c - wdelta find-base: which directory is a delta's base. */
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

int cmd_find_base(int argc, char **argv)
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
    opts_begin();
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
        default: return opt_error("find-base", c, argv);
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

