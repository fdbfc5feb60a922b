"""wdelta as a drop-in for deltatensors 0.2: every public name, argument,
default, return value and exception type, the examples of its pages, and
a training script written for its Trainer callback.

Run by tests/integration/test_python_compat.sh with Debian's /usr/bin/python3
and numpy (no torch needed; the torch cases skip without it).  Env: WDELTA_BIN
(wdelta, genmodel, libwdelta.so), WDELTA_LIB, WD_TMP (scratch; the callback
runs leave their output directories under WD_TMP/Training for the mount
checks of the shell script), SHARED (../shared: v1 vectors, the deltatensors
pages; those cases skip without it).

deltatensors facts used here (names, defaults, messages matched by its
callers) come from its 0.2 source and pages; no code of it is used.
"""
import ast
import contextlib
import glob
import hashlib
import inspect as pyinspect
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import types
import unittest

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "python"))
import wdelta  # noqa: E402
import wdelta.lineage  # noqa: E402
import wdelta.training  # noqa: E402
from wdelta.training import DeltaTensorsCallback  # noqa: E402

BIN = os.environ.get("WDELTA_BIN", os.path.join(REPO, "build"))
TMP = os.environ.get("WD_TMP") or os.path.join(REPO, "tests", "tmp", "python-compat")
SHARED = os.environ.get("SHARED", os.path.join(REPO, "..", "shared"))
VECTORS = os.path.join(SHARED, "vectors", "v1")
SEEDS = os.path.join(SHARED, "seeds")
COMPAT = os.path.join(REPO, "tests", "python", "compat")

try:
    import torch
except ImportError:
    torch = None

# deltatensors 0.2's public API: (name, [(parameter, default or REQUIRED)], takes **kwargs)
REQUIRED = object()
DT_API = [
    ("save_delta", [("path", REQUIRED), ("finetuned", REQUIRED), ("base", REQUIRED), ("strategy", "sparse"),
                    ("use_gpu", True)], True),
    ("save_delta_from_paths", [("out_path", REQUIRED), ("finetuned_dir", REQUIRED), ("base_dir", REQUIRED),
                               ("strategy", "sparse"), ("prefetch", 2), ("use_gpu", True)], True),
    ("load_delta", [("path", REQUIRED), ("base", REQUIRED), ("verify", True)], False),
    ("load_delta_from_paths", [("path", REQUIRED), ("base_dir", REQUIRED), ("verify", True)], False),
    ("inspect", [("path", REQUIRED)], False),
    ("inspect_chain", [("delta_paths", REQUIRED)], False),
    ("load_delta_chain", [("delta_paths", REQUIRED), ("base", REQUIRED), ("verify", True)], False),
    ("save_delta_chain_from_paths", [("out_path", REQUIRED), ("finetuned_dir", REQUIRED),
                                     ("parent_delta_path", REQUIRED), ("base_dir", REQUIRED),
                                     ("strategy", "sparse"), ("use_gpu", True)], True),
    ("hash_state_dict", [("state_dict", REQUIRED)], False),
]
DT_ALL = ["save_delta", "save_delta_from_paths", "load_delta", "load_delta_from_paths", "inspect",
          "inspect_chain", "load_delta_chain", "save_delta_chain_from_paths", "hash_state_dict"]


def run(*cmd, ok=(0,)):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode not in ok:
        raise AssertionError("%s failed (%d): %s" % (" ".join(map(str, cmd)), p.returncode, p.stderr))
    return p


def read_model(model_dir):
    """{name: (dtype, shape, raw bytes)} of the safetensors files of a directory (own reader)."""
    out = {}
    for p in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
            hdr.pop("__metadata__", None)
            for name, t in hdr.items():
                a, b = t["data_offsets"]
                f.seek(8 + n + a)
                out[name] = (t["dtype"], tuple(t["shape"]), f.read(b - a))
    return out


_RAW = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64, "I64": np.int64,
        "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def raw_state_dict(model_dir):
    """The tensors of a directory as numpy arrays of their stored values (bf16 as uint16)."""
    return {k: np.frombuffer(b, _RAW[d]).reshape(s) for k, (d, s, b) in read_model(model_dir).items()}


