/* cache.c - one LRU cache of decoded blocks for every open delta, bounded in
 * bytes, and wd_read, which serves byte ranges of output files from it.
 *
 * Entries are keyed by (delta key, block).  A miss inserts a "loading" entry
 * and decodes outside the lock; readers of the same block meanwhile wait on
 * the entry instead of decoding it again.  Failed decodes are not cached.
 * Entries in use are pinned; eviction takes the least recently used unpinned
 * ones until the cache is back under its capacity. */
#include "delta/delta.h"
#include "cache/cache_int.h" /* wd_bufpool (bufpool.c), the nested reads this file defines */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef struct centry {
    uint64_t key;
    uint32_t block;
    int state; /* 0 loading, 1 ready */
    int refs;
    int done;        /* every byte read by readers (see done_cap) */
    uint64_t served; /* bytes of it read through wd_read_pinned */
    unsigned char *data;
    uint32_t len;
    wd_buf buf; /* data's memory (bufpool.c); buf.cost is what `used` counts */
    struct centry *hnext;             /* hash chain */
    struct centry *lprev, *lnext;     /* LRU list, most recent at head */
} centry;

struct wd_cache {
    pthread_mutex_t lock;
    pthread_cond_t loaded;
    uint64_t capacity, used;
    centry **table;
    size_t nbuckets, count;
    centry *head, *tail;
    wd_cache_stats st;
    /* Decoding: at most max_decoders at once (more than the CPUs gains
     * nothing), each with a scratch from one pool shared by every delta,
     * so the memory beside the cache is bounded by max_decoders scratches
     * per chain level.  A chain's nested decodes each need a scratch of
     * their own: the pool keeps as many idle as were ever in use at once
     * (at most max_decoders x the deepest chain read), so reading from the
     * end of a chain does not build and fault in fresh scratches (several
     * megabytes each) for every block. */
    pthread_cond_t decoder_free;
    unsigned max_decoders, decoders;
    /* Bytes being decoded by top-level decoders: they count against the
     * capacity (cached blocks are evicted to make room, and a decode waits
     * while others fill it), so that large blocks read by many threads at
     * once do not hold several times the cache's size beside it.  One
     * decode always proceeds, however large its block.
     * A decode's working memory (its scratch's buffers: the stored bytes,
     * the base's bytes, the codec's planes, together twice a block or
     * more) counts too: it is charged as work_ratio x the block's size,
     * the most any decode of a large block with a fresh scratch has
     * needed per output byte (measured, so it follows the codecs in use);
     * until one decode has finished, decodes run one at a time.  Idle
     * scratches in the pool count against the capacity as well
     * (pool_bytes): one that does not fit beside the running decodes is
     * freed. */
    uint64_t inflight;
    /* Of inflight, the output buffers' part: idle buffers that many bytes
     * may stay in the buffer pool for those decodes to take. */
    uint64_t inflight_out;
    /* Block buffers: freed ones are kept for the next blocks (no fresh
     * pages to fault in per block) while they fit in the capacity beside
     * the cached blocks, the decodes and the scratches (see evict). */
    wd_bufpool *bp;
    /* Blocks read to their last byte (a file streamed through the mount:
     * the kernel's page cache now holds those bytes) are kept at the cold
     * end of the LRU list, and at most done_cap bytes of them: a streamed
     * model does not push out what other readers reuse, and its blocks'
     * buffers are recycled instead of filling the whole capacity with
     * fresh memory (which the kernel must clear first).  A block read
     * again is an ordinary one again. */
    uint64_t done_bytes, done_cap;
    centry *done_front; /* done entries are the list's tail from here on */
    double work_ratio;
    int work_known;
    wd_scratch **pool;
    size_t npool, cap_pool;
    uint64_t pool_bytes;
    size_t scratch_out, scratch_peak; /* taken now, most ever taken at once */
};

