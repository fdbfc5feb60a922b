/* cmd_eval.c - wdelta eval: error and bits per parameter, tensor by tensor. */
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

int cmd_eval(int argc, char **argv)
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
    opts_begin();
    while ((c = getopt_long(argc, argv, ":b:f:c:jh", lo, NULL)) != -1) {
        switch (c) {
        case 'b': base = optarg; break;
        case 'f': ftdir = optarg; break;
        case 'j': json = 1; break;
        case 'c':
            if (chain_arg(&ca, "eval", optarg)) return EXIT_USAGE;
            break;
        case 'h': fputs(eval_help, stdout); return 0;
        default: return opt_error("eval", c, argv);
        }
    }
    if (one_file_arg("eval", argc, argv)) return EXIT_USAGE;
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

