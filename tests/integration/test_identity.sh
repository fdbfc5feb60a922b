#!/bin/bash
# Model identity, errors that name the cause, and the choice of a chain's parent
# (issues 14 items 3-4, 15 item 7):
#  - `wdelta hash` is the same for the same tensors in 1, 2 and 5 shards in any
#    order (`--v1`, deltatensors' parent_hash, is not); a delta made against one
#    sharding applies, verifies and is served through a mount with another;
#  - deltas written before the identity (fixtures/oldv2, made by the previous
#    writer) still open, match their base, rebuild and serve, chain links too;
#  - a chain link copied alone, a wrong base, a wrong base for the mount, a wrong
#    base in a directory of unrelated deltas: the message names the cause and the
#    fix, the exit status is 3 (1 for corrupt data, 2 for usage);
#  - a crafted delta claiming a link's parent's result hash (ranked first) is
#    passed over for the real parent, by apply and by the mount.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
require_python
setup_mount_tmp wdidentity
FX="$REPO/tests/integration/fixtures/oldv2"
RESHARD="$REPO/tests/integration/reshard.py"
PATCH="$REPO/tests/integration/patch_manifest.py"
W=$WDELTA

# rc CMD...: run CMD, output in $T/out, exit status in $RC
rc() { "$@" >"$T/out" 2>&1; RC=$?; }
has() { grep -q -- "$1" "$T/out"; }

gen_pair "$T/g" --params 300k --shards 2 --seed 5 || die "genmodel failed"
gen_pair "$T/o" --params 300k --shards 2 --seed 6 || die "genmodel failed"
for k in 1 2 5; do "$PY" "$RESHARD" "$T/g/base" "$T/b$k" "$k" "$((k + 10))" || die "reshard failed"; done
"$PY" "$RESHARD" "$T/g/base" "$T/b2n" 2 0 || die "reshard failed"

# ---- A: one identity whatever the sharding
h=$("$W" hash "$T/g/base")
check "hash is 64 hex digits" bash -c '[[ "$1" =~ ^[0-9a-f]{64}$ ]]' _ "$h"
for d in b1 b2 b5 b2n; do
  check "hash of the same tensors in $d (shards, order) equals the original's" [ "$("$W" hash "$T/$d")" = "$h" ]
done
check "hash --v1 (deltatensors' parent_hash) depends on the sharding" \
  [ "$("$W" hash --v1 "$T/b1")" != "$("$W" hash --v1 "$T/b5")" ]
check "hash --v1 of a 1-file model is SHA-256(name+bytes in name order)" \
  [ "$("$W" hash --v1 "$T/b1")" = "$("$PY" - "$T/b1/model.safetensors" <<'EOF'
import hashlib, json, struct, sys
d = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", d[:8])[0]
hdr = json.loads(d[8:8 + n])
h = hashlib.sha256()
for k in sorted(x for x in hdr if x != "__metadata__"):
    a, b = hdr[k]["data_offsets"]
    h.update(k.encode() + d[8 + n + a:8 + n + b])
print(h.hexdigest())
EOF
)" ]
check "hash follows FORMAT.md's definition (an independent implementation)" \
  [ "$("$W" hash "$T/b5")" = "$("$PY" - "$T/b5" <<'EOF'
import glob, hashlib, json, os, struct, sys
recs = {}
for f in glob.glob(os.path.join(sys.argv[1], "*.safetensors")):
    d = open(f, "rb").read()
    n = struct.unpack("<Q", d[:8])[0]
    hdr = json.loads(d[8:8 + n])
    for k, v in hdr.items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            recs[k.encode()] = (v["dtype"].encode(), v["shape"], b - a, hashlib.sha256(d[8 + n + a:8 + n + b]).digest())
h = hashlib.sha256(b"wdelta-model-id-2\n" + struct.pack("<Q", len(recs)))
for k in sorted(recs):
    dt, shape, ln, dg = recs[k]
    h.update(struct.pack("<I", len(k)) + k + struct.pack("<I", len(dt)) + dt + struct.pack("<I", len(shape)))
    h.update(b"".join(struct.pack("<Q", s) for s in shape) + struct.pack("<Q", ln) + dg)
print(h.hexdigest())
EOF
)" ]
check "a different model hashes differently" [ "$("$W" hash "$T/o/base")" != "$h" ]
# one byte of one tensor changed: another identity
cp -r "$T/b1" "$T/b1x"
printf '\x01' | dd of="$T/b1x/model.safetensors" bs=1 seek=$(($(stat -c %s "$T/b1x/model.safetensors") - 3)) conv=notrunc 2>/dev/null
check "one changed byte: another identity" [ "$("$W" hash "$T/b1x")" != "$h" ]