/* Blocks of this size or more say what a decode needs per output byte
 * (see work_ratio); a small block's fixed-size buffers do not. */
#define MAP_MIN (64u << 10)

static uint64_t mix(uint64_t key, uint32_t block)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull ^ ((uint64_t)block + 0x632BE59BD9B4E019ull);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 29);
}

wd_cache *wd_cache_new(uint64_t capacity)
{
    wd_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->capacity = capacity;
    c->nbuckets = 4096;
    c->table = calloc(c->nbuckets, sizeof *c->table);
    if (!c->table) {
        free(c);
        return NULL;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->max_decoders = ncpu < 1 ? 1 : ncpu > 64 ? 64 : (unsigned)ncpu;
    c->cap_pool = c->max_decoders;
    c->pool = calloc(c->cap_pool, sizeof *c->pool);
    c->bp = wd_bufpool_new();
    if (!c->pool || !c->bp) {
        free(c->pool);
        wd_bufpool_free(c->bp);
        free(c->table);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->loaded, NULL);
    pthread_cond_init(&c->decoder_free, NULL);
    c->st.capacity = capacity;
    c->done_cap = capacity / 16;
    return c;
}

void wd_cache_free(wd_cache *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->nbuckets; i++)
        for (centry *e = c->table[i], *n; e; e = n) {
            n = e->hnext;
            wd_bufpool_put(c->bp, &e->buf);
            free(e);
        }
    wd_bufpool_free(c->bp);
    free(c->table);
    for (size_t i = 0; i < c->npool; i++) wd_scratch_free(c->pool[i]);
    free(c->pool);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->loaded);
    pthread_cond_destroy(&c->decoder_free);
    free(c);
}

void wd_cache_stats_get(wd_cache *c, wd_cache_stats *s)
{
    pthread_mutex_lock(&c->lock);
    *s = c->st;
    s->used = c->used;
    s->capacity = c->capacity;
    pthread_mutex_unlock(&c->lock);
}

