#!/usr/bin/env bash
# What a user sees when starting and browsing a mount (issue 14 items 4, 5, 7,
# 8, 9; issue 15 item 10):
#  - configuration errors on stderr before the daemon goes to the background,
#    with exit 3 when nothing can be served (a base that is not there, no
#    base, SRC or MOUNTPOINT missing) and nothing mounted; warnings on stderr
#    (a delta whose base is not given) while what can be served is mounted
#  - usage errors exit 2 and name the option: sizes (nan, inf, 1e30,
#    99999999T, -1), numbers (negative, junk, out of range), unknown -o
#    options; the options mount(8) passes (rw, nosuid, auto, _netdev,
#    x-systemd.*, ...) still mount
#  - -o base=A,base=B uses both bases
#  - lineage without a followable link inside the model directory: `du -L`
#    of a model counts the model only; .wdeltafs/lineage/NAME and the
#    user.wdelta.parent attribute name the parent
#  - the mount root, .wdeltafs and its entries carry real times, and a
#    directory's mtime moves when a model appears in it or vanishes
#  - a directory SRC/x/ next to SRC/x.wdelta: the served one keeps the name,
#    the other is listed unavailable naming both entries
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python

setup_mount_tmp wdeltafs-ux
start_watchdog 300

# ------------------------------------------------------------------ inputs
gen_pair "$T/g" --params 1M --seed 1 || die "genmodel failed"
gen_pair "$T/h" --params 1M --seed 2 --dtype f32 || die "genmodel failed"
gen_pair "$T/g2" --params 1M --seed 3 || die "genmodel failed"
create_delta "$T/g/base" "$T/g/ft" "$SRC/m.wdelta" || die "create failed"
create_delta "$T/g/base" "$T/g2/ft" "$SRC/c.wdelta" --parent "$SRC/m.wdelta" || die "create --parent failed"
create_delta "$T/h/base" "$T/h/ft" "$T/h.wdelta" || die "create failed"
CACHE="cache_dir=$T/cache"

# start WDELTAFS-ARGS...: wdeltafs as a user runs it (no -f: it goes to the
# background once mounted); RC = its exit status, ERR = its stderr file
start() {
  ERR="$T/start.err"
  timeout 60 "$WDELTAFS" "$@" >"$T/start.out" 2>"$ERR"; RC=$?
  cat "$T/start.out" >>"$ERR"
}
# stop: unmount MNT if mounted (the background daemon exits)
stop() {
  local p
  if timeout 5 mountpoint -q "$MNT"; then
    p=$(daemon_pids); fusermount3 -u "$MNT"; [ -n "$p" ] && wait_gone $p
  fi
  return 0
}
mounted() { timeout 5 mountpoint -q "$MNT"; }
err_lines() { grep -vcE '^\s*$' "$ERR"; }
show_err() { sed 's/^/      | /' "$ERR" | head -n 8; }
# refused DESC WANT-RC WORD... : the last start exited WANT-RC, nothing is
# mounted, stderr names every WORD and has no sanitizer report
refused() {
  local d=$1 want=$2 w ok=1; shift 2
  [ "$RC" -eq "$want" ] || ok=0
  mounted && ok=0
  for w in "$@"; do grep -qF -- "$w" "$ERR" || ok=0; done
  san_clean "$ERR" || ok=0
  if [ $ok = 1 ]; then pass "$d: exit $RC, $(head -n 1 "$ERR" | cut -c1-150)"
  else fail "$d (exit $RC, want $want; mounted: $(mounted && echo yes || echo no))"; show_err; fi
  stop
}

# ------------------------------------------------------------------ startup errors
echo "# startup errors: on stderr, non-zero, nothing mounted"
start "$SRC" "$MNT" -o "base=$T/nonexist,$CACHE"
refused "base=/nonexist (every delta needs it)" 3 "$T/nonexist"
start "$SRC" "$MNT" -o "$CACHE"
refused "no base= at all" 3 "base="
start "$T/nosrc" "$MNT" -o "base=$T/g/base,$CACHE"
refused "SRC missing" 3 "$T/nosrc"
start "$SRC" "$T/nomnt" -o "base=$T/g/base,$CACHE"
refused "MOUNTPOINT missing" 3 "$T/nomnt"
check "MOUNTPOINT missing: one error line, not two ($(err_lines))" [ "$(err_lines)" -eq 1 ]
start "$SRC" "$MNT" -o "base=$T/h/base,$CACHE"
refused "base= names a real model that no delta was made against" 3 "$SRC/m.wdelta" "$T/h/base"

echo "# usage errors: exit 2, naming the option"
start; refused "no arguments" 2 "usage"
start "$SRC"; refused "SRC without MOUNTPOINT" 2 "MOUNTPOINT"
for v in nan inf 1e30 99999999T 99999999999999999999 -1 1x 0x10 "" 1.5.G; do
  start "$SRC" "$MNT" -o "base=$T/g/base,$CACHE,cache_size=$v"
  refused "cache_size=$v" 2 "cache_size=$v" "K, M, G"
