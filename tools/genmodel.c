/* genmodel.c - deterministic generator of a demo base/fine-tune model pair.
 *
 *   genmodel OUTDIR [--params N] [--shards K] [--dtype bf16|f32|f16] [--seed S]
 *
 * Writes OUTDIR/base and OUTDIR/ft as Hugging Face model directories with a
 * Qwen2-like layout (embed, per-layer attention q/k/v/o with q/k/v biases,
 * MLP gate/up/down, RMS norms, untied lm_head).  The fine-tune is the base
 * plus a small gaussian-ish update (computed in float, rounded to the dtype),
 * plus one tensor that only the fine-tune has ("score.weight") and a changed
 * config.json.  Only IEEE arithmetic on a private PRNG is used, so the output
 * is the same on every machine.
 */
#include "wdelta.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ PRNG */
typedef struct rng { uint64_t s; } rng;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static void rng_seed(rng *r, uint64_t seed, const char *name, uint64_t stream)
{
    r->s = seed ^ fnv1a(name) ^ (stream * 0xD1B54A32D192ED03ULL);
    (void)splitmix64(&r->s);
}

/* uniform in [0,1) with 24 bits; one 64-bit draw gives two */
static float unif(rng *r, uint64_t *cache, int *left)
{
    if (*left == 0) {
        *cache = splitmix64(&r->s);
        *left = 2;
    }
    (*left)--;
    uint32_t v = (uint32_t)(*cache >> (*left ? 40 : 16)) & 0xFFFFFFu;
    return (float)v * (1.0f / 16777216.0f);
}

/* approximately N(0,1): Irwin-Hall sum of 4 uniforms, variance scaled to 1 */
typedef struct gauss { rng r; uint64_t cache; int left; } gauss;

static float gnext(gauss *g)
{
    float s = unif(&g->r, &g->cache, &g->left) + unif(&g->r, &g->cache, &g->left) +
              unif(&g->r, &g->cache, &g->left) + unif(&g->r, &g->cache, &g->left);
    return (s - 2.0f) * 1.7320508f; /* sqrt(12/4) */
}

