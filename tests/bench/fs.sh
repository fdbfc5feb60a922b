#!/usr/bin/env bash
# `make bench`, second part: wdeltafs read speed, latency, scaling and memory,
# printed as one markdown table.  Informational (exit 0 unless it cannot run).
#   1. ceiling: sequential dd (bs=1M) of a do-nothing FUSE file (tests/bench/nullfs.c)
#      the size of pairB's shard 1, page cache dropped
#   2. cold sequential read of pairB's virtual shard 1 (fresh mount, caches dropped)
#   3. warm re-read of that virtual file vs the original file from the page cache
#   4. reading the last tensors of a ~3 GB virtual file (genmodel --params 1500M --shards 1)
#   5. mount time and `ls -l` time with 1000 .wdelta files in SRC
#   6. daemon peak RSS (VmHWM) while reading the 3 GB file through a 32M cache
# Parts 1-3 need ../shared/models/pairB (skipped with a message when absent).
# Dropping the page cache needs root (else the "cold" numbers are warm-ish
# and say so).  Runtime ~3-5 minutes on 2 cores (mostly generating 6 GB).
# Env: WDELTA_BIN (default build), BENCH_FS_REPS (default 5: median of N),
#      BENCH_FS_BIG_PARAMS (default 1500M), BENCH_FS_BIG=DIR (an existing
#      genmodel pair DIR/base DIR/ft to use instead of generating one)
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta"
GENMODEL="$BIN/genmodel"
WDELTAFS="$BIN/wdeltafs"
SHARED="$REPO/../shared"
REPS="${BENCH_FS_REPS:-5}"
BIG_PARAMS="${BENCH_FS_BIG_PARAMS:-1500M}"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)

say() { echo "bench-fs: $*" >&2; }
for b in "$WDELTA" "$GENMODEL" "$WDELTAFS"; do
  [ -x "$b" ] || { say "$b is not built (run make); skipping the filesystem bench"; exit 0; }
done
[ -c /dev/fuse ] || { say "/dev/fuse missing; skipping the filesystem bench"; exit 0; }
command -v fusermount3 >/dev/null || { say "fusermount3 missing (apt-get install fuse3); skipping"; exit 0; }

W=$(mktemp -d "${TMPDIR:-/tmp}/wdeltafs-bench.XXXXXX")
MOUNTS=() PIDS=()
cleanup() {
  local m p
  for m in "${MOUNTS[@]}"; do timeout 5 mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null; }; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f", 100 * a / b; else print "nan" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

CAN_DROP=0
if [ "$(id -u)" = 0 ] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then CAN_DROP=1
else say "cannot drop the page cache (not root?): cold numbers are only approximately cold"; fi
drop_caches() { [ $CAN_DROP = 1 ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }; return 0; }

# dd_mbs FILE: sequential read with dd bs=1M, prints MB/s (decimal)
dd_mbs() {
  local out secs bytes
  out=$(LC_ALL=C dd if="$1" of=/dev/null bs=1M 2>&1) || { say "dd $1 failed: $out"; echo 0; return 1; }
  bytes=$(sed -n 's/^\([0-9]*\) bytes.*/\1/p' <<<"$out")
  secs=$(sed -n 's/.* copied, \([0-9.e+-]*\) s,.*/\1/p' <<<"$out")
  awk -v b="$bytes" -v s="$secs" 'BEGIN { if (s > 0) printf "%.1f\n", b / s / 1e6; else print 0 }'
}

# start_mount MNT CMD...: run a foreground FUSE daemon, wait for the mount;
# sets DPID and MOUNT_SECS (launch -> mountpoint visible)
start_mount() {
  local mnt=$1; shift
  mkdir -p "$mnt"
  local t0; t0=$(now)
  "$@" 2>>"$W/daemons.log" &
  DPID=$!
  MOUNTS+=("$mnt"); PIDS+=("$DPID")
  local i
  for i in $(seq 1 3000); do
    mountpoint -q "$mnt" && { MOUNT_SECS=$(elapsed "$t0"); return 0; }
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.01
  done
  say "mount of $mnt failed: $*"; tail -n 5 "$W/daemons.log" >&2
  return 1
}
stop_mount() { # MNT: unmount, wait for the daemon
  fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null
  local i; for i in $(seq 1 200); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.05; done
  wait "$DPID" 2>/dev/null
}
vmhwm_mb() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

