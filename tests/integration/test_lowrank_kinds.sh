#!/usr/bin/env bash
# Merged LoRA of several ranks (issue 21) on a generated bf16 model: a base
# of 256- and 1024-wide projections, and fine-tunes bf16(base + B.A) of rank
# 4, 24 and 48 on every projection (the 1024 x 1536 one is larger than the
# default 1 MiB block, so its low-rank extent takes one larger block).
# Lossless create picks lowrank-exact at the rank of the LoRA for every
# projection (inspect), is well below --no-lowrank's size, and apply and a
# wdeltafs mount give the fine-tune byte for byte; --strategy lowrank
# finds the same rank; a full-rank delta stays on the plain lossless codec.
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta wdeltafs
require_python
"$PY" -c 'import numpy' 2>/dev/null || skip "numpy missing (Debian python3-numpy)"

setup_mount_tmp lowrank_kinds
start_watchdog 500

# gen OUT RANK SEED: RANK 0 writes the base, -1 a full-rank delta
# (tests/integration/lora_pair.py; the base from seed 7)
TENSORS='[["model.layers.0.self_attn.q_proj.weight", [256, 256]], ["model.layers.0.mlp.up_proj.weight", [512, 256]],
   ["model.layers.0.mlp.down_proj.weight", [256, 512]], ["model.layers.1.mlp.up_proj.weight", [1536, 1024]],
   ["model.norm.weight", [256]]]'
LORA_PAIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lora_pair.py"
gen() { "$PY" "$LORA_PAIR" "$1" "$2" "$3" 7 "" "$TENSORS"; }

BASE="$T/base"
gen "$BASE" 0 1 || die "generating the base"

# rank_check FILE RANK CODEC: every projection has CODEC at rank RANK
rank_check() {
  "$WDELTA" inspect --json "$1" >"$T/insp.json" 2>"$T/err" || { cat "$T/err"; return 1; }
  "$PY" - "$T/insp.json" "$2" "$3" <<'PYEOF'
import json, sys
j, want, codec = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
n = 0
for f in j["files"]:
    for e in f["extents"]:
        t = e.get("tensor")
        if not t or not t.endswith("proj.weight"): continue
        assert e["codec"] == codec and e["params"]["rank"] == want, (t, e["codec"], e.get("params"))
        n += 1
assert n == 4, n
PYEOF
}

mkdir -p "$SRC/kinds"
# lossless at least this many times smaller than --no-lowrank (the factors
# alone cost 2 r (m + n) bytes against 2 m n of the tensor)
declare -A GAIN=([4]=4 [24]=2 [48]=1.4)
for r in 4 24 48; do
  FT="$T/ft$r"
  gen "$FT" "$r" "$r" || die "generating rank $r"
  LL="$SRC/kinds/r$r.wdelta"
  create_delta "$BASE" "$FT" "$LL" && pass "rank $r: lossless create" || { fail "rank $r: create"; continue; }
  create_delta "$BASE" "$FT" "$T/nl$r.wdelta" --no-lowrank || fail "rank $r: --no-lowrank create"
  a=$(stat -c %s "$LL") b=$(stat -c %s "$T/nl$r.wdelta")
  check "rank $r: lossless $a bytes, --no-lowrank $b: at least ${GAIN[$r]}x smaller" \
    awk -v a="$a" -v b="$b" -v g="${GAIN[$r]}" 'BEGIN { exit !(b >= g * a) }'
  check "rank $r: inspect shows lowrank-exact at rank $r for every projection" rank_check "$LL" "$r" lowrank-exact
  "$WDELTA" apply -q "$LL" --base "$BASE" -o "$T/out$r" >/dev/null 2>"$T/err"
  check "rank $r: apply" [ $? = 0 ] || cat "$T/err"
  check "rank $r: apply is byte-identical to the fine-tune" same_model "$T/out$r" "$FT"
done
"$WDELTA" inspect --json "$SRC/kinds/r24.wdelta" | "$PY" -c '
import json, sys
for f in json.load(sys.stdin)["files"]:
    for e in f["extents"]:
        if e.get("tensor") == "model.layers.1.mlp.up_proj.weight":
            assert e["block_size"] == 1536 * 1024 * 2, e["block_size"]
' 2>"$T/err"
check "the 3 MiB projection is one low-rank block" [ $? = 0 ] || cat "$T/err"

create_delta "$BASE" "$T/ft24" "$SRC/kinds/lossy24.wdelta" --strategy lowrank && pass "rank 24: lowrank create" ||
  fail "rank 24: lowrank create"
check "rank 24: --strategy lowrank finds rank 24" rank_check "$SRC/kinds/lossy24.wdelta" 24 lowrank

gen "$T/full" -1 5 || die "generating a full-rank delta"
create_delta "$BASE" "$T/full" "$T/full.wdelta" && pass "full-rank delta: create" || fail "full-rank delta: create"
! "$WDELTA" inspect "$T/full.wdelta" | grep -q 'lowrank-exact'
check "full-rank delta: no lowrank-exact" [ $? = 0 ]

# ---------------------------------------------------------------- the mount
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then finish; fi
mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$BASE,cache_size=16M,cache_dir=$T/cache" && pass "mounted" || { fail "mount"; finish; }
for r in 4 24 48; do
  check "mount: rank $r byte-identical to the fine-tune" same_model "$MNT/kinds/r$r" "$T/ft$r"
done
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "daemon log"
finish
