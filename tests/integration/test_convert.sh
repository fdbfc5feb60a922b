#!/usr/bin/env bash
# wdelta convert: every deltatensors v1 file in ../shared/vectors/v1 (skipped
# with a message when absent) becomes a version 2 delta whose rebuilt files
# are byte-identical to what `wdelta apply` writes from the v1 file, in the
# float32 presentation and (--base-dtype) in the base's dtype; errors for a
# v2 input and a wrong base leave nothing under the output name.
# Env: WDELTA_BIN = directory holding wdelta (default build-asan).
# Exit: 0 pass, 77 skip, 1 fail.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
V="$SHARED/vectors/v1"
[ -d "$V" ] || skip "$V absent (the deltatensors v1 vectors are in ../shared)"
setup_tmp wdelta-convert
W="$WDELTA"

n=0
for set in synth-f32 synth-bf16 pairB; do
  [ -d "$V/$set" ] || { echo "note: $V/$set absent"; continue; }
  if [ "$set" = pairB ]; then base="$SHARED/models/pairB/base"; else base="$V/$set/base"; fi
  [ -d "$base" ] || { echo "note: SKIP $set: base $base absent"; continue; }
  for f in "$V/$set"/*.wdelta; do
    name="$set/$(basename "$f" .wdelta)"
    for mode in float32 base-dtype; do
      flag=(); [ $mode = base-dtype ] && flag=(--base-dtype)
      o="$T/$set-$(basename "$f" .wdelta)-$mode"
      rm -rf "$o.v1out" "$o.v2out" "$o.wdelta"
      if "$W" apply "$f" --base "$base" -o "$o.v1out" "${flag[@]}" --quiet >/dev/null 2>"$T/err" &&
         "$W" convert "$f" --base "$base" -o "$o.wdelta" "${flag[@]}" --quiet >/dev/null 2>>"$T/err" &&
         "$W" apply "$o.wdelta" --base "$base" -o "$o.v2out" --quiet >/dev/null 2>>"$T/err" &&
         same_model "$o.v2out" "$o.v1out" && same_model "$o.v1out" "$o.v2out"; then
        pass "$name ($mode): converted v2 rebuilds exactly what apply of the v1 file writes ($(ls "$o.v1out" | wc -l) files)"
      else
        fail "$name ($mode)"; sed 's/^/      | /' "$T/err" | head -5
      fi
      n=$((n + 1))
      rm -rf "$o.v1out" "$o.v2out" "$o.wdelta"
    done
  done
done
[ $n -gt 0 ] || skip "no v1 vectors found under $V"
# errors
gen_pair "$T/g" --params 1M || die "genmodel failed"
create_delta "$T/g/base" "$T/g/ft" "$T/v2.wdelta" || die "create failed"
check "convert refuses a version 2 input" not "$W" convert "$T/v2.wdelta" --base "$T/g/base" -o "$T/out.wdelta"
f=$(ls "$V"/synth-f32/*.wdelta 2>/dev/null | head -1)
if [ -n "$f" ]; then
  "$W" convert "$f" --base "$T/g/base" -o "$T/out.wdelta" >/dev/null 2>"$T/err"; rc=$?
  check "convert against the wrong base: exit 3, wrong base named" \
    bash -c '[ "$1" = 3 ] && grep -q "wrong base" "$2"' _ "$rc" "$T/err"
fi
check "nothing left under the output name" not ls "$T"/out.wdelta*
finish