/* ---- internals (lock held) ------------------------------------------- */
static void lru_unlink(wd_cache *c, centry *e)
{
    if (e == c->done_front) c->done_front = e->lnext; /* done too, or NULL */
    if (e->lprev) e->lprev->lnext = e->lnext;
    else c->head = e->lnext;
    if (e->lnext) e->lnext->lprev = e->lprev;
    else c->tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_push(wd_cache *c, centry *e)
{
    e->lprev = NULL;
    e->lnext = c->head;
    if (c->head) c->head->lprev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static centry **slot(wd_cache *c, uint64_t key, uint32_t block)
{
    centry **p = &c->table[mix(key, block) & (c->nbuckets - 1)];
    while (*p && ((*p)->key != key || (*p)->block != block)) p = &(*p)->hnext;
    return p;
}

static void grow(wd_cache *c)
{
    size_t nb = c->nbuckets * 2;
    centry **t = calloc(nb, sizeof *t);
    if (!t) return; /* keep the longer chains */
    for (size_t i = 0; i < c->nbuckets; i++)
        for (centry *e = c->table[i], *n; e; e = n) {
            n = e->hnext;
            size_t b = mix(e->key, e->block) & (nb - 1);
            e->hnext = t[b];
            t[b] = e;
        }
    free(c->table);
    c->table = t;
    c->nbuckets = nb;
}

static void remove_entry(wd_cache *c, centry *e)
{
    centry **p = slot(c, e->key, e->block);
    if (*p == e) *p = e->hnext;
    lru_unlink(c, e);
    if (e->done) c->done_bytes -= e->buf.cost;
    c->used -= e->buf.cost;
    c->count--;
    wd_bufpool_put(c->bp, &e->buf);
    free(e);
}

static void evict_to(wd_cache *c, uint64_t limit)
{
    centry *e = c->tail;
    while (c->used > limit && e) {
        centry *prev = e->lprev;
        if (e->refs == 0 && e->state == 1) {
            remove_entry(c, e);
            c->st.evictions++;
        }
        e = prev;
    }
}

/* Back under the capacity: cached blocks, decodes in flight and idle
 * scratches; then idle block buffers may keep what is left, and what the
 * decodes in flight will take for their output. */
static void evict(wd_cache *c)
{
    uint64_t busy = c->inflight + c->pool_bytes;
    evict_to(c, c->capacity > busy ? c->capacity - busy : 0);
    busy += c->used;
    uint64_t room = c->capacity > busy ? c->capacity - busy : 0;
    wd_bufpool_trim(c->bp, room + c->inflight_out);
}

/* What a top-level decode of a len-byte block is charged: its output and
 * its working memory as learned so far (see work_ratio). */
static uint64_t decode_charge(const wd_cache *c, uint32_t len)
{
    return wd_bufpool_cost(len) + (uint64_t)(c->work_ratio * (double)len) + 1;
}

/* Give a top-level decoder slot back (lock held). */
static void slot_put(wd_cache *c, int *have_slot, uint64_t *charge, uint32_t len)
{
    if (!*have_slot) return;
    *have_slot = 0;
    c->decoders--;
    c->inflight -= *charge;
    c->inflight_out -= wd_bufpool_cost(len);
    *charge = 0;
    pthread_cond_broadcast(&c->decoder_free);
}

/* Scratch pool (lock held).  take: one from the pool, or NULL (the
 * caller makes one outside the lock). */
static wd_scratch *scratch_take(wd_cache *c)
{
    if (++c->scratch_out > c->scratch_peak) c->scratch_peak = c->scratch_out;
    if (!c->npool) return NULL;
    wd_scratch *sc = c->pool[--c->npool];
    c->pool_bytes -= wd_scratch_bytes(sc);
    return sc;
}

/* Back to the pool while it holds fewer than were ever out at once and
 * its buffers fit in the capacity beside the running decodes (else freed:
 * an idle scratch is memory like a cached block); the pool only grows to the peak number in use, which is bounded by decoder
 * slots x chain depth (a chain has at most 64 links). */
static void scratch_give(wd_cache *c, wd_scratch *sc)
{
    c->scratch_out--;
    if (!sc) return;
    if (c->npool == c->cap_pool && c->npool < c->scratch_peak) {
        size_t nc = c->cap_pool * 2;
        wd_scratch **np = realloc(c->pool, nc * sizeof *np);
        if (np) {
            c->pool = np;
            c->cap_pool = nc;
        }
    }
    uint64_t b = wd_scratch_bytes(sc);
    int fits = c->inflight + c->pool_bytes + b <= c->capacity;
    if (c->npool < c->cap_pool && c->npool < c->scratch_peak && fits) {
        c->pool[c->npool++] = sc;
        c->pool_bytes += b;
        evict(c); /* the room it takes */
    } else {
        wd_scratch_free(sc);
    }
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Pin the block's entry, decoding it if needed.  Returns the entry (ready,
 * refs held) or NULL with err set.
 *
 * Chains: decoding a block of a chain link reads its parent's output
 * through this cache (acquire with nested = 1, on the same thread), so a
 * decode can wait for another.  Two rules keep that free of deadlocks:
 *   - a top-level decoder takes its decoder slot *before* it claims the
 *     entry, never while holding a loading entry, and nested decodes take
 *     no slot (their thread already holds one): a thread that owns a
 *     loading entry therefore never waits for a slot;
 *   - a decode only waits for entries of its ancestors (a chain has no
 *     cycles; tree.c and chain.c refuse them), so waits follow the chain
 *     downwards and always end at a base.
 * Memory beside the cache stays bounded: loading entries and scratches are
 * at most (decoder threads) x (chain depth). */
static centry *acquire(wd_cache *c, wd_delta *d, uint64_t key, uint32_t block, int count_hit, int nested,
                       wd_err *err)
{
    int have_slot = 0;
    uint64_t charge = 0;
    uint32_t len = wd_delta_get_info(d)->blocks[block].out_len;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        centry **p = slot(c, key, block);
        centry *e = *p;
        if (e && e->state == 1) {
            e->refs++;
            if (e->done) { /* wanted again */
                e->done = 0;
                e->served = 0;
                c->done_bytes -= e->buf.cost;
            }
            lru_unlink(c, e);
            lru_push(c, e);
            if (count_hit) c->st.hits++;
            slot_put(c, &have_slot, &charge, len);
            pthread_mutex_unlock(&c->lock);
            return e;
        }
        if (e) { /* someone is decoding it: wait, then look again */
            slot_put(c, &have_slot, &charge, len); /* never hold a slot while waiting */
            pthread_cond_wait(&c->loaded, &c->lock);
            continue;
        }
        if (!nested && !have_slot) {
            uint64_t need = decode_charge(c, len);
            if (c->decoders >= c->max_decoders ||
                (c->decoders && (!c->work_known || c->inflight + need > c->capacity))) {
                pthread_cond_wait(&c->decoder_free, &c->lock);
                continue; /* the block may have been loaded meanwhile */
            }
            c->decoders++;
            c->inflight += need;
            c->inflight_out += wd_bufpool_cost(len);
            charge = need;
            have_slot = 1;
            evict(c); /* room for it (which may change the table: look again) */
            continue;
        }
        /* miss: claim it */
        e = calloc(1, sizeof *e);
        if (!e) {
            slot_put(c, &have_slot, &charge, len);
            pthread_mutex_unlock(&c->lock);
            wd_errf(err, "out of memory");
            return NULL;
        }
        e->key = key;
        e->block = block;
        e->refs = 1;
        *p = e;
        c->count++;
        if (c->count > c->nbuckets) grow(c);
        c->st.misses++;
        wd_scratch *sc = scratch_take(c);
        if (have_slot && sc) { /* a pooled scratch's buffers move from the pool to this decode */
            uint64_t held = len + (uint64_t)wd_scratch_bytes(sc);
            if (held > charge) {
                c->inflight += held - charge;
                charge = held;
            }
        }
        int fresh = !sc;
        pthread_mutex_unlock(&c->lock);

        wd_buf buf;
        unsigned char *data = wd_bufpool_get(c->bp, len, &buf) ? NULL : buf.data;
        if (!sc) sc = wd_scratch_new();
        uint64_t t0 = now_ns();
        int rc = data && sc ? wd_delta_decode_with(d, block, data, sc, err) : wd_errf(err, "out of memory");
        uint64_t dt = now_ns() - t0;

        pthread_mutex_lock(&c->lock);
        if (fresh && sc && !rc && !nested) {
            /* what this decode needed, per output byte; from blocks of
             * MAP_MIN or more only: a small block's fixed-size buffers
             * (tables, contexts) say nothing of a large one's needs */
            if (len >= MAP_MIN) {
                double r = (double)wd_scratch_bytes(sc) / (double)len;
                if (r > c->work_ratio) c->work_ratio = r;
            }
            c->work_known = 1;
        }
        slot_put(c, &have_slot, &charge, len);
        scratch_give(c, sc);
        if (rc) {
            centry **q = slot(c, key, block);
            if (*q == e) *q = e->hnext;
            c->count--;
            wd_bufpool_put(c->bp, &buf);
            free(e);
            pthread_cond_broadcast(&c->loaded);
            pthread_mutex_unlock(&c->lock);
            return NULL;
        }
        e->data = data;
        e->len = len;
        e->buf = buf;
        e->state = 1;
        c->used += buf.cost;
        c->st.decoded_bytes += len;
        if (!nested) c->st.decode_ns += dt; /* a nested decode's time is inside its caller's */
        lru_push(c, e);
        evict(c);
        pthread_cond_broadcast(&c->loaded);
        pthread_mutex_unlock(&c->lock);
        return e;
    }
}

static void release(wd_cache *c, centry *e)
{
    pthread_mutex_lock(&c->lock);
    e->refs--;
    if (c->used > c->capacity) evict(c);
    pthread_mutex_unlock(&c->lock);
}

int wd_cache_prefetch(wd_delta *d, uint64_t key, wd_cache *c, uint32_t block, wd_err *err)
{
    if (block >= wd_delta_get_info(d)->nblocks) return 0;
    centry *e = acquire(c, d, key, block, 0, 0, err);
    if (!e) return -1;
    release(c, e);
    return 0;
}

static size_t max_block(const wd_delta_info *in)
{
    size_t m = 1;
    for (size_t b = 0; b < in->nblocks; b++)
        if (in->blocks[b].out_len > m) m = in->blocks[b].out_len;
    return m;
}

static ssize_t read_impl(wd_delta *d, uint64_t key, wd_cache *c, size_t f, void *buf, size_t len, uint64_t off,
                         int nested, wd_err *err)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    if (f >= in->nfiles) return wd_errf(err, "no output file %zu", f);
    uint64_t size = in->files[f].size;
    if (off >= size || len == 0) return 0;
    if (len > size - off) len = (size_t)(size - off);
    unsigned char *out = buf, *tmp = NULL;
    size_t done = 0;
    while (done < len) {
        uint32_t b;
        uint64_t boff;
        if (wd_delta_locate(d, f, off + done, &b, &boff)) {
            free(tmp);
            return wd_errf(err, "offset %llu of %s is outside the file", (unsigned long long)(off + done),
                           in->files[f].name);
        }
        uint64_t in_block = off + done - boff;
        size_t take = in->blocks[b].out_len - (size_t)in_block;
        if (take > len - done) take = len - done;
        if (c) {
            centry *e = acquire(c, d, key, b, 1, nested, err);
            if (!e) {
                free(tmp);
                return -1;
            }
            memcpy(out + done, e->data + in_block, take);
            release(c, e);
        } else {
            if (!tmp && !(tmp = malloc(max_block(in)))) return wd_errf(err, "out of memory");
            if (wd_delta_decode_block(d, b, tmp, err)) {
                free(tmp);
                return -1;
            }
            memcpy(out + done, tmp + in_block, take);
        }
        done += take;
    }
    free(tmp);
    return (ssize_t)done;
}

