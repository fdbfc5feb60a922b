#!/usr/bin/env bash
# `make bench`, third part: quality of the lossy codecs on pairB (or on
# QUALITY_PAIR, another pair under ../shared/models, e.g. pairS: a pure-bf16
# fine-tune; eval-pre is measured where the pair has it).
# Every delta (ours at a few settings, and the v1 reference files in
# ../shared/vectors/v1/pairB) is mounted with wdeltafs and the rebuilt model
# is READ THROUGH THE MOUNT to compute its perplexity on eval-ft.npy and
# eval-pre.npy (first 32768 tokens, ../shared/tools/qwen2ppl.py), next to the
# fine-tune's own.  Prints a markdown table; writes it and a PNG plot of the
# perplexity increase against bits/param to QUALITY_OUT (default: the temp dir).
# Needs /usr/bin/python3 with Debian python3-torch and python3-numpy
# (installed through tools/deps.sh when missing; skipped if that fails).
# Env: WDELTA_BIN (default build), QUALITY_OUT, QUALITY_TOKENS (default 32768),
#      QUALITY_SETS ("full" default, "quick": fewer settings),
#      QUALITY_PAIR (default pairB)
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta"
WDELTAFS="$BIN/wdeltafs"
SHARED="$REPO/../shared"
PB="$SHARED/models/${QUALITY_PAIR:-pairB}"
PY=/usr/bin/python3
NTOK="${QUALITY_TOKENS:-32768}"
say() { echo "quality: $*" >&2; }

[ -d "$PB/base" ] && [ -d "$PB/ft" ] || { say "$PB absent; skipping"; exit 0; }
[ -f "$SHARED/tools/qwen2ppl.py" ] || { say "$SHARED/tools/qwen2ppl.py absent; skipping"; exit 0; }
if ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
  EXTRA_PKGS="python3-torch python3-numpy libopenblas0-pthread" bash "$REPO/tools/deps.sh" >&2 || true
fi
"$PY" -c 'import torch, numpy' 2>/dev/null || { say "python3-torch/numpy unavailable; skipping"; exit 0; }
command -v fusermount3 >/dev/null && [ -e /dev/fuse ] || { say "FUSE unavailable; skipping"; exit 0; }

