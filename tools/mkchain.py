#!/usr/bin/python3
"""mkchain.py - intermediate fine-tunes between a base and a fine-tune, for
chain tests and benchmarks (needs numpy: run with /usr/bin/python3).

    mkchain.py BASE FT OUTDIR N [--seed S]

Writes OUTDIR/m1 .. OUTDIR/m{N-1}: model k is base + (ft - base) * k/N plus
a small deterministic perturbation (float tensors, computed in float32 and
rounded to the tensor's dtype, nearest even), laid out exactly like FT (its
safetensors headers are copied verbatim, so only tensor bytes differ).
Tensors that are not floats, or that the base lacks or shapes differently,
are FT's.  Non-weight files (config, tokenizer) are FT's.  OUTDIR/m{N} is
not written: the last step of the chain is FT itself.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

FLOATS = {"BF16", "F16", "F32"}


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    hdr.pop("__metadata__", None)
    return n, hdr


def to_f32(raw, dtype):
    if dtype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def from_f32(x, dtype):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "BF16":
        u = x.view(np.uint32).astype(np.uint64)
        nan = np.isnan(x)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
        return r.astype("<u2").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    return x.astype("<f4").tobytes()


def tensor_index(model_dir):
    """name -> (path, absolute offset, length, dtype, shape)"""
    out = {}
    for fn in sorted(os.listdir(model_dir)):
        if not fn.endswith(".safetensors"):
            continue
        p = os.path.join(model_dir, fn)
        n, hdr = read_header(p)
        for name, t in hdr.items():
            a, b = t["data_offsets"]
            out[name] = (p, 8 + n + a, b - a, t["dtype"], t["shape"])
    return out


def read_at(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def main():
    args = sys.argv[1:]
    seed = 1
    if "--seed" in args:
        i = args.index("--seed")
        seed = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 4:
        sys.exit(__doc__)
    base, ft, outdir, n = args[0], args[1], args[2], int(args[3])
    if n < 1:
        sys.exit("N must be at least 1")
    bidx = tensor_index(base)
    os.makedirs(outdir, exist_ok=True)
    for k in range(1, n):
        mdir = os.path.join(outdir, "m%d" % k)
        tmp = mdir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        rng = np.random.default_rng(seed * 1000 + k)
        for fn in sorted(os.listdir(ft)):
            src = os.path.join(ft, fn)
            dst = os.path.join(tmp, fn)
            if not fn.endswith(".safetensors"):
                if os.path.isfile(src):
                    shutil.copyfile(src, dst)
                continue
            hn, hdr = read_header(src)
            with open(src, "rb") as f:
                head = f.read(8 + hn)
            with open(dst, "wb") as out:
                out.write(head)
                for name, t in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                    a, b = t["data_offsets"]
                    raw = read_at(src, 8 + hn + a, b - a)
                    bt = bidx.get(name)
                    if (t["dtype"] in FLOATS and bt and bt[3] == t["dtype"] and bt[4] == t["shape"]
                            and b > a):
                        fb = to_f32(read_at(bt[0], bt[1], bt[2]), t["dtype"])
                        ff = to_f32(raw, t["dtype"])
                        x = fb + (ff - fb) * np.float32(k / n)
                        scale = np.float32(np.std(ff - fb) * 0.05 + 1e-8)
                        x = x + rng.standard_normal(x.shape[0], dtype=np.float32) * scale
                        raw = from_f32(x, t["dtype"])
                    out.write(raw)
        shutil.rmtree(mdir, ignore_errors=True)
        os.rename(tmp, mdir)
        print("wrote %s" % mdir)


if __name__ == "__main__":
    main()
