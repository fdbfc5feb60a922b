#!/usr/bin/env bash
# `make demo`: generate a base model and a fine-tune, store the fine-tune as a
# .wdelta, rebuild it and prove every rebuilt file is bit-identical.
# Env: WDELTA_DEMO_DIR  work directory (default: a fresh temp dir, removed at the end)
#      WDELTA_BIN       directory of the binaries (default build)
#      DEMO_PARAMS      genmodel --params (default 8M)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta"
GENMODEL="$BIN/genmodel"
for b in "$WDELTA" "$GENMODEL"; do
  [ -x "$b" ] || { echo "demo: $b is not built (run make)" >&2; exit 1; }
done

if [ -n "${WDELTA_DEMO_DIR:-}" ]; then
  W="$WDELTA_DEMO_DIR"
  mkdir -p "$W"
  rm -rf "$W/models" "$W/rebuilt" "$W/ft.wdelta"
else
  W=$(mktemp -d "${TMPDIR:-/tmp}/wdelta-demo.XXXXXX")
  trap 'rm -rf "$W"' EXIT
fi
BASE="$W/models/base"
FT="$W/models/ft"
DELTA="$W/ft.wdelta"
OUT="$W/rebuilt"

step() { printf '\n==> %s\n' "$*"; }
# total bytes of the regular files in a directory
dirsize() { find "$1" -maxdepth 1 -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }

step "generating a base model and a fine-tune in $W/models"
"$GENMODEL" "$W/models" --params "${DEMO_PARAMS:-8M}" --shards 2 --dtype bf16 --seed 1

step "wdelta create"
"$WDELTA" create --base "$BASE" --finetuned "$FT" -o "$DELTA"

step "wdelta inspect"
"$WDELTA" inspect "$DELTA" | sed -n '1,8p;/^output files/,/^$/p;/^total/p'

step "wdelta apply"
"$WDELTA" apply "$DELTA" --base "$BASE" -o "$OUT"

step "wdelta verify --base"
"$WDELTA" verify "$DELTA" --base "$BASE"

step "sizes"
ftb=$(dirsize "$FT"); db=$(stat -c %s "$DELTA"); bb=$(dirsize "$BASE")
printf '  base model      %12d bytes  (%s)\n' "$bb" "$(mb "$bb")"
printf '  fine-tune       %12d bytes  (%s)\n' "$ftb" "$(mb "$ftb")"
printf '  .wdelta         %12d bytes  (%s)\n' "$db" "$(mb "$db")"
printf '  ratio           %s  (fine-tune bytes / delta bytes)\n' \
  "$(awk -v a="$ftb" -v b="$db" 'BEGIN { printf "%.3fx", a / b }')"

step "bit-exactness: sha256 of every rebuilt file vs the original"
bad=0
printf '  %-36s %-16s %-16s %s\n' "file" "original" "rebuilt" ""
for f in "$FT"/*; do
  n=$(basename "$f")
  a=$(sha256sum "$f" | cut -c1-64)
  if [ -f "$OUT/$n" ]; then b=$(sha256sum "$OUT/$n" | cut -c1-64); else b="(missing)"; fi
  if [ "$a" = "$b" ]; then st=OK; else st=MISMATCH; bad=1; fi
  printf '  %-36s %-16.16s %-16.16s %s\n' "$n" "$a" "$b" "$st"
done
for f in "$OUT"/*; do
  n=$(basename "$f")
  [ -e "$FT/$n" ] || { printf '  %-36s %-16s %-16s %s\n' "$n" "(absent)" "(extra)" MISMATCH; bad=1; }
done
if [ $bad -ne 0 ]; then
  echo "demo: FAILED: rebuilt files differ from the originals" >&2
  exit 1
fi
echo "  all files bit-identical"

if [ -f "$REPO/tools/demo-mount.sh" ] && [ -x "$REPO/build/wdeltafs" ]; then
  step "mounting with wdeltafs (tools/demo-mount.sh)"
  DELTADIR="$W/deltas"
  mkdir -p "$DELTADIR"
  ln -f "$DELTA" "$DELTADIR/ft.wdelta" 2>/dev/null || cp "$DELTA" "$DELTADIR/ft.wdelta"
  bash "$REPO/tools/demo-mount.sh" "$BASE" "$DELTADIR" "$FT"
fi
echo
echo "demo: OK"