W=$(mktemp -d "${TMPDIR:-/tmp}/wdelta-quality.XXXXXX")
OUT="${QUALITY_OUT:-$W}"
mkdir -p "$OUT" "$W/src" "$W/mnt"
DPID=""
cleanup() {
  timeout 5 mountpoint -q "$W/mnt" 2>/dev/null && { fusermount3 -u "$W/mnt" 2>/dev/null || fusermount3 -uz "$W/mnt"; }
  [ -n "$DPID" ] && wait "$DPID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

# NAME|CODEC|SETTING|create args (ours), then the v1 reference files
SETS=(
  "lossless|lossless|exact|-s lossless"
  "int4|int4|default: group 128, step 0.6 rms, 0.2% outliers|-s int4"
  "int4-s05|int4|step 0.5 rms|-s int4 --step 0.5"
  "int4-s07|int4|step 0.7 rms|-s int4 --step 0.7"
  "int4-s10|int4|step 1.0 rms|-s int4 --step 1.0"
  "int4-ls64|int4|group 64, least-squares scales (--step 0)|-s int4 --group-size 64 --step 0"
  "sparse-10|sparse|density 0.1|-s sparse --density 0.1"
  "sparse-03|sparse|density 0.03|-s sparse --density 0.03"
  "bitdelta|bitdelta|row scale|-s bitdelta"
  "axis1|axis1|row x column scales|-s axis1"
  "ternary|ternary|zero-aware, row scale|-s ternary"
  "auto-02|auto|max error 0.2|-s auto --max-error 0.2"
)
[ "${QUALITY_SETS:-full}" = quick ] && SETS=("${SETS[0]}" "${SETS[1]}" "${SETS[8]}" "${SETS[9]}")
for s in "${SETS[@]}"; do
  IFS='|' read -r name codec setting args <<<"$s"
  say "create $name ($args)"
  # shellcheck disable=SC2086
  "$WDELTA" create -q -b "$PB/base" -f "$PB/ft" -o "$W/src/$name.wdelta" $args >/dev/null || { say "create $name failed"; exit 1; }
done
V1="$SHARED/vectors/v1/${QUALITY_PAIR:-pairB}"
for v in int4 quantized sparse; do
  [ -f "$V1/$v.wdelta" ] && cp "$V1/$v.wdelta" "$W/src/v1-$v.wdelta"
done

"$WDELTAFS" "$W/src" "$W/mnt" -f -o "base=$PB/base,cache_size=64M" 2>"$W/daemon.log" &
DPID=$!
for i in $(seq 300); do timeout 2 mountpoint -q "$W/mnt" && break; sleep 0.1; done
timeout 2 mountpoint -q "$W/mnt" || { say "mount failed"; cat "$W/daemon.log" >&2; exit 1; }

params=$("$WDELTA" eval "$W/src/lossless.wdelta" -b "$PB/base" -f "$PB/ft" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["total"]["params"])')
ppl() { # DIR EVAL
  "$PY" -c 'import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import qwen2ppl; print("%.5f" % qwen2ppl.ppl(sys.argv[2], np.load(sys.argv[3]), int(sys.argv[4])))' \
    "$SHARED/tools" "$1" "$2" "$NTOK"
}
RES="$OUT/quality.tsv"
printf 'name\tcodec\tsetting\tbits_file\tbits_tensors\trel_error\tppl_ft\tppl_pre\n' >"$RES"
say "fine-tune itself"
ft_ft=$(ppl "$PB/ft" "$PB/eval-ft.npy"); ft_pre=-
[ -f "$PB/eval-pre.npy" ] && ft_pre=$(ppl "$PB/ft" "$PB/eval-pre.npy")
printf 'fine-tune\tnone (bf16)\t-\t16\t16\t0\t%s\t%s\n' "$ft_ft" "$ft_pre" >>"$RES"
for f in "$W"/src/*.wdelta; do
  name=$(basename "$f" .wdelta)
  codec="" setting=""
  for s in "${SETS[@]}"; do IFS='|' read -r n c st a <<<"$s"; [ "$n" = "$name" ] && codec=$c setting=$st; done
  bits_file=$(awk -v s="$(stat -c %s "$f")" -v p="$params" 'BEGIN { printf "%.3f", s * 8 / p }')
  bits_t="-" rel="-"
  if [ -z "$codec" ]; then
    codec="v1 ${name#v1-}"; setting="deltatensors reference"
  else
    read -r bits_t rel < <("$WDELTA" eval "$f" -b "$PB/base" -f "$PB/ft" --json |
      "$PY" -c 'import json,sys; t=json.load(sys.stdin)["total"]; print("%.3f %.4f" % (t["bits_per_param"], t["rel_error"]))')
  fi
  say "$name: perplexity through the mount ($W/mnt/$name)"
  a=$(ppl "$W/mnt/$name" "$PB/eval-ft.npy") || { say "$name: failed"; tail "$W/daemon.log" >&2; exit 1; }
  b=-
  if [ -f "$PB/eval-pre.npy" ]; then b=$(ppl "$W/mnt/$name" "$PB/eval-pre.npy") || exit 1; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$codec" "$setting" "$bits_file" "$bits_t" "$rel" "$a" "$b" >>"$RES"
done
fusermount3 -u "$W/mnt"; wait "$DPID"; DPID=""

"$PY" "$REPO/tests/bench/quality_report.py" "$RES" "$OUT/lossy_quality.png" "$NTOK" | tee "$OUT/quality.md"
say "table: $OUT/quality.md, plot: $OUT/lossy_quality.png"
