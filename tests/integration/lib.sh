# Shared set-up for tests/integration/test_*.sh.  Source it first thing:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# It is not a test itself (run-all.sh only runs test_*.sh).
#
# Provides
#   variables  REPO BIN WDELTA GENMODEL WDELTAFS SHARED PY (python3 or "")
#   skips      skip MSG, skip_unless_root WHY, require_bins NAME..., require_fuse,
#              require_python  (print "SKIP: ..." and exit 77)
#   counters   pass MSG, fail MSG, check DESC CMD..., not CMD..., finish, die MSG
#   temp dirs  setup_tmp NAME [PARENT], setup_mount_tmp NAME, at_exit [--early] CMD
#              (one EXIT trap: unmounts $MNT, stops the daemons on $SRC, removes $T)
#   daemon     mount_wdeltafs SRC MNT LOG OPTS..., unmount_wdeltafs MNT, unmount_checked MNT,
#              wait_daemon [SECS], daemon_pids, wait_gone PID..., start_watchdog SECS
#   polling    now, since T0, wait_for SECS CMD...
#   checks     san_clean LOG, assert_no_sanitizer_report LOG [DESC], same_model DIR FTDIR
#   inputs     gen_pair DIR GENMODEL-ARGS..., create_delta BASE FT OUT [ARGS...]
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel (default build-asan;
# relative to the repository root).
set -u

# ------------------------------------------------------------------ paths
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build-asan}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta"
GENMODEL="$BIN/genmodel"
WDELTAFS="$BIN/wdeltafs"
SHARED="$REPO/../shared"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3 || true)

# ------------------------------------------------------------------ skips (exit 77)
skip() { echo "SKIP: $*"; exit 77; }
# skip_unless_root WHY: skip unless running as root ("SKIP: needs root (WHY)")
skip_unless_root() { [ "$(id -u)" = 0 ] || skip "needs root ($1)"; }
# require_bins NAME...: skip unless $BIN/NAME is built, for each NAME
require_bins() {
  local n
  for n in "$@"; do [ -x "$BIN/$n" ] || skip "$BIN/$n not built"; done
}
# require_cmds NAME...: skip unless each program is on PATH
require_cmds() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null || skip "$c missing"; done
}
# require_fuse: skip without /dev/fuse or fusermount3
require_fuse() {
  [ -c /dev/fuse ] || skip "/dev/fuse missing (no FUSE in this machine)"
  command -v fusermount3 >/dev/null || skip "fusermount3 missing (apt-get install fuse3)"
}
require_python() { [ -n "$PY" ] || skip "python3 missing"; }

# ------------------------------------------------------------------ counters
nfail=0 npass=0
pass() { npass=$((npass + 1)); echo "ok   - $*"; }
fail() { nfail=$((nfail + 1)); echo "FAIL - $*"; }
# check DESC CMD...: pass DESC if CMD succeeds, else fail DESC
check() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
# not CMD...: succeeds when CMD fails (its output discarded)
not() { ! "$@" >/dev/null 2>&1; }
# finish: print the summary line and exit 0 if nothing failed, else 1
finish() { echo "$npass passed, $nfail failed"; [ "$nfail" -eq 0 ] && exit 0; exit 1; }
# die MSG: a set-up step failed; print MSG and exit 1
die() { echo "$*"; exit 1; }

# ------------------------------------------------------------------ temp dir and cleanup
T="" SRC="" MNT="" LOG="" DPID="" WPID=""
_AT_EXIT_EARLY=() _AT_EXIT=()
# at_exit [--early] CMD: eval CMD (a string, so variables are read at exit) in the
# EXIT trap.  --early: before $MNT is unmounted (close fds, stop readers);
# otherwise after the daemons are stopped and before $T is removed.
at_exit() {
  if [ "$1" = --early ]; then _AT_EXIT_EARLY+=("$2"); else _AT_EXIT+=("$1"); fi
}
_lib_stop_pid() { # PID: give it 5 s to exit on its own, then SIGTERM, then SIGKILL
  local i
  for i in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill "$1" 2>/dev/null; sleep 1; kill -9 "$1" 2>/dev/null
}
_lib_cleanup() {
  local c p
  for c in "${_AT_EXIT_EARLY[@]+"${_AT_EXIT_EARLY[@]}"}"; do eval "$c"; done
  [ -n "$WPID" ] && kill "$WPID" 2>/dev/null
  if [ -n "$MNT" ] && timeout 5 mountpoint -q "$MNT" 2>/dev/null; then
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
  fi
  if [ -n "$SRC" ]; then
    for p in $DPID $(daemon_pids); do _lib_stop_pid "$p"; done
  fi
  for c in "${_AT_EXIT[@]+"${_AT_EXIT[@]}"}"; do eval "$c"; done
  if [ -n "$T" ]; then chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"; fi
}
trap _lib_cleanup EXIT
# setup_tmp NAME [PARENT]: T = a new directory PARENT/NAME.XXXXXX (PARENT default
# /tmp), removed at exit
setup_tmp() {
  local parent=${2:-/tmp}
  mkdir -p "$parent"
  T=$(mktemp -d "$parent/$1.XXXXXX") || die "mktemp failed"
}
# setup_mount_tmp NAME: setup_tmp NAME, then SRC=$T/src MNT=$T/mnt (both made) and
# LOG=$T/daemon.log; at exit MNT is unmounted and the daemons serving SRC stopped
setup_mount_tmp() {
  setup_tmp "$1"
  SRC="$T/src" MNT="$T/mnt" LOG="$T/daemon.log"
  mkdir -p "$SRC" "$MNT"
}

