/* mkcorpus.c - writes the fuzz_codec seed inputs (encoded blocks of a few
 * dtypes, and round-trip inputs) into the directory given.  Built and run
 * by tests/fuzz/mkcorpus.sh; the corpus is committed, this is how it was made. */
#include "fuzz_common.h" /* fuzz_fill_base: the same bases the harness derives */
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

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
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
    wd_scratch_free(s);
    return 0;
}
