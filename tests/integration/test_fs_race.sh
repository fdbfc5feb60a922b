#!/usr/bin/env bash
# wdeltafs: the check-then-open race of issue #15 item 1, as a real second user
# through an allow_other mount.  The test user owns SRC/u and swaps the link
# SRC/u/m.wdelta between their own delta and root's 0600 delta with
# renameat2(RENAME_EXCHANGE) (one system call per swap, as fast as the kernel
# goes), while several readers read the model (O_DIRECT) for RACE_SECS s
# (default 30; the daemon rescans every second).  A scanner that takes a
# path's owner, mode and identity from one lookup and opens it by another
# serves the secret model under the user's name (the pre-fix daemon did, see
# the README); one that opens the file and fstat()s the descriptor never does.
# The link reaches the user's delta through a chain of slow symlinks (see
# below).  Also: 3000 junk .wdelta files in the user's directory (longer rescans, a
# wider window between a check and a use); with the link left on the secret
# delta the user is refused and root reads it.
# Needs root (creates the user wdtestrace, removed at the end), cc; else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan;
#      WDELTA_BIN=/path/to/old/build runs the same race against another build),
#      RACE_SECS, RACE_READERS (default 4), RACE_PAUSE (s between one reader's
#      reads, default 0.05).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TUSER=wdtestrace   # its own name: other tests (maybe running in parallel) have theirs
RACE_SECS=${RACE_SECS:-30}
RACE_READERS=${RACE_READERS:-4}
RACE_PAUSE=${RACE_PAUSE:-0.05}

skip_unless_root "creates a user, mounts with allow_other"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python
require_cmds useradd userdel su md5sum cc

setup_mount_tmp wdeltafs-race
chmod 755 "$T"
MADE_USER=0
at_exit '[ $MADE_USER = 1 ] && userdel "$TUSER" 2>/dev/null'
at_exit --early '[ -s "$T/u/swap.pid" ] && kill "$(cat "$T/u/swap.pid")" 2>/dev/null'
start_watchdog $((RACE_SECS + 200))


add_test_user

# the swapper: exchanges two names atomically until its time is up
cat >"$T/swap.c" <<'EOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv)
{
    if (argc != 4) return 2;
    time_t end = time(NULL) + atol(argv[3]);
    long n = 0;
    while (time(NULL) < end)
        for (int i = 0; i < 1000; i++, n++)
            if (renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE)) {
                perror("renameat2");
                return 1;
            }
    printf("%ld swaps\n", n);
    return 0;
}
EOF
cc -O2 -o "$T/swap" "$T/swap.c" 2>"$T/err" || skip "cannot build the swapper: $(head -n1 "$T/err")"
chmod 755 "$T/swap"

# ------------------------------------------------------------------ inputs
# gen1: the base and the user's fine-tune; gen2: another fine-tune of the same
# shapes (the secret model), made against gen1's base too
gen_pair "$T/gen1" --params 1M --seed 1 || die "genmodel failed"
gen_pair "$T/gen2" --params 1M --seed 2 || die "genmodel failed"
chmod -R a+rX "$T/gen1"
mkdir -p "$T/data"
create_delta "$T/gen1/base" "$T/gen1/ft" "$T/data/pub.wdelta" || die "create failed"
create_delta "$T/gen1/base" "$T/gen2/ft" "$T/data/sec.wdelta" || die "create failed"
SHARD=model-00001-of-00002.safetensors
md5_pub=$(md5sum <"$T/gen1/ft/$SHARD" | cut -d' ' -f1)
md5_sec=$(md5sum <"$T/gen2/ft/$SHARD" | cut -d' ' -f1)
[ "$md5_pub" != "$md5_sec" ] || die "the two fine-tunes' shards are equal: the test could not tell them apart"

