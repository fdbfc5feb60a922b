#!/bin/bash
# wdelta find-base FILE DIR...: which DIRs are FILE's base.
#  - generated models: the base out of three candidates (another model's base,
#    the fine-tune, the base), exit 0, only it printed; none of them: exit 3,
#    nothing printed; a directory that is no model is passed over (its error
#    in --json); a chain link's base is its chain root's; a link whose parent
#    is missing: exit 3; a missing FILE: 3; no DIR: 2;
#  - the digest cache: a first run hashes (cached false) and stores, a second
#    reads it (cached true), a changed shard is hashed again; the mount writes
#    the same cache (cache_dir=): find-base then reads what the mount stored;
#  - wdelta inspect MODEL_DIR inside a mount describes the delta behind it
#    (text and --json: model_dir, delta); outside a mount: exit 3;
#  - ../shared pairB (when present): pairB/base out of pairB/base, pairB/ft,
#    pairS/base (pairS/base is a copy of pairB's base, so it is one too).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_python
setup_mount_tmp wdfindbase
W=$WDELTA
C="$T/cache"

gen_pair "$T/g" --params 300k --shards 2 --seed 11 || die "genmodel failed"
gen_pair "$T/h" --params 300k --shards 2 --seed 12 || die "genmodel failed"
create_delta "$T/g/base" "$T/g/ft" "$SRC/d.wdelta" || die "create failed"
mkdir -p "$T/empty"

"$W" find-base --cache-dir "$C" "$SRC/d.wdelta" "$T/h/base" "$T/g/ft" "$T/g/base" >"$T/o1" 2>"$T/e1"; rc=$?
check "generated: picks g/base out of h/base, g/ft, g/base (exit 0, only it printed)" \
  [ "$rc/$(cat "$T/o1")" = "0/$T/g/base" ]
"$W" find-base --cache-dir "$C" "$SRC/d.wdelta" "$T/h/base" "$T/g/ft" >"$T/o2" 2>"$T/e2"; rc=$?
check "generated: none of h/base, g/ft is: exit 3, nothing on stdout, says so" \
  bash -c '[ "$1" = 3 ] && [ ! -s "$2" ] && grep -q "none of the 2 directories" "$3"' _ "$rc" "$T/o2" "$T/e2"
"$W" find-base --json --cache-dir "$C" "$SRC/d.wdelta" "$T/empty" "$T/g/base" >"$T/j1" 2>/dev/null; rc=$?
check "--json: valid, base g/base, the empty dir not a model (its error named)" \
  "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
c = d["candidates"]
assert sys.argv[3] == "0" and d["base"] == sys.argv[2] and d["bases"] == [sys.argv[2]], d
assert c[0]["hash"] is None and c[0]["error"] and not c[0]["match"] and c[1]["match"], c
assert d["base_hash_kind"] == "model identity"
' "$T/j1" "$T/g/base" "$rc"

# the cache: g/base was hashed and stored by the first run
cached() { "$W" find-base --json --cache-dir "$C" "$SRC/d.wdelta" "$T/g/base" |
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)["candidates"][0]["cached"])'; }
check "cache: a later run reads g/base's hash from the cache" [ "$(cached)" = True ]
check "cache: one digest file per directory, mode 0600" \
  bash -c 'n=$(ls "$1"/base-*.digest | wc -l); [ "$n" -ge 2 ] && [ "$(stat -c %a "$1"/base-*.digest | sort -u)" = 600 ]' _ "$C"
touch -d '2001-01-01' "$T/g/base/model-00001-of-00002.safetensors"
check "cache: a shard with a new mtime is hashed again" [ "$(cached)" = False ]
check "cache: ... and then read from the cache" [ "$(cached)" = True ]
"$W" find-base --no-cache --json "$SRC/d.wdelta" "$T/g/base" >"$T/j2"
check "--no-cache: hashed, not cached" "$PY" -c 'import json,sys; assert json.load(open(sys.argv[1]))["candidates"][0]["cached"] is False' "$T/j2"

