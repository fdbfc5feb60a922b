"""The deltatensors functions over libwdelta, plus apply/verify/model_hash.

Everything heavy (hashing, delta coding, decoding) happens in C with the GIL
released; Python only lays out arguments, allocates the numpy arrays that C
decodes into, and converts floats to float32 where deltatensors would.
"""
import concurrent.futures
import ctypes
import json
import os
import shutil
import tempfile

import numpy as np

from . import _lib
from ._lib import BaseMismatchError, WdeltaError, WdeltaFileNotFoundError, lib, check

STRATEGIES = ("lossless", "int4", "sparse", "bitdelta", "axis1", "ternary", "ternary-axis1", "lowrank", "auto")
# deltatensors' names for what we call otherwise
STRATEGY_ALIASES = {"quantized": "bitdelta"}

# safetensors dtype -> numpy dtype of its raw values (bf16 and fp8 as their bits)
_RAW = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
        "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
        "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
        "BOOL": np.bool_, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}
_FLOATS = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
# the dtype names inspect() reports, numpy's spelling as deltatensors does
_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
                "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
                "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _b(path):
    return None if path is None else os.fsencode(os.fspath(path))


def _s(raw):
    return None if raw is None else raw.decode("utf-8", "replace")


def _hex(arr32):
    return bytes(arr32).hex()


def _threads(n):
    return n if n and n > 0 else (os.cpu_count() or 1)


