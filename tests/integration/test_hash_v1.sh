#!/bin/bash
# v2 files record the model identity (base_hash/result_hash, kind 2) and, as
# informational keys, deltatensors' v1 content hashes (base_hash_v1,
# result_hash_v1; core/FORMAT.md "Model identity"), which the Python drop-in
# returns as parent_hash:
#  - lossless, lossy (int4) and a chain link: the keys equal `hash --v1` of the
#    base / the rebuilt model; a link's base_hash_v1 is its parent's result_hash_v1;
#  - a file without them (an identity build before them) still opens and rebuilds,
#    Python's parent_hash then being the identity it records; a bad value is refused;
#  - Python: save_* return hash_state_dict(base); a wrong base (a plain delta, a
#    chain, a file without the keys) is BaseMismatchError "Base model hash
#    mismatch: wrong base ..." (the library's text); chains load by recorded kind.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
require_python
setup_tmp wdhashv1
PATCH="$REPO/tests/integration/patch_manifest.py"
W=$WDELTA

# key FILE NAME: the manifest key NAME of `inspect --json FILE` ("" when absent)
key() { "$W" inspect --json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$2"; }

gen_pair "$T/g" --params 300k --shards 2 --seed 7 || die "genmodel failed"
gen_pair "$T/h" --params 300k --shards 2 --seed 8 || die "genmodel failed"
gen_pair "$T/o" --params 300k --shards 2 --seed 9 || die "genmodel failed"
create_delta "$T/g/base" "$T/g/ft" "$T/a.wdelta" || die "create failed"
create_delta "$T/g/base" "$T/g/ft" "$T/b.wdelta" --strategy int4 || die "create int4 failed"
create_delta "$T/g/base" "$T/h/ft" "$T/c.wdelta" --parent "$T/a.wdelta" || die "create link failed"

bv1=$("$W" hash --v1 "$T/g/base") fv1=$("$W" hash --v1 "$T/g/ft")
check "lossless: base_hash_v1 is hash --v1 of the base" [ "$(key "$T/a.wdelta" base_hash_v1)" = "$bv1" ]
check "lossless: result_hash_v1 is hash --v1 of the fine-tune" [ "$(key "$T/a.wdelta" result_hash_v1)" = "$fv1" ]
check "lossless: base_hash is still the identity (kind 2)" \
  [ "$(key "$T/a.wdelta" base_hash)/$(key "$T/a.wdelta" base_hash_kind)" = "$("$W" hash "$T/g/base")/2" ]
"$W" apply "$T/b.wdelta" --base "$T/g/base" -o "$T/rb" -q >/dev/null 2>&1 || die "apply int4 failed"
check "int4: base_hash_v1 is hash --v1 of the base" [ "$(key "$T/b.wdelta" base_hash_v1)" = "$bv1" ]
check "int4: result_hash_v1 is hash --v1 of what it rebuilds (not the fine-tune's)" \
  bash -c '[ "$1" = "$2" ] && [ "$1" != "$3" ]' _ "$(key "$T/b.wdelta" result_hash_v1)" "$("$W" hash --v1 "$T/rb")" "$fv1"
check "link: base_hash_v1 is its parent's result_hash_v1" [ "$(key "$T/c.wdelta" base_hash_v1)" = "$fv1" ]
check "link: result_hash_v1 is hash --v1 of its fine-tune" \
  [ "$(key "$T/c.wdelta" result_hash_v1)" = "$("$W" hash --v1 "$T/h/ft")" ]
check "inspect (text) shows both v1 hashes" \
  bash -c '"$1" inspect "$2" | grep -q "^base hash v1: *$3" && "$1" inspect "$2" | grep -q "^result hash v1: *$4"' \
  _ "$W" "$T/a.wdelta" "$bv1" "$fv1"

# files without the keys (as the identity build wrote them), and a bad value
mkdir -p "$T/old"
"$PY" "$PATCH" "$T/a.wdelta" "$T/old/a.wdelta" base_hash_v1=null result_hash_v1=null || die "patch failed"
create_delta "$T/g/base" "$T/h/ft" "$T/old/c.wdelta" --parent "$T/old/a.wdelta" || die "create link on old failed"
check "a file without the keys: inspect --json has neither" \
  bash -c '[ -z "$1$2" ]' _ "$(key "$T/old/a.wdelta" base_hash_v1)" "$(key "$T/old/a.wdelta" result_hash_v1)"
check "a link on such a parent: no base_hash_v1, a result_hash_v1" \
  bash -c '[ -z "$1" ] && [ "$2" = "$3" ]' _ "$(key "$T/old/c.wdelta" base_hash_v1)" \
  "$(key "$T/old/c.wdelta" result_hash_v1)" "$("$W" hash --v1 "$T/h/ft")"
"$W" apply "$T/old/c.wdelta" --base "$T/g/base" -o "$T/rc" -q >/dev/null 2>&1
check "a chain without the keys rebuilds its fine-tune" same_model "$T/h/ft" "$T/rc"
"$PY" "$PATCH" "$T/a.wdelta" "$T/bad.wdelta" 'base_hash_v1="xyz"' || die "patch failed"
"$W" inspect "$T/bad.wdelta" >"$T/out" 2>&1; RC=$?
check "a base_hash_v1 that is not 64 hex digits: refused (exit 1), named" \
  bash -c '[ "$1" = 1 ] && grep -q "base_hash_v1" "$2"' _ "$RC" "$T/out"

# ---- Python: deltatensors' semantics over these files
out="$T/py.log"
pre=""  # an ASan+UBSan libwdelta.so needs its runtimes preloaded into python (leak checks off)
if nm -D "$BIN/libwdelta.so" 2>/dev/null | grep -q __asan_init; then
  for r in libasan.so libubsan.so; do
    p=$(${CC:-cc} -print-file-name=$r 2>/dev/null)
    [ -f "$p" ] && pre="$pre $p"
  done
fi
if env ${pre:+LD_PRELOAD="$pre"} ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    WDELTA_LIB="$BIN/libwdelta.so" "$PY" - "$REPO" "$T" >"$out" 2>&1 <<'EOF'
import os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "python"))
import wdelta
T = sys.argv[2]
g, h, o = (os.path.join(T, x) for x in "gho")
def ok(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        sys.exit(1)
def raises(fn, what):
    try:
        fn()
    except wdelta.BaseMismatchError as e:
        ok(str(e).startswith("Base model hash mismatch: "), what + ": " + str(e)[:160])
        return
    ok(False, what + ": no BaseMismatchError")
p = os.path.join(T, "py.wdelta")
r = wdelta.save_delta_from_paths(p, g + "/ft", g + "/base", strategy="lossless", allow_new_tensors=True)
ok(r == wdelta.model_hash(g + "/base"), "save_delta_from_paths returns the v1 content hash")
i = wdelta.inspect(p)
ok(i["parent_hash"] == r and i["base_identity"] == wdelta.model_identity(g + "/base"), "inspect: parent_hash v1, base_identity")
ok(i["result_hash"] == wdelta.model_hash(g + "/ft"), "inspect: result_hash is the fine-tune's v1 hash")
old = wdelta.inspect(os.path.join(T, "old", "a.wdelta"))
ok(old["parent_hash"] == wdelta.model_identity(g + "/base"), "a file without the keys: parent_hash is what it records")
raises(lambda: wdelta.load_delta_from_paths(p, o + "/base"), "load over a wrong base")
raises(lambda: wdelta.load_delta_from_paths(os.path.join(T, "old", "a.wdelta"), o + "/base"),
       "a file without the keys over a wrong base")
raises(lambda: wdelta.load_delta_from_paths(os.path.join(T, "c.wdelta"), o + "/base"), "a link over a wrong base")
for sub in ("", "old"):
    chain = [os.path.join(T, sub, "a.wdelta"), os.path.join(T, sub, "c.wdelta")]
    got = wdelta.load_delta_chain(chain, g + "/base", raw=True)
    want = wdelta.load_delta_from_paths(os.path.join(T, sub, "c.wdelta"), g + "/base", raw=True)
    ok(sorted(got) == sorted(want) and all((got[k] == want[k]).all() for k in got), "load_delta_chain %s" % (sub or "new"))
    raises(lambda: wdelta.load_delta_chain(chain, o + "/base"), "load_delta_chain %s over a wrong base" % (sub or "new"))
    raises(lambda: wdelta.load_delta_chain(chain[::-1], g + "/base"), "load_delta_chain %s in the wrong order" % (sub or "new"))
EOF
then
  san_clean "$out" || fail "python: sanitizer report"
  pass "python: v1 parent_hash, BaseMismatchError on wrong bases, chains by recorded kind"
else
  fail "python"; sed 's/^/      /' "$out"
fi
finish
