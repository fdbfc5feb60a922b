#!/usr/bin/env bash
# `make bench`, issue 18's create part: `wdelta create` (default strategy,
# all CPUs) of ~1 GB pairs against `zstd -3 -T0` of the same fine-tune, runs
# interleaved, median of BENCH_CREATE_REPS, as one markdown table with CPU
# use ((user + sys) / wall, from /usr/bin/time) beside each time:
#   - a full fine-tune: ../shared/models/pairB tiled (tests/bench/tile.py)
#     BENCH_CREATE_TILES times into one file (default 48: 1.01 GB), base and
#     fine-tune alike; without ../shared a build/genmodel pair of
#     BENCH_CREATE_PARAMS (default 500M) parameters;
#   - a merged LoRA: ../shared/tools/mklora.py (rank BENCH_CREATE_RANK,
#     default 16, every projection) on that base; the row says how many
#     tensors the low-rank predictor took (lowrank-exact in `wdelta inspect`);
#   - `create --no-lowrank` beside the default, so the low-rank trial's cost
#     shows; and the output ratios (they must not drop);
#   - create takes its base's hashes from the digest cache (the one the
#     mount and find-base keep): each round's first create runs with the
#     base's entry removed (it hashes the base, as the first delta from a
#     base does), the others with it (later deltas from the same base).
# Env: WDELTA_BIN (default build), BENCH_CREATE=0 skips, BENCH_CREATE_DIR
# keeps the pairs there (reused when present).  Needs zstd and /usr/bin/time
# (Debian packages zstd, time) and numpy for mklora.py (python3-numpy).
# About 3-5 minutes here.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta" GENMODEL="$BIN/genmodel"
SHARED="$REPO/../shared"
REPS="${BENCH_CREATE_REPS:-3}"
TILES="${BENCH_CREATE_TILES:-48}"
RANK="${BENCH_CREATE_RANK:-16}"
PARAMS="${BENCH_CREATE_PARAMS:-500M}"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)
say() { echo "bench-create: $*" >&2; }
[ "${BENCH_CREATE:-}" = 0 ] && { say "BENCH_CREATE=0: skipping"; exit 0; }
for b in "$WDELTA" "$GENMODEL"; do [ -x "$b" ] || { say "$b is not built (make all); skipping"; exit 0; }; done
command -v zstd >/dev/null || { say "zstd missing (apt-get install zstd): skipping"; exit 0; }
[ -x /usr/bin/time ] || { say "/usr/bin/time missing (apt-get install time): skipping"; exit 0; }

if [ -n "${BENCH_CREATE_DIR:-}" ]; then W="$BENCH_CREATE_DIR"; mkdir -p "$W"; KEEP=1
else W=$(mktemp -d "${TMPDIR:-/tmp}/wdelta-create.XXXXXX"); KEEP=0; fi
if [ -d /dev/shm ] && [ -w /dev/shm ]; then T=$(mktemp -d /dev/shm/wdelta-create.XXXXXX); else T="$W/out"; mkdir -p "$T"; fi
cleanup() { rm -rf "$T"; [ $KEEP = 1 ] || rm -rf "$W"; }
trap cleanup EXIT

# ------------------------------------------------------------------ the pairs
if [ -d "$W/full/base" ] && [ -d "$W/full/ft" ]; then
  say "reusing $W/full"
elif [ -d "$SHARED/models/pairB/base" ]; then
  say "tiling pairB $TILES times (base and fine-tune)"
  for s in base ft; do "$PY" "$REPO/tests/bench/tile.py" "$SHARED/models/pairB/$s" "$W/full/$s" "$TILES" || exit 1; done
  FULLNAME="pairB tiled ${TILES}x (a full fine-tune)"
else
  say "no ../shared: a $PARAMS-parameter genmodel pair"
  "$GENMODEL" "$W/full" --params "$PARAMS" --shards 1 --dtype bf16 --seed 7 >/dev/null || exit 1
  FULLNAME="genmodel $PARAMS (synthetic)"
fi
FULLNAME="${FULLNAME:-full fine-tune}"
LORA_OK=1
if [ ! -d "$W/lora" ]; then
  if [ -f "$SHARED/tools/mklora.py" ] && "$PY" -c "import numpy" 2>/dev/null; then
    say "a rank-$RANK merged LoRA of that base (mklora.py)"
    "$PY" "$SHARED/tools/mklora.py" "$W/full/base" "$W/lora" --rank "$RANK" --seed 5 >/dev/null || LORA_OK=0
  else
    say "no ../shared/tools/mklora.py or numpy: no merged-LoRA row"; LORA_OK=0
  fi
