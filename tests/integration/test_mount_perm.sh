#!/usr/bin/env bash
# wdeltafs permissions: mounted with -o allow_other (always default_permissions),
# a model directory takes the owner and mode of its .wdelta:
#   secret.wdelta 0600 root -> another user gets "Permission denied"
#   public.wdelta 0644      -> another user reads the model
#   owned.wdelta 0600 wdtestuser -> that user reads it
# Needs root (creates the user wdtestuser, removed at the end); else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build-asan}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta"
GENMODEL="$BIN/genmodel"
WDELTAFS="$BIN/wdeltafs"
TUSER=wdtestuser

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (creates a user, mounts with allow_other)"; exit 77; }
for b in "$WDELTA" "$GENMODEL" "$WDELTAFS"; do
  [ -x "$b" ] || { echo "SKIP: $b not built"; exit 77; }
done
[ -c /dev/fuse ] || { echo "SKIP: /dev/fuse missing (no FUSE in this machine)"; exit 77; }
command -v fusermount3 >/dev/null || { echo "SKIP: fusermount3 missing (apt-get install fuse3)"; exit 77; }
for c in useradd userdel su; do
  command -v $c >/dev/null || { echo "SKIP: $c missing"; exit 77; }
done

T=$(mktemp -d /tmp/wdeltafs-perm.XXXXXX)
chmod 755 "$T"   # the test user must reach the mountpoint
SRC="$T/src" MNT="$T/mnt" LOG="$T/daemon.log"
mkdir -p "$SRC" "$MNT"
DPID="" WPID="" MADE_USER=0
cleanup() {
  [ -n "$WPID" ] && kill "$WPID" 2>/dev/null
  if timeout 5 mountpoint -q "$MNT" 2>/dev/null; then
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
  fi
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    kill "$DPID" 2>/dev/null; sleep 1; kill -9 "$DPID" 2>/dev/null
  fi
  [ $MADE_USER = 1 ] && userdel "$TUSER" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep 160 & sp=$!; wait $sp; echo "watchdog: 160 s passed, killing the daemon"
  [ -s "$T/dpid" ] && kill -9 "$(cat "$T/dpid")" 2>/dev/null; fusermount3 -uz "$MNT" 2>/dev/null ) &
WPID=$!

