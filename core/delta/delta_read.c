/* delta_read.c - open a .wdelta v2 file, check it, and decode any block.
 *
 * Opening reads only the preamble, the footer, the manifest and the block
 * table (all covered by one SHA-256); block data is read on demand with
 * pread, so an open delta costs memory in proportion to its index, never to
 * the model. */
#include "delta/delta_impl.h"
#include "legacy/legacy.h"
#include "format/layout.h"
#include "delta/xdtype.h"
#include "codec/lossless_simd.h"
#include <zstd.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- manifest parsing ------------------------------------------------ */
static int get_u64(const cJSON *o, const char *key, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return -1;
    double x = v->valuedouble;
    if (!(x >= 0) || x > 9007199254740992.0 || x != (double)(uint64_t)x) return -1;
    *out = (uint64_t)x;
    return 0;
}

static const char *get_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int parse_extent(wd_delta *d, const cJSON *x, const char *fname, size_t k, wd_ext_priv *e,
                        wd_err *err)
{
    uint64_t off, len, fb, nb, bs;
    const char *codec = get_str(x, "codec"), *dt = get_str(x, "dtype");
    if (get_u64(x, "offset", &off) || get_u64(x, "length", &len) || get_u64(x, "first_block", &fb) ||
        get_u64(x, "nblocks", &nb) || get_u64(x, "block_size", &bs) || !codec || !dt)
        return wd_errf(err, "%s: manifest: file %s extent %zu lacks a field", d->path, fname, k);
    wd_codec c;
    if (wd_codec_from_name(codec, &c))
        return wd_errf(err, "%s: file %s extent %zu uses codec '%s', which this version cannot decode",
                       d->path, fname, k, codec);
    if (bs == 0 || bs > (64u << 20) || bs % 8 || fb + nb > d->info.nblocks || nb > UINT32_MAX ||
        (len + bs - 1) / bs != nb)
        return wd_errf(err, "%s: file %s extent %zu has inconsistent blocks", d->path, fname, k);
    e->pub.file_offset = off;
    e->pub.length = len;
    e->pub.first_block = (uint32_t)fb;
    e->pub.nblocks = (uint32_t)nb;
    e->pub.block_size = (uint32_t)bs;
    e->pub.codec = c;
    e->pub.dtype = wd_dtype_from_name(dt);
    e->tensor = dup_or_null(get_str(x, "tensor"));
    e->base_tensor = dup_or_null(get_str(x, "base"));
    e->pub.tensor = e->tensor;
    e->pub.base_tensor = e->base_tensor;
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(x, "params");
    if (params) {
        if (!cJSON_IsObject(params) || !(e->params = cJSON_PrintUnformatted(params)))
            return wd_errf(err, "%s: file %s extent %zu has malformed params", d->path, fname, k);
        e->pub.params = e->params;
    }
    e->base_fd_index = -1;
    if (wd_xdtype_parse(x, e, d->path, fname, k, err)) return -1;
    if (wd_codec_is_rowblock(c) && (e->pub.dtype != WD_BF16 && e->pub.dtype != WD_F16 && e->pub.dtype != WD_F32))
        return wd_errf(err, "%s: file %s extent %zu: codec %s on a %s tensor", d->path, fname, k, codec, dt);
    if (wd_codec_needs_base(c) && !e->base_tensor)
        return wd_errf(err, "%s: file %s extent %zu is a delta without a base tensor", d->path, fname, k);
    if (e->pub.length % wd_codec_width(e->pub.dtype))
        return wd_errf(err, "%s: file %s extent %zu: length %llu is not a multiple of the element size",
                       d->path, fname, k, (unsigned long long)len);
    /* every block of the extent must have the right output length */
    for (uint64_t b = 0; b < nb; b++) {
        uint64_t want = (b + 1 < nb) ? bs : len - b * bs;
        if (d->blocks[fb + b].out_len != want)
            return wd_errf(err, "%s: file %s extent %zu block %llu has output length %u, expected %llu",
                           d->path, fname, k, (unsigned long long)(fb + b), d->blocks[fb + b].out_len,
                           (unsigned long long)want);
    }
    return 0;
}

/* The members of the object at text[s, e) but one (skip, not parsed: its
 * slice goes to *ss, *se; 0, 0 if absent) as a cJSON object, each parsed on
 * its own; NULL if the text is not such an object.  A key given twice keeps
 * its first value first, as a tree of the whole text would. */
static cJSON *object_but(const char *text, size_t s, size_t e, const char *skip, size_t *ss, size_t *se)
{
    wd_jwalk w;
    size_t ks, ke, vs, ve, bad;
    *ss = *se = 0;
    if (wd_jwalk_open(&w, text, e, s) || !w.obj) return NULL;
    cJSON *o = cJSON_CreateObject();
    int r;
    while (o && (r = wd_jwalk_next(&w, &ks, &ke, &vs, &ve)) != 0) {
        cJSON *key = r > 0 ? wd_json_piece(text + ks, ke - ks, &bad) : NULL, *val = NULL;
        int ok = key && cJSON_IsString(key);
        if (ok && !strcmp(key->valuestring, skip)) {
            if (!*se) *ss = vs, *se = ve;
        } else if (ok) {
            ok = (val = wd_json_piece(text + vs, ve - vs, &bad)) && cJSON_AddItemToObject(o, key->valuestring, val);
            if (!ok) cJSON_Delete(val);
        }
        cJSON_Delete(key);
        if (!ok) {
            cJSON_Delete(o);
            o = NULL;
        }
    }
    return o;
}

