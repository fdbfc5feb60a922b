"""A chained .wdelta per training checkpoint: WdeltaCallback for transformers'
Trainer, and CheckpointDeltas, the same work without transformers.

Every checkpoint's weights are stored as OUT_DIR/checkpoint-N.wdelta, made
against the model the previous checkpoint's delta rebuilds (a chain; the
first against the base), and verified by decoding it.  With
keep_full=False the checkpoint's weight shards are removed once its delta
is verified (its optimizer state, config and tokenizer stay).  Mount OUT_DIR
with `wdeltafs OUT_DIR MNT -o base=BASE_DIR` to see every checkpoint as a
model directory.
"""
import logging
import os
import re
import shutil
import tempfile

from ._api import inspect, save_delta_from_paths, verify
from ._lib import WdeltaError

log = logging.getLogger("wdelta")

try:  # only the callback needs transformers, and only its base class
    from transformers import TrainerCallback as _CallbackBase
except ImportError:  # the duck-typed on_save below still works (tests, other loops)
    _CallbackBase = object

_STEP = re.compile(r"^checkpoint-(\d+)(?:\.wdelta)?$")
# files of a Trainer checkpoint that are training state, not the model
_TRAINING_STATE = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|training_args\.bin|"
                             r"trainer_state\.json|.*\.pt|.*\.pth|.*\.bin)$")


def _weight_files(names):
    return [n for n in names if n.endswith(".safetensors") or n == "model.safetensors.index.json"]


def stage_model_files(checkpoint_dir, where):
    """A new directory under `where` of links to the checkpoint's model
    files only (weights, config, tokenizer): no optimizer or trainer state
    and no .wdelta, which a delta must not carry.  The caller removes it."""
    names = sorted(os.listdir(checkpoint_dir))
    if not _weight_files(names):
        raise WdeltaError("%s has no .safetensors weights (is the Trainer's save_safetensors off?)" %
                          checkpoint_dir)
    stage = tempfile.mkdtemp(prefix=".wdelta-staging-", dir=where)
    for n in names:
        src = os.path.join(checkpoint_dir, n)
        if os.path.isfile(src) and not _TRAINING_STATE.match(n) and not n.endswith(".wdelta") \
                and not n.startswith("."):
            os.symlink(os.path.abspath(src), os.path.join(stage, n))
    return stage


class CheckpointDeltas:
    """Turns checkpoint directories into a chain of deltas in out_dir."""

    def __init__(self, base_dir, out_dir, strategy="lossless", keep_full=True, strict=False, max_chain=16,
                 **create_kwargs):
        if max_chain is not None and int(max_chain) < 1:
            raise ValueError("max_chain must be at least 1 (1: every delta against the base)")
        self.max_chain = None if max_chain is None else int(max_chain)
        self.base_dir = os.fspath(base_dir)
        self.out_dir = os.fspath(out_dir)
        self.strategy = strategy
        self.keep_full = keep_full
        self.strict = strict
        self.create_kwargs = create_kwargs
        if not os.path.isdir(self.base_dir):
            raise WdeltaError("base %s: not a directory" % self.base_dir)
        os.makedirs(self.out_dir, exist_ok=True)

    def _previous(self, step):
        """The newest checkpoint delta in out_dir before `step` (a resumed
        run continues the chain it finds), or None."""
        best = None
        for name in os.listdir(self.out_dir):
            m = _STEP.match(name)
            if m and name.endswith(".wdelta") and int(m.group(1)) < step:
                if best is None or int(m.group(1)) > best[0]:
                    best = (int(m.group(1)), name)
        return os.path.join(self.out_dir, best[1]) if best else None

    def _parent(self, step):
        """The previous checkpoint's delta, unless its chain already has
        max_chain links: then the new delta starts a chain at the base
        (reading a link decodes every link below it)."""
        prev = self._previous(step)
        if prev is None or self.max_chain is None:
            return prev
        links = inspect(prev).get("parent", {}).get("depth", 0) + 1
        return prev if links < self.max_chain else None

    def _stage(self, checkpoint_dir):
        return stage_model_files(checkpoint_dir, self.out_dir)

    def save(self, checkpoint_dir, step=None):
        """Write and verify the delta of one checkpoint; returns its path.
        Errors raise WdeltaError (the checkpoint itself is left untouched)."""
        checkpoint_dir = os.fspath(checkpoint_dir)
        if step is None:
            m = _STEP.match(os.path.basename(os.path.normpath(checkpoint_dir)))
            if not m:
                raise WdeltaError("%s: not a checkpoint-N directory; pass step=" % checkpoint_dir)
            step = int(m.group(1))
        out = os.path.join(self.out_dir, "checkpoint-%d.wdelta" % step)
        parent = self._parent(step)
        stage = self._stage(checkpoint_dir)
        try:
            kwargs = dict(self.create_kwargs)
            kwargs.setdefault("allow_new_tensors", True)  # a resized vocabulary is stored, not refused
            if parent:
                kwargs.update(parent=parent, chain=self.out_dir)
            save_delta_from_paths(out, stage, self.base_dir, strategy=self.strategy, **kwargs)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        try:
            verify(out, self.base_dir, chain=self.out_dir)
        except WdeltaError:
            os.replace(out, out + ".bad")  # never leave an unverified link in the chain
            raise
        log.info("wdelta: %s -> %s (%s%s)", checkpoint_dir, out, self.strategy,
                 ", chained to " + os.path.basename(parent) if parent else "")
        if not self.keep_full:
            for n in _weight_files(os.listdir(checkpoint_dir)):
                os.unlink(os.path.join(checkpoint_dir, n))
        return out


class WdeltaCallback(_CallbackBase):
    """transformers TrainerCallback: on every checkpoint save, write
    out_dir/checkpoint-N.wdelta chained to the previous checkpoint's delta,
    verify it, and with keep_full=False remove the checkpoint's weight
    shards.  A failure is logged and training goes on (the checkpoint stays
    whole) unless strict=True.  After max_chain links (default 16) the next
    checkpoint starts a new chain against the base, so that reading any
    checkpoint decodes at most max_chain links (None: never).  Extra keyword arguments go to
    save_delta_from_paths (level=, threads=, max_error= ...)."""

    def __init__(self, base_dir, out_dir, strategy="lossless", keep_full=True, strict=False, max_chain=16,
                 **create_kwargs):
        self.deltas = CheckpointDeltas(base_dir, out_dir, strategy, keep_full, strict, max_chain, **create_kwargs)
        self.written = []

    def on_save(self, args, state, control, **kwargs):
        if not getattr(state, "is_world_process_zero", True):
            return control
        step = int(state.global_step)
        ckpt = os.path.join(args.output_dir, "checkpoint-%d" % step)
        try:
            self.written.append(self.deltas.save(ckpt, step))
        except (WdeltaError, OSError) as e:
            if self.deltas.strict:
                raise
            log.warning("wdelta: no delta for %s: %s", ckpt, e)
        return control
