#!/usr/bin/env bash
# wdeltafs end to end: a generated model pair (and ../shared/models/pairB when
# present) stored as deltas, mounted, and compared byte for byte with the
# fine-tunes; listing, sizes, stable inodes across a remount, xattrs, the
# status file, a delta whose base is missing, EROFS on writes, 10,000 random
# reads from 8 threads, a clean unmount (exit 0, no sanitizer report), and a
# clean stop on SIGTERM.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python

setup_mount_tmp wdeltafs-basic
mkdir -p "$SRC/sub"
# watchdog: a hung daemon must not hang the test (calls on the mount then fail)
start_watchdog 170

# ------------------------------------------------------------------ inputs
echo "# generating models and deltas in $T"
gen_pair "$T/gen" --params 3M || die "genmodel failed"
gen_pair "$T/gen7" --params 1M --seed 7 || die "genmodel --seed 7 failed"
# a non-weight file only the base has: the mount must show it too
echo "base-only notes" >"$T/gen/base/NOTES.md"
MODELS=(gen)          # names under the mount
declare -A FTDIR BASEDIR
FTDIR[gen]="$T/gen/ft"; BASEDIR[gen]="$T/gen/base"
check "create gen.wdelta" create_delta "$T/gen/base" "$T/gen/ft" "$SRC/gen.wdelta"
check "create orphan.wdelta (its base is not passed to the mount)" \
  create_delta "$T/gen7/base" "$T/gen7/ft" "$SRC/orphan.wdelta"
BASES="$T/gen/base"
PB="$SHARED/models/pairB"
if [ -d "$PB/base" ] && [ -d "$PB/ft" ]; then
  check "create sub/pairB.wdelta" create_delta "$PB/base" "$PB/ft" "$SRC/sub/pairB.wdelta"
  MODELS+=(sub/pairB); FTDIR[sub/pairB]="$PB/ft"; BASEDIR[sub/pairB]="$PB/base"
  BASES="$BASES:$PB/base"
else
  echo "note: $PB absent; skipping the pairB parts (generated model only)"
fi
OPTS="base=$BASES,cache_size=64M,cache_dir=$T/cache"

# ------------------------------------------------------------------ mount
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS"; then pass "mounted (wdeltafs -f -o $OPTS)"; else fail "mount"; finish; fi

