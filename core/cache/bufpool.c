/* bufpool.c - the block cache's buffers, reused instead of mapped afresh.
 *
 * A buffer of BP_GRAN (64 KiB) to BP_CHUNK / 2 (1 MiB) bytes is a slot of a
 * 2 MiB chunk that serves one size class (a multiple of 64 KiB): the chunk
 * is 2 MiB-aligned and asks for transparent huge pages, so filling a fresh
 * cache costs one page fault per 2 MiB instead of one per 4 KiB (where the
 * system has them; else its pages are populated in one call).  Larger
 * buffers are mappings of their own (huge pages too), kept for a buffer of
 * the same size.  Smaller ones come from malloc.
 *
 * A freed buffer stays mapped (idle) for the next block of its class; the
 * cache decides how many idle bytes may stay (wd_bufpool_trim) so that its
 * memory stays within its capacity: whole idle chunks and large buffers are
 * unmapped first, then idle slots of chunks in use are given back to the
 * system with MADV_DONTNEED (they stay mapped; their next use faults).
 * Each slot of a chunk costs BP_CHUNK / nslots, so the costs of a chunk's
 * slots add up to the memory it holds. */
#include "cache/cache_int.h" /* wd_bufpool, wd_buf */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define BP_CHUNK (2u << 20)
#define BP_GRAN (64u << 10)
#define BP_NCLASS (BP_CHUNK / 2 / BP_GRAN) /* slots of 64 KiB .. 1 MiB */
#define BP_LARGE BP_NCLASS                  /* cls of a buffer mapped alone */

typedef struct bp_chunk {
    unsigned char *mem;
    size_t size;      /* mapped bytes */
    unsigned cls;     /* slot size (cls + 1) x BP_GRAN, or BP_LARGE */
    unsigned nslots;  /* 1 for BP_LARGE */
    uint32_t idle;    /* bit i: slot i is free */
    uint32_t cold;    /* bit i: free slot i was given back (MADV_DONTNEED) */
    struct bp_chunk *prev, *next; /* in avail[cls] (or large) while a slot is free */
} bp_chunk;

struct wd_bufpool {
    pthread_mutex_t lock;
    bp_chunk *avail[BP_NCLASS + 1]; /* [BP_LARGE]: idle large buffers */
    uint64_t idle_bytes;            /* free slots and large buffers still resident */
};

static size_t slot_cost(const bp_chunk *k)
{
    return k->size / k->nslots;
}

static size_t slot_size(unsigned cls)
{
    return (size_t)(cls + 1) * BP_GRAN;
}

static uint32_t all_slots(const bp_chunk *k)
{
    return k->nslots == 32 ? UINT32_MAX : (1u << k->nslots) - 1;
}

static void unlink_chunk(wd_bufpool *p, bp_chunk *k)
{
    if (k->prev) k->prev->next = k->next;
    else p->avail[k->cls] = k->next;
    if (k->next) k->next->prev = k->prev;
    k->prev = k->next = NULL;
}

static void push_chunk(wd_bufpool *p, bp_chunk *k)
{
    k->prev = NULL;
    k->next = p->avail[k->cls];
    if (k->next) k->next->prev = k;
    p->avail[k->cls] = k;
}

/* size bytes, 2 MiB-aligned where size allows, huge pages asked for,
 * populated */
