/* fuzz_common.h - the body of every fuzz target, shared by the libFuzzer
 * stubs (tests/fuzz/fuzz_*.c) and the unit test that replays the corpora
 * and every crash found so far (tests/unit/test_fuzz_regressions.c).
 *
 * Each fuzz_<target>_one(data, size) runs one input through the parser or
 * decoder it targets, frees everything, keeps no state between calls, and
 * abort()s only on a real inconsistency (a round trip that does not give
 * back its input); sanitizers report everything else.  Inputs are files
 * written to a memfd, reached through /proc/self/fd/N, so the code under
 * test opens them exactly as it opens real files.
 */
#ifndef WD_FUZZ_COMMON_H
#define WD_FUZZ_COMMON_H

#include "internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_MAX_ELEMS (1u << 20)      /* v1 tensors rebuilt at most this big */
#define FUZZ_MAX_BLOCK (4u << 20)      /* v2 blocks decoded at most this big */
#define FUZZ_CODEC_MAX (256u << 10)    /* codec target: output bytes */

/* deterministic filler for base data */
static inline void fuzz_fill_base(unsigned char *b, size_t n, uint32_t seed)
{
    uint64_t x = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)(x >> 24);
    }
}

/* ---- a file holding the input: memfd, path /proc/self/fd/N ---------- */
typedef struct fuzz_file {
    int fd;
    char path[64];
} fuzz_file;

static inline int fuzz_file_make(fuzz_file *f, const void *data, size_t size)
{
    f->fd = memfd_create("wdfuzz", MFD_CLOEXEC);
    if (f->fd < 0) return -1;
    const unsigned char *p = data;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(f->fd, p + done, size - done);
        if (w <= 0) {
            close(f->fd);
            return -1;
        }
        done += (size_t)w;
    }
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
    return 0;
}

static inline void fuzz_file_drop(fuzz_file *f)
{
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
}

/* ---- safetensors headers --------------------------------------------- */
static inline void fuzz_st_rebuild(const wd_stfile *f)
{
    /* build a header for the parsed tensors (only the ones with a known
     * element size can be laid out) and parse that again */
    wd_tensor *ts = calloc(f->ntensors + 1, sizeof *ts);
    if (!ts) return;
    size_t n = 0;
    for (size_t i = 0; i < f->ntensors; i++)
        if (wd_dtype_size(f->tensors[i].dtype)) ts[n++] = f->tensors[i]; /* names borrowed */
    unsigned char *hdr = NULL;
    size_t hlen = 0;
    wd_err err = {0};
    if (wd_st_build_header(ts, n, NULL, &hdr, &hlen, &err) == 0) {
        uint64_t total = hlen;
        for (size_t i = 0; i < n; i++) total += ts[i].length;
        wd_stfile g;
        if (wd_st_parse(hdr, hlen, total, "rebuilt", &g, &err)) {
            fprintf(stderr, "rebuilt header does not parse: %s\n", err.msg);
            abort();
        }
        if (g.ntensors != n) abort();
        for (size_t i = 0; i < n; i++) {
            const wd_tensor *t = wd_st_find(&g, ts[i].name);
            if (!t || t->length != ts[i].length || t->offset != ts[i].offset || t->ndim != ts[i].ndim ||
                strcmp(t->dtype_name, ts[i].dtype_name))
                abort();
        }
        wd_st_free(&g);
        free(hdr);
    }
    free(ts);
}

static inline void fuzz_st_once(const uint8_t *data, size_t size, uint64_t file_size)
{
    wd_stfile f;
    wd_err err = {0};
    if (wd_st_parse(data, size, file_size, "fuzz.safetensors", &f, &err) == 0) {
        for (size_t i = 0; i < f.ntensors; i++)
            if (wd_st_find(&f, f.tensors[i].name) == NULL) abort();
        fuzz_st_rebuild(&f);
        wd_st_free(&f);
    }
}

static inline int fuzz_safetensors_one(const uint8_t *data, size_t size)
{
    fuzz_st_once(data, size, size);
    if (size >= 8) {
        /* file_size such that the data area is exactly the largest end
         * offset the header mentions would be found only by luck; instead
         * try a few derived sizes: header + a length taken from the tail */
        uint64_t n = wd_get_u64(data);
        if (n <= WD_ST_MAX_HEADER && 8 + n <= size) {
            uint64_t extra = 0;
            if (size >= 8 + n + 8) extra = wd_get_u64(data + size - 8) & ((1ull << 40) - 1);
            fuzz_st_once(data, size, 8 + n);
            fuzz_st_once(data, size, 8 + n + extra);
            fuzz_st_once(data, size, 8 + n + (size - 8 - n));
        }
    }
    return 0;
}

