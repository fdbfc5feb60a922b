/* layout.h - the byte layout of a .wdelta v2 file (core/FORMAT.md):
 * preamble, footer and block table, written and read by layout.c only
 * (so the offsets below live in one file).  Not installed. */
#ifndef WDELTA_LAYOUT_H
#define WDELTA_LAYOUT_H

#include "util/util.h" /* wd_put_u64/wd_get_u64, wd_err */

/* ---- file layout constants of .wdelta v2 (see core/FORMAT.md) */
#define WD_MAGIC "wdelta\0"
#define WD_MAGIC_LEN 7
#define WD_PREAMBLE_LEN 16
#define WD_FOOTER_LEN 88
#define WD_FOOTER_MAGIC "wdv2end\0"
#define WD_BLOCK_ENTRY_LEN 32
#define WD_MAX_MANIFEST (256u * 1024 * 1024)
#define WD_MAX_BLOCKS (1u << 28)
/* preamble flags (u32 at offset 11) */
#define WD_FLAG_ZMANIFEST 1u /* the manifest is one zstd frame */
#define WD_KNOWN_FLAGS WD_FLAG_ZMANIFEST

/* The preamble (16 bytes): magic, u32 version at 7, u32 flags at 11. */
void wd_preamble_put(unsigned char pre[WD_PREAMBLE_LEN], uint32_t version, uint32_t flags);
uint32_t wd_preamble_version(const unsigned char pre[WD_PREAMBLE_LEN]);
uint32_t wd_preamble_flags(const unsigned char pre[WD_PREAMBLE_LEN]);
#define WD_PREAMBLE_FLAGS_AT 11 /* where a writer patches the flags in */

/* A block table entry (32 bytes): u64 offset, u32 stored_len, u32 out_len,
 * u64 stored_hash, u64 out_hash. */
void wd_block_entry_put(unsigned char e[WD_BLOCK_ENTRY_LEN], const wd_block *b);
void wd_block_entry_get(const unsigned char e[WD_BLOCK_ENTRY_LEN], wd_block *b);

/* The footer (88 bytes): u64 manifest offset, manifest length, table
 * offset, block count, file size; the SHA-256 of manifest, table and those
 * 40 bytes; the footer magic. */
typedef struct wd_footer {
    uint64_t moff, mlen, toff, nblocks, size;
    unsigned char digest[32];
} wd_footer;
/* Fill foot from f, its digest taken over the stored manifest and table
 * (f->digest set too). */
int wd_footer_put(unsigned char foot[WD_FOOTER_LEN], wd_footer *f, const unsigned char *manifest,
                  const unsigned char *table, wd_err *err);
/* Read foot into f: -1 (err set, naming path) without the footer magic. */
int wd_footer_get(const unsigned char foot[WD_FOOTER_LEN], wd_footer *f, const char *path, wd_err *err);
/* 0 if the digest of the stored manifest and table (buf: mlen + table
 * bytes) with the footer's first 40 bytes is the footer's. */
int wd_footer_check_digest(const unsigned char foot[WD_FOOTER_LEN], const unsigned char *buf, size_t len,
                           unsigned char out[32], wd_err *err);


#endif
