/* wdelta.h - public API of libwdelta, the core of wdeltafs.
 *
 * Three concerns, one section each:
 *   1. safetensors files and model directories (read, validate, write headers)
 *   2. the model content hash (deltatensors' parent_hash)
 *   3. .wdelta files: create (streaming), open, and decode any block/byte range
 * plus a thread-safe LRU cache of decoded blocks for the filesystem.
 *
 * Conventions: functions that can fail return 0 (or a non-negative count) on
 * success and -1 on failure, having written a one-line message into *err that
 * names the file, tensor and offset involved.  No globals; every object may be
 * used from several threads once opened unless noted otherwise.
 */
#ifndef WDELTA_H
#define WDELTA_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* WD_API marks the library's interface: libwdelta is built with
 * -fvisibility=hidden, so the shared library exports exactly the functions
 * this header declares with it (tests/integration/test_layers.sh checks). */
#if defined(__GNUC__) || defined(__clang__)
#define WD_API __attribute__((visibility("default")))
#else
#define WD_API
#endif

#define WD_VERSION_STRING "0.1.0"
/* .wdelta format versions: written, and the range read (1 is deltatensors') */
#define WD_FORMAT_WRITTEN 2u
#define WD_FORMAT_READ_MIN 1u
#define WD_FORMAT_READ_MAX 2u

/* ---------------------------------------------------------------- errors */
/* What kind of failure an error is, for callers that act on it (the tools
 * map it to their exit status: 1, 2, 3). */
typedef enum wd_err_kind {
    WD_ERR_DATA = 0,    /* bad or corrupt data, I/O or other failure */
    WD_ERR_USAGE = 1,   /* a bad option or argument */
    WD_ERR_MISSING = 2, /* a needed input is missing or is the wrong one:
                           file or chain link not found, wrong base */
} wd_err_kind;

typedef struct wd_err {
    char msg[1024];
    int kind;           /* wd_err_kind; wd_errf sets WD_ERR_DATA */
} wd_err;