ssize_t wd_read(wd_delta *d, uint64_t key, wd_cache *c, size_t f, void *buf, size_t len, uint64_t off,
                wd_err *err)
{
    return read_impl(d, key, c, f, buf, len, off, 0, err);
}

/* A chain link's base range that lies inside one parent block is used in
 * place: the parent's entry is pinned (so it cannot be evicted) until
 * wd_cache_unpin, which saves a copy of every block per link and the
 * link's own base buffer. */
int wd_cache_pin_range(wd_delta *d, uint64_t key, wd_cache *c, size_t f, uint64_t off, size_t len,
                       const unsigned char **data, wd_cache_pin **pin, wd_err *err)
{
    const wd_delta_info *in = wd_delta_get_info(d);
    uint32_t b;
    uint64_t boff;
    if (!c || f >= in->nfiles || len == 0 || off + len > in->files[f].size || wd_delta_locate(d, f, off, &b, &boff))
        return 0;
    if (off - boff + len > in->blocks[b].out_len) return 0; /* spans blocks: the caller copies */
    centry *e = acquire(c, d, key, b, 1, 1, err);
    if (!e) return -1;
    *data = e->data + (off - boff);
    *pin = (wd_cache_pin *)e;
    return 1;
}

void wd_cache_unpin(wd_cache *c, wd_cache_pin *pin)
{
    if (pin) release(c, (centry *)pin);
}

