/* readahead.h - decoding ahead of a sequential reader: a queue of blocks
 * (daemon_state.q) that worker threads decode into the cache. */
#ifndef WDELTAFS_READAHEAD_H
#define WDELTAFS_READAHEAD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "daemon.h" /* daemon_state, handle */

/* queue the blocks of output file f from offset pos up to offset until (ds->lock held) */
void queue_prefetch_locked(daemon_state *ds, handle *h, size_t f, uint64_t pos, uint64_t until);
/* start ds->prefetch_threads workers into pf[]; the number started */
unsigned readahead_start(daemon_state *ds, pthread_t *pf);
/* after ds->stopping is set and ds->work broadcast: join the workers and
 * drop the jobs not done */
void readahead_join(daemon_state *ds, pthread_t *pf, unsigned n);

#endif
