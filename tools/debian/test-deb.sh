#!/usr/bin/env bash
# make test-deb: the real round trip on this system (root).  It INSTALLS the
# package with dpkg -i (into /usr: /usr/bin/wdelta, /usr/bin/wdeltafs,
# /usr/lib/<multiarch>/libwdelta*, /usr/include/wdelta.h, wdelta.pc, man
# pages, bash completion, /usr/lib/systemd/system/wdeltafs@.service,
# /usr/lib/python3/dist-packages/wdelta), uses it, and removes it with
# dpkg -r, checking that nothing it installed is left.
#   man wdelta / man wdeltafs open; a C program built with pkg-config runs;
#   /usr/bin/python3 -c "import wdelta" works from /; tab completion offers
#   the commands; mount -t fuse.wdeltafs SRC MNT -o base=... serves a model
#   (pairB from ../shared when present, else a generated one) byte-identical.
# Refuses when a wdeltafs package is installed already (it would remove it).
set -u
deb=$1
REPO=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "test-deb: needs root (dpkg -i)"; exit 77; }
if dpkg-query -W -f='${Status}' wdeltafs 2>/dev/null | grep -q ' installed'; then
  echo "test-deb: a wdeltafs package is installed already; remove it first (dpkg -r wdeltafs)"; exit 3
fi
npass=0 nfail=0
check() { local d=$1; shift; if "$@"; then npass=$((npass + 1)); echo "ok   - $d"; else nfail=$((nfail + 1)); echo "FAIL - $d"; fi; }
T=$(mktemp -d /tmp/wdeltafs-testdeb.XXXXXX)
MNT=$T/mnt SRC=$T/src
mkdir -p "$MNT" "$SRC"
cleanup() {
  timeout 5 mountpoint -q "$MNT" 2>/dev/null && { umount "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"; }
  dpkg-query -W -f='${Status}' wdeltafs 2>/dev/null | grep -q ' installed' && dpkg -r wdeltafs >/dev/null 2>&1
  rm -rf "$T"
}
trap cleanup EXIT
SYS="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=$T"

echo "# installing $deb with dpkg -i; it writes:"
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print "#   " $6 ($7 ? " " $7 " " $8 : "") }'
check "dpkg -i $(basename "$deb")" bash -c 'dpkg -i "$1" >"$2/dpkg.out" 2>&1 || { cat "$2/dpkg.out"; exit 1; }' _ "$deb" "$T"
check "man wdelta opens" bash -c "$SYS MANPAGER=cat man wdelta 2>/dev/null | grep -q '^NAME'"
check "man wdeltafs opens (section 8)" bash -c "$SYS MANPAGER=cat man 8 wdeltafs 2>/dev/null | grep -q 'mount -t fuse.wdeltafs'"
printf '#include <stdio.h>\n#include <wdelta.h>\nint main(void)\n{\n    return printf("%%s\\n", wd_codec_name(WD_CODEC_ZSTD)) < 0;\n}\n' >"$T/prog.c"
check "cc prog.c \$(pkg-config --cflags --libs wdelta) builds and runs (prints zstd)" \
  bash -c "cd $T && $SYS sh -c 'cc prog.c \$(pkg-config --cflags --libs wdelta) -o prog && [ \"\$(./prog)\" = zstd ]'"
check "/usr/bin/python3 -c 'import wdelta' from / works" bash -c "cd / && $SYS /usr/bin/python3 -c 'import wdelta'"
# a `make install PREFIX=/usr/local` comes first on Python's path and PATH:
# the package's own copy is then checked with /usr/local left out
check "the package's wdelta (/usr/lib/python3/dist-packages) loads the installed libwdelta.so.0" \
  bash -c "cd / && $SYS /usr/bin/python3 -c 'import sys; sys.path = [p for p in sys.path if not p.startswith(\"/usr/local/\")]; import wdelta; sys.exit(0 if wdelta.__file__.startswith(\"/usr/lib/python3/dist-packages/\") and wdelta.LIBRARY_PATH.endswith(\"/libwdelta.so.0\") else 1)'"
check "tab completion (bash-completion loads /usr/share/bash-completion/completions/wdelta) offers find-base" \
  bash -c ". /usr/share/bash-completion/bash_completion; _completion_loader wdelta; COMP_WORDS=(wdelta ''); COMP_CWORD=1; _wdelta wdelta '' wdelta; printf '%s\n' \"\${COMPREPLY[@]}\" | grep -qx find-base"
check "the systemd unit runs /usr/bin/wdeltafs" grep -q '^ExecStart=/usr/bin/wdeltafs ' /usr/lib/systemd/system/wdeltafs@.service

# mount -t fuse.wdeltafs through the stock mount.fuse3, with the installed wdeltafs
PB="$REPO/../shared/models/pairB"
if [ -d "$PB/base" ] && [ -d "$PB/ft" ]; then BASE=$PB/base FT=$PB/ft
else
  "$REPO/build/genmodel" "$T/gen" --params 2M >/dev/null || exit 1
  BASE=$T/gen/base FT=$T/gen/ft
fi
echo "# model: $FT"
check "/usr/bin/wdelta create" /usr/bin/wdelta create -q --base "$BASE" --finetuned "$FT" -o "$SRC/m.wdelta"
check "mount -t fuse.wdeltafs SRC MNT -o base=... (cache_dir in the test's directory)" \
  bash -c "$SYS timeout 60 mount -t fuse.wdeltafs '$SRC' '$MNT' -o 'base=$BASE,cache_dir=$T/cache'"
bad=0
for f in "$FT"/*; do cmp -s "$f" "$MNT/m/$(basename "$f")" || { echo "      differs: $(basename "$f")"; bad=1; }; done
check "the mount serves the fine-tune byte-identical" [ $bad = 0 ]
exe=""
for p in /proc/[0-9]*; do
  tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "^\(/usr/bin/\)\?wdeltafs $SRC " && exe=$(readlink "$p/exe") && break
done
if [ -x /usr/local/bin/wdeltafs ]; then
  echo "# note: /usr/local/bin/wdeltafs (a make install PREFIX=/usr/local) comes first for mount.fuse3: it serves this mount"
  check "a wdeltafs daemon serves the mount ($exe)" [ -n "$exe" ]
else
  check "the daemon is the installed /usr/bin/wdeltafs" [ "$exe" = /usr/bin/wdeltafs ]
fi
check "wdelta inspect MNT/m describes the delta behind it" bash -c "/usr/bin/wdelta inspect '$MNT/m' | grep -q '^file: .*m.wdelta'"
check "umount" umount "$MNT"

files=$(dpkg -L wdeltafs | while read -r f; do [ -f "$f" ] || [ -L "$f" ] && echo "$f"; done)
check "dpkg -r wdeltafs" bash -c 'dpkg -r wdeltafs >"$1/dpkg-r.out" 2>&1 || { cat "$1/dpkg-r.out"; exit 1; }' _ "$T"
left=""
for f in $files; do { [ -e "$f" ] || [ -L "$f" ]; } && left="$left $f"; done
for d in /usr/lib/python3/dist-packages/wdelta /usr/share/doc/wdeltafs; do [ -e "$d" ] && left="$left $d"; done
check "dpkg -r left nothing behind${left:+ (left:$left)}" [ -z "$left" ]
check "no wdelta on PATH from /usr/bin any more" bash -c '[ ! -e /usr/bin/wdelta ] && [ ! -e /usr/bin/wdeltafs ]'
echo "$npass passed, $nfail failed"
[ $nfail = 0 ]