ssize_t wd_read_nested(wd_delta *d, uint64_t key, wd_cache *c, size_t f, void *buf, size_t len, uint64_t off,
                       wd_err *err)
{
    return read_impl(d, key, c, f, buf, len, off, 1, err);
}

/* Release a block of which a reader has just had n bytes.  Once readers
 * have had as many bytes as it holds (a file read in order: whatever order
 * the kernel's parallel reads come in), to the cold end, and the oldest
 * such blocks out while they hold more than done_cap. */
static void release_served(wd_cache *c, centry *e, size_t n)
{
    pthread_mutex_lock(&c->lock);
    e->refs--;
    e->served += n;
    if (e->served < e->len) {
        if (c->used > c->capacity) evict(c);
        pthread_mutex_unlock(&c->lock);
        return;
    }
    if (!e->done) {
        e->done = 1;
        c->done_bytes += e->buf.cost;
    }
    lru_unlink(c, e);
    centry *at = c->done_front; /* behind every ordinary entry, before older done ones */
    if (at) {
        e->lnext = at;
        e->lprev = at->lprev;
        if (at->lprev) at->lprev->lnext = e;
        else c->head = e;
        at->lprev = e;
    } else if (c->tail) {
        e->lprev = c->tail;
        c->tail->lnext = e;
        c->tail = e;
    } else {
        lru_push(c, e);
    }
    c->done_front = e;
    for (centry *x = c->tail, *p; x && x->done && c->done_bytes > c->done_cap; x = p) {
        p = x->lprev;
        if (x->refs == 0) {
            remove_entry(c, x);
            c->st.evictions++;
        }
    }
    if (c->used > c->capacity) evict(c);
    pthread_mutex_unlock(&c->lock);
}