/* ---- deltatensors v1 ------------------------------------------------- */
static inline int fuzz_v1_one(const uint8_t *data, size_t size)
{
    fuzz_file ff;
    if (fuzz_file_make(&ff, data, size)) return 0;
    wd_v1 *v = NULL;
    wd_err err = {0};
    if (wd_v1_open(ff.path, &v, &err) == 0) {
        (void)wd_v1_check_digest(v, &err);
        (void)wd_v1_parent_hash(v);
        (void)wd_v1_options(v);
        (void)wd_v1_strategy(v);
        for (size_t i = 0; i < wd_v1_count(v); i++) {
            const wd_v1_tensor *t = wd_v1_get(v, i);
            if (!t || wd_v1_find(v, t->name) != (int)i) abort();
            if (t->nelem > FUZZ_MAX_ELEMS) continue;
            size_t ne = (size_t)t->nelem;
            static const wd_dtype dts[] = {WD_F32, WD_BF16};
            for (size_t k = 0; k < sizeof dts / sizeof *dts; k++) {
                void *base = calloc(ne ? ne : 1, wd_dtype_size(dts[k]));
                float *out = malloc((ne ? ne : 1) * sizeof *out);
                if (base && out) (void)wd_v1_rebuild(v, i, base, dts[k], out, &err);
                free(base);
                free(out);
            }
        }
        wd_v1_close(v);
    }
    fuzz_file_drop(&ff);
    return 0;
}

/* ---- .wdelta v2 ------------------------------------------------------- */
#define FUZZ_MAX_BASE (8u << 20) /* bytes of synthetic base model */

static inline const char *fuzz_dtype_name(wd_dtype t)
{
    static const char *const names[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8",
                                        "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : NULL;
}

/* A base model for d: one safetensors file (in a memfd, kept open in *ff)
 * holding every base tensor d names (v2: the lossless extents' base tensors
 * with their dtype and length; v1: every tensor, F32), filled with a fixed
 * pattern.  0 if *m was made. */
static inline int fuzz_make_base(wd_delta *d, wd_model *m, fuzz_file *ff)
{
    size_t cap = d->v1 ? wd_v1_count(d->v1) : d->next;
    wd_tensor *ts = calloc(cap + 1, sizeof *ts);
    uint64_t (*shp)[WD_MAX_DIMS] = calloc(cap + 1, sizeof *shp);
    if (!ts || !shp) {
        free(ts);
        free(shp);
        return -1;
    }
    size_t n = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < cap; i++) {
        const char *name;
        wd_dtype dt;
        uint64_t len;
        if (d->v1) {
            const wd_v1_tensor *t = wd_v1_get(d->v1, i);
            name = t->name;
            dt = WD_F32;
            len = t->nelem > FUZZ_MAX_BASE ? FUZZ_MAX_BASE : t->nelem * 4;
        } else {
            const wd_ext_priv *e = d->ext_by_num[i];
            if (!e->base_tensor) continue;
            name = e->base_tensor;
            dt = e->pub.dtype;
            len = e->pub.length;
        }
        unsigned es = wd_dtype_size(dt);
        if (!es || len % es || !fuzz_dtype_name(dt) || !*name) continue;
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++) dup = !strcmp(ts[j].name, name);
        if (dup) continue;
        if (len > FUZZ_MAX_BASE - total) break;
        total += len;
        wd_tensor *t = &ts[n++];
        t->name = (char *)name; /* borrowed */
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", fuzz_dtype_name(dt));
        t->dtype = dt;
        t->ndim = 1;
        t->shape = shp[n - 1];
        t->shape[0] = len / es;
        if (d->v1) { /* the v1 view checks shapes: give it the tensor's own */
            const wd_v1_tensor *v = wd_v1_get(d->v1, i);
            t->ndim = v->ndim;
            memcpy(t->shape, v->shape, sizeof shp[0]);
            if (v->nelem * 4 != len) n--, total -= len;
        }
    }
    unsigned char *hdr = NULL, *file = NULL;
    size_t hlen = 0;
    wd_err err = {0};
    int rc = -1;
    memset(m, 0, sizeof *m);
    ff->fd = -1;
    if (wd_st_build_header(ts, n, NULL, &hdr, &hlen, &err)) goto out;
    file = malloc(hlen + total + 1);
    if (!file) goto out;
    memcpy(file, hdr, hlen);
    fuzz_fill_base(file + hlen, (size_t)total, 7);
    if (fuzz_file_make(ff, file, hlen + (size_t)total)) goto out;
    m->files = calloc(1, sizeof *m->files);
    m->dir = strdup("fuzzbase");
    if (!m->files || !m->dir || wd_st_open(ff->path, &m->files[0], &err)) goto out;
    m->nfiles = 1;
    if (wd_model_index(m, &err)) goto out;
    rc = 0;
