"""The deltatensors functions over libwdelta, plus apply/verify/model_hash.

Everything heavy (hashing, delta coding, decoding) happens in C with the GIL
released; Python only lays out arguments, allocates the numpy arrays that C
decodes into, and converts floats to float32 where deltatensors would.
"""
import concurrent.futures
import ctypes
import json
import os
import tempfile

import numpy as np

from . import _lib
from ._lib import WdeltaError, lib, check

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


def model_hash(model_dir):
    """deltatensors' parent_hash of a safetensors model directory (SHA-256 hex)."""
    m = _Model.open(model_dir)
    try:
        return m.content_hash()
    finally:
        m.close()


# ---------------------------------------------------------------- deltas
def _delta_info(ptr):
    return lib.wd_delta_get_info(ptr).contents


class _Rebuilt:
    """A delta with its source attached: a v2 chain down to a base directory,
    or a v1 file over its base.  Reads go through wd_read."""

    def __init__(self, path, base_dir, chain=None, verify=True, cache_bytes=256 << 20):
        self.path = os.fspath(path)
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
        if not os.path.isdir(os.fspath(base_dir)):
            raise WdeltaError("base %s: not a directory" % os.fspath(base_dir))
        check(lib.wd_delta_open(_b(self.path), ctypes.byref(self.delta), ctypes.byref(err)), err)
        if _delta_info(self.delta).version == 1:
            self._open_v1(base_dir, verify)
            return
        lib.wd_delta_close(self.delta)
        self.delta = ctypes.c_void_p()
        search = [chain] if isinstance(chain, (str, bytes, os.PathLike)) else list(chain or [])
        arr = (ctypes.c_char_p * max(1, len(search)))(*[_b(p) for p in search])
        self.cache = lib.wd_cache_new(cache_bytes)
        if not self.cache:
            raise MemoryError("wdelta: cannot allocate the block cache")
        check(lib.wd_chain_open(_b(self.path), arr, len(search), _b(base_dir), self.cache,
                                ctypes.byref(self.chain), ctypes.byref(err)), err)
        self.key = lib.wd_chain_length(self.chain)
        if verify:
            root = _delta_info(lib.wd_chain_link(self.chain, 0))
            have = (ctypes.c_ubyte * 32)()
            check(lib.wd_chain_base_hash(self.chain, ctypes.byref(have), ctypes.byref(err)), err)
            if bytes(have) != bytes(root.base_hash):
                raise WdeltaError("%s is not the base of %s: its content hash is %s, the delta needs %s" %
                                  (os.fspath(base_dir), self.path, _hex(have), _hex(root.base_hash)))

    def _open_v1(self, base_dir, verify):
        err = _lib.Err()
        self.base = _Model.open(base_dir)
        if verify:  # v1 blocks carry no checksums: the base's hash is the only guard
            have = self.base.content_hash()
            want = _hex(_delta_info(self.delta).base_hash)
            if have != want:
                raise WdeltaError("%s is not the base of %s: its content hash is %s, the delta needs %s" %
                                  (os.fspath(base_dir), self.path, have, want))
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
           "max_error", "level", "threads", "block_size", "no_lowrank", "parent", "chain", "progress")


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
    if strategy == "auto" and not o.max_error > 0:
        raise ValueError("strategy 'auto' needs max_error > 0 (largest relative error per tensor)")
    return o


def save_delta_from_paths(out_path, finetuned_dir, base_dir, strategy="sparse", prefetch=2, **kwargs):
    """Store finetuned_dir as a delta against base_dir in out_path, streaming
    (memory is bounded by threads x block size, whatever the model's size).

    strategy: deltatensors' "sparse" (default, sparsity=0.9), "quantized"
    (1-bit, our bitdelta) or "int4" (outlier_fraction=), or ours: "lossless"
    (byte-identical rebuild), "bitdelta", "axis1", "lowrank" (rank=), "auto"
    (max_error=).  parent= makes a chain link against the model that delta
    rebuilds (chain= says where its own parents are).  prefetch is accepted
    for compatibility; streaming here is per block.  Returns the SHA-256 hex
    content hash of the model the delta was taken against."""
    del prefetch  # deltatensors' read-ahead knob; our writer streams blocks
    parent = kwargs.get("parent")
    progress = kwargs.get("progress")
    o = _create_opts(out_path, finetuned_dir, base_dir, strategy, kwargs)
    chain = None
    try:
        if parent is not None:
            chain = _Rebuilt(parent, base_dir, kwargs.get("chain"), verify=False)
            o.parent = chain.top
        if progress is not None:
            def cb(_ctx, done, total, tdone, ttotal):
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
def _read_info(path):
    d = ctypes.c_void_p()
    err = _lib.Err()
    check(lib.wd_delta_open(_b(path), ctypes.byref(d), ctypes.byref(err)), err)
    try:
        i = _delta_info(d)
        return {"version": i.version, "parent_hash": _hex(i.base_hash), "result_hash": _hex(i.result_hash),
                "strategy": _s(i.strategy)}
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
        return {"path": os.fspath(path), "size_mb": round(size / 1e6, 1),
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
    a low-rank codec found), output files, and the parent of a chain link."""
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
        res = {"path": os.fspath(path), "size_mb": round(i.file_size / 1e6, 1), "parent_hash": _hex(i.base_hash),
               "strategy": _s(i.strategy), "n_tensors": len(tensors), "tensors": tensors, "version": 2,
               "size_bytes": i.file_size, "result_hash": _hex(i.result_hash), "output_bytes": i.output_size,
               "tool": _s(i.tool), "options": json.loads(_s(i.options_json) or "{}"),
               "files": {_s(i.files[k].name): i.files[k].size for k in range(i.nfiles)}}
        if i.parent_name:
            res["parent"] = {"name": _s(i.parent_name), "depth": i.parent_depth}
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


def load_delta_chain(paths, base_dir, verify=True, raw=False, threads=0):
    """Rebuild the model at the end of a chain given as its .wdelta files
    (any order; the links are matched by content hash).  Every file must be
    a link of the one chain; the top is the link no other was made against."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("load_delta_chain: no .wdelta files given")
    infos = [_read_info(p) for p in paths]
    if any(i["version"] == 1 for i in infos):
        if len(paths) == 1:
            return load_delta_from_paths(paths[0], base_dir, verify, raw, threads=threads)
        raise WdeltaError("a deltatensors v1 file cannot be a chain link: %s" %
                          ", ".join(p for p, i in zip(paths, infos) if i["version"] == 1))
    bases = {i["parent_hash"] for i in infos}
    tops = [p for p, i in zip(paths, infos) if i["result_hash"] not in bases]
    if len(tops) != 1:
        raise WdeltaError("the files are not one chain: %s" % (
            "every one is some other's parent (a loop)" if not tops else
            "%d of them are no other's parent: %s" % (len(tops), ", ".join(tops))))
    with _Rebuilt(tops[0], base_dir, paths, verify) as r:
        used = lib.wd_chain_length(r.chain)
        if used != len(paths):
            raise WdeltaError("%s needs %d links, but %d files were given: some are not on its chain" %
                              (tops[0], used, len(paths)))
        return r.state_dict(raw=raw, threads=threads)


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


def save_delta(path, finetuned, base, strategy="sparse", **kwargs):
    """save_delta_from_paths for state dicts held in memory ({name: numpy
    array or torch tensor}): both are written as safetensors to a temporary
    directory next to `path`, which is removed afterwards."""
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
