/* inodes.h - attributes of what the mount shows, and the inodes the kernel
 * holds (lookup count > 0), which stay valid after a rescan drops them. */
#ifndef WDELTAFS_INODES_H
#define WDELTAFS_INODES_H

#include <stdint.h>
#include <sys/stat.h>
#include "daemon.h" /* daemon_state, fuse_req_t */

void fill_attr(const node *n, struct stat *st);
void reply_entry_of(fuse_req_t req, const node *n);
/* count a lookup reply about to go out for n (model dirs and files) */
void known_add(daemon_state *ds, const node *n);
void known_forget(daemon_state *ds, uint64_t ino, uint64_t nlookup);
/* fill *out for an inode no longer in the snapshot (a reference to out->m
 * the caller drops); 0 if known, else -1 */
int known_node(daemon_state *ds, uint64_t ino, node *out);
void known_free(daemon_state *ds);

#endif