/* ------------------------------------------------------------ dtypes */
static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7F800000u) == 0x7F800000u && (x & 0x7FFFFFu)) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7FFFu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) /* inf/nan */
        return (uint16_t)(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0));
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                    /* below 2^-14: subnormal */
        if (ax < 0x33000000u) return (uint16_t)sign;           /* < 2^-25: zero */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = (ax >> 23) - 127 + 15;
    uint32_t m = ax & 0x7FFFFFu;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rem = m & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FFu, x;
    if (e == 0) {
        if (m == 0) {
            x = sign;
        } else {
            e = 127 - 15 + 1;
            while (!(m & 0x400u)) {
                m <<= 1;
                e--;
            }
            x = sign | (e << 23) | ((m & 0x3FFu) << 13);
        }
    } else if (e == 31) {
        x = sign | 0x7F800000u | (m << 13);
    } else {
        x = sign | ((e - 15 + 127) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

typedef enum { DT_BF16, DT_F16, DT_F32 } gdt;

/* store f as dtype into p; return the stored value as float */
static float store(gdt t, float f, unsigned char *p)
{
    if (t == DT_F32) {
        memcpy(p, &f, 4);
        return f;
    }
    uint16_t h = t == DT_BF16 ? f32_to_bf16(f) : f32_to_f16(f);
    p[0] = (unsigned char)h;
    p[1] = (unsigned char)(h >> 8);
    return t == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

/* ------------------------------------------------------------ model plan */
typedef enum { INIT_NORMAL, INIT_ONES, INIT_BIAS } init_kind;

typedef struct gtensor {
    char name[128];
    int ndim;
    uint64_t shape[2];
    uint64_t nelem;
    init_kind init;
    float std;
    int shard;
} gtensor;

typedef struct plan {
    uint64_t vocab, hidden, inter, layers, heads, kv_heads, head_dim;
    size_t n;
    gtensor *t;
} plan;

static uint64_t per_layer(uint64_t h, uint64_t kv, uint64_t inter)
{
    return h * h + h        /* q */
           + 2 * (kv * h + kv) /* k, v */
           + h * h          /* o */
           + 3 * h * inter  /* gate, up, down */
           + 2 * h;         /* norms */
}

static void choose_dims(uint64_t params, plan *p)
{
    static const uint64_t hs[] = {64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096};
    uint64_t vocab = params < 2000000 ? 512 : params < 50000000 ? 4096 : 8192;
    uint64_t best_h = 64, best_l = 1;
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        uint64_t h = hs[i];
        uint64_t heads = h / 64 ? h / 64 : 1;
        uint64_t kvh = heads >= 2 ? heads / 2 : 1;
        uint64_t kv = kvh * 64;
        uint64_t inter = (h * 11 / 4 + 63) / 64 * 64;
        uint64_t fixed = 2 * vocab * h + h;
        uint64_t pl = per_layer(h, kv, inter);
        uint64_t l = params > fixed ? (params - fixed + pl / 2) / pl : 0;
        if (i == 0 || l >= 8) {
            best_h = h;
            best_l = l ? l : 1;
        }
    }
    p->vocab = vocab;
    p->hidden = best_h;
    p->heads = best_h / 64 ? best_h / 64 : 1;
    p->head_dim = best_h / p->heads;
    p->kv_heads = p->heads >= 2 ? p->heads / 2 : 1;
    p->inter = (best_h * 11 / 4 + 63) / 64 * 64;
    p->layers = best_l;
}

static gtensor *add(plan *p, const char *name, uint64_t d0, uint64_t d1, init_kind k, float std)
{
    gtensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->nelem = d1 ? d0 * d1 : d0;
    t->init = k;
    t->std = std;
    return t;
}

static int build_plan(plan *p)
{
    size_t cap = 3 + 12 * (size_t)p->layers;
    p->t = calloc(cap, sizeof *p->t);
    if (!p->t) return -1;
    uint64_t h = p->hidden, kv = p->kv_heads * p->head_dim, I = p->inter;
    char nm[128];
    add(p, "model.embed_tokens.weight", p->vocab, h, INIT_NORMAL, 0.02f);
    for (uint64_t l = 0; l < p->layers; l++) {
#define L(fmt) (snprintf(nm, sizeof nm, "model.layers.%" PRIu64 "." fmt, l), nm)
        add(p, L("input_layernorm.weight"), h, 0, INIT_ONES, 0.05f);
        add(p, L("self_attn.q_proj.weight"), h, h, INIT_NORMAL, 0.02f);
        add(p, L("self_attn.q_proj.bias"), h, 0, INIT_BIAS, 0.01f);
        add(p, L("self_attn.k_proj.weight"), kv, h, INIT_NORMAL, 0.02f);
        add(p, L("self_attn.k_proj.bias"), kv, 0, INIT_BIAS, 0.01f);
        add(p, L("self_attn.v_proj.weight"), kv, h, INIT_NORMAL, 0.02f);
        add(p, L("self_attn.v_proj.bias"), kv, 0, INIT_BIAS, 0.01f);
        add(p, L("self_attn.o_proj.weight"), h, h, INIT_NORMAL, 0.02f);
        add(p, L("post_attention_layernorm.weight"), h, 0, INIT_ONES, 0.05f);
        add(p, L("mlp.gate_proj.weight"), I, h, INIT_NORMAL, 0.02f);
        add(p, L("mlp.up_proj.weight"), I, h, INIT_NORMAL, 0.02f);
        add(p, L("mlp.down_proj.weight"), h, I, INIT_NORMAL, 0.02f);
#undef L
    }
    add(p, "model.norm.weight", h, 0, INIT_ONES, 0.05f);
    add(p, "lm_head.weight", p->vocab, h, INIT_NORMAL, 0.02f);
    return 0;
}

/* ------------------------------------------------------------ writing */
typedef struct gen {
    gdt dt;
    const char *dtname;     /* safetensors dtype string */
    const char *torch_name; /* config torch_dtype */
    unsigned esz;
    uint64_t seed;
    float upd;              /* update std relative to the tensor's scale */
} gen;

static int write_all(FILE *f, const void *p, size_t n, const char *path)
{
    if (n && fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "genmodel: write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Generate tensor t's base and ft bytes into bb/fb (nelem*esz each). */
static void gen_tensor(const gen *g, const gtensor *t, unsigned char *bb, unsigned char *fb)
{
    gauss gb = {{0}, 0, 0}, gu = {{0}, 0, 0};
    rng_seed(&gb.r, g->seed, t->name, 1);
    rng_seed(&gu.r, g->seed, t->name, 2);
    /* a per-tensor update scale in [0.5, 1.5) x upd: tensors change by different amounts */
    rng tr;
    rng_seed(&tr, g->seed, t->name, 3);
    float tscale = 0.5f + (float)(splitmix64(&tr.s) >> 40) * (1.0f / 16777216.0f);
    float ustd = g->upd * tscale * t->std;
    for (uint64_t i = 0; i < t->nelem; i++) {
        float v;
        switch (t->init) {
        case INIT_ONES: v = 1.0f + t->std * gnext(&gb); break;
        case INIT_BIAS: v = t->std * gnext(&gb); break;
        default: v = t->std * gnext(&gb); break;
        }
        float b = store(g->dt, v, bb + i * g->esz);
        float u = ustd * gnext(&gu);
        store(g->dt, b + u, fb + i * g->esz);
    }
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "genmodel: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = write_all(f, text, strlen(text), path);
    if (fclose(f) && !rc) {
        fprintf(stderr, "genmodel: close %s: %s\n", path, strerror(errno));
        rc = -1;
    }
    return rc;
}

static int write_configs(const char *dir, const plan *p, const gen *g, int is_ft)
{
    char path[4096], buf[4096];
    snprintf(buf, sizeof buf,
             "{\n"
             "  \"_name_or_path\": \"genmodel/%s\",\n"
             "  \"architectures\": [\n    \"Qwen2ForCausalLM\"\n  ],\n"
             "  \"attention_dropout\": 0.0,\n"
             "  \"bos_token_id\": 1,\n"
             "  \"eos_token_id\": 2,\n"
             "  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": %" PRIu64 ",\n"
             "  \"initializer_range\": 0.02,\n"
             "  \"intermediate_size\": %" PRIu64 ",\n"
             "  \"max_position_embeddings\": 2048,\n"
             "  \"max_window_layers\": %" PRIu64 ",\n"
             "  \"model_type\": \"qwen2\",\n"
             "  \"num_attention_heads\": %" PRIu64 ",\n"
             "  \"num_hidden_layers\": %" PRIu64 ",\n"
             "  \"num_key_value_heads\": %" PRIu64 ",\n"
             "  \"rms_norm_eps\": 1e-06,\n"
             "  \"rope_theta\": 10000.0,\n"
             "  \"sliding_window\": null,\n"
             "  \"tie_word_embeddings\": false,\n"
             "  \"torch_dtype\": \"%s\",\n"
             "  \"transformers_version\": \"4.44.0\",\n"
             "  \"use_cache\": %s,\n"
             "  \"use_sliding_window\": false,\n"
             "  \"vocab_size\": %" PRIu64 "\n"
             "}\n",
             is_ft ? "ft" : "base", p->hidden, p->inter, p->layers, p->heads, p->layers,
             p->kv_heads, g->torch_name, is_ft ? "false" : "true", p->vocab);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (write_text(path, buf)) return -1;
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (write_text(path, "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
                         "  \"max_new_tokens\": 256,\n  \"transformers_version\": \"4.44.0\"\n}\n"))
        return -1;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    snprintf(buf, sizeof buf,
             "{\n  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n"
             "  \"bos_token\": \"<|bos|>\",\n  \"clean_up_tokenization_spaces\": false,\n"
             "  \"eos_token\": \"<|eos|>\",\n  \"model_max_length\": 2048,\n"
             "  \"pad_token\": \"<|pad|>\",\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
             "  \"vocab_size\": %" PRIu64 "\n}\n",
             p->vocab);
    return write_text(path, buf);
}

static int cmp_name(const void *a, const void *b)
{
    const gtensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Write one model directory's shards.  extra: the ft-only tensor or NULL
 * (goes into the last shard). */
static int write_shards(const char *dir, const plan *p, const gen *g, int nshards, int is_ft,
                        const gtensor *extra)
{
    int rc = -1;
    size_t total_n = p->n + (extra ? 1 : 0);
    const gtensor **order = calloc(total_n, sizeof *order);
    wd_tensor *wt = calloc(total_n, sizeof *wt);
    const char **fname_of = calloc(total_n, sizeof *fname_of);
    char(*fnames)[64] = calloc((size_t)nshards, sizeof *fnames);
    unsigned char *bb = NULL, *fb = NULL;
    uint64_t maxel = 0, total_bytes = 0;
    if (!order || !wt || !fname_of || !fnames) goto out;
    for (size_t i = 0; i < p->n; i++)
        if (p->t[i].nelem > maxel) maxel = p->t[i].nelem;
    if (extra && extra->nelem > maxel) maxel = extra->nelem;
    bb = malloc(maxel * g->esz);
    fb = malloc(maxel * g->esz);
    if (!bb || !fb) goto out;

    for (int s = 0; s < nshards; s++) {
        if (nshards == 1)
            snprintf(fnames[s], sizeof fnames[s], "model.safetensors");
        else
            snprintf(fnames[s], sizeof fnames[s], "model-%05d-of-%05d.safetensors", s + 1, nshards);
        size_t k = 0;
        for (size_t i = 0; i < p->n; i++)
            if (p->t[i].shard == s) order[k++] = &p->t[i];
        if (extra && s == nshards - 1) order[k++] = extra;
        qsort(order, k, sizeof *order, cmp_name);
        for (size_t i = 0; i < k; i++) {
            memset(&wt[i], 0, sizeof wt[i]);
            wt[i].name = (char *)order[i]->name;
            snprintf(wt[i].dtype_name, sizeof wt[i].dtype_name, "%s", g->dtname);
            wt[i].dtype = wd_dtype_from_name(g->dtname);
            wt[i].ndim = order[i]->ndim;
            wt[i].shape = (uint64_t *)order[i]->shape;
            wt[i].nelem = order[i]->nelem;
            wt[i].length = order[i]->nelem * g->esz;
        }
        unsigned char *hdr = NULL;
        size_t hlen = 0;
        wd_err err = {0};
        if (wd_st_build_header(wt, k, "{\"format\":\"pt\"}", &hdr, &hlen, &err)) {
            fprintf(stderr, "genmodel: %s\n", err.msg);
            goto out;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, fnames[s]);
        FILE *f = fopen(path, "wb");
        if (!f) {
            fprintf(stderr, "genmodel: cannot create %s: %s\n", path, strerror(errno));
            free(hdr);
            goto out;
        }
        int bad = write_all(f, hdr, hlen, path);
        free(hdr);
        for (size_t i = 0; i < k && !bad; i++) {
            gen_tensor(g, order[i], bb, fb);
            bad = write_all(f, is_ft ? fb : bb, order[i]->nelem * g->esz, path);
            total_bytes += order[i]->nelem * g->esz;
        }
        if (fclose(f) && !bad) {
            fprintf(stderr, "genmodel: close %s: %s\n", path, strerror(errno));
            bad = 1;
        }
        if (bad) goto out;
    }

    if (nshards > 1) {
        /* index.json: weight_map sorted by name, like transformers writes it */
        size_t k = 0;
        for (size_t i = 0; i < p->n; i++) {
            order[k] = &p->t[i];
            fname_of[k++] = fnames[p->t[i].shard];
        }
        if (extra) {
            order[k] = extra;
            fname_of[k++] = fnames[nshards - 1];
        }
        /* sort order and fname_of together */
        for (size_t i = 1; i < k; i++) {
            const gtensor *t = order[i];
            const char *fn = fname_of[i];
            size_t j = i;
            while (j > 0 && strcmp(order[j - 1]->name, t->name) > 0) {
                order[j] = order[j - 1];
                fname_of[j] = fname_of[j - 1];
                j--;
            }
            order[j] = t;
            fname_of[j] = fn;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        FILE *f = fopen(path, "w");
        if (!f) {
            fprintf(stderr, "genmodel: cannot create %s: %s\n", path, strerror(errno));
            goto out;
        }
        fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64 "\n  },\n  \"weight_map\": {\n",
                total_bytes);
        for (size_t i = 0; i < k; i++)
            fprintf(f, "    \"%s\": \"%s\"%s\n", order[i]->name, fname_of[i], i + 1 < k ? "," : "");
        fprintf(f, "  }\n}\n");
        if (ferror(f) | fclose(f)) {
            fprintf(stderr, "genmodel: write %s failed\n", path);
            goto out;
        }
    }
    rc = 0;
out:
    free(order);
    free(wt);
    free(fname_of);
    free(fnames);
    free(bb);
    free(fb);
    return rc;
}

static int mkdir_p1(const char *p)
{
    if (mkdir(p, 0755) && errno != EEXIST) {
        fprintf(stderr, "genmodel: cannot create %s: %s\n", p, strerror(errno));
        return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: genmodel OUTDIR [--params N] [--shards K] [--dtype bf16|f32|f16] [--seed S]\n"
          "\n"
          "Writes a deterministic demo pair OUTDIR/base and OUTDIR/ft (Qwen2-like\n"
          "Hugging Face layout).  Defaults: --params 8M --shards 2 --dtype bf16 --seed 1.\n"
          "N accepts k/M/G suffixes (decimal).\n",
          f);
}

static int parse_u64(const char *s, uint64_t *out, int suffix)
{
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-') return -1;
    if (suffix && *end) {
        uint64_t m = *end == 'k' || *end == 'K' ? 1000ULL
                     : *end == 'M' || *end == 'm' ? 1000000ULL
                     : *end == 'G' || *end == 'g' ? 1000000000ULL : 0;
        if (!m || end[1]) return -1;
        v *= m;
        end++;
    }
    if (*end) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"params", required_argument, 0, 'p'},
        {"shards", required_argument, 0, 'k'},
        {"dtype", required_argument, 0, 'd'},
        {"seed", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    uint64_t params = 8000000, shards = 2, seed = 1;
    const char *dtype = "bf16";
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":p:k:d:s:h", lo, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (parse_u64(optarg, &params, 1) || params < 1000 || params > 100000000000ULL) {
                fprintf(stderr, "genmodel: --params: '%s' is not a count in 1000..1e11\n", optarg);
                return 2;
            }
            break;
        case 'k':
            if (parse_u64(optarg, &shards, 0) || shards < 1 || shards > 999) {
                fprintf(stderr, "genmodel: --shards: '%s' is not in 1..999\n", optarg);
                return 2;
            }
            break;
        case 'd': dtype = optarg; break;
        case 's':
            if (parse_u64(optarg, &seed, 0)) {
                fprintf(stderr, "genmodel: --seed: '%s' is not a number\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "genmodel: bad option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 1) {
        usage(stderr);
        return 2;
    }
    const char *outdir = argv[optind];
    gen g;
    memset(&g, 0, sizeof g);
    g.seed = seed;
    /* update scale: about one unit in the last place of the dtype so that
     * most (not all) stored values change, as in a full fine-tune */
    if (!strcmp(dtype, "bf16")) {
        g.dt = DT_BF16, g.dtname = "BF16", g.torch_name = "bfloat16", g.esz = 2, g.upd = 1.2e-2f;
    } else if (!strcmp(dtype, "f16")) {
        g.dt = DT_F16, g.dtname = "F16", g.torch_name = "float16", g.esz = 2, g.upd = 1.5e-3f;
    } else if (!strcmp(dtype, "f32")) {
        g.dt = DT_F32, g.dtname = "F32", g.torch_name = "float32", g.esz = 4, g.upd = 1e-3f;
    } else {
        fprintf(stderr, "genmodel: --dtype must be bf16, f16 or f32, not '%s'\n", dtype);
        return 2;
    }

    plan p;
    memset(&p, 0, sizeof p);
    choose_dims(params, &p);
    if (build_plan(&p)) {
        fprintf(stderr, "genmodel: out of memory\n");
        return 1;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < p.n; i++) total += p.t[i].nelem;
    if (shards > p.n) shards = p.n;
    /* contiguous split in model order with about equal bytes per shard */
    uint64_t acc = 0;
    for (size_t i = 0; i < p.n; i++) {
        uint64_t s = (acc + p.t[i].nelem / 2) * shards / total;
        if (s >= shards) s = shards - 1;
        p.t[i].shard = (int)s;
        acc += p.t[i].nelem;
    }
    gtensor extra;
    memset(&extra, 0, sizeof extra);
    snprintf(extra.name, sizeof extra.name, "score.weight");
    extra.ndim = 2;
    extra.shape[0] = 2;
    extra.shape[1] = p.hidden;
    extra.nelem = 2 * p.hidden;
    extra.init = INIT_NORMAL;
    extra.std = 0.02f;

    char bdir[4096], fdir[4096];
    snprintf(bdir, sizeof bdir, "%s/base", outdir);
    snprintf(fdir, sizeof fdir, "%s/ft", outdir);
    int rc = 1;
    if (mkdir_p1(outdir) || mkdir_p1(bdir) || mkdir_p1(fdir)) goto out;
    if (write_configs(bdir, &p, &g, 0) || write_configs(fdir, &p, &g, 1)) goto out;
    if (write_shards(bdir, &p, &g, (int)shards, 0, NULL)) goto out;
    if (write_shards(fdir, &p, &g, (int)shards, 1, &extra)) goto out;
    printf("genmodel: %s/{base,ft}: %" PRIu64 " params (+%" PRIu64 " ft-only), %s, %" PRIu64
           " layers, hidden %" PRIu64 ", vocab %" PRIu64 ", %d shard(s)\n",
           outdir, total, extra.nelem, g.dtname, p.layers, p.hidden, p.vocab, (int)shards);
    rc = 0;
out:
    free(p.t);
    return rc;
}
