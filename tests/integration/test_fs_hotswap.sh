#!/usr/bin/env bash
# wdeltafs without a remount: .wdelta files added to SRC (also in a new
# subfolder), removed, and replaced (renamed over, as `wdelta create` does)
# show up within seconds; an fd opened before a replace keeps reading the
# old version (bytes of the old fine-tune, never a mix), also with the page
# cache dropped; an fd opened before a removal keeps reading; a chmod of a
# .wdelta changes the model's mode; inode numbers of a model's files change
# on replace (so no stale page is served) and stay the same otherwise.
# Env: WDELTA_BIN (default build-asan).  Exit: 0 pass, 77 skip, 1 fail.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel wdeltafs
require_fuse

setup_mount_tmp wdeltafs-hotswap
at_exit --early 'exec 3<&- 4<&- 2>/dev/null'
start_watchdog 240

# base + two fine-tunes of it: ft (genmodel's) and ft2 (the base itself, as
# an identity fine-tune: same file names, other weights)
gen_pair "$T/g" --params 2M || die "genmodel failed"
BASE="$T/g/base" FT1="$T/g/ft" FT2="$T/g/base"
create_delta "$BASE" "$FT1" "$T/v1.wdelta" || die "wdelta create failed"
create_delta "$BASE" "$FT2" "$T/v2.wdelta" || die "wdelta create failed"
SHARD=model-00001-of-00002.safetensors
cmp -s "$FT1/$SHARD" "$FT2/$SHARD" && { echo "test setup: the two fine-tunes do not differ"; exit 1; }

mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$BASE,cache_dir=$T/cache,cache_size=8M" && pass "mounted an empty SRC" || { fail "mount"; finish; }
check "empty SRC: MNT lists only .wdeltafs" [ "$(ls -A "$MNT")" = ".wdeltafs" ]

# ---- add
cp "$T/v1.wdelta" "$SRC/.a.wdelta.part" && mv "$SRC/.a.wdelta.part" "$SRC/a.wdelta"
if wait_for 10 same_model "$MNT/a" "$FT1"; then pass "added a.wdelta: MNT/a appears with the fine-tune's bytes after ${WAITED}s"
else fail "added a.wdelta: MNT/a did not appear (or differs) within 10 s"; ls -la "$MNT"; fi
mkdir -p "$SRC/team/x"
cp "$T/v2.wdelta" "$SRC/team/x/b.wdelta"
if wait_for 10 same_model "$MNT/team/x/b" "$FT2"; then pass "added team/x/b.wdelta in a new subfolder: MNT/team/x/b after ${WAITED}s"
else fail "team/x/b.wdelta did not appear within 10 s"; fi

# ---- replace while open
ino_before=$(stat -c %i "$MNT/a/$SHARD")
exec 3<"$MNT/a/$SHARD"          # held open across the replace
cp "$T/v2.wdelta" "$SRC/.a.new" && mv -f "$SRC/.a.new" "$SRC/a.wdelta"
if wait_for 10 same_model "$MNT/a" "$FT2"; then pass "replaced a.wdelta: MNT/a shows the new version after ${WAITED}s"
else fail "replaced a.wdelta: new content not seen within 10 s"; fi
ino_after=$(stat -c %i "$MNT/a/$SHARD")
check "the replaced model's file has a new inode number ($ino_before -> $ino_after)" [ "$ino_before" != "$ino_after" ]
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true   # make fd 3 go to the daemon
check "fd opened before the replace reads the old version (== old fine-tune, not the new one)" \
  cmp -s - "$FT1/$SHARD" <&3
exec 3<&-
check "a.wdelta replaced: status lists a once" [ "$(grep -c '"name":.*"a"' "$MNT/.wdeltafs/status")" = 1 ]

# ---- remove while open
exec 4<"$MNT/team/x/b/$SHARD"
rm "$SRC/team/x/b.wdelta"
if wait_for 10 test ! -e "$MNT/team/x/b"; then pass "removed team/x/b.wdelta: MNT/team/x/b gone after ${WAITED}s"
else fail "MNT/team/x/b still there 10 s after the removal"; fi
wait_for 5 test ! -e "$MNT/team"; check "the now empty folder team is gone too" test ! -e "$MNT/team"
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
check "fd opened before the removal still reads the whole file" cmp -s - "$FT2/$SHARD" <&4
exec 4<&-

# ---- a second rename onto the same name with the same content: still served
cp "$T/v2.wdelta" "$SRC/.a.same" && mv -f "$SRC/.a.same" "$SRC/a.wdelta"
sleep 4
check "after a same-content replace MNT/a still equal to ft2" same_model "$MNT/a" "$FT2"

# ---- stable inodes while unchanged
i1=$(stat -c %i "$MNT/a/$SHARD"); sleep 3; i2=$(stat -c %i "$MNT/a/$SHARD")
check "inode stable across rescans ($i1 = $i2)" [ "$i1" = "$i2" ]

# ---- chmod: mode follows the .wdelta
chmod 0640 "$SRC/a.wdelta"
modes() { [ "$(stat -c %a "$MNT/a" 2>/dev/null).$(stat -c %a "$MNT/a/config.json" 2>/dev/null)" = "$1" ]; }
if wait_for 10 modes 550.440; then
  pass "chmod 0640 a.wdelta: dir 550, files 440 after ${WAITED}s"
else fail "chmod: got $(stat -c %a "$MNT/a").$(stat -c %a "$MNT/a/config.json"), want 550.440"; fi

# ---- a delta being copied in place is not served until it is whole
dd if="$T/v1.wdelta" of="$SRC/c.wdelta" bs=4096 count=8 status=none
sleep 3
check "a truncated c.wdelta is not shown" test ! -e "$MNT/c"
check "and is named in the status" grep -q "c.wdelta" "$MNT/.wdeltafs/status"
cat "$T/v1.wdelta" >"$SRC/c.wdelta"
if wait_for 10 same_model "$MNT/c" "$FT1"; then pass "c.wdelta completed: MNT/c served after ${WAITED}s"
else fail "completed c.wdelta not served within 10 s"; fi

# ---- unmount
check "unmounted, daemon exited 0" unmount_wdeltafs "$MNT"
assert_no_sanitizer_report "$LOG" "no sanitizer report in the daemon log"
finish