/* Members of the array at text[s, e): counted (each NULL) or each parsed
 * and handed to fn in turn; -1 if not an array or fn fails (*bad 1: syntax). */
static int each_element(const char *text, size_t s, size_t e, size_t *count,
                        int (*fn)(wd_delta *d, const cJSON *x, size_t k, void *ctx, wd_err *err), wd_delta *d,
                        void *ctx, int *syntax, wd_err *err)
{
    wd_jwalk w;
    size_t ks, ke, vs, ve, bad, k = 0;
    *syntax = 1;
    if (wd_jwalk_open(&w, text, e, s) || w.obj) return -1;
    int r;
    while ((r = wd_jwalk_next(&w, &ks, &ke, &vs, &ve)) == 1) {
        if (fn) {
            cJSON *x = wd_json_piece(text + vs, ve - vs, &bad);
            if (!x) return -1;
            *syntax = 0;
            int rc = fn(d, x, k, ctx, err);
            cJSON_Delete(x);
            if (rc) return -1;
            *syntax = 1;
        }
        k++;
    }
    if (r < 0) return -1;
    *count = k;
    *syntax = 0;
    return 0;
}

typedef struct file_ctx {
    size_t i;
    const char *name;
    uint64_t at;
} file_ctx;

static int one_extent(wd_delta *d, const cJSON *x, size_t k, void *ctx, wd_err *err)
{
    file_ctx *fc = ctx;
    size_t i = fc->i;
    const char *name = fc->name;
    wd_ext_priv *e = &d->file_exts[i][k];
    if (parse_extent(d, x, name, k, e, err)) return -1;
    if (e->pub.file_offset != fc->at)
        return wd_errf(err, "%s: file %s extent %zu starts at %llu, expected %llu (gap or overlap)", d->path, name,
                       k, (unsigned long long)e->pub.file_offset, (unsigned long long)fc->at);
    fc->at += e->pub.length;
    d->file_pub_exts[i][k] = e->pub;
    return 0;
}

/* One file of the manifest, text[s, e): its extents parsed one at a time. */
static int parse_file(wd_delta *d, const char *text, size_t s, size_t e, size_t i, wd_err *err)
{
    size_t xs, xe;
    cJSON *f = object_but(text, s, e, "extents", &xs, &xe);
    if (!f) return wd_errf(err, "%s: manifest: file %zu is not valid JSON", d->path, i);
    const char *name = get_str(f, "name");
    uint64_t size;
    int rc = -1, syntax;
    size_t n = 0;
    if (!name || get_u64(f, "size", &size) || !xe || xs >= xe || text[xs] != '[') {
        wd_errf(err, "%s: manifest: file %zu lacks name, size or extents", d->path, i);
        goto out;
    }
    if (!wd_safe_name(name)) {
        wd_errf(err, "%s: manifest: file name '%s' is not a safe file name", d->path, name);
        goto out;
    }
    wd_outfile *of = &d->files[i];
    of->name = strdup(name);
    of->size = size;
    of->is_safetensors = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "safetensors"));
    if (each_element(text, xs, xe, &n, NULL, d, NULL, &syntax, err)) {
        wd_errf(err, "%s: manifest: file %s: extents are not valid JSON", d->path, name);
        goto out;
    }
    d->file_exts[i] = calloc(n + 1, sizeof(wd_ext_priv));
    d->file_pub_exts[i] = calloc(n + 1, sizeof(wd_extent));
    if (!of->name || !d->file_exts[i] || !d->file_pub_exts[i]) {
        wd_errf(err, "out of memory");
        goto out;
    }
    of->nextents = n;
    file_ctx fc = {i, of->name, 0};
    if (each_element(text, xs, xe, &n, one_extent, d, &fc, &syntax, err)) {
        if (syntax) wd_errf(err, "%s: manifest: file %s: extents are not valid JSON", d->path, name);
        goto out;
    }
    if (fc.at != size) {
        wd_errf(err, "%s: file %s: extents cover %llu bytes of %llu", d->path, of->name, (unsigned long long)fc.at,
                (unsigned long long)size);
        goto out;
    }
    of->extents = d->file_pub_exts[i];
    rc = 0;
out:
    cJSON_Delete(f);
    return rc;
}

static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* No output file twice (sorted, so many files cost n log n). */
static int unique_names(wd_delta *d, wd_err *err)
{
    size_t n = d->info.nfiles;
    const char **names = malloc((n + 1) * sizeof *names);
    if (!names) return wd_errf(err, "out of memory");
    for (size_t i = 0; i < n; i++) names[i] = d->files[i].name;
    qsort(names, n, sizeof *names, cmp_name_ptr);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i - 1], names[i])) {
            wd_errf(err, "%s: manifest: file %s appears twice", d->path, names[i]);
            free(names);
            return -1;
        }
    free(names);
    return 0;
}

