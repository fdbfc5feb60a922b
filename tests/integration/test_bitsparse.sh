#!/usr/bin/env bash
# Mostly-unchanged deltas (as pure-bf16 fine-tunes leave them) end to end:
# a generated pair whose fine-tune keeps 85% of every 2-D tensor's values
# bit for bit.  bitdelta / axis1 pick their zero-aware forms (ternary,
# ternary-axis1) and say why in inspect; a dense pair keeps the dense codes;
# every lossy strategy rebuilds each tensor within relative error 1 (eval),
# unchanged values stay the base's (int4, ternary); auto --max-error E keeps
# every tensor within E; an F16 tensor whose 1-bit codes would overflow to
# infinity falls back to int4, reported in inspect.
# Env: WDELTA_BIN = directory holding wdelta and genmodel (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
require_python

setup_tmp bitsparse; [ -n "${KEEP_T:-}" ] && echo "T=$T"
start_watchdog 300

gen_pair "$T/g" --params 300k --shards 1 --seed 5 || die "genmodel failed"
gen_pair "$T/f" --params 200k --shards 1 --dtype f32 --seed 7 || die "genmodel failed"
gen_pair "$T/h" --params 200k --shards 1 --dtype f16 --seed 6 || die "genmodel failed"

# keep.py BASE FT OUT FRACTION [overflow]: OUT = FT with a FRACTION of each
# 2-D tensor's elements reset to BASE's bytes (a mostly-unchanged delta);
# "overflow" (F16): row 0 of each 2-D tensor moves 65472 -> 65504 (one step
# to the largest finite value) and 1000 -> 2000 elsewhere (the base is edited
# to match below)
cat >"$T/keep.py" <<'EOF'
import json, os, shutil, struct, sys
base, ft, out, frac = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
overflow = len(sys.argv) > 5
shutil.copytree(ft, out)
for name in os.listdir(out):
    if not name.endswith(".safetensors"): continue
    b = open(os.path.join(base, name), "rb").read()
    f = bytearray(open(os.path.join(ft, name), "rb").read())
    nb, n = struct.unpack("<Q", b[:8])[0], struct.unpack("<Q", f[:8])[0]
    bh, hdr = json.loads(b[8:8 + nb]), json.loads(f[8:8 + n])
    x = 12345
    for k, v in hdr.items():
        if k == "__metadata__" or len(v["shape"]) < 2 or bh.get(k, {}).get("shape") != v["shape"]: continue
        w = {"BF16": 2, "F16": 2, "F32": 4}[v["dtype"]]
        s, e = v["data_offsets"]
        s += 8 + n; e += 8 + n
        o = bh[k]["data_offsets"][0] + 8 + nb - s
        for i in range(s, e, w):
            x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            if (x >> 33) / float(1 << 31) < frac: f[i:i + w] = b[i + o:i + o + w]
        if overflow:
            cols = v["shape"][-1]
            for j in range(cols):
                i = s + 2 * j
                fv = 0x7bff if j == 0 else 0x67d0   # 65504 (65472 + one step), 2000 (1000 + 1000)
                f[i:i + 2] = struct.pack("<H", fv)
    open(os.path.join(out, name), "wb").write(bytes(f))
EOF
"$PY" "$T/keep.py" "$T/g/base" "$T/g/ft" "$T/g/sp" 0.85 || die "keep.py failed"

# maxrel FILE BASE FT: the largest per-tensor relative error eval reports
maxrel() {
  "$WDELTA" eval "$1" --base "$2" --finetuned "$3" --json >"$T/eval.json" 2>"$T/eval.err" || { cat "$T/eval.err"; echo 99; return; }
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); t=[x["rel_error"] for x in d["tensors"]]; print(max(99 if r is None else r for r in t))' "$T/eval.json"
}
le() { "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$1" "$2"; }
# codecs FILE: "tensor codec" lines for the 2-D tensors, from inspect --json
codecs() {
  "$WDELTA" inspect "$1" --json | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
for f in d["files"]:
    for x in f["extents"]:
        if x["tensor"] and "cols" in (x.get("params") or {}) or (x.get("params") or {}).get("why"):
            print(x["tensor"], x["codec"], (x.get("params") or {}).get("why", ""))'
}

for s in bitdelta axis1 int4 sparse ternary; do
  out="$T/sp-$s.wdelta"
  check "sparse pair: create -s $s" create_delta "$T/g/base" "$T/g/sp" "$out" -s "$s"
  r=$(maxrel "$out" "$T/g/base" "$T/g/sp")
  check "sparse pair: $s max relative error $r <= 1" le "$r" 1
done
codecs "$T/sp-bitdelta.wdelta" >"$T/c.txt"
check "bitdelta on a mostly-unchanged delta: every 2-D tensor ternary" \
  bash -c "[ -s '$T/c.txt' ] && ! grep -v ' ternary zero-aware' '$T/c.txt'"
