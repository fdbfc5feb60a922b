"""Tests of the Python package (python/wdelta) over libwdelta.so.

Run by tests/integration/test_python.sh with Debian's /usr/bin/python3 and
numpy.  Env: WDELTA_BIN (directory with wdelta, genmodel, wdeltafs and
libwdelta.so), WDELTA_LIB (the library the package loads), WD_TMP (a
scratch directory), SHARED (../shared; tests needing it skip without it).
"""
import glob
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import types
import unittest

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "python"))
import wdelta  # noqa: E402
from wdelta.callback import CheckpointDeltas, WdeltaCallback  # noqa: E402

BIN = os.environ.get("WDELTA_BIN", os.path.join(REPO, "build"))
TMP = os.environ.get("WD_TMP") or os.path.join(REPO, "tests", "tmp", "python")
SHARED = os.environ.get("SHARED", os.path.join(REPO, "..", "shared"))
PAIRB = os.path.join(SHARED, "models", "pairB")
VECTORS = os.path.join(SHARED, "vectors", "v1")


def run(*cmd):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(map(str, cmd)), p.returncode, p.stderr))
    return p.stdout


def tool(*args):
    return run(os.path.join(BIN, "wdelta"), *args)


def read_model(model_dir):
    """{name: (dtype string, shape, raw bytes)} of every safetensors file in a directory."""
    out = {}
    for p in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
            hdr.pop("__metadata__", None)
            base = 8 + n
            for name, t in hdr.items():
                a, b = t["data_offsets"]
                f.seek(base + a)
                out[name] = (t["dtype"], tuple(t["shape"]), f.read(b - a))
    return out


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def same_dirs(a, b):
    names = sorted(os.listdir(a))
    if names != sorted(os.listdir(b)):
        return False
    return all(read_bytes(os.path.join(a, n)) == read_bytes(os.path.join(b, n)) for n in names)


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = os.path.join(TMP, cls.__name__)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        os.makedirs(cls.tmp)

    def gen(self, name, *args):
        d = os.path.join(self.tmp, name)
        if not os.path.isdir(d):
            run(os.path.join(BIN, "genmodel"), d, *args)
        return d


