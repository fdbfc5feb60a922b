"""Writes one side of a generated bf16 merged-LoRA pair (one model.safetensors).

lora_pair.py OUT RANK SEED BASE_SEED FULL_RANK TENSORS_JSON
  TENSORS_JSON: [[name, [rows, cols]] or [name, [n]], ...]; the base's
  values come from BASE_SEED, so every side made with the same BASE_SEED
  and tensors shares one base.
  RANK 0: the base itself.  RANK > 0: each matrix plus a rank-RANK delta,
  except matrices whose name contains FULL_RANK (a non-empty substring),
  which get a full-rank delta.  RANK < 0: every matrix a full-rank delta.
  Deltas are scaled to 0.1 x the matrix's RMS; SEED draws them."""
import json, os, struct, sys
import numpy as np


def bf16(x):
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    out, rank, seed, base_seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    full_rank = sys.argv[5]
    T = [(n, tuple(s)) for n, s in json.loads(sys.argv[6])]
    rng = np.random.default_rng(base_seed)
    base = {n: bf16(rng.standard_normal(s, dtype=np.float32) * (0.02 if len(s) == 2 else 1.0)) for n, s in T}
    rng = np.random.default_rng(seed)
    h, body = {}, b""
    for n, s in T:
        w = base[n]
        if rank != 0 and len(s) == 2:
            wf = (w.astype(np.uint32) << 16).view(np.float32)
            if rank < 0 or (full_rank and full_rank in n):
                d = rng.standard_normal(s, dtype=np.float32)
            else:
                d = rng.standard_normal((s[0], rank), dtype=np.float32) @ rng.standard_normal((rank, s[1]), dtype=np.float32)
            d *= 0.1 * np.sqrt((wf.astype(np.float64) ** 2).mean() / (d.astype(np.float64) ** 2).mean())
            w = bf16(wf + d)
        b = w.tobytes()
        h[n] = {"dtype": "BF16", "shape": list(s), "data_offsets": [len(body), len(body) + len(b)]}
        body += b
    hj = json.dumps(h).encode()
    hj += b" " * (-len(hj) % 8)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + body)


main()
