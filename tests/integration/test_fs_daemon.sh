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
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python

setup_mount_tmp wdeltafs-daemon
INSTALLED="" MADE_USER=0
at_exit --early 'exec 3<&- 2>/dev/null'
at_exit '[ -n "$INSTALLED" ] && rm -f "$INSTALLED"'
at_exit '[ "$MADE_USER" = 1 ] && userdel "$TUSER" 2>/dev/null'
start_watchdog 240

gen_pair "$T/g" --params 1M || die "genmodel failed"
BASE="$T/g/base" FT="$T/g/ft"
create_delta "$BASE" "$FT" "$SRC/m.wdelta" || die "wdelta create failed"
OPTS="base=$BASE,cache_dir=$T/cache"
same() { same_model "$MNT/m" "$FT"; }

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
  # (m, the only delta, cannot be served then: the daemon says so and does not mount)
  timeout 60 "$WDELTAFS" "$SRC" "$MNT" -f -o "$OPTS" 2>"$T/wrongdigest.err"; rc=$?
  check "unchanged base: the cached digest is used, not recomputed (m not served: exit $rc, not mounted)" \
    bash -c '[ "$1" = 3 ] && ! mountpoint -q "$2" && grep -q "0000000000000000" "$3"' _ "$rc" "$MNT" "$T/wrongdigest.err"
  touch "$BASE"/model-00001-of-00002.safetensors
  mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS" || fail "mount (wdeltafs -f -o $OPTS)"
  check "after touching a base shard the digest is recomputed (m served again)" same
  check "and the cache file holds the right digest again" [ "$(sed -n 2p "$digest")" = "$("$WDELTA" hash "$BASE")" ]
  unmount_wdeltafs "$MNT"
fi

# ---- SIGTERM with a file open
mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS" || fail "mount (wdeltafs -f -o $OPTS)"
exec 3<"$MNT/m/model-00001-of-00002.safetensors"
head -c 4096 <&3 >/dev/null
kill -TERM "$DPID"
wait_daemon 10; rc=$DAEMON_RC
exec 3<&-
check "SIGTERM with a file open: daemon exits 0 (got ${rc:-still running after 10 s})" [ "$rc" = 0 ]
check "SIGTERM: the mount is gone" bash -c "! mountpoint -q '$MNT'"
assert_no_sanitizer_report "$LOG" "no sanitizer report so far (incl. leaks at exit)"

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
  # mount(8) runs helpers with its own safe PATH, so the binary under test
  # goes to /usr/local/bin for this part; one installed there before (maybe
  # another version) is put back at exit
  if [ -e /usr/local/bin/wdeltafs ]; then
    cp -p /usr/local/bin/wdeltafs "$T/wdeltafs.saved" && at_exit 'cp -p "$T/wdeltafs.saved" /usr/local/bin/wdeltafs'
  else
    INSTALLED=/usr/local/bin/wdeltafs
  fi
  install -m 755 "$WDELTAFS" /usr/local/bin/wdeltafs
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
  MADE_USER=1
  chmod 755 "$T"
  cp "$SRC/m.wdelta" "$SRC/secret.wdelta"; chmod 600 "$SRC/secret.wdelta"; chmod 644 "$SRC/m.wdelta"
  mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS,allow_other" || fail "mount (wdeltafs -f -o $OPTS,allow_other)"
  check "secret/ is dr-x------ root (follows secret.wdelta 0600)" [ "$(stat -c '%A %U' "$MNT/secret")" = "dr-x------ root" ]
  check "root reads secret/config.json" cmp -s "$MNT/secret/config.json" "$FT/config.json"
  check "$TUSER reads m/config.json (0644 delta)" runuser -u "$TUSER" -- cat "$MNT/m/config.json" >/dev/null
  runuser -u "$TUSER" -- cat "$MNT/secret/config.json" >"$T/out" 2>&1; rc=$?
  check "$TUSER cannot read secret/config.json ($(head -c 80 "$T/out"))" bash -c "[ $rc -ne 0 ] && grep -q 'Permission denied' '$T/out'"
  check "$TUSER cannot list secret/" bash -c "! runuser -u '$TUSER' -- ls '$MNT/secret' >/dev/null 2>&1"
  unmount_wdeltafs "$MNT"
  userdel "$TUSER" 2>/dev/null && MADE_USER=0
else
  echo "note: SKIP second-user part: useradd failed: $(cat "$T/err")"
fi

assert_no_sanitizer_report "$LOG" "no sanitizer report in the foreground daemons' logs"
finish
