#!/usr/bin/env bash
# wdeltafs file handles, the way knfsd uses them when it re-exports the mount:
# name_to_handle_at on files and directories of the mount, drop the kernel's
# caches (echo 3 and echo 2 > /proc/sys/vm/drop_caches) so that the inodes
# are forgotten, then open_by_handle_at (a mount fd + the handle) and read:
# the bytes must equal the original fine-tune, a directory must list the same
# names.  Then the same handles after an unmount + remount of the same SRC
# (inode numbers are stable across remounts): reported, and when they open
# they must give the right bytes.  A handle of a file whose delta was replaced
# must never give the new delta's bytes (ESTALE or the old bytes).
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel (default build-asan).
# Exit: 0 pass, 77 skip (not root, no /dev/fuse, no FUSE export support), 1 fail.
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build-asan}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta" GENMODEL="$BIN/genmodel" WDELTAFS="$BIN/wdeltafs"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3 || true)
for b in "$WDELTA" "$GENMODEL" "$WDELTAFS"; do [ -x "$b" ] || { echo "SKIP: $b not built"; exit 77; }; done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (open_by_handle_at needs CAP_DAC_READ_SEARCH; drop_caches)"; exit 77; }
[ -c /dev/fuse ] || { echo "SKIP: /dev/fuse missing"; exit 77; }
command -v fusermount3 >/dev/null || { echo "SKIP: fusermount3 missing (apt-get install fuse3)"; exit 77; }
[ -n "$PY" ] || { echo "SKIP: python3 missing"; exit 77; }

T=$(mktemp -d /tmp/wdeltafs-nfs.XXXXXX)
SRC="$T/src" MNT="$T/mnt" LOG="$T/daemon.log"
mkdir -p "$SRC/team" "$MNT"
DPID="" WPID=""
cleanup() {
  [ -n "$WPID" ] && kill "$WPID" 2>/dev/null
  if timeout 5 mountpoint -q "$MNT" 2>/dev/null || grep -q " $MNT " /proc/self/mounts; then
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
  fi
  if [ -n "$DPID" ]; then
    for _ in $(seq 50); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DPID" 2>/dev/null
  fi
  rm -rf "$T"
}
trap cleanup EXIT
( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep 170 & sp=$!; wait $sp
  echo "watchdog: 170 s passed, killing the daemon"
  [ -s "$T/dpid" ] && kill -9 "$(cat "$T/dpid")" 2>/dev/null; fusermount3 -uz "$MNT" 2>/dev/null ) &
WPID=$!

nfail=0 npass=0
pass() { npass=$((npass + 1)); echo "ok - $*"; }
fail() { nfail=$((nfail + 1)); echo "not ok - $*"; }
check() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; echo 2 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
within() {
  local secs=$1; shift
  local end; end=$(awk -v a="$(now)" -v s="$secs" 'BEGIN { printf "%.3f", a + s }')
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    awk -v e="$end" -v n="$(now)" 'BEGIN { exit !(n > e) }' && return 1
    sleep 0.1
  done
}
OPTS=""
mount_fs() {
  "$WDELTAFS" "$SRC" "$MNT" -f -o "$OPTS" 2>>"$LOG" &
  DPID=$!; echo "$DPID" >"$T/dpid"
  for _ in $(seq 300); do
    timeout 2 mountpoint -q "$MNT" && return 0
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.1
  done
  echo "      mount failed; daemon log:"; tail -n 20 "$LOG" | sed 's/^/      | /'
  return 1
}
unmount_fs() {
  fusermount3 -u "$MNT" || return 1
  for _ in $(seq 200); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  wait "$DPID"; local rc=$?
  DPID=""
  return $rc
}

# ------------------------------------------------------------ handle helper (ctypes)
cat >"$T/fh.py" <<'PYEOF'
# fh.py save MNT LIST OUT: name_to_handle_at for each "relpath|original" line of LIST
# fh.py open MNT HANDLES:   open_by_handle_at each saved handle, compare; one line per handle
import ctypes, errno, hashlib, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
MAX_HANDLE_SZ = 128

class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]

def digest_path(p):
    if os.path.isdir(p):
        return "dir:" + ",".join(sorted(os.listdir(p)))
    return hashlib.sha256(open(p, "rb").read()).hexdigest()

