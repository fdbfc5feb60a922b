#!/usr/bin/env bash
# `make install PREFIX=/usr/local` (the real /usr/local: root only, else skip),
# then `mount -t fuse.wdeltafs SRC MNT -o base=B` through the stock
# mount.fuse3 (which finds wdeltafs on the system PATH) serves a model and
# `umount MNT` stops it; and `systemd-analyze verify` accepts the unit.
# Binaries this test installed are removed again at the end.
# Env: WDELTA_BIN = directory of the wdelta/genmodel used to make inputs (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PREFIX=/usr/local
UNIT="wdeltafs@.service"

skip_unless_root "installs into $PREFIX and mounts with mount -t"
require_bins wdelta genmodel
[ -n "$(ls "$REPO"/fs/*.c 2>/dev/null)" ] || skip "fs/ has no sources (wdeltafs not written yet)"
require_fuse
MOUNT_FUSE=$(PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v mount.fuse3 || true)
[ -n "$MOUNT_FUSE" ] || skip "mount.fuse3 missing (apt-get install fuse3)"

setup_mount_tmp wdeltafs-install
# what existed before, so that only what this test added is removed
had_bin=0; [ -e "$PREFIX/bin/wdeltafs" ] && had_bin=1
had_unit=0; [ -e "$PREFIX/lib/systemd/system/$UNIT" ] && had_unit=1
# mounted with mount(8): umount first (the generic fusermount3 -u/-uz follows)
at_exit --early 'timeout 5 mountpoint -q "$MNT" 2>/dev/null && umount "$MNT" 2>/dev/null'
at_exit '[ $had_bin = 0 ] && make -s -C "$REPO" uninstall PREFIX="$PREFIX" >/dev/null 2>&1'
at_exit '[ $had_unit = 0 ] && { rm -f "$PREFIX/lib/systemd/system/$UNIT"; rmdir "$PREFIX/lib/systemd/system" "$PREFIX/lib/systemd" 2>/dev/null; }'
start_watchdog 160

# ------------------------------------------------------------------ install
echo "# make install PREFIX=$PREFIX"
if make -s -C "$REPO" install PREFIX="$PREFIX" >"$T/make.out" 2>&1; then pass "make install PREFIX=$PREFIX"
else fail "make install PREFIX=$PREFIX"; tail -n 20 "$T/make.out" | sed 's/^/      /'; finish; fi
check "$PREFIX/bin/wdeltafs installed and executable" test -x "$PREFIX/bin/wdeltafs"
check "$PREFIX/bin/wdelta installed and executable" test -x "$PREFIX/bin/wdelta"
check "$PREFIX/lib/systemd/system/$UNIT installed" test -f "$PREFIX/lib/systemd/system/$UNIT"
check "$PREFIX/lib/libwdelta.so installed" test -f "$PREFIX/lib/libwdelta.so"
if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
  # the installed package, outside the source tree, loads the installed library
  got=$(cd / && env -u WDELTA_LIB -u PYTHONPATH /usr/bin/python3 -c 'import wdelta; print(wdelta.LIBRARY_PATH, wdelta.__file__)' 2>&1)
  check "python3 imports the installed wdelta package with $PREFIX/lib/libwdelta.so.0 ($got)" \
    bash -c '[[ "$1" == "$2/lib/libwdelta.so.0 $2/lib/python"*"/wdelta/__init__.py" ]]' _ "$got" "$PREFIX"
  # DESTDIR stages the same tree under another root, still naming PREFIX
  make -s -C "$REPO" install PREFIX="$PREFIX" DESTDIR="$T/stage" >"$T/make2.out" 2>&1
  check "make install DESTDIR=: the package's _libpath.py names $PREFIX/lib/libwdelta.so.0 (the soname)" \
    grep -q "LIBRARY = '$PREFIX/lib/libwdelta.so.0'" $(ls "$T"/stage"$PREFIX"/lib/python*/dist-packages/wdelta/_libpath.py 2>/dev/null || echo /nonexistent)
