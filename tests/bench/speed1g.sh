#!/usr/bin/env bash
# `make bench`, issue 18 part: a ~1 GB lossless fine-tune, every figure next
# to its reference measured in the same run (runs interleaved, median of
# BENCH_1G_REPS), as one markdown table:
#   - cold sequential read (fresh mount, page cache dropped, base then read
#     into the page cache) vs a do-nothing FUSE file of the same size
#     (tests/bench/nullfs.c, same 1 MiB max_readahead, fresh mount, dropped);
#   - warm re-read on that mount vs the original file from the page cache,
#     and vs the do-nothing FUSE file's warm re-read (what FUSE's page cache
#     path allows), and the page-cache folio sizes of both files
#     (tests/bench/folios.c, root), which set FUSE's warm-read ceiling;
#   - the daemon over the cold read, from /proc/PID/stat and status: minor
#     faults, user and system CPU seconds, peak RSS;
#   - loader access patterns, each on a fresh mount vs the same pattern on
#     the original file (page cache warm): safetensors-style mmap, tensors
#     read in header order, in random order, 3 processes at once (random);
#   - `wdelta apply --threads 1` vs `zstd -d` of the fine-tune compressed with
#     `zstd -3` (both write to tmpfs: /dev/shm, else $W), and with
#     --check-base (the whole base hashed first);
#   - `wdelta create` (default strategy, all CPUs) vs `zstd -3 -T0`;
#   - block-path decode rate (decode_speed): per core (the decoding thread's
#     CPU time, steady on a shared machine) against the 1.5 GB/s target, and
#     the wall-clock rate of 1 and 2 threads together, for the scaling.
# The model: build/genmodel --params BENCH_1G_PARAMS (default 500M, bf16,
# one shard: about 1 GB), or BENCH_1G=DIR holding DIR/base and DIR/ft.
# Needs root to drop the page cache (else "cold" is marked as not cold),
# /dev/fuse + fusermount3 for the mount rows, zstd for its rows (Debian
# packages only).  BENCH_1G=0 skips this part.  About 5-10 minutes.
# BENCH_1G_ONLY=read: only the cold/warm read rows (a minute or two);
# BENCH_1G_ONLY=apply: only the apply rows.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta" WDELTAFS="$BIN/wdeltafs" GENMODEL="$BIN/genmodel"
DECODE="$REPO/build/decode_speed"
REPS="${BENCH_1G_REPS:-3}"
ONLY="${BENCH_1G_ONLY:-}"
case "$ONLY" in ""|read|apply) ;; *) echo "bench-1g: BENCH_1G_ONLY=$ONLY: only 'read' and 'apply' are known" >&2; exit 2 ;; esac
PARAMS="${BENCH_1G_PARAMS:-500M}"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)
say() { echo "bench-1g: $*" >&2; }
[ "${BENCH_1G:-}" = 0 ] && { say "BENCH_1G=0: skipping"; exit 0; }
for b in "$WDELTA" "$WDELTAFS" "$GENMODEL" "$DECODE"; do
  [ -x "$b" ] || { say "$b is not built (make all build/decode_speed); skipping"; exit 0; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/wdelta-1g.XXXXXX")
if [ -d /dev/shm ] && [ -w /dev/shm ]; then T=$(mktemp -d /dev/shm/wdelta-1g.XXXXXX); else T="$W/out"; mkdir -p "$T"; fi
MOUNTS=() PIDS=()
cleanup() {
  local m p
  for m in "${MOUNTS[@]}"; do mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null; }; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$W" "$T"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f\n", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
CAN_DROP=0
if [ "$(id -u)" = 0 ] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then CAN_DROP=1
else say "cannot drop the page cache (not root?): cold rows are not cold"; fi
drop_caches() { [ $CAN_DROP = 1 ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }; return 0; }

# ------------------------------------------------------------------ the pair
if [ -n "${BENCH_1G:-}" ] && [ -d "${BENCH_1G}/base" ]; then
  G="$BENCH_1G"
else
  G="$W/gen"
  say "generating a $PARAMS-parameter bf16 pair (one shard)"
  "$GENMODEL" "$G" --params "$PARAMS" --shards 1 --dtype bf16 --seed 7 >/dev/null || { say "genmodel failed"; exit 1; }
fi
FT=$(ls "$G"/ft/*.safetensors | head -n 1)
BASEF=("$G"/base/*.safetensors)
FNAME=$(basename "$FT")
SIZE=$(stat -c %s "$FT")
GB=$(awk -v b="$SIZE" 'BEGIN { printf "%.2f", b / 1e9 }')
mkdir -p "$W/src"
say "creating the lossless delta"
"$WDELTA" create -q -s lossless --base "$G/base" --finetuned "$G/ft" -o "$W/src/m.wdelta" >/dev/null || { say "create failed"; exit 1; }

ROWS=()
# row MEASURE FIGURE REFERENCE RATIO TARGET
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
mbs() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", b / s / 1e6; else print 0 }'; }

# ------------------------------------------------------------------ mounts
FUSE_OK=1
[ -c /dev/fuse ] && command -v fusermount3 >/dev/null || { FUSE_OK=0; say "no FUSE here: skipping the mount rows"; }
NULLFS=""
FUSE_FLAGS=()
[ $FUSE_OK = 1 ] && pkg-config --exists fuse3 2>/dev/null && read -r -a FUSE_FLAGS < <(pkg-config --cflags --libs fuse3)
if [ ${#FUSE_FLAGS[@]} -gt 0 ] &&
   cc -O2 -std=c11 -D_GNU_SOURCE -o "$W/nullfs" "$REPO/tests/bench/nullfs.c" "${FUSE_FLAGS[@]}" 2>"$W/cc.log"; then
  NULLFS="$W/nullfs"
else
  say "cannot build tests/bench/nullfs.c: no FUSE ceiling"
fi
FOLIOS=""
cc -O2 -std=c11 -o "$W/folios" "$REPO/tests/bench/folios.c" 2>>"$W/cc.log" && FOLIOS="$W/folios"
start_mount() { # MNT CMD...: foreground daemon; sets DPID
  local mnt=$1 _; shift
  mkdir -p "$mnt"
  "$@" 2>>"$W/daemons.log" & DPID=$!
  MOUNTS+=("$mnt"); PIDS+=("$DPID")
  for _ in $(seq 1 3000); do
    mountpoint -q "$mnt" && return 0
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.01
  done
  say "mount of $mnt failed: $*"; tail -n 5 "$W/daemons.log" >&2; return 1
}
stop_mount() {
  fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null
  local _; for _ in $(seq 1 200); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.05; done
  wait "$DPID" 2>/dev/null
}
wmount() { # fresh wdeltafs mount at $W/m, virtual file ready; prints nothing
  start_mount "$W/m" "$WDELTAFS" "$W/src" "$W/m" -f -o "base=$G/base,cache_dir=$W/digests" || return 1
  local _; for _ in $(seq 1 1200); do [ -e "$W/m/m/$FNAME" ] && return 0; sleep 0.1; done
  say "the virtual file did not appear"; return 1
}
# dd_secs FILE: seconds for a sequential dd bs=1M
dd_secs() { local t0; t0=$(now); dd if="$1" of=/dev/null bs=1M status=none || return 1; since "$t0"; }
# ticks PID: "minflt utime stime" (utime/stime in clock ticks, all threads)
ticks() { awk '{ sub(/^.*\) /, ""); print $8, $12, $13 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

cat >"$W/loader.py" <<'PYEOF'
# loader.py MODE FILE [SEED]: read every tensor of a safetensors file the way
# a loader does; prints seconds.  MODE: mmap (safetensors-style: mmap, copy
# each tensor out, header order), header (pread each tensor, header order),
# random (pread, shuffled order).
import json, mmap, os, random, struct, sys, time
mode, path = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
t0 = time.perf_counter()
fd = os.open(path, os.O_RDONLY)
n = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
h = json.loads(os.pread(fd, n, 8))
h.pop("__metadata__", None)
items = [(8 + n + t["data_offsets"][0], t["data_offsets"][1] - t["data_offsets"][0]) for t in h.values()]
if mode == "random":
    random.Random(seed).shuffle(items)
CH = 16 << 20
if mode == "mmap":
    mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    for off, ln in items:
        for a in range(off, off + ln, CH):
            bytes(mm[a:min(a + CH, off + ln)])
    mm.close()
else:
    for off, ln in items:
        a = off
        while a < off + ln:
            b = os.pread(fd, min(CH, off + ln - a), a)
            if not b:
                sys.exit("short read at %d" % a)
            a += len(b)
os.close(fd)
print("%.4f" % (time.perf_counter() - t0))
PYEOF
# pattern_secs MODE FILE: seconds for one loader pattern (procs: 3 at once)
pattern_secs() {
  if [ "$1" = procs ]; then
    local t0 p ps=(); t0=$(now)
    for p in 1 2 3; do "$PY" "$W/loader.py" random "$2" "$p" >/dev/null & ps+=($!); done
    wait "${ps[@]}"; since "$t0"
  else
    "$PY" "$W/loader.py" "$1" "$2"
  fi
}

if [ $FUSE_OK = 1 ] && [ "$ONLY" != apply ]; then
  LOAD_BEFORE=$(cut -d ' ' -f 1 /proc/loadavg)
  : >"$W/nullw"; : >"$W/null"; : >"$W/cold"; : >"$W/warm"; : >"$W/orig"; : >"$W/flt"; : >"$W/ut"; : >"$W/st"; : >"$W/hwm"
  for r in $(seq "$REPS"); do
    say "cold/warm reads, round $r of $REPS"
    if [ -n "$NULLFS" ] && start_mount "$W/n" "$NULLFS" "$SIZE" "$W/n" -f; then
      drop_caches; dd_secs "$W/n/data" >>"$W/null"
      dd_secs "$W/n/data" >/dev/null; dd_secs "$W/n/data" >>"$W/nullw"; stop_mount "$W/n"
    fi
    wmount || break
    drop_caches
    cat "${BASEF[@]}" >/dev/null
    read -r f0 u0 s0 < <(ticks "$DPID")
    dd_secs "$W/m/m/$FNAME" >>"$W/cold"
    read -r f1 u1 s1 < <(ticks "$DPID")
    echo $((f1 - f0)) >>"$W/flt"
    awk -v a="$u0" -v b="$u1" -v hz="$HZ" 'BEGIN { print (b - a) / hz }' >>"$W/ut"
    awk -v a="$s0" -v b="$s1" -v hz="$HZ" 'BEGIN { print (b - a) / hz }' >>"$W/st"
    awk '/^VmHWM:/ { printf "%.0f\n", $2 / 1024 }' "/proc/$DPID/status" >>"$W/hwm"
    dd_secs "$W/m/m/$FNAME" >/dev/null # first re-read
    dd_secs "$W/m/m/$FNAME" >>"$W/warm"
    [ "$r" = 1 ] && { cmp -s "$W/m/m/$FNAME" "$FT" || say "WARNING: the virtual file differs from the original"; }
    [ "$r" = 1 ] && [ -n "$FOLIOS" ] && "$FOLIOS" "$W/m/m/$FNAME" >"$W/folios.v" 2>>"$W/cc.log"
    stop_mount "$W/m"
    cat "$FT" >/dev/null
    [ "$r" = 1 ] && [ -n "$FOLIOS" ] && "$FOLIOS" "$FT" >"$W/folios.o" 2>>"$W/cc.log"
    dd_secs "$FT" >>"$W/orig"
  done
  cold_note=""; [ $CAN_DROP = 1 ] || cold_note=" (page cache NOT dropped)"
  C=$(median <"$W/cold"); N=$(median <"$W/null"); WM=$(median <"$W/warm"); O=$(median <"$W/orig")
  # each round's ratio too: the read is CPU-bound (decoding) and the do-nothing
  # file is not, so other load on the machine moves the ratio from round to round
  RR=$(paste -d ' ' "$W/null" "$W/cold" | awk '$1 > 0 && $2 > 0 { printf "%s%.2fx", (NR > 1 ? ", " : ""), $1 / $2 }')
  row "cold sequential read (dd bs=1M), $GB GB virtual file, fresh mount, base in page cache$cold_note" "$(mbs "$SIZE" "$C") MB/s" "do-nothing FUSE file (nullfs, 1 MiB max_readahead): $(mbs "$SIZE" "$N") MB/s; rounds: ${RR:-?}; load average $LOAD_BEFORE before, $(cut -d ' ' -f 1 /proc/loadavg) after" "$(ratio "$N" "$C")" ">= 0.5x"
  row "warm re-read (second re-read) of that virtual file" "$(mbs "$SIZE" "$WM") MB/s" "the original from the page cache: $(mbs "$SIZE" "$O") MB/s" "$(ratio "$O" "$WM")" ">= 0.9x"
  NW=$(median <"$W/nullw")
  row "warm re-read of that virtual file vs FUSE's page cache path" "$(mbs "$SIZE" "$WM") MB/s" "do-nothing FUSE file, second re-read: $(mbs "$SIZE" "$NW") MB/s" "$(ratio "$NW" "$WM")" "-"
  # why the warm row sits where it does: the kernel copies a cached read one
  # folio at a time, and its FUSE code caches in 4 KiB folios where the
  # original's file system uses large ones (needs root for /proc/kpageflags)
  if [ -s "$W/folios.v" ] && [ -s "$W/folios.o" ]; then
    read -r lv kv _ <"$W/folios.v"; read -r lo ko _ <"$W/folios.o"
    row "page-cache folios of the virtual file (first 256 MiB; the kernel's FUSE code picks them)" "mean $kv KiB, $(awk -v s="$lv" 'BEGIN { printf "%.0f", s * 100 }')% of pages in large folios" "the original: mean $ko KiB, $(awk -v s="$lo" 'BEGIN { printf "%.0f", s * 100 }')% in large folios" "-" "-"
  fi
  U=$(median <"$W/ut"); S=$(median <"$W/st")
  row "daemon over the cold read: minor faults" "$(median <"$W/flt")" "-" "-" "< 20000"
  row "daemon over the cold read: system vs user CPU s" "$(printf '%.2f' "$S") s system" "$(printf '%.2f' "$U") s user" "$(ratio "$S" "$U")" "< 1.0x"
  row "daemon peak RSS (VmHWM) after the cold read (default 1 GiB cache)" "$(median <"$W/hwm") MiB" "-" "-" "cache + 64 MiB"

  PATS=(mmap header random procs); [ "$ONLY" = read ] && PATS=()
  for pat in "${PATS[@]}"; do
    : >"$W/p.v"; : >"$W/p.o"
    for r in $(seq "$REPS"); do
      say "loader pattern $pat, round $r of $REPS"
      wmount || break
      cat "${BASEF[@]}" >/dev/null
      pattern_secs "$pat" "$W/m/m/$FNAME" >>"$W/p.v"
      stop_mount "$W/m"
      cat "$FT" >/dev/null
      pattern_secs "$pat" "$FT" >>"$W/p.o"
    done
    V=$(median <"$W/p.v"); O=$(median <"$W/p.o")
    k=1; [ $pat = procs ] && k=3
    case $pat in
      mmap) what="safetensors-style: mmap, each tensor copied out in header order" ;;
      header) what="pread of each tensor in header order" ;;
      random) what="pread of each tensor in random order" ;;
      procs) what="3 processes at once, each all tensors in its own random order (MB/s of all)" ;;
    esac
    row "loader, fresh mount: $what" "$(mbs "$((SIZE * k))" "$V") MB/s" "the same on the original (page cache): $(mbs "$((SIZE * k))" "$O") MB/s" "$(ratio "$O" "$V")" "-"
  done
fi

# ------------------------------------------------------------------ apply, create vs zstd
# same_memory: before each timed command that writes its output to $T, write
# and delete as many bytes there, so that every such command (ours and its
# reference alike) gets memory the system holds ready.  On a virtual
# machine whose freed memory goes back to the host (virtio-balloon free
# page reporting, as here), memory freed some seconds before must first be
# given back by the host, which added 0.2-0.3 s of system time to whichever
# command happened to run after a pause: the order of the commands, not
# their speed, then decided the ratio.
same_memory() {
  dd if=/dev/zero of="$T/.same" bs=1M count=$((SIZE / 1048576 + 1)) status=none 2>/dev/null
  rm -f "$T/.same"
}
if [ "$ONLY" = read ]; then
  :
elif command -v zstd >/dev/null; then
  zstd -q -3 -T0 -f "$FT" -o "$W/ft.zst"
  : >"$W/ap"; : >"$W/zd"; : >"$W/apc"
  CHECKB=0; "$WDELTA" apply --help 2>/dev/null | grep -q -- --check-base && CHECKB=1
  for r in $(seq "$REPS"); do
    say "apply --threads 1 vs zstd -d, round $r of $REPS"
    cat "${BASEF[@]}" "$W/src/m.wdelta" "$W/ft.zst" >/dev/null
    rm -rf "$T/a"; same_memory; t0=$(now)
    "$WDELTA" apply -q "$W/src/m.wdelta" --base "$G/base" -o "$T/a" --threads 1 >/dev/null || { say "apply failed"; break; }
    since "$t0" >>"$W/ap"
    [ "$r" = 1 ] && { cmp -s "$T/a/$FNAME" "$FT" || say "WARNING: apply output differs"; }
    rm -rf "$T/a"
    if [ $CHECKB = 1 ]; then
      same_memory; t0=$(now)
      "$WDELTA" apply -q --check-base "$W/src/m.wdelta" --base "$G/base" -o "$T/a" --threads 1 >/dev/null || { say "apply --check-base failed"; break; }
      since "$t0" >>"$W/apc"; rm -rf "$T/a"
    fi
    same_memory; t0=$(now)
    zstd -q -d -f "$W/ft.zst" -o "$T/z" || break
    since "$t0" >>"$W/zd"; rm -f "$T/z"
  done
  A=$(median <"$W/ap"); Z=$(median <"$W/zd")
  row "\`wdelta apply --threads 1\`, $GB GB, output on tmpfs" "$(printf '%.2f' "$A") s" "\`zstd -d\` of it (zstd -3): $(printf '%.2f' "$Z") s" "$(ratio "$A" "$Z")" "<= 1.0x"
  [ $CHECKB = 1 ] && { A=$(median <"$W/apc"); row "\`wdelta apply --threads 1 --check-base\` (the whole base hashed first)" "$(printf '%.2f' "$A") s" "\`zstd -d\`: $(printf '%.2f' "$Z") s" "$(ratio "$A" "$Z")" "-"; }
  : >"$W/cr"; : >"$W/zc"
  [ "$ONLY" = apply ] && REPSC=0 || REPSC=$REPS
  for r in $(seq "$REPSC"); do
    say "create vs zstd -3 -T0, round $r of $REPS"
    cat "${BASEF[@]}" "$FT" >/dev/null
    same_memory; t0=$(now)
    "$WDELTA" create -q --base "$G/base" --finetuned "$G/ft" -o "$T/c.wdelta" >/dev/null || { say "create failed"; break; }
    since "$t0" >>"$W/cr"; rm -f "$T/c.wdelta"
    same_memory; t0=$(now)
    zstd -q -3 -T0 -f "$FT" -o "$T/c.zst" || break
    since "$t0" >>"$W/zc"; rm -f "$T/c.zst"
  done
  A=$(median <"$W/cr"); Z=$(median <"$W/zc")
  [ "$ONLY" = apply ] || row "\`wdelta create\` (default strategy, $(nproc) threads), $GB GB" "$(printf '%.2f' "$A") s" "\`zstd -3 -T0\`: $(printf '%.2f' "$Z") s" "$(ratio "$A" "$Z")" "<= 2x"
else
  say "zstd missing (apt-get install zstd): skipping the apply/create rows"
fi

# ------------------------------------------------------------------ decode rate
[ -n "$ONLY" ] || {
pc=$("$DECODE" --threads 1 "$W/src/m.wdelta" "$G/base" "$REPS")
w1=$("$DECODE" --threads 1 --wall "$W/src/m.wdelta" "$G/base" "$REPS")
w2=$("$DECODE" --threads 2 --wall "$W/src/m.wdelta" "$G/base" "$REPS")
row "lossless block-path decode (decode_speed), per core (thread CPU time)" "$pc MB/s" "-" "-" ">= 1500"
row "lossless block-path decode (decode_speed), wall clock, 2 threads" "$w2 MB/s" "1 thread: $w1 MB/s" "$(ratio "$w2" "$w1")" "scaling"
}

echo
echo "Issue 18 figures: $GB GB bf16 fine-tune ($(basename "$G")), stored lossless; $(nproc) CPUs, $(uname -m);"
echo "MB = 10^6 bytes; median of $REPS interleaved runs; ratio: figure / reference (speeds as MB/s, times and CPU as seconds)"
echo
echo "| measure | figure | reference (same run) | ratio | target |"
echo "| --- | --- | --- | ---: | --- |"
printf '%s\n' "${ROWS[@]}"
echo
