/* flatten.c - wd_flatten: a chain link (or any delta with its source
 * attached) recoded as one delta against the base directory: the model it
 * rebuilds is written next to the output (wd_apply), then created from
 * (wd_create), then removed. */
#include "ops/ops.h"
#include "delta/delta.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int wd_flatten(wd_delta *d, const wd_create_opts *o, wd_create_stats *st, wd_err *err)
{
    if (!o->base_dir || !o->out_path) return wd_errf(err, "flatten needs a base directory and an output path");
    if (!wd_delta_has_source(d)) return wd_errf(err, "%s: no base attached", wd_delta_path(d));
    /* the model d rebuilds, next to the output, removed when done: the
     * fine-tune side of a delta must be a directory to create from.  It is
     * built inside a private directory (0700): the rebuilt model of a
     * private delta is not shown to others on the way. */
    wd_err e0;
    if (wd_remove_stale(o->out_path, &e0) < 0) {
        *err = e0;
        return -1;
    }
    char *tmp = NULL;
    if (wd_tmp_dir(o->out_path, "rebuild", 0700, &tmp, err) < 0) return -1;
    size_t ml = strlen(tmp) + 8;
    char *model = malloc(ml);
    if (!model) {
        rmdir(tmp);
        free(tmp);
        return wd_errf(err, "out of memory");
    }
    snprintf(model, ml, "%s/model", tmp);
    const volatile sig_atomic_t *old_stop = wd_delta_get_stop(d);
    if (o->stop) wd_delta_set_stop(d, o->stop);
    int rc = wd_apply(d, model, o->threads, NULL, NULL, err);
    wd_delta_set_stop(d, old_stop);
    if (!rc) {
        wd_create_opts c = *o;
        c.ft_dir = model;
        c.parent = NULL;
        rc = wd_create(&c, st, err);
    }
    wd_apply_remove(d, model); /* nothing there if wd_apply failed: it cleans up its own */
    rmdir(tmp);
    free(model);
    free(tmp);
    return rc;
}
