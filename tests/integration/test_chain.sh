#!/usr/bin/env bash
# Lineage: chains of deltas.
#  - pairB (../shared; skipped with a message when absent or without numpy):
#    intermediate fine-tunes m1..m4 (tools/mkchain.py), chain l1..l5 made with
#    create --parent; apply and verify at every step give byte-identical
#    models; inspect --chain; rebase flattens l5.
#  - generated models (always): two bases of different architectures, each
#    with its chain (links made from genmodel pairs of the same shape).
#  - errors: a missing link, links in the wrong order, a loop, each naming
#    the files.
#  - the mount: every link of every chain served byte-identically, lineage
#    (.wdeltafs/lineage symlinks, user.wdelta.parent), the bases under .wdeltafs/bases, the forest and the broken
#    chains (with reasons) in the status file, lossy links (int4, bitdelta)
#    equal to what apply writes, concurrent reads of chain
#    ends through a small cache (nested decodes), daemon exit 0, no
#    sanitizer report.
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel (default build-asan).
# Exit: 0 pass, 77 skip, 1 fail.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs

setup_mount_tmp wdelta-chain
start_watchdog 500
W="$WDELTA"

# same DIR FTDIR: every file of FTDIR byte-identical under DIR
same() { same_model "$1" "$2"; }
# xattr_parent DIR: DIR's user.wdelta.parent (the parent's path under the mount)
xattr_parent() { "$PY" -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.wdelta.parent").decode())' "$1" 2>/dev/null; }
# err_has CMD...: run CMD expecting exit 1; the message must contain $WANT and
# every name in $NAMES (one line, "wdelta: ...")
expect_error() {
  local desc=$1; shift
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  local ok=1 n
  [ $rc -eq "${WANT_RC:-1}" ] || ok=0  # 3: a link or the base missing or wrong
  grep -q -- "$WANT" "$T/err" || ok=0
  for n in $NAMES; do grep -qF -- "$n" "$T/err" || ok=0; done
  san_clean "$T/err" || ok=0
  if [ $ok = 1 ]; then pass "$desc: $(head -c 160 "$T/err")"
  else fail "$desc (exit $rc)"; sed 's/^/      | /' "$T/err" | head -5; fi
}

# ------------------------------------------------------------------ generated models
# Two architectures: A (bf16, 2 shards) and B (f32, 1 shard, other sizes).
# Pairs with the same --params/--dtype/--shards and another seed have the
# same shapes, so A's chain is a.base -> a.ft -> a2.base -> a2.ft.
gen_pair "$T/a" --params 2M --shards 2 --seed 3 || die "genmodel failed"
gen_pair "$T/a2" --params 2M --shards 2 --seed 4 || die "genmodel failed"
gen_pair "$T/b" --params 1M --shards 1 --dtype f32 --seed 5 || die "genmodel failed"
gen_pair "$T/b2" --params 1M --shards 1 --dtype f32 --seed 6 || die "genmodel failed"
gen_pair "$T/o" --params 1M --seed 9 || die "genmodel failed"
gen_pair "$T/o2" --params 1M --seed 10 || die "genmodel failed"
gen_pair "$T/o3" --params 1M --seed 11 || die "genmodel failed"
mkdir -p "$T/da" "$T/db"
check "A link 1: create against the base" create_delta "$T/a/base" "$T/a/ft" "$T/da/a1.wdelta"
check "A link 2: create --parent a1" create_delta "$T/a/base" "$T/a2/base" "$T/da/a2.wdelta" --parent "$T/da/a1.wdelta"
check "A link 3: create --parent a2 (a chain itself)" \
  create_delta "$T/a/base" "$T/a2/ft" "$T/da/a3.wdelta" --parent "$T/da/a2.wdelta"
check "A sibling of a2: create --parent a1" create_delta "$T/a/base" "$T/a/base" "$T/da/asib.wdelta" --parent "$T/da/a1.wdelta"
check "B link 1" create_delta "$T/b/base" "$T/b/ft" "$T/db/b1.wdelta"
check "B link 2: create --parent b1" create_delta "$T/b/base" "$T/b2/ft" "$T/db/b2.wdelta" --parent "$T/db/b1.wdelta"
declare -A WANTA=([a1]="$T/a/ft" [a2]="$T/a2/base" [a3]="$T/a2/ft" [asib]="$T/a/base")
for k in a1 a2 a3 asib; do
  rm -rf "$T/out.$k"
  if "$W" apply "$T/da/$k.wdelta" --base "$T/a/base" -o "$T/out.$k" --quiet >/dev/null 2>"$T/err" && same "$T/out.$k" "${WANTA[$k]}"; then
    pass "apply $k (chain through its parents, found in its directory): byte-identical"
  else fail "apply $k: byte-identical"; sed 's/^/      | /' "$T/err" | head -3; fi
  rm -rf "$T/out.$k"
done
rm -rf "$T/out.b2"
check "apply b2 with --chain FILE: byte-identical" \
  bash -c '"$1" apply "$2" --base "$3" --chain "$4" -o "$5" --quiet >/dev/null && for f in "$6"/*; do cmp -s "$f" "$5/$(basename "$f")" || exit 1; done' \
  _ "$W" "$T/db/b2.wdelta" "$T/b/base" "$T/db/b1.wdelta" "$T/out.b2" "$T/b2/ft"
"$W" verify "$T/da/a3.wdelta" --base "$T/a/base" --quiet >"$T/out" 2>"$T/err"
check "verify a3 --base: exit 0, every link's result hash checked" \
  bash -c '[ "$(grep -c "result hash .* matches" "$1")" -eq 3 ] && grep -q "chain of 3 links" "$1"' _ "$T/out"
check "verify a3 without --base: stored checksums of the 3 links" \
  bash -c '"$1" verify "$2" --quiet | grep -c "block checksums" | grep -qx 3' _ "$W" "$T/da/a3.wdelta"
check "inspect --chain a3: 3 links, all connect" \
  bash -c '"$1" inspect --chain "$2" >"$3" && grep -q "chain of 3 links" "$3" && [ "$(grep -c "connects:" "$3")" -eq 2 ]' _ "$W" "$T/da/a3.wdelta" "$T/out"
check "inspect --json a3: the manifest names its parent a2 and the depth 2" \
  bash -c '"$1" inspect --json "$2" | grep -q "\"parent\":{\"name\":\"a2.wdelta\",\"depth\":2}"' _ "$W" "$T/da/a3.wdelta"
check "inspect --chain a1 a2 a3 (given order): exit 0" "$W" inspect --chain "$T/da/a1.wdelta" "$T/da/a2.wdelta" "$T/da/a3.wdelta"
check "inspect --chain DIR: the forest (4 deltas)" \
  bash -c '"$1" inspect --chain "$2" >"$3" && grep -q "^4 deltas, [0-9]* chains" "$3"' _ "$W" "$T/da" "$T/out"
"$W" rebase "$T/da/a3.wdelta" --base "$T/a/base" -o "$T/flat.wdelta" --quiet >/dev/null 2>"$T/err"
check "rebase a3 --base: a direct delta (its base hash is the base's)" \
  bash -c '"$1" inspect --json "$2" | grep -q "\"base_hash\":\"$3\""' _ "$W" "$T/flat.wdelta" "$("$W" hash "$T/a/base")"
rm -rf "$T/out.flat"
check "apply of the rebased delta (alone in its directory): byte-identical to a3's model" \
  bash -c 'mkdir -p "$5" && mv "$2" "$5/" && "$1" apply "$5/flat.wdelta" --base "$3" -o "$4" --quiet >/dev/null && for f in "$6"/*; do cmp -s "$f" "$4/$(basename "$f")" || exit 1; done' \
  _ "$W" "$T/flat.wdelta" "$T/a/base" "$T/out.flat" "$T/flatdir" "$T/a2/ft"
check "create --parent refuses a parent made against another base" \
  not "$W" create --parent "$T/db/b1.wdelta" --base "$T/a/base" --finetuned "$T/a/ft" -o "$T/bad.wdelta" --quiet
check "no partial output left after the failure" not ls "$T"/bad.wdelta*

# lossy links: a3 -> l4 (int4, to a.ft) -> l5 (bitdelta, to a2.base); each
# rebuilds exactly what `wdelta apply` writes (checked again through the mount)
mkdir -p "$T/dl"
check "lossy link l4: create --parent a3 --strategy int4" \
  create_delta "$T/a/base" "$T/a/ft" "$T/dl/l4.wdelta" --parent "$T/da/a3.wdelta" --strategy int4
check "lossy link l5: create --parent l4 --strategy bitdelta" \
  create_delta "$T/a/base" "$T/a2/base" "$T/dl/l5.wdelta" --parent "$T/dl/l4.wdelta" --chain "$T/da" --strategy bitdelta
for k in l4 l5; do
  rm -rf "$T/out.$k"
  check "apply $k (lossy link of a chain of ${k#l})" \
    "$W" apply "$T/dl/$k.wdelta" --base "$T/a/base" --chain "$T/da" --chain "$T/dl" -o "$T/out.$k" --quiet
done
"$W" verify "$T/dl/l5.wdelta" --base "$T/a/base" --chain "$T/da" --chain "$T/dl" --quiet >"$T/out" 2>"$T/err"
check "verify l5 --base: the 5 links' result hashes (two of them lossy) match" \
  bash -c '[ "$(grep -c "result hash .* matches" "$1")" -eq 5 ]' _ "$T/out"
check "eval l4: errors measured against its parent a3's model, int4 bits/param < 4" \
  bash -c '"$1" eval "$2" --base "$3" --finetuned "$4" --chain "$5" --json | "$6" -c "import json,sys; t=json.load(sys.stdin)[\"total\"]; assert 0 < t[\"rel_error\"] < 0.5 and t[\"bits_per_param\"] < 4, t"' \
  _ "$W" "$T/dl/l4.wdelta" "$T/a/base" "$T/a/ft" "$T/da" "$PY"

# ------------------------------------------------------------------ errors
mkdir -p "$T/miss" "$T/loop"
cp "$T/da/a1.wdelta" "$T/da/a3.wdelta" "$T/miss/"
WANT_RC=3 WANT="missing link" NAMES="$T/miss/a3.wdelta $T/a/base"
expect_error "missing link: a clear error naming the file and the base" \
  "$W" apply "$T/miss/a3.wdelta" --base "$T/a/base" -o "$T/x"
WANT="missing link" NAMES="$T/miss/a3.wdelta"
expect_error "verify with a missing link" "$W" verify "$T/miss/a3.wdelta" --base "$T/a/base"
WANT_RC=1 WANT="wrong order" NAMES="$T/da/a3.wdelta $T/da/a1.wdelta"
expect_error "inspect --chain a1 a3 a2: wrong order named" \
  "$W" inspect --chain "$T/da/a1.wdelta" "$T/da/a3.wdelta" "$T/da/a2.wdelta"
WANT="a link is missing" NAMES="$T/da/a3.wdelta"
expect_error "inspect --chain a1 a3: missing link named" "$W" inspect --chain "$T/da/a1.wdelta" "$T/da/a3.wdelta"
# a loop: x takes o2.base to o2.ft, y takes o2.ft back to o2.base
check "loop link x" create_delta "$T/o2/base" "$T/o2/ft" "$T/loop/x.wdelta"
check "loop link y" create_delta "$T/o2/ft" "$T/o2/base" "$T/loop/y.wdelta"
# with a base that is neither's: the base is named as the cause (x records no
# parent), y as the delta that rebuilds x's base but leads back to x
WANT_RC=3 WANT="wrong base" NAMES="$T/loop/x.wdelta $T/loop/y.wdelta"
expect_error "a loop of links, another base: a clear error naming the base and both files" \
  "$W" apply "$T/loop/x.wdelta" --base "$T/o/base" -o "$T/x"
check "nothing written under the output names" not ls -d "$T/x" "$T"/x.tmp.*

# ------------------------------------------------------------------ pairB: chain of 5
PB="$SHARED/models/pairB"
HAVE_PB=0
if [ ! -d "$PB/base" ] || [ ! -d "$PB/ft" ]; then
  echo "note: SKIP pairB part: $PB absent"
elif ! /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
  echo "note: SKIP pairB part: /usr/bin/python3 has no numpy (apt-get install python3-numpy)"
else
  HAVE_PB=1
  if /usr/bin/python3 "$REPO/tools/mkchain.py" "$PB/base" "$PB/ft" "$T/pm" 5 >/dev/null; then
    pass "mkchain: 4 intermediate fine-tunes of pairB"
  else fail "mkchain"; fi
  cp -r "$PB/ft" "$T/pm/m5"
  mkdir -p "$T/dp"
  check "pairB link 1" create_delta "$PB/base" "$T/pm/m1" "$T/dp/p1.wdelta"
  for k in 2 3 4 5; do
    check "pairB link $k: create --parent p$((k - 1))" \
      create_delta "$PB/base" "$T/pm/m$k" "$T/dp/p$k.wdelta" --parent "$T/dp/p$((k - 1)).wdelta"
  done
  for k in 1 2 3 4 5; do
    rm -rf "$T/out.p$k"
    if "$W" apply "$T/dp/p$k.wdelta" --base "$PB/base" -o "$T/out.p$k" --quiet >/dev/null 2>"$T/err" &&
       same "$T/out.p$k" "$T/pm/m$k"; then pass "pairB chain of length $k: apply byte-identical"
    else fail "pairB chain of length $k: apply byte-identical"; sed 's/^/      | /' "$T/err" | head -3; fi
    rm -rf "$T/out.p$k"
  done
  "$W" verify "$T/dp/p5.wdelta" --base "$PB/base" --quiet >"$T/out" 2>"$T/err"
  check "verify p5: all 5 links' result hashes match" bash -c '[ "$(grep -c "result hash .* matches" "$1")" -eq 5 ]' _ "$T/out"
  check "inspect --chain p5: 5 links" bash -c '"$1" inspect --chain "$2" | grep -q "chain of 5 links"' _ "$W" "$T/dp/p5.wdelta"
fi

# ------------------------------------------------------------------ the mount
require_fuse
mkdir -p "$SRC/archA/deep" "$SRC/archB" "$SRC/broken"
cp "$T/da/a1.wdelta" "$SRC/archA/"
cp "$T/da/a2.wdelta" "$SRC/archA/deep/"
cp "$T/da/a3.wdelta" "$T/da/asib.wdelta" "$T/dl/l4.wdelta" "$T/dl/l5.wdelta" "$SRC/archA/"
cp "$T/db/b1.wdelta" "$T/db/b2.wdelta" "$SRC/archB/"
cp "$T/loop/x.wdelta" "$T/loop/y.wdelta" "$SRC/broken/"
check "orphan (its base and parent are absent)" create_delta "$T/o/base" "$T/o/ft" "$SRC/broken/orphan.wdelta"
# a link whose parent is the orphan: unavailable because its parent is
check "child of the orphan" create_delta "$T/o/base" "$T/o3/base" "$SRC/broken/orphan-child.wdelta" --parent "$SRC/broken/orphan.wdelta" --chain "$T/o"
declare -A MWANT=([archA/a1]="$T/a/ft" [archA/deep/a2]="$T/a2/base" [archA/a3]="$T/a2/ft" [archA/asib]="$T/a/base"
                  [archB/b1]="$T/b/ft" [archB/b2]="$T/b2/ft" [archA/l4]="$T/out.l4" [archA/l5]="$T/out.l5")
declare -A MPARENT=([archA/a1]="../../.wdeltafs/bases/base" [archA/deep/a2]="../../../archA/a1"
                    [archA/a3]="../../archA/deep/a2" [archA/asib]="../../archA/a1"
                    [archB/b1]="../../.wdeltafs/bases/base-2" [archB/b2]="../../archB/b1"
                    [archA/l4]="../../archA/a3" [archA/l5]="../../archA/l4")
BASES="$T/a/base:$T/b/base"
if [ $HAVE_PB = 1 ]; then
  mkdir -p "$SRC/pairB"
  cp "$T"/dp/p*.wdelta "$SRC/pairB/"
  for k in 1 2 3 4 5; do MWANT[pairB/p$k]="$T/pm/m$k"; done
  MPARENT[pairB/p1]="../../.wdeltafs/bases/base-3"
  for k in 2 3 4 5; do MPARENT[pairB/p$k]="../../pairB/p$((k - 1))"; done
  BASES="$BASES:$PB/base"
fi
mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$BASES,cache_size=4M,cache_dir=$T/cache,scan_interval=1" &&
  pass "mounted with several bases (different architectures)" || { fail "mount"; finish; }
for m in $(printf '%s\n' "${!MWANT[@]}" | LC_ALL=C sort); do
  check "$m: every file byte-identical through the mount" same "$MNT/$m" "${MWANT[$m]}"
  # lineage: .wdeltafs/lineage/$m (two levels deeper than the model's own
  # directory, hence one more ../) and the user.wdelta.parent attribute
  check "$m: .wdeltafs/lineage/$m -> ../${MPARENT[$m]}" \
    bash -c '[ "$(readlink "$1")" = "$2" ] && [ -d "$1" ]' _ "$MNT/.wdeltafs/lineage/$m" "../${MPARENT[$m]}"
  want=$(cd "$MNT/$m" && realpath -sm --relative-to="$MNT" "${MPARENT[$m]}")
  check "$m: user.wdelta.parent = $want" test "$(xattr_parent "$MNT/$m")" = "$want"
  check "$m: no symlink inside the model directory" bash -c '[ -z "$(find "$1" -type l)" ]' _ "$MNT/$m"
done
check "ls -l shows the lineage symlink" \
  bash -c 'ls -l "$1/.wdeltafs/lineage/archA" | grep -q "^l.* a3 -> ../../../archA/deep/a2$"' _ "$MNT"
check "base A under .wdeltafs/bases is its own directory, byte-identical" same "$MNT/.wdeltafs/bases/base" "$T/a/base"
check "base B under .wdeltafs/bases" same "$MNT/.wdeltafs/bases/base-2" "$T/b/base"
check "following user.wdelta.parent from a3 reaches the base" \
  same "$MNT/$(xattr_parent "$MNT/$(xattr_parent "$MNT/$(xattr_parent "$MNT/archA/a3")")")" "$T/a/base"
# concurrent readers of chain ends and siblings through a 4M cache: nested
# decodes wait for each other's blocks (and must never deadlock)
pids=()
for m in archA/a3 archA/asib archA/deep/a2 archB/b2 archA/a3 archB/b2 archA/l5; do
  ( same "$MNT/$m" "${MWANT[$m]}" ) & pids+=($!)
done
if [ $HAVE_PB = 1 ]; then for m in pairB/p5 pairB/p4 pairB/p5; do ( same "$MNT/$m" "${MWANT[$m]}" ) & pids+=($!); done; fi
bad=0; for p in "${pids[@]}"; do wait "$p" || bad=1; done
check "${#pids[@]} concurrent readers of chain ends through a 4M cache: all byte-identical" [ $bad = 0 ]
cat "$MNT/.wdeltafs/status" >"$T/status.json" 2>/dev/null
check "status: every served model with its parent and chain length" \
  "$PY" - "$T/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
m = {x["name"]: x for x in s["models"]}
assert m["archA/a3"]["parent"] == "archA/deep/a2" and m["archA/a3"]["chain_length"] == 3, m["archA/a3"]
assert m["archA/a1"]["parent"].startswith(".wdeltafs/bases/"), m["archA/a1"]
EOF
check "status: the forest (A: a1 with children a2 and asib; a2 -> a3)" \
  "$PY" - "$T/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
f = {x["dir"]: x for x in s["forest"]}
a = f[".wdeltafs/bases/base"]["children"]
assert [c["model"] for c in a] == ["archA/a1"], a
kids = sorted(c["model"] for c in a[0]["children"])
assert kids == ["archA/asib", "archA/deep/a2"], kids
a2 = [c for c in a[0]["children"] if c["model"] == "archA/deep/a2"][0]
assert [c["model"] for c in a2["children"]] == ["archA/a3"]
b = f[".wdeltafs/bases/base-2"]["children"]
assert [c["model"] for c in b] == ["archB/b1"] and [c["model"] for c in b[0]["children"]] == ["archB/b2"]
EOF
check "status: broken chains unavailable with the reason (loop, missing link, unavailable parent)" \
  "$PY" - "$T/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
u = {x["delta"].rsplit("/", 1)[1]: x["reason"] for x in s["unavailable"]}
assert "chain loop" in u["x.wdelta"] and "chain loop" in u["y.wdelta"], u
assert "wrong base" in u["orphan.wdelta"] and "model identity" in u["orphan.wdelta"], u
assert "orphan.wdelta is unavailable" in u["orphan-child.wdelta"], u
EOF
check "broken chains are not shown" not ls -d "$MNT/broken"
# a parent appears later: its child becomes available at the next rescan
mv "$SRC/archA/deep/a2.wdelta" "$T/a2.saved"
wait_for 10 bash -c '! [ -d "$1/archA/a3" ]' _ "$MNT"
check "a3 unavailable once its parent a2 is removed" bash -c '! [ -d "$1/archA/a3" ] && grep -q "a3.wdelta" "$1/.wdeltafs/status"' _ "$MNT"
mv "$T/a2.saved" "$SRC/archA/deep/a2.wdelta"
wait_for 10 test -d "$MNT/archA/a3"
check "a3 served again when a2 is back (byte-identical)" same "$MNT/archA/a3" "$T/a2/ft"
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG"
finish