def _need(path, what="file"):
    """FileNotFoundError (a WdeltaError too) for a path that does not exist,
    as deltatensors' open() would raise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WdeltaFileNotFoundError("%s: no such %s" % (path, what))
    return path


def _kind_name(kind):
    return _s(lib.wd_hash_kind_name(kind)) or "model hash"


def _mismatch(base, path, have, want, kind=_lib.HASH_V1):
    return BaseMismatchError("Base model hash mismatch: %s is not the base of %s: its %s is %s, "
                             "the delta needs %s" % (base, path, _kind_name(kind), have, want))


def _check_base_call(rc, err, any_missing=True):
    """check() for a call that compares a base with what a delta needs: the
    library's wrong-base error (WD_ERR_MISSING) becomes BaseMismatchError
    ('Base model hash mismatch: ' and the library's text).  any_missing=False:
    only the wrong-base and missing-link messages (a chain search may also
    report a path that is not there)."""
    if rc >= 0:
        return rc
    msg = err.text()
    if err.kind == _lib.ERR_MISSING and (any_missing or msg.startswith(("wrong base", "missing link"))):
        raise BaseMismatchError("Base model hash mismatch: " + msg)
    raise WdeltaError(msg or "libwdelta call failed")


# ---------------------------------------------------------------- models
class _Model:
    """A wd_model: a safetensors directory, or the files a delta rebuilds."""

    def __init__(self):
        self.m = _lib.Model()
        self.owned = False

    @classmethod
    def open(cls, directory):
        self = cls()
        err = _lib.Err()
        check(lib.wd_model_open(_b(directory), ctypes.byref(self.m), ctypes.byref(err)), err)
        self.owned = True
        return self

    @classmethod
    def rebuilt_by(cls, delta_ptr):
        self = cls()
        err = _lib.Err()
        check(lib.wd_delta_output_model(delta_ptr, ctypes.byref(self.m), ctypes.byref(err)), err)
        self.owned = True
        return self

    def close(self):
        if self.owned:
            lib.wd_model_free(ctypes.byref(self.m))
            self.owned = False

    def tensors(self):
        """(file index, wd_tensor) in name order."""
        m = self.m
        for i in range(m.ntensors):
            ref = m.by_name[i]
            yield ref.file, m.files[ref.file].tensors[ref.tensor]

    def file_name(self, i):
        return _s(self.m.files[i].name)

    def content_hash(self):
        err = _lib.Err()
        out = (ctypes.c_ubyte * 32)()
        check(lib.wd_model_hash(ctypes.byref(self.m), ctypes.byref(out), ctypes.byref(err)), err)
        return _hex(out)


    def identity(self):
        err = _lib.Err()
        out = (ctypes.c_ubyte * 32)()
        check(lib.wd_model_identity(ctypes.byref(self.m), ctypes.byref(out), ctypes.byref(err)), err)
        return _hex(out)

    def hash_of_kind(self, kind):
        """The model hash of kind HASH_V1 (content hash) or ID_V2 (identity)."""
        err = _lib.Err()
        out = (ctypes.c_ubyte * 32)()
        check(lib.wd_model_hash_kind(ctypes.byref(self.m), kind, ctypes.byref(out), ctypes.byref(err)), err)
        return _hex(out)


def _dir_hash(model_dir, kind):
    m = _Model.open(model_dir)
    try:
        return m.hash_of_kind(kind)
    finally:
        m.close()


def model_hash(model_dir):
    """deltatensors' parent_hash of a safetensors model directory (SHA-256 hex;
    it depends on the sharding): `wdelta hash --v1`."""
    m = _Model.open(model_dir)
    try:
        return m.content_hash()
    finally:
        m.close()


def model_identity(model_dir):
    """The model identity of a safetensors model directory (SHA-256 hex over
    each tensor's name, dtype, shape and bytes; independent of sharding):
    `wdelta hash`, what v2 deltas record as base_hash/result_hash."""
    m = _Model.open(model_dir)
    try:
        return m.identity()
    finally:
        m.close()


# ---------------------------------------------------------------- deltas
def _delta_info(ptr):
    return lib.wd_delta_get_info(ptr).contents


_DIRECT = object()  # _Rebuilt's chain=: open the delta over base_dir itself, whatever it is


class _Rebuilt:
    """A delta with its source attached: a v2 chain down to a base directory,
    or a v1 file over its base.  Reads go through wd_read."""

    def __init__(self, path, base_dir, chain=None, verify=True, cache_bytes=256 << 20, check_base=None):
        """check_base (default: verify) compares the base's hash (of the kind
        the delta records) with the one the delta needs; verify=False skips
        that and the v1 digest."""
        self.path = os.fspath(path)
        self.check_base = verify if check_base is None else check_base
        self.chain = ctypes.c_void_p()
        self.delta = ctypes.c_void_p()
        self.base = None
        self.cache = None
        self.key = 0
        self.out = None
        try:
            self._open(base_dir, chain, verify, cache_bytes)
            self.out = _Model.rebuilt_by(self.top)
        except BaseException:
            self.close()
            raise

    def _open(self, base_dir, chain, verify, cache_bytes):
        err = _lib.Err()
        _need(self.path)
        if not os.path.isdir(_need(base_dir, "directory")):
            raise WdeltaError("base %s: not a directory" % os.fspath(base_dir))
        check(lib.wd_delta_open(_b(self.path), ctypes.byref(self.delta), ctypes.byref(err)), err)
        if _delta_info(self.delta).version == 1 or chain is _DIRECT:
            self._open_direct(base_dir, verify)
            return
        lib.wd_delta_close(self.delta)
        self.delta = ctypes.c_void_p()
        search = [chain] if isinstance(chain, (str, bytes, os.PathLike)) else list(chain or [])
        arr = (ctypes.c_char_p * max(1, len(search)))(*[_b(p) for p in search])
        self.cache = lib.wd_cache_new(cache_bytes)
        if not self.cache:
            raise MemoryError("wdelta: cannot allocate the block cache")
        # a wrong base, or neither the base nor a parent's rebuild: BaseMismatchError
        _check_base_call(lib.wd_chain_open(_b(self.path), arr, len(search), _b(base_dir), self.cache,
                                           ctypes.byref(self.chain), ctypes.byref(err)), err, any_missing=False)
        self.key = lib.wd_chain_length(self.chain)
        if self.check_base:
            root = _delta_info(lib.wd_chain_link(self.chain, 0))
            have = (ctypes.c_ubyte * 32)()  # of the kind the first link records
            check(lib.wd_chain_base_hash(self.chain, ctypes.byref(have), ctypes.byref(err)), err)
            if bytes(have) != bytes(root.base_hash):
                raise _mismatch(os.fspath(base_dir), self.path, _hex(have), _hex(root.base_hash),
                                root.base_hash_kind)

    def _open_direct(self, base_dir, verify):
        """The delta over base_dir itself: a v1 file, or a v2 file (a chain
        link too) over a directory that holds the model it was made against."""
        err = _lib.Err()
        self.base = _Model.open(base_dir)
        if self.check_base:  # hashes the base (the kind the file records) and compares
            _check_base_call(lib.wd_delta_check_base(self.delta, ctypes.byref(self.base.m), ctypes.byref(err)), err)
        if verify and _delta_info(self.delta).version == 1:
            # v1 blocks carry no checksums: the whole-file digest is their guard
            check(lib.wd_delta_check_digest(self.delta, ctypes.byref(err)), err)
        check(lib.wd_delta_set_base(self.delta, ctypes.byref(self.base.m), ctypes.byref(err)), err)

    @property
    def top(self):
        return lib.wd_chain_top(self.chain) if self.chain else self.delta

    def read_tensor(self, file_index, t):
        """The raw bytes of one rebuilt tensor as a uint8 array (decoded in C)."""
        name = self.out.file_name(file_index)
        f = lib.wd_delta_find_file(self.top, name.encode())
        if f < 0:
            raise WdeltaError("%s: rebuilt file %s not found" % (self.path, name))
        buf = np.empty(t.length, dtype=np.uint8)
        err = _lib.Err()
        done = 0
        while done < t.length:
            n = check(lib.wd_read(self.top, self.key, self.cache, f, buf.ctypes.data + done,
                                  t.length - done, t.offset + done, ctypes.byref(err)), err)
            if n == 0:
                raise WdeltaError("%s: %s ends before tensor %s" % (self.path, name, _s(t.name)))
            done += n
        return buf

    def state_dict(self, raw=False, threads=0):
        items = list(self.out.tensors())

        def one(item):
            fi, t = item
            return _s(t.name), _as_array(self.read_tensor(fi, t), t, raw)

        if len(items) <= 1:
            return dict(map(one, items))
        with concurrent.futures.ThreadPoolExecutor(_threads(threads)) as pool:
            return dict(pool.map(one, items))

    def close(self):
        if self.out:
            self.out.close()
            self.out = None
        if self.chain:
            lib.wd_chain_close(self.chain)
            self.chain = ctypes.c_void_p()
        if self.delta:
            lib.wd_delta_close(self.delta)
            self.delta = ctypes.c_void_p()
        if self.base:
            self.base.close()
            self.base = None
        if self.cache:
            lib.wd_cache_free(self.cache)
            self.cache = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- arrays
def _shape(t):
    return tuple(t.shape[i] for i in range(t.ndim))


def _f8_table(kind):
    """float32 value of each of the 256 fp8 codes (E4M3 'fn': no inf, NaN at S.1111.111)."""
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    ebits, mbits, bias = (4, 3, 7) if kind == "F8_E4M3" else (5, 2, 15)
    e = (codes >> mbits) & ((1 << ebits) - 1)
    m = codes & ((1 << mbits) - 1)
    normal = (1.0 + m / (1 << mbits)) * np.exp2(e.astype(np.float64) - bias)
    subnormal = (m / (1 << mbits)) * np.exp2(1.0 - bias)
    val = sign * np.where(e == 0, subnormal, normal)
    if kind == "F8_E4M3":
        val[(codes & 0x7F) == 0x7F] = np.nan
    else:
        top = e == (1 << ebits) - 1
        val[top & (m == 0)] = sign[top & (m == 0)] * np.inf
        val[top & (m != 0)] = np.nan
    return val.astype(np.float32)


def _as_array(buf, t, raw):
    """Raw tensor bytes -> numpy: float32 for floating dtypes (deltatensors'
    default), or the stored values (raw=True: bf16/fp8 as their bit patterns)."""
    name = t.dtype_name.decode()
    shape = _shape(t)
    want = _RAW.get(name)
    if want is None:  # a dtype we do not know: its bytes
        return buf
    arr = buf.view(want).reshape(shape)
    if raw or name not in _FLOATS or name == "F32":
        return arr
    if name == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if name in ("F8_E4M3", "F8_E5M2"):
        return _f8_table(name)[arr]
    return arr.astype(np.float32)


# ---------------------------------------------------------------- save
_KWARGS = ("sparsity", "outlier_fraction", "density", "outliers", "group_size", "step", "rank",
           "max_error", "level", "threads", "block_size", "no_lowrank", "parent", "chain", "progress",
           "allow_new_tensors", "exclude")


def _create_opts(out_path, finetuned_dir, base_dir, strategy, kwargs):
    bad = sorted(set(kwargs) - set(_KWARGS))
    if bad:
        raise TypeError("unexpected keyword argument%s %s; accepted: %s" %
                        ("s" if len(bad) > 1 else "", ", ".join(bad), ", ".join(_KWARGS)))
    strategy = STRATEGY_ALIASES.get(strategy, strategy)
    if strategy not in STRATEGIES:
        raise ValueError("unknown strategy %r; use one of %s (or deltatensors' 'quantized')" %
                         (strategy, ", ".join(STRATEGIES)))
    o = _lib.CreateOpts()
    o.base_dir, o.ft_dir, o.out_path = _b(base_dir), _b(finetuned_dir), _b(out_path)
    o.strategy = strategy.encode()
    o.level = int(kwargs.get("level", 3))
    o.threads = int(kwargs.get("threads", 0))
    o.block_size = int(kwargs.get("block_size", 0))
    o.no_lowrank = 1 if kwargs.get("no_lowrank") else 0
    if "sparsity" in kwargs:  # deltatensors: the fraction zeroed; ours: the fraction kept
        sp = float(kwargs["sparsity"])
        if not 0.0 <= sp < 1.0:
            raise ValueError("sparsity must be in [0, 1), got %r" % sp)
        o.lossy.density = round(1.0 - sp, 12)  # 1 - 0.8 is 0.19999999999999996
    if "density" in kwargs:
        o.lossy.density = float(kwargs["density"])
        if not 0.0 < o.lossy.density <= 1.0:
            raise ValueError("density must be in (0, 1], got %r" % kwargs["density"])
    frac = kwargs.get("outliers", kwargs.get("outlier_fraction"))
    if frac is not None:
        frac = float(frac)
        if not 0.0 <= frac <= 1.0:
            raise ValueError("outlier_fraction must be in [0, 1], got %r" % frac)
        o.lossy.outliers = frac if frac > 0 else -1.0  # -1: none
    if "group_size" in kwargs:
        o.lossy.group = int(kwargs["group_size"])
    if "step" in kwargs:
        step = float(kwargs["step"])
        o.lossy.step = step if step > 0 else -1.0  # -1: per-group least-squares scales
    if "rank" in kwargs:
        o.lossy.rank = int(kwargs["rank"])
    if "max_error" in kwargs:
        o.max_error = float(kwargs["max_error"])
    if kwargs.get("exclude"):  # globs of file names to leave out (core/model/inputs.c: the input policy)
        globs = [kwargs["exclude"]] if isinstance(kwargs["exclude"], str) else list(kwargs["exclude"])
        arr = (ctypes.c_char_p * len(globs))(*[_b(g) for g in globs])
        o._exclude_keep = arr  # kept alive with o
        o.exclude = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p))
        o.nexclude = len(globs)
    if strategy == "auto" and not o.max_error > 0:
        raise ValueError("strategy 'auto' needs max_error > 0 (largest relative error per tensor)")
    return o


def _same_keys(finetuned_dir, base_dir):
    """deltatensors' checks: the same tensor names, each of the same shape
    (ValueError 'Key mismatch' / 'Shape mismatch').  Headers only."""
    shapes = []
    for d in (finetuned_dir, base_dir):
        m = _Model.open(d)
        try:
            shapes.append({_s(t.name): _shape(t) for _fi, t in m.tensors()})
        finally:
            m.close()
    ft, base = shapes
    if ft.keys() != base.keys():
        msg = "Key mismatch between finetuned and base."
        if ft.keys() - base.keys():
            msg += "\n  Only in finetuned: %s" % sorted(ft.keys() - base.keys())
        if base.keys() - ft.keys():
            msg += "\n  Only in base:      %s" % sorted(base.keys() - ft.keys())
        raise ValueError(msg + "\n(allow_new_tensors=True stores them)")
    for name in sorted(ft):
        if ft[name] != base[name]:
            raise ValueError("Shape mismatch for '%s': finetuned %s vs base %s (allow_new_tensors=True stores "
                             "it whole)" % (name, ft[name], base[name]))


def save_delta_from_paths(out_path, finetuned_dir, base_dir, strategy="sparse", prefetch=2, use_gpu=True,
                          **kwargs):
    """Store finetuned_dir as a delta against base_dir in out_path, streaming
    (memory is bounded by threads x block size, whatever the model's size).

    strategy: deltatensors' "sparse" (default, sparsity=0.9), "quantized"
    (1-bit, our bitdelta) or "int4" (outlier_fraction=), or ours: "lossless"
    (byte-identical rebuild), "bitdelta", "axis1", "lowrank" (rank=), "auto"
    (max_error=).  parent= makes a chain link against the model that delta
    rebuilds (chain= says where its own parents are).  Like deltatensors,
    the two models must hold the same tensor names and shapes (ValueError
    'Key mismatch' / 'Shape mismatch'); allow_new_tensors=True stores added
    or reshaped tensors whole instead.  The input policy of `wdelta create`
    applies (training state, *.wdelta files and subdirectories are left out);
    exclude= (a glob or a list of globs) leaves out more files.  prefetch and
    use_gpu are accepted for compatibility and ignored (the writer streams
    blocks on `threads` CPU threads).  Returns the SHA-256 hex content hash of
    the model the delta was taken against (deltatensors' parent_hash, what
    inspect() gives as parent_hash; the file also records that model's
    identity, see model_identity)."""
    del prefetch, use_gpu  # deltatensors' read-ahead and CuPy knobs: nothing to do here
    _need(finetuned_dir, "directory")
    _need(base_dir, "directory")
    parent = kwargs.get("parent")
    progress = kwargs.get("progress")
    o = _create_opts(out_path, finetuned_dir, base_dir, strategy, kwargs)
    if not kwargs.get("allow_new_tensors"):
        _same_keys(finetuned_dir, base_dir)
    chain = None
    try:
        if parent is not None:
            chain = _Rebuilt(parent, base_dir, kwargs.get("chain"), verify=False)
            o.parent = chain.top
        if progress is not None:
            def cb(_ctx, done, total, tdone, ttotal):
                if not total:  # the first pass, choosing codecs: no bytes written yet
                    return
                try:
                    progress(done, total)
                except Exception:  # a broken progress callback must not stop the write
                    pass
            o.progress = _lib.PROGRESS_FN(cb)
        st = _lib.CreateStats()
        err = _lib.Err()
        check(lib.wd_create(ctypes.byref(o), ctypes.byref(st), ctypes.byref(err)), err)
    finally:
        if chain:
            chain.close()
    return _read_info(out_path)["parent_hash"]


# ---------------------------------------------------------------- inspect
def _v1_or_recorded(info, which):
    """The v1 content hash of the base or result when the file tells it
    (a v1 file, a v2 file recording kind 1 or base_hash_v1/result_hash_v1),
    else the hash it records (v2 files of the identity that predate those keys)."""
    if getattr(info, "has_%s_hash_v1" % which):
        return _hex(getattr(info, "%s_hash_v1" % which))
    return _hex(getattr(info, "%s_hash" % which))


def _read_info(path):
    _need(path)
    d = ctypes.c_void_p()
    err = _lib.Err()
    check(lib.wd_delta_open(_b(path), ctypes.byref(d), ctypes.byref(err)), err)
    try:
        i = _delta_info(d)
        # parent_hash/result_hash: deltatensors' content hashes where the file
        # tells them; base/result: (kind, hex) as recorded, what links and checks compare
        return {"version": i.version, "parent_hash": _v1_or_recorded(i, "base"),
                "result_hash": _v1_or_recorded(i, "result"), "strategy": _s(i.strategy),
                "link": bool(i.parent_name), "base": (i.base_hash_kind, _hex(i.base_hash)),
                "result": (i.result_hash_kind, _hex(i.result_hash))}
    finally:
        lib.wd_delta_close(d)


def _inspect_v1(path):
    v = ctypes.c_void_p()
    err = _lib.Err()
    check(lib.wd_v1_open(_b(path), ctypes.byref(v), ctypes.byref(err)), err)
    try:
        tensors = {}
        for i in range(lib.wd_v1_count(v)):
            t = lib.wd_v1_get(v, i).contents
            tensors[_s(t.name)] = {"shape": [t.shape[k] for k in range(t.ndim)], "dtype": _s(t.dtype),
                                   "strategy": _s(t.strategy), "stored_bytes": t.stored_bytes}
        size = lib.wd_v1_file_size(v)
        return {"path": os.fspath(path), "size_mb": round(size / 1e6, 2),
                "parent_hash": _hex(lib.wd_v1_parent_hash(v).contents), "strategy": _s(lib.wd_v1_strategy(v)),
                "n_tensors": len(tensors), "tensors": tensors, "version": 1, "size_bytes": size,
                "options": json.loads(_s(lib.wd_v1_options(v)) or "{}")}
    finally:
        lib.wd_v1_close(v)


def _extents_by_tensor(info):
    """tensor name -> (codec, params JSON or None, stored bytes) from the extents."""
    out = {}
    for fi in range(info.nfiles):
        f = info.files[fi]
        for ei in range(f.nextents):
            e = f.extents[ei]
            if not e.tensor:
                continue
            stored = sum(info.blocks[b].stored_len for b in range(e.first_block, e.first_block + e.nblocks))
            out[_s(e.tensor)] = (_s(lib.wd_codec_name(e.codec)), _s(e.params), stored)
    return out


def inspect(path):
    """Describe a .wdelta without its base: deltatensors' keys (path, size_mb,
    parent_hash, strategy, n_tensors, tensors{name: {shape, dtype}}) plus
    ours: version, result_hash, per-tensor codec/stored_bytes (and the rank
    a low-rank codec found), output files, and the parent of a chain link.
    parent_hash and result_hash are deltatensors' content hashes
    (hash_state_dict, model_hash) where the file records them (all files
    but v2 ones written by an early identity build, which give their
    identities); base_identity and result_identity, the model identities
    (model_identity) a v2 file records."""
    if _read_info(path)["version"] == 1:
        return _inspect_v1(path)
    d = ctypes.c_void_p()
    err = _lib.Err()
    check(lib.wd_delta_open(_b(path), ctypes.byref(d), ctypes.byref(err)), err)
    model = None
    try:
        i = _delta_info(d)
        model = _Model.rebuilt_by(d)
        codecs = _extents_by_tensor(i)
        tensors = {}
        for _fi, t in model.tensors():
            name = _s(t.name)
            entry = {"shape": list(_shape(t)), "dtype": _DTYPE_NAMES.get(t.dtype_name.decode(), t.dtype_name.decode())}
            if name in codecs:
                codec, params, stored = codecs[name]
                entry.update(codec=codec, stored_bytes=stored)
                if params:
                    entry["params"] = json.loads(params)
            tensors[name] = entry
        res = {"path": os.fspath(path), "size_mb": round(i.file_size / 1e6, 2),
               "parent_hash": _v1_or_recorded(i, "base"), "strategy": _s(i.strategy), "n_tensors": len(tensors),
               "tensors": tensors, "version": 2, "size_bytes": i.file_size,
               "result_hash": _v1_or_recorded(i, "result"), "output_bytes": i.output_size,
               "tool": _s(i.tool), "options": json.loads(_s(i.options_json) or "{}"),
               "files": {_s(i.files[k].name): i.files[k].size for k in range(i.nfiles)}}
        if i.parent_name:
            res["parent"] = {"name": _s(i.parent_name), "depth": i.parent_depth}
        if i.base_hash_kind == _lib.ID_V2:  # the model identities it records (model_identity)
            res["base_identity"] = _hex(i.base_hash)
        if i.result_hash_kind == _lib.ID_V2:
            res["result_identity"] = _hex(i.result_hash)
        return res
    finally:
        if model:
            model.close()
        lib.wd_delta_close(d)


# ---------------------------------------------------------------- load
def load_delta_from_paths(path, base_dir, verify=True, raw=False, chain=None, threads=0):
    """Rebuild the model a .wdelta (v1 or v2, or the top of a chain) stores,
    as {name: numpy array}.  Floating tensors come back as float32 like
    deltatensors; raw=True gives the stored values instead (bf16 as uint16).
    verify=True checks the base's SHA-256 content hash first; v2 blocks are
    always checked against their checksums.  chain: where a chain link's
    parents are (paths of .wdelta files or directories; default: the file's
    own directory).  Tensors are decoded on `threads` threads (0: all CPUs)."""
    with _Rebuilt(path, base_dir, chain, verify) as r:
        return r.state_dict(raw=raw, threads=threads)


def inspect_chain(delta_paths):
    """inspect() of each file of a chain, oldest first, each with "step"
    (its 0-based position) added.  Reads headers only: whether the links
    connect is checked by load_delta_chain(..., verify=True)."""
    return [dict(inspect(p), step=i) for i, p in enumerate(delta_paths)]


def _open_pending(path, base_dir, search, verify):
    """A _Rebuilt of path over base_dir; through the chain of exactly the
    links in `search` when that is a list."""
    r = _Rebuilt(path, base_dir, search, verify=verify, check_base=False)
    if isinstance(search, list) and lib.wd_chain_length(r.chain) != len(search):
        n = lib.wd_chain_length(r.chain)
        r.close()
        raise WdeltaError("%s is a chain of %d links over %s, but %d were given: %s" %
                          (path, n, base_dir, len(search), ", ".join(search)))
    return r


def _materialize(path, base_dir, search, verify, out_dir, threads):
    """Rebuild `path` (over base_dir, through the links in `search`) into out_dir."""
    with _open_pending(path, base_dir, search, verify) as r:
        err = _lib.Err()
        check(lib.wd_apply(r.top, _b(out_dir), int(threads), _progress_fn(None), None, ctypes.byref(err)), err)


def load_delta_chain(delta_paths, base=None, verify=True, raw=False, threads=0, base_dir=None, tmp_dir=None):
    """Rebuild the model at the end of a chain: base, then each of
    delta_paths (oldest first) applied to the model the one before it
    rebuilds, as deltatensors does.  base: a base model directory or a state
    dict ({name: array or tensor}); base_dir= is accepted as its old name.
    verify=True checks at every step that the delta was made against the
    model it is applied to (ValueError 'Base model hash mismatch': a wrong
    base or a wrong order).  verify=False skips those checks; deltas of
    ours then go in the order their content hashes link them when they
    form one chain (our blocks carry output checksums, so a delta applied
    to a model it was not made against is an error, never silent garbage).

    Files may be deltatensors v1 files, our deltas, or our chain links (each
    made with parent= or save_delta_chain_from_paths against the one before
    it): consecutive links are read straight through the chain, anything
    else is rebuilt into a temporary directory (under tmp_dir, default
    $TMPDIR) for the next step to apply to.  raw and threads as for
    load_delta_from_paths."""
    if base_dir is not None:
        if base is not None:
            raise TypeError("load_delta_chain: give base or base_dir (its older name), not both")
        base = base_dir
    if base is None:
        raise TypeError("load_delta_chain() missing required argument: 'base'")
    paths = [os.fspath(p) for p in delta_paths]
    if not paths:
        raise ValueError("delta_paths is empty: give at least one .wdelta file")
    infos = [_read_info(p) for p in paths]
    if not verify:
        order = _hash_order(infos)
        if order:
            paths, infos = [paths[k] for k in order], [infos[k] for k in order]
    with tempfile.TemporaryDirectory(prefix=".wdelta-chain-", dir=tmp_dir) as tmp:
        if isinstance(base, (str, bytes, os.PathLike)):
            cur = os.fsdecode(_need(base, "directory"))
            what = cur
        else:
            cur = os.path.join(tmp, "base")
            os.mkdir(cur)
            write_safetensors(os.path.join(cur, "model.safetensors"), base)
            what = "the base state dict"
        cur_hashes = {}  # kind -> hash of the model in cur, computed when needed
        pending = []  # indices of the deltas not yet rebuilt: a chain over cur, oldest first
        for i, (p, info) in enumerate(zip(paths, infos)):
            top = infos[pending[-1]] if pending else None
            root = pending and infos[pending[0]]["version"] == 2 and not infos[pending[0]]["link"]
            # hashes compared are those the files record, kind and all
            kind, want = info["base"]
            extend = root and info["version"] == 2 and info["link"] and info["base"] == top["result"]
            # the hash of the model now is known when top records one of this kind
            known = top and top["version"] == 2 and top["result"][0] == kind
            if verify and (not top or known):
                if top:
                    have, now = top["result"][1], "the model %s rebuilds" % paths[pending[-1]]
                else:
                    if kind not in cur_hashes:
                        cur_hashes[kind] = _dir_hash(cur, kind)
                    have, now = cur_hashes[kind], what
                if have != want:
                    raise _mismatch(now, "%s (step %d of %d)" % (p, i, len(paths)), have, want, kind)
            if extend:
                pending.append(i)  # read through the chain: no copy of the model in between
                continue
            if pending:  # rebuild what is pending, to apply this delta to it
                out = os.path.join(tmp, "step%d" % pending[-1])
                _materialize(paths[pending[-1]], cur, _search(pending, paths, infos), verify, out, threads)
                if cur.startswith(tmp + os.sep) and os.path.basename(cur) != "base":
                    shutil.rmtree(cur, ignore_errors=True)
                cur, what = out, "the model %s rebuilds" % paths[pending[-1]]
                cur_hashes = {top["result"][0]: top["result"][1]} if top["version"] == 2 else {}
                if verify and not known:  # no result hash of this kind recorded (v1 files): hash the rebuild
                    cur_hashes[kind] = _dir_hash(cur, kind)
                    if cur_hashes[kind] != want:
                        raise _mismatch(what, "%s (step %d of %d)" % (p, i, len(paths)), cur_hashes[kind], want,
                                        kind)
            pending = [i]
        with _open_pending(paths[pending[-1]], cur, _search(pending, paths, infos), verify) as r:
            return r.state_dict(raw=raw, threads=threads)


def save_delta_chain_from_paths(out_path, finetuned_dir, parent_delta_path, base_dir, strategy="sparse",
                                use_gpu=True, **kwargs):
    """Store finetuned_dir as a delta against the model parent_delta_path
    rebuilds (over base_dir): the next link of a chain.  Returns the
    SHA-256 hex content hash of that parent model, the new file's
    parent_hash.  A parent of ours is followed through its own chain (its
    links are looked for in chain=, default its own directory) and nothing
    else is written; a deltatensors v1 parent is rebuilt into a temporary
    directory first (removed afterwards), and the new delta is made against
    that model.  Strategy and keyword arguments as save_delta_from_paths;
    use_gpu is accepted and ignored."""
    del use_gpu
    parent = os.fspath(_need(parent_delta_path))
    if kwargs.get("parent") is not None:
        raise TypeError("save_delta_chain_from_paths: the parent is parent_delta_path; do not pass parent=")
    if _read_info(parent)["version"] == 2:
        return save_delta_from_paths(out_path, finetuned_dir, base_dir, strategy, parent=parent, **kwargs)
    tmp_parent = os.path.dirname(os.path.abspath(os.fspath(out_path)))
    with tempfile.TemporaryDirectory(prefix=".wdelta-parent-", dir=tmp_parent) as tmp:
        model = os.path.join(tmp, "parent")
        _materialize(parent, _need(base_dir, "directory"), _DIRECT, True, model, kwargs.get("threads", 0))
        return save_delta_from_paths(out_path, finetuned_dir, model, strategy, **kwargs)


def _hash_order(infos):
    """The order in which deltas of ours follow one another by model hash
    (each made against the model the one before rebuilds), or None when
    they are not one such line."""
    if any(i["version"] != 2 for i in infos):
        return None
    made_on = {}
    for k, i in enumerate(infos):
        made_on.setdefault(i["base"], []).append(k)
    results = {i["result"] for i in infos}
    roots = [k for k, i in enumerate(infos) if i["base"] not in results]
    if len(roots) != 1:
        return None
    order = roots
    while len(order) < len(infos):
        nxt = made_on.get(infos[order[-1]]["result"], [])
        if len(nxt) != 1 or nxt[0] in order:
            return None
        order.append(nxt[0])
    return order


def _search(pending, paths, infos):
    """How to open the top of `pending` over the current model: through
    the chain of its links, or (one delta, a link whose parent was rebuilt
    already or a plain delta) over that model directly."""
    if len(pending) > 1:
        return [paths[j] for j in pending]
    return _DIRECT


# ---------------------------------------------------------------- state dicts
def _to_numpy(name, value):
    """(safetensors dtype, contiguous numpy array) of a numpy array or a torch tensor."""
    mod = type(value).__module__
    if mod.startswith("torch"):
        import torch  # only when the caller already uses torch
        t = value.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            return "BF16", t.view(torch.int16).numpy().view(np.uint16)
        if t.dtype in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)):
            kind = "F8_E4M3" if t.dtype == torch.float8_e4m3fn else "F8_E5M2"
            return kind, t.view(torch.uint8).numpy()
        value = t.numpy()
    arr = np.asarray(value)  # not ascontiguousarray: it turns a 0-d scalar into shape (1,)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    if arr.dtype.name == "bfloat16":  # ml_dtypes' bfloat16
        return "BF16", arr.view(np.uint16)
    for st, np_t in _RAW.items():
        if st not in ("BF16", "F8_E4M3", "F8_E5M2") and arr.dtype == np.dtype(np_t):
            return st, arr
    raise TypeError("tensor %s: dtype %s cannot be stored in safetensors" % (name, arr.dtype))


def write_safetensors(path, tensors, metadata=None):
    """Write {name: array} as one safetensors file (names sorted, data back to back)."""
    header, pieces, off = {}, [], 0
    for name in sorted(tensors):
        st, arr = _to_numpy(name, tensors[name])
        header[name] = {"dtype": st, "shape": list(arr.shape), "data_offsets": [off, off + arr.nbytes]}
        pieces.append(arr)
        off += arr.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for arr in pieces:
            f.write(arr.reshape(-1).view(np.uint8).data)
    os.replace(tmp, path)


def save_delta(path, finetuned, base, strategy="sparse", use_gpu=True, **kwargs):
    """save_delta_from_paths for state dicts held in memory ({name: numpy
    array or torch tensor}): both are written as safetensors to a temporary
    directory next to `path`, which is removed afterwards.  Returns the
    base's SHA-256 content hash (hash_state_dict(base), the file's
    parent_hash).  use_gpu is accepted and ignored."""
    del use_gpu
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    tmp_parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    with tempfile.TemporaryDirectory(prefix=".wdelta-save-", dir=tmp_parent) as tmp:
        for sub, sd in (("ft", finetuned), ("base", base)):
            os.mkdir(os.path.join(tmp, sub))
            write_safetensors(os.path.join(tmp, sub, "model.safetensors"), sd)
        return save_delta_from_paths(path, os.path.join(tmp, "ft"), os.path.join(tmp, "base"), strategy, **kwargs)


def load_delta(path, base, verify=True, raw=False, threads=0):
    """load_delta_from_paths for a base state dict held in memory (written as
    safetensors to a temporary directory, removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix=".wdelta-load-") as tmp:
        write_safetensors(os.path.join(tmp, "model.safetensors"), base)
        return load_delta_from_paths(path, tmp, verify=verify, raw=raw, threads=threads)


# ---------------------------------------------------------------- whole files
def _progress_fn(progress):
    if progress is None:
        return _lib.PROGRESS2_FN()

    def cb(_ctx, done, total):
        try:
            progress(done, total)
        except Exception:
            pass
    return _lib.PROGRESS2_FN(cb)


def apply(path, base_dir, out_dir, chain=None, threads=0, progress=None):
    """Rebuild a delta's model directory into out_dir (like `wdelta apply`)."""
    with _Rebuilt(path, base_dir, chain, verify=True) as r:
        err = _lib.Err()
        fn = _progress_fn(progress)
        check(lib.wd_apply(r.top, _b(out_dir), int(threads), fn, None, ctypes.byref(err)), err)


def verify(path, base_dir, chain=None, progress=None):
    """Decode every block of a delta (through its chain) and check every
    checksum and the rebuilt model's content hash; returns that hash (hex).
    Raises WdeltaError naming what is wrong."""
    with _Rebuilt(path, base_dir, chain, verify=True) as r:
        err = _lib.Err()
        out = (ctypes.c_ubyte * 32)()
        fn = _progress_fn(progress)
        check(lib.wd_verify(r.top, 1, ctypes.byref(out), fn, None, ctypes.byref(err)), err)
        return _hex(out)
