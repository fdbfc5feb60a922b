/* layout.c - the fixed parts of a .wdelta v2 file (FORMAT.md): preamble,
 * block table entries and footer, written (ops/delta_write.c) and read
 * (delta/delta_read.c) through these functions, so that their offsets are
 * written down once. */
#include "format/layout.h"
#include <string.h>

void wd_preamble_put(unsigned char pre[WD_PREAMBLE_LEN], uint32_t version, uint32_t flags)
{
    memset(pre, 0, WD_PREAMBLE_LEN);
    memcpy(pre, WD_MAGIC, WD_MAGIC_LEN);
    wd_put_u32(pre + 7, version);
    wd_put_u32(pre + WD_PREAMBLE_FLAGS_AT, flags);
}

uint32_t wd_preamble_version(const unsigned char pre[WD_PREAMBLE_LEN])
{
    return wd_get_u32(pre + 7);
}

uint32_t wd_preamble_flags(const unsigned char pre[WD_PREAMBLE_LEN])
{
    return wd_get_u32(pre + WD_PREAMBLE_FLAGS_AT);
}

void wd_block_entry_put(unsigned char e[WD_BLOCK_ENTRY_LEN], const wd_block *b)
{
    wd_put_u64(e, b->offset);
    wd_put_u32(e + 8, b->stored_len);
    wd_put_u32(e + 12, b->out_len);
    wd_put_u64(e + 16, b->stored_hash);
    wd_put_u64(e + 24, b->out_hash);
}

void wd_block_entry_get(const unsigned char e[WD_BLOCK_ENTRY_LEN], wd_block *b)
{
    b->offset = wd_get_u64(e);
    b->stored_len = wd_get_u32(e + 8);
    b->out_len = wd_get_u32(e + 12);
    b->stored_hash = wd_get_u64(e + 16);
    b->out_hash = wd_get_u64(e + 24);
}

static void put_fields(unsigned char foot[WD_FOOTER_LEN], const wd_footer *f)
{
    memset(foot, 0, WD_FOOTER_LEN);
    wd_put_u64(foot, f->moff);
    wd_put_u64(foot + 8, f->mlen);
    wd_put_u64(foot + 16, f->toff);
    wd_put_u64(foot + 24, f->nblocks);
    wd_put_u64(foot + 32, f->size);
}

int wd_footer_put(unsigned char foot[WD_FOOTER_LEN], wd_footer *f, const unsigned char *manifest,
                  const unsigned char *table, wd_err *err)
{
    put_fields(foot, f);
    wd_sha256 *h = wd_sha256_new();
    if (!h) return wd_errf(err, "out of memory");
    wd_sha256_update(h, manifest, (size_t)f->mlen);
    wd_sha256_update(h, table, (size_t)f->nblocks * WD_BLOCK_ENTRY_LEN);
    wd_sha256_update(h, foot, 40);
    wd_sha256_final(h, f->digest);
    memcpy(foot + 40, f->digest, 32);
    memcpy(foot + 80, WD_FOOTER_MAGIC, 8);
    return 0;
}

int wd_footer_get(const unsigned char foot[WD_FOOTER_LEN], wd_footer *f, const char *path, wd_err *err)
{
    if (memcmp(foot + 80, WD_FOOTER_MAGIC, 8))
        return wd_errf(err, "%s: footer missing (file truncated or not completely written)", path);
    f->moff = wd_get_u64(foot);
    f->mlen = wd_get_u64(foot + 8);
    f->toff = wd_get_u64(foot + 16);
    f->nblocks = wd_get_u64(foot + 24);
    f->size = wd_get_u64(foot + 32);
    memcpy(f->digest, foot + 40, 32);
    return 0;
}

int wd_footer_check_digest(const unsigned char foot[WD_FOOTER_LEN], const unsigned char *buf, size_t len,
                           unsigned char out[32], wd_err *err)
{
    wd_sha256 *h = wd_sha256_new();
    if (!h) return wd_errf(err, "out of memory");
    wd_sha256_update(h, buf, len);
    wd_sha256_update(h, foot, 40);
    wd_sha256_final(h, out);
    return memcmp(out, foot + 40, 32) ? 1 : 0;
}
