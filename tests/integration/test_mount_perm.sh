#!/usr/bin/env bash
# wdeltafs permissions: mounted with -o allow_other (always default_permissions),
# a model directory takes the owner and mode of its .wdelta:
#   secret.wdelta 0600 root -> another user gets "Permission denied"
#   public.wdelta 0644      -> another user reads the model
#   owned.wdelta 0600 wdtestuser -> that user reads it
# Needs root (creates the user wdtestuser, removed at the end); else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TUSER=wdtestuser

skip_unless_root "creates a user, mounts with allow_other"
require_bins wdelta genmodel wdeltafs
require_fuse
require_cmds useradd userdel su

setup_mount_tmp wdeltafs-perm
chmod 755 "$T"   # the test user must reach the mountpoint
MADE_USER=0
at_exit '[ $MADE_USER = 1 ] && userdel "$TUSER" 2>/dev/null'
start_watchdog 160

# ------------------------------------------------------------------ user
add_test_user

# ------------------------------------------------------------------ deltas
gen_pair "$T/gen" --params 1M || die "genmodel failed"
create_delta "$T/gen/base" "$T/gen/ft" "$SRC/public.wdelta" || die "wdelta create failed"
cp "$SRC/public.wdelta" "$SRC/secret.wdelta"
cp "$SRC/public.wdelta" "$SRC/owned.wdelta"
chmod 600 "$SRC/owned.wdelta"; chown "$TUSER" "$SRC/owned.wdelta"
chmod 644 "$SRC/public.wdelta"
chmod 600 "$SRC/secret.wdelta"; chown root:root "$SRC/secret.wdelta"
chmod 755 "$SRC"
# the base must be readable by the daemon only (it runs as root): that is fine

# ------------------------------------------------------------------ mount
OPTS="base=$T/gen/base,allow_other,cache_size=64M,cache_dir=$T/cache"
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS"; then pass "mounted (wdeltafs -f -o $OPTS)"
else fail "mount within $MOUNT_TIMEOUT s"; finish; fi

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
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"

finish