# chains: a link's base is its root's
create_delta "$T/g/base" "$T/h/ft" "$SRC/l2.wdelta" --parent "$SRC/d.wdelta" || die "create link failed"
check "a chain link: its base is the root's (g/base, not g/ft it was made against)" \
  bash -c '[ "$("$1" find-base --cache-dir "$2" "$3" "$4" "$5" "$6")" = "$6" ]' _ "$W" "$C" "$SRC/l2.wdelta" "$T/g/ft" "$T/h/base" "$T/g/base"
mkdir -p "$T/alone" && cp "$SRC/l2.wdelta" "$T/alone/"
"$W" find-base --cache-dir "$C" "$T/alone/l2.wdelta" "$T/g/base" >/dev/null 2>"$T/e3"; rc=$?
check "a link without its parent: exit 3, the parent named" bash -c '[ "$1" = 3 ] && grep -q "d.wdelta" "$2"' _ "$rc" "$T/e3"
"$W" find-base "$T/none.wdelta" "$T/g/base" >/dev/null 2>&1; rc=$?
check "a missing FILE: exit 3" [ "$rc" = 3 ]
"$W" find-base "$SRC/d.wdelta" >/dev/null 2>&1; rc=$?
check "no DIR: exit 2" [ "$rc" = 2 ]

# the mount keeps its digests in the same cache
require_fuse
C2="$T/cache2"
mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$T/g/base" "cache_dir=$C2" || die "mount failed"
check "the mount stores g/base's digest in cache_dir" wait_for 30 bash -c 'ls "$1"/base-*.digest' _ "$C2"
check "find-base reads the digest the mount stored (cached true at its first run)" \
  bash -c '"$1" find-base --json --cache-dir "$2" "$3" "$4" | "$5" -c "import json,sys; d=json.load(sys.stdin); assert d[\"candidates\"][0][\"cached\"] and d[\"base\"], d"' \
  _ "$W" "$C2" "$SRC/d.wdelta" "$T/g/base" "$PY"
"$W" inspect "$MNT/d" >"$T/i1" 2>&1; rc=$?
check "inspect MODEL_DIR in the mount: the delta behind it" \
  bash -c '[ "$1" = 0 ] && grep -q "^model dir: .*served by wdeltafs" "$2" && grep -q "^file: .*d.wdelta" "$2"' _ "$rc" "$T/i1"
check "inspect --json MODEL_DIR: model_dir, delta, the delta's result hash" \
  bash -c '"$1" inspect --json "$2" | "$3" -c "import json,sys; d=json.load(sys.stdin); assert d[\"model_dir\"] == sys.argv[1] and d[\"delta\"].endswith(\"d.wdelta\") and d[\"result_hash\"] == sys.argv[2], d" "$2" "$4"' \
  _ "$W" "$MNT/d" "$PY" "$("$W" hash "$T/g/ft")"
"$W" inspect "$T/g/base" >/dev/null 2>"$T/e4"; rc=$?
check "inspect DIR outside a mount: exit 3, says why" bash -c '[ "$1" = 3 ] && grep -q "not a model directory served by wdeltafs" "$2"' _ "$rc" "$T/e4"
unmount_wdeltafs "$MNT"

# ../shared: pairB's base out of three
PB="$SHARED/models/pairB" PS="$SHARED/models/pairS"
if [ -d "$PB/base" ] && [ -d "$PB/ft" ] && [ -d "$PS/base" ]; then
  create_delta "$PB/base" "$PB/ft" "$T/pairB.wdelta" || die "create pairB failed"
  "$W" find-base --json --cache-dir "$C" "$T/pairB.wdelta" "$PB/ft" "$PS/base" "$PB/base" >"$T/jb"; rc=$?
  check "pairB: the bases among pairB/ft, pairS/base, pairB/base are pairS/base (a copy) and pairB/base" \
    "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert sys.argv[2] == "0" and d["bases"] == [sys.argv[4], sys.argv[3]], d
assert not d["candidates"][0]["match"]
' "$T/jb" "$rc" "$PB/base" "$PS/base"
  "$W" find-base --cache-dir "$C" "$T/pairB.wdelta" "$PB/ft" >/dev/null 2>&1; rc=$?
  check "pairB: pairB/ft alone is not its base (exit 3)" [ "$rc" = 3 ]
else
  echo "note: ../shared/models absent; the pairB part is skipped (generated models cover the rest)"
fi
finish