/* The manifest: its top level and each file parsed, the files' extents one
 * at a time (a tree of the whole manifest of a model with many tensors
 * would cost about ten times its text). */
static int parse_manifest(wd_delta *d, const char *text, size_t len, wd_err *err)
{
    size_t fs, fe;
    cJSON *m = object_but(text, 0, len, "files", &fs, &fe);
    if (!m) return wd_errf(err, "%s: manifest is not valid JSON", d->path);
    int rc = -1, syntax;
    const char *fmt = get_str(m, "format"), *bh = get_str(m, "base_hash"), *rh = get_str(m, "result_hash");
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(m, "options");
    size_t nf = 0;
    if (!fmt || strcmp(fmt, "wdelta") || !bh || !rh || !fe || text[fs] != '[') {
        wd_errf(err, "%s: manifest lacks format, hashes or files", d->path);
        goto out;
    }
    if (each_element(text, fs, fe, &nf, NULL, d, NULL, &syntax, err)) {
        wd_errf(err, "%s: manifest is not valid JSON", d->path);
        goto out;
    }
    if (wd_unhex(bh, d->info.base_hash, 32) || wd_unhex(rh, d->info.result_hash, 32)) {
        wd_errf(err, "%s: manifest hashes are not 64 hex digits", d->path);
        goto out;
    }
    /* which model hash each is (absent: files written before the
     * identity, WD_HASH_V1) */
    uint64_t bk = WD_HASH_V1, rk = WD_HASH_V1;
    if ((cJSON_GetObjectItemCaseSensitive(m, "base_hash_kind") && get_u64(m, "base_hash_kind", &bk)) ||
        (cJSON_GetObjectItemCaseSensitive(m, "result_hash_kind") && get_u64(m, "result_hash_kind", &rk)) ||
        (bk != WD_HASH_V1 && bk != WD_ID_V2) || (rk != WD_HASH_V1 && rk != WD_ID_V2)) {
        wd_errf(err, "%s: manifest names a model hash kind this build does not know (base %llu, result %llu)",
                d->path, (unsigned long long)bk, (unsigned long long)rk);
        goto out;
    }
    d->info.base_hash_kind = (unsigned)bk;
    d->info.result_hash_kind = (unsigned)rk;
    /* informational v1 content hashes (optional; FORMAT.md "Model identity") */
    const char *bh1 = get_str(m, "base_hash_v1"), *rh1 = get_str(m, "result_hash_v1");
    if ((bh1 && wd_unhex(bh1, d->info.base_hash_v1, 32)) || (rh1 && wd_unhex(rh1, d->info.result_hash_v1, 32))) {
        wd_errf(err, "%s: manifest base_hash_v1/result_hash_v1 are not 64 hex digits", d->path);
        goto out;
    }
    d->info.has_base_hash_v1 = bh1 != NULL;
    d->info.has_result_hash_v1 = rh1 != NULL;
    if (bk == WD_HASH_V1) {
        memcpy(d->info.base_hash_v1, d->info.base_hash, 32);
        d->info.has_base_hash_v1 = 1;
    }
    if (rk == WD_HASH_V1) {
        memcpy(d->info.result_hash_v1, d->info.result_hash, 32);
        d->info.has_result_hash_v1 = 1;
    }
    d->strategy = dup_or_null(get_str(m, "strategy"));
    d->tool = dup_or_null(get_str(m, "tool"));
    d->options_json = opt ? cJSON_PrintUnformatted(opt) : strdup("{}");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(m, "parent"); /* lineage, optional */
    uint64_t depth = 0;
    if (cJSON_IsObject(par)) {
        d->parent_name = dup_or_null(get_str(par, "name"));
        if (!get_u64(par, "depth", &depth) && depth < 1000000) d->info.parent_depth = (unsigned)depth;
        d->info.parent_name = d->parent_name;
        const char *pd = get_str(par, "digest");
        if (pd && !wd_unhex(pd, d->info.parent_digest, 32)) d->info.has_parent_digest = 1;
    }
    d->files = calloc(nf + 1, sizeof *d->files);
    d->file_exts = calloc(nf + 1, sizeof *d->file_exts);
    d->file_pub_exts = calloc(nf + 1, sizeof *d->file_pub_exts);
    if (!d->files || !d->file_exts || !d->file_pub_exts) {
        wd_errf(err, "out of memory");
        goto out;
    }
    d->info.nfiles = nf;
    {
        wd_jwalk w;
        size_t ks, ke, vs, ve, i = 0;
        wd_jwalk_open(&w, text, fe, fs); /* checked by the count above */
        while (wd_jwalk_next(&w, &ks, &ke, &vs, &ve) == 1)
            if (parse_file(d, text, vs, ve, i++, err)) goto out;
    }
    if (unique_names(d, err)) goto out;
    rc = 0;
out:
    cJSON_Delete(m);
    return rc;
}

