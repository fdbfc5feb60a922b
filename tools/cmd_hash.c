/* cmd_hash.c - wdelta hash: the content hash of a model directory. */
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

int cmd_hash(int argc, char **argv)
{
    static const struct option lo[] = {
        {"v1", no_argument, 0, '1'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c, v1 = 0, json = 0;
    opts_begin();
    while ((c = getopt_long(argc, argv, ":jh", lo, NULL)) != -1) {
        switch (c) {
        case '1': v1 = 1; break;
        case 'j': json = 1; break;
        case 'h': fputs(hash_help, stdout); return 0;
        default: return opt_error("hash", c, argv);
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

