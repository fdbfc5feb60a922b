"""Load a fine-tune through a wdeltafs mount with real frameworks and compare
with the original files: every tensor via safetensors.safe_open, and the
logits of transformers' AutoModelForCausalLM on a GPU.
    python3 frameworks.py MOUNTED_MODEL_DIR ORIGINAL_MODEL_DIR
Exits non-zero on any difference."""
import os
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

mnt, orig = sys.argv[1], sys.argv[2]
names = sorted(f for f in os.listdir(orig) if f.endswith(".safetensors"))
assert names == sorted(f for f in os.listdir(mnt) if f.endswith(".safetensors")), "shard lists differ"
ntensors = 0
for name in names:
    with safe_open(os.path.join(mnt, name), "pt") as a, safe_open(os.path.join(orig, name), "pt") as b:
        assert set(a.keys()) == set(b.keys()), name
        for k in a.keys():
            ta, tb = a.get_tensor(k), b.get_tensor(k)
            assert ta.dtype == tb.dtype and ta.shape == tb.shape and torch.equal(ta, tb), k
            ntensors += 1
print(f"safe_open: {ntensors} tensors in {len(names)} shards identical")

dev = "cuda" if torch.cuda.is_available() else "cpu"
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, 256, (4, 256), generator=g).to(dev)
logits = []
for path in (mnt, orig):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(dev).eval()
    with torch.no_grad():
        logits.append(model(ids).logits.float().cpu())
    del model
same = torch.equal(logits[0], logits[1])
diff = (logits[0] - logits[1]).abs().max().item()
print(f"from_pretrained on {dev} ({torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'}): "
      f"logits {tuple(logits[0].shape)} identical={same} max_abs_diff={diff}")
sys.exit(0 if same else 1)