out:
    if (rc) {
        wd_model_free(m);
        fuzz_file_drop(ff);
    }
    free(file);
    free(hdr);
    free(ts);
    free(shp);
    return rc;
}

static inline void fuzz_v2_blocks(wd_delta *d)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    wd_err err = {0};
    for (size_t b = 0; b < in->nblocks; b++) {
        uint32_t ol = in->blocks[b].out_len;
        if (ol > FUZZ_MAX_BLOCK) continue;
        unsigned char *out = malloc(ol ? ol : 1);
        if (!out) continue;
        int rc = wd_delta_decode_block(d, (uint32_t)b, out, &err);
#ifdef FUZZ_VERBOSE
        fprintf(stderr, "block %zu: %s\n", b, rc ? err.msg : "ok");
#endif
        (void)rc;
        free(out);
    }
}

static inline void fuzz_v2_file(const char *path)
{
    wd_delta *d = NULL;
    wd_err err = {0};
    if (wd_delta_open(path, &d, &err)) {
#ifdef FUZZ_VERBOSE
        fprintf(stderr, "open: %s\n", err.msg);
#endif
        return;
    }
    const wd_delta_info *in = wd_delta_get_info(d);
    (void)wd_delta_digest_state(d);
    fuzz_v2_blocks(d);
    for (size_t f = 0; f < in->nfiles; f++) {
        const wd_outfile *of = &in->files[f];
        if (wd_delta_find_file(d, of->name) != (int)f) abort();
        uint64_t offs[5] = {0, of->size / 3, of->size / 2, of->size ? of->size - 1 : 0, of->size};
        for (int k = 0; k < 5; k++) {
            uint32_t blk;
            uint64_t bo;
            if (wd_delta_locate(d, f, offs[k], &blk, &bo) == 0) {
                if (blk >= in->nblocks || bo > offs[k]) abort();
                if (offs[k] - bo >= in->blocks[blk].out_len) abort();
            } else if (offs[k] < of->size) {
                abort(); /* every byte of a file is in some block */
            }
        }
        /* the public read path without a cache (no base: delta blocks fail) */
        unsigned char buf[64];
        (void)wd_read(d, 1, NULL, f, buf, sizeof buf, of->size / 2, &err);
    }
    /* then with a base attached: delta blocks read base bytes (v1 files
     * get their output layout from it) */
    wd_model m;
    fuzz_file bf;
    if (fuzz_make_base(d, &m, &bf) == 0) {
        if (wd_delta_set_base(d, &m, &err) == 0) {
#ifdef FUZZ_VERBOSE
            fprintf(stderr, "base attached: %zu blocks\n", in->nblocks);
#endif
            in = wd_delta_get_info(d);
            (void)wd_delta_check_digest(d, &err);
            fuzz_v2_blocks(d);
            for (size_t f = 0; f < in->nfiles; f++) {
                unsigned char buf[64];
                (void)wd_read(d, 1, NULL, f, buf, sizeof buf, in->files[f].size / 2, &err);
            }
        }
#ifdef FUZZ_VERBOSE
        else fprintf(stderr, "set_base: %s\n", err.msg);
#endif
        wd_delta_close(d); /* before the model it points to */
        wd_model_free(&m);
        fuzz_file_drop(&bf);
        return;
    }
    wd_delta_close(d);
}

/* Wrap a manifest and block table in a valid preamble, data area and
 * footer (with the right SHA-256) so the manifest/index parser is reached.
 * Input layout:
 *   u8 flags (bit 0: keep block entries as given; otherwise their stored
 *             ranges are folded into the data area and stored_hash fixed)
 *   u16 B (block entries, at most 1024), u32 D (data bytes, at most 1 MiB)
 *   B x 32 block table, D bytes of block data, then the manifest JSON. */
