#!/usr/bin/env bash
# The daemon's memory stays within the cache, plus the blocks being decoded,
# plus a fixed 64 MiB, with blocks as large as the cache (issue #15 item 10:
# 64 MiB blocks, cache_size=64M and 8 random readers reached 466 MB).
# A model whose two largest tensors are one 16 MiB block each (f32), a
# cache of one such block, 8 threads reading random ranges of those two
# tensors (every read a decode, or a wait for one): the daemon's peak memory
# (VmHWM) may grow by at most cache + 2 blocks (the decode always allowed
# past a full cache, and one block's worth of slack) + 64 MiB.  Before the
# fix, each decode's working memory (stored bytes, base bytes, planes: more
# than twice its block) counted against nothing and idle scratches kept
# theirs in a pool: 145-148 MiB of growth against a limit of 112.
# Needs root (mounts); else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

skip_unless_root "mounts a FUSE filesystem"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python

setup_mount_tmp wdeltafs-cachebound
start_watchdog 240
BLOCK_MB=16

# f32 at 60M parameters: embed_tokens and lm_head are 16 MiB each
gen_pair "$T/gen" --params 60M --shards 1 --dtype f32 || die "genmodel failed"
create_delta "$T/gen/base" "$T/gen/ft" "$SRC/big.wdelta" --block-size ${BLOCK_MB}M || die "wdelta create failed"
SHARD=model.safetensors
[ -f "$T/gen/ft/$SHARD" ] || die "genmodel made no $SHARD"

cat >"$T/rr.py" <<'EOF'
# rr.py VIRTUAL ORIGINAL THREADS READS BLOCK_BYTES: random reads (up to 1 MiB)
# inside the tensors of at least BLOCK_BYTES, each compared with the original
import json, os, random, struct, sys, threading
virt, orig, nthreads, nreads, big = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with open(orig, 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    h = json.loads(f.read(n))
ranges = [(v['data_offsets'][0] + 8 + n, v['data_offsets'][1] + 8 + n) for k, v in h.items()
          if k != '__metadata__' and v['data_offsets'][1] - v['data_offsets'][0] >= big]
if len(ranges) < 2:
    sys.exit(f"rr.py: {len(ranges)} tensors of {big} bytes or more (want 2)")
bad, errs = [], []
def worker(seed):
    rnd = random.Random(seed)
    try:
        fv, fo = os.open(virt, os.O_RDONLY), os.open(orig, os.O_RDONLY)
        for _ in range(nreads):
            a, b = rnd.choice(ranges)
            ln, off = rnd.randint(1, 1 << 20), rnd.randint(a, b - 1)
            if os.pread(fv, ln, off) != os.pread(fo, ln, off):
                bad.append(off)
    except OSError as e:
        errs.append(str(e))
ts = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
for t in ts: t.start()
for t in ts: t.join()
print(f"{nthreads} threads x {nreads} reads in {len(ranges)} tensors: {len(bad)} mismatches, {len(errs)} errors {errs[:2]}")
sys.exit(1 if bad or errs else 0)
EOF

OPTS="base=$T/gen/base,cache_dir=$T/cache,cache_size=${BLOCK_MB}M"
mount_measured "$SRC" "$MNT" "$LOG" "$OPTS"
if wait_for 60 test -e "$MNT/big/$SHARD"; then pass "big/ served within $WAITED s"
else fail "big/ not served: $(tail -n2 "$LOG")"; finish; fi
mem_mark "$DPID"
if "$PY" "$T/rr.py" "$MNT/big/$SHARD" "$T/gen/ft/$SHARD" 8 40 $((BLOCK_MB << 20)) >"$T/rr.out" 2>&1; then
  pass "8 random readers: every byte right ($(tail -n1 "$T/rr.out"))"
else fail "random reads: $(tail -n3 "$T/rr.out")"; fi
grow=$(mem_grown "$DPID")
limit=$(( BLOCK_MB + 2 * BLOCK_MB + 64 ))
check "peak memory grew by $grow MiB over $((MEM_BEFORE / 1024)) MiB (limit: cache ${BLOCK_MB} MiB + 2 blocks + 64 MiB = $limit MiB)" \
  [ "$grow" -le "$limit" ]
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"
finish
