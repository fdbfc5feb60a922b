#!/usr/bin/env bash
# wdeltafs access rule (issue #15 item 1), checked as a real second user through
# an allow_other mount: a model is readable by a user only if that user could
# read its .wdelta through the file's real path (every directory on the way
# searchable) and the base it needs; the same for .wdeltafs/bases and the
# status file (each reader sees only what they could read).
#   (a) SRC/link.wdelta -> a 0644 delta inside a 0700 root directory
#   (b) a 0700 root directory in SRC holding a 0644 delta (listing and reading)
#   (c) a base whose directory is 0700 and shards 0600 (.wdeltafs/bases and a
#       public delta made on it)
#   (the swap race of item 1 is test_fs_race.sh)
#   status: the test user's .wdeltafs/status names no delta they cannot read
# Needs root (creates the user wdtestacc, removed at the end); else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TUSER=wdtestacc   # its own name: test_mount_perm.sh (maybe running in parallel) has wdtestuser

skip_unless_root "creates a user, mounts with allow_other"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python
require_cmds useradd userdel su

setup_mount_tmp wdeltafs-access
chmod 755 "$T"
MADE_USER=0
at_exit '[ $MADE_USER = 1 ] && userdel "$TUSER" 2>/dev/null'
start_watchdog 200

# denied DESC CMD: CMD as the test user must fail with "Permission denied"
denied() {
  if as_user "$2"; then fail "$1: allowed (want Permission denied): $(tr -cd '[:print:]\n' <"$T/u.out" | head -c 120)"
  elif grep -q 'Permission denied' "$T/u.out"; then pass "$1 -> Permission denied"
  else fail "$1: failed, but not with Permission denied: $(head -n1 "$T/u.out")"; fi
}

add_test_user

# ------------------------------------------------------------------ inputs
# gen1: the public base and a fine-tune
gen_pair "$T/gen1" --params 1M --seed 1 || die "genmodel failed"
# gen3: a base kept private (0700 directory, 0600 shards) and a delta on it
gen_pair "$T/gen3" --params 1M --seed 3 || die "genmodel failed"
chmod -R a+rX "$T/gen1" "$T/gen3"
mkdir -p "$T/data"
create_delta "$T/gen1/base" "$T/gen1/ft" "$T/data/pub.wdelta" || die "create failed"
create_delta "$T/gen3/base" "$T/gen3/ft" "$T/data/onpriv.wdelta" || die "create failed"
SHARD=model-00001-of-00002.safetensors

