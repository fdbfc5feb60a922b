#!/usr/bin/env bash
# `make bench`: size ratio and speed of wdelta create/apply, as a markdown table.
#   - ../shared/models/pairB (skipped with a message if absent)
#   - a generated ~200M-parameter bf16 model (BENCH_PARAMS to change)
# Peak RSS comes from /usr/bin/time -v.  Not a test: always informational.
# Env: WDELTA_BIN (default build), BENCH_DIR (default a temp dir, removed),
#      BENCH_PARAMS (default 200M), BENCH_THREADS (default: online CPUs),
#      BENCH_QUALITY=0 (skip the perplexity part, about 30 minutes),
#      BENCH_1G=0 (skip tests/bench/speed1g.sh; see there for its options),
#      BENCH_CREATE=0 (skip tests/bench/create_speed.sh; see there)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta"
GENMODEL="$BIN/genmodel"
SHARED="$REPO/../shared"
THREADS="${BENCH_THREADS:-$(nproc)}"

for b in "$WDELTA" "$GENMODEL"; do
  [ -x "$b" ] || { echo "bench: $b is not built (run make)" >&2; exit 1; }
done
if [ ! -x /usr/bin/time ]; then
  EXTRA_PKGS=time bash "$REPO/tools/deps.sh" || true
fi
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

if [ -n "${BENCH_DIR:-}" ]; then W="$BENCH_DIR"; mkdir -p "$W"
else W=$(mktemp -d "${TMPDIR:-/tmp}/wdelta-bench.XXXXXX"); trap 'rm -rf "$W"' EXIT; fi

now() { date +%s.%N; }
# total bytes of the regular files in a directory
dirsize() { find "$1" -maxdepth 1 -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s }'; }
# timed LOG CMD...: runs CMD under /usr/bin/time -v; sets SECS and RSS_KB
timed() {
  local log=$1; shift
  local t0 t1
  t0=$(now)
  /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1 || { echo "bench: failed: $*" >&2; cat "$log" >&2; return 1; }
  t1=$(now)
  SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  RSS_KB=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$log.time")
}