done
for o in scan_interval=-1 scan_interval=0 scan_interval=abc scan_interval=1e3 readahead=-1 readahead=65 readahead=x \
         readahead_threads=0 readahead_threads=17 readahead_threads=-3 v1_dtype=f16 frobnicate bogus=1; do
  start "$SRC" "$MNT" -o "base=$T/g/base,$CACHE,$o"
  refused "-o $o" 2 "${o%%=*}"
done

# ------------------------------------------------------------------ what does mount
echo "# sizes and options that are right, and the options mount(8) passes"
start "$SRC" "$MNT" -o "base=$T/g/base,$CACHE,cache_size=1.5G,scan_interval=1,readahead=0,readahead_threads=2,rw,nosuid,nodev,exec,auto,user,_netdev,nofail,defaults,noatime,x-systemd.automount,x-systemd.device-timeout=10"
if [ "$RC" -eq 0 ] && mounted; then pass "mount(8)'s standard options and valid values: mounted, exit 0"
else fail "mount with standard options (exit $RC)"; show_err; fi
check "m/ serves the fine-tune" same_model "$MNT/m" "$T/g/ft"
check "cache_size=1.5G is 1.5 GiB in the status file" \
  "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1]))["cache"]["capacity"]; sys.exit(c != 1.5*2**30)' "$MNT/.wdeltafs/status"
stop
for v in 0 4096 512K 64M 64MiB 1g 1T; do
  start "$SRC" "$MNT" -o "base=$T/g/base,$CACHE,cache_size=$v"
  if [ "$RC" -eq 0 ] && mounted; then pass "cache_size=$v accepted"; else fail "cache_size=$v (exit $RC)"; show_err; fi
  stop
done

echo "# a delta without its base: a warning on stderr, the rest mounted"
cp "$T/h.wdelta" "$SRC/orphan.wdelta"
start "$SRC" "$MNT" -o "base=$T/g/base,$CACHE"
if [ "$RC" -eq 0 ] && mounted; then pass "mounted (exit 0) although orphan.wdelta lacks its base"
else fail "mount with one delta lacking its base (exit $RC)"; show_err; fi
check "the warning on stderr names orphan.wdelta" grep -q "orphan.wdelta" "$ERR"
check "m/ is served" same_model "$MNT/m" "$T/g/ft"
stop

echo "# -o base=A,base=B: both bases"
start "$SRC" "$MNT" -o "base=$T/g/base,base=$T/h/base,$CACHE"
check "base=A,base=B: exit 0" [ "$RC" -eq 0 ]
check "the model on base A is served" same_model "$MNT/m" "$T/g/ft"
check "the model on base B is served" same_model "$MNT/orphan" "$T/h/ft"
check "both under .wdeltafs/bases" test -d "$MNT/.wdeltafs/bases/base" -a -d "$MNT/.wdeltafs/bases/base-2"
stop
rm -f "$SRC/orphan.wdelta"

# ------------------------------------------------------------------ lineage, times, name clash
echo "# lineage, times and name clashes on a running mount"
t_start=$(date +%s)
sleep 1.1
mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$T/g/base,$CACHE,scan_interval=1" && pass "mounted" || { fail "mount"; finish; }
xattr() { "$PY" -c 'import os,sys; print(os.getxattr(sys.argv[1], sys.argv[2]).decode())' "$1" "$2" 2>/dev/null; }
model_bytes=$(du -sb "$T/g2/ft" | cut -f1)
got=$(du -sLb "$MNT/c" 2>/dev/null | cut -f1)
check "du -sLb of chain link c/ counts c only ($got bytes; its fine-tune: $model_bytes)" \
  [ -n "$got" ] && [ "$got" -le $((model_bytes + model_bytes / 10)) ]
check "no symlink inside a model directory" bash -c '[ -z "$(find "$1/c" "$1/m" -type l)" ]' _ "$MNT"
check "find -L over the mount terminates without a loop warning" \
  bash -c 'timeout 20 find -L "$1" >/dev/null 2>"$2/find.err" && ! grep -qi loop "$2/find.err"' _ "$MNT" "$T"