def as_f32(dtype, shape, data):
    if dtype == "BF16":
        return (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(data, _RAW[dtype]).astype(np.float32).reshape(shape)


def bf16(a):
    """float32 -> bf16 bits, round to nearest even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def models(root, dtype="f32", seed=3, versions=2, scale=0.01, shards=1):
    """A base and `versions` fine-tunes of it with the same tensors (each a
    small random step from the one before), as safetensors directories
    root/base, root/v1, ...  Returns (dirs, [float32 state dicts])."""
    rng = np.random.default_rng(seed)
    shapes = {"model.embed_tokens.weight": (40, 32), "model.layers.0.self_attn.q_proj.weight": (32, 32),
              "model.layers.0.self_attn.q_proj.bias": (32,), "model.layers.0.mlp.up_proj.weight": (64, 32),
              "model.norm.weight": (32,), "lm_head.weight": (40, 32)}
    sd = {k: rng.standard_normal(s).astype(np.float32) * 0.1 for k, s in shapes.items()}
    dirs, sds = [], []
    for v in range(versions + 1):
        if v:
            sd = {k: a + rng.standard_normal(a.shape).astype(np.float32) * scale for k, a in sd.items()}
        if dtype == "bf16":
            stored = {k: bf16(a) for k, a in sd.items()}
            sd = {k: bf16_f32(b) for k, b in stored.items()}  # the values as stored
        else:
            stored = sd
        d = os.path.join(root, "base" if v == 0 else "v%d" % v)
        os.makedirs(d, exist_ok=True)
        names = sorted(stored)
        for s in range(shards):
            part = {k: stored[k] for k in names[s::shards]}
            f = "model.safetensors" if shards == 1 else "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            if dtype == "bf16":
                write_bf16(os.path.join(d, f), part)
            else:
                wdelta.write_safetensors(os.path.join(d, f), part)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"model_type": "qwen2", "version": v}, f)
        dirs.append(d)
        sds.append(dict(sd))
    return dirs, sds


def write_bf16(path, bits):
    """A safetensors file of BF16 tensors given as uint16 bits (own writer)."""
    hdr, off = {}, 0
    for k in sorted(bits):
        hdr[k] = {"dtype": "BF16", "shape": list(bits[k].shape), "data_offsets": [off, off + bits[k].nbytes]}
        off += bits[k].nbytes
    text = json.dumps(hdr).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for k in sorted(bits):
            f.write(bits[k].tobytes())


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def quiet(fn, *a, **kw):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*a, **kw)


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = os.path.join(TMP, cls.__name__)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        os.makedirs(cls.tmp)

    def path(self, *names):
        return os.path.join(self.tmp, *names)

    def assertClose(self, got, want, atol, msg=""):
        for k in want:
            np.testing.assert_allclose(np.asarray(got[k], np.float32), want[k], atol=atol, rtol=0, err_msg=k + msg)


# ---------------------------------------------------------------- names and signatures
class Names(unittest.TestCase):
    def test_all_of_deltatensors_is_exported(self):
        for name in DT_ALL:
            self.assertIn(name, wdelta.__all__)
            self.assertTrue(callable(getattr(wdelta, name)), name)
        self.assertTrue(callable(wdelta.lineage.verify_base))
        self.assertIs(wdelta.lineage.hash_state_dict, wdelta.hash_state_dict)
        self.assertIs(wdelta.DeltaTensorsCallback, DeltaTensorsCallback)
        self.assertTrue(callable(wdelta.WdeltaCallback))
        self.assertEqual(wdelta.__version__.split(".")[:2], ["0", "2"])

    def test_same_parameters_and_defaults(self):
        for name, params, var_kw in DT_API + [("verify_base", [("state_dict", REQUIRED),
                                                               ("expected_hash", REQUIRED)], False)]:
            fn = getattr(wdelta, name)
            sig = pyinspect.signature(fn)
            ours = [p for p in sig.parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
            with self.subTest(name=name):
                self.assertEqual([p.name for p in ours[:len(params)]], [p for p, _ in params])
                for p, (pname, default) in zip(ours, params):
                    if default is REQUIRED:
                        # load_delta_chain's base defaults to None only to accept the old base_dir=
                        self.assertTrue(p.default is p.empty or (name, pname) == ("load_delta_chain", "base"),
                                        pname)
                    else:
                        self.assertEqual(p.default, default, pname)
                # ours adds only keyword arguments with defaults after deltatensors' own
                for p in ours[len(params):]:
                    self.assertIsNot(p.default, p.empty, "%s: extra argument %s has no default" % (name, p.name))
                self.assertEqual(any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()), var_kw or
                                 name in ("save_delta_chain_from_paths",))

    def test_callback_signature(self):
        sig = pyinspect.signature(DeltaTensorsCallback)
        ps = list(sig.parameters.values())
        self.assertEqual([(p.name, p.default) for p in ps[:3]],
                         [("base_dir", ps[0].empty), ("strategy", "int4"), ("delete_full_checkpoint", False)])
        self.assertEqual(ps[3].kind, ps[3].VAR_KEYWORD)
        self.assertEqual(list(pyinspect.signature(DeltaTensorsCallback.on_save).parameters)[:4],
                         ["self", "args", "state", "control"])

    def test_exception_types(self):
        self.assertTrue(issubclass(wdelta.WdeltaError, ValueError))
        self.assertTrue(issubclass(wdelta.BaseMismatchError, ValueError))
        self.assertTrue(issubclass(wdelta.WdeltaFileNotFoundError, FileNotFoundError))
        self.assertTrue(issubclass(wdelta.WdeltaFileNotFoundError, wdelta.WdeltaError))

    def test_compat_harness(self):
        """tests/python/compat: `import deltatensors` is wdelta, safetensors' stand-in reads our files."""
        sys.path.insert(0, COMPAT)
        try:
            import deltatensors as dt
            from deltatensors.training import DeltaTensorsCallback as cb
            from deltatensors.lineage import verify_base
            from safetensors import safe_open
            from safetensors.numpy import load_file, save_file
        finally:
            sys.path.remove(COMPAT)
        self.assertIs(dt.load_delta_chain, wdelta.load_delta_chain)
        self.assertIs(cb, DeltaTensorsCallback)
        self.assertIs(verify_base, wdelta.verify_base)
        d = os.path.join(TMP, "harness")
        os.makedirs(d, exist_ok=True)
        sd = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
        save_file(sd, os.path.join(d, "m.safetensors"))
        with safe_open(os.path.join(d, "m.safetensors"), framework="np") as f:
            self.assertEqual(f.keys(), ["a", "b"])
            self.assertTrue(np.array_equal(f.get_tensor("a"), sd["a"]))
        back = load_file(os.path.join(d, "m.safetensors"))
        self.assertTrue(all(np.array_equal(back[k], sd[k]) for k in sd))


# ---------------------------------------------------------------- hash_state_dict, verify_base
def reference_hash(sd):
    """The v1 parent_hash as its definition states it (FORMAT notes)."""
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(np.ascontiguousarray(sd[k]).tobytes())
    return h.hexdigest()


class Hash(Base):
    def mixed(self):
        rng = np.random.default_rng(11)
        return {"w": rng.standard_normal((7, 5)).astype(np.float32), "h": rng.standard_normal(9).astype(np.float16),
                "d": rng.standard_normal((2, 2)), "ids": np.arange(5, dtype=np.int64), "flag": np.array(True),
                "ü.name": np.float32(2.5) * np.ones((1, 3), np.float32), "scalar": np.array(3.0, np.float32)}

    def test_definition_and_order(self):
        sd = self.mixed()
        h = wdelta.hash_state_dict(sd)
        self.assertRegex(h, "^[0-9a-f]{64}$")
        self.assertEqual(h, reference_hash(sd))
        self.assertEqual(h, wdelta.hash_state_dict(dict(reversed(list(sd.items())))))
        other = dict(sd, w=sd["w"] + np.float32(1))
        self.assertNotEqual(h, wdelta.hash_state_dict(other))
        # a non-contiguous view hashes as its C-order values
        t = {"t": np.arange(12, dtype=np.float32).reshape(3, 4).T}
        self.assertEqual(wdelta.hash_state_dict(t), wdelta.hash_state_dict({"t": t["t"].copy()}))
        self.assertEqual(wdelta.hash_state_dict({}), hashlib.sha256().hexdigest())

    def test_equals_the_tool_on_one_file(self):
        sd = self.mixed()
        d = self.path("one")
        os.makedirs(d)
        wdelta.write_safetensors(os.path.join(d, "model.safetensors"), sd)
        p = run(os.path.join(BIN, "wdelta"), "hash", "--v1", d, ok=(0, 2))
        if p.returncode == 2:  # a wdelta whose plain hash is still the v1 one
            p = run(os.path.join(BIN, "wdelta"), "hash", d)
        self.assertEqual(p.stdout.split()[0], wdelta.hash_state_dict(sd))
        self.assertEqual(wdelta.model_hash(d), wdelta.hash_state_dict(sd))

    @unittest.skipUnless(os.path.isdir(VECTORS), "needs ../shared/vectors/v1")
    def test_equals_the_reference_parent_hash(self):
        for pair in ("synth-f32", "synth-bf16"):
            want = set()
            for p in glob.glob(os.path.join(VECTORS, pair, "*.json")):
                with open(p) as f:
                    want.add(json.load(f)["parent_hash"])
            self.assertEqual(len(want), 1, pair)
            sd = raw_state_dict(os.path.join(VECTORS, pair, "base"))
            self.assertEqual(wdelta.hash_state_dict(sd), want.pop(), pair)

    @unittest.skipUnless(torch is not None, "needs torch")
    def test_torch_tensors(self):
        sd = self.mixed()
        del sd["ü.name"]
        t = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
        self.assertEqual(wdelta.hash_state_dict(t), wdelta.hash_state_dict(sd))
        b = torch.randn(4, 4, requires_grad=True).to(torch.bfloat16)
        bits = b.detach().view(torch.int16).numpy()
        self.assertEqual(wdelta.hash_state_dict({"b": b}), wdelta.hash_state_dict({"b": bits}))

    def test_verify_base(self):
        sd = self.mixed()
        self.assertIsNone(wdelta.verify_base(sd, wdelta.hash_state_dict(sd)))
        with self.assertRaisesRegex(ValueError, "hash mismatch"):
            wdelta.verify_base(dict(sd, w=sd["w"] * 2), wdelta.hash_state_dict(sd))


# ---------------------------------------------------------------- save/load/inspect
class SaveLoad(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dirs, cls.sds = models(os.path.join(cls.tmp, "m"), "f32", versions=2)
        cls.bdirs, cls.bsds = models(os.path.join(cls.tmp, "mb"), "bf16", versions=1, shards=2)

    def test_paths_round_trip_and_return_value(self):
        base, v1, _ = self.dirs
        p = self.path("ll.wdelta")
        h = wdelta.save_delta_from_paths(p, v1, base, strategy="lossless", prefetch=8, use_gpu=True)
        self.assertEqual(h, wdelta.hash_state_dict(raw_state_dict(base)))
        self.assertEqual(h, wdelta.inspect(p)["parent_hash"])
        got = wdelta.load_delta_from_paths(p, base, verify=True)
        for k, (dt, shape, data) in read_model(v1).items():
            self.assertEqual(got[k].dtype, np.float32)  # deltatensors returns float32
            self.assertEqual(got[k].tobytes(), data, k)
        # bf16 in two shards: float32 values by default, the stored bits with raw=True
        bb, b1 = self.bdirs
        q = self.path("llb.wdelta")
        hb = wdelta.save_delta_from_paths(q, b1, bb, strategy="lossless", use_gpu=False)
        self.assertEqual(hb, wdelta.model_hash(bb))
        got = wdelta.load_delta_from_paths(q, bb)
        raw = wdelta.load_delta_from_paths(q, bb, raw=True)
        for k, (dt, shape, data) in read_model(b1).items():
            self.assertTrue(np.array_equal(got[k], as_f32(dt, shape, data)), k)
            self.assertEqual(raw[k].tobytes(), data, k)

    def test_state_dicts(self):
        base, v1 = self.sds[0], self.sds[1]
        p = self.path("mem.wdelta")
        h = wdelta.save_delta(p, v1, base, strategy="lossless", use_gpu=False)
        self.assertEqual(h, wdelta.hash_state_dict(base))
        self.assertEqual(h, wdelta.inspect(p)["parent_hash"])
        got = wdelta.load_delta(p, base, verify=True)
        self.assertEqual(sorted(got), sorted(v1))
        for k in v1:
            self.assertTrue(np.array_equal(got[k], v1[k]), k)
        with self.assertRaisesRegex(ValueError, "hash mismatch"):
            wdelta.load_delta(p, self.sds[2])
        # a new directory for the output, as deltatensors makes it
        q = self.path("new", "sub", "mem.wdelta")
        wdelta.save_delta(q, v1, base, strategy="lossless")
        self.assertTrue(os.path.isfile(q))

    def test_default_strategy_sparse(self):
        base, v1, _ = self.dirs
        p = self.path("default.wdelta")
        wdelta.save_delta_from_paths(p, v1, base)
        i = wdelta.inspect(p)
        self.assertEqual(i["strategy"], "sparse")
        # sparsity 0.9: a tenth of each delta kept exactly, the rest as the base
        got = wdelta.load_delta_from_paths(p, base)
        ft, b = self.sds[1], self.sds[0]
        for k in ft:
            kept = np.mean(got[k] != b[k])
            if ft[k].ndim > 1:  # a tenth, rounded up per row block
                self.assertLessEqual(kept, 0.1 + ft[k].shape[0] / ft[k].size, k)
                self.assertGreater(kept, 0.05, k)

    def test_deltatensors_strategies_within_its_bounds(self):
        """int4 / sparse / quantized with deltatensors' arguments: each lossy
        tensor within its codec's bound (int4: int4_bound; sparse: no error
        above the largest delta dropped, as deltatensors; quantized: every
        sign kept)."""
        base, v1, _ = self.dirs
        b, ft = self.sds[0], self.sds[1]
        for strategy, kw in (("int4", {"outlier_fraction": 0.05}), ("int4", {}), ("sparse", {"sparsity": 0.5}),
                             ("quantized", {})):
            with self.subTest(strategy=strategy, **kw):
                p = self.path("%s-%s.wdelta" % (strategy, "-".join(map(str, kw.values()))))
                wdelta.save_delta_from_paths(p, v1, base, strategy=strategy, **kw)
                got = wdelta.load_delta_from_paths(p, base)
                for k in ft:
                    d = (ft[k] - b[k]).astype(np.float64)
                    err = np.abs(got[k] - ft[k])
                    if strategy == "int4":
                        self.assertLessEqual(err.max(), int4_bound(d), k)
                    elif strategy == "sparse":
                        bound = np.quantile(np.abs(d), kw["sparsity"]) + 1e-6
                        self.assertLessEqual(err.max(), bound, k)
                    else:  # 1 bit per value: the sign of every delta is kept
                        r = (got[k] - b[k]).ravel()
                        nz = np.abs(d.ravel()) > 1e-6
                        self.assertGreater(np.mean(np.sign(r[nz]) == np.sign(d.ravel()[nz])), 0.95, k)
                self.assertLess(os.path.getsize(p), sum(a.nbytes for a in ft.values()))

    def test_key_and_shape_mismatch(self):
        base, v1 = self.sds[0], self.sds[1]
        p = self.path("km.wdelta")
        with self.assertRaisesRegex(ValueError, "Key mismatch"):
            wdelta.save_delta(p, {k: v for k, v in v1.items() if k != "model.norm.weight"}, base)
        with self.assertRaisesRegex(ValueError, "Key mismatch"):
            wdelta.save_delta(p, dict(v1, extra=np.ones(3, np.float32)), base)
        with self.assertRaisesRegex(ValueError, "Shape mismatch"):
            wdelta.save_delta(p, dict(v1, **{"model.norm.weight": np.ones(33, np.float32)}), base)
        self.assertFalse(os.path.exists(p))
        # ours does more when asked: new and reshaped tensors stored whole
        ft = dict(v1, extra=np.ones(3, np.float32), **{"model.norm.weight": np.ones(33, np.float32)})
        wdelta.save_delta(p, ft, base, strategy="lossless", allow_new_tensors=True)
        got = wdelta.load_delta(p, base)
        self.assertEqual(sorted(got), sorted(ft))
        self.assertTrue(np.array_equal(got["model.norm.weight"], ft["model.norm.weight"]))

    def test_wrong_base_and_missing_files(self):
        base, v1, v2 = self.dirs
        p = self.path("wb.wdelta")
        wdelta.save_delta_from_paths(p, v1, base, strategy="int4")
        with self.assertRaisesRegex(ValueError, "hash mismatch") as cm:
            wdelta.load_delta_from_paths(p, v2)
        self.assertIn(p, str(cm.exception))
        for fn, args in ((wdelta.inspect, (self.path("nope.wdelta"),)),
                         (wdelta.load_delta_from_paths, (self.path("nope.wdelta"), base)),
                         (wdelta.load_delta_from_paths, (p, self.path("nobase"))),
                         (wdelta.save_delta_from_paths, (self.path("x.wdelta"), self.path("noft"), base)),
                         (wdelta.load_delta_chain, ([self.path("nope.wdelta")], base)),
                         (wdelta.inspect_chain, ([p, self.path("nope.wdelta")],))):
            with self.subTest(fn=fn.__name__, args=args):
                with self.assertRaises(FileNotFoundError) as cm:
                    fn(*args)
                self.assertRegex(str(cm.exception), "nope|nobase|noft")

    @unittest.skipUnless(os.path.isdir(VECTORS), "needs ../shared/vectors/v1")
    def test_v1_files_verify_false(self):
        """A deltatensors file over a wrong base: refused when verified, applied as is without."""
        d = os.path.join(VECTORS, "synth-f32")
        other = self.path("otherbase")
        os.makedirs(other, exist_ok=True)
        sd = raw_state_dict(os.path.join(d, "base"))
        wdelta.write_safetensors(os.path.join(other, "model.safetensors"), {k: v * 2 for k, v in sd.items()})
        with self.assertRaisesRegex(ValueError, "hash mismatch"):
            wdelta.load_delta_from_paths(os.path.join(d, "int4.wdelta"), other)
        got = wdelta.load_delta_from_paths(os.path.join(d, "int4.wdelta"), other, verify=False)
        self.assertEqual(sorted(got), sorted(sd))

    def test_inspect(self):
        base, v1, _ = self.dirs
        p = self.path("insp.wdelta")
        wdelta.save_delta_from_paths(p, v1, base, strategy="int4", outlier_fraction=0.01)
        i = wdelta.inspect(p)
        self.assertEqual(i["path"], p)
        self.assertEqual(i["size_mb"], round(os.path.getsize(p) / 1e6, 2))
        self.assertEqual(i["strategy"], "int4")
        self.assertEqual(i["n_tensors"], len(self.sds[1]))
        self.assertEqual(i["parent_hash"], wdelta.hash_state_dict(self.sds[0]))
        for k, a in self.sds[1].items():
            self.assertEqual(i["tensors"][k]["shape"], list(a.shape))
            self.assertEqual(i["tensors"][k]["dtype"], "float32")
        self.assertEqual(wdelta.inspect(pathlib_path(p))["n_tensors"], i["n_tensors"])

    @unittest.skipUnless(os.path.isdir(VECTORS), "needs ../shared/vectors/v1")
    def test_inspect_v1_file(self):
        p = os.path.join(VECTORS, "synth-bf16", "sparse-sparsity0.5.wdelta")
        with open(p[:-len(".wdelta")] + ".expected.json") as f:
            want = json.load(f)
        i = wdelta.inspect(p)
        self.assertEqual((i["strategy"], i["parent_hash"], i["n_tensors"]),
                         (want["strategy"], want["parent_hash"], len(want["tensors"])))
        self.assertEqual(i["size_mb"], round(os.path.getsize(p) / 1e6, 2))
        for k, t in want["tensors"].items():
            self.assertEqual((i["tensors"][k]["shape"], i["tensors"][k]["dtype"]), (t["shape"], t["dtype"]))


def int4_bound(d, result=None):
    """The largest error our int4 codec allows on delta d (core/FORMAT.md,
    int4): half a step, the step being max(0.6 x the RMS delta of the row
    block, max|delta| of the group / 7.5), as an FP16 scale; blocks are whole
    rows, so a block's RMS is at most the largest row RMS.  For a result
    stored in bf16, plus that rounding (half a bf16 step of |result|).
    (deltatensors' int4 rounds to one step of range/15 instead: finer on
    Gaussian deltas, see the report; its own suite's tolerances hold.)"""
    rows = d.reshape(d.shape[0], -1) if d.ndim > 1 else d.reshape(1, -1)
    step = max(0.6 * np.sqrt((rows ** 2).mean(axis=1)).max(), np.abs(d).max() / 7.5)
    b = step / 2 * (1 + 2.0 ** -10) + 1e-7
    if result is not None:
        b += np.abs(result).max() * 2.0 ** -8
    return b


def pathlib_path(p):
    import pathlib
    return pathlib.Path(p)


# ---------------------------------------------------------------- chains
class Chains(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # one file per model: hash_state_dict (sorted names) is then the
        # models' content hash, as deltatensors' chain parent_hash is
        cls.dirs, cls.sds = models(os.path.join(cls.tmp, "m"), "bf16", versions=3)

    def chain(self, name, strategy="lossless", **kw):
        base = self.dirs[0]
        paths = [self.path("%s-%d.wdelta" % (name, k)) for k in (1, 2, 3)]
        hashes = [wdelta.save_delta_from_paths(paths[0], self.dirs[1], base, strategy=strategy, **kw)]
        for k in (1, 2):
            hashes.append(wdelta.save_delta_chain_from_paths(paths[k], self.dirs[k + 1], paths[k - 1], base,
                                                             strategy=strategy, use_gpu=True, **kw))
        return paths, hashes

    def test_lossless_chain(self):
        base = self.dirs[0]
        paths, hashes = self.chain("ll")
        # each link's return value: the hash of the model its parent rebuilds
        for k in (1, 2):
            parent = wdelta.load_delta_chain(paths[:k], base=base, raw=True)
            self.assertEqual(hashes[k], wdelta.hash_state_dict(parent))
            self.assertEqual(hashes[k], wdelta.inspect(paths[k])["parent_hash"])
            self.assertEqual(hashes[k], wdelta.model_hash(self.dirs[k]))
        for k in (1, 2, 3):
            got = wdelta.load_delta_chain(paths[:k], base=base, raw=True)
            for n, (dt, shape, data) in read_model(self.dirs[k]).items():
                self.assertEqual(got[n].tobytes(), data, (k, n))
        # the older keyword base_dir=
        got = wdelta.load_delta_chain(paths, base_dir=base)
        for n in got:
            self.assertTrue(np.array_equal(got[n], self.sds[3][n]), n)
        with self.assertRaises(TypeError):
            wdelta.load_delta_chain(paths, base=base, base_dir=base)
        with self.assertRaises(TypeError):
            wdelta.load_delta_chain(paths)

    def test_base_as_state_dict(self):
        dirs, sds = models(self.path("f32"), "f32", versions=2)
        p1, p2 = self.path("sd1.wdelta"), self.path("sd2.wdelta")
        wdelta.save_delta_from_paths(p1, dirs[1], dirs[0], strategy="lossless")
        wdelta.save_delta_chain_from_paths(p2, dirs[2], p1, dirs[0], strategy="lossless")
        for k, want in ((1, sds[1]), (2, sds[2])):
            got = wdelta.load_delta_chain([p1, p2][:k], base=sds[0])
            for n in want:
                self.assertTrue(np.array_equal(got[n], want[n]), n)
        with self.assertRaisesRegex(ValueError, "hash mismatch"):
            wdelta.load_delta_chain([p1, p2], base=sds[1])
        if torch is not None:
            got = wdelta.load_delta_chain([p1, p2], base={k: torch.from_numpy(a) for k, a in sds[0].items()})
            self.assertTrue(all(np.array_equal(got[n], sds[2][n]) for n in sds[2]))

    def test_order_and_verify(self):
        base = self.dirs[0]
        paths, _ = self.chain("ord", strategy="sparse", sparsity=0.5)
        with self.assertRaisesRegex(ValueError, "empty"):
            wdelta.load_delta_chain([], base=base)
        for bad in ([paths[1], paths[0]], [paths[0], paths[2]], [paths[1]], paths[::-1]):
            with self.assertRaisesRegex(wdelta.BaseMismatchError, "hash mismatch"):
                wdelta.load_delta_chain(bad, base=base)
        with self.assertRaisesRegex(ValueError, "hash mismatch"):
            wdelta.load_delta_chain(paths, base=self.dirs[1])
        # verify=False: no check; ours are put in the order their hashes link them
        want = wdelta.load_delta_chain(paths, base=base)
        got = wdelta.load_delta_chain(paths[::-1], base=base, verify=False)
        for n in want:
            self.assertTrue(np.array_equal(got[n], want[n]), n)
        for n, a in self.sds[3].items():  # lossy: near the last model
            np.testing.assert_allclose(want[n], a, atol=0.1, rtol=0)

    def test_flat_deltas_as_a_chain(self):
        """Deltas each against the base, given one at a time (deltatensors' flat chain)."""
        base = self.dirs[0]
        p2 = self.path("flat2.wdelta")
        wdelta.save_delta_from_paths(p2, self.dirs[2], base, strategy="lossless")
        got = wdelta.load_delta_chain([p2], base=base, raw=True)
        for n, (dt, shape, data) in read_model(self.dirs[2]).items():
            self.assertEqual(got[n].tobytes(), data, n)
        # a plain delta made against the model a chain link rebuilds follows it
        paths, _ = self.chain("mix")
        p3 = self.path("plain3.wdelta")
        wdelta.save_delta_from_paths(p3, self.dirs[3], self.dirs[2], strategy="lossless")
        got = wdelta.load_delta_chain([paths[0], paths[1], p3], base=base, raw=True)
        for n, (dt, shape, data) in read_model(self.dirs[3]).items():
            self.assertEqual(got[n].tobytes(), data, n)

    def test_inspect_chain(self):
        paths, hashes = self.chain("ic")
        h = wdelta.inspect_chain(paths)
        self.assertEqual([e["step"] for e in h], [0, 1, 2])
        for e, p, parent in zip(h, paths, hashes):
            self.assertEqual(e["path"], p)
            self.assertEqual(e["parent_hash"], parent)
            for f in ("size_mb", "strategy", "n_tensors", "tensors"):
                self.assertIn(f, e)
        self.assertEqual(wdelta.inspect_chain([]), [])

    @unittest.skipUnless(os.path.isdir(VECTORS), "needs ../shared/vectors/v1")
    def test_v1_parent(self):
        """A deltatensors v1 file as the first link: the next link is made against its rebuild."""
        d = os.path.join(VECTORS, "synth-f32")
        v1 = os.path.join(d, "int4.wdelta")
        parent = wdelta.load_delta_from_paths(v1, os.path.join(d, "base"))
        # a next model: the v1 rebuild plus a small step, written as F32
        ft2 = self.path("v1next")
        os.makedirs(ft2, exist_ok=True)
        nxt = {k: (a + np.float32(0.01)).astype(np.float32) for k, a in parent.items()}
        wdelta.write_safetensors(os.path.join(ft2, "model.safetensors"), nxt)
        p = self.path("after-v1.wdelta")
        h = wdelta.save_delta_chain_from_paths(p, ft2, v1, os.path.join(d, "base"), strategy="lossless")
        self.assertEqual(h, wdelta.hash_state_dict(parent))
        self.assertEqual(h, wdelta.inspect(p)["parent_hash"])
        got = wdelta.load_delta_chain([v1, p], base=os.path.join(d, "base"))
        for k in nxt:
            self.assertTrue(np.array_equal(got[k], nxt[k]), k)
        self.assertEqual([n for n in os.listdir(self.tmp) if n.startswith(".wdelta")], [])


# ---------------------------------------------------------------- the Trainer callback
class Args:  # what the callback reads of TrainingArguments
    def __init__(self, output_dir):
        self.output_dir = output_dir


class MiniTrainer:
    """Calls callbacks as transformers' Trainer does: every hook the
    callback has, with (args, state, control, **kwargs); on_save after the
    checkpoint directory checkpoint-N is complete (weights, config,
    optimizer and scheduler state, RNG state, trainer_state.json)."""

    def __init__(self, output_dir, model, callbacks, save_steps, max_steps, dtype="bf16", seed=5, scale=0.002):
        self.args = Args(output_dir)
        self.model, self.callbacks = model, callbacks
        self.save_steps, self.max_steps, self.dtype = save_steps, max_steps, dtype
        self.rng = np.random.default_rng(seed)
        self.scale = scale
        self.state = types.SimpleNamespace(global_step=0, is_world_process_zero=True, log_history=[])
        self.control = types.SimpleNamespace(should_save=False, should_training_stop=False)

    def event(self, name, **kw):
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                r = fn(self.args, self.state, self.control, model=self.model, optimizer=None, lr_scheduler=None,
                       **kw)
                if r is not None:
                    self.control = r

    def save(self):
        ck = os.path.join(self.args.output_dir, "checkpoint-%d" % self.state.global_step)
        os.makedirs(ck)
        if self.dtype == "bf16":
            write_bf16(os.path.join(ck, "model.safetensors"), {k: bf16(a) for k, a in self.model.items()})
        else:
            wdelta.write_safetensors(os.path.join(ck, "model.safetensors"), self.model)
        with open(os.path.join(ck, "config.json"), "w") as f:
            json.dump({"model_type": "qwen2"}, f)
        for n in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
            with open(os.path.join(ck, n), "wb") as f:
                f.write(self.rng.bytes(2048))
        with open(os.path.join(ck, "trainer_state.json"), "w") as f:
            json.dump({"global_step": self.state.global_step}, f)
        return ck

    def train(self):
        self.event("on_train_begin")
        saved = []
        for step in range(1, self.max_steps + 1):
            self.event("on_step_begin")
            for k, a in self.model.items():
                a += self.rng.standard_normal(a.shape).astype(np.float32) * np.float32(self.scale)
                if self.dtype == "bf16":
                    self.model[k] = bf16_f32(bf16(a))  # training keeps what it stores
            self.state.global_step = step
            self.event("on_step_end")
            if step % self.save_steps == 0:
                saved.append(self.save())
                self.event("on_save")
        self.event("on_train_end")
        return saved


def deltatensors_training_script(output_dir, base_dir, model, **callback_kwargs):
    """A training script written for deltatensors' callback, the import
    changed from deltatensors.training to wdelta.training (the package
    docstring's usage: callback built from base_dir, strategy and strategy
    options; checkpoints every save_steps; each later rebuilt with
    dt.load_delta_from_paths("OUTPUT/checkpoint-N/model.wdelta", BASE))."""
    import wdelta as dt
    from wdelta.training import DeltaTensorsCallback

    callback = DeltaTensorsCallback(base_dir=base_dir, **callback_kwargs)
    trainer = MiniTrainer(output_dir, model, callbacks=[callback], save_steps=10, max_steps=30)
    ckpts = trainer.train()
    rebuilt = {}
    for ck in ckpts:
        rebuilt[ck] = dt.load_delta_from_paths(os.path.join(ck, "model.wdelta"), base_dir)
    return ckpts, rebuilt


class Training(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dirs, cls.sds = models(os.path.join(cls.tmp, "m"), "bf16", versions=0)

    def train(self, name, **kw):
        out = self.path(name, "outputs")
        model = {k: a.copy() for k, a in self.sds[0].items()}
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ckpts, rebuilt = deltatensors_training_script(out, self.dirs[0], model, **kw)
        return out, ckpts, rebuilt, buf.getvalue()

    def test_lossless_rebuilds_every_checkpoint(self):
        out, ckpts, rebuilt, log = self.train("lossless", strategy="lossless")
        self.assertEqual([os.path.basename(c) for c in ckpts], ["checkpoint-10", "checkpoint-20", "checkpoint-30"])
        self.assertNotIn("Warning", log)
        for ck in ckpts:
            p = os.path.join(ck, "model.wdelta")
            raw = wdelta.load_delta_from_paths(p, self.dirs[0], raw=True)
            for n, (dt, shape, data) in read_model(ck).items():
                self.assertEqual(raw[n].tobytes(), data, (ck, n))
                self.assertTrue(np.array_equal(rebuilt[ck][n], as_f32(dt, shape, data)), (ck, n))
            info = wdelta.inspect(p)
            self.assertEqual(sorted(info["files"]), ["config.json", "model.safetensors"])
            self.assertNotIn("parent", info)  # against the base, as deltatensors does
            # the full checkpoint stays (delete_full_checkpoint=False), nothing else left behind
            self.assertEqual(sorted(os.listdir(ck)), sorted(["config.json", "model.safetensors", "model.wdelta",
                                                             "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                                             "training_args.bin", "trainer_state.json"]))

    def test_int4_default_within_deltatensors_bound(self):
        out, ckpts, rebuilt, log = self.train("int4", outlier_fraction=0.05)
        b = self.sds[0]
        for ck in ckpts:
            self.assertEqual(wdelta.inspect(os.path.join(ck, "model.wdelta"))["strategy"], "int4")
            for n, (dt, shape, data) in read_model(ck).items():
                ft = as_f32(dt, shape, data)
                err = (rebuilt[ck][n] - ft).astype(np.float64)
                self.assertLessEqual(np.abs(err).max(), int4_bound(ft.astype(np.float64) - b[n], ft), (ck, n))

    def test_delete_full_checkpoint(self):
        out, ckpts, rebuilt, log = self.train("delete", strategy="sparse", sparsity=0.9, delete_full_checkpoint=True)
        self.assertIn("Removed full safetensors", log)
        for ck in ckpts:
            self.assertEqual(glob.glob(os.path.join(ck, "*.safetensors")), [])
            for n in ("model.wdelta", "optimizer.pt", "config.json", "trainer_state.json"):
                self.assertTrue(os.path.exists(os.path.join(ck, n)), n)
            self.assertEqual(sorted(rebuilt[ck]), sorted(self.sds[0]))

    def test_warnings_and_failures_do_not_stop_training(self):
        base = self.dirs[0]
        out = self.path("warn")
        state = types.SimpleNamespace(global_step=7)
        for setup, expect in ((lambda ck: None, "not found"),
                              (lambda ck: open(os.path.join(ck, "optimizer.pt"), "w").close(), "no .safetensors")):
            shutil.rmtree(out, ignore_errors=True)
            ck = os.path.join(out, "checkpoint-7")
            if "no ." in expect:
                os.makedirs(ck)
                setup(ck)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                r = DeltaTensorsCallback(base).on_save(Args(out), state, types.SimpleNamespace())
            self.assertIsNone(r)
            self.assertIn("Warning", buf.getvalue())
            self.assertIn(expect, buf.getvalue())
        # a failing save (a base that does not exist): a warning, the checkpoint untouched, no partial file
        ck = os.path.join(out, "checkpoint-7")
        wdelta.write_safetensors(os.path.join(ck, "model.safetensors"), self.sds[0])
        before = sorted(os.listdir(ck))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            DeltaTensorsCallback(self.path("missing-base"), delete_full_checkpoint=True).on_save(
                Args(out), state, types.SimpleNamespace())
        self.assertIn("Warning: delta save failed at step 7", buf.getvalue())
        self.assertEqual(sorted(os.listdir(ck)), before)
        # only the main process writes
        DeltaTensorsCallback(base).on_save(Args(out), types.SimpleNamespace(global_step=7, is_world_process_zero=False),
                                           None)
        self.assertEqual(sorted(os.listdir(ck)), before)
        # a strategy argument deltatensors does not know: a warning, as any failure
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            DeltaTensorsCallback(base, sparsityy=0.5).on_save(Args(out), state, None)
        self.assertIn("sparsityy", buf.getvalue())
        self.assertEqual(sorted(os.listdir(ck)), before)


# ---------------------------------------------------------------- the pages' examples
ANCHOR = re.compile(r"^(import \w|from [\w.]+ import |[A-Za-z_]\w* = |dt\.)")


def _incomplete(src):
    try:
        ast.parse(src)
        return False
    except SyntaxError as e:
        return bool(re.search(r"never closed|unexpected EOF|expected an indented block", e.msg or ""))


def extract_examples(text):
    """The Python examples of a page: from a line that starts code (an
    import, an assignment, a dt. call) through the last line after which
    the text still parses, across blank lines, up to prose, a code fence
    or a lone heading word."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if not ANCHOR.match(lines[i]):
            i += 1
            continue
        end, k = None, i
        while k < len(lines):
            line = lines[k]
            if line.startswith("```") or re.fullmatch(r"[A-Za-z]\w*", line):  # a fence, a heading word
                break
            src = "\n".join(lines[i:k + 1])
            if line.strip():
                try:
                    ast.parse(src)
                    end = k
                except SyntaxError:
                    if not _incomplete(src):
                        break
            k += 1
        if end is None:
            i += 1
            continue
        blocks.append("\n".join(lines[i:end + 1]))
        i = end + 1
    return blocks


class _Placeholders(ast.NodeTransformer):
    """`name = {...}` (a page's "your state dict here") -> name = __given__["name"]."""

    def visit_Assign(self, node):
        v = node.value
        if isinstance(v, ast.Set) and len(v.elts) == 1 and isinstance(v.elts[0], ast.Constant) \
                and v.elts[0].value is Ellipsis and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            node.value = ast.Subscript(value=ast.Name(id="__given__", ctx=ast.Load()),
                                       slice=ast.Constant(value=node.targets[0].id), ctx=ast.Load())
        return node


def as_wdelta(src):
    """The example with its deltatensors imports pointed at wdelta (the only change)."""
    return re.sub(r"^(\s*)(import|from) deltatensors\b", r"\1\2 wdelta", src, flags=re.M)


@unittest.skipUnless(os.path.isdir(SEEDS), "needs ../shared/seeds (the deltatensors pages)")
class PageExamples(Base):
    """Each page's examples, extracted from ../shared/seeds at run time, run
    in order in one namespace in a directory holding the models they name
    (qwen-base/, qwen-wiki/: generated bf16 pairs with the same tensors)."""

    def run_page(self, page, need=1):
        text = read_text(os.path.join(SEEDS, page))
        blocks = extract_examples(text)
        self.assertGreaterEqual(len(blocks), need, "examples found in %s" % page)
        cwd = self.path(page.split(".")[0])
        (base, ft), sds = models(cwd, "bf16", versions=1)
        os.rename(base, os.path.join(cwd, "qwen-base"))
        os.rename(ft, os.path.join(cwd, "qwen-wiki"))
        ns = {"__given__": {"finetuned_sd": sds[1], "base_sd": sds[0]}, "__name__": "__example__"}
        ran, skipped = [], []
        old = os.getcwd()
        os.chdir(cwd)
        try:
            for b in blocks:
                if re.search(r"^\s*(from|import) transformers\b", b, re.M):
                    skipped.append(b)  # needs transformers (not installable here): see report
                    continue
                tree = ast.fix_missing_locations(_Placeholders().visit(ast.parse(as_wdelta(b))))
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(tree, "%s example %d" % (page, len(ran) + 1), "exec"), ns)
                ran.append(b)
        finally:
            os.chdir(old)
        return ns, ran, skipped, sds

    def check_recon(self, recon, sds, strategy):
        self.assertEqual(sorted(recon), sorted(sds[1]))
        for k, ft in sds[1].items():
            err = (recon[k] - ft).astype(np.float64)
            self.assertLessEqual(np.abs(err).max(), int4_bound(ft.astype(np.float64) - sds[0][k], ft), k)

    def test_readme(self):
        ns, ran, skipped, sds = self.run_page("001_deltatensors_readme.txt")
        self.assertEqual(skipped, [])
        self.check_recon(ns["recon_sd"], sds, "int4")
        self.assertEqual(ns["info"]["strategy"], "int4")
        self.assertEqual(ns["info"]["n_tensors"], len(sds[1]))

    def test_pypi_page(self):
        ns, ran, skipped, sds = self.run_page("000_deltatensors_pypi_page.txt")
        self.check_recon(ns["recon_sd"], sds, "int4")

    def test_getting_started(self):
        ns, ran, skipped, sds = self.run_page("002_deltatensors_getting_started.txt", need=5)
        self.assertEqual(len(skipped), 1, "only the Hugging Face example (transformers) is left out")
        self.assertIn("read_wdelta", skipped[0])
        self.assertEqual(ns["info"]["n_tensors"], len(sds[1]))
        # the last example: in-memory state dicts, int4
        self.check_recon(ns["recon_sd"], sds, "int4")

    def test_api_reference(self):
        """The API reference shows signatures, not runnable examples: its
        parameters and defaults are what Names.test_same_parameters_and_defaults checks."""
        text = read_text(os.path.join(SEEDS, "003_deltatensors_api_reference.txt"))
        self.assertEqual(extract_examples(text), [])
        for m in re.finditer(r"^dt\.(\w+)\(\n((?:    .*\n)+)\) ->", text, re.M):
            params = [p.strip().rstrip(",") for p in m.group(2).splitlines()]
            sig = pyinspect.signature(getattr(wdelta, m.group(1)))
            names = list(sig.parameters)
            for p in params:
                name, _, default = p.partition("=")
                self.assertIn(name.lstrip("*"), names if not name.startswith("**") else ["kwargs"] + names)
                if default:
                    self.assertEqual(repr(sig.parameters[name].default).replace("'", '"'), default, name)


if __name__ == "__main__":
    unittest.main()