chmod 755 "$SRC"
# (a) a 0644 delta in a 0700 root directory outside SRC, linked from SRC
mkdir -m 700 "$T/hidden"
cp "$T/data/pub.wdelta" "$T/hidden/h.wdelta"; chmod 644 "$T/hidden/h.wdelta"
ln -s "$T/hidden/h.wdelta" "$SRC/viahidden.wdelta"
# a symlink to a readable delta stays readable (the rule, not a blanket refusal)
mkdir -m 755 "$T/open"
cp "$T/data/pub.wdelta" "$T/open/o.wdelta"; chmod 644 "$T/open/o.wdelta"
ln -s "$T/open/o.wdelta" "$SRC/viaopen.wdelta"
# (b) a 0700 root directory in SRC with a 0644 delta
mkdir -m 700 "$SRC/priv"
cp "$T/data/pub.wdelta" "$SRC/priv/inpriv.wdelta"; chmod 644 "$SRC/priv/inpriv.wdelta"
# a public one next to them
cp "$T/data/pub.wdelta" "$SRC/public.wdelta"; chmod 644 "$SRC/public.wdelta"
# (c) the private base and a public delta made on it
chmod 700 "$T/gen3/base"; chmod 600 "$T/gen3/base"/*
cp "$T/data/onpriv.wdelta" "$SRC/onpriv.wdelta"; chmod 644 "$SRC/onpriv.wdelta"
OPTS="base=$T/gen1/base:$T/gen3/base,allow_other,cache_size=64M,cache_dir=$T/cache,scan_interval=1"
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS"; then pass "mounted (-o $OPTS)"
else fail "mount within $MOUNT_TIMEOUT s"; finish; fi

# ------------------------------------------------------------------ (a) symlinks
check "root reads viahidden/ (the rule lets root through)" cmp -s "$MNT/viahidden/$SHARD" "$T/gen1/ft/$SHARD"
denied "(a) $TUSER: cat viahidden/config.json (its delta lies in a 0700 directory)" "cat '$MNT/viahidden/config.json'"
denied "(a) $TUSER: cat viahidden/$SHARD" "cat '$MNT/viahidden/$SHARD'"
denied "(a) $TUSER: ls viahidden/" "ls '$MNT/viahidden'"
if as_user "cat '$MNT/viaopen/$SHARD'" && cmp -s "$T/u.out" "$T/gen1/ft/$SHARD"; then
  pass "(a) $TUSER reads viaopen/ (a symlink to a delta they can read)"
else fail "(a) $TUSER cannot read viaopen/$SHARD: $(head -c 200 "$T/u.out")"; fi

# ------------------------------------------------------------------ (b) directories
st_priv=$(stat -c '%a %U' "$MNT/priv")
check "(b) priv/ shows its source directory's owner and mode: 500 root (got $st_priv)" [ "$st_priv" = "500 root" ]
denied "(b) $TUSER: ls priv/" "ls '$MNT/priv'"
denied "(b) $TUSER: cat priv/inpriv/config.json" "cat '$MNT/priv/inpriv/config.json'"
check "(b) root reads priv/inpriv/" cmp -s "$MNT/priv/inpriv/$SHARD" "$T/gen1/ft/$SHARD"
if as_user "cat '$MNT/public/$SHARD'" && cmp -s "$T/u.out" "$T/gen1/ft/$SHARD"; then
  pass "$TUSER reads public/ (0644 delta, 0755 directories, public base)"
else fail "$TUSER cannot read public/$SHARD: $(head -c 200 "$T/u.out")"; fi

# ------------------------------------------------------------------ (c) bases
BN=$(basename "$(readlink "$MNT/.wdeltafs/lineage/onpriv")")
check "(c) .wdeltafs/lineage/onpriv names the private base (got '$BN')" [ -n "$BN" ] && [ -d "$MNT/.wdeltafs/bases/$BN" ]
denied "(c) $TUSER: cat .wdeltafs/bases/$BN/$SHARD (0700 dir, 0600 shards)" "cat '$MNT/.wdeltafs/bases/$BN/$SHARD'"
denied "(c) $TUSER: cat .wdeltafs/bases/$BN/config.json" "cat '$MNT/.wdeltafs/bases/$BN/config.json'"
denied "(c) $TUSER: cat onpriv/$SHARD (a 0644 delta on that private base)" "cat '$MNT/onpriv/$SHARD'"
check "(c) root reads onpriv/" cmp -s "$MNT/onpriv/$SHARD" "$T/gen3/ft/$SHARD"
check "(c) root reads the private base under .wdeltafs/bases" cmp -s "$MNT/.wdeltafs/bases/$BN/$SHARD" "$T/gen3/base/$SHARD"
denied "(c) $TUSER: ls .wdeltafs/bases/$BN" "ls '$MNT/.wdeltafs/bases/$BN'"

# ------------------------------------------------------------------ status per reader
if as_user "cat '$MNT/.wdeltafs/status'"; then
  cp "$T/u.out" "$T/status.user"
  check "status ($TUSER) is valid JSON" "$PY" -c 'import json,sys; json.load(open(sys.argv[1], encoding="utf-8"))' "$T/status.user"
  for s in inpriv.wdelta h.wdelta onpriv.wdelta "$T/gen3/base\""; do
    check "status ($TUSER) does not name $s" not grep -qF "$s" "$T/status.user"
  done
  check "status ($TUSER) lists public" grep -qF '"public"' "$T/status.user"
else fail "$TUSER cannot read the status file: $(head -n1 "$T/u.out")"; fi
check "status (root) lists priv/inpriv" grep -qF '"priv/inpriv"' "$MNT/.wdeltafs/status"

# (c) the base opened up while mounted: its deltas become readable, no remount
chmod 755 "$T/gen3/base"; chmod 644 "$T/gen3/base"/*
if wait_for 10 as_user "cmp -s '$MNT/onpriv/$SHARD' '$T/gen3/ft/$SHARD'"; then
  pass "(c) after chmod of the private base, $TUSER reads onpriv/ within $WAITED s"
else fail "(c) after chmod of the private base, $TUSER still cannot read onpriv/: $(tr -cd '[:print:]\n' <"$T/u.out" | head -c 120)"; fi

unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"
finish
