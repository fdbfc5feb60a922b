#!/usr/bin/env python3
"""tile.py SRC DST TIMES: the tensors of the safetensors model directory SRC
(any shards) written TIMES times into one file DST/model.safetensors, tile i's
copy of tensor NAME named "tile<i>.NAME"; config.json copied when present.
Applied to a pair's base and fine-tune alike it makes a larger pair with the
pair's own statistics (a real fine-tune's deltas, a real merged LoRA's
spectrum): the create bench's 1 GB pairs (tests/bench/create_speed.sh).
Standard library only."""
import json
import os
import shutil
import struct
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, dst, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
    files = sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))
    if not files or times < 1:
        sys.exit("tile.py: no safetensors file in %s, or TIMES < 1" % src)
    tensors = []  # (name, dtype, shape, path, offset, length)
    for name in files:
        path = os.path.join(src, name)
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
        for k in sorted(hdr):
            if k == "__metadata__":
                continue
            v = hdr[k]
            s, e = v["data_offsets"]
            tensors.append((k, v["dtype"], v["shape"], path, 8 + n + s, e - s))
    hdr, at = {}, 0
    for i in range(times):
        for k, dt, shape, _, _, ln in tensors:
            hdr["tile%d.%s" % (i, k)] = {"dtype": dt, "shape": shape, "data_offsets": [at, at + ln]}
            at += ln
    hb = json.dumps(hdr, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    os.makedirs(dst, exist_ok=True)
    data = {}
    for k, _, _, path, off, ln in tensors:
        with open(path, "rb") as f:
            f.seek(off)
            data[k] = f.read(ln)
    with open(os.path.join(dst, "model.safetensors"), "wb") as out:
        out.write(struct.pack("<Q", len(hb)))
        out.write(hb)
        for i in range(times):
            for k, _, _, _, _, _ in tensors:
                out.write(data[k])
    if os.path.exists(os.path.join(src, "config.json")):
        shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))


main()
