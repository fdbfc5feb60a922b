#!/usr/bin/env bash
# Memory per tensor (issue #15, "80k-tensor model ... memory bounded by the
# block size"): the peak RSS of create, inspect, hash, apply and verify, and
# of the daemon serving the mounted delta, grows with the tensor count only by
# a small record per tensor, never by a parsed tree of the whole header or
# manifest.
#
# How: two models of tiny BF16 tensors (gen_many_tensors.py: one file each,
# names ~33 bytes), N1 and N2 tensors holding the same bytes of data; each
# command's peak RSS (/usr/bin/time %M) on both; the slope (RSS2 - RSS1) /
# (N2 - N1) in bytes per tensor must stay under a bound.  The release build
# (build/): ASan's shadow and quarantine would inflate the figures and the
# slope with them.
#
# The bounds, from what a tensor needs to be held: its wd_tensor record (80
# bytes), its name and dimensions (~33 + 8 bytes), its place in the by-name
# index (8) and, while the model is hashed, its identity digest (32); an
# open delta holds per extent its record and public copy (~190 bytes) and
# the tensor and base names; while a header or manifest is parsed its text
# (~100 and ~200 bytes a tensor) is held, never a tree of it.  That is
# 250-450 bytes a tensor: the bound for one model or delta is 600; verify
# --base holds the open delta and the model parsed from its rebuilt
# headers: 1200.
# create (issue 15: "memory bounded by the block size"): H, the header bytes
# a tensor takes (measured on the two models), once: the names and
# dimensions, which the fine-tune shares with the base; beside it only
# fixed-size records: each model's wd_tensor and by-name slot (2 x 88), the
# two identity digests, the result's with its tensor (32 + 40), the plan's
# record (64 + 4) and two tensor orders (2 x 8): H + 340, 437 here.
# The base's identity digests are 32 bytes a tensor in file order (the
# base is hashed while create runs: wd_model_hashes, no record of its own).
# Measured (2 cores, this test's sizes): create ~305 (~345 while the base's
# hash held a 40-byte record and a size_t map a tensor; ~730 before: a
# malloc'd name per tensor in both models, 128-byte plan
# records, 72-byte identity records with copies of each name, the freed
# header text left resident), verify ~410 (~525), hash ~215 (~235), inspect
# ~240 (~255), apply ~240 (~250), the daemon ~235 (~245) bytes a tensor;
# before the one-entry-at-a-time parsing hash, inspect and apply took
# ~1,300, create ~2,300, verify ~2,150 and the daemon ~1,400 (a cJSON tree
# of the whole header and of the whole manifest, and 328-byte tensors with
# room for 32 dimensions).
# create runs with 4 KiB blocks: the blocks in flight (a few per thread,
# bounded by the block size, not by the tensor count) then weigh nothing at
# either size; at 1 MiB blocks the 80k model's 7.7 MB header passes through
# the queue as 8 blocks and the 8k model's as 1, which adds ~65 bytes a
# tensor to the slope that the block size, not the tensor count, bounds.
# Env: MANY_TENSORS_BIN = the release build to measure (default build/; WDELTA_BIN
# is not used: ASan figures say nothing).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_python
[ -x /usr/bin/time ] || skip "/usr/bin/time absent (Debian package time)"
R="${MANY_TENSORS_BIN:-$REPO/build}"
[ -x "$R/wdelta" ] || skip "$R/wdelta not built (the release build measures memory)"
setup_mount_tmp wdelta-many
# N1 tensors of E1 elements and N2 of E2: the same bytes of tensor data
# (N1 * E1 = N2 * E2), so buffers sized by the data or the block size are
# the same at both sizes and the slope is the cost of a tensor alone
N1=8000 E1=160 N2=80000 E2=16

# rss CMD...: RSS = peak resident KB of CMD (its output discarded)
rss() {
  RSS=0
  /usr/bin/time -f "%M" -o "$T/time" "$@" >/dev/null 2>"$T/err" || { sed 's/^/      | /' "$T/err"; return 1; }
  RSS=$(tail -n1 "$T/time")
}
"$PY" "$REPO/tests/integration/gen_many_tensors.py" "$T/m$N1" "$N1" "$E1" || die "generator failed"
"$PY" "$REPO/tests/integration/gen_many_tensors.py" "$T/m$N2" "$N2" "$E2" || die "generator failed"
declare -A K
for n in $N1 $N2; do
  rss "$R/wdelta" create -q --block-size 4096 --base "$T/m$n/base" --finetuned "$T/m$n/ft" -o "$T/d$n.wdelta" && K[create$n]=$RSS
  rss "$R/wdelta" inspect "$T/d$n.wdelta" && K[inspect$n]=$RSS
  rss "$R/wdelta" hash "$T/m$n/ft" && K[hash$n]=$RSS
  rss "$R/wdelta" apply -q "$T/d$n.wdelta" --base "$T/m$n/base" -o "$T/out$n" && K[apply$n]=$RSS
  rss "$R/wdelta" verify "$T/d$n.wdelta" --base "$T/m$n/base" && K[verify$n]=$RSS
  check "$n tensors: apply rebuilds the model exactly" same_model "$T/out$n" "$T/m$n/ft"
  rm -rf "$T/out$n"
done
# slope CMD BOUND: bytes per tensor between the two sizes under BOUND
slope() {
  local a=${K[$1$N1]:-0} b=${K[$1$N2]:-0}
  local s=$(( (b - a) * 1024 / (N2 - N1) ))
  check "$1: peak RSS $a KB at $N1 tensors, $b KB at $N2: $s bytes a tensor (bound $2)" \
    test "$a" -gt 0 -a "$b" -gt 0 -a "$s" -lt "$2"
}
# H: header bytes per tensor, from the two fine-tunes' header lengths
hdr_len() { "$PY" -c 'import struct, sys; print(struct.unpack("<Q", open(sys.argv[1], "rb").read(8))[0])' "$1"; }
H=$(( ($(hdr_len "$T/m$N2/ft/model.safetensors") - $(hdr_len "$T/m$N1/ft/model.safetensors")) / (N2 - N1) ))
slope create $((H + 340))
slope verify 1200
for c in inspect hash apply; do slope "$c" 600; done

# the daemon serving the mounted delta (the base opened and hashed, the
# delta's index held), its peak (VmHWM) after the whole model is read
daemon_rss() {
  rm -f "$SRC"/*.wdelta
  cp "$T/d$1.wdelta" "$SRC/m.wdelta"
  WDELTAFS="$R/wdeltafs" mount_wdeltafs "$SRC" "$MNT" "$LOG" "base=$T/m$1/base" "cache_dir=$T/cache" \
    "cache_size=16M" || { fail "$1 tensors: mount"; return 1; }
  wait_for 30 test -f "$MNT/m/model.safetensors"
  check "$1 tensors: the mount serves the model exactly" cmp -s "$MNT/m/model.safetensors" "$T/m$1/ft/model.safetensors"
  K[daemon$1]=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$DPID/status")
  unmount_checked "$MNT"
}
if [ "$(id -u)" = 0 ] && [ -c /dev/fuse ] && command -v fusermount3 >/dev/null && [ -x "$R/wdeltafs" ]; then
  daemon_rss $N1 && daemon_rss $N2 && slope daemon 600
else
  echo "note: the daemon is not measured (needs root, FUSE and $R/wdeltafs)"
fi
finish
