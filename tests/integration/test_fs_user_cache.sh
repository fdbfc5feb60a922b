#!/usr/bin/env bash
# A mount by a user who is not root remembers base digests in their own
# cache directory (issue #14 item 5): $XDG_CACHE_HOME/wdeltafs, else
# ~/.cache/wdeltafs, made 0700 with 0600 files; a second mount reads the
# digest from there instead of hashing the base again (the file is not
# rewritten).  /var/cache/wdeltafs is root's and not writable for them.
# Needs root (creates the user wdtestcache, removed at the end); else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TUSER=wdtestcache

skip_unless_root "creates a user"
require_bins wdelta genmodel wdeltafs
require_fuse
require_cmds useradd userdel su

setup_mount_tmp wdeltafs-ucache
chmod 755 "$T"
MADE_USER=0
at_exit '[ $MADE_USER = 1 ] && userdel "$TUSER" 2>/dev/null'
start_watchdog 150
add_test_user

gen_pair "$T/gen" --params 1M || die "genmodel failed"
create_delta "$T/gen/base" "$T/gen/ft" "$SRC/m.wdelta" || die "wdelta create failed"
chmod -R a+rX "$T/gen" "$SRC"
mkdir -p "$T/home" "$T/xdg"; touch "$T/user.log"
chown "$TUSER" "$T/home" "$T/xdg" "$MNT" "$T/user.log"
SHARD=model-00001-of-00002.safetensors

# user_mount ENV...: run the daemon as the test user (env: HOME=..., XDG_CACHE_HOME=...).
# Bases are hashed and their digests stored before mounting, so where this
# machine does not let the user mount (/dev/fuse 0600) the daemon still does
# all that is tested here and then exits; where it mounts, the model is read
# and the mount undone.  1 if the daemon neither mounts nor exits in 30 s.
user_mount() {
  su -s /bin/sh "$TUSER" -c "env $* '$WDELTAFS' '$SRC' '$MNT' -f -o base='$T/gen/base' >>'$T/user.log' 2>&1 & echo \$! >'$T/upid'"
  local pid; pid=$(cat "$T/upid")
  wait_for 30 eval "mountpoint -q '$MNT' || ! kill -0 $pid" || return 1
  if mountpoint -q "$MNT"; then
    MOUNTED=1
    cmp -s "$MNT/m/$SHARD" "$T/gen/ft/$SHARD" || echo "      m/$SHARD differs"
    fusermount3 -u "$MNT"
  fi
  wait_gone "$pid"
}
MOUNTED=0
touch "$T/upid"; chown "$TUSER" "$T/upid"

if ! user_mount HOME="$T/home"; then fail "daemon as $TUSER neither mounted nor exited in 30 s"; finish; fi
pass "wdeltafs run as $TUSER (HOME=$T/home, no cache_dir option; mounted: $MOUNTED)"
dig=$(ls "$T/home/.cache/wdeltafs"/*.digest 2>/dev/null | head -n1)
check "the digest is cached under ~/.cache/wdeltafs (got '${dig:-nothing}')" [ -n "$dig" ]
check "~/.cache/wdeltafs is 700 (got $(stat -c %a "$T/home/.cache/wdeltafs" 2>/dev/null))" \
  [ "$(stat -c %a "$T/home/.cache/wdeltafs" 2>/dev/null)" = 700 ]
[ -n "$dig" ] && check "its digest file is 600 and the user's (got $(stat -c '%a %U' "$dig"))" [ "$(stat -c '%a %U' "$dig")" = "600 $TUSER" ]
check "no 'cannot write the digest cache' warning" not grep -q 'cannot write the digest cache' "$T/user.log"
if [ -n "$dig" ]; then
  m0=$(stat -c %Y.%i "$dig"); sleep 1.1
  user_mount HOME="$T/home" && pass "second run as $TUSER"
  check "second run: the cached digest is used, not written again" [ "$(stat -c %Y.%i "$dig")" = "$m0" ]
fi
user_mount HOME="$T/home" XDG_CACHE_HOME="$T/xdg" && pass "run with XDG_CACHE_HOME set"
check "XDG_CACHE_HOME/wdeltafs holds the digest" eval "ls \"$T/xdg/wdeltafs\"/*.digest >/dev/null 2>&1"
check "no sanitizer report in the user's daemon log" san_clean "$T/user.log"
finish
