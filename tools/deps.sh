#!/usr/bin/env bash
# Installs the Debian packages wdeltafs needs to build and test, when they are
# missing.  As root it runs apt-get itself; otherwise it prints the one
# apt-get command to run and fails.
#   tools/deps.sh                 install/print everything (build + tests)
#   tools/deps.sh --quiet         only act if something needed to build is missing
#   tools/deps.sh --quiet --test  only act if something needed to build or to
#                                 run `make test` is missing (what make test runs)
# EXTRA_PKGS="..." adds packages (make fuzz-deps: clang).
# Every program a test calls must have its package here (TEST_PKGS):
#   attr: getfattr, setfattr      util-linux: runuser, su, mountpoint, findmnt
#   mount: mount, umount           fuse3: fusermount3, mount.fuse3
#   passwd: useradd, userdel       python3, python3-numpy: the Python tests
#   time: /usr/bin/time (peak memory in test_integrity)   zstd: patch_manifest.py, test_xdtype
#   dpkg-dev: dpkg-shlibdeps, dpkg-architecture (make deb)   binutils: strip, objdump (make deb)
#   lintian, man-db (man), bash-completion, pkg-config: test_deb
# (test_mount_install installs systemd itself for systemd-analyze; coreutils,
# diffutils, findutils, mawk, grep, sed are always there on Debian.)
set -u
BUILD_PKGS="gcc make pkg-config libfuse3-dev fuse3 libzstd-dev libssl-dev libcjson-dev check"
TEST_PKGS="attr util-linux mount fuse3 passwd python3 python3-numpy time zstd dpkg-dev binutils lintian man-db bash-completion pkg-config"
quiet=0 test=0
for a in "$@"; do
  case "$a" in
    --quiet) quiet=1 ;;
    --test) test=1 ;;
    *) echo "usage: tools/deps.sh [--quiet] [--test]" >&2; exit 2 ;;
  esac
done
want="$BUILD_PKGS"
[ $quiet = 0 ] || [ $test = 1 ] && want="$BUILD_PKGS $TEST_PKGS"
want="$want ${EXTRA_PKGS:-}"
missing=""
for p in $want; do
  case " $missing " in *" $p "*) continue ;; esac
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
  case "$st" in *" installed") ;; *) missing="$missing $p";; esac
done
[ -z "$missing" ] && exit 0
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" = 0 ]; then
  echo "wdeltafs: installing missing packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends $missing </dev/null >/tmp/wdeltafs-apt.log 2>&1; then
    apt-get update </dev/null >>/tmp/wdeltafs-apt.log 2>&1
    apt-get install -y --no-install-recommends $missing </dev/null >>/tmp/wdeltafs-apt.log 2>&1 || {
      echo "wdeltafs: '$cmd' failed; see /tmp/wdeltafs-apt.log" >&2; exit 1; }
  fi
else
  echo "wdeltafs: missing packages:$missing" >&2
  echo "wdeltafs: run as root:  sudo $cmd" >&2
  exit 1
fi