ROWS=()
# rows are printed sorted by their leading number (parts run in another order)
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); }
verdict() { if [ "$1" = skip ]; then echo "-"; elif [ "$1" = 1 ]; then echo "yes"; else echo "**NO**"; fi; }

# ------------------------------------------------------------------ 1-3: pairB
PB="$SHARED/models/pairB"
SHARD=model-00001-of-00002.safetensors
if [ -d "$PB/base" ] && [ -f "$PB/ft/$SHARD" ]; then
  SIZE=$(stat -c %s "$PB/ft/$SHARD")
  # 1. ceiling
  if command -v cc >/dev/null && pkg-config --exists fuse3 2>/dev/null &&
     cc -O2 -std=c11 -D_GNU_SOURCE -Wall -o "$W/nullfs" "$REPO/tests/bench/nullfs.c" $(pkg-config --cflags --libs fuse3) 2>"$W/cc.log"; then
    say "1. ceiling: nullfs, $SIZE bytes, median of $REPS cold dd runs"
    if start_mount "$W/null" "$W/nullfs" "$SIZE" "$W/null" -f; then
      for r in $(seq "$REPS"); do drop_caches; dd_mbs "$W/null/data"; done >"$W/ceil"
      stop_mount "$W/null"
      CEIL=$(median <"$W/ceil")
      row "1. ceiling: dd bs=1M of a do-nothing FUSE file (nullfs), $(fmt "$SIZE" '%.1f' | awk '{ printf "%.1f", $1 / 1e6 }') MB" "$(fmt "$CEIL" '%.0f') MB/s" "-" "-"
    fi
  else
    say "cannot build tests/bench/nullfs.c (cc, pkg-config fuse3?): $(head -n 3 "$W/cc.log" 2>/dev/null)"
  fi
  CEIL=${CEIL:-0}

  # 2. cold read of the virtual shard
  mkdir -p "$W/srcB"
  "$WDELTA" create --base "$PB/base" --finetuned "$PB/ft" -o "$W/srcB/pairB.wdelta" --quiet >/dev/null
  OPTS="base=$PB/base,cache_dir=$W/cache"
  say "2. cold: fresh mount + dropped caches, dd of pairB/$SHARD, median of $REPS"
  : >"$W/cold"
  ok=1
  for r in $(seq "$REPS"); do
    start_mount "$W/mB" "$WDELTAFS" "$W/srcB" "$W/mB" -f -o "$OPTS" || { ok=0; break; }
    drop_caches
    dd_mbs "$W/mB/pairB/$SHARD" >>"$W/cold"
    if [ "$r" -eq "$REPS" ]; then
      # 3. warm: the same mount, read again (and the original from the page cache)
      cmp -s "$W/mB/pairB/$SHARD" "$PB/ft/$SHARD" || say "WARNING: the virtual shard differs from the original"
      for k in $(seq "$REPS"); do dd_mbs "$W/mB/pairB/$SHARD"; done >"$W/warm"
      cat "$PB/ft/$SHARD" >/dev/null
      for k in $(seq "$REPS"); do dd_mbs "$PB/ft/$SHARD"; done >"$W/orig"
    fi
    stop_mount "$W/mB"
  done
  if [ $ok = 1 ]; then
    COLD=$(median <"$W/cold"); WARM=$(median <"$W/warm"); ORIG=$(median <"$W/orig")
    cp=$(pct "$COLD" "$CEIL"); wp=$(pct "$WARM" "$ORIG")
    cold_note=""; [ $CAN_DROP = 1 ] || cold_note=" (page cache NOT dropped)"
    if [ "$CEIL" != 0 ]; then
      row "2. cold sequential read, pairB virtual shard 1$cold_note" "$(fmt "$COLD" '%.0f') MB/s = $cp% of ceiling" ">= 50%" "$(verdict "$(ge "$cp" 50 && echo 1 || echo 0)")"
    else
      row "2. cold sequential read, pairB virtual shard 1$cold_note" "$(fmt "$COLD" '%.0f') MB/s (no ceiling)" ">= 50%" "-"
    fi
    row "3. warm re-read of the virtual shard vs the original from page cache" "$(fmt "$WARM" '%.0f') vs $(fmt "$ORIG" '%.0f') MB/s = $wp%" ">= 70%" "$(verdict "$(ge "$wp" 70 && echo 1 || echo 0)")"
  fi