cmd, mnt = sys.argv[1], sys.argv[2]
if cmd == "save":
    out = []
    for line in open(sys.argv[3]):
        rel, orig = line.rstrip("\n").split("|")
        fh = FileHandle(); fh.handle_bytes = MAX_HANDLE_SZ
        mid = ctypes.c_int()
        r = libc.name_to_handle_at(AT_FDCWD, os.path.join(mnt, rel).encode(), ctypes.byref(fh), ctypes.byref(mid), 0)
        if r != 0:
            e = ctypes.get_errno()
            print(f"{rel}: name_to_handle_at: {errno.errorcode.get(e, e)}")
            if e in (errno.EOPNOTSUPP, errno.ENOTSUP):
                sys.exit(77)
            sys.exit(1)
        st = os.stat(os.path.join(mnt, rel))
        out.append({"rel": rel, "orig": orig, "type": fh.handle_type, "ino": st.st_ino,
                    "handle": bytes(fh.f_handle[:fh.handle_bytes]).hex(), "want": digest_path(orig)})
        print(f"{rel}: handle type {fh.handle_type}, {fh.handle_bytes} bytes, ino {st.st_ino}")
    json.dump(out, open(sys.argv[4], "w"))
elif cmd == "open":
    hs = json.load(open(sys.argv[3]))
    mfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    for h in hs:
        raw = bytes.fromhex(h["handle"])
        fh = FileHandle(); fh.handle_bytes = len(raw); fh.handle_type = h["type"]
        ctypes.memmove(fh.f_handle, raw, len(raw))
        isdir = h["want"].startswith("dir:")
        flags = os.O_RDONLY | (os.O_DIRECTORY if isdir else 0)
        fd = libc.open_by_handle_at(mfd, ctypes.byref(fh), flags)
        if fd < 0:
            e = ctypes.get_errno()
            print(f"{h['rel']}\t{errno.errorcode.get(e, e)}")
            continue
        try:
            if isdir:
                got = "dir:" + ",".join(sorted(os.listdir(fd)))
            else:
                data = bytearray()
                while True:
                    b = os.read(fd, 1 << 20)
                    if not b:
                        break
                    data += b
                got = hashlib.sha256(bytes(data)).hexdigest()
            ino = os.fstat(fd).st_ino
            print(f"{h['rel']}\t{'RIGHT' if got == h['want'] else 'WRONG'}\tino={ino}{'' if ino == h['ino'] else ' (was %d)' % h['ino']}")
        except OSError as e:
            print(f"{h['rel']}\t{errno.errorcode.get(e.errno, e.errno)}")
        finally:
            os.close(fd)
PYEOF

