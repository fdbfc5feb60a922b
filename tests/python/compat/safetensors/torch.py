"""Test harness: safetensors.torch.save_file / load_file stand-ins."""
from wdelta import write_safetensors

from . import safe_open


def save_file(tensors, filename, metadata=None):
    write_safetensors(str(filename), tensors, metadata)


def load_file(filename, device="cpu"):
    with safe_open(str(filename), framework="pt", device=device) as f:
        return {k: f.get_tensor(k) for k in f.keys()}
