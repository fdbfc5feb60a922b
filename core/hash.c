/* hash.c - SHA-256 (OpenSSL) and the model content hash.
 *
 * The content hash is deltatensors' parent_hash: SHA-256 over every tensor's
 * name bytes followed by its raw bytes, in wd_model_hash_order.  It depends
 * on names, bytes and which tensors share a shard (that fixes the order), not
 * on where in a file a tensor lies.  Read with pread in bounded chunks.
 *
 * NOTE: name and bytes are concatenated with no separator or length, as the
 * reference does; that is its definition, so it is reproduced as is. */
#include "internal.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct wd_sha256 {
    EVP_MD_CTX *ctx;
};

wd_sha256 *wd_sha256_new(void)
{
    wd_sha256 *h = malloc(sizeof *h);
    if (!h) return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void wd_sha256_update(wd_sha256 *h, const void *p, size_t n)
{
    if (n) EVP_DigestUpdate(h->ctx, p, n);
}

void wd_sha256_final(wd_sha256 *h, unsigned char out[32])
{
    unsigned int len = 32;
    EVP_DigestFinal_ex(h->ctx, out, &len);
    wd_sha256_free(h);
}

void wd_sha256_free(wd_sha256 *h)
{
    if (!h) return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void wd_hex(const unsigned char *bin, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bin[i] >> 4];
        out[2 * i + 1] = digits[bin[i] & 15];
    }
    out[2 * n] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int wd_unhex(const char *hex, unsigned char *out, size_t n)
{
    if (strlen(hex) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int a = hexval(hex[2 * i]), b = hexval(hex[2 * i + 1]);
        if (a < 0 || b < 0) return -1;
        out[i] = (unsigned char)(a << 4 | b);
    }
    return 0;
}

/* Hash one tensor: its name, then its bytes in chunks of at most `cap`
 * (counted from the tensor's first byte), each also given to cb. */
static int hash_tensor(wd_sha256 *h, int fd, const wd_stfile *f, const wd_tensor *t, unsigned char *buf,
                       size_t cap, const struct wd_tref *ref, wd_hash_chunk_fn cb, void *ctx,
                       const volatile sig_atomic_t *stop, wd_err *err)
{
    wd_sha256_update(h, t->name, strlen(t->name));
    for (uint64_t at = 0; at < t->length;) {
        size_t n = t->length - at < cap ? (size_t)(t->length - at) : cap;
        if (wd_stop_requested(stop, err)) return -1;
        if (wd_pread_full(fd, buf, n, t->offset + at, f->path, err))
            return wd_errprefix(err, "hashing tensor %s (at its byte %llu)", t->name, (unsigned long long)at);
        wd_sha256_update(h, buf, n);
        if (cb) cb(ctx, ref->file, ref->tensor, at, buf, n);
        at += n;
    }
    return 0;
}

int wd_model_hash_ex(const wd_model *m, unsigned char out[32], size_t chunk, wd_hash_chunk_fn cb, void *ctx,
                     const volatile sig_atomic_t *stop, wd_err *err)
{
    struct wd_tref *order = malloc((m->ntensors + 1) * sizeof *order);
    int *fds = malloc((m->nfiles + 1) * sizeof *fds);
    unsigned char *buf = malloc(chunk);
    wd_sha256 *h = wd_sha256_new();
    int rc = -1;
    for (size_t i = 0; fds && i < m->nfiles; i++) fds[i] = -1;
    if (!order || !fds || !buf || !h) {
        wd_errf(err, "out of memory hashing %s", m->dir);
        goto out;
    }
    for (size_t i = 0; i < m->nfiles; i++) {
        if ((fds[i] = open(m->files[i].path, O_RDONLY | O_CLOEXEC)) < 0) {
            wd_errf(err, "%s: %s", m->files[i].path, strerror(errno));
            goto out;
        }
        /* shards are read about once, mostly front to back */
        posix_fadvise(fds[i], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    wd_model_hash_order(m, order);
    for (size_t k = 0; k < m->ntensors; k++) {
        const wd_stfile *f = &m->files[order[k].file];
        if (hash_tensor(h, fds[order[k].file], f, &f->tensors[order[k].tensor], buf, chunk, &order[k], cb, ctx,
                        stop, err))
            goto out;
    }
    wd_sha256_final(h, out);
    h = NULL;
    rc = 0;
out:
    for (size_t i = 0; fds && i < m->nfiles; i++)
        if (fds[i] >= 0) close(fds[i]);
    wd_sha256_free(h);
    free(fds);
    free(buf);
    free(order);
    return rc;
}

int wd_model_hash(const wd_model *m, unsigned char out[32], wd_err *err)
{
    /* bounded memory whatever the model's size: 4 MiB at a time */
    return wd_model_hash_ex(m, out, 4u << 20, NULL, NULL, NULL, err);
}
