/* ops.h - the FUSE low-level operations of wdeltafs, and the open handles
 * they create. */
#ifndef WDELTAFS_OPS_H
#define WDELTAFS_OPS_H

#include "daemon.h" /* daemon_state, handle, struct fuse_lowlevel_ops */

extern const struct fuse_lowlevel_ops fs_ops;
/* unlink h from ds->handles and free it (closing an open file) */
void handle_free(daemon_state *ds, handle *h);

#endif