static inline void fuzz_v2_wrapped(const uint8_t *data, size_t size)
{
    if (size < 7) return;
    unsigned flags = data[0];
    size_t nb = (size_t)(data[1] | data[2] << 8) % 1025;
    size_t dl = (size_t)wd_get_u32(data + 3) % ((1u << 20) + 1);
    size_t at = 7;
    if (nb * 32 > size - at) return;
    const uint8_t *tab_in = data + at;
    at += nb * 32;
    if (dl > size - at) return;
    const uint8_t *dat = data + at;
    at += dl;
    const uint8_t *man = data + at;
    size_t ml = size - at;

    uint64_t moff = WD_PREAMBLE_LEN + dl, toff = moff + ml, fsize = toff + nb * 32 + WD_FOOTER_LEN;
    unsigned char *file = calloc(1, (size_t)fsize);
    if (!file) return;
    memcpy(file, WD_MAGIC, WD_MAGIC_LEN);
    wd_put_u32(file + 7, 2);
    memcpy(file + WD_PREAMBLE_LEN, dat, dl);
    memcpy(file + moff, man, ml);
    unsigned char *tab = file + toff;
    memcpy(tab, tab_in, nb * 32);
    if (!(flags & 1)) {
        for (size_t i = 0; i < nb; i++) {
            unsigned char *e = tab + i * 32;
            uint64_t off = dl ? wd_get_u64(e) % dl : 0;
            uint32_t len = (uint32_t)(wd_get_u32(e + 8) % (dl - off + 1));
            wd_put_u64(e, WD_PREAMBLE_LEN + off);
            wd_put_u32(e + 8, len);
            wd_put_u64(e + 16, wd_hash64(dat + off, len, 0));
        }
    }
    unsigned char *foot = file + fsize - WD_FOOTER_LEN;
    wd_put_u64(foot, moff);
    wd_put_u64(foot + 8, ml);
    wd_put_u64(foot + 16, toff);
    wd_put_u64(foot + 24, nb);
    wd_put_u64(foot + 32, fsize);
    wd_sha256 *h = wd_sha256_new();
    if (h) {
        wd_sha256_update(h, file + moff, ml + nb * 32);
        wd_sha256_update(h, foot, 40);
        wd_sha256_final(h, foot + 40);
    }
    memcpy(foot + 80, WD_FOOTER_MAGIC, 8);
    fuzz_file ff;
    if (fuzz_file_make(&ff, file, (size_t)fsize) == 0) {
        fuzz_v2_file(ff.path);
        fuzz_file_drop(&ff);
    }
    free(file);
}

/* First byte: 'R' = the rest is a whole .wdelta file (any version: v1
 * files open through the same call); anything else = wrapped manifest. */
static inline int fuzz_v2_one(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (data[0] == 'R') {
        fuzz_file ff;
        if (fuzz_file_make(&ff, data + 1, size - 1)) return 0;
        fuzz_v2_file(ff.path);
        fuzz_file_drop(&ff);
    } else {
        fuzz_v2_wrapped(data + 1, size - 1);
    }
    return 0;
}

/* ---- block codecs ------------------------------------------------------ */
/* Input layout: u8 sel (bit 0 codec, bits 1-3 dtype, bit 4 round trip
 * only, bits 5-7 base pattern), u16 output elements, then the stored block
 * (decode) or the fine-tune bytes (round trip). */
