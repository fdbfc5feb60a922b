#!/usr/bin/env bash
# The daemon's page faults over a cold sequential read follow the number of
# blocks, not the bytes (issue 18): replies come from the cache's pinned
# blocks (no buffer malloc'd and first touched per read), block buffers are
# reused (2 MiB chunks, huge pages where the system has them) and a streamed
# file's blocks recycle their buffers instead of filling the cache with fresh
# pages.  A ~200 MB generated model, stored lossless, read once in order in
# 1 MiB reads on a fresh mount: over the reads after the first WARM_MB (the
# decoders' scratches and the first buffers are made then, a cost per mount,
# not per block) the daemon's minor faults (/proc/PID/stat) must stay under
# FAULTS_PER_BLOCK per block read.  The old daemon took about 500 per 1 MiB
# block (1 MiB of fresh pages for the reply and 1 MiB for the block).  Also:
# the bytes are the fine-tune's, and the daemon's peak memory stays within
# the cache + 64 MiB.
# Needs root (mounts); else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

skip_unless_root "mounts a FUSE filesystem"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python

setup_mount_tmp wdeltafs-readfaults
start_watchdog 300
FAULTS_PER_BLOCK=8
WARM_MB=32
CACHE_MB=64

gen_pair "$T/gen" --params 100M --shards 1 --dtype bf16 --seed 3 || die "genmodel failed"
create_delta "$T/gen/base" "$T/gen/ft" "$SRC/m.wdelta" -s lossless --no-lowrank || die "wdelta create failed"
SHARD=model.safetensors
[ -f "$T/gen/ft/$SHARD" ] || die "genmodel made no $SHARD"
NBLOCKS=$("$WDELTA" inspect "$SRC/m.wdelta" --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["nblocks"])')
[ "${NBLOCKS:-0}" -gt 100 ] || die "the delta has ${NBLOCKS:-no} blocks (want more than 100)"

OPTS="base=$T/gen/base,cache_dir=$T/cache,cache_size=${CACHE_MB}M"
mount_measured "$SRC" "$MNT" "$LOG" "$OPTS"
if wait_for 60 test -e "$MNT/m/$SHARD"; then pass "m/ served within $WAITED s"
else fail "m/ not served: $(tail -n2 "$LOG")"; finish; fi
cat >"$T/seq.py" <<'EOF'
# seq.py VIRT ORIG PID WARM: read VIRT in order, 1 MiB at a time; print the
# daemon's minor faults over the reads after the first WARM bytes, the bytes
# read then and in all; exit 1 if VIRT differs from ORIG
import hashlib, sys
virt, orig, pid, warm = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def minflt():
    with open("/proc/%s/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])
hv, at, f0, a0 = hashlib.sha256(), 0, None, 0
with open(virt, "rb", buffering=0) as f:
    while True:
        if f0 is None and at >= warm:
            f0, a0 = minflt(), at
        b = f.read(1 << 20)
        if not b:
            break
        hv.update(b)
        at += len(b)
if f0 is None:
    sys.exit("only %d bytes" % at)
faults = minflt() - f0
ho = hashlib.sha256()
with open(orig, "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        ho.update(b)
print(faults, at - a0, at)
sys.exit(0 if hv.digest() == ho.digest() else 1)
EOF
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
cat "$T/gen/base/"*.safetensors >/dev/null
mem_mark "$DPID"
if "$PY" "$T/seq.py" "$MNT/m/$SHARD" "$T/gen/ft/$SHARD" "$DPID" $((WARM_MB << 20)) >"$T/seq.out" 2>&1; then
  pass "the virtual file is the fine-tune, byte for byte"
else fail "the virtual file differs from the fine-tune ($(tail -n2 "$T/seq.out"))"; fi
read -r faults measured total <"$T/seq.out"
blocks=$(( NBLOCKS * measured / total ))
bound=$(( FAULTS_PER_BLOCK * blocks ))
check "daemon minor faults over the last $((measured >> 20)) MiB read in order: $faults (bound: $FAULTS_PER_BLOCK per block x $blocks blocks = $bound)" \
  [ "$faults" -le "$bound" ]
grow=$(mem_grown "$DPID")
check "peak memory grew by $grow MiB (limit: cache $CACHE_MB MiB + 64 MiB)" [ "$grow" -le $((CACHE_MB + 64)) ]
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"
finish
