#!/usr/bin/env bash
# Runs the libFuzzer targets built by `make fuzz` (build-fuzz/fuzz_*).
#   FUZZ_SECONDS   seconds per target (default 600)
#   FUZZ_TARGETS   which targets (default: all four)
#   FUZZ_JOBS      how many targets run at once (default 1)
# Each target starts from a copy of tests/fuzz/corpus/<target> in
# build-fuzz/work/<target>/corpus (the repository's corpus is not touched)
# and writes crashing inputs to build-fuzz/work/<target>/artifacts/.
# Prints one table row per target; exits 1 if any target found a crash.
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
SECS="${FUZZ_SECONDS:-600}"
TARGETS="${FUZZ_TARGETS:-fuzz_safetensors fuzz_v1 fuzz_v2 fuzz_codec}"
JOBS="${FUZZ_JOBS:-1}"
WORK=build-fuzz/work

max_len() {
  case "$1" in
    fuzz_safetensors) echo 65536 ;;
    fuzz_v1) echo 65536 ;;
    fuzz_v2) echo 131072 ;;
    fuzz_codec) echo 65536 ;;
    *) echo 4096 ;;
  esac
}

run_one() {
  local t=$1 w="$WORK/$1"
  rm -rf "$w" && mkdir -p "$w/corpus" "$w/artifacts"
  [ -d "tests/fuzz/corpus/$t" ] && cp tests/fuzz/corpus/"$t"/* "$w/corpus/" 2>/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=0" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "build-fuzz/$t" -max_total_time="$SECS" -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$w/artifacts/" "$w/corpus" >"$w/log" 2>&1
  echo $? >"$w/rc"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", b - a }' >"$w/seconds"
}

running=0
for t in $TARGETS; do
  echo "fuzz: running $t for ${SECS}s (log: $WORK/$t/log)" >&2
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

bad=0
printf '%-18s %8s %12s %10s %8s %8s\n' target seconds executions exec/s corpus crashes
for t in $TARGETS; do
  w="$WORK/$t"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$w/log" | tail -1)
  secs=$(cat "$w/seconds" 2>/dev/null || echo 0)
  corpus=$(find "$w/corpus" -type f | wc -l)
  crashes=$(find "$w/artifacts" -type f | wc -l)
  rc=$(cat "$w/rc" 2>/dev/null || echo 1)
  [ -z "$execs" ] && execs=0
  eps=$(awk -v e="$execs" -v s="$secs" 'BEGIN { printf "%d", (s > 0 ? e / s : 0) }')
  # a run that dies without leaving an artifact still counts as a crash
  [ "$rc" != 0 ] && [ "$crashes" = 0 ] && crashes=1
  [ "$crashes" != 0 ] && bad=1
  printf '%-18s %8s %12s %10s %8s %8s\n' "$t" "$secs" "$execs" "$eps" "$corpus" "$crashes"
done
if [ $bad != 0 ]; then
  echo "fuzz: crashes found; inputs under $WORK/*/artifacts/ (add fixed ones to tests/fuzz/regressions/<target>/)" >&2
  exit 1
fi
