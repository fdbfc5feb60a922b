/* xattr.c - wdeltafs: what a model directory tells about its delta through
 * extended attributes (codec, hashes, sizes, the delta's path, its parent). */
#include <stdio.h>
#include <string.h>
#include "xattr.h"

static const char *const xattr_names[] = {"user.wdelta.codec", "user.wdelta.base_hash", "user.wdelta.result_hash",
                                          "user.wdelta.stored_size", "user.wdelta.ratio", "user.wdelta.delta",
                                          "user.wdelta.parent"};

int xattr_value(const model *m, const char *name, char *out, size_t n)
{
    const wd_delta_info *in = wd_delta_get_info(m->d);
    char hex[65];
    if (!strcmp(name, xattr_names[0])) {
        /* the strategy, plus the codecs its extents use */
        int used[32] = {0};
        size_t len = (size_t)snprintf(out, n, "%s", in->strategy);
        for (size_t f = 0; f < in->nfiles; f++)
            for (size_t k = 0; k < in->files[f].nextents; k++) used[in->files[f].extents[k].codec & 31] = 1;
        const char *sep = " (";
        for (int c = 0; c < 32 && len < n; c++)
            if (used[c]) {
                len += (size_t)snprintf(out + len, n - len, "%s%s", sep, wd_codec_name((wd_codec)c));
                sep = ",";
            }
        if (len < n && strcmp(sep, " (")) snprintf(out + len, n - len, ")");
    } else if (!strcmp(name, xattr_names[1])) {
        wd_hex(in->base_hash, 32, hex);
        snprintf(out, n, "%s", hex);
    } else if (!strcmp(name, xattr_names[2])) {
        wd_hex(in->result_hash, 32, hex);
        snprintf(out, n, "%s", in->version == 1 ? "none (deltatensors v1 records none)" : hex);
    } else if (!strcmp(name, xattr_names[3])) {
        snprintf(out, n, "%llu", (unsigned long long)in->file_size);
    } else if (!strcmp(name, xattr_names[4])) {
        snprintf(out, n, "%.3f", in->file_size ? (double)in->output_size / (double)in->file_size : 0.0);
    } else if (!strcmp(name, xattr_names[5])) {
        snprintf(out, n, "%s", m->delta_path);
    } else if (!strcmp(name, xattr_names[6])) {
        /* lineage: the parent's directory under the mount (as
         * .wdeltafs/lineage/NAME links to it), else its base's path */
        const char *p = m->parent ? m->parent->rel : m->base->bm ? m->base->bm->rel : m->base->dir;
        snprintf(out, n, "%s", p);
    } else {
        return -1;
    }
    return 0;
}

size_t xattr_list(char *out, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < sizeof xattr_names / sizeof *xattr_names; i++) {
        size_t l = strlen(xattr_names[i]) + 1;
        if (len + l > n) break;
        memcpy(out + len, xattr_names[i], l);
        len += l;
    }
    return len;
}
