#!/usr/bin/env bash
# The Python package (python/wdelta) with Debian's numpy: tests/python/
# test_wdelta.py (round trips byte-identical to the wdelta tool's output,
# every v1 vector through load_delta_from_paths, error messages, the
# Trainer callback over real checkpoint directories), run against the
# ASan+UBSan build of libwdelta.so when WDELTA_BIN is build-asan; then the
# callback's output directory mounted with wdeltafs: every checkpoint is a
# model directory whose files are the checkpoint's, byte for byte.
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel, libwdelta.so.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta wdeltafs genmodel
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 missing (apt-get install python3 python3-numpy)"
/usr/bin/python3 -c 'import numpy' 2>/dev/null || skip "/usr/bin/python3 has no numpy (apt-get install python3-numpy)"
[ -f "$BIN/libwdelta.so" ] || skip "$BIN/libwdelta.so not built"

setup_mount_tmp python
start_watchdog 500

# A sanitizer-built library needs its runtimes loaded first in python3;
# python itself leaks by design at exit, so leak checks stay off here.
pre=""
if nm -D "$BIN/libwdelta.so" 2>/dev/null | grep -q __asan_init; then
  for r in libasan.so libubsan.so; do
    p=$(${CC:-cc} -print-file-name=$r 2>/dev/null)
    [ -f "$p" ] && pre="$pre $p"
  done
fi
out="$T/unittest.log"
env ${pre:+LD_PRELOAD="$pre"} ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    WDELTA_LIB="$BIN/libwdelta.so" WDELTA_BIN="$BIN" WD_TMP="$T/py" SHARED="$SHARED" \
    /usr/bin/python3 -W error::ResourceWarning "$REPO/tests/python/test_wdelta.py" -v >"$out" 2>&1
rc=$?
grep -E ' \.\.\. (ok|FAIL|ERROR|skipped)' "$out" | sed 's/^/      /'
if [ $rc -eq 0 ] && san_clean "$out"; then
  pass "python unittest: $(grep -E '^Ran [0-9]+ tests' "$out")$(grep -E '^OK' "$out" | sed 's/^OK/ OK/')"
else
  fail "python unittest (exit $rc)"; grep -vE ' \.\.\. ok$' "$out" | tail -n 60 | sed 's/^/      /'
fi

# the callback's chain, mounted: each checkpoint-N is the checkpoint's model
CB="$T/py/Chains/cb"
if [ -d "$CB/deltas" ]; then
  mount_wdeltafs "$CB/deltas" "$MNT" "$LOG" "base=$T/py/Chains/g/base" || fail "mount the callback's directory"
  SRC="$CB/deltas"
  for ck in "$CB"/run/checkpoint-*; do
    n=$(basename "$ck")
    ok=1
    for f in "$ck"/*.safetensors "$ck"/*.json; do
      case "$(basename "$f")" in trainer_state.json) continue ;; esac
      cmp -s "$f" "$MNT/$n/$(basename "$f")" || { echo "      differs: $n/$(basename "$f")"; ok=0; }
    done
    [ -e "$MNT/$n/optimizer.pt" ] && { echo "      $n/optimizer.pt is in the delta"; ok=0; }
    [ $ok = 1 ] && pass "mount: $n is the checkpoint's model, byte for byte" || fail "mount: $n"
  done
  check "mount: checkpoint-30's parent is checkpoint-20 (.wdeltafs/lineage)" \
    test "$(readlink "$MNT/.wdeltafs/lineage/checkpoint-30")" = "../../checkpoint-20"
  unmount_checked "$MNT" || fail "unmount"
  assert_no_sanitizer_report "$LOG" "daemon log has no sanitizer report"
else
  fail "the callback test left no output directory ($CB/deltas)"
fi
finish
