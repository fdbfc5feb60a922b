"""ctypes declarations of libwdelta (core/wdelta.h) and the library loader.

Every call goes through ctypes.CDLL, which releases the GIL for the length of
the C call: decoding, hashing and writing run in C while other Python threads
go on.  The structs below mirror wdelta.h; load() compares their sizes with
the library's own (wd_struct_size) so that a header change not carried over
here is an error at import, not memory corruption.
"""
import ctypes
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_int, c_size_t,
                    c_ssize_t, c_uint, c_uint32, c_uint64, c_ubyte, c_void_p, CFUNCTYPE)

MAX_DIMS = 32
ERR_MISSING = 2  # wd_err_kind WD_ERR_MISSING: a needed input is missing or the wrong one
HASH_V1, ID_V2 = 1, 2  # model hash kinds (core/FORMAT.md "Model identity")


from ._errors import BaseMismatchError, WdeltaError, WdeltaFileNotFoundError  # noqa: F401


class Err(Structure):
    _fields_ = [("msg", c_char * 1024), ("kind", c_int)]

    def text(self):
        return self.msg.decode("utf-8", "replace")


class Tensor(Structure):
    _fields_ = [("name", c_char_p), ("dtype_name", c_char * 32), ("dtype", c_int), ("ndim", c_int),
                ("shape", POINTER(c_uint64)), ("nelem", c_uint64), ("offset", c_uint64),
                ("length", c_uint64)]


class StFile(Structure):
    _fields_ = [("path", c_char_p), ("name", c_char_p), ("size", c_uint64),
                ("header", POINTER(c_ubyte)), ("header_size", c_uint64),
                ("ntensors", c_size_t), ("tensors", POINTER(Tensor))]


class TRef(Structure):
    _fields_ = [("file", c_uint32), ("tensor", c_uint32)]


class Model(Structure):
    _fields_ = [("dir", c_char_p), ("nfiles", c_size_t), ("files", POINTER(StFile)),
                ("ntensors", c_size_t), ("by_name", POINTER(TRef)),
                ("nextras", c_size_t), ("extras", POINTER(c_char_p))]


class LossyParams(Structure):
    _fields_ = [("cols", c_uint32), ("group", c_uint32), ("outliers", c_double),
                ("density", c_double), ("level", c_int), ("step", c_double), ("rank", c_uint32)]


PROGRESS_FN = CFUNCTYPE(None, c_void_p, c_uint64, c_uint64, c_size_t, c_size_t)


class CreateOpts(Structure):
    _fields_ = [("base_dir", c_char_p), ("ft_dir", c_char_p), ("out_path", c_char_p),
                ("strategy", c_char_p), ("lossy", LossyParams), ("no_lowrank", c_int),
                ("max_error", c_double), ("threads", c_int), ("level", c_int),
                ("block_size", c_uint32), ("progress", PROGRESS_FN), ("progress_ctx", c_void_p),
                ("parent", c_void_p), ("exclude", POINTER(c_char_p)), ("nexclude", c_size_t),
                ("stop", c_void_p)]


class CreateStats(Structure):
    _fields_ = [("input_bytes", c_uint64), ("output_bytes", c_uint64),
                ("ntensors", c_size_t), ("nblocks", c_size_t)]


class Extent(Structure):
    _fields_ = [("file_offset", c_uint64), ("length", c_uint64), ("first_block", c_uint32),
                ("nblocks", c_uint32), ("block_size", c_uint32), ("codec", c_int), ("dtype", c_int),
                ("tensor", c_char_p), ("base_tensor", c_char_p), ("params", c_char_p)]


class OutFile(Structure):
    _fields_ = [("name", c_char_p), ("size", c_uint64), ("is_safetensors", c_int),
                ("nextents", c_size_t), ("extents", POINTER(Extent))]


class Block(Structure):
    _fields_ = [("offset", c_uint64), ("stored_len", c_uint32), ("out_len", c_uint32),
                ("stored_hash", c_uint64), ("out_hash", c_uint64)]


class DeltaInfo(Structure):
    _fields_ = [("version", c_uint32), ("strategy", c_char_p), ("tool", c_char_p),
                ("options_json", c_char_p), ("base_hash", c_ubyte * 32), ("result_hash", c_ubyte * 32),
                ("file_size", c_uint64), ("output_size", c_uint64), ("nfiles", c_size_t),
                ("files", POINTER(OutFile)), ("nblocks", c_size_t), ("blocks", POINTER(Block)),
                ("parent_name", c_char_p), ("parent_depth", c_uint),
                ("base_hash_kind", c_uint), ("result_hash_kind", c_uint), ("digest", c_ubyte * 32),
                ("has_parent_digest", c_int), ("parent_digest", c_ubyte * 32),
                ("has_base_hash_v1", c_int), ("has_result_hash_v1", c_int),
                ("base_hash_v1", c_ubyte * 32), ("result_hash_v1", c_ubyte * 32)]


class V1Tensor(Structure):
    _fields_ = [("name", c_char_p), ("strategy", c_char_p), ("dtype", c_char_p), ("ndim", c_int),
                ("shape", c_uint64 * MAX_DIMS), ("nelem", c_uint64), ("stored_bytes", c_uint64)]


