#!/usr/bin/env bash
# The low-rank predictor end to end on ../shared/models/pairLoRA (a rank-8
# LoRA merged into pairB's base; skipped when absent): the lossless strategy
# picks lowrank-exact for the attention projections (inspect shows the codec
# and rank 8), reaches 15x or better, and apply and a wdeltafs mount give the
# fine-tune byte for byte; --no-lowrank is larger; --strategy lowrank stays
# within 0.25 bits/param and the mount serves what apply rebuilds.
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta wdeltafs
require_python

PL="$SHARED/models/pairLoRA"
[ -d "$PL/ft" ] && [ -e "$PL/base" ] || skip "$PL absent (needs ../shared/models/pairLoRA)"
if [ -d "$PL/base" ]; then BASE="$PL/base"; else BASE="$PL/$(cat "$PL/base")"; fi
[ -d "$BASE" ] || skip "pairLoRA's base $BASE absent"
FT="$PL/ft"

setup_mount_tmp lowrank
start_watchdog 500
mkdir -p "$SRC/pairLoRA"
ftsize=$(cat "$FT"/* | wc -c)

ratio() { awk -v a="$ftsize" -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.2f", a / b }'; }

LL="$SRC/pairLoRA/lossless.wdelta"
create_delta "$BASE" "$FT" "$LL" && pass "lossless create" || { fail "lossless create"; finish; }
r=$(ratio "$LL")
check "lossless ratio $r >= 15" awk -v r="$r" 'BEGIN { exit !(r >= 15) }'
"$WDELTA" inspect --json "$LL" >"$T/insp.json" 2>"$T/err"
"$PY" - "$T/insp.json" >"$T/insp.out" 2>&1 <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
n = 0
for f in j["files"]:
    for e in f["extents"]:
        t = e.get("tensor")
        if not t: continue
        if "self_attn" in t and t.endswith("proj.weight"):
            assert e["codec"] == "lowrank-exact", (t, e["codec"])
            assert e["params"]["rank"] == 8, (t, e["params"])
            n += 1
        elif "mlp" in t or "norm" in t:
            assert e["codec"] == "lossless", (t, e["codec"])
assert n > 0
print(n)
PYEOF
check "inspect: $(tail -n1 "$T/insp.out") attention projections lowrank-exact at rank 8, MLP and norms lossless" [ $? = 0 ] || cat "$T/insp.out"
"$WDELTA" inspect "$LL" | grep -q 'lowrank-exact.*"rank":8'
check "inspect text shows codec and rank" [ $? = 0 ]
"$WDELTA" apply -q "$LL" --base "$BASE" -o "$T/out.ll" >/dev/null 2>"$T/err"
check "lossless apply" [ $? = 0 ] || cat "$T/err"
check "lossless apply is byte-identical to the fine-tune" same_model "$T/out.ll" "$FT"
"$WDELTA" verify -q "$LL" --base "$BASE" >"$T/ver" 2>&1
check "verify --base" [ $? = 0 ] || cat "$T/ver"

create_delta "$BASE" "$FT" "$T/plain.wdelta" --no-lowrank && pass "--no-lowrank create" || fail "--no-lowrank create"
r0=$(ratio "$T/plain.wdelta")
check "--no-lowrank ratio $r0 < lowrank's $r" awk -v a="$r0" -v b="$r" 'BEGIN { exit !(a < b) }'
! "$WDELTA" inspect "$T/plain.wdelta" | grep -qE ' lowrank(-exact)? '
check "--no-lowrank: no lowrank codec" [ $? = 0 ]

LR="$SRC/pairLoRA/lowrank.wdelta"
create_delta "$BASE" "$FT" "$LR" --strategy lowrank && pass "lowrank create" || { fail "lowrank create"; finish; }
"$WDELTA" eval "$LR" --base "$BASE" --finetuned "$FT" --json >"$T/ev.json" 2>"$T/err"
"$PY" - "$T/ev.json" >"$T/ev.out" 2>&1 <<'PYEOF'
import json, sys
t = json.load(open(sys.argv[1]))["total"]
assert t["file_bits_per_param"] <= 0.25, t
assert 0 < t["rel_error"] < 0.05, t
print("%.3f bits/param (whole file), rel. error %.4f" % (t["file_bits_per_param"], t["rel_error"]))
PYEOF
check "lowrank eval: $(tail -n1 "$T/ev.out")" [ $? = 0 ] || cat "$T/ev.out"
"$WDELTA" inspect "$LR" | grep -q ' lowrank .*"rank":8'
check "lowrank inspect shows rank 8" [ $? = 0 ]
"$WDELTA" apply -q "$LR" --base "$BASE" -o "$T/out.lr" >/dev/null 2>"$T/err"
check "lowrank apply" [ $? = 0 ] || cat "$T/err"
expect_err() { "$@" >/dev/null 2>"$T/err"; [ $? -ne 0 ] && grep -q '^wdelta: ' "$T/err"; }
check "--rank 0 rejected" expect_err "$WDELTA" create -q -b "$BASE" -f "$FT" -o "$T/bad.wdelta" -s lowrank --rank 0
check "--strategy lowrank-exact rejected" expect_err "$WDELTA" create -q -b "$BASE" -f "$FT" -o "$T/bad.wdelta" -s lowrank-exact
check "nothing left under the bad output name" [ ! -e "$T/bad.wdelta" ]

# ---------------------------------------------------------------- the mount
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then finish; fi
mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$BASE,cache_size=16M,cache_dir=$T/cache" && pass "mounted" || { fail "mount"; finish; }
check "mount: lossless pairLoRA byte-identical to the fine-tune" same_model "$MNT/pairLoRA/lossless" "$FT"
check "mount: lowrank pairLoRA equals wdelta apply's output" same_model "$MNT/pairLoRA/lowrank" "$T/out.lr"
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "daemon log"
finish
