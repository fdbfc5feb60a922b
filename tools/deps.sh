#!/usr/bin/env bash
# Installs the Debian packages wdeltafs needs to build and test, when they are
# missing.  As root it runs apt-get itself; otherwise it prints the command.
#   tools/deps.sh           install/print everything (build + tests + bench)
#   tools/deps.sh --quiet   only act if something needed to build is missing
set -u
BUILD_PKGS="gcc make pkg-config libfuse3-dev fuse3 libzstd-dev libssl-dev libcjson-dev check"
TEST_PKGS="attr util-linux python3 python3-numpy passwd zstd"
quiet=0; [ "${1:-}" = "--quiet" ] && quiet=1
want="$BUILD_PKGS"; [ $quiet = 0 ] && want="$BUILD_PKGS $TEST_PKGS ${EXTRA_PKGS:-}"
missing=""
for p in $want; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
  case "$st" in *" installed") ;; *) missing="$missing $p";; esac
done
[ -z "$missing" ] && exit 0
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" = 0 ]; then
  echo "wdeltafs: installing missing packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends $missing >/tmp/wdeltafs-apt.log 2>&1; then
    apt-get update >>/tmp/wdeltafs-apt.log 2>&1
    apt-get install -y --no-install-recommends $missing >>/tmp/wdeltafs-apt.log 2>&1 || {
      echo "wdeltafs: '$cmd' failed; see /tmp/wdeltafs-apt.log" >&2; exit 1; }
  fi
else
  echo "wdeltafs: missing packages:$missing" >&2
  echo "wdeltafs: run as root:  sudo $cmd" >&2
  exit 1
fi