codecs "$T/sp-axis1.wdelta" >"$T/c.txt"
check "axis1 on a mostly-unchanged delta: every 2-D tensor ternary-axis1" \
  bash -c "[ -s '$T/c.txt' ] && ! grep -v ' ternary-axis1 zero-aware' '$T/c.txt'"
check "inspect's table shows why" bash -c "'$WDELTA' inspect '$T/sp-bitdelta.wdelta' | grep -q 'why.*zero-aware'"

# a dense delta (F32: every value moves) keeps the dense codes
check "dense pair: create -s bitdelta" create_delta "$T/f/base" "$T/f/ft" "$T/d-bitdelta.wdelta" -s bitdelta
codecs "$T/d-bitdelta.wdelta" >"$T/c.txt"
check "bitdelta on a dense delta: stays bitdelta" bash -c "[ -s '$T/c.txt' ] && ! grep -v ' bitdelta ' '$T/c.txt'"

# unchanged values come back as the base's (ternary: bit for bit)
cat >"$T/same.py" <<'EOF'
import json, os, struct, sys
base, ft, out, exact = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
bad = kept = 0
for name in os.listdir(ft):
    if not name.endswith(".safetensors"): continue
    b, f, o = (open(os.path.join(d, name), "rb").read() for d in (base, ft, out))
    nb, n = struct.unpack("<Q", b[:8])[0], struct.unpack("<Q", f[:8])[0]
    bh = json.loads(b[8:8 + nb])
    assert o[:8 + n] == f[:8 + n]
    for k, v in json.loads(f[8:8 + n]).items():
        if k == "__metadata__" or len(v["shape"]) < 2 or bh.get(k, {}).get("shape") != v["shape"]: continue
        s, e = v["data_offsets"]
        d = bh[k]["data_offsets"][0] + 8 + nb - (8 + n + s)
        for i in range(8 + n + s, 8 + n + e, 2):
            if f[i:i + 2] == b[i + d:i + d + 2]:
                kept += 1
                bb = b[i + d:i + d + 2]
                same = o[i:i + 2] == bb or (not exact and (o[i:i + 2] + bb).strip(b"\0\x80") == b"")
                bad += not same
print(kept, bad)
sys.exit(1 if bad or not kept else 0)
EOF
for s in ternary int4; do
  rm -rf "$T/out"
  "$WDELTA" apply "$T/sp-$s.wdelta" --base "$T/g/base" -o "$T/out" >/dev/null 2>&1
  check "$s: unchanged values stay the base's" "$PY" "$T/same.py" "$T/g/base" "$T/g/sp" "$T/out" $([ $s = ternary ] && echo 1 || echo 0)
done

# auto --max-error E keeps every tensor within E
for E in 0.3 0.9; do
  check "auto --max-error $E: create" create_delta "$T/g/base" "$T/g/sp" "$T/auto.wdelta" -s auto --max-error $E --force
  r=$(maxrel "$T/auto.wdelta" "$T/g/base" "$T/g/sp")
  check "auto --max-error $E: max relative error $r <= $E" le "$r" $E
done

# an F16 tensor next to the format's largest value: the 1-bit codes would
# overflow to infinity (worse than the base); the tensor falls back to int4
"$PY" "$T/keep.py" "$T/h/base" "$T/h/ft" "$T/h/ovf" 0.0 overflow || die "keep.py failed"
cp -r "$T/h/base" "$T/h/obase"
"$PY" - "$T/h/obase" <<'EOF' || die "base edit failed"
import json, os, struct, sys
d = sys.argv[1]
for name in os.listdir(d):
    if not name.endswith(".safetensors"): continue
    p = os.path.join(d, name); b = bytearray(open(p, "rb").read())
    n = struct.unpack("<Q", b[:8])[0]
    for k, v in json.loads(b[8:8 + n]).items():
        if k == "__metadata__" or len(v["shape"]) < 2: continue
        s = v["data_offsets"][0] + 8 + n
        for j in range(v["shape"][-1]):
            b[s + 2 * j:s + 2 * j + 2] = struct.pack("<H", 0x7bfe if j == 0 else 0x63d0)  # 65472, 1000
    open(p, "wb").write(bytes(b))
EOF
for s in bitdelta axis1; do
  check "overflow pair: create -s $s" create_delta "$T/h/obase" "$T/h/ovf" "$T/o-$s.wdelta" -s $s
  r=$(maxrel "$T/o-$s.wdelta" "$T/h/obase" "$T/h/ovf")
  check "overflow pair: $s max relative error $r <= 1" le "$r" 1
  codecs "$T/o-$s.wdelta" >"$T/c.txt"
done
# bitdelta's row scale overflows 65472 (ternary too: that element changed);
# axis1's column scale for that column stays small, so it needs no fallback
check "overflow pair: bitdelta falls back to int4, and inspect says why" \
  grep -q "int4 fallback: .*rel. error inf > 1 (worse than the base); int4" <(codecs "$T/o-bitdelta.wdelta")
finish
