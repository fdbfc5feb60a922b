/* lineage.h - what the lineage files (core/lineage/) share; not installed. */
#ifndef WDELTA_LINEAGE_H
#define WDELTA_LINEAGE_H

#include "delta/delta.h" /* wd_err, the delta accessors */
#include <dirent.h>      /* DIR */

/* The .wdelta names (not hidden) of an open directory, sorted by name so
 * nothing depends on readdir order: *names holds *n strdup'd names (free
 * each, then the array; both NULL/0 when there are none).  -1 with err
 * set (then nothing is left to free). */
int wd_list_delta_names(DIR *dir, char ***names, size_t *n, wd_err *err);

#endif