/* Every block must belong to exactly one extent. */
static int map_blocks(wd_delta *d, wd_err *err)
{
    size_t nb = d->info.nblocks, next = 0;
    free(d->block_ext); /* a v1 view maps again once its base is attached */
    free(d->ext_by_num);
    d->block_ext = malloc((nb ? nb : 1) * sizeof *d->block_ext);
    if (!d->block_ext) return wd_errf(err, "out of memory");
    for (size_t i = 0; i < nb; i++) d->block_ext[i] = UINT32_MAX;
    for (size_t f = 0; f < d->info.nfiles; f++) next += d->files[f].nextents;
    d->ext_by_num = calloc(next + 1, sizeof *d->ext_by_num);
    if (!d->ext_by_num) return wd_errf(err, "out of memory");
    d->next = next;
    size_t num = 0;
    for (size_t f = 0; f < d->info.nfiles; f++)
        for (size_t k = 0; k < d->files[f].nextents; k++, num++) {
            wd_ext_priv *e = &d->file_exts[f][k];
            d->ext_by_num[num] = e;
            for (uint32_t b = 0; b < e->pub.nblocks; b++) {
                uint32_t id = e->pub.first_block + b;
                if (d->block_ext[id] != UINT32_MAX)
                    return wd_errf(err, "%s: block %u belongs to two extents", d->path, id);
                d->block_ext[id] = (uint32_t)num;
            }
        }
    for (size_t i = 0; i < nb; i++)
        if (d->block_ext[i] == UINT32_MAX) return wd_errf(err, "%s: block %zu belongs to no extent", d->path, i);
    return 0;
}

/* A compressed manifest (one zstd frame, written as a stream: its size is
 * not in the frame header), at most WD_MAX_MANIFEST bytes once expanded. */
static int unzstd_manifest(wd_delta *d, const unsigned char *src, size_t n, char **out, size_t *out_len,
                           wd_err *err)
{
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    size_t cap = n * 4 + 4096, len = 0;
    char *text = malloc(cap + 1);
    int rc = -1;
    if (!dc || !text) {
        wd_errf(err, "out of memory reading the manifest of %s", d->path);
        goto out;
    }
    ZSTD_inBuffer in = {src, n, 0};
    for (;;) {
        if (len == cap) {
            if (cap >= WD_MAX_MANIFEST) {
                wd_errf(err, "%s: the manifest expands to more than %u bytes", d->path, WD_MAX_MANIFEST);
                goto out;
            }
            size_t nc = cap * 2 > WD_MAX_MANIFEST ? WD_MAX_MANIFEST : cap * 2;
            char *p = realloc(text, nc + 1);
            if (!p) {
                wd_errf(err, "out of memory reading the manifest of %s", d->path);
                goto out;
            }
            text = p;
            cap = nc;
        }
        ZSTD_outBuffer ob = {text + len, cap - len, 0};
        size_t r = ZSTD_decompressStream(dc, &ob, &in);
        len += ob.pos;
        if (ZSTD_isError(r)) {
            wd_errf(err, "%s: the compressed manifest is corrupt (%s)", d->path, ZSTD_getErrorName(r));
            goto out;
        }
        if (r == 0) { /* frame complete: nothing may follow it */
            if (in.pos != in.size) {
                wd_errf(err, "%s: bytes after the compressed manifest", d->path);
                goto out;
            }
            break;
        }
        if (in.pos == in.size && ob.pos < ob.size) {
            wd_errf(err, "%s: the compressed manifest is cut short", d->path);
            goto out;
        }
    }
    *out = text;
    *out_len = len;
    text = NULL;
    rc = 0;
out:
    free(text);
    ZSTD_freeDCtx(dc);
    return rc;
}