# ------------------------------------------------------------ inputs, mount
S1=model-00001-of-00002.safetensors S2=model-00002-of-00002.safetensors
for g in g1:1 g2:2 g3:3; do
  n=${g%%:*} s=${g##*:}
  "$GENMODEL" "$T/$n" --params 2M --seed "$s" >/dev/null 2>"$T/err" || { cat "$T/err"; echo "genmodel failed"; exit 1; }
  "$WDELTA" create --base "$T/$n/base" --finetuned "$T/$n/ft" -o "$T/$n.wdelta" --quiet >/dev/null 2>"$T/err" \
    || { cat "$T/err"; echo "wdelta create failed"; exit 1; }
done
cp "$T/g1.wdelta" "$SRC/a.wdelta"
cp "$T/g2.wdelta" "$SRC/team/b.wdelta"
OPTS="base=$T/g1/base:$T/g2/base:$T/g3/base,cache_size=32M,cache_dir=$T/cache,scan_interval=1,allow_other"
: >"$LOG"
mount_fs && pass "mounted (wdeltafs -o $OPTS)" || { fail "mount"; exit 1; }

cat >"$T/list" <<EOF
a/$S1|$T/g1/ft/$S1
a/$S2|$T/g1/ft/$S2
a/config.json|$T/g1/ft/config.json
team/b/$S2|$T/g2/ft/$S2
team/b/model.safetensors.index.json|$T/g2/ft/model.safetensors.index.json
a|$MNT/a
team|$MNT/team
team/b|$MNT/team/b
EOF
"$PY" "$T/fh.py" save "$MNT" "$T/list" "$T/handles.json" >"$T/save.out" 2>&1; rc=$?
sed 's/^/      /' "$T/save.out"
if [ $rc -eq 77 ]; then echo "SKIP: name_to_handle_at on this kernel's FUSE returns EOPNOTSUPP"; exit 77; fi
check "name_to_handle_at on 5 files and 3 directories of the mount" [ $rc -eq 0 ]
[ $rc -eq 0 ] || { echo "$npass passed, $nfail failed"; exit 1; }

# open_by_handle_at after the caches are dropped; RESULT lines: rel<TAB>RIGHT|WRONG|ERRNO
open_all() { # LABEL EXPECT(all-right|report)
  drop_caches
  "$PY" "$T/fh.py" open "$MNT" "$T/handles.json" >"$T/open.out" 2>&1
  sed 's/^/      /' "$T/open.out"
}
open_all
n_right=$(grep -c $'\tRIGHT' "$T/open.out")
check "after drop_caches (3 and 2): all 8 handles open with open_by_handle_at and give the right bytes/listing" [ "$n_right" -eq 8 ]
check "no handle gives wrong bytes" [ "$(grep -c $'\tWRONG' "$T/open.out")" -eq 0 ]
check "inode numbers unchanged through the handles" [ "$(grep -c '(was' "$T/open.out")" -eq 0 ]

# ------------------------------------------------------------ remount
if unmount_fs; then pass "unmounted, daemon exited 0"; else fail "unmount / daemon exit status"; fi
mount_fs && pass "mounted again, same SRC" || { fail "mount again"; echo "$npass passed, $nfail failed"; exit 1; }
inos_same=1
while IFS='|' read -r rel _; do
  old=$("$PY" -c 'import json,sys; print(next(h["ino"] for h in json.load(open(sys.argv[1])) if h["rel"] == sys.argv[2]))' "$T/handles.json" "$rel")
  [ "$(stat -c %i "$MNT/$rel")" = "$old" ] || { inos_same=0; echo "      $rel: ino $(stat -c %i "$MNT/$rel"), was $old"; }
done <"$T/list"
check "inode numbers are the same after the remount" [ $inos_same -eq 1 ]
# handles are (node id, generation); node id = the stable inode number, so they may survive
"$PY" "$T/fh.py" open "$MNT" "$T/handles.json" >"$T/open.out" 2>&1   # no lookups before: cold
sed 's/^/      /' "$T/open.out"
n_right=$(grep -c $'\tRIGHT' "$T/open.out"); n_stale=$(grep -c $'\tESTALE' "$T/open.out")
echo "      after the remount: $n_right of 8 handles open and read right, $n_stale ESTALE"
check "after the remount: no handle gives wrong bytes" [ "$(grep -c $'\tWRONG' "$T/open.out")" -eq 0 ]
check "after the remount: every handle either opens right or is ESTALE (no other error)" [ $((n_right + n_stale)) -eq 8 ]
REMOUNT_RESULT="$n_right/8 right, $n_stale/8 ESTALE"

# ------------------------------------------------------------ a replaced delta
cp "$T/g3.wdelta" "$SRC/.a.tmp" && mv -f "$SRC/.a.tmp" "$SRC/a.wdelta"
if within 5 cmp -s "$MNT/a/$S1" "$T/g3/ft/$S1"; then pass "a.wdelta replaced by g3's delta: a/ serves g3"; else fail "a/ not replaced within 5 s"; fi
open_all
bad=0
for f in "a/$S1" "a/$S2" a/config.json; do
  r=$(grep -P "^\Q$f\E\t" "$T/open.out" | cut -f2)
  case $r in ESTALE|RIGHT) ;; *) bad=1; echo "      $f: $r (want ESTALE, or the old bytes)";; esac
done
check "handles of a replaced delta's files: ESTALE or the old version's bytes, never the new delta's" [ $bad -eq 0 ]
check "handles of untouched files and directories still open right" \
  [ "$(grep -E '^(team|team/b|a|team/b/[^	]*)	RIGHT' "$T/open.out" | wc -l)" -eq 5 ]
STALE_RESULT=$(grep -E "^a/" "$T/open.out" | cut -f1,2 | tr '\t' ' ' | paste -sd, -)

if unmount_fs; then pass "unmounted, daemon exited 0"; else fail "unmount / daemon exit status"; fi
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error' "$LOG"; then
  fail "sanitizer report in the daemon log"; grep -E -A 30 'ERROR: (Address|Leak)Sanitizer|runtime error' "$LOG" | head -n 60 | sed 's/^/      | /'
else pass "no sanitizer report in the daemon log"; fi
echo "# handles survive a remount: $REMOUNT_RESULT; after a delta replace: $STALE_RESULT"
echo "$npass passed, $nfail failed"
[ $nfail -eq 0 ]
