#!/usr/bin/env bash
# `make stress`: a stress run of the wdeltafs daemon.
#   8 genmodel pairs (different seeds, so 8 different bases) -> 8 lossless
#   deltas in SRC, mounted with base=B1:...:B8 and cache_size = 10% of the
#   total virtual size of the models; 16 reader threads (tests/stress/stress.py:
#   8 stream whole files with 1 MiB reads, 8 issue random preads) for
#   STRESS_SECONDS, every byte compared with the fine-tune's file.
# Prints a markdown table; exits 1 if a limit is broken (mismatches, errors,
# daemon VmHWM >= cache_size + STRESS_RSS_SLACK_MB, daemon exit status,
# a sanitizer report in the daemon log), 77 if it cannot run here (not root,
# no /dev/fuse, binaries not built), 2 if the setup fails.
# Env: WDELTA_BIN    directory with wdelta, wdeltafs, genmodel (default build)
#      STRESS_SECONDS     reading time (default 600)
#      STRESS_MODELS      number of models (default 8)
#      STRESS_PARAMS      genmodel --params per model (default 20M)
#      STRESS_THREADS     reader threads (default 16), STRESS_SEQ_THREADS
#                         of them streaming (default half)
#      STRESS_RSS_SLACK_MB  allowed VmHWM above cache_size (default 64)
#      STRESS_SEED        reader seed (default 1)
#      STRESS_KEEP=1      keep the work directory (printed) after the run
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta" GENMODEL="$BIN/genmodel" WDELTAFS="$BIN/wdeltafs"
SECS="${STRESS_SECONDS:-600}"
NMOD="${STRESS_MODELS:-8}"
PARAMS="${STRESS_PARAMS:-20M}"
THREADS="${STRESS_THREADS:-16}"
SEQ="${STRESS_SEQ_THREADS:-$((THREADS / 2))}"
SLACK="${STRESS_RSS_SLACK_MB:-64}"
SEED="${STRESS_SEED:-1}"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3 || true)
say() { echo "stress: $*"; }

for b in "$WDELTA" "$GENMODEL" "$WDELTAFS"; do [ -x "$b" ] || { say "SKIP: $b not built"; exit 77; }; done
[ "$(id -u)" = 0 ] || { say "SKIP: not root"; exit 77; }
[ -c /dev/fuse ] || { say "SKIP: /dev/fuse missing"; exit 77; }
command -v fusermount3 >/dev/null || { say "SKIP: fusermount3 missing (apt-get install fuse3)"; exit 77; }
[ -n "$PY" ] || { say "SKIP: python3 missing"; exit 77; }

W=$(mktemp -d "${TMPDIR:-/tmp}/wdeltafs-stress.XXXXXX")
SRC="$W/src" MNT="$W/mnt" LOG="$W/daemon.log" RES="$W/results.json"
mkdir -p "$SRC" "$MNT" "$W/cache"
DPID=""
cleanup() {
  if timeout 10 mountpoint -q "$MNT" 2>/dev/null; then
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
  fi
  if [ -n "$DPID" ]; then
    for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DPID" 2>/dev/null
  fi
  if [ "${STRESS_KEEP:-0}" = 1 ]; then say "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- inputs
t0=$(date +%s)
BASES="" MODELS=() VIRT=0
for i in $(seq 1 "$NMOD"); do
  d="$W/gen$i"
  "$GENMODEL" "$d" --params "$PARAMS" --seed "$i" >"$W/gen.log" 2>&1 \
    || { say "genmodel $d failed:"; cat "$W/gen.log"; exit 2; }
  "$WDELTA" create --base "$d/base" --finetuned "$d/ft" -o "$SRC/m$i.wdelta" --quiet >>"$W/gen.log" 2>&1 \
    || { say "wdelta create m$i failed"; exit 2; }
  BASES="${BASES:+$BASES:}$d/base"
  MODELS+=(--model "m$i=$d/ft:$d/base")
  # virtual model = every ft file + base-only non-weight files
  for f in "$d/ft"/* "$d/base"/*; do
    n=$(basename "$f")
    case "$f" in "$d/base"/*) [ -e "$d/ft/$n" ] && continue ;; esac
    VIRT=$((VIRT + $(stat -c %s "$f")))
  done
done
CACHE=$((VIRT / 10))
say "$NMOD models of $PARAMS params: virtual $VIRT bytes, deltas $(du -cb "$SRC"/*.wdelta | tail -1 | cut -f1) bytes, cache_size=$CACHE ($(( $(date +%s) - t0 ))s to generate)"

# ---------------------------------------------------------------- mount
"$WDELTAFS" "$SRC" "$MNT" -f -o "base=$BASES,cache_size=$CACHE,cache_dir=$W/cache" 2>"$LOG" &
DPID=$!
for _ in $(seq 600); do
  mountpoint -q "$MNT" && break
  kill -0 "$DPID" 2>/dev/null || break
  sleep 0.1
done
if ! mountpoint -q "$MNT"; then
  say "mount failed; daemon log:"; tail -n 30 "$LOG" | sed 's/^/  | /'
  exit 2
fi
for i in $(seq 1 "$NMOD"); do
  for _ in $(seq 100); do [ -d "$MNT/m$i" ] && break; sleep 0.1; done
  [ -d "$MNT/m$i" ] || { say "model m$i is not shown:"; cat "$MNT/.wdeltafs/status"; exit 2; }
done
say "mounted (daemon pid $DPID); reading for ${SECS}s with $THREADS threads ($SEQ streaming)"

# ---------------------------------------------------------------- read
"$PY" "$REPO/tests/stress/stress.py" run --mnt "$MNT" "${MODELS[@]}" --seconds "$SECS" \
  --threads "$THREADS" --seq-threads "$SEQ" --seed "$SEED" --daemon-pid "$DPID" \
  --cache-size "$CACHE" --results "$RES"
src=$?
if [ $src -ne 0 ] || [ ! -s "$RES" ]; then
  say "stress.py run failed (exit $src); daemon log:"; tail -n 30 "$LOG" | sed 's/^/  | /'
  exit 2
fi

# ---------------------------------------------------------------- unmount
drc=""
if kill -0 "$DPID" 2>/dev/null; then
  fusermount3 -u "$MNT" || { say "fusermount3 -u failed"; fusermount3 -uz "$MNT"; }
  for _ in $(seq 300); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$DPID" 2>/dev/null; then say "daemon still running 30s after unmount"; kill -9 "$DPID"; fi
fi
wait "$DPID"; drc=$?
DPID=""
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error' "$LOG"; then
  say "sanitizer report in the daemon log:"; grep -A 30 -m 3 -E 'ERROR: (Address|Leak)Sanitizer|runtime error' "$LOG" | head -80 | sed 's/^/  | /'
fi

"$PY" "$REPO/tests/stress/stress.py" report --results "$RES" --rss-slack-mb "$SLACK" \
  --daemon-rc "$drc" --daemon-log "$LOG" \
  --title "wdeltafs stress: $(basename "$BIN")/wdeltafs, $NMOD x $PARAMS params, ${SECS}s, $(nproc) CPUs"
rc=$?
if [ $rc -ne 0 ]; then say "daemon log (last 30 lines):"; tail -n 30 "$LOG" | sed 's/^/  | /'; fi
exit $rc