create_delta "$T/g/base" "$T/g/ft" "$T/d.wdelta" || die "create failed"
rc "$W" inspect --json "$T/d.wdelta"
check "the delta records the base's identity" has "\"base_hash\":\"$h\""
check "and its result is the fine-tune's identity" has "\"result_hash\":\"$("$W" hash "$T/g/ft")\""
check "  and says both are model identities (kind 2)" \
  bash -c 'grep -q "\"base_hash_kind\":2" "$1" && grep -q "\"result_hash_kind\":2" "$1"' _ "$T/out"
rc "$W" apply "$T/d.wdelta" --base "$T/b5" -o "$T/out5" -q
check "apply against the 5-shard re-save of the base (exit $RC)" [ "$RC" -eq 0 ]
check "  rebuilds the fine-tune byte for byte" same_model "$T/out5" "$T/g/ft"
rc "$W" verify "$T/d.wdelta" --base "$T/b1" -q
check "verify --base the 1-file re-save: exit 0, result hash matches" bash -c '[ "$1" -eq 0 ] && grep -q "result hash .* matches" "$2"' _ "$RC" "$T/out"

# Python's in-memory save (through a one-file temporary base) against a
# sharded base directory: the delta must name that directory's identity
if "$PY" -c 'import numpy' 2>/dev/null; then
  gen_pair "$T/f" --params 200k --shards 3 --dtype f32 --seed 9 || die "genmodel failed"
  pre=""  # a sanitizer-built library needs its runtimes loaded first
  if nm -D "$BIN/libwdelta.so" 2>/dev/null | grep -q __asan_init; then
    for r in libasan.so libubsan.so; do
      p=$(${CC:-cc} -print-file-name=$r 2>/dev/null)
      [ -f "$p" ] && pre="$pre $p"
    done
  fi
  rc env ${pre:+LD_PRELOAD="$pre"} ASAN_OPTIONS="detect_leaks=0" PYTHONPATH="$REPO/python" \
    WDELTA_LIB="$BIN/libwdelta.so" "$PY" - "$T" <<'EOF'
