#!/usr/bin/env python3
"""reshard.py SRC DST SHARDS [SEED]: write the tensors of the safetensors model
directory SRC again into DST as SHARDS files (an index when more than one),
tensors dealt to shards and ordered inside each by a shuffle of SEED (0: name
order), and the other files copied.  The same tensors (name, dtype, shape,
bytes) in another sharding and order: what a model re-saved with another
max_shard_size looks like.  Standard library only."""
import json
import os
import random
import shutil
import struct
import sys


def read_model(src):
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))
    tensors = {}
    for name in files:
        with open(os.path.join(src, name), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
            data = f.read()
        for k, v in hdr.items():
            if k == "__metadata__":
                continue
            a, b = v["data_offsets"]
            tensors[k] = (v["dtype"], v["shape"], data[a:b])
    return files, tensors


def write_file(path, items):
    hdr, off = {}, 0
    for k, (dt, shape, data) in items:
        hdr[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, (_, _, data) in items:
            f.write(data)


def main():
    src, dst, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    old_files, tensors = read_model(src)
    names = sorted(tensors)
    if seed:
        random.Random(seed).shuffle(names)
    os.makedirs(dst)
    for n in os.listdir(src):
        p = os.path.join(src, n)
        if os.path.isfile(p) and n not in old_files and n != "model.safetensors.index.json":
            shutil.copy(p, os.path.join(dst, n))
    if k == 1:
        write_file(os.path.join(dst, "model.safetensors"), [(n, tensors[n]) for n in names])
        return
    groups = [names[i::k] for i in range(k)]
    wmap = {}
    for i, g in enumerate(groups):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, k)
        write_file(os.path.join(dst, fn), [(n, tensors[n]) for n in g])
        for n in g:
            wmap[n] = fn
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": dict(sorted(wmap.items()))}, f, indent=2)


if __name__ == "__main__":
    main()