check ".wdeltafs/lineage/c -> ../../m (c's parent model)" test "$(readlink "$MNT/.wdeltafs/lineage/c")" = "../../m"
check ".wdeltafs/lineage/m -> ../../.wdeltafs/bases/base" test "$(readlink "$MNT/.wdeltafs/lineage/m")" = "../../.wdeltafs/bases/base"
check "lineage link c leads to m's files" same_model "$MNT/.wdeltafs/lineage/c" "$T/g/ft"
check "user.wdelta.parent of c is m" test "$(xattr "$MNT/c" user.wdelta.parent)" = "m"
check "user.wdelta.parent of m is .wdeltafs/bases/base" test "$(xattr "$MNT/m" user.wdelta.parent)" = ".wdeltafs/bases/base"
check "following user.wdelta.parent from c reaches the base" \
  same_model "$MNT/$(xattr "$MNT/$(xattr "$MNT/c" user.wdelta.parent)" user.wdelta.parent)" "$T/g/base"

for p in "" .wdeltafs .wdeltafs/status .wdeltafs/bases .wdeltafs/lineage; do
  mt=$(stat -c %Y "$MNT/$p")
  check "mtime of /$p is the mount's time or later ($mt >= $t_start)" [ "$mt" -ge "$t_start" ]
done
root0=$(stat -c %Y "$MNT"); lin0=$(stat -c %Y "$MNT/.wdeltafs/lineage")
sleep 1.1
t_add=$(date +%s)
mkdir -p "$SRC/team"
cp "$T/h.wdelta" "$SRC/.n.tmp" && mv "$SRC/.n.tmp" "$SRC/new.wdelta"
create_delta "$T/g/base" "$T/g2/ft" "$SRC/team/x.wdelta"
# new.wdelta (base h not given) stays unavailable; team/x appears
wait_for 10 test -d "$MNT/team/x"
sleep 1.2 # attributes may be cached for 1 s (the kernel is told, but a stat may race the scan)
root1=$(stat -c %Y "$MNT")
check "root mtime moves when team/ appears ($root0 -> $root1, added at $t_add)" [ "$root1" -ge "$t_add" ]
check "team/ has a real mtime" [ "$(stat -c %Y "$MNT/team")" -ge "$t_add" ]
check ".wdeltafs/lineage mtime moves too" [ "$(stat -c %Y "$MNT/.wdeltafs/lineage")" -ge "$t_add" ]
check ".wdeltafs/lineage/team/x -> ../../../.wdeltafs/bases/base" \
  test "$(readlink "$MNT/.wdeltafs/lineage/team/x")" = "../../../.wdeltafs/bases/base"
root1b=$(stat -c %Y "$MNT")
sleep 2.5
check "root mtime unchanged by rescans that change nothing" [ "$(stat -c %Y "$MNT")" -eq "$root1b" ]

# a directory m/ appears beside the served m.wdelta
mkdir -p "$SRC/m"
create_delta "$T/g/base" "$T/g2/ft" "$SRC/m/y.wdelta"
sleep 3.5
check "m/ still serves m.wdelta's model after SRC/m/ appeared" same_model "$MNT/m" "$T/g/ft"
check "m/y is not shown" test ! -e "$MNT/m/y"
cat "$MNT/.wdeltafs/status" >"$T/status.json"
check "status: the clash names both entries" "$PY" - "$T/status.json" "$SRC" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1])); src = sys.argv[2]
r = " ".join(u["reason"] + " " + u["delta"] for u in s["unavailable"])
assert src + "/m.wdelta" in r and src + "/m/" in r, s["unavailable"]
EOF
check "the daemon log names both entries" grep -q "$SRC/m/.*$SRC/m.wdelta\|$SRC/m.wdelta.*$SRC/m/" "$LOG"
# and the other way: team/ is served; team.wdelta appears beside it
cp "$SRC/m.wdelta" "$SRC/team.wdelta"
sleep 3.5
check "team/ keeps serving team/x after team.wdelta appeared" same_model "$MNT/team/x" "$T/g2/ft"
cat "$MNT/.wdeltafs/status" >"$T/status.json"
check "status: team.wdelta unavailable, naming the directory team/" "$PY" - "$T/status.json" "$SRC" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1])); src = sys.argv[2]
u = {x["delta"]: x["reason"] for x in s["unavailable"]}
r = u[src + "/team.wdelta"]
assert src + "/team/" in r, r
EOF
# a model vanishes: the root's listing changed, so does its time
sleep 1.1
t_rm=$(date +%s)
rm -f "$SRC/c.wdelta"
wait_for 10 test ! -e "$MNT/c"
sleep 1.2
check "root mtime moves when c/ vanishes ($(stat -c %Y "$MNT") >= $t_rm)" [ "$(stat -c %Y "$MNT")" -ge "$t_rm" ]
check ".wdeltafs/lineage/c is gone with it" test ! -L "$MNT/.wdeltafs/lineage/c"
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG"

# at mount time both are new: the rule is the .wdelta file keeps the name
start "$SRC" "$MNT" -o "base=$T/g/base,$CACHE"
check "fresh mount with both team/ and team.wdelta: team is the model (rule: the file wins)" \
  same_model "$MNT/team" "$T/g/ft"
stop
finish
