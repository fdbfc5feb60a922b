/* read.c - wdeltafs: the replies to reads.  A delta's output file is
 * decoded by the core's wd_read_pinned (through the block cache) and sent
 * from the cache's pinned blocks without a copy; a file passed
 * through (config.json, ...) is read from its own descriptor; the status
 * document from the handle's copy.  A failure is logged and becomes EIO. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include "read.h"
#include "readahead.h" /* queue_prefetch_locked */

/* Reply with a copy of data that belongs to a handle (see op_readdir). */
void reply_copy(fuse_req_t req, const char *data, size_t n)
{
    char small[4096], *buf = n <= sizeof small ? small : malloc(n);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memcpy(buf, data, n);
    fuse_reply_buf(req, buf, n);
    if (buf != small) free(buf);
}

void read_delta_file(fuse_req_t req, daemon_state *ds, handle *h, size_t size, off_t off)
{
    const mfile *f = &h->m->files[h->fidx];
    if ((uint64_t)off >= f->size) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    /* answered from the cache's blocks, pinned until the reply is written */
    wd_readv rv;
    wd_err err;
    ssize_t n = wd_read_pinned(h->m->d, h->m->key, ds->t.cache, (size_t)f->delta_file, size, (uint64_t)off, &rv,
                               &err);
    if (n < 0) {
        logmsg(LOG_ERR, "read of %s/%s at offset %lld failed: %s", h->m->rel, f->name, (long long)off, err.msg);
        fuse_reply_err(req, EIO);
        return;
    }
    /* a sequential reader: decode the next blocks on other threads.
     * All of this before replying: once the reply is out, the kernel
     * may release the handle.  The kernel sends reads of one handle in
     * parallel and they may finish out of order, so "sequential" means
     * near where the reader was; the state is kept under ds->lock. */
    uint64_t end = (uint64_t)off + (uint64_t)n, u = (uint64_t)off;
    pthread_mutex_lock(&ds->lock);
    int seq = u + SEQ_WINDOW >= h->next_off && u <= h->next_off + SEQ_WINDOW;
    if (ds->readahead && seq && end < f->size) {
        /* keep `readahead` blocks queued beyond what was just read */
        uint64_t want = end + (uint64_t)ds->readahead * WD_DEFAULT_BLOCK_SIZE;
        if (h->ra_until < want) queue_prefetch_locked(ds, h, (size_t)f->delta_file, end, ds->readahead);
    }
    if (!seq) h->ra_until = end; /* a jump: read-ahead starts over from here */
    if (!seq || end > h->next_off) h->next_off = end;
    pthread_mutex_unlock(&ds->lock);
    if (rv.niov) fuse_reply_iov(req, rv.iov, rv.niov);
    else fuse_reply_buf(req, NULL, 0);
    wd_read_release(ds->t.cache, &rv);
}

void read_extra_file(fuse_req_t req, handle *h, size_t size, off_t off)
{
    const mfile *f = &h->m->files[h->fidx];
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ssize_t n = pread(h->fd, buf, size, off);
    if (n < 0) {
        logmsg(LOG_ERR, "read of %s at offset %lld failed: %s", f->extra_path, (long long)off, strerror(errno));
        fuse_reply_err(req, EIO);
    } else {
        fuse_reply_buf(req, buf, (size_t)n);
    }
    free(buf);
}

void read_status(fuse_req_t req, handle *h, size_t size, off_t off)
{
    size_t o = (size_t)off < h->text_len ? (size_t)off : h->text_len;
    size_t n = h->text_len - o < size ? h->text_len - o : size;
    reply_copy(req, h->text + o, n);
}