_MIRRORS = {"wd_err": Err, "wd_tensor": Tensor, "wd_stfile": StFile, "wd_model": Model,
            "wd_lossy_params": LossyParams, "wd_create_opts": CreateOpts,
            "wd_create_stats": CreateStats, "wd_extent": Extent, "wd_outfile": OutFile,
            "wd_block": Block, "wd_delta_info": DeltaInfo, "wd_v1_tensor": V1Tensor}

PROGRESS2_FN = CFUNCTYPE(None, c_void_p, c_uint64, c_uint64)

# name: (restype, argtypes)
_SIGNATURES = {
    "wd_struct_size": (c_size_t, [c_char_p]),
    "wd_model_open": (c_int, [c_char_p, POINTER(Model), POINTER(Err)]),
    "wd_model_free": (None, [POINTER(Model)]),
    "wd_model_hash": (c_int, [POINTER(Model), POINTER(c_ubyte * 32), POINTER(Err)]),
    "wd_model_identity": (c_int, [POINTER(Model), POINTER(c_ubyte * 32), POINTER(Err)]),
    "wd_model_hash_kind": (c_int, [POINTER(Model), c_uint, POINTER(c_ubyte * 32), POINTER(Err)]),
    "wd_hash_kind_name": (c_char_p, [c_uint]),
    "wd_create": (c_int, [POINTER(CreateOpts), POINTER(CreateStats), POINTER(Err)]),
    "wd_delta_open": (c_int, [c_char_p, POINTER(c_void_p), POINTER(Err)]),
    "wd_delta_close": (None, [c_void_p]),
    "wd_delta_get_info": (POINTER(DeltaInfo), [c_void_p]),
    "wd_delta_set_base": (c_int, [c_void_p, POINTER(Model), POINTER(Err)]),
    "wd_delta_check_base": (c_int, [c_void_p, POINTER(Model), POINTER(Err)]),
    "wd_delta_v1_use_base_dtype": (None, [c_void_p, c_int]),
    "wd_delta_check_digest": (c_int, [c_void_p, POINTER(Err)]),
    "wd_delta_find_file": (c_int, [c_void_p, c_char_p]),
    "wd_delta_output_model": (c_int, [c_void_p, POINTER(Model), POINTER(Err)]),
    "wd_read": (c_ssize_t, [c_void_p, c_uint64, c_void_p, c_size_t, c_void_p, c_size_t, c_uint64,
                            POINTER(Err)]),
    "wd_apply": (c_int, [c_void_p, c_char_p, c_int, PROGRESS2_FN, c_void_p, POINTER(Err)]),
    "wd_verify": (c_int, [c_void_p, c_int, POINTER(c_ubyte * 32), PROGRESS2_FN, c_void_p, POINTER(Err)]),
    "wd_cache_new": (c_void_p, [c_uint64]),
    "wd_cache_free": (None, [c_void_p]),
    "wd_chain_open": (c_int, [c_char_p, POINTER(c_char_p), c_size_t, c_char_p, c_void_p,
                              POINTER(c_void_p), POINTER(Err)]),
    "wd_chain_close": (None, [c_void_p]),
    "wd_chain_length": (c_size_t, [c_void_p]),
    "wd_chain_link": (c_void_p, [c_void_p, c_size_t]),
    "wd_chain_top": (c_void_p, [c_void_p]),
    "wd_chain_base": (POINTER(Model), [c_void_p]),
    "wd_chain_base_hash": (c_int, [c_void_p, POINTER(c_ubyte * 32), POINTER(Err)]),
    "wd_v1_open": (c_int, [c_char_p, POINTER(c_void_p), POINTER(Err)]),
    "wd_v1_close": (None, [c_void_p]),
    "wd_v1_count": (c_size_t, [c_void_p]),
    "wd_v1_get": (POINTER(V1Tensor), [c_void_p, c_size_t]),
    "wd_v1_strategy": (c_char_p, [c_void_p]),
    "wd_v1_options": (c_char_p, [c_void_p]),
    "wd_v1_parent_hash": (POINTER(c_ubyte * 32), [c_void_p]),
    "wd_v1_file_size": (c_uint64, [c_void_p]),
    "wd_codec_name": (c_char_p, [c_int]),
}


def _candidates():
    env = os.environ.get("WDELTA_LIB")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    try:  # written by `make install`: where the library went
        from . import _libpath
        out.append(_libpath.LIBRARY)
    except ImportError:
        pass
    # a source tree: python/wdelta/ next to build/
    out.append(os.path.normpath(os.path.join(here, "..", "..", "build", "libwdelta.so")))
    out.append("libwdelta.so")  # the dynamic loader's search path
    return out


def _load():
    tried = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
            continue
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        for cname, mirror in _MIRRORS.items():
            want = lib.wd_struct_size(cname.encode())
            if want != ctypes.sizeof(mirror):
                raise ImportError("wdelta: %s has %s of %d bytes, this package declares %d: the package "
                                  "and the library come from different versions" %
                                  (path, cname, want, ctypes.sizeof(mirror)))
        return lib, path
    raise ImportError("wdelta: cannot load libwdelta.so; build it with `make` (or set WDELTA_LIB). Tried: " +
                      "; ".join(tried))


lib, LIBRARY_PATH = _load()


def check(rc, err):
    """Raise WdeltaError with the library's message when a call returned -1."""
    if rc < 0:
        raise WdeltaError(err.text() or "libwdelta call failed")
    return rc