/* printf-style: writes msg and returns -1, so `return wd_errf(err, ...)`. */
WD_API int wd_errf(wd_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The same, with a kind (wd_errf's is WD_ERR_DATA). */
WD_API int wd_errk(wd_err *err, wd_err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix an existing message: "PREFIX: old message" (its kind kept). Returns -1. */
WD_API int wd_errprefix(wd_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------- dtypes */
typedef enum wd_dtype {
    WD_F64, WD_F32, WD_F16, WD_BF16,
    WD_I64, WD_I32, WD_I16, WD_I8,
    WD_U64, WD_U32, WD_U16, WD_U8,
    WD_BOOL, WD_F8_E4M3, WD_F8_E5M2,
    WD_OPAQUE /* any other dtype string: kept, treated as bytes */
} wd_dtype;

/* Parse a safetensors dtype string ("BF16" ...). Unknown strings give WD_OPAQUE. */
WD_API wd_dtype wd_dtype_from_name(const char *name);
/* Bytes per element; 0 for WD_OPAQUE (unknown size). */
WD_API unsigned wd_dtype_size(wd_dtype t);
/* 1 for F64/F32/F16/BF16 (the lossless codec conditions on their exponent). */
WD_API int wd_dtype_is_float(wd_dtype t);

/* --------------------------------------------------------- safetensors */
#define WD_ST_MAX_HEADER (100u * 1024 * 1024) /* the format's own limit */
#define WD_MAX_DIMS 32

typedef struct wd_tensor {
    char *name;            /* UTF-8, NUL-terminated */
    char dtype_name[32];   /* as written in the header */
    wd_dtype dtype;
    int ndim;
    uint64_t *shape;       /* ndim dimensions (at most WD_MAX_DIMS).  A parsed
                              file's names and dimensions are stored in the
                              allocation of its tensors array (wd_st_free
                              frees them; never free a name); a caller
                              building a header points it at its own array */
    uint64_t nelem;        /* product of shape (1 for a scalar) */
    uint64_t offset;       /* absolute byte offset of the data in the file */
    uint64_t length;       /* byte length */
} wd_tensor;

typedef struct wd_stfile {
    char *path;            /* as opened */
    char *name;            /* basename */
    uint64_t size;         /* file size */
    unsigned char *header; /* wd_st_parse: the first header_size bytes verbatim
                              (8-byte length + JSON); wd_st_open: NULL (megabytes
                              for a model of many tensors, and nothing needs
                              them: they are the file's first header_size bytes) */
    uint64_t header_size;  /* 8 + N; tensor data starts here */
    size_t ntensors;
    wd_tensor *tensors;    /* sorted by offset (file order) */
} wd_stfile;

/* Validate and parse a header held in memory: buf holds at least the 8-byte
 * length and the JSON (header_size bytes).  file_size is the whole file's
 * size (to check data offsets); fname is used in error messages.  Checks:
 * header length past the end / absurd, JSON syntax, non-UTF-8 or duplicate
 * names, unknown keys types, shape x dtype size != byte length, offsets out of
 * range, overlapping tensors, gaps, data not ending at file end. */
WD_API int wd_st_parse(const unsigned char *buf, size_t buflen, uint64_t file_size,
                const char *fname, wd_stfile *out, wd_err *err);
/* Open a file and parse its header (pread; the data is not read, the
 * header text is not kept: f->header is NULL). */
WD_API int wd_st_open(const char *path, wd_stfile *out, wd_err *err);
WD_API void wd_st_free(wd_stfile *f);
/* Find a tensor by name (linear or binary search); NULL if absent. */
WD_API const wd_tensor *wd_st_find(const wd_stfile *f, const char *name);

/* Build a safetensors header (8-byte length + JSON, space-padded to a
 * multiple of 8) for tensors laid out back to back in the given order;
 * their offset/length fields are filled in by this function (offset is
 * absolute, i.e. includes the header).  metadata_json: NULL or a JSON object
 * text of string->string stored as "__metadata__".  *out is malloc'd. */
WD_API int wd_st_build_header(wd_tensor *tensors, size_t n, const char *metadata_json,
                       unsigned char **out, size_t *out_len, wd_err *err);

/* A Hugging Face model directory: one model.safetensors, or shards listed in
 * model.safetensors.index.json, or (no index) every *.safetensors file. */
typedef struct wd_model {
    char *dir;
    size_t nfiles;
    wd_stfile *files;      /* sorted by file name */
    size_t ntensors;       /* total over files */
    struct wd_tref { uint32_t file, tensor; } *by_name; /* sorted by tensor name */
    size_t nextras;
    char **extras;         /* other regular files (config.json, tokenizer, the
                              index.json itself...), sorted, safe names only */
} wd_model;

WD_API int wd_model_open(const char *dir, wd_model *m, wd_err *err);
WD_API void wd_model_free(wd_model *m);
/* Look a tensor up by name; *file_index (optional) receives its file. */
WD_API const wd_tensor *wd_model_find(const wd_model *m, const char *name, size_t *file_index);

/* The order in which the content hash visits tensors: shards ordered by the
 * smallest tensor name they hold, names sorted inside a shard.  Fills refs
 * (m->ntensors entries). */
WD_API void wd_model_hash_order(const wd_model *m, struct wd_tref *refs);

/* 1 if name is safe to use as a file name in a directory we create/serve:
 * non-empty, <= 255 bytes, no '/', not "." or "..", no control chars, valid UTF-8. */
WD_API int wd_safe_name(const char *name);

/* --------------------------------------------------------- hashing */
typedef struct wd_sha256 wd_sha256; /* opaque incremental SHA-256 */
WD_API wd_sha256 *wd_sha256_new(void);
WD_API void wd_sha256_update(wd_sha256 *h, const void *p, size_t n);
WD_API void wd_sha256_final(wd_sha256 *h, unsigned char out[32]); /* also frees */
WD_API void wd_sha256_free(wd_sha256 *h);
WD_API void wd_hex(const unsigned char *bin, size_t n, char *out /* 2n+1 */);
WD_API int wd_unhex(const char *hex, unsigned char *out, size_t n);

/* A model has two hashes (core/FORMAT.md, "Model identity"):
 * WD_HASH_V1, deltatensors' parent_hash: SHA-256 over name bytes + raw
 *   tensor bytes in wd_model_hash_order; it depends on the sharding.  v1
 *   files and v2 files written before the identity record it.
 * WD_ID_V2, the model identity: SHA-256 over each tensor's name, dtype,
 *   shape, length and bytes' SHA-256, in name order; it depends on nothing
 *   else (not sharding, file order, offsets, metadata or non-tensor files).
 *   What v2 files write now.
 * Both read every tensor once (pread, bounded memory); the identity hashes
 * tensors on several threads (up to 8). */
#define WD_HASH_V1 1u
#define WD_ID_V2 2u
WD_API int wd_model_hash(const wd_model *m, unsigned char out[32], wd_err *err);
WD_API int wd_model_identity(const wd_model *m, unsigned char out[32], wd_err *err);
/* Both at once (the content hash on a thread of its own, reading the same
 * files about in step), for readers that need either. */
WD_API int wd_model_hashes(const wd_model *m, unsigned char v1[32], unsigned char id[32], wd_err *err);
/* The hash of kind WD_HASH_V1 or WD_ID_V2. */
WD_API int wd_model_hash_kind(const wd_model *m, unsigned kind, unsigned char out[32], wd_err *err);

/* ---------------------------------------------------------------- digest cache
 * Base hashes remembered across runs (core/model/digest_cache.c): the mount and
 * `wdelta find-base` share it.  The per-user default: /var/cache/wdeltafs
 * for root, else $XDG_CACHE_HOME/wdeltafs or ~/.cache/wdeltafs (buf holds
 * it, n bytes).  load: 0 on a hit (dir canonical, as realpath gives it; the
 * weight files unchanged since stored), -1 a miss. */
WD_API const char *wd_digest_cache_dir(char *buf, size_t n);
WD_API int wd_digest_cache_load(const char *cache_dir, const char *dir, const wd_model *m, unsigned char id[32],
                         unsigned char v1[32]);
WD_API int wd_digest_cache_store(const char *cache_dir, const char *dir, const wd_model *m, const unsigned char id[32],
                          const unsigned char v1[32], wd_err *err);
/* Both hashes of the model in dir (WD_ID_V2 and WD_HASH_V1), from the cache
 * in cache_dir (NULL: none) or computed and stored there; *cached (may be
 * NULL) says which. */
WD_API int wd_model_hashes_cached(const char *dir, const char *cache_dir, unsigned char id[32], unsigned char v1[32],
                           int *cached, wd_err *err);
/* Which of dirs[0..n) is the model whose hash of kind `kind` (WD_ID_V2 or
 * WD_HASH_V1) is base_hash: *found its index (the first), else an error of
 * kind WD_ERR_MISSING.  cb (may be NULL) hears of each candidate: its hash
 * (NULL when it is not a readable model; why then in msg), from the cache or
 * not, and whether it matches. */
typedef void (*wd_find_base_cb)(void *ctx, size_t i, const unsigned char *hash, int cached, int match,
                                const char *msg);
WD_API int wd_find_base(const unsigned char base_hash[32], unsigned kind, const char *const *dirs, size_t n,
                 const char *cache_dir, wd_find_base_cb cb, void *ctx, size_t *found, wd_err *err);
/* The .wdelta behind a model directory that a wdeltafs mount serves (its
 * attribute user.wdelta.delta) into out (n bytes); not one: WD_ERR_MISSING. */
WD_API int wd_mount_delta_of(const char *dir, char *out, size_t n, wd_err *err);
/* "model identity", "content hash (v1)": for messages. */
WD_API const char *wd_hash_kind_name(unsigned kind);

/* Fast non-cryptographic 64-bit checksum used for blocks. */
WD_API uint64_t wd_hash64(const void *p, size_t n, uint64_t seed);

/* --------------------------------------------------------- .wdelta v2 */
#define WD_DEFAULT_BLOCK_SIZE (1u << 20)

typedef enum wd_codec {
    WD_CODEC_ZSTD = 1,     /* whole bytes, zstd (headers, extra files, new tensors) */
    WD_CODEC_LOSSLESS = 2, /* exact delta against the base tensor of the same name */
    /* Lossy deltas of floating tensors, whole rows per block (FORMAT.md): */
    WD_CODEC_INT4 = 3,     /* 4-bit codes, FP16 scale per group, exact outliers */
    WD_CODEC_SPARSE = 4,   /* the largest |delta| exactly, the rest as the base */
    WD_CODEC_BITDELTA = 5, /* sign bit + FP16 scale per row */
    WD_CODEC_AXIS1 = 6,    /* sign bit + FP16 scales per row and per column */
    WD_CODEC_LOWRANK = 7,  /* FP16 low-rank factors U.V of the delta (lossy) */
    /* Exact, row blocks: lossless against a low-rank prediction */
    WD_CODEC_LOWRANK_EXACT = 8,
    /* Zero-aware 1-bit tier (lossy): unchanged elements stay the base's */
    WD_CODEC_TERNARY = 9,        /* {0, +r_i, -r_i}, FP16 scale per row */
    WD_CODEC_TERNARY_AXIS1 = 10, /* {0, +-r_i c_j}, FP16 scales per row and column */
    /* Views of deltatensors v1 files (no stored blocks, no block checksums): */
    WD_CODEC_V1 = 16,      /* a v1 tensor, rebuilt whole on first touch */
    WD_CODEC_GENERATED = 17, /* bytes made at wd_delta_set_base (headers, index) */
    WD_CODEC_BASE_COPY = 18, /* a base tensor the v1 file leaves unchanged */
} wd_codec;
WD_API const char *wd_codec_name(wd_codec c);
/* 1 for int4, sparse, bitdelta, axis1, lowrank, ternary, ternary-axis1 */
WD_API int wd_codec_is_lossy(wd_codec c);
/* 1 for the codecs of whole-row blocks: the lossy ones and lowrank-exact */
WD_API int wd_codec_is_rowblock(wd_codec c);
#define WD_LOWRANK_KMAX 256

/* Settings of the lossy codecs (0 = default). */
typedef struct wd_lossy_params {
    uint32_t cols;    /* elements per row (the tensor's last dimension); set by create */
    uint32_t group;   /* int4: elements per scale group (default 128) */
    double outliers;  /* int4: fraction of each block kept exactly (default 0.002) */
    double density;   /* sparse: fraction of each block kept (default 0.1) */
    int level;        /* zstd level of the entropy-coded sections (default 3) */
    double step;      /* int4: quantization step as a fraction of the RMS of the block's
                         changed values (delta != 0, outliers excluded)
                         (groups whose range needs more get max|D|/7.5); wd_create's
                         default 0.6; negative there, 0 for the codec itself: per-group
                         scale of least squared error */
    uint32_t rank;    /* lowrank, lowrank-exact: fixed rank (0: found per block) */
} wd_lossy_params;

typedef struct wd_create_opts {
    const char *base_dir;
    const char *ft_dir;
    const char *out_path;
    const char *strategy;  /* "lossless" (default), "int4", "sparse", "bitdelta",
                              "axis1" or "auto" */
    wd_lossy_params lossy; /* settings of the lossy strategies (0 = default) */
    int no_lowrank;        /* 1: never the lowrank-exact codec for lossless tensors */
    double max_error;      /* auto: largest relative error per tensor (> 0) */
    int threads;           /* 0 = number of online CPUs */
    int level;             /* zstd level, default 3 */
    uint32_t block_size;   /* output bytes per block, default WD_DEFAULT_BLOCK_SIZE */
    /* progress: called from the writing thread.  First, while codecs are
     * chosen (lossy strategies, lowrank-exact trials): bytes_total 0 and
     * tensors_done of tensors_total looked at; then, while writing, after
     * each block: bytes_done of bytes_total fed, tensors_done fully fed */
    void (*progress)(void *ctx, uint64_t bytes_done, uint64_t bytes_total,
                     size_t tensors_done, size_t tensors_total);
    void *progress_ctx;
    /* lineage: take the delta against the model this delta rebuilds (its
     * source attached, see wd_delta_set_parent) instead of base_dir; the
     * output's base_hash is then the parent's result_hash */
    struct wd_delta *parent;
    /* input policy (wd_create_inputs): file names matching one of these
     * globs (fnmatch) are left out of the fine-tune, besides what the policy
     * always leaves out */
    const char *const *exclude;
    size_t nexclude;
    /* interruption: when *stop becomes non-zero (a signal handler sets it
     * to the signal number) the work stops at the next block, the
     * temporary output is removed and the call fails ("interrupted") */
    const volatile sig_atomic_t *stop;
} wd_create_opts;

typedef struct wd_create_stats {
    uint64_t input_bytes;  /* bytes of the fine-tune's files */
    uint64_t output_bytes; /* size of the .wdelta */
    size_t ntensors, nblocks;
} wd_create_stats;

/* What create takes from a fine-tune directory (core/model/inputs.c has the
 * policy): each entry's kind. */
typedef enum wd_input_kind {
    WD_INPUT_WEIGHTS,  /* a safetensors file of the model: delta-coded */
    WD_INPUT_STORED,   /* a model file (config, tokenizer...): stored whole */
    WD_INPUT_UNKNOWN,  /* another file (pytorch_model.bin...): stored whole, named */
    WD_INPUT_TRAINING, /* left out: training state (optimizer.pt, rng_state*.pth...) */
    WD_INPUT_OURS,     /* left out: *.wdelta, the output itself, our temporaries */
    WD_INPUT_EXCLUDED, /* left out: matches an exclude glob */
    WD_INPUT_SUBDIR,   /* left out: a subdirectory */
    WD_INPUT_SKIPPED,  /* left out: not a regular file or an unsafe name */
} wd_input_kind;
/* The kind of a directory entry that is not a weights file. */
WD_API wd_input_kind wd_input_classify(const char *name, int is_dir, const char *const *exclude, size_t nexclude);
/* One line of text for a kind ("left out: training state"). */
WD_API const char *wd_input_kind_text(wd_input_kind k);
/* Every entry of ft_dir, sorted by name, with its kind and size (regular
 * files) as wd_create with this output path and these globs treats it. */
WD_API int wd_create_inputs(const char *ft_dir, const char *out_path, const char *const *exclude, size_t nexclude,
                     void (*cb)(void *ctx, const char *name, wd_input_kind kind, uint64_t size), void *ctx,
                     wd_err *err);

/* Stream a delta: writes OUT.tmp.PID.RANDOM next to out_path, renames when
 * done.  The new file's mode is 0666 less the umask, or, when it replaces
 * a regular file, that file's mode.  Temporaries a killed process left for
 * the same out_path are removed first (wd_remove_stale). */
WD_API int wd_create(const wd_create_opts *o, wd_create_stats *st, wd_err *err);

/* An extent: a byte range of an output file produced by a run of blocks. */
typedef struct wd_extent {
    uint64_t file_offset;  /* where in the output file */
    uint64_t length;
    uint32_t first_block;  /* index into the block table */
    uint32_t nblocks;
    uint32_t block_size;   /* output bytes per block (last one may be short) */
    wd_codec codec;
    wd_dtype dtype;        /* of the tensor (WD_U8 for plain bytes) */
    const char *tensor;    /* tensor name, NULL for headers/extra files */
    const char *base_tensor; /* base tensor name for delta codecs, else NULL */
    const char *params;    /* lossy codecs: their settings as JSON text, else NULL */
} wd_extent;

typedef struct wd_outfile {
    const char *name;      /* safe file name */
    uint64_t size;
    int is_safetensors;
    size_t nextents;
    const wd_extent *extents; /* sorted by file_offset, contiguous, cover [0,size) */
} wd_outfile;

typedef struct wd_block {
    uint64_t offset;       /* in the .wdelta file */
    uint32_t stored_len;
    uint32_t out_len;
    uint64_t stored_hash;  /* wd_hash64 of the stored bytes */
    uint64_t out_hash;     /* wd_hash64 of the decoded bytes */
} wd_block;

typedef struct wd_delta wd_delta;

typedef struct wd_delta_info {
    uint32_t version;      /* 1 or 2 */
    const char *strategy;
    const char *tool;
    const char *options_json;
    unsigned char base_hash[32];
    unsigned char result_hash[32];
    uint64_t file_size;    /* of the .wdelta */
    uint64_t output_size;  /* sum of all output files */
    size_t nfiles;
    const wd_outfile *files;
    size_t nblocks;
    const wd_block *blocks;
    /* lineage: the manifest's "parent" (NULL/0 for a delta against a base) */
    const char *parent_name; /* the parent's file name when this was made */
    unsigned parent_depth;   /* links between this one and the base */
    /* which model hash base_hash and result_hash are: WD_HASH_V1 (v1 files,
     * v2 files written before the identity) or WD_ID_V2 */
    unsigned base_hash_kind, result_hash_kind;
    /* v2: the SHA-256 of the footer (over manifest, block table, footer),
     * which names this exact file; and, for a chain link written since,
     * the parent's (manifest "parent.digest"), has_parent_digest 1 */
    unsigned char digest[32];
    int has_parent_digest;
    unsigned char parent_digest[32];
    /* deltatensors' content hashes (WD_HASH_V1) of the base and the result,
     * for readers that compare those (FORMAT.md "Model identity"): from the
     * manifest's base_hash_v1/result_hash_v1 (informational, written since
     * the identity), or base_hash/result_hash when that is their kind (v1
     * files: base only).  has_*_v1 0: not known from the file. */
    int has_base_hash_v1, has_result_hash_v1;
    unsigned char base_hash_v1[32], result_hash_v1[32];
} wd_delta_info;

/* Open: checks magic, version, footer, and the digest over manifest+index. */
WD_API int wd_delta_open(const char *path, wd_delta **out, wd_err *err);
/* The same for a file the caller has opened (fd, read access): the delta
 * reads its own duplicate of fd (the caller may close fd), so what is
 * decoded is exactly the file the caller checked with fstat, even if the
 * path is replaced meanwhile; path only names it in messages. */
WD_API int wd_delta_open_fd(int fd, const char *path, wd_delta **out, wd_err *err);
WD_API void wd_delta_close(wd_delta *d);
WD_API const wd_delta_info *wd_delta_get_info(const wd_delta *d);
/* Attach the base model (needed to decode delta codecs).  Checks that every
 * base tensor the delta references exists with the right dtype and size.
 * Does NOT hash the base (that reads everything); see wd_model_hash. */
WD_API int wd_delta_set_base(wd_delta *d, const wd_model *base, wd_err *err);
/* The same, reading the base through the caller's descriptors: fds[i] is
 * open for reading on base->files[i].  They are borrowed, not duplicated and
 * never closed here: they must stay open until wd_delta_close.  Lets many
 * deltas on one base share one descriptor per shard. */
WD_API int wd_delta_set_base_fds(wd_delta *d, const wd_model *base, const int *fds, wd_err *err);
/* Is base the model d was made against?  Hashes it (the kind d records:
 * WD_HASH_V1 or WD_ID_V2) and compares; a mismatch is a WD_ERR_MISSING
 * error naming both hashes ("wrong base"). */
WD_API int wd_delta_check_base(const wd_delta *d, const wd_model *base, wd_err *err);
/* v1 files are presented as float32 tensors (what the reference writes);
 * call this before wd_delta_set_base to present them in the base's dtype
 * (BF16/F16/F32, round to nearest even) instead.  No effect on v2. */
WD_API void wd_delta_v1_use_base_dtype(wd_delta *d, int yes);

/* The whole-file digest of a v1 file (reads all of it); remembered, so a
 * second call costs nothing.  Once it has failed, every v1 block decode
 * fails too.  v2 files: 0 (their index digest is checked at open, each block
 * by its checksums). */
WD_API int wd_delta_check_digest(wd_delta *d, wd_err *err);
/* 1 checked and good, -1 bad, 0 not checked yet (v2: always 1). */
WD_API int wd_delta_digest_state(wd_delta *d);

/* Index of an output file by name, or -1. */
WD_API int wd_delta_find_file(const wd_delta *d, const char *name);

/* Decode one block: reads the stored bytes and (for delta codecs) the base
 * range with pread, checks both checksums, writes out_len bytes to out.
 * A checksum mismatch is an error, never data.  Thread-safe. */
WD_API int wd_delta_decode_block(wd_delta *d, uint32_t block, void *out, wd_err *err);
/* Which extent/block holds byte `off` of file `f`: returns block index and
 * sets *block_file_off to the file offset where that block's output starts. */
WD_API int wd_delta_locate(const wd_delta *d, size_t f, uint64_t off,
                    uint32_t *block, uint64_t *block_file_off);
/* Read-ahead: the blocks that hold file f's bytes from offset pos on, in
 * file order (block numbers follow the writer's order, not the file's): at
 * most max of them into blocks[].  *end: the file offset just past the last
 * block given (pos when none).  Returns how many; 0 when pos is at or past
 * the file's end or f is not a file of d. */
WD_API size_t wd_delta_next_blocks(const wd_delta *d, size_t f, uint64_t pos, uint32_t *blocks, size_t max,
                            uint64_t *end);

/* Quality of a delta: per tensor, the rebuilt values against the fine-tune's
 * (float64 over finite values): err2 = sum (rebuilt - ft)^2, delta2 =
 * sum (ft - base)^2 (0 for a tensor without a base tensor), max_abs =
 * max |rebuilt - ft|, stored = bytes of the tensor's blocks.  Non-float
 * tensors count as exact when their bytes are identical (err2 = NaN if not).
 * Needs the base attached; reads the fine-tune tensor by tensor. */
typedef struct wd_eval_tensor {
    const char *name;
    wd_codec codec;
    wd_dtype dtype;
    const char *params;    /* lossy settings (JSON) or NULL */
    uint64_t nelem, stored;
    double err2, delta2, max_abs;
} wd_eval_tensor;
WD_API int wd_eval(wd_delta *d, const wd_model *ft, void (*cb)(void *ctx, const wd_eval_tensor *t), void *ctx,
            wd_err *err);

/* --------------------------------------------------------- block cache */
typedef struct wd_cache wd_cache;
typedef struct wd_cache_stats {
    uint64_t capacity, used, hits, misses, decoded_bytes, decode_ns, evictions;
} wd_cache_stats;

WD_API wd_cache *wd_cache_new(uint64_t capacity_bytes);
WD_API void wd_cache_free(wd_cache *c);
WD_API void wd_cache_stats_get(wd_cache *c, wd_cache_stats *s);

/* Decode a block into the cache (for read-ahead); no-op if present. */
WD_API int wd_cache_prefetch(wd_delta *d, uint64_t key, wd_cache *c, uint32_t block, wd_err *err);

/* Read [off, off+len) of output file f of delta d through cache c (c may be
 * NULL: decode directly).  `key` identifies d in the cache (e.g. its inode):
 * two open deltas with the same key must have the same content.  Concurrent
 * readers of one block decode it once.  Returns bytes read (short only at
 * EOF) or -1. */
WD_API ssize_t wd_read(wd_delta *d, uint64_t key, wd_cache *c, size_t f,
                void *buf, size_t len, uint64_t off, wd_err *err);

/* wd_read without a copy: rv->iov[0 .. rv->niov) are set to the bytes of
 * [off, off+len) of output file f in the cache's blocks, which stay pinned
 * (not evicted) until wd_read_release; hand them to writev or the like,
 * then release.  A range over more than WD_READV_MAX blocks (or read with
 * no cache) has its last part copied into a buffer of rv's own.  Returns
 * the bytes (short only at EOF) or -1 (nothing is held then).  rv needs no
 * setup; wd_read_release(c, rv) is due after every call, even a failed
 * one (then it does nothing). */
#define WD_READV_MAX 16
typedef struct wd_readv {
    struct iovec iov[WD_READV_MAX];
    int niov;
    /* internal: the pinned blocks and the copied part */
    void *pin[WD_READV_MAX];
    int npin;
    void *spill;
} wd_readv;
WD_API ssize_t wd_read_pinned(wd_delta *d, uint64_t key, wd_cache *c, size_t f, size_t len, uint64_t off, wd_readv *rv,
                       wd_err *err);
WD_API void wd_read_release(wd_cache *c, wd_readv *rv);

/* Rebuild the whole fine-tune directory into out_dir, built as
 * OUT.tmp.PID.RANDOM next to it and renamed into place when complete.
 * out_dir must not exist (it is created 0777 less the umask) or be an empty
 * directory (its mode is kept); files are 0666 less the umask.  threads:
 * 0 = online CPUs.  Stops, removing the temporary directory, when the
 * delta's stop flag is raised. */
WD_API int wd_apply(wd_delta *d, const char *out_dir, int threads,
             void (*progress)(void *ctx, uint64_t done, uint64_t total),
             void *progress_ctx, wd_err *err);
/* wd_apply that may replace an existing out_dir (`--force`): only when every
 * entry in it is a regular file wd_apply of d writes (wd_apply_writes);
 * otherwise an error names the other entries and nothing is touched.  The
 * new directory takes the old one's mode. */
WD_API int wd_apply_replace(wd_delta *d, const char *out_dir, int threads,
                     void (*progress)(void *ctx, uint64_t done, uint64_t total),
                     void *progress_ctx, wd_err *err);
/* How many files wd_apply writes (v1: the output files and the base's other
 * files it copies), and whether it writes one called name (1/0).  A v1
 * delta needs its base attached for both. */
WD_API size_t wd_apply_count(const wd_delta *d);
WD_API int wd_apply_writes(const wd_delta *d, const char *name);

/* The output FILE of create/rebase/convert: absent, or (force) a file a
 * replace may overwrite: a regular file holding a .wdelta (v1 or v2 magic).
 * Anything else is refused with an error naming it.  *keep_mode receives
 * the mode of the file replaced (0 when none), for wd_output_keep_mode. */
WD_API int wd_output_check(const char *path, int force, unsigned *keep_mode, wd_err *err);
/* After the new file is in place: give it the replaced file's mode. */
WD_API int wd_output_keep_mode(const char *path, unsigned mode, wd_err *err);

/* Check every block's checksums (no base needed for stored checksums; with a
 * base attached, also decodes every block and checks output checksums and
 * the result hash).  Fills result_hash when a base is attached. */
WD_API int wd_verify(wd_delta *d, int with_base, unsigned char result_hash[32],
              void (*progress)(void *ctx, uint64_t done, uint64_t total),
              void *progress_ctx, wd_err *err);


/* Interruption of long work on d (wd_apply, and so wd_flatten): polled
 * between blocks; NULL: never stops.  See wd_create_opts.stop. */
WD_API void wd_delta_set_stop(wd_delta *d, const volatile sig_atomic_t *stop);

/* Temporaries a killed process left next to out_path: entries of its
 * directory named OUT.tmp.PID..., OUT.rebuild.PID... or OUT.new.PID...
 * whose process PID no longer exists and that belong to this user (files,
 * or directories of files two levels deep; never through a symbolic link)
 * are removed.  Returns how many were removed.  wd_create and wd_apply call
 * it for their own output. */
WD_API long wd_remove_stale(const char *out_path, wd_err *err);

/* --------------------------------------------------------- deltatensors v1 */
/* Version 1 files (../shared/formats/deltatensors-v1.md) have no index:
 * wd_v1_open reads the JSON header and scans the records once. */
typedef struct wd_v1 wd_v1;
typedef struct wd_v1_tensor {
    const char *name;
    const char *strategy;  /* int4, quantized, sparse */
    const char *dtype;     /* of the reconstruction: "float32" */
    int ndim;
    uint64_t shape[WD_MAX_DIMS];
    uint64_t nelem;
    uint64_t stored_bytes; /* data bytes of its records */
} wd_v1_tensor;

WD_API int wd_v1_open(const char *path, wd_v1 **out, wd_err *err);
/* The same on a duplicate of the caller's descriptor fd (path for messages). */
WD_API int wd_v1_open_fd(int fd, const char *path, wd_v1 **out, wd_err *err);
WD_API void wd_v1_close(wd_v1 *v);
WD_API size_t wd_v1_count(const wd_v1 *v);
WD_API const wd_v1_tensor *wd_v1_get(const wd_v1 *v, size_t i); /* sorted by name */
WD_API int wd_v1_find(const wd_v1 *v, const char *name);        /* index or -1 */
WD_API const char *wd_v1_strategy(const wd_v1 *v);
WD_API const char *wd_v1_options(const wd_v1 *v);               /* JSON text */
WD_API const unsigned char *wd_v1_parent_hash(const wd_v1 *v);
WD_API uint64_t wd_v1_file_size(const wd_v1 *v);
/* The trailing SHA-256 over the whole file (reads everything). */
WD_API int wd_v1_check_digest(wd_v1 *v, wd_err *err);
/* Rebuild tensor i bit-exactly as the reference does: float32(base) + delta,
 * in float32 without contraction.  base holds nelem elements of base_dtype
 * (F32, BF16, F16 or F64); out receives nelem floats. */
WD_API int wd_v1_rebuild(wd_v1 *v, size_t i, const void *base, wd_dtype base_dtype, float *out, wd_err *err);

/* --------------------------------------------------------- chains (lineage) */
/* A delta's source is a base model directory (wd_delta_set_base) or the
 * model another delta rebuilds: wd_delta_set_parent makes d read its base
 * tensors from parent's output (parent must have its own source attached,
 * and its result_hash must be d's base_hash), through `cache` under
 * `parent_key` (cache NULL: decoded directly).  Only the parent blocks a
 * range overlaps are decoded, recursively.  parent must outlive d. */
WD_API int wd_delta_set_parent(wd_delta *d, wd_delta *parent, uint64_t parent_key, wd_cache *cache, wd_err *err);
WD_API wd_delta *wd_delta_get_parent(const wd_delta *d);
WD_API const char *wd_delta_path(const wd_delta *d);
/* The rebuilt model's safetensors files, parsed from the delta's rebuilt
 * headers, as a model (files' paths are "DELTA:NAME"; no extras).  The
 * delta needs a source only when its headers do (never for v2). */
WD_API int wd_delta_output_model(wd_delta *d, wd_model *m, wd_err *err);

/* A chain: FILE and the deltas it needs, found by model hash among the
 * `search` paths (files, or directories whose *.wdelta files are read;
 * none: FILE's own directory), down to the base directory `base_dir`
 * (NULL: links are found but no source is attached).  With a base, every
 * link's source is checked (wd_delta_check_source) and a candidate that
 * fails is passed over for the next (wd_chain_parent_rank).  Missing
 * links, loops and a wrong base are errors (kind WD_ERR_MISSING) naming
 * the files and what to give.
 * Links share `cache` (may be NULL) under keys 1..length (link i reads
 * its parent, link i-1, under key i): read the top under key `length`. */
typedef struct wd_chain wd_chain;
WD_API int wd_chain_open(const char *file, const char *const *search, size_t nsearch, const char *base_dir,
                  wd_cache *cache, wd_chain **out, wd_err *err);
WD_API void wd_chain_close(wd_chain *c);
/* The one way the tools open a delta with its source: a v2 file through
 * wd_chain_open (a chain link finds its parents in search, or beside it);
 * a v1 file (it records no result hash to chain by) over base_dir itself,
 * after, with WD_OPEN_CHECK_V1, checking that base_dir has the content
 * hash the file names (v1 blocks carry no checksums: wd_delta_check_base),
 * and with WD_OPEN_V1_BASE_DTYPE rebuilding in the base's dtype
 * (wd_delta_v1_use_base_dtype).  Either way *out is a chain (one link for
 * v1) whose wd_chain_top is the delta to read. */
#define WD_OPEN_CHECK_V1 1u
#define WD_OPEN_V1_BASE_DTYPE 2u
/* WD_OPEN_BLOCK_CHECKED_BASE: a v2 delta that records no parent is given
 * base_dir without hashing the whole base first, when its tensors are
 * there with the right dtypes and lengths and its first block that reads
 * the base decodes (otherwise the full resolution runs, with its messages).
 * Each block's output checksum then checks the base bytes that block uses
 * (FORMAT.md, "What a reader checks"): a reader that decodes every block it
 * returns (wd_apply) loses no check, and saves hashing the whole base.  On a
 * failed decode, wd_chain_check_base says whether the base was the cause. */
#define WD_OPEN_BLOCK_CHECKED_BASE 4u
WD_API int wd_open_with_base(const char *file, const char *const *search, size_t nsearch, const char *base_dir,
                             unsigned flags, wd_cache *cache, wd_chain **out, wd_err *err);
/* After a failure reading a chain opened with WD_OPEN_BLOCK_CHECKED_BASE,
 * err holding it: when it is a block that did not decode (a wrong base
 * shows as its output checksum, or the codec's own check, failing),
 * hashes the base (once) and, when that is not the base the root link was
 * made against, returns -1 with err replaced by the "wrong base" error
 * (kind WD_ERR_MISSING) naming both identities; 0, err untouched, when the
 * base is the right one, was checked when the chain was opened, or the
 * failure was of another kind (an interruption, a failed write). */
WD_API int wd_chain_check_base(wd_chain *c, wd_err *err);
/* The deltas of a directory as a forest of chains (`inspect --chain DIR`):
 * every *.wdelta file there by name, opened without a base (the errors of
 * those that do not open kept, in order), each under the delta whose result
 * is its base.  The walk lists every delta once: chain by chain, roots
 * (deltas no v2 delta there rebuilds the base of) first, each followed by
 * what it rebuilds the base of, depth-first; then loops (deltas rebuilding
 * each other's bases), each from its first file, with loop = 1. */
typedef struct wd_forest wd_forest;
typedef struct wd_forest_entry {
    size_t delta;   /* index for wd_forest_delta */
    unsigned depth; /* 0: the first of a chain */
    size_t chain;   /* 1, 2, ... */
    int loop;
} wd_forest_entry;
WD_API int wd_forest_open(const char *dir, wd_forest **out, wd_err *err);
WD_API void wd_forest_close(wd_forest *f);
WD_API size_t wd_forest_size(const wd_forest *f);
WD_API wd_delta *wd_forest_delta(const wd_forest *f, size_t i);
WD_API size_t wd_forest_chains(const wd_forest *f);
WD_API size_t wd_forest_unreadable(const wd_forest *f);
WD_API const char *wd_forest_unreadable_error(const wd_forest *f, size_t k);
WD_API const wd_forest_entry *wd_forest_walk(const wd_forest *f, size_t *n);
WD_API size_t wd_chain_length(const wd_chain *c);
WD_API wd_delta *wd_chain_link(const wd_chain *c, size_t i); /* 0: made against the base; length-1: FILE */
WD_API wd_delta *wd_chain_top(const wd_chain *c);
WD_API const wd_model *wd_chain_base(const wd_chain *c);
WD_API int wd_chain_base_hash(wd_chain *c, unsigned char out[32], wd_err *err);
/* Index of the first of links[] whose base_hash is not the result_hash of
 * the one before it; n when every link connects. */
WD_API size_t wd_chain_check_order(wd_delta *const *links, size_t n);
/* How well cand fits as child's parent, best first: 0 cand is the exact
 * file child records (manifest parent.digest), 1 it has the recorded
 * parent name and lies in child's directory, 2 the recorded name elsewhere,
 * 3 any other delta (it must still claim child's base_hash).  Candidates
 * are tried by rank, then by path (strcmp). */
WD_API int wd_chain_parent_rank(const wd_delta *child, const wd_delta *cand);
/* With d's source attached: decode d's first block that reads the source
 * and check its output checksum, so a wrong source (a delta that merely
 * claims the right result hash, a changed base) is found before use.
 * 0 when it checks out or d reads nothing from its source. */
WD_API int wd_delta_check_source(wd_delta *d, wd_err *err);

/* The chain resolver: the one place that decides which source each delta
 * gets and says why one has none.  wd_chain_open and the mount (fs/tree.c)
 * use it; each supplies, through wd_resolver_ops, where its candidates and
 * bases come from and how a source is attached.  For delta i it looks at
 * the bases (one whose model hash of i's base_hash_kind is i's base_hash
 * is attached), then at the candidates that claim to rebuild i's base,
 * in wd_chain_parent_rank order then by path: each is resolved first
 * (recursively), then attached; one that fails is passed over for the
 * next.  Loops, missing links, a wrong base, no base and bases still being
 * hashed are errors (kind WD_ERR_MISSING) it words.  A chain has at most
 * WD_CHAIN_MAX links.  Not thread-safe: one resolver per thread. */
#define WD_CHAIN_MAX 64
enum { WD_BASE_NONE = 0, WD_BASE_READY = 1, WD_BASE_WAITING = 2 };
/* WD_RESOLVE_UNCHECKED: no base given (nbases 0): a delta that records no
 * parent ends its chain, a candidate whose own chain resolves is taken as
 * the parent unchecked (attach_parent is not called), a delta whose only
 * candidates are loops ends its chain.  WD_RESOLVE_MOUNT: the messages are
 * worded for a mount, which names the delta itself ("not serving PATH:"),
 * and name -o base=DIR; otherwise they name the file and --chain DIR. */
#define WD_RESOLVE_UNCHECKED 1u
#define WD_RESOLVE_MOUNT 2u
typedef struct wd_resolver wd_resolver;
typedef struct wd_resolver_ops {
    /* candidate i, opened (its info and path are copied by wd_resolver_new);
     * NULL: it did not open (never anyone's parent) */
    const wd_delta *(*delta)(void *ctx, size_t i);
    /* base j: its directory (*dir, kept while the resolver lives) and its
     * model hash of `kind`; returns WD_BASE_READY, WD_BASE_WAITING (still
     * being hashed), WD_BASE_NONE (cannot be used) or -1 with err set */
    int (*base)(void *ctx, size_t j, unsigned kind, const char **dir, unsigned char hash[32], wd_err *err);
    /* give delta i base j, or the parent's output (parent resolved): 0, or
     * -1 with err saying why i does not check out against it */
    int (*attach_base)(void *ctx, size_t i, size_t j, wd_err *err);
    int (*attach_parent)(void *ctx, size_t i, size_t parent, wd_err *err);
    /* optional: a line worth logging (a candidate passed over) */
    void (*log)(void *ctx, const char *line);
} wd_resolver_ops;
/* n candidates, nbases bases; `searched` names where candidates were
 * looked for (for messages; may be NULL).  ops and ctx must outlive it. */
WD_API int wd_resolver_new(const wd_resolver_ops *ops, void *ctx, size_t n, size_t nbases, unsigned flags,
                           const char *searched, wd_resolver **out, wd_err *err);
/* 0: delta i has its source (resolved once; asking again is free), or -1
 * with err saying why it has none (kept: asking again gives it again) */
WD_API int wd_resolver_resolve(wd_resolver *r, size_t i, wd_err *err);
/* resolved delta i's parent, or its base; -1 when none */
WD_API long wd_resolver_parent(const wd_resolver *r, size_t i);
WD_API long wd_resolver_base(const wd_resolver *r, size_t i);
WD_API void wd_resolver_free(wd_resolver *r);
/* Store the model d rebuilds (d has its source attached) as a delta
 * against o->base_dir, written to o->out_path (o->ft_dir is ignored): the
 * model is rebuilt into a temporary directory next to the output, which is
 * removed afterwards.  `wdelta rebase` (a chain link made direct) and
 * `wdelta convert` (a v1 file as v2) are this. */
WD_API int wd_flatten(wd_delta *d, const wd_create_opts *o, wd_create_stats *st, wd_err *err);

/* --------------------------------------------------------- bindings */
/* sizeof the public struct called `name` ("wd_create_opts", "wd_model",
 * "wd_delta_info"...), 0 for an unknown name: bindings that declare these
 * structs again (python/wdelta, over ctypes) check their layout with it. */
WD_API size_t wd_struct_size(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* WDELTA_H */
