"""wdelta: deltatensors' Python API over libwdelta (the C core of wdeltafs).

Switch from deltatensors by changing the import:

    import wdelta as dt
    dt.save_delta_from_paths("ft.wdelta", "ft/", "base/", strategy="lossless")
    sd = dt.load_delta_from_paths("ft.wdelta", "base/")

The functions keep deltatensors' names, arguments and return values, read
its version 1 files, and add our strategies (lossless, bitdelta, axis1,
lowrank, auto), chains (parent=, load_delta_chain) and apply/verify.  The
work runs in C (libwdelta.so, loaded with ctypes) with the GIL released.
WdeltaCallback (a transformers TrainerCallback) is imported on first use.
"""
from ._lib import WdeltaError, LIBRARY_PATH
from ._api import (STRATEGIES, apply, inspect, load_delta, load_delta_chain, load_delta_from_paths,
                   model_hash, model_identity, save_delta, save_delta_from_paths, verify,
                   write_safetensors)

__version__ = "0.1.0"
__all__ = ["WdeltaError", "WdeltaCallback", "STRATEGIES", "apply", "inspect", "load_delta",
           "load_delta_chain", "load_delta_from_paths", "model_hash", "model_identity", "save_delta",
           "save_delta_from_paths", "verify", "write_safetensors", "LIBRARY_PATH"]


def __getattr__(name):
    # transformers is heavy and optional: import it only when the callback is wanted
    if name == "WdeltaCallback":
        from .callback import WdeltaCallback
        return WdeltaCallback
    raise AttributeError("module 'wdelta' has no attribute %r" % name)
