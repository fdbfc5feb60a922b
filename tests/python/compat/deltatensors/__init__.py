"""Test harness: the name `deltatensors` bound to wdelta (see ../README.md)."""
import sys

import wdelta
import wdelta.lineage
import wdelta.training
from wdelta import *  # noqa: F401,F403
from wdelta import __all__, __version__  # noqa: F401

# `from deltatensors.training import DeltaTensorsCallback` and
# `from deltatensors.lineage import verify_base` resolve to ours
sys.modules[__name__ + ".training"] = wdelta.training
sys.modules[__name__ + ".lineage"] = wdelta.lineage
training = wdelta.training
lineage = wdelta.lineage
