#!/usr/bin/env bash
# wdeltafs content: every file of a mounted generated model (and of
# ../shared/models/pairB when present) is cmp-equal to the fine-tune's,
# ls -l shows the true sizes, 10,000 random reads from 8 threads return the
# right bytes, a delta without its base is absent and named in
# .wdeltafs/status with a reason, and a corrupted block fails only the reads
# that touch it, with EIO and a log line naming file, tensor and block, while
# the daemon keeps serving.
# Env: WDELTA_BIN = directory holding wdelta, wdeltafs, genmodel (default build-asan).
# Exit: 0 pass, 77 skip, 1 fail.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python

setup_mount_tmp wdeltafs-content
mkdir -p "$SRC/team"
start_watchdog 240

# ---------------------------------------------------------------- inputs
gen_pair "$T/gen" --params 4M --shards 3 || die "genmodel failed"
gen_pair "$T/other" --params 1M --seed 9 || die "genmodel failed"
check "create team/gen.wdelta" create_delta "$T/gen/base" "$T/gen/ft" "$SRC/team/gen.wdelta"
check "create nobase.wdelta (its base is not given)" \
  create_delta "$T/other/base" "$T/other/ft" "$SRC/nobase.wdelta"
printf 'not a delta at all\n' >"$SRC/garbage.wdelta"
declare -A FT=([team/gen]="$T/gen/ft") BASEOF=([team/gen]="$T/gen/base")
BASES="$T/gen/base"
PB="$SHARED/models/pairB"
if [ -d "$PB/base" ] && [ -d "$PB/ft" ]; then
  check "create pairB.wdelta" create_delta "$PB/base" "$PB/ft" "$SRC/pairB.wdelta"
  FT[pairB]="$PB/ft"; BASEOF[pairB]="$PB/base"; BASES="$BASES:$PB/base"
else
  echo "note: SKIP pairB part: $PB absent (only the generated model is checked)"
fi
mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$BASES,cache_size=16M,cache_dir=$T/cache" && pass "mounted" || { fail "mount"; finish; }

