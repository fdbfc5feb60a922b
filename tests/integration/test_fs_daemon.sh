#!/usr/bin/env bash
# wdeltafs as a daemon: background mode (returns once mounted, fusermount3 -u
# stops it), SIGTERM with a file open (unmounts, exits 0, no leak report),
# systemd readiness (READY=1 on $NOTIFY_SOCKET once mounted), the on-disk
# base digest cache (used when the base is unchanged, recomputed when a
# shard's mtime changes), and an /etc/fstab-style line with fstab-only
# options (_netdev, nofail) mounted through mount(8) and mount.fuse3; and,
# mounted allow_other, a second user (created here, removed after) cannot
# read a model whose .wdelta is 0600 root but reads one that is 0644.
# Env: WDELTA_BIN (default build-asan).  Exit: 0 pass, 77 skip, 1 fail.
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build-asan}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta" GENMODEL="$BIN/genmodel" WDELTAFS="$BIN/wdeltafs"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3 || true)
for b in "$WDELTA" "$GENMODEL" "$WDELTAFS"; do [ -x "$b" ] || { echo "SKIP: $b not built"; exit 77; }; done
[ -c /dev/fuse ] || { echo "SKIP: /dev/fuse missing"; exit 77; }
command -v fusermount3 >/dev/null || { echo "SKIP: fusermount3 missing (apt-get install fuse3)"; exit 77; }
[ -n "$PY" ] || { echo "SKIP: python3 missing"; exit 77; }

T=$(mktemp -d /tmp/wdeltafs-daemon.XXXXXX)
SRC="$T/src" MNT="$T/mnt" LOG="$T/daemon.log"
mkdir -p "$SRC" "$MNT"
DPID="" INSTALLED=""
daemon_pids() { # processes whose command line names our SRC (never killed by name: by pid only)
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "wdeltafs $SRC " && echo "${p#/proc/}"
  done
}
cleanup() {
  exec 3<&- 2>/dev/null
  if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null; fi
  local p
  for p in $DPID $(daemon_pids); do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  [ -n "$INSTALLED" ] && rm -f "$INSTALLED"
  rm -rf "$T"
}
trap cleanup EXIT
nfail=0 npass=0
pass() { npass=$((npass + 1)); echo "ok   - $*"; }
fail() { nfail=$((nfail + 1)); echo "FAIL - $*"; }
check() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
wait_gone() { # PID...: until none runs (10 s)
  local p alive
  for _ in $(seq 100); do
    alive=0; for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0; sleep 0.1
  done
  return 1
}
san_clean() { [ -z "$(grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error' "$1")" ]; }