class RoundTrip(Base):
    def test_lossless_api_equals_tool_and_ft(self):
        d = self.gen("g", "--params", "300000", "--shards", "2", "--dtype", "bf16")
        api, cli = os.path.join(self.tmp, "api.wdelta"), os.path.join(self.tmp, "cli.wdelta")
        calls = []
        h = wdelta.save_delta_from_paths(api, d + "/ft", d + "/base", strategy="lossless", threads=3,
                                         allow_new_tensors=True, progress=lambda done, total: calls.append((done, total)))
        self.assertTrue(calls and calls[-1][0] == calls[-1][1] > 0, "progress reaches the total")
        tool("create", "-q", "--base", d + "/base", "--finetuned", d + "/ft", "-o", cli, "--threads", "1")
        self.assertEqual(read_bytes(api), read_bytes(cli), "API and tool write the same bytes")
        # deltatensors' parent_hash (v1 content hash); the file records the identity too
        self.assertEqual(h, tool("hash", "--v1", d + "/base").strip(), "returns the base's content hash")
        self.assertEqual(h, wdelta.model_hash(d + "/base"))
        self.assertEqual(wdelta.inspect(api)["base_identity"], wdelta.model_identity(d + "/base"))
        self.assertEqual(wdelta.inspect(api)["result_identity"], wdelta.model_identity(d + "/ft"))
        self.assertEqual(wdelta.inspect(api)["result_hash"], wdelta.model_hash(d + "/ft"))
        ft = read_model(d + "/ft")
        raw = wdelta.load_delta_from_paths(api, d + "/base", raw=True)
        self.assertEqual(sorted(raw), sorted(ft))
        for name, (dt, shape, data) in ft.items():
            self.assertEqual(raw[name].shape, shape, name)
            self.assertEqual(raw[name].tobytes(), data, name)
        f32 = wdelta.load_delta_from_paths(api, d + "/base")
        for name, (dt, shape, data) in ft.items():
            a = f32[name]
            if dt == "BF16":
                self.assertEqual(a.dtype, np.float32)
                want = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
                self.assertTrue(np.array_equal(a, want, equal_nan=True), name)
        # apply through the API == the fine-tune's directory
        out = os.path.join(self.tmp, "applied")
        wdelta.apply(api, d + "/base", out)
        self.assertTrue(same_dirs(d + "/ft", out))
        self.assertEqual(wdelta.verify(api, d + "/base"), tool("hash", d + "/ft").strip())

    def test_lossy_load_equals_tool_apply(self):
        d = self.gen("g32", "--params", "200000", "--dtype", "f32")
        for strategy, kw, cli in (("int4", {"outlier_fraction": 0.01}, ["--strategy", "int4", "--outliers", "0.01"]),
                                  ("sparse", {"sparsity": 0.8}, ["--strategy", "sparse", "--density", "0.2"]),
                                  ("quantized", {}, ["--strategy", "bitdelta"]),
                                  ("axis1", {}, ["--strategy", "axis1"])):
            with self.subTest(strategy=strategy):
                p = os.path.join(self.tmp, strategy + ".wdelta")
                q = os.path.join(self.tmp, strategy + "-cli.wdelta")
                wdelta.save_delta_from_paths(p, d + "/ft", d + "/base", strategy=strategy, allow_new_tensors=True,
                                             **kw)
                tool("create", "-q", "--base", d + "/base", "--finetuned", d + "/ft", "-o", q, *cli)
                self.assertEqual(read_bytes(p), read_bytes(q))
                out = os.path.join(self.tmp, strategy + "-out")
                tool("apply", "-q", p, "--base", d + "/base", "-o", out)
                want = read_model(out)
                got = wdelta.load_delta_from_paths(p, d + "/base", raw=True)
                for name, (dt, shape, data) in want.items():
                    self.assertEqual(got[name].tobytes(), data, name)
                info = wdelta.inspect(p)
                self.assertEqual(info["strategy"], "bitdelta" if strategy == "quantized" else strategy)

    def test_default_strategy_is_deltatensors_sparse(self):
        d = self.gen("g32", "--params", "200000", "--dtype", "f32")
        p = os.path.join(self.tmp, "default.wdelta")
        wdelta.save_delta_from_paths(p, d + "/ft", d + "/base", allow_new_tensors=True)
        self.assertEqual(wdelta.inspect(p)["strategy"], "sparse")

    def test_in_memory_state_dicts(self):
        rng = np.random.default_rng(7)
        base = {"w": rng.standard_normal((64, 32)).astype(np.float32),
                "b": rng.standard_normal(32).astype(np.float16),
                "ids": np.arange(10, dtype=np.int64), "flag": np.array(True)}
        ft = {k: v.copy() for k, v in base.items()}
        ft["w"] += np.float32(1e-2) * rng.standard_normal((64, 32)).astype(np.float32)
        ft["b"][3] = np.float16(0.5)
        ft["new"] = np.ones((3, 3), np.float32)
        p = os.path.join(self.tmp, "mem.wdelta")
        h = wdelta.save_delta(p, ft, base, strategy="lossless", allow_new_tensors=True)
        self.assertRegex(h, "^[0-9a-f]{64}$")
        got = wdelta.load_delta(p, base)
        self.assertEqual(sorted(got), sorted(ft))
        self.assertTrue(np.array_equal(got["w"], ft["w"]))
        self.assertEqual(got["b"].dtype, np.float32)  # floats come back as float32
        self.assertTrue(np.array_equal(got["b"], ft["b"].astype(np.float32)))
        self.assertEqual(got["ids"].dtype, np.int64)
        self.assertTrue(np.array_equal(got["ids"], ft["ids"]))
        self.assertEqual(got["flag"].shape, ())
        self.assertTrue(bool(got["flag"]))
        raw = wdelta.load_delta(p, base, raw=True)
        self.assertEqual(raw["b"].dtype, np.float16)
        self.assertEqual(raw["b"].tobytes(), ft["b"].tobytes())
        # the hash of an in-memory base is what the file records
        self.assertEqual(h, wdelta.inspect(p)["parent_hash"])

    def test_inspect_keys(self):
        d = self.gen("g", "--params", "300000", "--shards", "2", "--dtype", "bf16")
        p = os.path.join(self.tmp, "insp.wdelta")
        h = wdelta.save_delta_from_paths(p, d + "/ft", d + "/base", strategy="lossless", allow_new_tensors=True)
        i = wdelta.inspect(p)
        for k in ("path", "size_mb", "parent_hash", "strategy", "n_tensors", "tensors"):
            self.assertIn(k, i)
        self.assertEqual(i["parent_hash"], h)
        self.assertEqual(i["n_tensors"], len(read_model(d + "/ft")))
        t = i["tensors"]["score.weight"]
        self.assertEqual(t["dtype"], "bfloat16")
        self.assertIsInstance(t["shape"], list)
        cli = json.loads(tool("inspect", "--json", p))
        self.assertEqual(cli["base_hash_v1"], i["parent_hash"])
        self.assertEqual(cli["base_hash"], i["base_identity"])

    def test_gil_released_during_c_calls(self):
        # A thread that only counts gets to run while one long C call
        # (hashing an 8 MB model, tens of ms) is under way: it could not if
        # the call held the GIL, as the switch interval is made longer than
        # the call, so Python would not hand the GIL over on its own.
        from wdelta import _api
        d = self.gen("big", "--params", "4000000", "--dtype", "bf16")
        model = _api._Model.open(d + "/base")
        ticks = [0]
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks[0] += 1
        old = sys.getswitchinterval()
        sys.setswitchinterval(0.5)
        t = threading.Thread(target=spin)
        t.start()
        try:
            during = 0
            for _ in range(3):
                before = ticks[0]
                model.content_hash()  # one call of wd_model_hash
                during = max(during, ticks[0] - before)
        finally:
            stop.set()
            t.join()
            sys.setswitchinterval(old)
            model.close()
        self.assertGreater(during, 0)