fi

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# run LOG CMD...: appends "wall cpu" to LOG
run() {
  local log=$1; shift
  /usr/bin/time -f "%e %U %S" -o "$T/t" "$@" >/dev/null 2>"$T/err" || { say "failed: $*"; cat "$T/err" >&2; return 1; }
  awk '{ printf "%s %.3f\n", $1, $2 + $3 }' "$T/t" >>"$log"
}
col() { awk -v c="$1" '{ print $c }' "$2" | median; }
# the digest cache's entry for base directory $1 (core/model/digest_cache.c:
# its first line starts with the canonical path and "|"), removed
CACHE_DIR=/var/cache/wdeltafs
[ "$(id -u)" = 0 ] || CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/wdeltafs"
forget_base() {
  local d f
  d=$(cd "$1" && pwd -P)
  for f in "$CACHE_DIR"/base-*.digest; do
    [ -f "$f" ] && head -n 1 "$f" | grep -qF "$d|" && rm -f "$f"
  done
  return 0
}
ROWS=()
bench_pair() { # NAME BASE FT TARGET
  local name=$1 base=$2 ft=$3 target=$4 f r
  f=$(ls "$ft"/*.safetensors | head -n 1)
  : >"$T/cr"; : >"$T/c1"; : >"$T/nl"; : >"$T/zs"
  for r in $(seq "$REPS"); do
    say "$name: round $r of $REPS"
    cat "$base"/*.safetensors "$ft"/*.safetensors >/dev/null
    rm -f "$T/c.wdelta" "$T/n.wdelta" "$T/z.zst"
    forget_base "$base"
    run "$T/c1" "$WDELTA" create -q --base "$base" --finetuned "$ft" -o "$T/c.wdelta" || return 1
    run "$T/zs" zstd -q -3 -T0 -f "$f" -o "$T/z.zst" || return 1
    rm -f "$T/c.wdelta"
    run "$T/cr" "$WDELTA" create -q --base "$base" --finetuned "$ft" -o "$T/c.wdelta" || return 1
    run "$T/nl" "$WDELTA" create -q --no-lowrank --base "$base" --finetuned "$ft" -o "$T/n.wdelta" || return 1
  done
  local in out nout zout lr
  in=$(cat "$ft"/*.safetensors | wc -c)
  out=$(stat -c %s "$T/c.wdelta"); nout=$(stat -c %s "$T/n.wdelta"); zout=$(stat -c %s "$T/z.zst")
  lr=$("$WDELTA" inspect "$T/c.wdelta" | grep -c " lowrank-exact ")
  local cw cc nw nc zw zc fw fc
  cw=$(col 1 "$T/cr"); cc=$(col 2 "$T/cr"); nw=$(col 1 "$T/nl"); nc=$(col 2 "$T/nl"); zw=$(col 1 "$T/zs"); zc=$(col 2 "$T/zs")
  fw=$(col 1 "$T/c1"); fc=$(col 2 "$T/c1")
  ROWS+=("| $name: \`wdelta create\` (default), base hashed (first delta from it) | $fw s, CPU $(awk -v c="$fc" -v w="$fw" 'BEGIN { printf "%.2f", c / w }') | \`zstd -3 -T0\`: $zw s, CPU $(awk -v c="$zc" -v w="$zw" 'BEGIN { printf "%.2f", c / w }') | $(awk -v a="$fw" -v b="$zw" 'BEGIN { printf "%.2fx", a / b }') | $target |")
  ROWS+=("| $name: \`wdelta create\` (default), base's hashes from the digest cache | $cw s, CPU $(awk -v c="$cc" -v w="$cw" 'BEGIN { printf "%.2f", c / w }') | \`zstd -3 -T0\`: $zw s | $(awk -v a="$cw" -v b="$zw" 'BEGIN { printf "%.2fx", a / b }') | $target |")
  ROWS+=("| $name: \`create --no-lowrank\` (digest cached) | $nw s, CPU $(awk -v c="$nc" -v w="$nw" 'BEGIN { printf "%.2f", c / w }') | default create: $cw s | $(awk -v a="$cw" -v b="$nw" 'BEGIN { printf "%.2fx", a / b }') | - |")
  ROWS+=("| $name: output ratio (input / output) | default $(awk -v a="$in" -v b="$out" 'BEGIN { printf "%.3fx", a / b }') ($lr tensors lowrank-exact) | --no-lowrank $(awk -v a="$in" -v b="$nout" 'BEGIN { printf "%.3fx", a / b }'), zstd -3 $(awk -v a="$in" -v b="$zout" 'BEGIN { printf "%.3fx", a / b }') | - | default >= --no-lowrank |")
}
bench_pair "$FULLNAME" "$W/full/base" "$W/full/ft" "<= 2x" || say "the full fine-tune part failed"
[ $LORA_OK = 1 ] && { bench_pair "rank-$RANK merged LoRA of it" "$W/full/base" "$W/lora" "<= 4x" || say "the merged-LoRA part failed"; }

GB=$(awk -v b="$(cat "$W/full/ft"/*.safetensors | wc -c)" 'BEGIN { printf "%.2f", b / 1e9 }')
echo
echo "Issue 18, create: $GB GB bf16 fine-tunes; $(nproc) CPUs, $(uname -m); median of $REPS interleaved runs;"
echo "CPU = (user + sys) / wall from /usr/bin/time; ratio: figure / reference"
echo
echo "| measure | figure | reference (same run) | ratio | target |"
echo "| --- | --- | --- | ---: | --- |"
printf '%s\n' "${ROWS[@]}"
echo