# ---------------------------------------------------------------- every file
for m in "${!FT[@]}"; do
  ft=${FT[$m]}
  bad=0 n=0
  for f in "$ft"/*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    name=$(basename "$f")
    cmp "$f" "$MNT/$m/$name" >"$T/cmp.out" 2>&1 || { bad=1; sed 's/^/      /' "$T/cmp.out"; }
    want=$(stat -c %s "$f")
    got=$(ls -l "$MNT/$m/$name" 2>/dev/null | awk '{ print $5 }')
    [ "$want" = "$got" ] || { bad=1; echo "      $name: ls -l size $got, want $want"; }
  done
  check "$m: $n files cmp-equal to the fine-tune, ls -l sizes true" [ $bad -eq 0 -a $n -gt 0 ]
done
# base-only extras appear; the mount lists nothing but models and .wdeltafs
check "MNT lists team, pairB/gen models, no nobase/garbage" \
  [ -z "$(ls -A "$MNT" | grep -vxE 'team|pairB|\.wdeltafs')" ]
check "nobase (base not given) is absent" [ ! -e "$MNT/nobase" ]
check "garbage (not a delta) is absent" [ ! -e "$MNT/garbage" ]

# ---------------------------------------------------------------- status
"$PY" - "$MNT/.wdeltafs/status" "$SRC" >"$T/st.out" 2>&1 <<'PYEOF'
import json, sys
doc = json.load(open(sys.argv[1]))
src = sys.argv[2]
un = {u["delta"]: u["reason"] for u in doc["unavailable"]}
for d in (src + "/nobase.wdelta", src + "/garbage.wdelta"):
    assert d in un and un[d], f"{d} not named as unavailable: {doc['unavailable']}"
    print(f"{d.rsplit('/', 1)[1]}: {un[d]}")
assert "base" in un[src + "/nobase.wdelta"], "the reason should mention the base"
names = sorted(m["name"] for m in doc["models"])
assert "team/gen" in names, names
c = doc["cache"]
for k in ("capacity", "used", "hits", "misses", "decoded_bytes", "decode_seconds"):
    assert k in c, k
assert c["capacity"] == 16 << 20 and c["used"] <= c["capacity"], c
assert doc["models_served"] == len(names) and "open_files" in doc
print("cache:", c)
PYEOF
rc=$?; sed 's/^/      /' "$T/st.out"
check ".wdeltafs/status: JSON naming the unserved deltas with reasons, cache stats" [ $rc -eq 0 ]

# ---------------------------------------------------------------- random reads
if [ -n "${FT[pairB]:-}" ]; then rm_model=pairB; else rm_model=team/gen; fi
pairs=()
for f in "${FT[$rm_model]}"/*.safetensors "${FT[team/gen]}"/*.safetensors; do
  case $f in "${FT[team/gen]}"/*) m=team/gen ;; *) m=$rm_model ;; esac
  pairs+=("$MNT/$m/$(basename "$f")" "$f")
done
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
"$PY" - "${pairs[@]}" >"$T/rr.out" 2>&1 <<'PYEOF'
import os, random, sys, threading
args = sys.argv[1:]
pairs = [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
sizes = [os.stat(o).st_size for _, o in pairs]
READS, THREADS = 10000, 8
lock = threading.Lock()
stats = {"reads": 0, "bytes": 0, "bad": 0}
msgs = []
def worker(tid):
    rng = random.Random(1234 + tid)
    fds = [(os.open(v, os.O_RDONLY), os.open(o, os.O_RDONLY)) for v, o in pairs]
    n = nb = 0
    for _ in range(READS // THREADS):
        i = rng.randrange(len(pairs))
        size = sizes[i]
        r = rng.random()
        ln = rng.randint(1, 16) if r < 0.1 else rng.randint(1, 65536) if r < 0.7 else rng.randint(1, 3 << 20)
        k = rng.random()
        if k < 0.1:
            off = max(0, size - rng.randint(0, ln))           # crosses EOF
        elif k < 0.25:                                        # around 1 MiB boundaries
            off = min(max(0, rng.randrange(size // (1 << 20) + 1) * (1 << 20) + rng.randint(-8, 8)), size)
        else:
            off = rng.randrange(size + 1)
        try:
            got = os.pread(fds[i][0], ln, off)
        except OSError as e:
            got = f"error {e}".encode()
        want = os.pread(fds[i][1], ln, off)
        n += 1
        nb += len(got)
        if got != want:
            with lock:
                stats["bad"] += 1
                if len(msgs) < 5:
                    msgs.append(f"{pairs[i][0]} off={off} len={ln}: got {len(got)} bytes, want {len(want)}")
    for a, b in fds:
        os.close(a); os.close(b)
    with lock:
        stats["reads"] += n; stats["bytes"] += nb
ths = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
for t in ths: t.start()
for t in ths: t.join()
print(f"{stats['reads']} reads, {stats['bytes'] / 1e6:.1f} MB, {stats['bad']} wrong", *msgs, sep="\n")
sys.exit(0 if stats["bad"] == 0 and stats["reads"] == READS else 1)
PYEOF
rc=$?; sed 's/^/      /' "$T/rr.out"
check "10,000 random preads from 8 threads return the right bytes" [ $rc -eq 0 ]
check "status: cache used stays within cache_size=16M" \
  "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1]))["cache"]; sys.exit(c["used"] > c["capacity"])' "$MNT/.wdeltafs/status"
check "xattr user.wdelta.base_hash of team/gen equals wdelta hash of its base" \
  [ "$(getfattr --only-values -n user.wdelta.base_hash "$MNT/team/gen" 2>/dev/null)" = "$("$WDELTA" hash "$T/gen/base" 2>/dev/null)" ]
if unmount_wdeltafs "$MNT"; then pass "unmounted, daemon exited 0"; else fail "unmount / daemon exit status"; fi

# ---------------------------------------------------------------- a corrupted block
# Flip bytes in the middle of a copy (block payloads; the header and index
# sit at the ends and are digest-checked at open), mount only that copy.
rm -rf "$SRC"; mkdir -p "$SRC"
create_delta "$T/gen/base" "$T/gen/ft" "$SRC/bad.wdelta"
sz=$(stat -c %s "$SRC/bad.wdelta")
printf '\xde\xad\xbe\xef\xde\xad\xbe\xef' | dd of="$SRC/bad.wdelta" bs=1 seek=$((sz / 2)) conv=notrunc status=none
: >"$LOG"
mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$T/gen/base,cache_dir=$T/cache" && pass "mounted the corrupted copy" || { fail "mount"; finish; }
eio=0 ok=0
for f in "$T/gen/ft"/*; do
  n=$(basename "$f")
  if cat "$MNT/bad/$n" >"$T/out" 2>"$T/cat.err"; then
    cmp -s "$T/out" "$f" && ok=$((ok + 1))
  elif grep -q 'Input/output error' "$T/cat.err"; then
    eio=$((eio + 1))
  else
    cat "$T/cat.err" | sed 's/^/      /'
  fi
done
echo "      files read whole: $ok intact, $eio with EIO"
check "the corrupted block fails a read with EIO" [ $eio -ge 1 ]
check "log line names file, tensor/offset and block" grep -qE 'read of bad/.*(block|Block)' "$LOG"
grep -m1 'read of bad/' "$LOG" | sed 's/^/      | /'
check "daemon still serving after the EIO (config.json readable)" cmp -s "$MNT/bad/config.json" "$T/gen/ft/config.json"
check "daemon process alive" kill -0 "$DPID"
if unmount_wdeltafs "$MNT"; then pass "unmounted, daemon exited 0"; else fail "unmount / daemon exit status"; fi
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon log"

finish