static int read_tail(wd_delta *d, uint64_t size, wd_err *err)
{
    unsigned char pre[WD_PREAMBLE_LEN], foot[WD_FOOTER_LEN];
    if (size < 15) return wd_errf(err, "%s: too short (%llu bytes) to be a .wdelta file", d->path, (unsigned long long)size);
    if (wd_pread_full(d->fd, pre, 11, 0, d->path, err)) return -1;
    uint32_t flags = 0;
    if (memcmp(pre, WD_MAGIC, WD_MAGIC_LEN)) return wd_errf(err, "%s: not a .wdelta file (bad magic)", d->path);
    d->info.version = wd_preamble_version(pre);
    if (d->info.version == 1) { /* deltatensors: scan its records; outputs come with the base */
        if (wd_v1_open_fd(d->fd, d->path, &d->v1, err)) return -1;
        memcpy(d->info.base_hash, wd_v1_parent_hash(d->v1), 32);
        d->info.base_hash_kind = d->info.result_hash_kind = WD_HASH_V1;
        memcpy(d->info.base_hash_v1, d->info.base_hash, 32);
        d->info.has_base_hash_v1 = 1;
        d->strategy = strdup(wd_v1_strategy(d->v1));
        d->tool = strdup("deltatensors (v1)");
        d->options_json = strdup(wd_v1_options(d->v1));
        if (!d->strategy || !d->tool || !d->options_json) return wd_errf(err, "out of memory");
        return 0;
    }
    if (d->info.version != WD_FORMAT_READ_MAX)
        return wd_errf(err, "%s: .wdelta version %u is not supported (this build reads versions %u to %u)", d->path,
                       d->info.version, WD_FORMAT_READ_MIN, WD_FORMAT_READ_MAX);
    if (size < WD_PREAMBLE_LEN + WD_FOOTER_LEN)
        return wd_errf(err, "%s: truncated: %llu bytes is less than the fixed parts", d->path, (unsigned long long)size);
    if (wd_pread_full(d->fd, pre, WD_PREAMBLE_LEN, 0, d->path, err)) return -1;
    flags = wd_preamble_flags(pre);
    if (flags & ~WD_KNOWN_FLAGS)
        return wd_errf(err, "%s: preamble flags 0x%x name features this version does not know", d->path, flags);
    if (wd_pread_full(d->fd, foot, WD_FOOTER_LEN, size - WD_FOOTER_LEN, d->path, err)) return -1;
    wd_footer ft;
    if (wd_footer_get(foot, &ft, d->path, err)) return -1;
    uint64_t moff = ft.moff, mlen = ft.mlen, toff = ft.toff, nb = ft.nblocks, fsize = ft.size;
    if (fsize != size)
        return wd_errf(err, "%s: file is %llu bytes but its footer says %llu (truncated or appended to)", d->path,
                       (unsigned long long)size, (unsigned long long)fsize);
    if (mlen > WD_MAX_MANIFEST || nb > WD_MAX_BLOCKS || moff < WD_PREAMBLE_LEN || moff + mlen != toff ||
        toff + nb * WD_BLOCK_ENTRY_LEN + WD_FOOTER_LEN != size)
        return wd_errf(err, "%s: footer describes an impossible layout (manifest %llu+%llu, table %llu, %llu blocks)",
                       d->path, (unsigned long long)moff, (unsigned long long)mlen, (unsigned long long)toff,
                       (unsigned long long)nb);
    size_t tlen = (size_t)nb * WD_BLOCK_ENTRY_LEN;
    unsigned char *buf = malloc(mlen + tlen + 1);
    if (!buf) return wd_errf(err, "out of memory reading the index of %s", d->path);
    if (wd_pread_full(d->fd, buf, mlen + tlen, moff, d->path, err)) {
        free(buf);
        return -1;
    }
    unsigned char digest[32];
    int dg = wd_footer_check_digest(foot, buf, mlen + tlen, digest, err);
    if (dg) {
        free(buf);
        if (dg < 0) return -1;
        return wd_errf(err, "%s: header digest mismatch: the manifest or block index is corrupt", d->path);
    }
    memcpy(d->info.digest, digest, 32);
    d->info.nblocks = (size_t)nb;
    d->blocks = calloc(nb ? nb : 1, sizeof *d->blocks);
    if (!d->blocks) {
        free(buf);
        return wd_errf(err, "out of memory");
    }
    for (size_t i = 0; i < nb; i++) {
        wd_block *b = &d->blocks[i];
        wd_block_entry_get(buf + mlen + i * WD_BLOCK_ENTRY_LEN, b);
        if (b->offset < WD_PREAMBLE_LEN || b->offset + b->stored_len > moff) {
            free(buf);
            return wd_errf(err, "%s: block %zu lies outside the data area", d->path, i);
        }
    }
    d->info.blocks = d->blocks;
    int rc;
    if (flags & WD_FLAG_ZMANIFEST) {
        char *text = NULL;
        size_t got = 0;
        rc = unzstd_manifest(d, buf, (size_t)mlen, &text, &got, err);
        if (!rc) rc = parse_manifest(d, text, got, err);
        free(text);
    } else {
        rc = parse_manifest(d, (const char *)buf, (size_t)mlen, err);
    }
    free(buf);
    return rc;
}

int wd_delta_open(const char *path, wd_delta **out, wd_err *err)
{
    return wd_delta_open_fd(-1, path, out, err);
}

int wd_delta_open_fd(int fd, const char *path, wd_delta **out, wd_err *err)
{
    wd_delta *d = calloc(1, sizeof *d);
    if (!d) return wd_errf(err, "out of memory");
    wd_scratch_pool_init(&d->pool, 2); /* idle scratches hold megabytes each: keep few */
    pthread_mutex_init(&d->memo_lock, NULL);
    d->memo_tensor = -1;
    d->path = strdup(path);
    d->fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : open(path, O_RDONLY | O_CLOEXEC);
    if (d->fd < 0) {
        wd_errk(err, errno == ENOENT || errno == ENOTDIR ? WD_ERR_MISSING : WD_ERR_DATA, "%s: %s", path,
                strerror(errno));
        wd_delta_close(d);
        return -1;
    }
    struct stat st;
    if (fstat(d->fd, &st)) {
        wd_errf(err, "%s: %s", path, strerror(errno));
        wd_delta_close(d);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        wd_errf(err, "%s: not a regular file", path);
        wd_delta_close(d);
        return -1;
    }
    d->info.file_size = (uint64_t)st.st_size;
    if (read_tail(d, (uint64_t)st.st_size, err) || map_blocks(d, err)) {
        wd_delta_close(d);
        return -1;
    }
    d->info.strategy = d->strategy ? d->strategy : "lossless";
    d->info.tool = d->tool ? d->tool : "";
    d->info.options_json = d->options_json;
    d->info.files = d->files;
    for (size_t i = 0; i < d->info.nfiles; i++) d->info.output_size += d->files[i].size;
    *out = d;
    return 0;
}

