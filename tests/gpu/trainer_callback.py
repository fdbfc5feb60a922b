"""Issue 9's GPU check: a real transformers Trainer run with WdeltaCallback.

    trainer_callback.py WORKDIR WDELTAFS [STEPS]

Makes a tiny Qwen2 model (random init, saved as the base), trains it for
STEPS steps (default 300) on a synthetic byte-level corpus with a checkpoint
every STEPS/3 steps and WdeltaCallback(base, WORKDIR/deltas) writing a
chained, verified delta per checkpoint; then mounts WORKDIR/deltas with the
WDELTAFS binary and, for every checkpoint, compares the logits of the model
loaded from the mount with those of the model loaded from the checkpoint
directory the Trainer wrote (equal, max abs diff 0.0).  Prints one line per
checkpoint and exits 1 on any difference.  Needs torch, transformers,
numpy, and the package's library (WDELTA_LIB or build/libwdelta.so).
"""
import os
import subprocess
import sys
import time

import numpy as np
import torch
from transformers import (Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import wdelta  # noqa: E402
from wdelta import WdeltaCallback  # noqa: E402


class ByteCorpus(torch.utils.data.Dataset):
    """Deterministic byte sequences with structure a small model can learn."""

    def __init__(self, n, length, seed=0):
        rng = np.random.default_rng(seed)
        words = [bytes(rng.integers(97, 123, size=rng.integers(2, 8)).tolist()) for _ in range(64)]
        self.items = []
        for _ in range(n):
            text = b" ".join(words[i] for i in rng.integers(0, len(words), size=length))[:length]
            ids = torch.tensor(list(text.ljust(length, b" ")), dtype=torch.long)
            self.items.append(ids)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {"input_ids": self.items[i], "labels": self.items[i]}


def logits(model_dir, ids, device):
    m = Qwen2ForCausalLM.from_pretrained(model_dir).to(device).eval()  # saved in float32
    with torch.no_grad():
        return m(ids.to(device)).logits.float().cpu()


def main():
    work, wdeltafs = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(work, exist_ok=True)
    base = os.path.join(work, "base")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=256, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False)
    Qwen2ForCausalLM(cfg).save_pretrained(base, safe_serialization=True)
    model = Qwen2ForCausalLM.from_pretrained(base)
    out, deltas = os.path.join(work, "run"), os.path.join(work, "deltas")
    args = TrainingArguments(output_dir=out, max_steps=steps, save_steps=max(1, steps // 3),
                             per_device_train_batch_size=16, learning_rate=1e-3, logging_steps=50,
                             report_to="none", seed=0)  # checkpoints are safetensors by default
    cb = WdeltaCallback(base, deltas, strategy="lossless", keep_full=True, strict=True)
    t0 = time.time()
    Trainer(model=model, args=args, train_dataset=ByteCorpus(512, 128), callbacks=[cb]).train()
    print("trained %d steps on %s in %.1f s; deltas: %s" % (steps, device, time.time() - t0,
                                                          ", ".join(os.path.basename(p) for p in cb.written)))
    if not cb.written:
        print("FAIL: the callback wrote no delta")
        return 1
    for p in cb.written:
        i = wdelta.inspect(p)
        print("  %s: %.2f MB, parent %s" % (os.path.basename(p), i["size_bytes"] / 1e6,
                                            i.get("parent", {}).get("name", "(the base)")))

    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    daemon = subprocess.Popen([wdeltafs, deltas, mnt, "-f", "-o", "base=" + base],
                              stderr=open(os.path.join(work, "wdeltafs.log"), "w"))
    bad = 0
    try:
        for _ in range(100):
            if os.path.ismount(mnt):
                break
            time.sleep(0.1)
        ids = ByteCorpus(4, 128, seed=1)
        ids = torch.stack([ids[k]["input_ids"] for k in range(4)])
        for p in cb.written:
            name = os.path.basename(p)[: -len(".wdelta")]
            a = logits(os.path.join(mnt, name), ids, device)
            b = logits(os.path.join(out, name), ids, device)
            diff = (a - b).abs().max().item()
            ok = torch.equal(a, b)
            bad += not ok
            print("%s %s: logits from the mount vs the checkpoint, max abs diff %g" %
                  ("ok  " if ok else "FAIL", name, diff))
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)
        daemon.wait(timeout=30)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
