#!/usr/bin/env python3
"""Rewrite a safetensors model in another dtype and/or with rows added to or
removed from some tensors (the fine-tunes of tests/integration/test_xdtype.sh).

  xdtype_model.py SRC_DIR OUT_DIR [--dtype BF16|F16|F32] [--rows N]
                  [--tensors NAME,NAME...] [--seed S]

--dtype converts every floating tensor (BF16, F16, F32): widening exactly,
narrowing with round to nearest even (bf16 by bit arithmetic, f16 through
numpy).  --rows N adds N rows (N > 0: random rows with the tensor's own
standard deviation) to or removes -N rows (N < 0) from dim 0 of each named
tensor (default: the 2-D tensors whose name ends in embed_tokens.weight or
lm_head.weight).  The shards keep their names and tensor order; the index's
weight_map is copied and its total_size updated; other files are copied.
Needs numpy (run with /usr/bin/python3)."""
import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np



def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    meta = hdr.pop("__metadata__", None)
    items = sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return meta, [(k, v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in items]


def to_f32(raw, dt):
    if dt == "F32":
        return np.frombuffer(raw, "<f4").copy()
    if dt == "F16":
        return np.frombuffer(raw, "<f2").astype("<f4")
    u = np.frombuffer(raw, "<u2").astype("<u4") << 16
    return u.view("<f4")


def from_f32(x, dt):
    x = np.ascontiguousarray(x, dtype="<f4")
    if dt == "F32":
        return x.tobytes()
    if dt == "F16":
        with np.errstate(over="ignore"):
            return x.astype("<f2").tobytes()
    u = x.view("<u4").astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16) | 0x40).astype("<u2")  # a NaN stays a (quiet) NaN
    return r.tobytes()


def write_st(path, meta, tensors):
    hdr, off = {}, 0
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for t in tensors:
            f.write(t[3])
    return off


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["BF16", "F16", "F32"])
    ap.add_argument("--rows", type=int, default=0)
    ap.add_argument("--tensors", default="")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    names = set(filter(None, a.tensors.split(",")))
    os.makedirs(a.out, exist_ok=True)
    total = 0
    for fn in sorted(os.listdir(a.src)):
        sp, op = os.path.join(a.src, fn), os.path.join(a.out, fn)
        if not fn.endswith(".safetensors"):
            if fn.endswith(".index.json"):
                continue
            shutil.copyfile(sp, op)
            continue
        meta, ts = read_st(sp)
        out = []
        for name, dt, shape, raw in ts:
            floating = dt in ("BF16", "F16", "F32")
            resize = a.rows and len(shape) >= 1 and (
                name in names or (not names and len(shape) == 2 and floating and
                                  (name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"))))
            if floating and (resize or a.dtype):
                x = to_f32(raw, dt).reshape(shape)
                if resize and a.rows > 0:
                    extra = rng.standard_normal((a.rows,) + tuple(shape[1:])).astype("<f4") * np.float32(x.std())
                    x = np.concatenate([x, extra])
                elif resize:
                    x = x[:shape[0] + a.rows]
                dt2 = a.dtype or dt
                raw = from_f32(x.reshape(-1), dt2)
                shape, dt = list(x.shape), dt2
            elif resize:  # integer tensors: rows of zeros, or cut
                row = len(raw) // shape[0] if shape[0] else 0
                raw = raw + bytes(row * a.rows) if a.rows > 0 else raw[:row * (shape[0] + a.rows)]
                shape = [shape[0] + a.rows] + list(shape[1:])
            out.append((name, dt, shape, raw))
        total += write_st(op, meta, out)
    idx = [f for f in os.listdir(a.src) if f.endswith(".index.json")]
    for fn in idx:
        j = json.load(open(os.path.join(a.src, fn)))
        j.setdefault("metadata", {})["total_size"] = total
        with open(os.path.join(a.out, fn), "w") as f:
            json.dump(j, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
