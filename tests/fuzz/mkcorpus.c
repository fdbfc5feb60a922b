/* mkcorpus.c - writes the fuzz_codec seed inputs (encoded blocks of a few
 * dtypes, and round-trip inputs) into the directory given.  Built and run
 * by tests/fuzz/mkcorpus.sh; the corpus is committed, this is how it was made. */
#include "fuzz_common.h" /* fuzz_fill_base: the same bases the harness derives */
#include "codec/lossy.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(const char *dir, const char *name, const unsigned char *hdr, size_t hl, const unsigned char *p,
                size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(hdr, 1, hl, f) != hl || fwrite(p, 1, n, f) != n || fclose(f)) {
        perror(path);
        exit(1);
    }
}

/* rows x cols bf16 values of tensor `name` of the model in dir, from its
 * first element; NULL (message printed) if missing */
static uint16_t *read_bf16(const char *dir, const char *name, size_t rows, size_t cols)
{
    wd_model m;
    wd_err err;
    if (wd_model_open(dir, &m, &err)) {
        fprintf(stderr, "mkcorpus: %s\n", err.msg);
        return NULL;
    }
    size_t fi;
    const wd_tensor *t = wd_model_find(&m, name, &fi);
    uint16_t *v = malloc(rows * cols * 2);
    FILE *f = t ? fopen(m.files[fi].path, "rb") : NULL;
    int ok = v && f && t->dtype == WD_BF16 && t->ndim == 2 && t->shape[0] >= rows && t->shape[1] >= cols;
    for (size_t i = 0; ok && i < rows; i++)
        ok = fseek(f, (long)(t->offset + 2 * i * t->shape[1]), SEEK_SET) == 0 &&
             fread(v + i * cols, 2, cols, f) == cols;
    if (f) fclose(f);
    wd_model_free(&m);
    if (!ok) {
        fprintf(stderr, "mkcorpus: cannot read %zu x %zu bf16 of %s in %s\n", rows, cols, name, dir);
        free(v);
        return NULL;
    }
    return v;
}

/* order-preserving key of bf16 bits (as the lossless codec's) */
static uint16_t key16(uint16_t x)
{
    return (uint16_t)((x & 0x8000) ? x ^ 0xffff : x ^ 0x8000);
}
static uint16_t unkey16(uint16_t k)
{
    return (uint16_t)((k & 0x8000) ? k ^ 0x8000 : k ^ 0xffff);
}

/* Blocks from pairLoRA's real LoRA delta, for the harness's zero base
 * (pattern 0): the lossy lowrank encoder fits the first 64 x 128 values of
 * a projection against their real base, and the seeds' fine-tune is that
 * prediction evaluated on a zero base, with the real block's misses (key
 * differences from its prediction) put back at their places.  The
 * lowrank-exact seeds are that lowrank block's factors followed by each
 * residual form: sparse (0: the real miss pattern) and a lossless-codec
 * block (1).  (Re-encoding the seed would refit the factors, and against
 * a zero base a bf16 value's last place is the delta's own, so almost
 * every value would miss.) */