@unittest.skipUnless(os.path.isdir(VECTORS), "needs ../shared/vectors/v1 (deltatensors' v1 files)")
class V1Vectors(unittest.TestCase):
    def test_every_vector_matches_expected(self):
        files = sorted(glob.glob(os.path.join(VECTORS, "*", "*.wdelta")))
        self.assertGreaterEqual(len(files), 13)
        for w in files:
            with self.subTest(vector=os.path.relpath(w, VECTORS)):
                d = os.path.dirname(w)
                base = os.path.join(d, "base") if os.path.isdir(os.path.join(d, "base")) else os.path.join(PAIRB, "base")
                exp = read_json(w[:-len(".wdelta")] + ".expected.json")
                sd = wdelta.load_delta_from_paths(w, base)
                self.assertEqual(sorted(sd), sorted(exp["tensors"]))
                for name, e in exp["tensors"].items():
                    a = sd[name]
                    self.assertEqual(str(a.dtype), e["dtype"], name)
                    self.assertEqual(list(a.shape), e["shape"], name)
                    self.assertEqual(hashlib.sha256(a.tobytes()).hexdigest(), e["sha256"], name)
                info = wdelta.inspect(w)
                self.assertEqual(info["parent_hash"], exp["parent_hash"])
                self.assertEqual(info["strategy"], exp["strategy"])
                self.assertEqual(info["version"], 1)


