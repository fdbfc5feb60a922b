#!/usr/bin/env bash
# Fine-tunes saved in another dtype than their base, or with rows added to /
# removed from dim 0 (tokens added to embed_tokens and lm_head), are coded
# against the base converted to their dtype (core/delta/xdtype.c) instead of being
# stored whole: on small generated pairs (genmodel, converted and resized
# with xdtype_model.py) every variant is byte-identical through apply, a
# chain link and a wdeltafs mount; inspect shows the predictor; the sizes
# are those of a delta, not of the whole tensor; lossy strategies keep such
# tensors lossless; a corrupt "predict" field in a (re-sealed) manifest is a
# clear error.
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python
"$PY" -c 'import numpy' 2>/dev/null || skip "numpy missing ($PY)"

setup_mount_tmp xdtype
start_watchdog 300
XM="$REPO/tests/integration/xdtype_model.py"
size() { stat -c %s "$1"; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# ------------------------------------------------------------------ inputs
gen_pair "$T/g" --params 400k --seed 11 || die "genmodel (bf16) failed"
gen_pair "$T/g32" --params 300k --dtype f32 --seed 5 || die "genmodel (f32) failed"
G=$T/g
mk() { "$PY" "$XM" "$@" >"$T/xm.err" 2>&1 || { cat "$T/xm.err"; die "xdtype_model.py $*"; }; }
mk "$G/ft" "$T/f32" --dtype F32                       # F32 fine-tune over a BF16 base
mk "$G/ft" "$T/f16" --dtype F16                       # F16 over BF16
mk "$T/f16" "$T/f32of16" --dtype F32                  # F32 holding F16 values, over BF16
mk "$G/ft" "$T/rows" --rows 4                         # 4 tokens added: embed_tokens, lm_head
mk "$G/ft" "$T/rm" --rows -3                          # 3 rows removed
mk "$G/ft" "$T/f32rows" --dtype F32 --rows 5          # both
mk "$T/g32/ft" "$T/bf16" --dtype BF16                 # BF16 (rounded) over an F32 base
mk "$T/g32/ft" "$T/f16r" --dtype F16 --rows 2 --seed 3

# name base ft: the variants, each made against its base
VARIANTS="f32:$G/base f16:$G/base f32of16:$G/base rows:$G/base rm:$G/base f32rows:$G/base bf16:$T/g32/base f16r:$T/g32/base"
check "create the plain delta" create_delta "$G/base" "$G/ft" "$SRC/plain.wdelta"
for v in $VARIANTS; do
  n=${v%%:*} b=${v#*:}
  check "create $n" create_delta "$b" "$T/$n" "$SRC/$n.wdelta"
  "$WDELTA" apply -q "$SRC/$n.wdelta" --base "$b" -o "$T/out.$n" >/dev/null 2>"$T/err"
  check "$n: apply is byte-identical" same_model "$T/out.$n" "$T/$n" || cat "$T/err"
done

# ------------------------------------------------------------------ inspect: coded against the base
# every tensor whose dtype or shape differs from the base's is a lossless
# delta with its predictor in params, none is stored whole (zstd)
"$PY" - "$WDELTA" "$SRC" "$T" $VARIANTS >"$T/insp.out" 2>&1 <<'PYEOF'
import json, subprocess, sys, struct, glob, os
wd, src, t = sys.argv[1:4]
def tensors(d):
    r = {}
    for p in glob.glob(d + "/*.safetensors"):
        f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]
        for k, v in json.loads(f.read(n)).items():
            if k != "__metadata__": r[k] = (v["dtype"], v["shape"])
    return r
for v in sys.argv[4:]:
    name, base = v.split(":", 1)
    ft, bt = tensors(os.path.join(t, name)), tensors(base)
    j = json.loads(subprocess.run([wd, "inspect", "--json", f"{src}/{name}.wdelta"], capture_output=True,
                                  check=True).stdout)
    n = 0
    for f in j["files"]:
        for e in f["extents"]:
            k = e.get("tensor")
            if not k or k not in bt: continue  # a tensor new in the fine-tune is stored whole
            assert e["codec"] == "lossless", (name, k, e["codec"])
            if ft[k] != bt[k]:
                p = e.get("params") or {}
                assert p.get("base_dtype") == bt[k][0], (name, k, p)
                n += 1
    assert n > 0, name
    print(name, n)
PYEOF
rc=$?
check "inspect: every changed tensor is a lossless delta against its base's dtype ($(tr '\n' ' ' <"$T/insp.out"))" [ $rc = 0 ]
"$WDELTA" inspect "$SRC/rows.wdelta" | grep -q 'lm_head.weight .*lossless.*"base_dtype":"BF16"'
check "inspect text shows the predictor" [ $? = 0 ]

# ------------------------------------------------------------------ sizes
# An F32 copy of a BF16 fine-tune holds the same information: its delta is
# the plain delta's size (blocks of BF16 values are coded as BF16), far below
# zstd of the F32 shards (which the old code stored whole).  Added rows are
# new data: the rows delta is the plain delta plus at most those rows' bytes.
p=$(size "$SRC/plain.wdelta")
s=$(size "$SRC/f32.wdelta")
z=$(cat "$T"/f32/*.safetensors | zstd -3 -c | wc -c)
check "f32 over bf16: delta $s <= 1.02 x plain $p" le "$s" "$(( p * 102 / 100 ))"
check "f32 over bf16: delta $s <= zstd -3 of the F32 shards $z / 1.5" le "$(( s * 3 / 2 ))" "$z"
rowbytes=$(( 2 * 4 * 64 * 2 ))   # 2 tensors x 4 rows x 64 columns x 2 bytes (bf16)
s=$(size "$SRC/rows.wdelta")
check "rows added: delta $s <= plain $p + the new rows' $rowbytes bytes + 1%" le "$s" "$(( p * 101 / 100 + rowbytes ))"
s=$(size "$SRC/rm.wdelta")
check "rows removed: delta $s <= plain $p" le "$s" "$p"
s=$(size "$SRC/f16.wdelta"); z=$(cat "$T"/f16/*.safetensors | zstd -3 -c | wc -c)
check "f16 over bf16: delta $s <= zstd -3 of the shards $z / 1.5" le "$(( s * 3 / 2 ))" "$z"
s=$(size "$SRC/bf16.wdelta"); z=$(cat "$T"/bf16/*.safetensors | zstd -3 -c | wc -c)
check "bf16 over f32: delta $s <= zstd -3 of the shards $z / 1.5" le "$(( s * 3 / 2 ))" "$z"

# ------------------------------------------------------------------ eval, lossy strategies, a chain link
"$WDELTA" eval "$SRC/f32rows.wdelta" --base "$G/base" --finetuned "$T/f32rows" --json >"$T/eval.json" 2>"$T/err"
check "eval of a predicted delta: relative error 0 everywhere" "$PY" -c '
import json, sys
j = json.load(open(sys.argv[1]))
ts = j["tensors"]
assert ts and all(t["rel_error"] == 0 and t["max_abs_error"] == 0 for t in ts), ts[:3]
assert sum("base_dtype" in (t.get("settings") or {}) for t in ts) > 0' "$T/eval.json" || { cat "$T/err"; head -c 600 "$T/eval.json"; }
create_delta "$G/base" "$T/rows" "$T/rows-int4.wdelta" --strategy int4
check "int4 on the rows-added model: created" [ $? = 0 ]
"$WDELTA" inspect "$T/rows-int4.wdelta" >"$T/i4.txt"
check "int4: resized tensors stay lossless (predictor shown), the others int4" \
  bash -c "grep -q 'lm_head.weight .*lossless.*base_dtype' '$T/i4.txt' && grep -q 'embed_tokens.weight .*lossless.*base_dtype' '$T/i4.txt' && grep -q ' int4 ' '$T/i4.txt'"
"$WDELTA" apply -q "$T/rows-int4.wdelta" --base "$G/base" -o "$T/out.i4" >/dev/null 2>"$T/err"
"$PY" - "$T/out.i4" "$T/rows" >"$T/i4.out" 2>&1 <<'PYEOF'
import json, struct, sys, glob, os
def get(d, name):
    for p in glob.glob(d + "/*.safetensors"):
        f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
        if name in h:
            a, b = h[name]["data_offsets"]; f.seek(8 + n + a); return f.read(b - a)
for k in ("lm_head.weight", "model.embed_tokens.weight"):
    assert get(sys.argv[1], k) == get(sys.argv[2], k), k
PYEOF
check "int4: the resized tensors are rebuilt exactly" [ $? = 0 ] || cat "$T/i4.out" "$T/err"
mkdir -p "$T/chain"
cp "$SRC/plain.wdelta" "$T/chain/p.wdelta"
"$WDELTA" create --parent "$T/chain/p.wdelta" --base "$G/base" --finetuned "$T/f32rows" -o "$T/chain/c.wdelta" \
  --quiet >/dev/null 2>"$T/err"
check "chain link (F32 + rows over the fine-tune a delta rebuilds): created" [ $? = 0 ] || cat "$T/err"
"$WDELTA" apply -q "$T/chain/c.wdelta" --base "$G/base" -o "$T/out.chain" >/dev/null 2>"$T/err"
check "chain link: apply is byte-identical" same_model "$T/out.chain" "$T/f32rows" || cat "$T/err"

# ------------------------------------------------------------------ the mount
OPTS="base=$G/base:$T/g32/base,cache_size=16M,cache_dir=$T/cache"
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS"; then
  pass "mounted"
  for v in $VARIANTS; do
    n=${v%%:*}
    check "$n: the mount serves the fine-tune byte for byte" same_model "$MNT/$n" "$T/$n"
  done
  # random reads inside the resized and converted tensors (blocks decoded alone)
  "$PY" - "$MNT" "$T" <<'PYEOF' >"$T/rr.out" 2>&1
import os, random, sys
mnt, t = sys.argv[1:3]
rnd = random.Random(5)
for n in ("f32rows", "rows", "f16r"):
    for fn in sorted(os.listdir(os.path.join(t, n))):
        want = open(os.path.join(t, n, fn), "rb").read()
        with open(os.path.join(mnt, n, fn), "rb") as f:
            for _ in range(40):
                o = rnd.randrange(len(want)); k = rnd.randrange(1, 300000)
                f.seek(o)
                assert f.read(k) == want[o:o + k], (n, fn, o, k)
print("ok")
PYEOF
  check "random reads through the mount" [ $? = 0 ] || cat "$T/rr.out"
  unmount_checked "$MNT"
  assert_no_sanitizer_report "$LOG"
else
  fail "mount"
fi

# ------------------------------------------------------------------ corrupt predict fields
# rewrite the manifest of rows.wdelta (re-sealing the digest, so only the
# field is wrong) and expect an error, never a crash or wrong bytes
reseal() { # IN OUT PYTHON-EXPR-ON-e (e: the lm_head extent dict)
  "$PY" - "$@" <<'PYEOF'
import hashlib, json, struct, subprocess, sys
src, dst, expr = sys.argv[1:4]
b = open(src, "rb").read()
foot = b[-88:]
moff, mlen, toff, nb, size = struct.unpack("<5Q", foot[:40])
raw, flags = b[moff:moff + mlen], struct.unpack("<I", b[11:15])[0]
if flags & 1:  # a zstd-compressed manifest: expanded, written back plain (flag cleared; both are valid)
    raw = subprocess.run(["zstd", "-dc"], input=raw, stdout=subprocess.PIPE, check=True).stdout
    b = b[:11] + struct.pack("<I", flags & ~1) + b[15:]
m = json.loads(raw)
for f in m["files"]:
    for e in f["extents"]:
        if e.get("tensor") == "lm_head.weight":
            exec(expr)
man = json.dumps(m, separators=(",", ":")).encode()
table = b[toff:toff + 32 * nb]
toff2 = moff + len(man)
size2 = toff2 + len(table) + 88
f40 = struct.pack("<5Q", moff, len(man), toff2, nb, size2)
dig = hashlib.sha256(man + table + f40).digest()
open(dst, "wb").write(b[:moff] + man + table + f40 + dig + bytes(8) + b"wdv2end\0")
PYEOF
}
n=0
for expr in 'e["predict"]["base_dtype"] = "I8"' 'e["predict"]["base_dtype"] = 7' 'e["predict"]["base_length"] = 3' \
            'e["predict"]["base_length"] = -2' 'e["predict"] = "BF16"' 'e["predict"]["base_length"] *= 2' \
            'del e["predict"]' 'e["codec"] = "zstd"'; do
  n=$((n + 1))
  reseal "$SRC/rows.wdelta" "$T/bad$n.wdelta" "$expr" || { fail "reseal $expr"; continue; }
  "$WDELTA" apply -q "$T/bad$n.wdelta" --base "$G/base" -o "$T/bad$n.out" >"$T/bad.txt" 2>&1
  rc=$?
  check "corrupt predict ($expr): apply fails with a message (rc $rc)" \
    bash -c "[ $rc -ne 0 ] && [ $rc -lt 128 ] && [ -s '$T/bad.txt' ] && ! grep -qE '$SAN_RE' '$T/bad.txt'" || cat "$T/bad.txt"
done
reseal "$SRC/rows.wdelta" "$T/same.wdelta" 'pass'
"$WDELTA" apply -q "$T/same.wdelta" --base "$G/base" -o "$T/same.out" >/dev/null 2>"$T/err"
check "the re-sealed manifest unchanged still applies" same_model "$T/same.out" "$T/rows" || cat "$T/err"
finish
