#!/usr/bin/env bash
# wdelta as a drop-in for deltatensors 0.2 (tests/python/test_compat.py with
# Debian's numpy, against the ASan+UBSan libwdelta.so when WDELTA_BIN is
# build-asan): every public name, argument, default, return value and error;
# hash_state_dict against the tool and the v1 vectors; chains; the examples
# of deltatensors' pages (../shared/seeds); a training script written for
# DeltaTensorsCallback driven as the Trainer does.  Then those training
# runs mounted with wdeltafs: each OUTPUT/checkpoint-N/model.wdelta is served
# as OUTPUT/checkpoint-N/model/, byte for byte the checkpoint (lossless) or
# what `wdelta apply` rebuilds (lossy), without the optimizer state.
# deltatensors' own suite: tests/python/run_deltatensors_suite.sh (needs a
# checkout of its repository, pytest and torch; not run here).
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel, libwdelta.so.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta wdeltafs
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 missing (apt-get install python3 python3-numpy)"
/usr/bin/python3 -c 'import numpy' 2>/dev/null || skip "/usr/bin/python3 has no numpy (apt-get install python3-numpy)"
[ -f "$BIN/libwdelta.so" ] || skip "$BIN/libwdelta.so not built"

setup_mount_tmp python-compat
start_watchdog 400

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
    /usr/bin/python3 -W error::ResourceWarning "$REPO/tests/python/test_compat.py" -v >"$out" 2>&1
rc=$?
grep -E ' \.\.\. (ok|FAIL|ERROR|skipped)' "$out" | sed 's/^/      /'
if [ $rc -eq 0 ] && san_clean "$out"; then
  pass "python compat unittest: $(grep -E '^Ran [0-9]+ tests' "$out")$(grep -E '^OK' "$out" | sed 's/^OK/ OK/')"
else
  fail "python compat unittest (exit $rc)"; grep -vE ' \.\.\. ok$|^\[wdelta\]' "$out" | tail -n 60 | sed 's/^/      /'
fi

# the DeltaTensorsCallback runs, mounted: checkpoint-N/model.wdelta -> checkpoint-N/model/
TR="$T/py/Training"
if [ -d "$TR/lossless/outputs" ]; then
  SRC="$TR"
  mount_wdeltafs "$TR" "$MNT" "$LOG" "base=$TR/m/base" || fail "mount the training runs"
  for run in lossless int4 delete; do
    for ck in "$TR/$run"/outputs/checkpoint-*; do
      n="$run/outputs/$(basename "$ck")"
      served="$MNT/$n/model"
      ok=1
      [ -d "$served" ] || { echo "      $served missing"; ok=0; }
      if [ $run = lossless ]; then
        want="$ck"                     # the checkpoint itself, byte for byte
      else
        want="$T/applied/$n"; mkdir -p "$(dirname "$want")"
        "$WDELTA" apply -q "$ck/model.wdelta" --base "$TR/m/base" -o "$want" >/dev/null || ok=0
      fi
      for f in model.safetensors config.json; do
        cmp -s "$want/$f" "$served/$f" || { echo "      differs: $n/model/$f"; ok=0; }
      done
      for f in optimizer.pt trainer_state.json model.wdelta; do
        [ -e "$served/$f" ] && { echo "      $n/model/$f is served"; ok=0; }
      done
      [ $ok = 1 ] && pass "mount: $n/model is the checkpoint's model ($run)" || fail "mount: $n/model ($run)"
    done
  done
  # the warning run left a checkpoint without a delta: not shown
  check "mount: a checkpoint without model.wdelta is not shown" not test -e "$MNT/warn/checkpoint-7"
  unmount_checked "$MNT" || fail "unmount"
  assert_no_sanitizer_report "$LOG" "daemon log has no sanitizer report"
else
  fail "the callback tests left no training runs ($TR/lossless/outputs)"
fi
finish
