/* xattr.h - the extended attributes of a model directory (user.wdelta.*). */
#ifndef WDELTAFS_XATTR_H
#define WDELTAFS_XATTR_H

#include <stddef.h>
#include "tree.h" /* model */

/* the value of attribute `name` of m into out[n]; -1 if there is no such attribute */
int xattr_value(const model *m, const char *name, char *out, size_t n);
/* the names, each followed by a NUL, into out[n]; their total length */
size_t xattr_list(char *out, size_t n);

#endif
