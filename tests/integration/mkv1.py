#!/usr/bin/env python3
"""Write a deltatensors version 1 file (sparse strategy) for a base/fine-tune
pair, following ../shared/formats/deltatensors-v1.md, so that tests can
make v1 files without the reference package.  Every floating tensor of 2+
dimensions keeps its KEEP fraction of largest |ft - base| (float32) as
(indices, values); the rest of the model is the base's.
usage: mkv1.py BASEDIR FTDIR OUT [KEEP [SCALE]]  (SCALE multiplies the kept
deltas: the same layout with other values)
Also: mkv1.py --offset DIR TENSOR  prints "FILE OFFSET LENGTH" of a tensor."""
import glob, hashlib, json, os, struct, sys
import numpy as np


def shards(d):
    files = sorted(glob.glob(os.path.join(d, "*.safetensors")))
    out = []
    for p in files:
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            h = json.loads(f.read(n))
        h.pop("__metadata__", None)
        out.append((p, 8 + n, h))
    return out


def tensors(d):
    """name -> (path, absolute offset, length, dtype, shape)"""
    t = {}
    for p, start, h in shards(d):
        for k, v in h.items():
            a, b = v["data_offsets"]
            t[k] = (p, start + a, b - a, v["dtype"], v["shape"])
    return t


def read(t):
    p, off, n, dt, shape = t
    with open(p, "rb") as f:
        f.seek(off)
        raw = f.read(n)
    return raw


def as_f32(raw, dt):
    if dt == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    if dt == "F16":
        return np.frombuffer(raw, "<f2").astype(np.float32)
    if dt == "F32":
        return np.frombuffer(raw, "<f4").copy()
    return None


def parent_hash(d):
    # shards ordered by their smallest tensor name, names sorted inside a shard
    h = hashlib.sha256()
    sh = sorted(shards(d), key=lambda s: min(s[2]) if s[2] else "")
    for p, start, hd in sh:
        with open(p, "rb") as f:
            for k in sorted(hd):
                a, b = hd[k]["data_offsets"]
                f.seek(start + a)
                h.update(k.encode())
                h.update(f.read(b - a))
    return h.hexdigest()


def s32(b):
    return struct.pack("<I", len(b)) + b


def record(name, field, dtype, arr):
    data = arr.tobytes()
    out = s32(name.encode()) + s32(field.encode()) + s32(dtype.encode())
    out += struct.pack("<I", arr.ndim) + b"".join(struct.pack("<Q", x) for x in arr.shape)
    return out + struct.pack("<Q", len(data)) + data


def main():
    if sys.argv[1] == "--offset":
        p, off, n, _, _ = tensors(sys.argv[2])[sys.argv[3]]
        print(p, off, n)
        return
    base, ft, out = sys.argv[1], sys.argv[2], sys.argv[3]
    keep = float(sys.argv[4]) if len(sys.argv) > 4 else 0.1
    scale = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    bt, fts = tensors(base), tensors(ft)
    meta, recs = {}, []
    for name in sorted(fts):
        f = fts[name]
        b = bt.get(name)
        if not b or len(f[4]) < 2 or f[3] not in ("BF16", "F16", "F32") or b[3] != f[3] or b[4] != f[4]:
            continue
        d = as_f32(read(f), f[3]) - as_f32(read(b), b[3])
        m = max(1, int(d.size * keep))
        idx = np.sort(np.argsort(-np.abs(d), kind="stable")[:m]).astype("<i8")
        vals = (d[idx] * np.float32(scale)).astype("<f4")
        meta[name] = {"strategy": "sparse", "shape": f[4], "dtype": "float32", "sparsity": 1 - keep,
                      "indices": {"_ref": "indices"}, "values": {"_ref": "values"}}
        recs.append(record(name, "indices", "int64", idx))
        recs.append(record(name, "values", "float32", vals))
    hdr = json.dumps({"parent_hash": parent_hash(base), "strategy": "sparse", "tensors": meta}).encode()
    body = b"wdelta\0" + struct.pack("<II", 1, len(hdr)) + hdr + b"".join(recs)
    with open(out, "wb") as f:
        f.write(body + hashlib.sha256(body).digest())


main()
