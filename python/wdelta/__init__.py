"""wdelta: deltatensors' Python API over libwdelta (the C core of wdeltafs).

Switch from deltatensors by changing the import:

    import wdelta as dt
    dt.save_delta_from_paths("ft.wdelta", "ft/", "base/", strategy="lossless")
    sd = dt.load_delta_from_paths("ft.wdelta", "base/")

Every public name of deltatensors 0.2 is here with its arguments, defaults,
return values and exception types (save_delta, save_delta_from_paths,
load_delta, load_delta_from_paths, inspect, inspect_chain,
load_delta_chain, save_delta_chain_from_paths, hash_state_dict;
wdelta.lineage.verify_base; wdelta.training.DeltaTensorsCallback).  It
reads deltatensors' version 1 files and adds our strategies (lossless,
bitdelta, axis1, lowrank, auto), chains, apply/verify and WdeltaCallback.
The work runs in C (libwdelta.so, loaded with ctypes) with the GIL released.
The Trainer callbacks are imported on first use.
"""
from ._lib import BaseMismatchError, WdeltaError, WdeltaFileNotFoundError, LIBRARY_PATH
from ._api import (STRATEGIES, apply, inspect, inspect_chain, load_delta, load_delta_chain, load_delta_from_paths,
                   model_hash, model_identity, save_delta, save_delta_chain_from_paths, save_delta_from_paths, verify,
                   write_safetensors)
from .lineage import hash_state_dict, verify_base

__version__ = "0.2.0"
__all__ = [
    # deltatensors 0.2's __all__
    "save_delta", "save_delta_from_paths", "load_delta", "load_delta_from_paths", "inspect", "inspect_chain",
    "load_delta_chain", "save_delta_chain_from_paths", "hash_state_dict",
    # ours
    "verify_base", "DeltaTensorsCallback", "WdeltaCallback", "WdeltaError", "BaseMismatchError",
    "WdeltaFileNotFoundError", "STRATEGIES", "apply", "model_hash", "model_identity", "verify", "write_safetensors", "LIBRARY_PATH"]


def __getattr__(name):
    # transformers is heavy and optional: import it only when a callback is wanted
    if name == "WdeltaCallback":
        from .callback import WdeltaCallback
        return WdeltaCallback
    if name == "DeltaTensorsCallback":
        from .training import DeltaTensorsCallback
        return DeltaTensorsCallback
    raise AttributeError("module 'wdelta' has no attribute %r" % name)