else
  say "$PB absent; skipping parts 1-3 (ceiling, cold and warm reads of pairB)"
fi

# ------------------------------------------------------------------ 5: 1000 deltas
say "5. 1000 .wdelta files: mount time and ls -l time"
"$GENMODEL" "$W/small" --params 100k --shards 1 >/dev/null 2>&1
mkdir -p "$W/src1000/many"
"$WDELTA" create --base "$W/small/base" --finetuned "$W/small/ft" -o "$W/small.wdelta" --quiet >/dev/null
for i in $(seq -w 0 999); do cp "$W/small.wdelta" "$W/src1000/many/m$i.wdelta"; done
OPTS="base=$W/small/base,cache_dir=$W/cache"
# the first mount remembers the base's digest in cache_dir; time the second
if start_mount "$W/m1000" "$WDELTAFS" "$W/src1000" "$W/m1000" -f -o "$OPTS"; then
  FIRST=$MOUNT_SECS; stop_mount "$W/m1000"
fi
if start_mount "$W/m1000" "$WDELTAFS" "$W/src1000" "$W/m1000" -f -o "$OPTS"; then
  MSECS=$MOUNT_SECS
  t0=$(now); n=$(ls -l "$W/m1000/many" | grep -c '^d'); LSECS=$(elapsed "$t0")
  t0=$(now); ls -l "$W/m1000/many" >/dev/null; LSECS2=$(elapsed "$t0")
  stop_mount "$W/m1000"
  row "5a. mount time, 1000 .wdelta in SRC/many (first mount, base hashed: ${FIRST:-?} s)" "$(fmt "$MSECS" '%.3f') s" "< 1 s" "$(verdict "$(awk -v a="$MSECS" 'BEGIN { print (a < 1) }')")"
  row "5b. ls -l of the 1000 model dirs (first / again)" "$(fmt "$LSECS" '%.3f') s / $(fmt "$LSECS2" '%.3f') s ($n dirs)" "< 0.5 s" "$(verdict "$(awk -v a="$LSECS" -v n="$n" 'BEGIN { print (a < 0.5 && n == 1000) }')")"
fi
rm -rf "$W/src1000"

# ------------------------------------------------------------------ 4 + 6: a 3 GB file
if [ -n "${BENCH_FS_BIG:-}" ]; then
  BIG="$BENCH_FS_BIG"
else
  BIG="$W/big"
  say "4/6. generating a $BIG_PARAMS-parameter single-shard model pair (takes a while)"
  t0=$(now)
  "$GENMODEL" "$BIG" --params "$BIG_PARAMS" --shards 1 >/dev/null || { say "genmodel failed"; BIG=""; }
  say "     generated in $(elapsed "$t0") s"
fi
if [ -n "$BIG" ]; then
  mkdir -p "$W/srcBig"
  t0=$(now)
  "$WDELTA" create --base "$BIG/base" --finetuned "$BIG/ft" -o "$W/srcBig/big.wdelta" --quiet >/dev/null
  say "     delta created in $(elapsed "$t0") s"
  BIGF=model.safetensors
  BIGSIZE=$(stat -c %s "$BIG/ft/$BIGF")
  cat >"$W/lasttensor.py" <<'PYEOF'
import hashlib, json, os, struct, sys, time
path, orig = sys.argv[1], sys.argv[2]
def read_range(fd, off, ln):
    out = bytearray()
    while len(out) < ln:
        b = os.pread(fd, min(ln - len(out), 8 << 20), off + len(out))
        if not b:
            break
        out += b
    return bytes(out)
