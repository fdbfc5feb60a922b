/* legacy.h - deltatensors v1 views (core/legacy/v1_view.c): a v1
 * delta decoded through struct wd_delta; not installed. */
#ifndef WDELTA_LEGACY_H
#define WDELTA_LEGACY_H

#include "delta/delta.h" /* struct wd_delta */

/* v1_view.c */
int wd_v1view_set_base(wd_delta *d, const wd_model *base, wd_err *err);
int wd_v1view_decode(wd_delta *d, uint32_t block, unsigned char *out, wd_err *err);
void wd_v1view_free(wd_delta *d);


#endif
