"""The exceptions of the package (no library needed to import them).

WdeltaError is a ValueError, as deltatensors raises ValueError for a wrong
base, a damaged file or bad arguments: code written for deltatensors that
catches ValueError keeps working.  A file that does not exist raises
WdeltaFileNotFoundError, both a WdeltaError and a FileNotFoundError (what
deltatensors' open() raises)."""


class WdeltaError(ValueError):
    """An error reported by libwdelta; the message names the file, tensor and offset."""


class BaseMismatchError(WdeltaError):
    """The base given is not the model the delta was made against ('Base model hash mismatch')."""


class WdeltaFileNotFoundError(WdeltaError, FileNotFoundError):
    """A .wdelta file or model directory that does not exist."""