# ------------------------------------------------------------------ contents
# expected listing of a model: ft files + base non-weight files the ft lacks
expected_list() {
  local ft=$1 base=$2 f n
  { for f in "$ft"/*; do [ -f "$f" ] && basename "$f"; done
    for f in "$base"/*; do
      n=$(basename "$f")
      [ -f "$f" ] || continue
      case "$n" in *.safetensors|*.safetensors.index.json) continue ;; esac
      [ -e "$ft/$n" ] || echo "$n"
    done; } | LC_ALL=C sort
}
for m in "${MODELS[@]}"; do
  ft=${FTDIR[$m]} base=${BASEDIR[$m]}
  expected_list "$ft" "$base" >"$T/want.ls"
  # lineage is outside the model directory: .wdeltafs/lineage/NAME, a symlink to its base's directory
  (cd "$MNT/$m" 2>/dev/null && ls -A | LC_ALL=C sort) >"$T/got.ls"
  check "$m: .wdeltafs/lineage/$m is a symlink to its base under .wdeltafs/bases" \
    bash -c '[ -L "$1" ] && case "$(readlink "$1")" in */.wdeltafs/bases/*) [ -d "$1" ] ;; *) false ;; esac' _ "$MNT/.wdeltafs/lineage/$m"
  if cmp -s "$T/want.ls" "$T/got.ls"; then pass "$m: ls lists exactly the ft files + base extras ($(wc -l <"$T/got.ls") files)"
  else fail "$m: ls lists exactly the ft files + base extras"; diff "$T/want.ls" "$T/got.ls" | sed 's/^/      /'; fi
  bad=0
  while read -r n; do
    if [ -e "$ft/$n" ]; then orig="$ft/$n"; else orig="$base/$n"; fi
    if ! cmp "$orig" "$MNT/$m/$n" >"$T/cmp" 2>&1; then echo "      $n: $(cat "$T/cmp")"; bad=1; fi
    s1=$(stat -c %s "$orig"); s2=$(stat -c %s "$MNT/$m/$n" 2>/dev/null)
    if [ "$s1" != "$s2" ]; then echo "      $n: size $s2, want $s1"; bad=1; fi
  done <"$T/want.ls"
  check "$m: every file cmp-equal to the original, sizes equal (stat)" [ $bad -eq 0 ]
  # ls -l sizes
  ls -l "$MNT/$m" | awk 'NF >= 9 && $1 !~ /^l/ { print $9, $5 }' | LC_ALL=C sort >"$T/got.sz"
  while read -r n; do
    if [ -e "$ft/$n" ]; then echo "$n $(stat -c %s "$ft/$n")"; else echo "$n $(stat -c %s "$base/$n")"; fi
  done <"$T/want.ls" | LC_ALL=C sort >"$T/want.sz"
  if cmp -s "$T/want.sz" "$T/got.sz"; then pass "$m: ls -l sizes equal the originals"
  else fail "$m: ls -l sizes"; diff "$T/want.sz" "$T/got.sz" | sed 's/^/      /'; fi
  # modes follow the .wdelta (0644 -> dir 0555, files 0444)
  dm=$(stat -c %a "$MNT/$m"); fm=$(stat -c %a "$MNT/$m/config.json")
  check "$m: dir mode 555 and file mode 444 for a 0644 .wdelta (got $dm, $fm)" [ "$dm.$fm" = 555.444 ]
done

# ------------------------------------------------------------------ xattrs
for m in "${MODELS[@]}"; do
  if getfattr -d -m user.wdelta "$MNT/$m" >"$T/xattr" 2>"$T/err"; then
    miss=""
    for a in codec base_hash result_hash stored_size ratio; do
      grep -q "^user\.wdelta\.$a=\".\+\"" "$T/xattr" || miss="$miss $a"
    done
    check "$m: getfattr shows the 5 user.wdelta attributes${miss:+ (missing:$miss)}" [ -z "$miss" ]
    ss=$(sed -n 's/^user\.wdelta\.stored_size="\(.*\)"/\1/p' "$T/xattr")
    case $m in gen) dpath="$SRC/gen.wdelta" ;; *) dpath="$SRC/$m.wdelta" ;; esac
    check "$m: user.wdelta.stored_size ($ss) == size of the .wdelta" [ "$ss" = "$(stat -c %s "$dpath")" ]
    bh=$(sed -n 's/^user\.wdelta\.base_hash="\(.*\)"/\1/p' "$T/xattr")
    check "$m: user.wdelta.base_hash == wdelta hash of the base" [ "$bh" = "$("$WDELTA" hash "${BASEDIR[$m]}" 2>/dev/null)" ]
  else
    fail "$m: getfattr -d -m user.wdelta: $(cat "$T/err")"
  fi
done

# ------------------------------------------------------------------ status
if cat "$MNT/.wdeltafs/status" >"$T/status.json" 2>"$T/err"; then
  "$PY" - "$T/status.json" "$SRC/orphan.wdelta" "${MODELS[@]}" >"$T/st.out" 2>&1 <<'PYEOF'
import json, sys
doc = json.load(open(sys.argv[1]))
orphan, names = sys.argv[2], sys.argv[3:]
got = sorted(m["name"] for m in doc["models"])
assert got == sorted(names), f"models {got}, want {sorted(names)}"
un = doc.get("unavailable", [])
hit = [u for u in un if u.get("delta") == orphan]
assert hit, f"{orphan} not in unavailable: {un}"
assert hit[0].get("reason"), "unavailable entry without a reason"
print("reason:", hit[0]["reason"])
for k in ("bases", "cache", "open_files"):
    assert k in doc, f"no {k!r} key"
assert all(b.get("state") == "ready" for b in doc["bases"]), doc["bases"]
for k in ("capacity", "used", "hits", "misses", "decoded_bytes", "decode_seconds"):
    assert k in doc["cache"], f"cache has no {k!r}"
assert doc["cache"]["capacity"] == 64 << 20, f"capacity {doc['cache']['capacity']}"
PYEOF
  rc=$?
  sed 's/^/      /' "$T/st.out"
  check "status is JSON, names the models, lists orphan.wdelta as unavailable, cache capacity 64M" [ $rc -eq 0 ]
else
  fail "read $MNT/.wdeltafs/status: $(cat "$T/err")"
fi
ls -A "$MNT" >"$T/root.ls"
check "orphan (base not passed) is absent from ls MNT" not grep -qx orphan "$T/root.ls"
check "stat MNT/orphan fails" not stat "$MNT/orphan"
check "ls MNT shows gen" grep -qx gen "$T/root.ls"
[ -d "$PB/ft" ] && check "ls MNT/sub shows pairB" grep -qx pairB <(ls -A "$MNT/sub")

# ------------------------------------------------------------------ writes fail with EROFS
erofs() { # DESC CMD...: must fail, message "Read-only file system"
  local d=$1; shift
  if "$@" >"$T/w.out" 2>&1; then fail "$d succeeded"; return; fi
  if grep -q 'Read-only file system' "$T/w.out"; then pass "$d -> $(head -n1 "$T/w.out")"
  else fail "$d: want 'Read-only file system', got: $(head -n1 "$T/w.out")"; fi
}
erofs "touch MNT/gen/x" touch "$MNT/gen/x"
erofs "echo >> MNT/gen/config.json" bash -c "echo x >> '$MNT/gen/config.json'"
erofs "truncate MNT/gen/config.json" truncate -s 0 "$MNT/gen/config.json"
erofs "rm MNT/gen/config.json" rm -f "$MNT/gen/config.json"
erofs "mkdir MNT/newdir" mkdir "$MNT/newdir"
erofs "mv MNT/gen MNT/gen2" mv "$MNT/gen" "$MNT/gen2"
erofs "chmod MNT/gen/config.json" chmod 600 "$MNT/gen/config.json"
erofs "setfattr on MNT/gen" setfattr -n user.x -v 1 "$MNT/gen"
erofs "ln -s in MNT/gen" ln -s config.json "$MNT/gen/link"
erofs "touch MNT/.wdeltafs/status" touch "$MNT/.wdeltafs/status"
check "config.json unchanged after the write attempts" cmp -s "$MNT/gen/config.json" "$T/gen/ft/config.json"

# ------------------------------------------------------------------ random reads
RR=()
if [ -d "$MNT/sub/pairB" ]; then rm_model=sub/pairB; else rm_model=gen; fi
for f in "${FTDIR[$rm_model]}"/*.safetensors; do RR+=("$MNT/$rm_model/$(basename "$f")" "$f"); done
echo "# 10000 random reads over $rm_model's safetensors files"
"$PY" "$REPO/tests/integration/randread.py" --reads 10000 --threads 8 --max-len 262144 "${RR[@]}" >"$T/rr.out" 2>&1
rc=$?
sed 's/^/      /' "$T/rr.out"
check "10,000 random preads from 8 threads equal the original ($rm_model)" [ $rc -eq 0 ]

# ------------------------------------------------------------------ inodes across a remount
ino_list() { for m in "${MODELS[@]}"; do stat -c "%i %n" "$MNT/$m" "$MNT/$m"/*; done; }
ino_list >"$T/ino1"
if unmount_wdeltafs "$MNT"; then pass "fusermount3 -u: daemon exited 0"; else fail "fusermount3 -u: daemon exit"; fi
check "the mountpoint is no longer mounted" not timeout 2 mountpoint -q "$MNT"
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS"; then
  pass "remounted"
  ino_list >"$T/ino2"
  if cmp -s "$T/ino1" "$T/ino2"; then pass "inodes of model dirs and files stable across unmount/remount ($(wc -l <"$T/ino1") checked)"
  else fail "inodes stable across unmount/remount"; diff "$T/ino1" "$T/ino2" | head -n 10 | sed 's/^/      /'; fi
  check "after remount: gen/model-00001-of-00002.safetensors still equal" \
    cmp -s "$MNT/gen/model-00001-of-00002.safetensors" "$T/gen/ft/model-00001-of-00002.safetensors"
  if unmount_wdeltafs "$MNT"; then pass "second fusermount3 -u: daemon exited 0"; else fail "second unmount: daemon exit"; fi
else
  fail "remount"
fi

# ------------------------------------------------------------------ SIGTERM
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS"; then
  pass "third mount"
  kill -TERM "$DPID"
  if ! wait_daemon 20; then
    fail "SIGTERM: daemon still running after 20 s"
  else
    rc=$DAEMON_RC
    check "SIGTERM: the mount is gone" not timeout 2 mountpoint -q "$MNT"
    check "SIGTERM: daemon exited 0 (got $rc)" [ $rc -eq 0 ]
  fi
else
  fail "third mount"
fi

# ------------------------------------------------------------------ daemon log
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"

finish
