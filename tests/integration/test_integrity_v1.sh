#!/usr/bin/env bash
# deltatensors v1 files served by wdeltafs never give wrong bytes (issue 15):
#  - a base shard changed in place under a running mount (64 bytes XORed in a
#    tensor the v1 file rebuilds, then in one it leaves as the base's): every
#    read of the changed part fails with EIO, nothing served differs from the
#    model as it was, the status no longer says "verified" and the log names
#    the change;
#  - a v1 file rewritten in place (same size, other values) while a reader
#    holds it open: the held descriptor gets EIO, never bytes of the new file
#    mixed with the old; a new open gets the new model, whole and right.
# v1 files are written by tests/integration/mkv1.py (sparse strategy).
# Env: WDELTA_BIN = directory holding wdelta, genmodel, wdeltafs (default build-asan).
# Exit: 0 pass, 77 skip, 1 fail.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_fuse
require_python
"$PY" -c 'import numpy' 2>/dev/null || skip "python3-numpy missing"
setup_mount_tmp wdelta-integrity-v1
start_watchdog 240
W="$WDELTA"
RC="$REPO/tests/integration/read_compare.py"

gen_pair "$T/g" --params 4M --shards 1 --dtype bf16 --seed 11 || die "genmodel failed"
B="$T/g/base"
"$PY" "$REPO/tests/integration/mkv1.py" "$B" "$T/g/ft" "$T/v1a.wdelta" 0.1 1 || die "mkv1 failed"
"$PY" "$REPO/tests/integration/mkv1.py" "$B" "$T/g/ft" "$T/v1b.wdelta" 0.1 2 || die "mkv1 failed"
check "two v1 files of the same layout, other values" \
  bash -c '[ "$(stat -c %s "$1")" = "$(stat -c %s "$2")" ] && ! cmp -s "$1" "$2"' _ "$T/v1a.wdelta" "$T/v1b.wdelta"
"$W" apply -q "$T/v1a.wdelta" --base "$B" -o "$T/refa" >/dev/null 2>"$T/err" || { sed 's/^/      | /' "$T/err"; die "apply v1a failed"; }
"$W" apply -q "$T/v1b.wdelta" --base "$B" -o "$T/refb" >/dev/null 2>"$T/err" || die "apply v1b failed"
F=model.safetensors

# xor64 FILE OFFSET: flip 64 bytes in place (twice restores them)
xor64() {
  "$PY" - "$1" "$2" <<'PYEOF'
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(64)
    f.seek(off); f.write(bytes(x ^ 0x5A for x in b))
PYEOF
}
# digest_of NAME: the status file's digest state of model NAME
digest_of() {
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(next((m.get("digest","?") for m in d["models"] if m["name"]==sys.argv[2]),"absent"))' \
    "$MNT/.wdeltafs/status" "$1" 2>/dev/null
}
verified() { [ "$(digest_of "$1")" = verified ]; }

cp "$T/v1a.wdelta" "$SRC/v1m.wdelta"
OPTS="base=$B,cache_size=8M,scan_interval=1"
# a tensor the v1 file rebuilds (2-D) and one it leaves as the base's (1-D)
read -r _ off2 len2 < <("$PY" "$REPO/tests/integration/mkv1.py" --offset "$B" model.layers.0.mlp.down_proj.weight)
read -r _ off1 len1 < <("$PY" "$REPO/tests/integration/mkv1.py" --offset "$B" model.layers.0.input_layernorm.weight)
[ -n "$off2" ] && [ -n "$off1" ] || die "tensor offsets not found"
for what in "rebuilt:$((off2 + len2 / 2))" "base-copy:$((off1 + len1 / 2 - 32))"; do
  kind=${what%%:*} at=${what#*:}
  mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS" || { fail "mount"; finish; }
  wait_for 60 verified v1m
  check "$kind: v1 model verified before the change (digest: $(digest_of v1m))" verified v1m
  xor64 "$B/$F" "$at"
  res=$("$PY" "$RC" "$MNT/v1m/$F" "$T/refa/$F")
  echo "      $kind tensor changed in the base (64 bytes at $at): $res"
  check "$kind: no wrong byte served ($res)" grep -q "wrong=0 " <<<"$res"
  check "$kind: the changed part reads as EIO ($res)" bash -c '! grep -q "eio=0 " <<<"$1"' _ "$res"
  check "$kind: status no longer says verified (digest: $(digest_of v1m))" not verified v1m
  check "$kind: the log names the change" grep -q "changed since the base was checked" "$LOG"
  unmount_wdeltafs "$MNT" >/dev/null
  xor64 "$B/$F" "$at" # restored
done

# a v1 file rewritten in place while a reader holds it open
mount_wdeltafs "$SRC" "$MNT" "$LOG" "$OPTS" || { fail "mount"; finish; }
wait_for 60 verified v1m
check "rewrite: v1 model verified (digest: $(digest_of v1m))" verified v1m
rm -f "$T/opened" "$T/go"
"$PY" "$RC" "$MNT/v1m/$F" "$T/refa/$F" --hold "$T/opened" "$T/go" >"$T/held.out" 2>&1 &
rp=$!
wait_for 60 test -e "$T/opened" || fail "the reader did not start"
cat "$T/v1b.wdelta" >"$SRC/v1m.wdelta" # in place: same inode, same size
sleep 2 # the daemon rescans every second: it sees the change for new opens
touch "$T/go"
wait "$rp"
res=$(cat "$T/held.out")
echo "      held descriptor across the rewrite: $res"
check "rewrite: the held descriptor got no wrong byte ($res)" grep -q "wrong=0 " <<<"$res"
check "rewrite: the held descriptor got EIO for what changed ($res)" bash -c '! grep -q "eio=0 " <<<"$1"' _ "$res"
newok() { [ "$("$PY" "$RC" "$MNT/v1m/$F" "$T/refb/$F")" = "wrong=0 eio=0 ok=16" ]; }
check "rewrite: a new open reads the new model whole and right" wait_for 30 newok
unmount_checked "$MNT"
assert_no_sanitizer_report "$LOG"
finish