class Errors(Base):
    def assertRaisesMsg(self, exc, pattern, fn, *a, **kw):
        with self.assertRaises(exc) as cm:
            fn(*a, **kw)
        self.assertRegex(str(cm.exception), pattern)
        return str(cm.exception)

    def test_messages(self):
        d = self.gen("g", "--params", "100000", "--dtype", "bf16")
        other = self.gen("o", "--params", "100000", "--dtype", "bf16", "--seed", "9")
        p = os.path.join(self.tmp, "e.wdelta")
        wdelta.save_delta_from_paths(p, d + "/ft", d + "/base", strategy="lossless", allow_new_tensors=True)
        self.assertRaisesMsg(wdelta.WdeltaError, "nope.wdelta", wdelta.inspect, os.path.join(self.tmp, "nope.wdelta"))
        self.assertRaisesMsg(wdelta.WdeltaError, "wrong base", wdelta.load_delta_from_paths, p, other + "/base")
        self.assertRaisesMsg(ValueError, "unknown strategy", wdelta.save_delta_from_paths, p + "x", d + "/ft",
                             d + "/base", strategy="zip")
        self.assertRaisesMsg(TypeError, "sparsityy", wdelta.save_delta_from_paths, p + "x", d + "/ft", d + "/base",
                             sparsityy=0.5)
        self.assertRaisesMsg(ValueError, "max_error", wdelta.save_delta_from_paths, p + "x", d + "/ft", d + "/base",
                             strategy="auto")
        self.assertRaisesMsg(wdelta.WdeltaError, "missing", wdelta.save_delta_from_paths, p + "x", d + "/missing",
                             d + "/base", strategy="lossless")
        self.assertFalse(os.path.exists(p + "x"))
        # a damaged file: the same message as the C tool's
        bad = os.path.join(self.tmp, "trunc.wdelta")
        data = read_bytes(p)
        write_bytes(bad, data[: len(data) // 2])
        msg = self.assertRaisesMsg(wdelta.WdeltaError, "trunc.wdelta", wdelta.inspect, bad)
        cli = subprocess.run([os.path.join(BIN, "wdelta"), "inspect", bad], capture_output=True, text=True)
        self.assertNotEqual(cli.returncode, 0)
        self.assertEqual(cli.stderr.strip(), "wdelta: " + msg)
        flipped = os.path.join(self.tmp, "flip.wdelta")
        b = bytearray(data)
        b[len(b) // 3] ^= 0x55  # inside a block: caught by its checksum when decoded
        write_bytes(flipped, bytes(b))
        self.assertRaisesMsg(wdelta.WdeltaError, "checksum|block", wdelta.load_delta_from_paths, flipped, d + "/base")


def make_checkpoints(root, base, ft, steps):
    """Trainer-like checkpoint dirs: intermediate models (tools/mkchain.py)
    plus optimizer state and trainer_state.json that must stay out of deltas."""
    inter = os.path.join(root, "inter")
    run(sys.executable, os.path.join(REPO, "tools", "mkchain.py"), base, ft, inter, str(len(steps)))
    dirs = []
    for k, step in enumerate(steps, 1):
        src = ft if k == len(steps) else os.path.join(inter, "m%d" % k)
        ck = os.path.join(root, "run", "checkpoint-%d" % step)
        shutil.copytree(src, ck)
        with open(os.path.join(ck, "optimizer.pt"), "wb") as f:
            f.write(os.urandom(4096))
        with open(os.path.join(ck, "trainer_state.json"), "w") as f:
            json.dump({"global_step": step}, f)
        dirs.append(ck)
    shutil.rmtree(inter)
    return dirs


class Chains(Base):
    def checkpoints(self, name):
        d = self.gen("g", "--params", "200000", "--shards", "2", "--dtype", "bf16")
        root = os.path.join(self.tmp, name)
        return d, make_checkpoints(root, d + "/base", d + "/ft", [10, 20, 30])

    def test_callback_writes_a_verifiable_chain(self):
        d, ckpts = self.checkpoints("cb")
        out = os.path.join(self.tmp, "cb", "deltas")
        cb = WdeltaCallback(d + "/base", out, strategy="lossless", strict=True)
        args = types.SimpleNamespace(output_dir=os.path.dirname(ckpts[0]))
        for ck in ckpts:
            step = int(ck.rsplit("-", 1)[1])
            state = types.SimpleNamespace(global_step=step, is_world_process_zero=True)
            cb.on_save(args, state, types.SimpleNamespace())
        names = sorted(os.listdir(out))
        self.assertEqual(names, ["checkpoint-10.wdelta", "checkpoint-20.wdelta", "checkpoint-30.wdelta"])
        for k, ck in enumerate(ckpts):
            p = os.path.join(out, "checkpoint-%d.wdelta" % (10 * (k + 1)))
            info = wdelta.inspect(p)
            if k:
                self.assertEqual(info["parent"]["name"], "checkpoint-%d.wdelta" % (10 * k))
                self.assertEqual(info["parent"]["depth"], k)
            self.assertNotIn("optimizer.pt", info["files"])
            self.assertNotIn("trainer_state.json", info["files"])
            self.assertIn("config.json", info["files"])
            tool("verify", "-q", p, "--base", d + "/base")  # the C tool follows the chain
            got = wdelta.load_delta_from_paths(p, d + "/base", raw=True)
            for name, (dt, shape, data) in read_model(ck).items():
                self.assertEqual(got[name].tobytes(), data, name)
            rebuilt = os.path.join(self.tmp, "cb", "rebuilt-%d" % k)
            tool("apply", "-q", p, "--base", d + "/base", "-o", rebuilt)
            for n in os.listdir(rebuilt):
                self.assertEqual(read_bytes(os.path.join(rebuilt, n)),
                                 read_bytes(os.path.join(ck, n)), n)
        # the chain through load_delta_chain, oldest first (deltatensors' order)
        chain = [os.path.join(out, n) for n in names]
        top = wdelta.load_delta_chain(chain, base=d + "/base", raw=True)
        for name, (dt, shape, data) in read_model(ckpts[-1]).items():
            self.assertEqual(top[name].tobytes(), data, name)
        # in another order: refused when verified; put in hash order without verify
        with self.assertRaisesRegex(wdelta.BaseMismatchError, "hash mismatch"):
            wdelta.load_delta_chain(list(reversed(chain)), d + "/base")
        top = wdelta.load_delta_chain(list(reversed(chain)), d + "/base", verify=False, raw=True)
        for name, (dt, shape, data) in read_model(ckpts[-1]).items():
            self.assertEqual(top[name].tobytes(), data, name)
        with self.assertRaisesRegex(wdelta.WdeltaError, "hash mismatch"):
            wdelta.load_delta_chain([chain[0], chain[2]], base_dir=d + "/base")

    def test_keep_full_false_removes_weights_after_verify(self):
        d, ckpts = self.checkpoints("kf")
        out = os.path.join(self.tmp, "kf", "deltas")
        want = [read_model(ck) for ck in ckpts]
        cd = CheckpointDeltas(d + "/base", out, strategy="lossless", keep_full=False)
        for ck in ckpts:
            cd.save(ck)
            self.assertEqual(glob.glob(os.path.join(ck, "*.safetensors")), [])
            self.assertFalse(os.path.exists(os.path.join(ck, "model.safetensors.index.json")))
            self.assertTrue(os.path.exists(os.path.join(ck, "optimizer.pt")))
            self.assertTrue(os.path.exists(os.path.join(ck, "config.json")))
        for k, w in enumerate(want):
            got = wdelta.load_delta_from_paths(os.path.join(out, "checkpoint-%d.wdelta" % (10 * (k + 1))),
                                               d + "/base", raw=True)
            for name, (dt, shape, data) in w.items():
                self.assertEqual(got[name].tobytes(), data, name)

    def test_max_chain_starts_a_new_chain_at_the_base(self):
        d, ckpts = self.checkpoints("mc")
        out = os.path.join(self.tmp, "mc", "deltas")
        cd = CheckpointDeltas(d + "/base", out, strategy="lossless", max_chain=2)
        for ck in ckpts:
            cd.save(ck)
        depth = [wdelta.inspect(os.path.join(out, "checkpoint-%d.wdelta" % s)).get("parent", {}).get("depth", 0)
                 for s in (10, 20, 30)]
        self.assertEqual(depth, [0, 1, 0])
        got = wdelta.load_delta_from_paths(os.path.join(out, "checkpoint-30.wdelta"), d + "/base", raw=True)
        for name, (dt, shape, data) in read_model(ckpts[-1]).items():
            self.assertEqual(got[name].tobytes(), data, name)
        with self.assertRaises(ValueError):
            CheckpointDeltas(d + "/base", out, max_chain=0)

    def test_failure_keeps_the_checkpoint(self):
        d = self.gen("g", "--params", "200000", "--shards", "2", "--dtype", "bf16")
        ck = os.path.join(self.tmp, "fail", "checkpoint-5")
        os.makedirs(ck)
        write_bytes(os.path.join(ck, "optimizer.pt"), b"x")
        cb = WdeltaCallback(d + "/base", os.path.join(self.tmp, "fail", "deltas"))
        args = types.SimpleNamespace(output_dir=os.path.dirname(ck))
        with self.assertLogs("wdelta", "WARNING") as logs:
            cb.on_save(args, types.SimpleNamespace(global_step=5, is_world_process_zero=True), None)
        self.assertIn("no .safetensors weights", logs.output[0])
        strict = WdeltaCallback(d + "/base", os.path.join(self.tmp, "fail", "deltas"), strict=True)
        with self.assertRaises(wdelta.WdeltaError):
            strict.on_save(args, types.SimpleNamespace(global_step=5, is_world_process_zero=True), None)


@unittest.skipUnless(os.path.isdir(PAIRB), "needs ../shared/models/pairB")
class PairB(Base):
    def test_lossless_api_equals_tool(self):
        p = os.path.join(self.tmp, "pairB.wdelta")
        q = os.path.join(self.tmp, "pairB-cli.wdelta")
        h = wdelta.save_delta_from_paths(p, PAIRB + "/ft", PAIRB + "/base", strategy="lossless")
        tool("create", "-q", "--base", PAIRB + "/base", "--finetuned", PAIRB + "/ft", "-o", q)
        self.assertEqual(read_bytes(p), read_bytes(q))
        self.assertEqual(h, tool("hash", "--v1", PAIRB + "/base").strip())
        got = wdelta.load_delta_from_paths(p, PAIRB + "/base", raw=True)
        ft = read_model(PAIRB + "/ft")
        self.assertEqual(len(got), len(ft))
        for name, (dt, shape, data) in ft.items():
            self.assertEqual(got[name].tobytes(), data, name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
