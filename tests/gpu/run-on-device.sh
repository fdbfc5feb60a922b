#!/usr/bin/env bash
# Run on the GPU machine (no -dev packages there): mounts the carried pairB
# delta with a prebuilt wdeltafs and checks real frameworks against the
# original files.  Layout of the carried folder (see README, "GPU check"):
#   $C/bin/wdeltafs  $C/lib/libcjson.so.1  $C/base/  $C/ft/  $C/src/pairB.wdelta
set -eu
C=${1:-.devcarry}
C=$(cd "$C" && pwd)
export LD_LIBRARY_PATH="$C/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
M=$(mktemp -d)
"$C/bin/wdeltafs" "$C/src" "$M" -f -o base="$C/base",cache_dir="$M.cache" 2>"$M.log" &
pid=$!
trap 'fusermount3 -u "$M" 2>/dev/null || umount "$M" 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do mountpoint -q "$M" && break; sleep 0.2; done
ls -l "$M" "$M/pairB"
python3 "$(dirname "$0")/frameworks.py" "$M/pairB" "$C/ft"
cat "$M.log"
