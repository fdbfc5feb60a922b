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
#   (d) the swap race: the test user swaps a symlink in a directory they own
#       between their own delta and root's 0600 delta for 30 s, reading the
#       model all the while: never the secret bytes
#   status: the test user's .wdeltafs/status names no delta they cannot read
# Needs root (creates the user wdtestacc, removed at the end); else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TUSER=wdtestacc   # its own name: test_mount_perm.sh (maybe running in parallel) has wdtestuser
RACE_SECS=${RACE_SECS:-30}

skip_unless_root "creates a user, mounts with allow_other"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python
for c in useradd userdel su md5sum; do
  command -v $c >/dev/null || skip "$c missing"
done

setup_mount_tmp wdeltafs-access
chmod 755 "$T"
MADE_USER=0
at_exit '[ $MADE_USER = 1 ] && userdel "$TUSER" 2>/dev/null'
SWAP_PID=""
at_exit --early '[ -n "$SWAP_PID" ] && kill $SWAP_PID 2>/dev/null'
start_watchdog $((RACE_SECS + 200))

as_user() { su -s /bin/sh "$TUSER" -c "$1" >"$T/u.out" 2>&1; }
# denied DESC CMD: CMD as the test user must fail with "Permission denied"
denied() {
  if as_user "$2"; then fail "$1: allowed (want Permission denied): $(tr -cd '[:print:]\n' <"$T/u.out" | head -c 120)"
  elif grep -q 'Permission denied' "$T/u.out"; then pass "$1 -> Permission denied"
  else fail "$1: failed, but not with Permission denied: $(head -n1 "$T/u.out")"; fi
}

if id "$TUSER" >/dev/null 2>&1; then userdel "$TUSER" 2>/dev/null; fi
if useradd -M -s /bin/sh "$TUSER" 2>"$T/err"; then MADE_USER=1; pass "useradd -M $TUSER"
else echo "useradd failed: $(cat "$T/err")"; exit 1; fi

# ------------------------------------------------------------------ inputs
# gen1: the public base and the user's fine-tune; gen2: another fine-tune of
# the same shapes (the "secret" model), made against gen1's base too
gen_pair "$T/gen1" --params 1M --seed 1 || die "genmodel failed"
gen_pair "$T/gen2" --params 1M --seed 2 || die "genmodel failed"
# gen3: a base kept private (0700 directory, 0600 shards) and a delta on it
gen_pair "$T/gen3" --params 1M --seed 3 || die "genmodel failed"
chmod -R a+rX "$T/gen1" "$T/gen2" "$T/gen3"
mkdir -p "$T/data"
create_delta "$T/gen1/base" "$T/gen1/ft" "$T/data/pub.wdelta" || die "create failed"
create_delta "$T/gen1/base" "$T/gen2/ft" "$T/data/sec.wdelta" || die "create failed"
create_delta "$T/gen3/base" "$T/gen3/ft" "$T/data/onpriv.wdelta" || die "create failed"
SHARD=model-00001-of-00002.safetensors
md5_pub=$(md5sum <"$T/gen1/ft/$SHARD" | cut -d' ' -f1)
md5_sec=$(md5sum <"$T/gen2/ft/$SHARD" | cut -d' ' -f1)
[ "$md5_pub" != "$md5_sec" ] || die "the two fine-tunes' shards are equal: the race test could not tell them apart"

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
# (d) a directory the test user owns; the secret delta 0600 root
mkdir -m 755 "$SRC/u" "$T/udata" "$T/rootonly"
cp "$T/data/pub.wdelta" "$T/udata/own.wdelta"
cp "$T/data/sec.wdelta" "$T/rootonly/secret.wdelta"; chmod 600 "$T/rootonly/secret.wdelta"
chown -R "$TUSER" "$SRC/u" "$T/udata"
ln -s "$T/udata/own.wdelta" "$SRC/u/m.wdelta"; chown -h "$TUSER" "$SRC/u/m.wdelta"
# the user may also fill their directory with junk .wdelta files, which makes
# each rescan longer (and a window between a check and a use wider)
mkdir "$SRC/u/junk"
for i in $(seq 3000); do echo junk >"$SRC/u/junk/j$i.wdelta"; done
chown -R "$TUSER" "$SRC/u/junk"

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
  for s in inpriv.wdelta h.wdelta secret.wdelta onpriv.wdelta "$T/gen3/base\""; do
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