static unsigned char *map_aligned(size_t size)
{
    size_t extra = size >= BP_CHUNK ? BP_CHUNK : 0;
    unsigned char *m = mmap(NULL, size + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    if (extra) {
        uintptr_t a = ((uintptr_t)m + BP_CHUNK - 1) & ~(uintptr_t)(BP_CHUNK - 1);
        size_t head = (size_t)(a - (uintptr_t)m), tail = extra - head;
        if (head) munmap(m, head);
        if (tail) munmap((unsigned char *)a + size, tail);
        m = (unsigned char *)a;
        (void)madvise(m, size, MADV_HUGEPAGE);
    }
    /* one call instead of a fault per page; a kernel without it faults
     * the pages in as they are written */
    (void)madvise(m, size, MADV_POPULATE_WRITE);
    return m;
}

wd_bufpool *wd_bufpool_new(void)
{
    wd_bufpool *p = calloc(1, sizeof *p);
    if (p) pthread_mutex_init(&p->lock, NULL);
    return p;
}

void wd_bufpool_free(wd_bufpool *p)
{
    if (!p) return;
    for (unsigned c = 0; c <= BP_NCLASS; c++)
        for (bp_chunk *k = p->avail[c], *n; k; k = n) {
            n = k->next;
            munmap(k->mem, k->size);
            free(k);
        }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

size_t wd_bufpool_cost(size_t n)
{
    if (n < BP_GRAN) return n ? n : 1;
    if (n <= BP_CHUNK / 2) {
        size_t s = slot_size((unsigned)((n + BP_GRAN - 1) / BP_GRAN - 1));
        return BP_CHUNK / (BP_CHUNK / s);
    }
    return (n + BP_GRAN - 1) / BP_GRAN * BP_GRAN;
}

int wd_bufpool_get(wd_bufpool *p, size_t n, wd_buf *b)
{
    memset(b, 0, sizeof *b);
    if (n < BP_GRAN) {
        b->data = malloc(n ? n : 1);
        b->cost = n ? n : 1;
        return b->data ? 0 : -1;
    }
    unsigned cls = n <= BP_CHUNK / 2 ? (unsigned)((n + BP_GRAN - 1) / BP_GRAN - 1) : BP_LARGE;
    size_t lsize = (n + BP_GRAN - 1) / BP_GRAN * BP_GRAN;
    pthread_mutex_lock(&p->lock);
    bp_chunk *k = p->avail[cls];
    if (cls == BP_LARGE)
        while (k && k->size != lsize) k = k->next;
    if (k) {
        uint32_t warm = k->idle & ~k->cold, pick = warm ? warm : k->idle;
        unsigned i = (unsigned)__builtin_ctz(pick);
        if (warm) p->idle_bytes -= slot_cost(k);
        k->idle &= ~(1u << i);
        k->cold &= ~(1u << i);
        if (!k->idle) unlink_chunk(p, k);
        pthread_mutex_unlock(&p->lock);
        b->data = k->mem + (size_t)i * (cls == BP_LARGE ? 0 : slot_size(cls));
        b->cost = slot_cost(k);
        b->home = k;
        b->slot = i;
        return 0;
    }
    pthread_mutex_unlock(&p->lock);
    k = calloc(1, sizeof *k);
    if (!k) return -1;
    k->cls = cls;
    k->size = cls == BP_LARGE ? lsize : BP_CHUNK;
    k->nslots = cls == BP_LARGE ? 1 : (unsigned)(BP_CHUNK / slot_size(cls));
    if (!(k->mem = map_aligned(k->size))) {
        free(k);
        return -1;
    }
    b->data = k->mem;
    b->cost = slot_cost(k);
    b->home = k;
    b->slot = 0;
    if (k->nslots > 1) { /* the other slots are free (and resident) */
        pthread_mutex_lock(&p->lock);
        k->idle = all_slots(k) & ~1u;
        p->idle_bytes += (uint64_t)(k->nslots - 1) * slot_cost(k);
        push_chunk(p, k);
        pthread_mutex_unlock(&p->lock);
    }
    return 0;
}

void wd_bufpool_put(wd_bufpool *p, wd_buf *b)
{
    if (!b->data) return;
    bp_chunk *k = b->home;
    if (!k) {
        free(b->data);
    } else {
        pthread_mutex_lock(&p->lock);
        if (!k->idle) push_chunk(p, k);
        k->idle |= 1u << b->slot;
        p->idle_bytes += slot_cost(k);
        pthread_mutex_unlock(&p->lock);
    }
    memset(b, 0, sizeof *b);
}

uint64_t wd_bufpool_trim(wd_bufpool *p, uint64_t keep)
{
    pthread_mutex_lock(&p->lock);
    /* whole mappings first: idle large buffers, then wholly free chunks */
    for (unsigned c = BP_NCLASS + 1; c-- > 0 && p->idle_bytes > keep;)
        for (bp_chunk *k = p->avail[c], *n; k && p->idle_bytes > keep; k = n) {
            n = k->next;
            if (k->idle != all_slots(k)) continue;
            p->idle_bytes -= (uint64_t)__builtin_popcount(k->idle & ~k->cold) * slot_cost(k);
            unlink_chunk(p, k);
            munmap(k->mem, k->size);
            free(k);
        }
    /* then free slots of chunks in use give their pages back */
    for (unsigned c = 0; c < BP_NCLASS && p->idle_bytes > keep; c++)
        for (bp_chunk *k = p->avail[c]; k && p->idle_bytes > keep; k = k->next)
            for (uint32_t warm = k->idle & ~k->cold; warm && p->idle_bytes > keep; warm &= warm - 1) {
                unsigned i = (unsigned)__builtin_ctz(warm);
                (void)madvise(k->mem + (size_t)i * slot_size(c), slot_size(c), MADV_DONTNEED);
                k->cold |= 1u << i;
                p->idle_bytes -= slot_cost(k);
            }
    uint64_t left = p->idle_bytes;
    pthread_mutex_unlock(&p->lock);
    return left;
}
