#!/usr/bin/env bash
# Mount a directory of deltas with wdeltafs and show that the mounted model is
# the fine-tune, byte for byte.  Called by `make demo` (tools/demo.sh):
#   bash tools/demo-mount.sh BASE_DIR DELTA_DIR FT_DIR
# DELTA_DIR holds one or more .wdelta files made against BASE_DIR from the
# fine-tune FT_DIR; every model the mount shows is compared with FT_DIR.
# Exits non-zero on any mismatch; skips (exit 0) when FUSE is unavailable.
# Env: WDELTA_BIN  directory of the binaries (default build)
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTAFS="$BIN/wdeltafs"

if [ $# -ne 3 ]; then
  echo "usage: $0 BASE_DIR DELTA_DIR FT_DIR" >&2; exit 2
fi
BASE=$(cd "$1" && pwd) DELTAS=$(cd "$2" && pwd) FT=$(cd "$3" && pwd) || exit 2
[ -x "$WDELTAFS" ] || { echo "demo-mount: $WDELTAFS is not built (run make)" >&2; exit 1; }
if [ ! -c /dev/fuse ]; then
  echo "demo-mount: skipped: /dev/fuse is missing (no FUSE here; in a container use --device /dev/fuse --cap-add SYS_ADMIN)"
  exit 0
fi
if ! command -v fusermount3 >/dev/null; then
  echo "demo-mount: skipped: fusermount3 is missing (apt-get install fuse3)"
  exit 0
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/wdeltafs-demo.XXXXXX")
MNT="$W/mnt"; LOG="$W/wdeltafs.log"
mkdir -p "$MNT"
DPID=""
cleanup() {
  if timeout 5 mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null; fi
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then kill "$DPID" 2>/dev/null; fi
  rm -rf "$W"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

step "wdeltafs $DELTAS $MNT -f -o base=$BASE"
"$WDELTAFS" "$DELTAS" "$MNT" -f -o "base=$BASE,cache_dir=$W/cache" 2>"$LOG" &
DPID=$!
for i in $(seq 1 200); do
  timeout 2 mountpoint -q "$MNT" && break
  kill -0 "$DPID" 2>/dev/null || break
  sleep 0.1
done
if ! timeout 2 mountpoint -q "$MNT"; then
  echo "demo-mount: FAILED: wdeltafs did not mount within 20 s; its log:" >&2
  sed 's/^/  | /' "$LOG" >&2
  exit 1
fi
echo "  mounted (daemon pid $DPID)"

# the models: every DELTA_DIR/**/NAME.wdelta is MNT/**/NAME/
mapfile -t MODELS < <(cd "$DELTAS" && find . -name '*.wdelta' -type f | sed 's|^\./||; s|\.wdelta$||' | LC_ALL=C sort)
[ ${#MODELS[@]} -gt 0 ] || { echo "demo-mount: no .wdelta files in $DELTAS" >&2; exit 1; }

step "ls -l $MNT"
ls -l "$MNT" | sed 's/^/  /'
for m in "${MODELS[@]}"; do
  step "ls -l $MNT/$m"
  ls -l "$MNT/$m" | sed 's/^/  /'
done

bad=0
for m in "${MODELS[@]}"; do
  step "$MNT/$m vs $FT: every file, byte for byte"
  if [ ! -d "$MNT/$m" ]; then
    echo "  $m is not shown (see the status file below for why)"; bad=1; continue
  fi
  printf '  %-36s %12s %-16s %-16s %s\n' file bytes original mounted ""
  for f in "$FT"/*; do
    [ -f "$f" ] || continue
    n=$(basename "$f")
    a=$(sha256sum <"$f" | cut -c1-64)
    if [ -f "$MNT/$m/$n" ]; then b=$(sha256sum <"$MNT/$m/$n" | cut -c1-64); else b="(missing)"; fi
    if [ "$a" = "$b" ] && cmp -s "$f" "$MNT/$m/$n"; then st=OK; else st=MISMATCH; bad=1; fi
    printf '  %-36s %12d %-16.16s %-16.16s %s\n' "$n" "$(stat -c %s "$f")" "$a" "$b" "$st"
  done
  # files the mount adds beyond the fine-tune must be the base's own non-weight files
  for f in "$MNT/$m"/*; do
    n=$(basename "$f")
    [ -e "$FT/$n" ] && continue
    if [ "$n" = parent ] && [ -L "$f" ]; then # lineage: the model it was made against
      printf '  %-36s %12s %-33s %s\n' "$n" "" "-> $(readlink "$f")" OK
    elif [ -f "$BASE/$n" ] && cmp -s "$BASE/$n" "$f"; then
      printf '  %-36s %12d %-33s %s\n' "$n" "$(stat -c %s "$f")" "(from the base)" OK
    else
      printf '  %-36s %12s %-33s %s\n' "$n" "" "(unexpected)" MISMATCH; bad=1
    fi
  done
done

step "$MNT/.wdeltafs/status"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3 || true)
if [ -n "$PY" ]; then "$PY" -m json.tool <"$MNT/.wdeltafs/status" | sed 's/^/  /'
else sed 's/^/  /' "$MNT/.wdeltafs/status"; echo; fi
if command -v getfattr >/dev/null; then
  step "getfattr -d -m user.wdelta $MNT/${MODELS[0]}"
  getfattr -d -m user.wdelta "$MNT/${MODELS[0]}" 2>/dev/null | sed '/^#/d; /^$/d; s/^/  /'
fi

step "fusermount3 -u $MNT"
fusermount3 -u "$MNT" || bad=1
for i in $(seq 1 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DPID" 2>/dev/null; then echo "  daemon still running after the unmount"; bad=1
else wait "$DPID"; rc=$?; DPID=""; echo "  unmounted; daemon exited with status $rc"; [ $rc -eq 0 ] || bad=1; fi

if [ $bad -ne 0 ]; then
  echo "demo-mount: FAILED: a mounted file differs from the fine-tune (or the mount misbehaved)" >&2
  exit 1
fi
echo
echo "demo-mount: every mounted file is byte-identical to the fine-tune"
