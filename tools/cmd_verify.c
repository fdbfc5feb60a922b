/* cmd_verify.c - wdelta verify: checksums, and hashes against the base. */
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

int cmd_verify(int argc, char **argv)
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
    opts_begin();
    while ((c = getopt_long(argc, argv, ":b:c:qjh", lo, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (chain_arg(&ca, "verify", optarg)) return EXIT_USAGE;
            break;
        case 'b': base = optarg; break;
        case 'q': quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': fputs(verify_help, stdout); return 0;
        default: return opt_error("verify", c, argv);
        }
    }
    if (one_file_arg("verify", argc, argv)) return EXIT_USAGE;
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

