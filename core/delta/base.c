/* base.c - reading a delta's base bytes, whatever their source.
 *
 * A delta's source (struct wd_base_source, delta.h) is set when a base is
 * attached: the base model's files here (wd_base_dir_source, pread from
 * the descriptors wd_delta_set_base opened or borrowed), or a parent
 * delta's rebuilt output (lineage/chain.c).  Decoding (delta_read.c,
 * xdtype.c) and the operations read base bytes only through these three
 * functions. */
#include "delta/delta_impl.h"

static int dir_read(wd_delta *d, const wd_ext_priv *e, unsigned char *buf, size_t n, uint64_t rel, wd_err *err)
{
    return wd_pread_full(d->base_fds[e->base_fd_index], buf, n, e->base_offset + rel,
                         d->base->files[e->base_fd_index].path, err);
}

const wd_base_source wd_base_dir_source = {dir_read, NULL, NULL};

int wd_delta_read_base(wd_delta *d, const wd_ext_priv *e, unsigned char *buf, size_t n, uint64_t rel, wd_err *err)
{
    if (!d->src) return wd_errf(err, "%s: no base attached", d->path);
    return d->src->read(d, e, buf, n, rel, err);
}

int wd_delta_base_view(wd_delta *d, const wd_ext_priv *e, wd_scratch *s, size_t n, uint64_t rel,
                       const unsigned char **base, wd_cache_pin **pin, wd_err *err)
{
    *pin = NULL;
    if (!d->src) return wd_errf(err, "%s: no base attached", d->path);
    if (d->src->view) {
        int r = d->src->view(d, e, n, rel, base, pin, err);
        if (r < 0) return -1;
        if (r > 0) return 0;
    }
    unsigned char *buf = wd_scratch_buf(s, 1, n);
    if (!buf) return wd_errf(err, "out of memory reading %zu base bytes", n);
    *base = buf;
    return d->src->read(d, e, buf, n, rel, err);
}

void wd_delta_base_done(wd_delta *d, wd_cache_pin *pin)
{
    if (pin && d->src && d->src->done) d->src->done(d, pin);
}
