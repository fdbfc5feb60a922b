#!/usr/bin/env bash
# Shortened stress run of wdeltafs (tests/stress/run.sh) for `make test`:
# 8 models of 4M params, 16 readers (8 streaming, 8 random preads) for 45 s
# against the sanitizer build, every byte compared with the fine-tune; fails
# on a mismatch, an error, daemon VmHWM >= cache_size + 64 MB, a non-zero
# daemon exit or a sanitizer report in the daemon log.
# Env: WDELTA_BIN (default build-asan); STRESS_* as in tests/stress/run.sh.
# Exit: 0 pass, 77 skip (not root, no /dev/fuse, not built), else fail.
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "SKIP: not root"; exit 77; }
[ -c /dev/fuse ] || { echo "SKIP: /dev/fuse missing"; exit 77; }
# The optimized daemon: the memory limit (cache + 64 MB) is about the
# daemon, and AddressSanitizer's own quarantine (256 MB) would swamp it; the
# other mount tests run the sanitizer build.
export WDELTA_BIN="${STRESS_SHORT_BIN:-build}"
export STRESS_SECONDS="${STRESS_SHORT_SECONDS:-45}"
export STRESS_PARAMS="${STRESS_SHORT_PARAMS:-4M}"
export STRESS_MODELS="${STRESS_MODELS:-8}"
exec bash "$REPO/tests/stress/run.sh"