void wd_delta_close(wd_delta *d)
{
    if (!d) return;
    if (d->fd >= 0) close(d->fd);
    for (size_t f = 0; d->files && f < d->info.nfiles; f++) {
        free((char *)d->files[f].name);
        for (size_t k = 0; d->file_exts[f] && k < d->files[f].nextents; k++) {
            free(d->file_exts[f][k].tensor);
            free(d->file_exts[f][k].base_tensor);
            free(d->file_exts[f][k].params);
        }
        free(d->file_exts[f]);
        free(d->file_pub_exts[f]);
    }
    free(d->files);
    free(d->file_exts);
    free(d->file_pub_exts);
    free(d->blocks);
    free(d->block_ext);
    free(d->ext_by_num);
    if (d->base_fds) wd_fds_free(d->base_fds, d->base_fds_borrowed ? 0 : d->base->nfiles);
    wd_scratch_pool_destroy(&d->pool);
    wd_v1view_free(d);
    pthread_mutex_destroy(&d->memo_lock);
    wd_v1_close(d->v1);
    free(d->strategy);
    free(d->tool);
    free(d->options_json);
    free(d->parent_name);
    free(d->path);
    free(d);
}

const wd_delta_info *wd_delta_get_info(const wd_delta *d)
{
    return &d->info;
}

int wd_delta_find_file(const wd_delta *d, const char *name)
{
    for (size_t i = 0; i < d->info.nfiles; i++)
        if (!strcmp(d->files[i].name, name)) return (int)i;
    return -1;
}

void wd_delta_set_stop(wd_delta *d, const volatile sig_atomic_t *stop)
{
    d->stop = stop;
}

void wd_delta_v1_use_base_dtype(wd_delta *d, int yes)
{
    d->v1_base_dtype = yes;
}

static int open_base_fds(wd_delta *d, const wd_model *base, wd_err *err)
{
    d->base_fds = wd_fds_new(base->nfiles);
    if (!d->base_fds) return wd_errf(err, "out of memory");
    d->base = base;
    d->src = &wd_base_dir_source;
    for (size_t i = 0; i < base->nfiles; i++)
        if ((d->base_fds[i] = open(base->files[i].path, O_RDONLY | O_CLOEXEC)) < 0)
            return wd_errf(err, "%s: %s", base->files[i].path, strerror(errno));
    return 0;
}

static int set_base(wd_delta *d, const wd_model *base, const int *fds, wd_err *err);

int wd_delta_set_base(wd_delta *d, const wd_model *base, wd_err *err)
{
    return set_base(d, base, NULL, err);
}

int wd_delta_set_base_fds(wd_delta *d, const wd_model *base, const int *fds, wd_err *err)
{
    if (!fds) return wd_errf(err, "%s: no base descriptors given", d->path);
    return set_base(d, base, fds, err);
}

static int base_fds_of(wd_delta *d, const wd_model *base, const int *fds, wd_err *err)
{
    if (!fds) return open_base_fds(d, base, err);
    d->base_fds = malloc((base->nfiles ? base->nfiles : 1) * sizeof *d->base_fds);
    if (!d->base_fds) return wd_errf(err, "out of memory");
    d->base = base;
    d->src = &wd_base_dir_source;
    d->base_fds_borrowed = 1;
    for (size_t i = 0; i < base->nfiles; i++) d->base_fds[i] = fds[i];
    return 0;
}

static int set_base(wd_delta *d, const wd_model *base, const int *fds, wd_err *err)
{
    if (d->base || d->parent) return wd_errf(err, "%s: a base is already attached", d->path);
    if (d->v1) {
        if (base_fds_of(d, base, fds, err) || wd_v1view_set_base(d, base, err) || map_blocks(d, err)) return -1;
        return 0;
    }
    for (size_t i = 0; i < d->next; i++) {
        wd_ext_priv *e = d->ext_by_num[i];
        if (!e->base_tensor) continue;
        size_t fi;
        const wd_tensor *t = wd_model_find(base, e->base_tensor, &fi);
        if (!t)
            return wd_errf(err, "%s: base %s has no tensor %s", d->path, base->dir, e->base_tensor);
        if (t->dtype != wd_ext_base_dtype(e) || t->length != wd_ext_base_length(e))
            return wd_errf(err, "%s: base tensor %s is %s of %llu bytes, the delta expects %llu bytes", d->path,
                           e->base_tensor, t->dtype_name, (unsigned long long)t->length,
                           (unsigned long long)wd_ext_base_length(e));
        e->base_fd_index = (int)fi;
        e->base_offset = t->offset;
    }
    return base_fds_of(d, base, fds, err);
}