t0 = time.perf_counter()
fd = os.open(path, os.O_RDONLY)
n = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
h = json.loads(read_range(fd, 8, n))
h.pop("__metadata__", None)
t_head = time.perf_counter() - t0
items = sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0])
last = items[-1]
big = [kv for kv in items if kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0] >= (1 << 20)]
picks = [("last", last)] + ([("last >= 1 MiB", big[-1])] if big and big[-1][0] != last[0] else [])
ofd = os.open(orig, os.O_RDONLY)
res = {"header_s": t_head, "tensors": []}
for label, (name, t) in picks:
    a, b = t["data_offsets"]
    off, ln = 8 + n + a, b - a
    t0 = time.perf_counter(); got = read_range(fd, off, ln); cold = time.perf_counter() - t0
    t0 = time.perf_counter(); read_range(fd, off, ln); warm = time.perf_counter() - t0
    same = got == read_range(ofd, off, ln)
    res["tensors"].append({"label": label, "name": name, "bytes": ln, "offset": off,
                           "cold_s": cold, "warm_s": warm, "equal": same})
print(json.dumps(res))
PYEOF
  OPTS="base=$BIG/base,cache_size=32M,cache_dir=$W/cache"
  # the first mount hashes the 3 GB base (digest remembered in cache_dir);
  # wait for it to be ready, then measure on a fresh mount
  if start_mount "$W/mBig" "$WDELTAFS" "$W/srcBig" "$W/mBig" -f -o "$OPTS"; then
    t0=$(now)
    for i in $(seq 1 600); do [ -d "$W/mBig/big" ] && break; sleep 0.5; done
    say "     base ready after $(elapsed "$t0") s (first mount)"
    stop_mount "$W/mBig"
  fi
  drop_caches
  if start_mount "$W/mBig" "$WDELTAFS" "$W/srcBig" "$W/mBig" -f -o "$OPTS"; then
    for i in $(seq 1 600); do [ -d "$W/mBig/big" ] && break; sleep 0.2; done
    say "4. last tensors of the $(awk -v b="$BIGSIZE" 'BEGIN { printf "%.2f", b / 1e9 }') GB virtual file (cold mount)"
    if "$PY" "$W/lasttensor.py" "$W/mBig/big/$BIGF" "$BIG/ft/$BIGF" >"$W/last.json" 2>"$W/last.err"; then
      "$PY" - "$W/last.json" "$BIGSIZE" >"$W/last.rows" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
gb = int(sys.argv[2]) / 1e9
for t in d["tensors"]:
    print(f"4. read the {t['label']} tensor ({t['name']}, {t['bytes'] / 1e6:.3f} MB at {t['offset'] / 1e9:.2f} GB) of a {gb:.2f} GB virtual file, header read first ({d['header_s'] * 1e3:.1f} ms)"
          f"\t{t['cold_s'] * 1e3:.1f} ms cold, {t['warm_s'] * 1e3:.2f} ms warm{'' if t['equal'] else ' **DIFFERS**'}")
PYEOF
      while IFS=$'\t' read -r what res; do row "$what" "$res" "-" "-"; done <"$W/last.rows"
    else
      say "last-tensor read failed: $(tail -n 3 "$W/last.err")"
    fi
    say "6. dd of the whole $(awk -v b="$BIGSIZE" 'BEGIN { printf "%.2f", b / 1e9 }') GB file through cache_size=32M"
    BIGMBS=$(dd_mbs "$W/mBig/big/$BIGF")
    HWM=$(vmhwm_mb "$DPID")
    stop_mount "$W/mBig"
    row "6a. sequential read of the $(awk -v b="$BIGSIZE" 'BEGIN { printf "%.2f", b / 1e9 }') GB virtual file (cache_size=32M, after part 4)" "$(fmt "$BIGMBS" '%.0f') MB/s" "-" "-"
    row "6b. daemon peak RSS (VmHWM) after reading the whole file through cache_size=32M" "$HWM MB" "< 96 MB" "$(verdict "$(awk -v a="$HWM" 'BEGIN { print (a < 96) }')")"
  fi
fi

# ------------------------------------------------------------------ table
echo
echo "wdeltafs bench on $(nproc) CPUs, $(uname -m), $(basename "$BIN")/wdeltafs; MB = 10^6 bytes; median of $REPS runs where repeated"
echo
echo "| measure | result | target | met |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}" | sort -s -t'|' -k2,2V
echo