import glob, json, os, struct, sys
import numpy as np
import wdelta
t = sys.argv[1]
def read_dir(d):  # {name: float32 array} of every shard
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        b = open(f, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        for k, v in h.items():
            if k != "__metadata__":
                a, e = v["data_offsets"]
                out[k] = np.frombuffer(b[8 + n + a:8 + n + e], "<f4").reshape(v["shape"])
    return out
wdelta.save_delta(t + "/py.wdelta", read_dir(t + "/f/ft"), read_dir(t + "/f/base"), strategy="lossless",
                  allow_new_tensors=True)  # the fine-tune adds score.weight (refused by default, as deltatensors does)
EOF
  [ "$RC" -eq 0 ] || cat "$T/out"
  check "python save_delta from state dicts (exit $RC)" [ "$RC" -eq 0 ]
  rc "$W" verify "$T/py.wdelta" --base "$T/f/base" -q
  check "  its delta verifies against the 3-shard base directory (exit $RC)" [ "$RC" -eq 0 ]
else
  echo "note: numpy missing; Python save_delta not checked"
fi

# ---- A: deltas written before the identity (the previous writer's files)
rc "$W" inspect --json "$FX/a2.wdelta"
check "old v2 link opens, its hashes read as content hashes (kind 1)" \
  bash -c '[ "$1" -eq 0 ] && grep -q "\"base_hash_kind\":1" "$2" && grep -q "\"result_hash_kind\":1" "$2"' _ "$RC" "$T/out"
rc "$W" apply "$FX/a1.wdelta" --base "$FX/base" -o "$T/fx1" -q
check "old v2 delta applies to its base (exit $RC)" [ "$RC" -eq 0 ]
check "  and rebuilds the model it records (v1 content hash)" \
  [ "$("$W" hash --v1 "$T/fx1")" = "$("$W" inspect --json "$FX/a1.wdelta" | grep -o '"result_hash":"[0-9a-f]*"' | cut -d'"' -f4)" ]
rc "$W" verify "$FX/a2.wdelta" --base "$FX/base" -q
check "old v2 chain verifies, both links' result hashes (exit $RC)" \
  bash -c '[ "$1" -eq 0 ] && [ "$(grep -c "result hash .* matches" "$2")" -eq 2 ]' _ "$RC" "$T/out"
cp "$FX/a1.wdelta" "$T/fxa1.wdelta"
rc "$W" create -q --parent "$T/fxa1.wdelta" --base "$FX/base" --finetuned "$T/fx1" -o "$T/fxnew.wdelta"
check "a new link on an old parent (exit $RC)" [ "$RC" -eq 0 ]
rc "$W" verify "$T/fxnew.wdelta" --base "$FX/base" -q
check "  verifies through the old parent (exit $RC)" [ "$RC" -eq 0 ]

# ---- B: errors that name the cause and the fix
mkdir -p "$T/lone" "$T/ch"
cp "$T/d.wdelta" "$T/ch/p.wdelta"
create_delta "$T/g/base" "$T/o/ft" "$T/ch/child.wdelta" --parent "$T/ch/p.wdelta" || die "create --parent failed"
cp "$T/ch/child.wdelta" "$T/lone/"
rc "$W" apply "$T/lone/child.wdelta" --base "$T/g/base" -o "$T/x1" -q
check "a link copied alone: exit 3 (got $RC)" [ "$RC" -eq 3 ]
check "  says the parent p.wdelta is missing, its depth and --chain" \
  bash -c 'grep -q "missing link" "$1" && grep -q "p.wdelta" "$1" && grep -q "depth 1" "$1" && grep -q -- "--chain DIR" "$1"' _ "$T/out"
check "  names no block" not has "context"
rc "$W" apply "$T/lone/child.wdelta" --base "$T/g/base" --chain "$T/ch" -o "$T/x1" -q
check "  and with --chain DIR it applies (exit $RC)" [ "$RC" -eq 0 ]
rc "$W" inspect --chain "$T/lone/child.wdelta"
check "inspect --chain of the lone link names the missing parent" has "p.wdelta"
check "  and does not call it made against a base model" not has "made against a base model"

rc "$W" apply "$T/d.wdelta" --base "$T/o/base" -o "$T/x2" -q
check "a direct delta with the wrong base: exit 3 (got $RC)" [ "$RC" -eq 3 ]
check "  says wrong base with both identities" \
  bash -c 'grep -q "wrong base" "$1" && grep -q "${2:0:16}" "$1" && grep -q "${3:0:16}" "$1"' _ "$T/out" "$h" "$("$W" hash "$T/o/base")"
check "  decoded nothing (no block named)" not has "block"
rc "$W" verify "$T/d.wdelta" --base "$T/o/base" -q
check "verify with the wrong base: exit 3 (got $RC), wrong base" bash -c '[ "$1" -eq 3 ] && grep -q "wrong base" "$2"' _ "$RC" "$T/out"
# a directory of unrelated deltas, two of them making a loop (a revert pair)
mkdir -p "$T/mix"
cp "$T/d.wdelta" "$T/mix/fwd.wdelta"
create_delta "$T/g/ft" "$T/g/base" "$T/mix/swapped.wdelta" || die "create failed"
rc "$W" apply "$T/mix/fwd.wdelta" --base "$T/o/base" -o "$T/x3" -q
check "wrong base among unrelated deltas: exit 3 (got $RC), wrong base, no chain loop" \
  bash -c '[ "$1" -eq 3 ] && grep -q "wrong base" "$2" && ! grep -q "chain loop" "$2"' _ "$RC" "$T/out"
rc "$W" apply "$T/nonexistent.wdelta" --base "$T/g/base" -o "$T/x4" -q
check "a missing delta file: exit 3 (got $RC)" [ "$RC" -eq 3 ]
rc "$W" apply "$T/d.wdelta" --base "$T/nonexistent" -o "$T/x4" -q
check "a missing base directory: exit 3 (got $RC)" [ "$RC" -eq 3 ]
head -c 3000 "$T/d.wdelta" >"$T/trunc.wdelta"
rc "$W" apply "$T/trunc.wdelta" --base "$T/g/base" -o "$T/x4" -q
check "a truncated delta: exit 1 (got $RC)" [ "$RC" -eq 1 ]
rc "$W" hash --bogus "$T/g/base"
check "a bad option: exit 2 (got $RC)" [ "$RC" -eq 2 ]

# ---- C: a crafted file claims the parent's result hash and ranks first
# the old fixture link a2 records its parent's name (a1.wdelta), not its digest:
# put the real parent under another name and a crafted one under that name
mkdir -p "$T/cr"
cp "$FX/a2.wdelta" "$T/cr/a2.wdelta"
cp "$FX/a1.wdelta" "$T/cr/real-parent.wdelta"
"$PY" "$FX/make_tiny.py" "$T/tiny" || die "make_tiny failed"
create_delta "$FX/base" "$T/tiny/ft2" "$T/evil0.wdelta" || die "create failed"
a1res=$("$W" inspect --json "$FX/a1.wdelta" | grep -o '"result_hash":"[0-9a-f]*"' | cut -d'"' -f4)
a1base=$("$W" inspect --json "$FX/a1.wdelta" | grep -o '"base_hash":"[0-9a-f]*"' | cut -d'"' -f4)
"$PY" "$PATCH" "$T/evil0.wdelta" "$T/cr/a1.wdelta" "result_hash=\"$a1res\"" result_hash_kind=1 \
  "base_hash=\"$a1base\"" base_hash_kind=1 || die "patch failed"
# more crafted copies under other names: whatever the directory order, a
# reader that takes the first claimant is caught
for n in c1 k2 m3 q4 x5; do cp "$T/cr/a1.wdelta" "$T/cr/$n.wdelta"; done
rc "$W" verify "$T/cr/a1.wdelta" --base "$FX/base" -q
check "the crafted a1.wdelta opens and claims the parent's result (verify fails: $RC)" [ "$RC" -ne 0 ]
rc "$W" apply "$T/cr/a2.wdelta" --base "$FX/base" -o "$T/cr-out" -q
check "apply passes over the crafted candidate for the real parent (exit $RC)" [ "$RC" -eq 0 ]
"$W" apply "$FX/a2.wdelta" --base "$FX/base" -o "$T/fx2" -q >/dev/null 2>&1
check "  and rebuilds what the real chain does" same_model "$T/cr-out" "$T/fx2"
rc "$W" verify "$T/cr/a2.wdelta" --base "$FX/base" -q
check "verify names the real parent in the chain" bash -c '[ "$1" -eq 0 ] && grep -q "real-parent.wdelta" "$2"' _ "$RC" "$T/out"
# a new link records its parent's digest: that exact file is taken first
cp "$T/ch/p.wdelta" "$T/ch/zz-copy.wdelta"
rc "$W" verify "$T/ch/child.wdelta" --base "$T/g/base" -q
check "a link with two identical parents takes the one it records (by digest, then name)" \
  bash -c '[ "$1" -eq 0 ] && grep -q "p.wdelta .*child.wdelta" "$2" && ! grep -q zz-copy "$2"' _ "$RC" "$T/out"

# ---- the mount: another sharding, old files, the wrong base, a crafted parent
if [ "$(id -u)" != 0 ] || ! [ -c /dev/fuse ] || ! [ -x "$WDELTAFS" ]; then
  echo "note: the mount checks need root, /dev/fuse and wdeltafs"
  finish
fi
mkdir -p "$SRC/sh" "$SRC/old" "$SRC/cr"
cp "$T/d.wdelta" "$SRC/sh/d.wdelta"
cp "$FX/a1.wdelta" "$FX/a2.wdelta" "$SRC/old/"
cp "$T/cr/"*.wdelta "$SRC/cr/"
cp "$T/d.wdelta" "$SRC/wrongbase.wdelta"
"$PY" "$PATCH" "$T/d.wdelta" "$SRC/wrongbase.wdelta" "base_hash=\"$(printf '%064d' 7)\"" || die "patch failed"
start_watchdog 120
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$T/b5:$FX/base,cache_dir=$T/cache,scan_interval=1"; then
  check "mount: a delta made against 2 shards, served over a 5-shard base" same_model "$MNT/sh/d" "$T/g/ft"
  check "mount: old v2 delta over its base" same_model "$MNT/old/a1" "$T/fx1"
  check "mount: old v2 chain link" same_model "$MNT/old/a2" "$T/fx2"
  check "mount: the crafted candidate is passed over, the link served right" same_model "$MNT/cr/a2" "$T/fx2"
  cat "$MNT/.wdeltafs/status" >"$T/status.json" 2>/dev/null
  check "mount: the wrong base is named with the identity it needs" "$PY" - "$T/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
r = [u["reason"] for u in s.get("unavailable", []) if u["delta"].endswith("wrongbase.wdelta")]
sys.exit(0 if r and "wrong base" in r[0] and "0000000000000007" in r[0] and "model identity" in r[0] else 1)
EOF
  check "mount: status lists each base's identity and v1 hash" "$PY" - "$T/status.json" "$h" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
sys.exit(0 if any(b.get("hash") == sys.argv[2] and len(b.get("hash_v1", "")) == 64 for b in s["bases"]) else 1)
EOF
  unmount_checked "$MNT"
  check "digest cache: identity and v1 lines" \
    bash -c 'f=$(grep -l "$2" "$1"/*.digest) && grep -q "^v1 [0-9a-f]\{64\}$" $f' _ "$T/cache" "$h"
  if mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$T/b1:$FX/base,cache_dir=$T/cache,scan_interval=1"; then
    check "remount over the 1-file base: served right" same_model "$MNT/sh/d" "$T/g/ft"
    check "  old files still served (their v1 hash from the cache)" same_model "$MNT/old/a2" "$T/fx2"
    unmount_checked "$MNT"
  else
    fail "second mount"
  fi
else
  fail "mount"
fi
assert_no_sanitizer_report "$LOG" 2>/dev/null || true
finish
