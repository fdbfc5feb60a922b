#!/usr/bin/env bash
# wdeltafs picks up changes to SRC while mounted (default scan_interval=2):
#   - a .wdelta copied in appears within 5 s
#   - a .wdelta removed disappears within 5 s
#   - a .wdelta replaced (new content written under a temp name, then mv over)
#     serves the new fine-tune within 5 s
#   - an fd opened before the replace keeps returning the OLD bytes, never a mix
# and the daemon exits 0 without a sanitizer report after fusermount3 -u.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LIMIT=5   # seconds a change may take to show
require_bins wdelta genmodel wdeltafs
require_fuse
require_python

setup_mount_tmp wdeltafs-hot
HPID=""
at_exit --early '[ -n "$HPID" ] && kill "$HPID" 2>/dev/null'
# watchdog: a hung daemon must not hang the test (calls on the mount then fail)
start_watchdog 160

# ------------------------------------------------------------------ inputs
echo "# three generated model pairs (different bases and fine-tunes) in $T"
for s in 1 2 3; do
  gen_pair "$T/g$s" --params 1M --shards 2 --seed $s || die "genmodel failed"
  create_delta "$T/g$s/base" "$T/g$s/ft" "$T/g$s.wdelta" || die "wdelta create failed"
done
SHARD=model-00001-of-00002.safetensors
cmp -s "$T/g1/ft/$SHARD" "$T/g2/ft/$SHARD" && { echo "g1 and g2 fine-tunes are identical: the replace check would prove nothing"; exit 1; }
cp "$T/g1.wdelta" "$SRC/a.wdelta"
cp "$T/g3.wdelta" "$SRC/c.wdelta"

# ------------------------------------------------------------------ mount
OPTS="base=$T/g1/base:$T/g2/base:$T/g3/base,cache_size=64M,cache_dir=$T/cache"
if mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS"; then pass "mounted (wdeltafs -f -o $OPTS)"
else fail "mount within $MOUNT_TIMEOUT s"; finish; fi
check "a/ serves g1's fine-tune" same_model "$MNT/a" "$T/g1/ft"
check "c/ serves g3's fine-tune" same_model "$MNT/c" "$T/g3/ft"

# ------------------------------------------------------------------ add
t0=$(now)
cp "$T/g2.wdelta" "$SRC/.b.tmp" && mv "$SRC/.b.tmp" "$SRC/b.wdelta"
if wait_for $LIMIT test -d "$MNT/b"; then pass "new delta b.wdelta appears as b/ ($(since "$t0") s)"
else fail "new delta b.wdelta did not appear within $LIMIT s"; ls -la "$MNT"; fi
check "b/ serves g2's fine-tune" same_model "$MNT/b" "$T/g2/ft"
check "ls MNT lists b" grep -qx b <(ls "$MNT")

# ------------------------------------------------------------------ remove
t0=$(now)
rm -f "$SRC/c.wdelta"
if wait_for $LIMIT bash -c "! test -e '$MNT/c' && ! ls '$MNT' | grep -qx c"; then pass "removed delta c.wdelta disappears ($(since "$t0") s)"
else fail "removed delta c.wdelta still visible after $LIMIT s"; ls -la "$MNT"; fi

# ------------------------------------------------------------------ replace, with an fd held open
# holder: opens a/SHARD, reads it whole (must be g1's), writes "ready", waits
# for "go", drops its page cache, reads it again whole and at random offsets:
# every byte must still be g1's.
cat >"$T/holder.py" <<'PYEOF'
import os, random, sys, time
path, old, ready, go = sys.argv[1:5]
want = open(old, "rb").read()
fd = os.open(path, os.O_RDONLY)
def whole():
    out = bytearray()
    off = 0
    while True:
        b = os.pread(fd, 1 << 20, off)
        if not b:
            return bytes(out)
        out += b
        off += len(b)
got = whole()
if got != want:
    print("holder: before the replace the open file is not g1's fine-tune"); sys.exit(1)
open(ready, "w").close()
t0 = time.time()
while not os.path.exists(go):
    if time.time() - t0 > 60:
        print("holder: no go signal"); sys.exit(1)
    time.sleep(0.05)
bad = 0
for rnd in range(3):
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    got = whole()
    if got != want:
        n = min(len(got), len(want))
        first = next((i for i in range(n) if got[i] != want[i]), n)
        print(f"holder: round {rnd}: whole read after the replace differs from the OLD content "
              f"(got {len(got)} bytes, want {len(want)}, first difference at {first})")
        bad += 1
    rng = random.Random(rnd)
    for _ in range(300):
        off = rng.randrange(len(want))
        ln = rng.randint(1, 200000)
        if os.pread(fd, ln, off) != want[off:off + ln]:
            print(f"holder: round {rnd}: pread(off={off}, len={ln}) after the replace is not the old bytes")
            bad += 1
            break
    time.sleep(0.5)
os.close(fd)
print(f"holder: {3} rounds of reads after the replace, {bad} bad")
sys.exit(1 if bad else 0)
PYEOF
"$PY" "$T/holder.py" "$MNT/a/$SHARD" "$T/g1/ft/$SHARD" "$T/ready" "$T/go" >"$T/holder.out" 2>&1 &
HPID=$!
if wait_for 30 test -e "$T/ready"; then
  pass "an fd open on a/$SHARD reads g1's bytes before the replace"
  t0=$(now)
  cp "$T/g2.wdelta" "$SRC/a.wdelta.tmp" && mv -f "$SRC/a.wdelta.tmp" "$SRC/a.wdelta"
  if wait_for $LIMIT cmp -s "$MNT/a/$SHARD" "$T/g2/ft/$SHARD"; then pass "replaced a.wdelta: a/$SHARD is g2's within $(since "$t0") s"
  else fail "replaced a.wdelta: a/$SHARD not g2's after $LIMIT s"; fi
  check "after the replace every file of a/ is g2's" same_model "$MNT/a" "$T/g2/ft"
  touch "$T/go"
  wait "$HPID"; rc=$?; HPID=""
  sed 's/^/      /' "$T/holder.out"
  check "the fd opened before the replace keeps returning the OLD bytes (never new, never a mix)" [ $rc -eq 0 ]
  check "a new open after the holder closed still gives g2's" cmp -s "$MNT/a/$SHARD" "$T/g2/ft/$SHARD"
else
  fail "holder did not get ready"; sed 's/^/      /' "$T/holder.out"
fi

# replace again with the same bytes under a new file (same content): still served
t0=$(now)
cp "$T/g1.wdelta" "$SRC/a.wdelta.tmp" && mv -f "$SRC/a.wdelta.tmp" "$SRC/a.wdelta"
if wait_for $LIMIT cmp -s "$MNT/a/$SHARD" "$T/g1/ft/$SHARD"; then pass "replaced back: a/ is g1's again within $(since "$t0") s"
else fail "replaced back: a/ not g1's after $LIMIT s"; fi

# status lists the current models
if "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); n=sorted(m["name"] for m in d["models"]); assert n==["a","b"], n' \
   "$MNT/.wdeltafs/status" 2>"$T/err"; then pass "status lists exactly a and b"
else fail "status lists exactly a and b: $(tail -n1 "$T/err")"; fi

# ------------------------------------------------------------------ unmount
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"

finish