# ------------------------------------------------------------------ a second user
# add_test_user: create the user $TUSER (no home, /bin/sh) for this test;
# one left by an interrupted run is removed first.  The caller registers
# its removal (at_exit '[ $MADE_USER = 1 ] && userdel "$TUSER"') where its
# place among the other clean-ups is right.  Needs root and $T.
add_test_user() {
  if id "$TUSER" >/dev/null 2>&1; then
    echo "note: $TUSER exists (left by an earlier run?); removing it first"
    userdel "$TUSER" 2>/dev/null
  fi
  if useradd -M -s /bin/sh "$TUSER" 2>"$T/err"; then MADE_USER=1; pass "useradd -M $TUSER"
  else echo "useradd failed: $(cat "$T/err")"; exit 1; fi
}
# as_user CMD: run a shell command as $TUSER; its output in $T/u.out
as_user() { su -s /bin/sh "$TUSER" -c "$1" >"$T/u.out" 2>&1; }

# ------------------------------------------------------------------ the daemon
# daemon_pids: pids of processes whose command line names our SRC (a daemon in the
# background is found this way; never killed by name, only by pid)
daemon_pids() {
  local p
  [ -n "$SRC" ] || return 0
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "wdeltafs $SRC " && echo "${p#/proc/}"
  done
}
# wait_gone PID...: until none of them runs; 1 if some still runs after 10 s
wait_gone() {
  local p alive i
  for i in $(seq 100); do
    alive=0; for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0; sleep 0.1
  done
  return 1
}
# start_watchdog SECS: after SECS a hung daemon is killed (pid in $T/dpid) and MNT
# detached, so that calls on the mount fail instead of hanging the test
start_watchdog() {
  local secs=$1
  ( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$secs" & sp=$!; wait $sp
    echo "watchdog: $secs s passed, killing the daemon and detaching the mount"
    [ -s "$T/dpid" ] && kill -9 "$(cat "$T/dpid")" 2>/dev/null; fusermount3 -uz "$MNT" 2>/dev/null ) &
  WPID=$!
}
MOUNT_TIMEOUT=${MOUNT_TIMEOUT:-30}   # seconds a mount may take
_MOUNT_LOG=/dev/null
# mount_wdeltafs SRC MNT LOG OPTS...: start $WDELTAFS in the foreground (-f, as a
# background job; DPID, also in $T/dpid) with one -o per OPTS, stderr appended to
# LOG; wait until MNT is a mountpoint.  1 (and the log's tail printed) if the
# daemon dies or MOUNT_TIMEOUT s pass first.
mount_wdeltafs() {
  local src=$1 mnt=$2 log=$3 o i; shift 3
  local args=()
  for o in "$@"; do args+=(-o "$o"); done
  _MOUNT_LOG=$log
  echo "---- mount: wdeltafs $src $mnt -f ${args[*]}" >>"$log"
  "$WDELTAFS" "$src" "$mnt" -f "${args[@]}" 2>>"$log" &
  DPID=$!
  [ -n "$T" ] && echo "$DPID" >"$T/dpid"
  for i in $(seq $((MOUNT_TIMEOUT * 10))); do
    timeout 2 mountpoint -q "$mnt" && return 0
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$DPID" 2>/dev/null; then echo "      daemon did not mount within $MOUNT_TIMEOUT s; its log:"
  else echo "      daemon exited before mounting; its log:"; fi
  tail -n 40 "$log" | sed 's/^/      | /'
  return 1
}
# mount_measured SRC MNT LOG OPTS: mount_wdeltafs for a memory or fault
# measurement, ASan's quarantine kept at 1 MB (freed buffers sit there,
# counted in the daemon's RSS); a pass line, or a fail line and finish
mount_measured() {
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=1"
  if mount_wdeltafs "$1" "$2" "$3" "$4"; then pass "mounted (-o $4)"
  else fail "mount within $MOUNT_TIMEOUT s"; finish; fi
}
# The peak memory of a process over a stretch of work:
#   mem_mark PID   MEM_BEFORE = its RSS now (kB); its high-water mark reset
#                  to now (Linux: writing 5 to clear_refs)
#   mem_grown PID  the MiB its high-water mark grew over MEM_BEFORE since
_lib_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mem_mark() { MEM_BEFORE=$(_lib_kb "$1" VmRSS); echo 5 >"/proc/$1/clear_refs" 2>/dev/null; }
mem_grown() { echo $(( ($(_lib_kb "$1" VmHWM) - MEM_BEFORE) / 1024 )); }
# wait_daemon [SECS]: wait up to SECS (default 20) for the daemon DPID to exit;
# then DAEMON_RC = its exit status, DPID = "" and 0; else DAEMON_RC = "" and 1
wait_daemon() {
  local secs=${1:-20} i
  DAEMON_RC=""
  for i in $(seq $((secs * 10))); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$DPID" 2>/dev/null && return 1
  wait "$DPID"; DAEMON_RC=$?
  DPID=""
  return 0
}
# unmount_wdeltafs MNT: fusermount3 -u MNT (UMOUNT_RC = its status), then wait up to
# 20 s for the daemon (wait_daemon).  Returns the daemon's exit status: 0 only if
# the unmount worked and the daemon exited 0 (what went wrong is printed).
unmount_wdeltafs() {
  UMOUNT_RC=0
  fusermount3 -u "$1" || { UMOUNT_RC=$?; echo "      fusermount3 -u failed"; }
  if ! wait_daemon 20; then echo "      daemon still running 20 s after the unmount"; return 1; fi
  if [ "$DAEMON_RC" -ne 0 ]; then
    echo "      daemon exited $DAEMON_RC"; tail -n 20 "$_MOUNT_LOG" | sed 's/^/      | /'
    return "$DAEMON_RC"
  fi
  [ "$UMOUNT_RC" -eq 0 ]
}

