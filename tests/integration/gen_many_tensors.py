#!/usr/bin/env python3
"""Write a base/fine-tune pair of one safetensors file each holding N tiny
BF16 tensors (integrity tests: parse and create costs per tensor).
usage: gen_many_tensors.py OUTDIR N [ELEMS] [SEED]"""
import json, os, random, struct, sys

def main():
    out, n = sys.argv[1], int(sys.argv[2])
    elems = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    names = ["model.layers.%d.block.%d.weight" % (i // 64, i % 64) for i in range(n)]
    hdr, off = {}, 0
    for nm in names:
        hdr[nm] = {"dtype": "BF16", "shape": [elems], "data_offsets": [off, off + 2 * elems]}
        off += 2 * elems
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    base = bytearray(rng.getrandbits(8) for _ in range(off))
    for i in range(0, off, 2):  # plausible bf16 weights: exponent near 2^-4
        base[i + 1] = 0x3d + (base[i + 1] & 1) | (base[i + 1] & 0x80)
    ft = bytearray(base)
    for i in range(0, off, 2):  # small change of the low mantissa bits
        ft[i] = (ft[i] + rng.randrange(-3, 4)) & 0xff
    for sub, data in (("base", base), ("ft", ft)):
        d = os.path.join(out, sub)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + data)
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write('{"model_type": "many"}\n')

main()
