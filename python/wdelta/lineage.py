"""Identity of a base model: the SHA-256 that a .wdelta's parent_hash holds.

hash_state_dict(sd) is deltatensors' version 1 parent_hash of a state dict
(core/FORMAT.md and the deltatensors v1 notes): SHA-256 over, for each
tensor in sorted name order, its UTF-8 name followed by its values' raw
bytes, with nothing in between.  It equals `wdelta hash --v1 DIR` of a
directory holding the same tensors in one safetensors file.  Beyond
deltatensors it takes torch bfloat16/float8 tensors (hashed as their raw
bits, as the file stores them) and tensors that require grad.
"""
import hashlib

import numpy as np

from ._errors import BaseMismatchError


def _raw(value):
    """The bytes a tensor contributes: its C-order values as stored."""
    if type(value).__module__.startswith("torch"):
        import torch  # only when the caller already uses torch
        t = value.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        elif t.dtype in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)):
            t = t.view(torch.uint8)
        value = t.numpy()
    arr = np.asarray(value)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(np.uint8) if arr.ndim else np.frombuffer(arr.tobytes(), np.uint8)


def hash_state_dict(state_dict):
    """SHA-256 hex of {name: array or tensor}, names in sorted order
    (deltatensors' hash_state_dict; the v1 parent_hash of that base)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode("utf-8"))
        h.update(_raw(state_dict[name]))
    return h.hexdigest()


def verify_base(state_dict, expected_hash):
    """Raise ValueError ('Base model hash mismatch') unless state_dict
    hashes to expected_hash; returns None like deltatensors."""
    actual = hash_state_dict(state_dict)
    if actual != expected_hash:
        raise BaseMismatchError("Base model hash mismatch: expected %s, got %s; the delta was made against "
                                "another base model" % (expected_hash, actual))
