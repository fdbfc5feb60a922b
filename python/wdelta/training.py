"""deltatensors' Trainer callback, over libwdelta: DeltaTensorsCallback.

    from wdelta.training import DeltaTensorsCallback   # was deltatensors.training
    cb = DeltaTensorsCallback(base_dir="base/", strategy="int4", outlier_fraction=0.05)
    trainer = Trainer(..., args=TrainingArguments(output_dir="outputs", ...), callbacks=[cb])

On every checkpoint save it stores OUTPUT_DIR/checkpoint-N/model.wdelta, a
delta of the checkpoint's model against base_dir (not chained), with
deltatensors' arguments and behaviour: strategy "int4" (default), "sparse"
or "quantized" (and ours: "lossless", "bitdelta", "axis1", "lowrank",
"auto"), strategy keyword arguments passed on to save_delta_from_paths,
problems printed as "[wdelta] Warning: ..." on stdout and training going
on, and with delete_full_checkpoint=True the checkpoint's *.safetensors
removed afterwards.

What differs: the file is our format (version 2: block checksums, the
model's own dtype, config and tokenizer files carried along; deltatensors
0.2 cannot read it, this package and the wdeltafs mount can); optimizer
and trainer state never go into the delta; the file appears whole (written
under a temporary name, then renamed); before delete_full_checkpoint
removes anything the delta is decoded and checked against its checksums
and result hash, and on any doubt the checkpoint stays whole.  Only the
main process writes (state.is_world_process_zero).  Mount the output
directory with `wdeltafs OUTPUT_DIR MNT -o base=BASE_DIR`: each checkpoint
is MNT/checkpoint-N/model/.  WdeltaCallback (wdelta.callback) is our
better default: a verified chain, lossless unless asked.
"""
import glob
import os
import shutil

from ._api import save_delta_from_paths, verify
from .callback import _CallbackBase, stage_model_files

DELTA_NAME = "model.wdelta"


def _warn(msg):
    print("[wdelta] Warning: %s" % msg, flush=True)


class DeltaTensorsCallback(_CallbackBase):
    """transformers TrainerCallback writing checkpoint-N/model.wdelta
    against base_dir on each save (deltatensors 0.2's callback)."""

    def __init__(self, base_dir, strategy="int4", delete_full_checkpoint=False, **strategy_kwargs):
        self.base_dir = str(base_dir)
        self.strategy = strategy
        self.delete_full_checkpoint = delete_full_checkpoint
        self.strategy_kwargs = strategy_kwargs

    def on_save(self, args, state, control, **kwargs):
        """Called by the Trainer right after it saved a checkpoint."""
        if not getattr(state, "is_world_process_zero", True):
            return None
        ckpt = os.path.join(args.output_dir, "checkpoint-%s" % state.global_step)
        if not os.path.isdir(ckpt):
            _warn("expected checkpoint dir not found: %s" % ckpt)
            return None
        weights = glob.glob(os.path.join(ckpt, "*.safetensors"))
        if not weights:
            _warn("no .safetensors in %s; skipping delta save." % ckpt)
            return None
        out = os.path.join(ckpt, DELTA_NAME)
        tmp = os.path.join(ckpt, ".%s.partial" % DELTA_NAME)  # not *.wdelta: a mount skips it
        stage = None
        try:
            stage = stage_model_files(ckpt, ckpt)
            kwargs = dict(self.strategy_kwargs)
            kwargs.setdefault("allow_new_tensors", True)
            save_delta_from_paths(tmp, stage, self.base_dir, strategy=self.strategy, use_gpu=False, **kwargs)
            if self.delete_full_checkpoint:
                verify(tmp, self.base_dir)
            os.replace(tmp, out)
        except Exception as exc:  # as deltatensors: a failed delta never stops training
            _warn("delta save failed at step %s: %s" % (state.global_step, exc))
            if os.path.exists(tmp):
                os.unlink(tmp)
            return None
        finally:
            if stage:
                shutil.rmtree(stage, ignore_errors=True)
        if self.delete_full_checkpoint:
            for f in weights:
                os.remove(f)
            print("[wdelta] Removed full safetensors from %s (delta: %s)" % (ckpt, DELTA_NAME), flush=True)
        return None
