#!/usr/bin/env bash
# Lossy strategies end to end: for int4, sparse, bitdelta, axis1 and auto,
# on a generated model (bf16 and f32) and on ../shared/models/pairB when
# present: create, inspect shows each tensor's codec and settings, 1-D
# tensors stay lossless, apply rebuilds a model whose content hash is the
# delta's result hash, verify --base passes, eval reports a relative error
# within the codec's bound (table and --json); bad options fail cleanly.
# Then a wdeltafs mount serves every lossy model byte-identical to
# `wdelta apply`'s output.
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_python

setup_mount_tmp lossy
start_watchdog 400

declare -A MAXREL=([int4]=0.22 [sparse]=0.9 [bitdelta]=0.8 [axis1]=0.8 [auto]=0.3)
gen_pair "$T/g16" --params 2M --shards 2 || die "genmodel failed"
gen_pair "$T/g32" --params 1M --dtype f32 --seed 3 || die "genmodel failed"
PAIRS="g16 g32"
declare -A BASEOF=([g16]="$T/g16/base" [g32]="$T/g32/base") FTOF=([g16]="$T/g16/ft" [g32]="$T/g32/ft")
PB="$SHARED/models/pairB"
if [ -d "$PB/base" ] && [ -d "$PB/ft" ]; then
  PAIRS="$PAIRS pairB"; BASEOF[pairB]="$PB/base"; FTOF[pairB]="$PB/ft"
else
  echo "note: SKIP pairB part: $PB absent"
fi

BASES=""
for p in $PAIRS; do
  base=${BASEOF[$p]} ft=${FTOF[$p]}
  BASES="${BASES:+$BASES:}$base"
  mkdir -p "$SRC/$p"
  for s in int4 sparse bitdelta axis1 auto; do
    out="$SRC/$p/$s.wdelta"
    extra=(); [ $s = auto ] && extra=(--max-error 0.25)
    [ $s = int4 ] && extra=(--group-size 32 --outliers 0.005)
    [ $s = sparse ] && extra=(--density 0.05)
    if ! create_delta "$base" "$ft" "$out" --strategy $s "${extra[@]}"; then fail "$p/$s: create"; continue; fi
    pass "$p/$s: create"
    "$WDELTA" inspect --json "$out" >"$T/insp.json" 2>"$T/err" || { fail "$p/$s: inspect"; continue; }
    "$PY" - "$T/insp.json" "$s" >"$T/insp.out" 2>&1 <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1])); s = sys.argv[2]
lossy = {"int4", "sparse", "bitdelta", "axis1", "lowrank"}
n_lossy = 0
for f in j["files"]:
    for e in f["extents"]:
        if not e.get("tensor"): continue
        c = e["codec"]
        if c in lossy:
            n_lossy += 1
            assert "params" in e and e["params"]["cols"] > 0, e
            if s != "auto": assert c == s, (e["tensor"], c)
            if c == "int4" and s == "int4": assert e["params"]["group_size"] == 32 and e["params"]["outliers"] == 0.005 and e["params"]["step"] == 0.6, e
            if c == "sparse" and s == "sparse": assert e["params"]["density"] == 0.05, e
        if "norm" in e["tensor"] or e["tensor"].endswith(".bias"):
            assert c == "lossless", (e["tensor"], c)