ROWS=()
# bench NAME BASE FT
bench() {
  local name=$1 base=$2 ft=$3
  local d="$W/$name.wdelta" out="$W/$name.out"
  rm -rf "$d" "$out"
  # warm the page cache so both runs read from memory
  cat "$base"/* "$ft"/* >/dev/null
  echo "bench: $name: create ($THREADS threads)" >&2
  timed "$W/$name.create" "$WDELTA" create --base "$base" --finetuned "$ft" -o "$d" --threads "$THREADS" --quiet
  local c_s=$SECS c_rss=$RSS_KB
  echo "bench: $name: apply" >&2
  timed "$W/$name.apply" "$WDELTA" apply "$d" --base "$base" -o "$out" --threads "$THREADS" --quiet
  local a_s=$SECS a_rss=$RSS_KB
  local dec
  dec=$("$REPO/build/decode_speed" "$d" "$base" 3)
  local ftb db ob
  ftb=$(dirsize "$ft"); db=$(stat -c %s "$d"); ob=$(dirsize "$out")
  local ok=yes f
  for f in "$ft"/*; do cmp -s "$f" "$out/$(basename "$f")" || ok=NO; done
  ROWS+=("$(awk -v n="$name" -v ftb="$ftb" -v db="$db" -v ob="$ob" -v cs="$c_s" -v as="$a_s" \
              -v cr="$c_rss" -v ar="$a_rss" -v ok="$ok" -v dec="$dec" 'BEGIN {
      printf "| %s | %.1f | %.1f | %.3fx | %.0f | %.0f | %s | %.0f | %.0f | %s |",
             n, ftb / 1e6, db / 1e6, ftb / db, ftb / 1e6 / cs, ob / 1e6 / as, dec, cr / 1024, ar / 1024, ok }')")
  rm -rf "$out"
}

PB="$SHARED/models/pairB"
if [ -d "$PB/base" ] && [ -d "$PB/ft" ]; then
  bench pairB "$PB/base" "$PB/ft"
else
  echo "bench: $PB absent; skipping pairB" >&2
fi

P="${BENCH_PARAMS:-200M}"
echo "bench: generating a $P-parameter bf16 model pair" >&2
"$GENMODEL" "$W/gen" --params "$P" --shards 4 --dtype bf16 --seed 1 >&2
bench "genmodel-$P-bf16" "$W/gen/base" "$W/gen/ft"
rm -rf "$W/gen"

echo
echo "wdelta bench on $(nproc) CPUs ($THREADS threads), $(uname -m), page cache warm"
echo
echo "| model | ft MB | delta MB | ratio | create MB/s | apply MB/s | decode MB/s (per core, thread CPU time) | create peak RSS MiB | apply peak RSS MiB | bit-exact |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for r in "${ROWS[@]}"; do echo "$r"; done
echo

# lossy codecs: decode speed per codec on pairB (per core: the decoding
# thread's CPU time): the whole block path (pread, checksums, decode) and the
# codec alone
if [ -d "$PB/base" ] && [ -d "$PB/ft" ]; then
  echo "| codec | bits/param (file) | decode MB/s, block path (1 core) | decode MB/s, codec alone |"
  echo "| --- | ---: | ---: | ---: |"
  for s in lossless int4 sparse bitdelta axis1 lowrank; do
    "$WDELTA" create -q -b "$PB/base" -f "$PB/ft" -o "$W/speed-$s.wdelta" -s "$s" >/dev/null
    read -r full alone < <("$REPO/build/decode_speed" "$W/speed-$s.wdelta" "$PB/base" 10 "$s")
    np=$("$WDELTA" eval "$W/speed-$s.wdelta" -b "$PB/base" -f "$PB/ft" --json | grep -oE '"params":[0-9]+' | tail -n1 | cut -d: -f2)
    awk -v s="$s" -v sz="$(stat -c %s "$W/speed-$s.wdelta")" -v f="$full" -v a="$alone" -v np="$np" \
      'BEGIN { printf "| %s | %.3f | %s | %s |\n", s, sz * 8 / np, f, a }'
    rm -f "$W/speed-$s.wdelta"
  done
  echo
fi

# ---- lineage: reading from the end of a chain of 5 vs a single delta
# chain_mount DIR: the same comparison through the mount (DIR/single and
# DIR/d as two folders of one SRC): `cat` of the virtual shard 1 of each,
# and a read (dd) of the largest tensor alone; every run on a fresh mount
# (empty block cache, default read-ahead), once with the page cache dropped
# (root only) and once with the files in it; runs alternate between the
# two models.
# largest_tensor FTDIR: "SHARD OFFSET LENGTH NAME" of its largest tensor
largest_tensor() {
  /usr/bin/python3 - "$1" <<'PYEOF'
import glob, json, os, struct, sys
best = None
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors"))):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    for name, t in h.items():
        a, b = t["data_offsets"]
        if best is None or b - a > best[2]:
            best = (os.path.basename(p), 8 + n + a, b - a, name)
print(*best)
PYEOF
}
chain_mount() {
  local C=$1 S="$1/src" M="$1/mnt" reps=7 r which kind what
  [ -x "$BIN/wdeltafs" ] && [ -c /dev/fuse ] && command -v fusermount3 >/dev/null || {
    echo "bench: no FUSE here; skipping the chain mount rows" >&2; return 0; }
  mkdir -p "$S/single" "$S/chain" "$M" "$C/digests"
  ln -f "$C/single/ft.wdelta" "$S/single/ft.wdelta"; ln -f "$C"/d/*.wdelta "$S/chain/"
  local shard=model-00001-of-00002.safetensors tshard toff tlen tname
  read -r tshard toff tlen tname < <(largest_tensor "$PB/ft")
  echo "Through the mount, fresh mount each run, median of $reps: \`cat\` of the $(stat -c %s "$PB/ft/$shard" | awk '{ printf "%.1f", $1 / 1e6 }') MB virtual $shard,"
  echo "and \`dd\` of the largest tensor alone ($tname, $(awk -v l="$tlen" 'BEGIN { printf "%.2f", l / 1e6 }') MB)"
  echo
  echo "| read | page cache | single delta ms | chain end ms | ratio |"
  echo "| --- | --- | ---: | ---: | ---: |"
  for what in shard tensor; do
  for kind in dropped warm; do
    if [ $kind = dropped ] && ! { [ "$(id -u)" = 0 ] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; }; then
      echo "bench: cannot drop the page cache; skipping that row" >&2; continue
    fi
    local -A T=([single/ft]="" [chain/l5]="")
    for r in $(seq $reps); do
      for which in single/ft chain/l5; do
        "$BIN/wdeltafs" "$S" "$M" -o "base=$PB/base,cache_dir=$C/digests" || { echo "bench: mount failed" >&2; return 0; }
        local i; for i in $(seq 100); do [ -e "$M/$which/$shard" ] && break; sleep 0.1; done
        if [ $kind = dropped ]; then sync; echo 3 >/proc/sys/vm/drop_caches
        else cat "$S"/*/*.wdelta "$PB"/base/* >/dev/null; fi
        local t0; t0=$(now)
        if [ $what = shard ]; then cat "$M/$which/$shard" >/dev/null
        else dd if="$M/$which/$tshard" of=/dev/null bs=1M iflag=skip_bytes,count_bytes skip="$toff" count="$tlen" status=none; fi
        T[$which]+="$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", (b - a) * 1000 }') "
        fusermount3 -u "$M"
      done
    done
    local ms mc
    ms=$(echo ${T[single/ft]} | tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    mc=$(echo ${T[chain/l5]} | tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    awk -v w="$what" -v k="$kind" -v s="$ms" -v c="$mc" 'BEGIN { printf "| %s | %s | %.1f | %.1f | %.2fx |\n", w, k, s, c, c / s }'
  done
  done
  echo
}

if [ -d "$PB/base" ] && [ -d "$PB/ft" ] && /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
  echo "bench: pairB chain of 5 (tools/mkchain.py intermediates)" >&2
  C="$W/chain"; rm -rf "$C"; mkdir -p "$C/d" "$C/single"
  /usr/bin/python3 "$REPO/tools/mkchain.py" "$PB/base" "$PB/ft" "$C/m" 5 >/dev/null
  "$WDELTA" create --base "$PB/base" --finetuned "$C/m/m1" -o "$C/d/l1.wdelta" --quiet >/dev/null
  for k in 2 3 4; do
    "$WDELTA" create --parent "$C/d/l$((k - 1)).wdelta" --base "$PB/base" --finetuned "$C/m/m$k" -o "$C/d/l$k.wdelta" --quiet >/dev/null
  done
  "$WDELTA" create --parent "$C/d/l4.wdelta" --base "$PB/base" --finetuned "$PB/ft" -o "$C/d/l5.wdelta" --quiet >/dev/null
  "$WDELTA" create --base "$PB/base" --finetuned "$PB/ft" -o "$C/single/ft.wdelta" --quiet >/dev/null
  echo
  echo "Lineage: reading pairB's fine-tune from the end of a chain of 5 links vs from a single delta"
  echo "(wd_read through a 1 GiB block cache, one thread, page cache warm, median of 5; target: chain within 3x)"
  echo
  "$BIN/chain_read" "$PB/base" "$C/single/ft.wdelta" "$C/d/l5.wdelta" 5
  chain_mount "$C"
  rm -rf "$C"
else
  echo "bench: $PB or numpy absent; skipping the chain benchmark" >&2
fi

# the low-rank predictor on pairLoRA
bash "$REPO/tests/bench/lowrank.sh" || echo "bench: lowrank part failed" >&2
bash "$REPO/tests/bench/kinds.sh" || echo "bench: kinds part failed" >&2

if [ -f "$REPO/tests/bench/fs.sh" ]; then
  bash "$REPO/tests/bench/fs.sh"
fi

# issue 18: a ~1 GB lossless fine-tune read, applied and created, each figure
# next to its reference (FUSE ceiling, page cache, zstd) from the same run
bash "$REPO/tests/bench/speed1g.sh" || echo "bench: the 1 GB part failed" >&2
bash "$REPO/tests/bench/create_speed.sh" || echo "bench: the create part failed" >&2

# perplexity of the lossy codecs read through a mount (pairB; needs python3-torch)
if [ "${BENCH_QUALITY:-1}" = 0 ]; then
  echo "bench: BENCH_QUALITY=0: skipping the perplexity part" >&2
else
  QUALITY_OUT="${QUALITY_OUT:-$W/quality}" bash "$REPO/tests/bench/quality.sh" || echo "bench: quality part failed" >&2
fi
