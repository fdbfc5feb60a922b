/* read.h - answering reads of open files: a delta's output file (decoded
 * through the cache, read-ahead queued for a sequential reader), a file
 * passed through, the status document. */
#ifndef WDELTAFS_READ_H
#define WDELTAFS_READ_H

#include <stddef.h>
#include <sys/types.h>
#include "daemon.h" /* daemon_state, handle, fuse_req_t */

/* reply with a copy of n bytes of data that belongs to a handle */
void reply_copy(fuse_req_t req, const char *data, size_t n);
void read_delta_file(fuse_req_t req, daemon_state *ds, handle *h, size_t size, off_t off);
void read_extra_file(fuse_req_t req, handle *h, size_t size, off_t off);
void read_status(fuse_req_t req, handle *h, size_t size, off_t off);

#endif
