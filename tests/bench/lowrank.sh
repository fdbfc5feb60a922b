#!/usr/bin/env bash
# `make bench` part: the low-rank predictor on ../shared/models/pairLoRA (a
# rank-8 LoRA merged into pairB's base; skipped with a message when absent).
# Markdown table: ratio, bits/param (whole file over the model's parameters),
# perplexity (../shared/tools/qwen2ppl.py on eval-ft.npy, first 32768 tokens,
# of the model `wdelta apply` rebuilds; lossless rows are byte-identical to
# the fine-tune, checked, so they share its perplexity) and single-core decode
# MB/s (block path; codec alone) next to the reference figures of issue 8
# (naive XOR + zstd, deltatensors v1 int4 and quantized), which are quoted,
# not re-measured.
# Env: WDELTA_BIN (default build), BENCH_DIR (default a temp dir, removed).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta"
SHARED="$REPO/../shared"
PL="$SHARED/models/pairLoRA"
if [ ! -d "$PL/ft" ] || [ ! -e "$PL/base" ]; then echo "bench: $PL absent; skipping the low-rank table" >&2; exit 0; fi
if [ -d "$PL/base" ]; then BASE="$PL/base"; else BASE="$PL/$(cat "$PL/base")"; fi
FT="$PL/ft"
if [ -n "${BENCH_DIR:-}" ]; then W="$BENCH_DIR/lowrank"; mkdir -p "$W"
else W=$(mktemp -d "${TMPDIR:-/tmp}/wdelta-lowrank.XXXXXX"); trap 'rm -rf "$W"' EXIT; fi
PY=/usr/bin/python3
PPLTOOL="$SHARED/tools/qwen2ppl.py"
ppl() { # MODEL_DIR -> perplexity or "n/a"
  if [ -x "$PY" ] && [ -f "$PPLTOOL" ] && [ -f "$PL/eval-ft.npy" ]; then
    "$PY" "$PPLTOOL" "$1" "$PL/eval-ft.npy" 32768 2>/dev/null | tail -n1 || echo n/a
  else echo n/a; fi
}
ftb=$(find "$FT" -maxdepth 1 -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
np=""
echo "bench: pairLoRA: perplexity of the fine-tune" >&2
PFT=$(ppl "$FT")
ROWS=()
row() { # NAME ARGS...
  local name=$1; shift
  local d="$W/$name.wdelta"
  echo "bench: pairLoRA: $name" >&2
  "$WDELTA" create -q -b "$BASE" -f "$FT" -o "$d" --force "$@" >/dev/null
  [ -n "$np" ] || np=$("$WDELTA" eval "$d" -b "$BASE" -f "$FT" --json | grep -oE '"params":[0-9]+' | tail -n1 | cut -d: -f2)
  rm -rf "$W/out"
  "$WDELTA" apply -q "$d" --base "$BASE" -o "$W/out" >/dev/null
  local exact=yes f p codec=""
  for f in "$FT"/*; do cmp -s "$f" "$W/out/$(basename "$f")" || exact=no; done
  if [ $exact = yes ]; then p=$PFT; else p=$(ppl "$W/out"); fi
  case "$name" in lossless) codec=lowrank-exact ;; lowrank) codec=lowrank ;; *) codec=lossless ;; esac
  local full alone
  read -r full alone < <("$REPO/build/decode_speed" "$d" "$BASE" 10 "$codec")
  ROWS+=("$(awk -v n="$name" -v sz="$(stat -c %s "$d")" -v ftb="$ftb" -v np="$np" -v p="$p" -v pf="$PFT" \
      -v f="$full" -v a="$alone" -v c="$codec" -v e="$exact" 'BEGIN {
      rel = (p != "n/a" && pf != "n/a") ? sprintf(" (%+.3f%%)", (p / pf - 1) * 100) : ""
      printf "| wdelta %s | %.2fx | %.3f | %s%s | %s | %s: %s / %s |", n, ftb / sz, sz * 8 / np, p, rel, e, c, f, a }')")
  rm -rf "$W/out"
}
row lossless
row lossless-no-lowrank --no-lowrank
row lowrank --strategy lowrank
echo
echo "pairLoRA (rank-8 LoRA merged into pairB's base, bf16, $np parameters); fine-tune perplexity $PFT"
echo
echo "| method | ratio | bits/param | perplexity | exact | decode MB/s, 1 core: codec: block path / codec alone |"
echo "| --- | ---: | ---: | ---: | --- | --- |"
echo "| naive XOR + byte split + zstd -3 (issue 8, quoted) | 6.3x | | | yes | |"
echo "| deltatensors v1 int4 (issue 8, quoted) | | 4.80 | 2.32067 (+0.44%) | no | |"
echo "| deltatensors v1 quantized (issue 8, quoted) | | 1.06 | 2.75263 (+19%) | no | |"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
