/* inputs.c - what `create` takes from a fine-tune directory (the input
 * policy; `wdelta create` prints it, wd_create applies it, Python's
 * save_delta goes through wd_create):
 *   - the safetensors weights: delta-coded;
 *   - model files (config, tokenizer, generation settings, chat template,
 *     README, custom code: *.json *.txt *.model *.tiktoken *.jinja *.md *.py,
 *     LICENSE*): stored whole;
 *   - any other file (pytorch_model.bin, *.pt, *.gguf...): stored whole and
 *     named in the summary, since it may be large and is not delta-coded;
 *   - left out: training state (optimizer, scheduler, scaler, RNG states,
 *     training arguments, trainer state, DeepSpeed's `latest` and
 *     zero_to_fp32.py), our own outputs (*.wdelta, the output file itself,
 *     temporaries NAME.tmp.XXXXXX), names matching an --exclude GLOB,
 *     subdirectories (a delta stores one flat directory), and entries that
 *     are not regular files or have names unsafe to serve. */
#include "model/model_int.h"
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const training_globs[] = {
    "optimizer*.pt", "optimizer*.bin", "optimizer*.pth", "scheduler*.pt", "scheduler*.bin", "scaler*.pt",
    "rng_state*.pth", "random_states*.pkl", "training_args.bin", "trainer_state.json", "latest",
    "zero_to_fp32.py",
};
static const char *const model_globs[] = {
    "*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.md", "*.py", "LICENSE*",
};

static int any_match(const char *const *globs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (globs[i] && fnmatch(globs[i], name, 0) == 0) return 1;
    return 0;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !memcmp(s + a - b, suf, b);
}

/* NAME.tmp.XXXXXX: a temporary of wd_create (mkstemp's six characters) */
static int our_temporary(const char *name)
{
    const char *p = strstr(name, ".tmp.");
    if (!p) return 0;
    while (p) { /* the last ".tmp." */
        const char *q = strstr(p + 1, ".tmp.");
        if (!q) break;
        p = q;
    }
    return strlen(p + 5) == 6;
}

wd_input_kind wd_input_classify(const char *name, int is_dir, const char *const *exclude, size_t nexclude)
{
    if (!wd_safe_name(name)) return WD_INPUT_SKIPPED;
    if (any_match(exclude, nexclude, name)) return WD_INPUT_EXCLUDED;
    if (is_dir) return WD_INPUT_SUBDIR;
    if (ends_with(name, ".wdelta") || our_temporary(name)) return WD_INPUT_OURS;
    if (any_match(training_globs, sizeof training_globs / sizeof *training_globs, name)) return WD_INPUT_TRAINING;
    if (any_match(model_globs, sizeof model_globs / sizeof *model_globs, name)) return WD_INPUT_STORED;
    return WD_INPUT_UNKNOWN;
}

const char *wd_input_kind_text(wd_input_kind k)
{
    switch (k) {
    case WD_INPUT_WEIGHTS: return "weights (delta-coded)";
    case WD_INPUT_STORED: return "model file (stored whole)";
    case WD_INPUT_UNKNOWN: return "stored whole: not a file this tool knows (no delta, full size)";
    case WD_INPUT_TRAINING: return "left out: training state";
    case WD_INPUT_OURS: return "left out: a delta or temporary file of this tool";
    case WD_INPUT_EXCLUDED: return "left out: --exclude";
    case WD_INPUT_SUBDIR: return "left out: a subdirectory (a delta stores one flat directory)";
    case WD_INPUT_SKIPPED: return "left out: not a regular file, or a name unsafe to serve";
    }
    return "?";
}

static int same_file(const struct stat *a, const char *path)
{
    struct stat b;
    return path && stat(path, &b) == 0 && a->st_dev == b.st_dev && a->st_ino == b.st_ino;
}

int wd_input_filter(wd_model *ft, const char *out_path, const char *const *exclude, size_t nexclude, wd_err *err)
{
    for (size_t i = 0; i < ft->nfiles; i++)
        if (any_match(exclude, nexclude, ft->files[i].name))
            return wd_errf(err, "%s/%s: an --exclude pattern matches this weights file (the model's "
                                "safetensors files cannot be left out)", ft->dir, ft->files[i].name);
    size_t k = 0;
    char path[4096];
    for (size_t i = 0; i < ft->nextras; i++) {
        const char *nm = ft->extras[i];
        wd_input_kind kind = wd_input_classify(nm, 0, exclude, nexclude);
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", ft->dir, nm);
        if ((kind == WD_INPUT_STORED || kind == WD_INPUT_UNKNOWN) && stat(path, &st) == 0 && same_file(&st, out_path))
            kind = WD_INPUT_OURS;
        if (kind == WD_INPUT_STORED || kind == WD_INPUT_UNKNOWN) ft->extras[k++] = ft->extras[i];
        else free(ft->extras[i]);
    }
    ft->nextras = k;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int wd_create_inputs(const char *ft_dir, const char *out_path, const char *const *exclude, size_t nexclude,
                     void (*cb)(void *ctx, const char *name, wd_input_kind kind, uint64_t size), void *ctx,
                     wd_err *err)
{
    wd_model m;
    if (wd_model_open(ft_dir, &m, err)) return -1;
    DIR *d = opendir(ft_dir);
    if (!d) {
        wd_model_free(&m);
        return wd_errf(err, "%s: %s", ft_dir, strerror(errno));
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno) rc = wd_errf(err, "%s: reading the directory: %s", ft_dir, strerror(errno));
            break;
        }
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **p = realloc(names, cap * sizeof *p);
            if (!p) {
                rc = wd_errf(err, "out of memory");
                break;
            }
            names = p;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = wd_errf(err, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (!rc && n) qsort(names, n, sizeof *names, cmp_name);
    char path[4096];
    for (size_t i = 0; !rc && i < n; i++) {
        const char *nm = names[i];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", ft_dir, nm);
        int ok = stat(path, &st) == 0;
        wd_input_kind kind;
        int is_weights = 0;
        for (size_t f = 0; f < m.nfiles; f++)
            if (!strcmp(m.files[f].name, nm)) is_weights = 1;
        if (is_weights) kind = WD_INPUT_WEIGHTS;
        else if (!ok || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) kind = WD_INPUT_SKIPPED;
        else kind = wd_input_classify(nm, S_ISDIR(st.st_mode), exclude, nexclude);
        if ((kind == WD_INPUT_STORED || kind == WD_INPUT_UNKNOWN) && same_file(&st, out_path)) kind = WD_INPUT_OURS;
        cb(ctx, nm, kind, ok && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    wd_model_free(&m);
    return rc;
}