assert n_lossy > 0, "no lossy tensor"
assert j["strategy"] == s
print(n_lossy)
PYEOF
    check "$p/$s: inspect: $(tail -n1 "$T/insp.out") lossy tensors with settings, norms/biases lossless" [ $? = 0 ] || cat "$T/insp.out"
    "$WDELTA" inspect "$out" | grep -q " $([ $s = auto ] && echo 'int4\|bitdelta\|axis1\|sparse\|lowrank' || echo $s) " 
    check "$p/$s: inspect text names the codec" [ $? = 0 ]
    rm -rf "$T/out.$p.$s"
    "$WDELTA" apply -q "$out" --base "$base" -o "$T/out.$p.$s" >/dev/null 2>"$T/err"
    check "$p/$s: apply" [ $? = 0 ] || cat "$T/err"
    rh=$("$WDELTA" inspect --json "$out" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["result_hash"])')
    got=$("$WDELTA" hash "$T/out.$p.$s" 2>/dev/null | grep -oE '[0-9a-f]{64}' | head -n1)
    check "$p/$s: rebuilt model's content hash is the result hash" [ "$rh" = "$got" ]
    not same_model "$T/out.$p.$s" "$ft"
    check "$p/$s: the rebuilt model differs from the fine-tune (lossy)" [ $? = 0 ]
    "$WDELTA" verify -q "$out" --base "$base" >"$T/ver" 2>&1
    check "$p/$s: verify --base" [ $? = 0 ] || cat "$T/ver"
    "$WDELTA" eval "$out" --base "$base" --finetuned "$ft" --json >"$T/ev.json" 2>"$T/err" || { fail "$p/$s: eval"; cat "$T/err"; continue; }
    "$PY" - "$T/ev.json" "${MAXREL[$s]}" >"$T/ev.out" 2>&1 <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1])); t = j["total"]
assert 0 < t["rel_error"] <= float(sys.argv[2]), t
assert 0 < t["bits_per_param"] < 16 and t["file_bits_per_param"] >= t["bits_per_param"], t
for x in j["tensors"]:
    if x["codec"] == "lossless": assert x["rel_error"] == 0 and x["max_abs_error"] == 0, x
print("rel %.4f, %.3f bits/param" % (t["rel_error"], t["bits_per_param"]))
PYEOF
    check "$p/$s: eval --json: $(tail -n1 "$T/ev.out")" [ $? = 0 ] || cat "$T/ev.out"
    "$WDELTA" eval "$out" --base "$base" --finetuned "$ft" >"$T/ev.txt" 2>&1
    check "$p/$s: eval table has a total line" grep -q '^total (tensor blocks)' "$T/ev.txt"
  done
done

# bad options: one clear line, no output left
g=$T/g16
expect() { # DESC CMD...
  local desc=$1; shift
  "$@" >/dev/null 2>"$T/err"; local rc=$?
  if [ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q '^wdelta: ' "$T/err" && [ ! -e "$T/bad.wdelta" ]; then
    pass "$desc -> $(cat "$T/err")"
  else fail "$desc (exit $rc)"; cat "$T/err"; fi
}
expect "unknown strategy" "$WDELTA" create -q -b "$g/base" -f "$g/ft" -o "$T/bad.wdelta" -s int3
expect "auto without --max-error" "$WDELTA" create -q -b "$g/base" -f "$g/ft" -o "$T/bad.wdelta" -s auto
expect "odd group size" "$WDELTA" create -q -b "$g/base" -f "$g/ft" -o "$T/bad.wdelta" -s int4 --group-size 33
expect "density 0" "$WDELTA" create -q -b "$g/base" -f "$g/ft" -o "$T/bad.wdelta" -s sparse --density 0
expect "outliers > 1" "$WDELTA" create -q -b "$g/base" -f "$g/ft" -o "$T/bad.wdelta" -s int4 --outliers 2
expect "eval without --finetuned" "$WDELTA" eval "$SRC/g16/int4.wdelta" --base "$g/base"
expect "eval against the wrong fine-tune" "$WDELTA" eval "$SRC/g16/int4.wdelta" --base "$g/base" --finetuned "$T/g32/ft"

# ---------------------------------------------------------------- the mount
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then finish; fi
mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$BASES,cache_size=16M,cache_dir=$T/cache" && pass "mounted" || { fail "mount"; finish; }
for p in $PAIRS; do
  for s in int4 sparse bitdelta axis1 auto; do
    [ -d "$T/out.$p.$s" ] || continue
    bad=0 n=0
    for f in "$T/out.$p.$s"/*; do
      n=$((n + 1))
      cmp "$f" "$MNT/$p/$s/$(basename "$f")" >"$T/cmp" 2>&1 || { bad=1; sed 's/^/      /' "$T/cmp"; }
    done
    check "$p/$s: $n files read through the mount equal wdelta apply's" [ $bad = 0 -a $n -gt 0 ]
  done
done
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "daemon log"
finish
