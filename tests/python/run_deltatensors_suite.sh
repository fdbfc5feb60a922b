#!/usr/bin/env bash
# Run deltatensors' own test files against wdelta:
#   tests/python/run_deltatensors_suite.sh CHECKOUT [TEST_FILE...]
# CHECKOUT: a checkout of https://github.com/AaravGaurdev/deltatensors (0.2);
# TEST_FILE: paths inside it (default: tests/test_chain.py tests/test_training.py);
# arguments starting with - go to pytest (e.g. -v).
# The files are copied unmodified into a scratch directory next to
# tests/python/compat/deltatensors (the name deltatensors bound to wdelta), so
# that their `sys.path.insert(0, parent.parent)` finds that and not the real
# package; tests/python/compat/safetensors stands in for safetensors.  Runs
# /usr/bin/python3 -m pytest (Debian: python3-pytest python3-torch
# python3-numpy).  Env: WDELTA_LIB (default build/libwdelta.so).
# Exit: pytest's status; 77 (skip) when CHECKOUT, pytest or torch is missing.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
src=${1:-}
[ -n "$src" ] && [ -d "$src/tests" ] || { echo "SKIP: no deltatensors checkout given (usage: $0 CHECKOUT [TEST_FILE...])"; exit 77; }
shift
files=() opts=()
for a in "$@"; do case "$a" in -*) opts+=("$a") ;; *) files+=("$a") ;; esac; done
[ ${#files[@]} -gt 0 ] || files=(tests/test_chain.py tests/test_training.py)
/usr/bin/python3 -c 'import pytest, torch' 2>/dev/null || { echo "SKIP: /usr/bin/python3 lacks pytest or torch (apt-get install python3-pytest python3-torch)"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dt-suite.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tests"
cp -r "$here/compat/deltatensors" "$tmp/deltatensors"
run=()
for t in "${files[@]}"; do
  [ -f "$src/$t" ] || { echo "no $src/$t"; exit 2; }
  cp "$src/$t" "$tmp/tests/"
  run+=("tests/$(basename "$t")")
done
export WDELTA_LIB=${WDELTA_LIB:-$repo/build/libwdelta.so}
export PYTHONPATH="$here/compat:$repo/python${PYTHONPATH:+:$PYTHONPATH}"
cd "$tmp" && /usr/bin/python3 -m pytest -p no:cacheprovider -q "${opts[@]+"${opts[@]}"}" "${run[@]}"