int wd_delta_locate(const wd_delta *d, size_t f, uint64_t off, uint32_t *block, uint64_t *block_file_off)
{
    if (f >= d->info.nfiles || off >= d->files[f].size) return -1;
    const wd_ext_priv *ex = d->file_exts[f];
    size_t lo = 0, hi = d->files[f].nextents;
    while (hi - lo > 1) { /* last extent starting at or before off */
        size_t mid = (lo + hi) / 2;
        if (ex[mid].pub.file_offset <= off) lo = mid;
        else hi = mid;
    }
    const wd_extent *e = &ex[lo].pub;
    uint64_t k = (off - e->file_offset) / e->block_size;
    *block = e->first_block + (uint32_t)k;
    *block_file_off = e->file_offset + k * e->block_size;
    return 0;
}

static int where(const wd_delta *d, uint32_t block, wd_err *err)
{
    const wd_ext_priv *e = d->ext_by_num[d->block_ext[block]];
    const wd_block *b = &d->blocks[block];
    if (e->pub.tensor)
        return wd_errprefix(err, "%s: tensor %s, block %u (delta offset %llu)", d->path, e->pub.tensor, block,
                            (unsigned long long)b->offset);
    return wd_errprefix(err, "%s: block %u (delta offset %llu)", d->path, block, (unsigned long long)b->offset);
}

/* Does block's decode read its base as it lies in a base directory's file
 * (a delta codec, no prediction, a base directory attached)?  Then the
 * base bytes are out_len bytes at the base tensor's offset + rel, and
 * wd_delta_read_inputs may read them ahead. */
static int reads_base_dir(const wd_delta *d, const wd_ext_priv *e)
{
    return !d->v1 && !e->pred && wd_codec_needs_base(e->pub.codec) && d->src == &wd_base_dir_source &&
           e->base_fd_index >= 0;
}

/* Decode block from its stored bytes (read, not yet checked) and, when
 * base_in is not NULL, its base bytes read ahead (wd_delta_read_inputs);
 * else the base is read here through the source.
 *
 * Both checksums are checked on every decode.  The whole-block codecs
 * (lossless, zstd) compute them inside their gather, while the output is
 * in registers, so their stored bytes are decoded before their checksum is
 * known: the decoder takes any bytes (its parsers are fuzzed, every length
 * is bounded), and a stored checksum that does not match wins over
 * whatever the decode said, so the error is the one a check before the
 * decode gives (FORMAT.md, "What a reader checks"). */
static int decode_from(wd_delta *d, uint32_t block, const unsigned char *stored, const unsigned char *base_in,
                       void *out, wd_scratch *s, wd_err *err)
{
    const wd_block *b = &d->blocks[block];
    const wd_ext_priv *e = d->ext_by_num[d->block_ext[block]];
    int rc = -1;
    const unsigned char *base = NULL;
    wd_cache_pin *pin = NULL;
    int whole = !e->pred && (e->pub.codec == WD_CODEC_LOSSLESS || e->pub.codec == WD_CODEC_ZSTD);
    uint64_t hashes[2]; /* output, stored bytes */
    if (!whole && wd_hash64(stored, b->stored_len, 0) != b->stored_hash) goto stored_bad;
    uint64_t rel = (uint64_t)(block - e->pub.first_block) * e->pub.block_size;
    if (e->pred) { /* another dtype or shape than the base (xdtype.h) */
        if (wd_xdtype_decode(d, e, s, stored, b->stored_len, rel, out, b->out_len, err)) goto out_where;
        base = out; /* read a base: a wrong one shows in the output checksum */
    } else {
        /* a chain link reads its parent's cached block in place */
        if (base_in) base = base_in;
        else if (wd_codec_needs_base(e->pub.codec) && wd_delta_base_view(d, e, s, b->out_len, rel, &base, &pin, err)) {
            if (whole && wd_hash64(stored, b->stored_len, 0) != b->stored_hash) goto stored_bad;
            goto out_where;
        }
        if (whole) {
            if (wd_lossless_decode_kernel(s, e->pub.codec, e->pub.dtype, stored, b->stored_len, base, out,
                                          b->out_len, WD_LL_AUTO, hashes, err)) {
                if (wd_hash64(stored, b->stored_len, 0) != b->stored_hash) goto stored_bad;
                goto out_where;
            }
            if (hashes[1] != b->stored_hash) goto stored_bad;
        } else if (wd_decode_block(s, e->pub.codec, e->pub.dtype, stored, b->stored_len, base, out, b->out_len,
                                   err)) {
            goto out_where;
        }
    }
    if (!whole) hashes[0] = wd_hash64(out, b->out_len, 0);
    if (hashes[0] != b->out_hash) {
        wd_errf(err, "output checksum mismatch (%s)",
                base ? "the base file differs from the one the delta was made against" : "corrupt block");
        goto out_where;
    }
    rc = 0;
    goto out;
stored_bad:
    wd_errf(err, "stored checksum mismatch (the delta file is corrupt)");
out_where:
    where(d, block, err);
out:
    wd_delta_base_done(d, pin);
    return rc;
}