nfail=0 npass=0
pass() { npass=$((npass + 1)); echo "ok   - $*"; }
fail() { nfail=$((nfail + 1)); echo "FAIL - $*"; }
check() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
san_clean() { ! grep -qE 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error' "$1"; }
# as_user CMD: run a shell command as the test user; output in $T/u.out
as_user() { su -s /bin/sh "$TUSER" -c "$1" >"$T/u.out" 2>&1; }

# ------------------------------------------------------------------ user
if id "$TUSER" >/dev/null 2>&1; then
  echo "note: $TUSER exists (left by an earlier run?); removing it first"
  userdel "$TUSER" 2>/dev/null
fi
if useradd -M -s /bin/sh "$TUSER" 2>"$T/err"; then MADE_USER=1; pass "useradd -M $TUSER"
else echo "useradd failed: $(cat "$T/err")"; exit 1; fi

# ------------------------------------------------------------------ deltas
"$GENMODEL" "$T/gen" --params 1M >/dev/null 2>"$T/err" || { cat "$T/err"; echo "genmodel failed"; exit 1; }
"$WDELTA" create --base "$T/gen/base" --finetuned "$T/gen/ft" -o "$SRC/public.wdelta" --quiet >/dev/null 2>"$T/err" \
  || { cat "$T/err"; echo "wdelta create failed"; exit 1; }
cp "$SRC/public.wdelta" "$SRC/secret.wdelta"
cp "$SRC/public.wdelta" "$SRC/owned.wdelta"
chmod 600 "$SRC/owned.wdelta"; chown "$TUSER" "$SRC/owned.wdelta"
chmod 644 "$SRC/public.wdelta"
chmod 600 "$SRC/secret.wdelta"; chown root:root "$SRC/secret.wdelta"
chmod 755 "$SRC"
# the base must be readable by the daemon only (it runs as root): that is fine

# ------------------------------------------------------------------ mount
OPTS="base=$T/gen/base,allow_other,cache_size=64M,cache_dir=$T/cache"
"$WDELTAFS" "$SRC" "$MNT" -f -o "$OPTS" 2>"$LOG" &
DPID=$!; echo "$DPID" >"$T/dpid"
for i in $(seq 1 200); do timeout 2 mountpoint -q "$MNT" && break; kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
if timeout 2 mountpoint -q "$MNT"; then pass "mounted (wdeltafs -f -o $OPTS)"
else fail "mount within 20 s"; cat "$LOG"; echo "$npass passed, $nfail failed"; exit 1; fi

# ------------------------------------------------------------------ modes
st_s=$(stat -c '%a %U' "$MNT/secret"); st_sf=$(stat -c '%a %U' "$MNT/secret/config.json")
st_p=$(stat -c '%a %U' "$MNT/public"); st_pf=$(stat -c '%a %U' "$MNT/public/config.json")
check "secret/ is 500 root (got $st_s), its files 400 root (got $st_sf)" [ "$st_s|$st_sf" = "500 root|400 root" ]
check "public/ is 555 root (got $st_p), its files 444 root (got $st_pf)" [ "$st_p|$st_pf" = "555 root|444 root" ]

# ------------------------------------------------------------------ access as another user
if as_user "cat '$MNT/secret/config.json'"; then fail "$TUSER can read secret/config.json (want Permission denied)"
elif grep -q 'Permission denied' "$T/u.out"; then pass "$TUSER: cat secret/config.json -> $(head -n1 "$T/u.out")"
else fail "$TUSER: cat secret/config.json failed but not with Permission denied: $(head -n1 "$T/u.out")"; fi
if as_user "ls '$MNT/secret'"; then fail "$TUSER can list secret/ (want Permission denied)"
elif grep -q 'Permission denied' "$T/u.out"; then pass "$TUSER: ls secret/ -> $(head -n1 "$T/u.out")"
else fail "$TUSER: ls secret/ failed but not with Permission denied: $(head -n1 "$T/u.out")"; fi
if as_user "cat '$MNT/public/config.json'"; then
  if cmp -s "$T/u.out" "$T/gen/ft/config.json"; then pass "$TUSER: cat public/config.json gives the fine-tune's file"
  else fail "$TUSER: public/config.json content differs"; fi
else fail "$TUSER: cat public/config.json: $(head -n1 "$T/u.out")"; fi
if as_user "cat '$MNT/public/model-00001-of-00002.safetensors'"; then
  cmp -s "$T/u.out" "$T/gen/ft/model-00001-of-00002.safetensors" && pass "$TUSER: reads public's shard 1 byte-identical" \
    || fail "$TUSER: public's shard 1 differs"
else fail "$TUSER: cat public's shard 1: $(head -n1 "$T/u.out")"; fi
check "$TUSER: ls MNT shows both models" as_user "ls '$MNT' | grep -qx public && ls '$MNT' | grep -qx secret"
st_o=$(stat -c '%a %U' "$MNT/owned")
check "owned/ (from a 0600 .wdelta owned by $TUSER) is 500 $TUSER (got $st_o)" [ "$st_o" = "500 $TUSER" ]
if as_user "cat '$MNT/owned/config.json'"; then
  cmp -s "$T/u.out" "$T/gen/ft/config.json" && pass "$TUSER: reads owned/config.json (its own 0600 delta)" \
    || fail "$TUSER: owned/config.json content differs"
else fail "$TUSER: cat owned/config.json: $(head -n1 "$T/u.out")"; fi
check "root still reads secret/config.json" cmp -s "$MNT/secret/config.json" "$T/gen/ft/config.json"
if as_user "touch '$MNT/public/x'"; then fail "$TUSER: touch public/x succeeded"
else pass "$TUSER: touch public/x fails -> $(head -n1 "$T/u.out")"; fi

# ------------------------------------------------------------------ unmount
fusermount3 -u "$MNT"; urc=$?
check "fusermount3 -u" [ $urc -eq 0 ]
for i in $(seq 1 200); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DPID" 2>/dev/null; then fail "daemon still running 20 s after the unmount"
else wait "$DPID"; rc=$?; DPID=""; check "daemon exited 0 (got $rc)" [ $rc -eq 0 ]; fi
if san_clean "$LOG"; then pass "no sanitizer report in the daemon's stderr"
else fail "sanitizer report in the daemon's stderr:"; grep -E -A 30 'ERROR: (Address|Leak)Sanitizer|runtime error' "$LOG" | head -n 60 | sed 's/^/      | /'; fi

echo "$npass passed, $nfail failed"
[ $nfail -eq 0 ]
