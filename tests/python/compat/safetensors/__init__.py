"""Test harness: a stand-in for safetensors.safe_open (see ../README.md).

Reads the safetensors layout (8-byte little-endian header length, JSON
header, data) and hands out tensors as numpy arrays or torch tensors."""
import json
import struct

import numpy as np

_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.int16,
       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
       "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
       "BOOL": np.bool_, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}


def _header(f):
    n = struct.unpack("<Q", f.read(8))[0]
    return json.loads(f.read(n)), 8 + n


def _torch(arr, dtype_name):
    import torch
    t = torch.from_numpy(arr.copy())
    if dtype_name == "BF16":
        t = t.view(torch.bfloat16)
    elif dtype_name == "F8_E4M3":
        t = t.view(torch.float8_e4m3fn)
    elif dtype_name == "F8_E5M2":
        t = t.view(torch.float8_e5m2)
    return t


class safe_open:
    def __init__(self, filename, framework="pt", device="cpu"):
        if framework not in ("pt", "torch", "np", "numpy"):
            raise ValueError("safe_open stand-in: framework %r not supported" % framework)
        if str(device) != "cpu":
            raise ValueError("safe_open stand-in: only device='cpu'")
        self.framework = framework
        self.f = open(filename, "rb")
        hdr, self.start = _header(self.f)
        self.meta = hdr.pop("__metadata__", None)
        self.hdr = hdr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def keys(self):
        return sorted(self.hdr)

    def metadata(self):
        return self.meta

    def get_tensor(self, name):
        t = self.hdr[name]
        a, b = t["data_offsets"]
        self.f.seek(self.start + a)
        arr = np.frombuffer(self.f.read(b - a), dtype=_NP[t["dtype"]]).reshape(t["shape"])
        if self.framework in ("np", "numpy"):
            return arr.copy()
        return _torch(arr, t["dtype"])
