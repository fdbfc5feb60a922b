/* cmd_chain.c - wdelta inspect --chain: describe a chain of deltas, or the forest of a directory. */
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

void inspect_chain_usage(void)
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

int inspect_chain(int argc, char **argv, int json)
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