# ------------------------------------------------------------------ (d) the swap race
# the user's own model is served first
if wait_for 10 as_user "cmp -s '$MNT/u/m/$SHARD' '$T/gen1/ft/$SHARD'"; then pass "(d) $TUSER reads u/m (own delta) within $WAITED s"
else fail "(d) $TUSER cannot read u/m: $(head -c 200 "$T/u.out")"; fi
# the user swaps the link as fast as it goes, and reads the model all the while
# (O_DIRECT: what the daemon serves now, not pages the kernel kept from before)
# (as fast as python goes: the window between a check and a use may be short)
cat >"$T/swap.py" <<EOF
import os, time
open('$T/udata/swap.pid', 'w').write(str(os.getpid()))
tmp, link = '$SRC/u/.n', '$SRC/u/m.wdelta'
targets = ['$T/rootonly/secret.wdelta', '$T/udata/own.wdelta']
i = 0
end = time.time() + $RACE_SECS + 10   # stops by itself, whatever happens to the test
while time.time() < end:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(targets[i & 1], tmp)
    os.rename(tmp, link)
    i += 1
EOF
cat >"$T/read.sh" <<EOF
end=\$((\$(date +%s) + $RACE_SECS))
while [ \$(date +%s) -lt \$end ]; do
  s=\$(dd if='$MNT/u/m/$SHARD' iflag=direct bs=1M 2>/dev/null | md5sum | cut -d' ' -f1)
  m=\$(stat -c '%a:%U' '$MNT/u/m' 2>/dev/null)
  echo "\$s \$m"
  sleep 0.02
done >'$T/udata/reads'
EOF
chmod 644 "$T/swap.py" "$T/read.sh"
su -s /bin/sh "$TUSER" -c "exec '$PY' '$T/swap.py'" >/dev/null 2>&1 &
SU_PID=$!
wait_for 10 test -s "$T/udata/swap.pid" && SWAP_PID=$(cat "$T/udata/swap.pid")
su -s /bin/sh "$TUSER" -c "sh '$T/read.sh'" >/dev/null 2>&1
[ -n "$SWAP_PID" ] && kill "$SWAP_PID" 2>/dev/null
wait $SU_PID 2>/dev/null; SWAP_PID=""
nreads=$(wc -l <"$T/udata/reads")
echo "      what the reads gave (md5 of shard 1, mode:owner of u/m), most frequent first:"
sed "s/^$md5_pub /OWN /; s/^$md5_sec /SECRET /; s/^d41d8cd98f00b204e9800998ecf8427e /EMPTY /" "$T/udata/reads" |
  sort | uniq -c | sort -rn | head -n 6 | sed 's/^/      | /'
nsec=$(grep -c "^$md5_sec " "$T/udata/reads")
nown=$(grep -c "^$md5_pub " "$T/udata/reads")
check "(d) $RACE_SECS s of swapping: $nreads reads, $nown of the user's own model" [ "$nown" -gt 0 ]
check "(d) ... and none of the secret model (got $nsec)" [ "$nsec" -eq 0 ]
# with the link left on the secret delta, the user is refused
ln -sfn "$T/rootonly/secret.wdelta" "$SRC/u/m.wdelta"; chown -h "$TUSER" "$SRC/u/m.wdelta"
sleep 3
check "(d) root reads u/m as the secret model once the link stays on it" cmp -s "$MNT/u/m/$SHARD" "$T/gen2/ft/$SHARD"
denied "(d) $TUSER: cat u/m/$SHARD (link on root's 0600 delta)" "cat '$MNT/u/m/$SHARD'"

unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"
finish