void wd_read_release(wd_cache *c, wd_readv *rv)
{
    for (int i = 0; i < rv->npin; i++) release_served(c, (centry *)rv->pin[i], rv->iov[i].iov_len);
    free(rv->spill);
    rv->npin = rv->niov = 0;
    rv->spill = NULL;
}

ssize_t wd_read_pinned(wd_delta *d, uint64_t key, wd_cache *c, size_t f, size_t len, uint64_t off, wd_readv *rv,
                       wd_err *err)
{
    memset(rv, 0, sizeof *rv);
    const wd_delta_info *in = wd_delta_get_info(d);
    if (f >= in->nfiles) return wd_errf(err, "no output file %zu", f);
    uint64_t size = in->files[f].size;
    if (off >= size || len == 0) return 0;
    if (len > size - off) len = (size_t)(size - off);
    size_t done = 0;
    while (done < len && c) {
        uint32_t b;
        uint64_t boff;
        if (wd_delta_locate(d, f, off + done, &b, &boff)) {
            wd_read_release(c, rv);
            return wd_errf(err, "offset %llu of %s is outside the file", (unsigned long long)(off + done),
                           in->files[f].name);
        }
        uint64_t in_block = off + done - boff;
        size_t take = in->blocks[b].out_len - (size_t)in_block;
        if (take > len - done) take = len - done;
        if (rv->npin == WD_READV_MAX - 1 && take < len - done) break; /* the rest: copied */
        centry *e = acquire(c, d, key, b, 1, 0, err);
        if (!e) {
            wd_read_release(c, rv);
            return -1;
        }
        rv->pin[rv->npin++] = e;
        rv->iov[rv->niov++] = (struct iovec){e->data + in_block, take};
        done += take;
    }
    if (done < len) {
        size_t rest = len - done;
        ssize_t n;
        if (!(rv->spill = malloc(rest))) {
            wd_read_release(c, rv);
            return wd_errf(err, "out of memory");
        }
        if ((n = read_impl(d, key, c, f, rv->spill, rest, off + done, 0, err)) < 0) {
            wd_read_release(c, rv);
            return -1;
        }
        rv->iov[rv->niov++] = (struct iovec){rv->spill, (size_t)n};
        done += (size_t)n;
    }
    return (ssize_t)done;
}