static inline int fuzz_codec_one(const uint8_t *data, size_t size)
{
    static const wd_dtype fuzz_codec_dtypes[8] = {WD_BF16, WD_F16, WD_F32, WD_F64, WD_U8, WD_I16, WD_I32, WD_I64};
    if (size < 3) return 0;
    unsigned sel = data[0];
    wd_codec codec = (sel & 1) ? WD_CODEC_LOSSLESS : WD_CODEC_ZSTD;
    wd_dtype dt = fuzz_codec_dtypes[(sel >> 1) & 7];
    unsigned w = wd_codec_width(dt);
    size_t n = (size_t)(data[1] | data[2] << 8) * w;
    if (n > FUZZ_CODEC_MAX) n = FUZZ_CODEC_MAX / w * w;
    const uint8_t *p = data + 3;
    size_t plen = size - 3;
    wd_scratch *s = wd_scratch_new();
    if (!s) return 0;
    wd_err err = {0};

    if (!(sel & 16)) { /* decode arbitrary stored bytes */
        unsigned char *base = malloc(n ? n : 1), *out = malloc(n ? n : 1);
        if (base && out) {
            if ((sel >> 5) == 0) memset(base, 0, n);
            else fuzz_fill_base(base, n, sel);
            (void)wd_decode_block(s, codec, dt, p, plen, codec == WD_CODEC_LOSSLESS ? base : NULL, out, n, &err);
            /* the lossy decoders on the same bytes (floating dtypes) */
            static const wd_codec lossy[8] = {WD_CODEC_INT4,   WD_CODEC_SPARSE,        WD_CODEC_BITDELTA,
                                              WD_CODEC_AXIS1,  WD_CODEC_LOWRANK,       WD_CODEC_LOWRANK_EXACT,
                                              WD_CODEC_TERNARY, WD_CODEC_TERNARY_AXIS1};
            if (dt == WD_BF16 || dt == WD_F16 || dt == WD_F32)
                for (int c = 0; c < 8; c++) (void)wd_decode_block(s, lossy[c], dt, p, plen, base, out, n, &err);
        }
        free(base);
        free(out);
    }

    /* round trip: the payload as fine-tune bytes, against a derived base */
    size_t m = plen / w * w;
    if (m > FUZZ_CODEC_MAX) m = FUZZ_CODEC_MAX / w * w;
    unsigned char *base = malloc(m ? m : 1), *out = malloc(m ? m : 1), *stored = NULL;
    if (base && out) {
        /* base = ft with a few bits disturbed (a fine-tune is close to its
         * base), or unrelated bytes, by the pattern bits */
        if ((sel >> 5) & 1) fuzz_fill_base(base, m, sel);
        else
            for (size_t i = 0; i < m; i++) base[i] = p[i] ^ (unsigned char)((i * 2654435761u >> 13) & (sel >> 6));
        static const wd_codec codecs[2] = {WD_CODEC_ZSTD, WD_CODEC_LOSSLESS};
        for (int c = 0; c < 2; c++) {
            const unsigned char *enc;
            size_t elen;
            int level = 1 + (sel >> 6);
            if (wd_encode_block(s, codecs[c], dt, level, p, c ? base : NULL, m, &enc, &elen, &err)) {
                fprintf(stderr, "encode failed: %s\n", err.msg);
                abort();
            }
            free(stored);
            stored = malloc(elen ? elen : 1); /* enc lives in the scratch, which decode reuses */
            if (!stored) break;
            memcpy(stored, enc, elen);
            if (wd_decode_block(s, codecs[c], dt, stored, elen, c ? base : NULL, out, m, &err)) {
                fprintf(stderr, "round trip: decode failed: %s\n", err.msg);
                abort();
            }
            if (memcmp(out, p, m)) {
                fprintf(stderr, "round trip: output differs (codec %d dtype %d, %zu bytes)\n", (int)codecs[c],
                        (int)dt, m);
                abort();
            }
        }
        /* lowrank-exact: one row of the payload's elements, exact round trip */
        if ((dt == WD_BF16 || dt == WD_F16 || dt == WD_F32) && m >= w && m / w <= 4096) {
            wd_lossy_params lp = {(uint32_t)(m / w), 0, 0, 0, 1, 0, 0};
            const unsigned char *enc;
            size_t elen;
            if (wd_lossy_encode(s, WD_CODEC_LOWRANK_EXACT, dt, &lp, p, base, m, &enc, &elen, &err)) {
                fprintf(stderr, "lowrank-exact encode failed: %s\n", err.msg);
                abort();
            }
            free(stored);
            stored = malloc(elen ? elen : 1);
            if (stored) {
                memcpy(stored, enc, elen);
                if (wd_decode_block(s, WD_CODEC_LOWRANK_EXACT, dt, stored, elen, base, out, m, &err) ||
                    memcmp(out, p, m)) {
                    fprintf(stderr, "lowrank-exact round trip failed (dtype %d, %zu bytes): %s\n", (int)dt, m, err.msg);
                    abort();
                }
            }
        }
    }
    free(stored);
    free(base);
    free(out);
    wd_scratch_free(s);
    return 0;
}

/* ---- dispatch by target name (the unit test replays directories) ----- */
static inline int fuzz_run_target(const char *target, const uint8_t *data, size_t size)
{
    if (!strcmp(target, "fuzz_safetensors")) return fuzz_safetensors_one(data, size);
    if (!strcmp(target, "fuzz_v1")) return fuzz_v1_one(data, size);
    if (!strcmp(target, "fuzz_v2")) return fuzz_v2_one(data, size);
    if (!strcmp(target, "fuzz_codec")) return fuzz_codec_one(data, size);
    return -1;
}

#endif