/* The checks every decode makes first: the block exists, its source is there. */
static int decodable(wd_delta *d, uint32_t block, wd_err *err)
{
    if (block >= d->info.nblocks) return wd_errf(err, "%s: no block %u", d->path, block);
    const wd_ext_priv *e = d->ext_by_num[d->block_ext[block]];
    if (!d->v1 && wd_codec_needs_base(e->pub.codec) && ((!d->base && !d->parent) || e->base_fd_index < 0))
        return wd_errf(err, "%s: tensor %s needs the base model, which is not attached", d->path,
                       e->tensor ? e->tensor : e->base_tensor); /* "tensor" is optional in the manifest */
    return 0;
}

int wd_delta_decode_with(wd_delta *d, uint32_t block, void *out, wd_scratch *s, wd_err *err)
{
    if (decodable(d, block, err)) return -1;
    if (d->v1) return wd_v1view_decode(d, block, out, err);
    const wd_block *b = &d->blocks[block];
    unsigned char *stored = wd_scratch_buf(s, 0, b->stored_len);
    if (!stored) return wd_errf(err, "out of memory");
    if (wd_pread_full(d->fd, stored, b->stored_len, b->offset, "read", err)) {
        where(d, block, err);
        return -1;
    }
    return decode_from(d, block, stored, NULL, out, s, err);
}

int wd_delta_decode_block(wd_delta *d, uint32_t block, void *out, wd_err *err)
{
    wd_scratch *s = wd_scratch_pool_get(&d->pool);
    if (!s) return wd_errf(err, "out of memory");
    int rc = wd_delta_decode_with(d, block, out, s, err);
    wd_scratch_pool_put(&d->pool, s);
    return rc;
}

static int grow(unsigned char **buf, size_t *cap, size_t n)
{
    if (n <= *cap) return 0;
    free(*buf);
    *buf = malloc(n ? n : 1);
    *cap = *buf ? n : 0;
    return *buf ? 0 : -1;
}

int wd_delta_read_inputs(wd_delta *d, uint32_t block, wd_block_inputs *in, wd_err *err)
{
    in->block = block;
    in->has_base = 0;
    in->v1 = d->v1 != NULL;
    if (decodable(d, block, err)) return -1;
    if (in->v1) return 0; /* read as it decodes */
    const wd_block *b = &d->blocks[block];
    const wd_ext_priv *e = d->ext_by_num[d->block_ext[block]];
    if (grow(&in->stored, &in->stored_cap, b->stored_len)) return wd_errf(err, "out of memory");
    if (wd_pread_full(d->fd, in->stored, b->stored_len, b->offset, "read", err)) {
        where(d, block, err);
        return -1;
    }
    if (!reads_base_dir(d, e)) return 0;
    if (grow(&in->base, &in->base_cap, b->out_len)) return wd_errf(err, "out of memory");
    uint64_t rel = (uint64_t)(block - e->pub.first_block) * e->pub.block_size;
    if (wd_delta_read_base(d, e, in->base, b->out_len, rel, err)) {
        where(d, block, err);
        return -1;
    }
    in->has_base = 1;
    return 0;
}

int wd_delta_decode_inputs(wd_delta *d, const wd_block_inputs *in, void *out, wd_err *err)
{
    if (in->v1) return wd_delta_decode_block(d, in->block, out, err);
    wd_scratch *s = wd_scratch_pool_get(&d->pool);
    if (!s) return wd_errf(err, "out of memory");
    int rc = decode_from(d, in->block, in->stored, in->has_base ? in->base : NULL, out, s, err);
    wd_scratch_pool_put(&d->pool, s);
    return rc;
}

void wd_block_inputs_free(wd_block_inputs *in)
{
    free(in->stored);
    free(in->base);
    memset(in, 0, sizeof *in);
}

/* ---- accessors for the layers above (delta.h) ------------------------ */
const wd_model *wd_delta_base_model(const wd_delta *d)
{
    return d->base;
}

int wd_delta_has_source(const wd_delta *d)
{
    return d->src != NULL;
}

int wd_delta_is_v1(const wd_delta *d)
{
    return d->v1 != NULL;
}

const volatile sig_atomic_t *wd_delta_get_stop(const wd_delta *d)
{
    return d->stop;
}

const wd_ext_priv *wd_delta_ext(const wd_delta *d, size_t f, size_t k)
{
    return &d->file_exts[f][k];
}

int wd_delta_read_stored(wd_delta *d, uint32_t b, unsigned char **buf, size_t *cap, wd_err *err)
{
    const wd_block *bl = &d->blocks[b];
    if (bl->stored_len > *cap) {
        free(*buf);
        *buf = malloc(bl->stored_len);
        *cap = *buf ? bl->stored_len : 0;
        if (!*buf) return wd_errf(err, "out of memory");
    }
    if (wd_pread_full(d->fd, *buf, bl->stored_len, bl->offset, d->path, err)) return -1;
    if (wd_hash64(*buf, bl->stored_len, 0) != bl->stored_hash)
        return wd_errf(err, "%s: block %u (offset %llu): stored checksum mismatch", d->path, b,
                       (unsigned long long)bl->offset);
    return 0;
}