fi
check "wdeltafs is on the system PATH mount.fuse3 uses" \
  env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin sh -c 'command -v wdeltafs >/dev/null'

# ------------------------------------------------------------------ mount -t fuse.wdeltafs
gen_pair "$T/gen" --params 1M || die "genmodel failed"
create_delta "$T/gen/base" "$T/gen/ft" "$SRC/chat.wdelta" || die "wdelta create failed"
echo "# mount -t fuse.wdeltafs $SRC $MNT -o base=$T/gen/base,cache_dir=$T/cache"
if timeout 60 env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
     mount -t fuse.wdeltafs "$SRC" "$MNT" -o "base=$T/gen/base,cache_dir=$T/cache" >"$T/mount.out" 2>&1; then
  pass "mount -t fuse.wdeltafs returned 0"
else
  fail "mount -t fuse.wdeltafs: $(head -n 5 "$T/mount.out")"
fi
if timeout 5 mountpoint -q "$MNT"; then
  pass "$MNT is a mountpoint"
  check "mount type is fuse.wdeltafs, read-only" bash -c "findmnt -n -o FSTYPE,OPTIONS '$MNT' | grep -q '^fuse.wdeltafs *ro'"
  bad=0
  for f in "$T/gen/ft"/*; do cmp -s "$f" "$MNT/chat/$(basename "$f")" || { echo "      differs: $(basename "$f")"; bad=1; }; done
  check "chat/ serves the fine-tune byte-identically" [ $bad -eq 0 ]
  check "a wdeltafs daemon serves the mount in the background" test -n "$(daemon_pids)"
  pids=$(daemon_pids)
  if umount "$MNT" 2>"$T/err"; then pass "umount $MNT"; else fail "umount $MNT: $(cat "$T/err")"; fi
  check "no longer mounted" bash -c "! timeout 2 mountpoint -q '$MNT'"
  check "the daemon exited after umount" wait_gone $pids
else
  fail "$MNT is not a mountpoint after mount -t"
fi

# ------------------------------------------------------------------ systemd unit
if ! command -v systemd-analyze >/dev/null; then
  echo "# systemd-analyze missing: installing package systemd"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >"$T/apt.out" 2>&1 \
    || { apt-get update >>"$T/apt.out" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >>"$T/apt.out" 2>&1; }
fi
if command -v systemd-analyze >/dev/null; then
  # verify checks ExecStart= binaries exist: $PREFIX/bin/wdeltafs was just installed
  IUNIT="$PREFIX/lib/systemd/system/$UNIT"
  if systemd-analyze verify "$IUNIT" >"$T/verify.out" 2>&1 && ! grep -q . "$T/verify.out"; then
    pass "systemd-analyze verify $IUNIT (no warnings)"
  elif systemd-analyze verify "$IUNIT" >/dev/null 2>&1; then
    pass "systemd-analyze verify $IUNIT (warnings below)"; sed 's/^/      /' "$T/verify.out"
  else
    fail "systemd-analyze verify $IUNIT"; sed 's/^/      /' "$T/verify.out"
  fi
  for k in 'Type=notify' 'EnvironmentFile=/etc/wdeltafs/%i.conf' 'Restart=on-failure' \
           "ExecStart=$PREFIX/bin/wdeltafs \${SRC} \${MOUNTPOINT} -f -o \${OPTIONS}"; do
    check "installed unit has $k" grep -qxF "$k" "$IUNIT"
  done
  check "systemd/example.conf sets SRC, MOUNTPOINT and OPTIONS" \
    bash -c "grep -q '^SRC=' '$REPO/systemd/example.conf' && grep -q '^MOUNTPOINT=' '$REPO/systemd/example.conf' && grep -q '^OPTIONS=' '$REPO/systemd/example.conf'"
else
  echo "note: systemd-analyze missing and package systemd could not be installed; skipping the unit check"
fi

finish
