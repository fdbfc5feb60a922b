"""Test harness: safetensors.numpy.save_file / load_file stand-ins."""
from wdelta import write_safetensors

from . import safe_open


def save_file(tensor_dict, filename, metadata=None):
    write_safetensors(str(filename), tensor_dict, metadata)


def load_file(filename):
    with safe_open(str(filename), framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
