/* readahead.c - wdeltafs: decoding ahead of a sequential reader.  A read
 * (read.c) that follows the previous one queues the blocks after it; the
 * worker threads decode them into the block cache, where the reads that
 * come next find them. */
#include "readahead.h"

/* Queue the `count` blocks that follow file offset `pos` of output file f,
 * in file order (the library's wd_delta_next_blocks says which).  Blocks
 * already queued for this handle are skipped.  ds->lock held. */
void queue_prefetch_locked(daemon_state *ds, handle *h, size_t f, uint64_t pos, unsigned count)
{
    model *m = h->m;
    uint32_t next[64]; /* readahead= is at most 64 */
    size_t room = sizeof ds->q / sizeof *ds->q - ds->qlen, want = count;
    if (want > room) want = room;
    if (want > sizeof next / sizeof *next) want = sizeof next / sizeof *next;
    if (pos < h->ra_until) pos = h->ra_until;
    size_t n = wd_delta_next_blocks(m->d, f, pos, next, want, &pos);
    for (size_t k = 0; k < n; k++) {
        model_ref(&ds->t, m);
        ds->q[(ds->qhead + ds->qlen) % (sizeof ds->q / sizeof *ds->q)] = (prefetch_job){m, next[k]};
        ds->qlen++;
    }
    h->ra_until = pos;
    pthread_cond_broadcast(&ds->work);
}

static void *prefetch_main(void *arg)
{
    daemon_state *ds = arg;
    for (;;) {
        pthread_mutex_lock(&ds->lock);
        while (!ds->qlen && !ds->stopping) pthread_cond_wait(&ds->work, &ds->lock);
        if (ds->stopping) {
            pthread_mutex_unlock(&ds->lock);
            return NULL;
        }
        prefetch_job j = ds->q[ds->qhead];
        ds->qhead = (ds->qhead + 1) % (sizeof ds->q / sizeof *ds->q);
        ds->qlen--;
        pthread_mutex_unlock(&ds->lock);
        /* a failure is not logged here: the read that needs the block
         * fails too and logs it, once per read rather than per guess */
        wd_err err;
        (void)wd_cache_prefetch(j.m->d, j.m->key, ds->t.cache, j.block, &err);
        model_unref(&ds->t, j.m);
    }
}

unsigned readahead_start(daemon_state *ds, pthread_t *pf)
{
    unsigned n = 0;
    for (unsigned i = 0; i < ds->prefetch_threads; i++)
        if (pthread_create(&pf[n], NULL, prefetch_main, ds) == 0) n++;
    return n;
}

void readahead_join(daemon_state *ds, pthread_t *pf, unsigned n)
{
    for (unsigned i = 0; i < n; i++) pthread_join(pf[i], NULL);
    while (ds->qlen) { /* drop read-ahead not done */
        model_unref(&ds->t, ds->q[ds->qhead].m);
        ds->qhead = (ds->qhead + 1) % (sizeof ds->q / sizeof *ds->q);
        ds->qlen--;
    }
}