static int lowrank_seeds(const char *out, const char *base_dir, const char *ft_dir, wd_scratch *s)
{
    const char *name = "model.layers.0.self_attn.q_proj.weight";
    size_t rows = 64, cols = 128, ne = rows * cols, n = ne * 2;
    uint16_t *b = read_bf16(base_dir, name, rows, cols), *f = read_bf16(ft_dir, name, rows, cols);
    uint16_t *pr = malloc(n), *p0 = malloc(n), *seed = malloc(n);
    unsigned char *zero = calloc(1, n), *blk = NULL;
    lbuf res = {0};
    int rc = 1;
    wd_err err;
    if (!b || !f || !pr || !p0 || !seed || !zero) goto out;
    wd_lossy_params p = {(uint32_t)cols, 0, 0, 0, 3, 0, 0};
    const unsigned char *enc;
    size_t elen, blen;
    if (wd_lossy_encode(s, WD_CODEC_LOWRANK, WD_BF16, &p, (unsigned char *)f, (unsigned char *)b, n, &enc, &blen, &err))
        goto fail;
    if (!(blk = malloc(blen))) goto out;
    memcpy(blk, enc, blen);
    if (wd_decode_block(s, WD_CODEC_LOWRANK, WD_BF16, blk, blen, (unsigned char *)b, (unsigned char *)pr, n, &err) ||
        wd_decode_block(s, WD_CODEC_LOWRANK, WD_BF16, blk, blen, zero, (unsigned char *)p0, n, &err))
        goto fail;
    for (size_t i = 0; i < ne; i++) seed[i] = unkey16((uint16_t)(key16(p0[i]) + key16(f[i]) - key16(pr[i])));
    unsigned char hdr[3] = {0, (unsigned char)(ne & 0xff), (unsigned char)(ne >> 8)};
    put(out, "dec-lowrank-bf16-0", hdr, 3, blk, blen);
    blk[1] = WD_CODEC_LOWRANK_EXACT; /* same header and factor layout */
    for (int form = 0; form < 2; form++) {
        res.len = 0;
        if (form == 0 && wd_lowrank_sparse_put(&res, s, 3, WD_BF16, (unsigned char *)seed, (unsigned char *)p0, ne, NULL, &err))
            goto fail;
        if (form == 1) {
            if (wd_encode_block(s, WD_CODEC_LOSSLESS, WD_BF16, 3, (unsigned char *)seed, (unsigned char *)p0, n, &enc,
                                &elen, &err))
                goto fail;
            lb_put(&res, enc, elen);
        }
        lbuf w = {0};
        lb_put(&w, hdr, 3);
        lb_put(&w, blk, blen);
        lb_u32(&w, (uint32_t)res.len);
        lb_put(&w, res.p, res.len);
        if (res.oom || w.oom) goto out;
        put(out, form ? "dec-lowrank-exact-bf16-1" : "dec-lowrank-exact-bf16-0", w.p, w.len, NULL, 0);
        free(w.p);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "mkcorpus: %s\n", err.msg);
out:
    free(b), free(f), free(pr), free(p0), free(seed), free(zero), free(blk), free(res.p);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 4) return 2;
    /* dtype index -> as in fuzz_common.h's fuzz_codec_dtypes */
    static const wd_dtype dts[8] = {WD_BF16, WD_F16, WD_F32, WD_F64, WD_U8, WD_I16, WD_I32, WD_I64};
    static const char *names[8] = {"bf16", "f16", "f32", "f64", "u8", "i16", "i32", "i64"};
    wd_scratch *s = wd_scratch_new();
    wd_err err;
    for (int di = 0; di < 8; di++) {
        unsigned w = wd_codec_width(dts[di]);
        size_t ne = 512, n = ne * w;
        unsigned char *ft = malloc(n), *base = malloc(n);
        for (int codec = 0; codec < 2; codec++) {
            /* sel: bit0 codec, bits1-3 dtype, bits 5-7 base pattern (1 = filled) */
            unsigned sel = (unsigned)codec | (unsigned)di << 1 | 1u << 5;
            fuzz_fill_base(base, n, sel); /* what the harness will use as the base */
            memcpy(ft, base, n);
            for (size_t i = 0; i < n; i += w) ft[i] ^= (unsigned char)(i * 7 & 3); /* small moves */
            const unsigned char *enc;
            size_t elen;
            if (wd_encode_block(s, codec ? WD_CODEC_LOSSLESS : WD_CODEC_ZSTD, dts[di], 3, ft, codec ? base : NULL,
                                n, &enc, &elen, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            unsigned char hdr[3] = {(unsigned char)sel, (unsigned char)(ne & 0xff), (unsigned char)(ne >> 8)};
            char nm[64];
            snprintf(nm, sizeof nm, "dec-%s-%s", codec ? "lossless" : "zstd", names[di]);
            put(argv[1], nm, hdr, 3, enc, elen);
        }
        /* a round-trip input: ft bytes, base = ft with low bits flipped */
        unsigned char hdr[3] = {(unsigned char)(di << 1 | 16 | 0x40), 0, 0};
        fuzz_fill_base(ft, n, (unsigned)di);
        char nm[64];
        snprintf(nm, sizeof nm, "rt-%s", names[di]);
        put(argv[1], nm, hdr, 3, ft, n);
        free(ft);
        free(base);
    }
    if (argc == 4 && lowrank_seeds(argv[1], argv[2], argv[3], s)) return 1;
    wd_scratch_free(s);
    return 0;
}
