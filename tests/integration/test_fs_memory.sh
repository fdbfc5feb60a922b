#!/usr/bin/env bash
# Memory beside the cache stays bounded with large blocks (issue #15 item 10):
# a delta of 4 MiB blocks, cache_size=4M, 8 threads reading at random offsets
# (and read-ahead on 8 threads): blocks being decoded count against the cache,
# so the daemon's peak memory (VmHWM) grows by at most the cache plus a few
# blocks over its size before the reads, however many CPUs decode at once.
# (Before: every decoder held its own block beside a full cache: 466 MB with
# 64 MiB blocks, cache_size=64M and 8 readers on a larger machine.)
# Needs root (mounts); else skips.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

skip_unless_root "mounts a FUSE filesystem"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python

setup_mount_tmp wdeltafs-mem
start_watchdog 200
BLOCK_MB=4

gen_pair "$T/gen" --params 12M --shards 1 || die "genmodel failed"
create_delta "$T/gen/base" "$T/gen/ft" "$SRC/big.wdelta" --block-size ${BLOCK_MB}M || die "wdelta create failed"
SHARD=model.safetensors
[ -f "$T/gen/ft/$SHARD" ] || SHARD=$(cd "$T/gen/ft" && ls *.safetensors | head -n1)

OPTS="base=$T/gen/base,cache_dir=$T/cache,cache_size=${BLOCK_MB}M,readahead_threads=8"
mount_measured "$SRC" "$MNT" "$LOG" "$OPTS"
ls -l "$MNT/big" >/dev/null
mem_mark "$DPID"
if "$PY" "$REPO/tests/integration/randread.py" --threads 8 --reads 400 --max-len $((2 << 20)) \
    "$MNT/big/$SHARD" "$T/gen/ft/$SHARD" >"$T/rr.out" 2>&1; then
  pass "8 random readers: every byte right ($(tail -n1 "$T/rr.out"))"
else fail "random reads: $(tail -n3 "$T/rr.out")"; fi
grow=$(mem_grown "$DPID")
limit=$(( BLOCK_MB * 4 + 24 ))   # the cache, a decode, two readers' pinned blocks, and slack for buffers
check "peak memory grew by $grow MiB over $((MEM_BEFORE / 1024)) MiB (limit: cache ${BLOCK_MB} MiB + 3 blocks + 24 MiB = $limit MiB)" \
  [ "$grow" -le "$limit" ]
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon's stderr"
finish
