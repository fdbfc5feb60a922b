/* model_int.h - what the model layer (core/model/: safetensors, model
 * directories, content hashes) exports to the layers above; not installed. */
#ifndef WDELTA_MODEL_INT_H
#define WDELTA_MODEL_INT_H

#include "util/util.h" /* the layer below */

/* ---- a model hash fed tensor by tensor (hash.c): kind WD_HASH_V1 needs
 * the tensors in wd_model_hash_order, WD_ID_V2 takes them in any order.
 * begin (name, dtype, shape, length), then update with its bytes.  The
 * hash keeps t itself, not a copy (40 bytes a tensor): every t passed must
 * stay valid and unchanged until wd_idhash_final or wd_idhash_free. */
typedef struct wd_idhash wd_idhash;
wd_idhash *wd_idhash_new(unsigned kind);
int wd_idhash_begin(wd_idhash *h, const wd_tensor *t);
void wd_idhash_update(wd_idhash *h, const void *p, size_t n);
int wd_idhash_final(wd_idhash *h, unsigned char out[32], wd_err *err); /* also frees */
void wd_idhash_free(wd_idhash *h);

/* ---- JSON one member at a time (safetensors.c): a large object or array
 * is walked with a structural scan and only its members parsed, each on its
 * own, so no tree of the whole text is ever built. */
typedef struct wd_jwalk {
    const char *s;
    size_t n, i, err_at; /* err_at: where a syntax error was found */
    int obj, first;
} wd_jwalk;
/* Start at the object or array opening at or after s[i] (whitespace
 * skipped); -1 if none opens there. */
int wd_jwalk_open(wd_jwalk *w, const char *s, size_t n, size_t i);
/* The next member: 1 with its key's slice [ks, ke) (objects; the quoted
 * string) and its value's [vs, ve); 0 at the closing bracket (w->i is past
 * it); -1 on a syntax error (at w->err_at). */
int wd_jwalk_next(wd_jwalk *w, size_t *ks, size_t *ke, size_t *vs, size_t *ve);
/* 0 if only whitespace follows the walked value. */
int wd_jwalk_end(const wd_jwalk *w);
/* cJSON's tree of exactly the n bytes at s, NULL if they are not one JSON
 * value (*bad: where parsing stopped, relative to s). */
struct cJSON *wd_json_piece(const char *s, size_t n, size_t *bad);

/* wd_st_parse without the copy of the header text (out->header NULL). */
int wd_st_parse_nocopy(const unsigned char *buf, size_t buflen, uint64_t file_size, const char *fname,
                       wd_stfile *out, wd_err *err);

/* wd_st_open and wd_model_open against a donor model (a fine-tune against
 * its base): a tensor whose name the donor holds points at the donor's
 * name, and at its dimensions when they are equal, instead of a copy of
 * its own.  The donor must stay open, unchanged, while the result is used
 * (it may be freed before or after it: freeing reads no name).  The file
 * level finds the donor's tensors through `find` (the model level's
 * lookup: safetensors.c sits below model.c). */
typedef const wd_tensor *(*wd_donor_find)(const void *donor, const char *name);
int wd_st_open_shared(const char *path, wd_donor_find find, const void *donor, wd_stfile *out, wd_err *err);
int wd_model_open_shared(const char *dir, const wd_model *donor, wd_model *m, wd_err *err);

/* Build m->by_name and m->ntensors from m->files (model.c); an error names
 * a tensor held by two files.  For models made of parsed headers too. */
int wd_model_index(wd_model *m, wd_err *err);
/* Apply the input policy to a fine-tune opened for create: drop the extras
 * it leaves out (inputs.c); an exclude glob matching a weights file is an error. */
int wd_input_filter(wd_model *ft, const char *out_path, const char *const *exclude, size_t nexclude, wd_err *err);
/* wd_model_hash reading `chunk` bytes at a time (chunks start at each
 * tensor's first byte), handing every chunk to cb (may be NULL) and
 * stopping when *stop is raised (stop may be NULL). */
typedef void (*wd_hash_chunk_fn)(void *ctx, size_t file, size_t tensor, uint64_t rel, const unsigned char *buf,
                                 size_t n);
int wd_model_hash_ex(const wd_model *m, unsigned char out[32], size_t chunk, wd_hash_chunk_fn cb, void *ctx,
                     const volatile sig_atomic_t *stop, wd_err *err);
/* Both hashes of the opened model m (wd_model_hashes), from the digest
 * cache in cache_dir (NULL: none) when its weight files are unchanged,
 * else computed and stored there where they cannot be stale
 * (digest_cache.c); *cached (may be NULL) says which. */
int wd_model_hashes_memo(const wd_model *m, const char *cache_dir, unsigned char id[32], unsigned char v1[32],
                         int *cached, wd_err *err);


#endif
