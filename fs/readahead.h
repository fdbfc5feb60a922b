/* readahead.h - decoding ahead of a sequential reader: a queue of blocks
 * (daemon_state.q) that worker threads decode into the cache. */
#ifndef WDELTAFS_READAHEAD_H
#define WDELTAFS_READAHEAD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "daemon.h" /* daemon_state, handle */

/* queue the `count` blocks that follow offset pos of output file f (ds->lock held) */
void queue_prefetch_locked(daemon_state *ds, handle *h, size_t f, uint64_t pos, unsigned count);
/* start ds->prefetch_threads workers into pf[]; the number started */
unsigned readahead_start(daemon_state *ds, pthread_t *pf);
/* after ds->stopping is set and ds->work broadcast: join the workers and
 * drop the jobs not done */
void readahead_join(daemon_state *ds, pthread_t *pf, unsigned n);

#endif