# unmount_checked MNT: unmount_wdeltafs as two checks, "fusermount3 -u" and
# "daemon exited 0 (got RC)" (a failure if it still runs 20 s after the unmount)
unmount_checked() {
  unmount_wdeltafs "$1"
  check "fusermount3 -u" [ "$UMOUNT_RC" -eq 0 ]
  if [ -z "$DAEMON_RC" ]; then fail "daemon still running 20 s after the unmount"
  else check "daemon exited 0 (got $DAEMON_RC)" [ "$DAEMON_RC" -eq 0 ]; fi
}

# ------------------------------------------------------------------ polling
now() { date +%s.%N; }
# since T0: seconds from T0 (a `now`) to now, one decimal
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# wait_for SECS CMD...: run CMD (output discarded) every 0.1 s until it succeeds
# (0; WAITED = seconds it took) or SECS of wall-clock time pass (1; WAITED = ">SECS")
wait_for() {
  local secs=$1 t0; shift
  t0=$(now)
  while :; do
    if "$@" >/dev/null 2>&1; then WAITED=$(since "$t0"); return 0; fi
    awk -v a="$t0" -v s="$secs" -v n="$(now)" 'BEGIN { exit !(n - a > s) }' && break
    sleep 0.1
  done
  WAITED=">$secs"; return 1
}

# ------------------------------------------------------------------ checks
# san_clean FILE: no AddressSanitizer/LeakSanitizer/UBSan report in FILE
SAN_RE='Sanitizer|runtime error'
san_clean() { ! grep -qE "$SAN_RE" "$1"; }
# assert_no_sanitizer_report LOG [DESC]: a check; on failure the report is shown
assert_no_sanitizer_report() {
  local d=${2:-no sanitizer report in the daemon log}
  if san_clean "$1"; then pass "$d"
  else fail "$d: sanitizer report found:"; grep -E -A 30 "$SAN_RE" "$1" | head -n 60 | sed 's/^/      | /'; fi
}
# same_model DIR FTDIR: every file of FTDIR is byte-identical under DIR
same_model() {
  local f
  for f in "$2"/*; do cmp -s "$f" "$1/$(basename "$f")" || return 1; done
}

# ------------------------------------------------------------------ inputs
# gen_pair DIR GENMODEL-ARGS...: genmodel makes DIR/base and DIR/ft; 1 (its stderr
# shown) on failure.  Needs T (setup_tmp), like create_delta
gen_pair() {
  local d=$1; shift
  "$GENMODEL" "$d" "$@" >/dev/null 2>"$T/.lib.err" && return 0
  sed 's/^/      /' "$T/.lib.err"; return 1
}
# create_delta BASE FT OUT [WDELTA-CREATE-ARGS...]: wdelta create --quiet; 1 (its
# stderr shown) on failure
create_delta() {
  local base=$1 ft=$2 out=$3; shift 3
  "$WDELTA" create --base "$base" --finetuned "$ft" -o "$out" --quiet "$@" >/dev/null 2>"$T/.lib.err" && return 0
  sed 's/^/      /' "$T/.lib.err"; return 1
}