chmod 755 "$SRC"
mkdir -m 755 "$SRC/u" "$T/u" "$T/rootonly"
cp "$T/data/pub.wdelta" "$T/u/own.wdelta"; chmod 644 "$T/u/own.wdelta"
cp "$T/data/sec.wdelta" "$T/rootonly/secret.wdelta"; chmod 600 "$T/rootonly/secret.wdelta"
# the user's link reaches their delta through a chain of 38 symlinks, each a
# path of ~800 "d/../" steps: resolving it takes milliseconds, all of it after
# the lookup of m.wdelta itself, so a stat that found the link on the user's
# delta returns long after the name may have been swapped (the window between
# a check and a use is the attacker's to widen; 38 + 1 stays under the
# kernel's 40 links per lookup)
mkdir "$T/u/d"
pre="$T/u/"; nsteps=$(( (4000 - ${#pre}) / 5 ))
steps=$(printf 'd/../%.0s' $(seq "$nsteps"))
for k in $(seq 38); do ln -s "$pre${steps}c$((k + 1))" "$T/u/c$k"; done
ln -s "$T/u/own.wdelta" "$T/u/c39"
ln -s "$T/u/c1" "$SRC/u/m.wdelta"
ln -s "$T/rootonly/secret.wdelta" "$SRC/u/.alt"   # a dot name: never scanned
mkdir "$SRC/u/junk"
for i in $(seq 3000); do echo junk >"$SRC/u/junk/j$i.wdelta"; done
chown -R -h "$TUSER" "$SRC/u" "$T/u"

OPTS="base=$T/gen1/base,allow_other,cache_size=64M,scan_interval=1"
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS"; then pass "mounted (-o $OPTS)"
else fail "mount within $MOUNT_TIMEOUT s"; finish; fi

if wait_for 20 as_user "cmp -s '$MNT/u/m/$SHARD' '$T/gen1/ft/$SHARD'"; then pass "$TUSER reads u/m (own delta) within $WAITED s"
else fail "$TUSER cannot read u/m: $(head -c 200 "$T/u.out")"; fi

# ------------------------------------------------------------------ the race
# the readers: RACE_READERS threads of one process (a process per read would
# starve the swapper), each reading shard 1 with O_DIRECT (what the daemon
# serves now, not pages the kernel kept) every RACE_PAUSE s; one line per read:
# "SECONDS-SINCE-START MD5 MODE:OWNER-UID"
cat >"$T/read.py" <<EOF
import hashlib, mmap, os, sys, threading, time
t0 = time.time(); end = t0 + $RACE_SECS
path, mdir = '$MNT/u/m/$SHARD', '$MNT/u/m'
out, lock = open(sys.argv[1], 'w'), threading.Lock()
def reader():
    buf = mmap.mmap(-1, 1 << 20)
    while time.time() < end:
        h = hashlib.md5()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            try:
                while True:
                    n = os.readv(fd, [buf])
                    if n <= 0: break
                    h.update(buf[:n])
            finally:
                os.close(fd)
            st = os.stat(mdir)
            m = '%o:%d' % (st.st_mode & 0o777, st.st_uid)
        except OSError as e:
            m = 'error:%d' % e.errno
        with lock:
            out.write('%.2f %s %s\n' % (time.time() - t0, h.hexdigest(), m))
        time.sleep($RACE_PAUSE)
ts = [threading.Thread(target=reader) for _ in range($RACE_READERS)]
for t in ts: t.start()
for t in ts: t.join()
out.close()
EOF
chmod 644 "$T/read.py"
su -s /bin/sh "$TUSER" -c "echo \$\$ >'$T/u/swap.pid'; exec '$T/swap' '$SRC/u/m.wdelta' '$SRC/u/.alt' $((RACE_SECS + 2))" >"$T/swap.out" 2>&1 &
SU_PID=$!
su -s /bin/sh "$TUSER" -c "exec '$PY' '$T/read.py' '$T/u/reads'" >"$T/read.out" 2>&1
[ -s "$T/u/swap.pid" ] && kill "$(cat "$T/u/swap.pid")" 2>/dev/null
wait $SU_PID 2>/dev/null
rm -f "$T/u/swap.pid"
sort -n "$T/u/reads" >"$T/reads"
nreads=$(wc -l <"$T/reads")
echo "      what the reads gave (md5 of shard 1, mode:owner of u/m), most frequent first:"
cut -d' ' -f2- "$T/reads" | sed "s/^$md5_pub /OWN /; s/^$md5_sec /SECRET /; s/^d41d8cd98f00b204e9800998ecf8427e /EMPTY /" |
  sort | uniq -c | sort -rn | head -n 6 | sed 's/^/      | /'
nsec=$(grep -c " $md5_sec " "$T/reads")
nown=$(grep -c " $md5_pub " "$T/reads")
if [ "$nsec" -gt 0 ]; then
  first=$(grep -m1 " $md5_sec " "$T/reads")
  nbefore=$(grep -n -m1 " $md5_sec " "$T/reads" | cut -d: -f1)
  echo "      first secret read after ${first%% *} s of swapping (read $nbefore of $nreads): ${first#* }"
fi
check "$RACE_SECS s of swapping, $RACE_READERS readers: $nreads reads, $nown of the user's own model" [ "$nown" -gt 0 ]
check "... and none of the secret model (got $nsec)" [ "$nsec" -eq 0 ]

# with the link left on the secret delta, the user is refused
ln -sfn "$T/rootonly/secret.wdelta" "$SRC/u/m.wdelta"; chown -h "$TUSER" "$SRC/u/m.wdelta"
if wait_for 10 cmp -s "$MNT/u/m/$SHARD" "$T/gen2/ft/$SHARD"; then pass "root reads u/m as the secret model once the link stays on it"
else fail "root does not read u/m as the secret model"; fi
if as_user "cat '$MNT/u/m/$SHARD'"; then fail "$TUSER: cat u/m/$SHARD (link on root's 0600 delta): allowed"
elif grep -q 'Permission denied' "$T/u.out"; then pass "$TUSER: cat u/m/$SHARD (link on root's 0600 delta) -> Permission denied"
else fail "$TUSER: cat u/m/$SHARD failed, but not with Permission denied: $(head -n1 "$T/u.out")"; fi

unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"
finish
