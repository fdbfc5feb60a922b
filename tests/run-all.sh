#!/usr/bin/env bash
# Runs the whole test suite against the sanitizer build (build-asan/):
#   1. build-asan/unit_tests (check framework), counted per check
#   2. every tests/integration/test_*.sh in sorted order
# A script's exit status: 0 = pass, 77 = skip, anything else = fail.
# Prints one line per test and, last, exactly one "N passed, M failed, K skipped".
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

export WDELTA_BIN="${WDELTA_BIN:-build-asan}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# per-script wall-clock limit (the whole suite must stay under 15 minutes)
TEST_TIMEOUT="${WDELTA_TEST_TIMEOUT:-600}"

LOGDIR="$REPO/tests/tmp/logs"
mkdir -p "$LOGDIR"

passed=0 failed=0 skipped=0
failed_names=()

now() { date +%s.%N; }
dur() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", b - a }'; }

# ---- unit tests
if [ -x "$WDELTA_BIN/unit_tests" ]; then
  log="$LOGDIR/unit_tests.log"
  t0=$(now)
  CK_DEFAULT_TIMEOUT="${CK_DEFAULT_TIMEOUT:-120}" timeout "$TEST_TIMEOUT" "$WDELTA_BIN/unit_tests" >"$log" 2>&1
  rc=$?
  t1=$(now)
  # check prints e.g. "100%: Checks: 42, Failures: 0, Errors: 0" (one line per runner)
  read -r checks fails errs < <(awk '
      /Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+/ {
        for (i = 1; i <= NF; i++) {
          g = $(i); gsub(/,/, "", g)
          if ($(i-1) == "Checks:") c += g
          if ($(i-1) == "Failures:") f += g
          if ($(i-1) == "Errors:") e += g
        }
      }
      END { printf "%d %d %d\n", c, f, e }' "$log")
  ok=$((checks - fails - errs))
  if [ "$checks" -eq 0 ]; then
    # no summary (crash before/while running): count the binary as one failure
    printf 'FAIL  unit_tests (exit %d, no check summary) [%s]\n' "$rc" "$(dur "$t0" "$t1")"
    failed=$((failed + 1)); failed_names+=("unit_tests")
    tail -n 30 "$log" | sed 's/^/    | /'
  else
    passed=$((passed + ok))
    failed=$((failed + fails + errs))
    if [ "$rc" -eq 0 ] && [ $((fails + errs)) -eq 0 ]; then
      printf 'PASS  unit_tests (%d checks) [%s]\n' "$checks" "$(dur "$t0" "$t1")"
    else
      if [ $((fails + errs)) -eq 0 ]; then
        # exit status bad although every check passed (e.g. a leak report at exit)
        failed=$((failed + 1))
      fi
      printf 'FAIL  unit_tests (%d checks, %d failures, %d errors, exit %d) [%s]\n' \
        "$checks" "$fails" "$errs" "$rc" "$(dur "$t0" "$t1")"
      failed_names+=("unit_tests")
      grep -E ':[EF]:|Sanitizer|runtime error' "$log" | head -n 40 | sed 's/^/    | /'
    fi
  fi
else
  printf 'SKIP  unit_tests (%s/unit_tests not built)\n' "$WDELTA_BIN"
  skipped=$((skipped + 1))
fi

# ---- integration scripts
shopt -s nullglob
scripts=(tests/integration/test_*.sh)
IFS=$'\n' scripts=($(printf '%s\n' "${scripts[@]}" | LC_ALL=C sort)); unset IFS
for s in "${scripts[@]}"; do
  name=$(basename "$s" .sh)
  log="$LOGDIR/$name.log"
  t0=$(now)
  timeout --kill-after=10 "$TEST_TIMEOUT" bash "$s" </dev/null >"$log" 2>&1
  rc=$?
  t1=$(now)
  case $rc in
    0)  printf 'PASS  %s [%s]\n' "$name" "$(dur "$t0" "$t1")"; passed=$((passed + 1)) ;;
    77) why=$(grep -m1 -i 'skip' "$log" || true)
        printf 'SKIP  %s [%s]%s\n' "$name" "$(dur "$t0" "$t1")" "${why:+ ($why)}"
        skipped=$((skipped + 1)) ;;
    *)  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then what="timed out after ${TEST_TIMEOUT}s"; else what="exit $rc"; fi
        printf 'FAIL  %s (%s) [%s]\n' "$name" "$what" "$(dur "$t0" "$t1")"
        failed=$((failed + 1)); failed_names+=("$name")
        tail -n 40 "$log" | sed 's/^/    | /' ;;
  esac
done

if [ ${#failed_names[@]} -gt 0 ]; then
  echo "failed: ${failed_names[*]} (logs in tests/tmp/logs/)"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
