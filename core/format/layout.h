/* layout.h - the byte layout of a .wdelta v2 file (core/FORMAT.md):
 * preamble, footer and block table constants.  Not installed. */
#ifndef WDELTA_LAYOUT_H
#define WDELTA_LAYOUT_H

#include "wdelta.h" /* the public types */

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


#endif