"$GENMODEL" "$T/g" --params 1M >/dev/null 2>&1 || { echo "genmodel failed"; exit 1; }
BASE="$T/g/base" FT="$T/g/ft"
"$WDELTA" create --base "$BASE" --finetuned "$FT" -o "$SRC/m.wdelta" --quiet || exit 1
OPTS="base=$BASE,cache_dir=$T/cache"
same() { local f; for f in "$FT"/*; do cmp -s "$f" "$MNT/m/$(basename "$f")" || return 1; done; }

# ---- background mode
if "$WDELTAFS" "$SRC" "$MNT" -o "$OPTS" 2>"$LOG"; then pass "wdeltafs without -f returned 0"; else fail "wdeltafs without -f: $(cat "$LOG")"; fi
check "mounted when the command returns" mountpoint -q "$MNT"
check "background daemon serves the model" same
pids=$(daemon_pids)
check "a background daemon process runs ($pids)" test -n "$pids"
check "its stderr stays quiet (logs go to syslog)" [ ! -s "$LOG" ]
fusermount3 -u "$MNT"
check "fusermount3 -u stops the background daemon" wait_gone $pids

# ---- digest cache
digest=$(ls "$T/cache"/*.digest 2>/dev/null | head -n 1)
check "the base digest is cached in cache_dir ($(basename "${digest:-none}"))" test -n "$digest"
if [ -n "$digest" ]; then
  check "cached digest == wdelta hash of the base" [ "$(sed -n 2p "$digest")" = "$("$WDELTA" hash "$BASE")" ]
  # a wrong digest under the right key: a mount that trusts the cache cannot match the delta
  sed -i '2s/.*/0000000000000000000000000000000000000000000000000000000000000000/' "$digest"
  "$WDELTAFS" "$SRC" "$MNT" -f -o "$OPTS" 2>>"$LOG" & DPID=$!
  for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
  check "unchanged base: the cached digest is used, not recomputed (m not served)" test ! -e "$MNT/m"
  fusermount3 -u "$MNT"; wait "$DPID"; DPID=""
  touch "$BASE"/model-00001-of-00002.safetensors
  "$WDELTAFS" "$SRC" "$MNT" -f -o "$OPTS" 2>>"$LOG" & DPID=$!
  for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
  check "after touching a base shard the digest is recomputed (m served again)" same
  check "and the cache file holds the right digest again" [ "$(sed -n 2p "$digest")" = "$("$WDELTA" hash "$BASE")" ]
  fusermount3 -u "$MNT"; wait "$DPID"; DPID=""
fi

# ---- SIGTERM with a file open
"$WDELTAFS" "$SRC" "$MNT" -f -o "$OPTS" 2>>"$LOG" & DPID=$!
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
exec 3<"$MNT/m/model-00001-of-00002.safetensors"
head -c 4096 <&3 >/dev/null
kill -TERM "$DPID"
wait_gone "$DPID"
wait "$DPID"; rc=$?; DPID=""
exec 3<&-
check "SIGTERM with a file open: daemon exits 0 (got $rc)" [ $rc -eq 0 ]
check "SIGTERM: the mount is gone" bash -c "! mountpoint -q '$MNT'"
check "no sanitizer report so far (incl. leaks at exit)" san_clean "$LOG"

# ---- Type=notify readiness
"$PY" - "$WDELTAFS" "$SRC" "$MNT" "$OPTS" "$T/notify.sock" >"$T/notify.out" 2>>"$LOG" <<'PYEOF'
import os, socket, subprocess, sys, time
exe, src, mnt, opts, path = sys.argv[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(60)
env = dict(os.environ, NOTIFY_SOCKET=path)
p = subprocess.Popen([exe, src, mnt, "-f", "-o", opts], env=env, stderr=sys.stderr)
try:
    msg = s.recv(4096).decode()
    mounted = os.path.ismount(mnt)
    print(f"got {msg!r}, mounted={mounted}")
    ok = "READY=1" in msg and mounted and os.path.exists(os.path.join(mnt, "m", "config.json"))
finally:
    subprocess.run(["fusermount3", "-u", mnt])
    rc = p.wait(timeout=30)
print(f"daemon exit {rc}")
sys.exit(0 if ok and rc == 0 else 1)
PYEOF
rc=$?; sed 's/^/      /' "$T/notify.out"
check "NOTIFY_SOCKET: READY=1 arrives once the mount serves the model" [ $rc -eq 0 ]

# ---- an fstab line through mount(8) -> mount.fuse3 -> wdeltafs on PATH
MOUNT_FUSE=$(PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v mount.fuse3 || true)
if [ "$(id -u)" != 0 ] || [ -z "$MOUNT_FUSE" ]; then
  echo "note: SKIP fstab part (needs root and mount.fuse3)"
else
  if ! PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v wdeltafs >/dev/null; then
    install -m 755 "$WDELTAFS" /usr/local/bin/wdeltafs && INSTALLED=/usr/local/bin/wdeltafs
  fi
  echo "$SRC $MNT fuse.wdeltafs $OPTS,allow_other,_netdev,nofail 0 0" >"$T/fstab"
  if env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
       timeout 60 mount -T "$T/fstab" "$MNT" >"$T/mount.out" 2>&1; then
    pass "mount -T FSTAB MNT (fuse.wdeltafs with _netdev,nofail) returned 0"
  else
    fail "mount -T FSTAB: $(cat "$T/mount.out")"
  fi
  check "fstab mount serves the model" same
  check "fstab mount is fuse.wdeltafs, ro, allow_other" \
    bash -c "findmnt -n -o FSTYPE,OPTIONS '$MNT' | grep -q '^fuse.wdeltafs *ro,.*allow_other'"
  pids=$(daemon_pids)
  umount "$MNT" 2>"$T/err"; check "umount MNT ($(cat "$T/err"))" bash -c "! mountpoint -q '$MNT'"
  check "the daemon exits after umount" wait_gone $pids
  [ -n "$INSTALLED" ] && rm -f "$INSTALLED" && INSTALLED=""
fi

# ---- a second user cannot read a model whose delta is 0600 root
TUSER=wdfs$$
if [ "$(id -u)" != 0 ] || ! command -v useradd >/dev/null || ! command -v runuser >/dev/null; then
  echo "note: SKIP second-user part (needs root, useradd, runuser)"
elif useradd -M -N -s /bin/sh "$TUSER" 2>"$T/err"; then
  trap 'userdel "$TUSER" 2>/dev/null; cleanup' EXIT
  chmod 755 "$T"
  cp "$SRC/m.wdelta" "$SRC/secret.wdelta"; chmod 600 "$SRC/secret.wdelta"; chmod 644 "$SRC/m.wdelta"
  "$WDELTAFS" "$SRC" "$MNT" -f -o "$OPTS,allow_other" 2>>"$LOG" & DPID=$!
  for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
  check "secret/ is dr-x------ root (follows secret.wdelta 0600)" [ "$(stat -c '%A %U' "$MNT/secret")" = "dr-x------ root" ]
  check "root reads secret/config.json" cmp -s "$MNT/secret/config.json" "$FT/config.json"
  check "$TUSER reads m/config.json (0644 delta)" runuser -u "$TUSER" -- cat "$MNT/m/config.json" >/dev/null
  runuser -u "$TUSER" -- cat "$MNT/secret/config.json" >"$T/out" 2>&1; rc=$?
  check "$TUSER cannot read secret/config.json ($(head -c 80 "$T/out"))" bash -c "[ $rc -ne 0 ] && grep -q 'Permission denied' '$T/out'"
  check "$TUSER cannot list secret/" bash -c "! runuser -u '$TUSER' -- ls '$MNT/secret' >/dev/null 2>&1"
  fusermount3 -u "$MNT"; wait "$DPID"; DPID=""
  userdel "$TUSER" 2>/dev/null
  trap cleanup EXIT
else
  echo "note: SKIP second-user part: useradd failed: $(cat "$T/err")"
fi

check "no sanitizer report in the foreground daemons' logs" san_clean "$LOG"
echo "$npass passed, $nfail failed"
[ $nfail -eq 0 ]
