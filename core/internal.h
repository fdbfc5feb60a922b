/* internal.h - every private header of core/, for the unit tests, fuzzers
 * and benches that test internals.  Library files include only the module
 * headers they use (each layer's own: util/util.h, format/layout.h,
 * model/model_int.h, codec/codec.h, codec/lossy.h, legacy/legacy.h,
 * delta/delta.h, delta/delta_impl.h, delta/xdtype.h, cache/cache_int.h, ops/ops.h). */
#ifndef WDELTA_INTERNAL_H
#define WDELTA_INTERNAL_H

#include "util/util.h"
#include "format/layout.h"
#include "model/model_int.h"
#include "codec/codec.h"
#include "codec/lossy.h"
#include "legacy/legacy.h"
#include "delta/delta.h"
#include "delta/delta_impl.h"
#include "delta/xdtype.h"
#include "cache/cache_int.h"
#include "ops/ops.h"

#endif
