/* util.h - the util layer (core/util/): little-endian words, full reads and
 * writes, temporaries, UTF-8 and float conversions.  Uses nothing else of core/; not installed. */
#ifndef WDELTA_UTIL_H
#define WDELTA_UTIL_H

#include "wdelta.h" /* wd_err, wd_dtype */
#include <signal.h> /* sig_atomic_t */
#include <sys/types.h> /* mode_t */
#include "util/float.h" /* float <-> half, bfloat16 and their bits */

/* ---- little-endian helpers */
static inline void wd_put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void wd_put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t wd_get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint64_t wd_get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- float tensors */
/* element i of a float tensor of dtype dt as float32 (exact; f32, f16 or bf16) */
static inline float wd_float_at(const unsigned char *p, wd_dtype dt, size_t i)
{
    float f;
    if (dt == WD_F32) {
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t u;
    memcpy(&u, p + 2 * i, 2);
    if (dt == WD_F16) return wd_half_to_float(u);
    uint32_t v = (uint32_t)u << 16;
    memcpy(&f, &v, 4);
    return f;
}

/* ---- I/O: full reads/writes with retry on EINTR/short counts. */
int wd_pread_full(int fd, void *buf, size_t n, uint64_t off, const char *what, wd_err *err);
int wd_pwrite_full(int fd, const void *buf, size_t n, uint64_t off, const char *what, wd_err *err);
/* ---- arrays of n file descriptors (one a shard of a model): wd_fds_new
 * gives them all -1 (none open; NULL when out of memory); wd_fds_free
 * closes the first n that are open (n = 0: they are not the caller's to
 * close) and frees the array (NULL is fine) */
int *wd_fds_new(size_t n);
void wd_fds_free(int *fds, size_t n);

/* ---- temporaries (tmpfile.c): OUT.KIND.PID.RANDOM next to out_path, a
 * file (returns an fd open for writing) or a directory (returns 0); -1
 * with err set.  mode is reduced by the umask as usual. */
int wd_tmp_file(const char *out_path, const char *kind, mode_t mode, char **path_out, wd_err *err);
int wd_tmp_dir(const char *out_path, const char *kind, mode_t mode, char **path_out, wd_err *err);
/* 1 (err set: "interrupted") if the caller's stop flag is raised. */
int wd_stop_requested(const volatile sig_atomic_t *stop, wd_err *err);

/* 1 if the n bytes at s are valid UTF-8 (dtype.c). */
int wd_utf8_valid(const char *s, size_t n);



#endif
