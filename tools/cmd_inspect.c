/* cmd_inspect.c - wdelta inspect FILE: describe one delta. */
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

int cmd_inspect(int argc, char **argv)
{
    static const struct option lo[] = {
        {"json", no_argument, 0, 'j'},
        {"chain", no_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int json = 0, chain = 0, c;
    opts_begin();
    while ((c = getopt_long(argc, argv, ":jch", lo, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'c': chain = 1; break;
        case 'h':
            fputs(inspect_help, stdout);
            inspect_chain_usage();
            return 0;
        default: return opt_error("inspect", c, argv);
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

