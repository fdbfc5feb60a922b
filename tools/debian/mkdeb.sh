#!/usr/bin/env bash
# mkdeb.sh ROOT VERSION ARCH LIBDIR OUT.deb - turn a staged `make install PREFIX=/usr
# DESTDIR=ROOT` into a Debian package (make deb):
#   strip the programs and the library, gzip -9n the man pages, add
#   /usr/share/doc/wdeltafs/{copyright,changelog.Debian.gz}, DEBIAN/control
#   (Depends: from the ELF files' NEEDED libraries through dpkg-shlibdeps,
#   plus fuse3 for mount.fuse3/fusermount3, python3 and python3-numpy for the Python
#   package), DEBIAN/shlibs, DEBIAN/triggers (ldconfig), DEBIAN/prerm
#   (removes python's __pycache__), DEBIAN/md5sums,
#   then dpkg-deb --root-owner-group.
set -eu
root=$(cd "$1" && pwd) version=$2 arch=$3 libdir=$4 out=$5
maint=${DEB_MAINTAINER:-wdeltafs authors <wdeltafs@example.org>}
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$root/usr/bin" ] || { echo "mkdeb.sh: $root is not a staged install" >&2; exit 3; }
for p in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$p" >/dev/null || { echo "mkdeb.sh: $p missing (apt-get install dpkg-dev binutils)" >&2; exit 3; }
done
so=$(cd "$root$libdir" && ls libwdelta.so.*.*)
soname=$(objdump -p "$root$libdir/$so" | awk '$1 == "SONAME" { print $2 }')
sover=${soname#libwdelta.so.}

strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/wdelta" "$root/usr/bin/wdeltafs" "$root$libdir/$so"
strip --strip-debug --enable-deterministic-archives "$root$libdir/libwdelta.a"
find "$root/usr/share/man" -type f -name '*.[0-9]' -exec gzip -9nf {} +
doc="$root/usr/share/doc/wdeltafs"
install -d "$doc"
install -m 644 "$here/copyright" "$doc/copyright"
sed "s|@MAINTAINER@|$maint|" "$here/changelog" | gzip -9n >"$doc/changelog.Debian.gz"
chmod 644 "$doc/changelog.Debian.gz"

# Depends: what the ELF files need, as dpkg-shlibdeps finds it (from the
# packages' shlibs/symbols files); it wants a debian/control to read
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debian"
printf 'Source: wdeltafs\n\nPackage: wdeltafs\nArchitecture: any\n' >"$work/debian/control"
elves=("$root/usr/bin/wdelta" "$root/usr/bin/wdeltafs" "$root$libdir/$so")
(cd "$work" && dpkg-shlibdeps -O -l"$root$libdir" "${elves[@]/#/-e}" 2>"$work/err") >"$work/deps" ||
  { cat "$work/err" >&2; exit 1; }
shlibs=$(sed -n 's/^shlibs:Depends=//p' "$work/deps")
[ -n "$shlibs" ] || { echo "mkdeb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
depends="$shlibs, fuse3, python3, python3-numpy"

install -d -m 755 "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" -e "s|@DEPENDS@|$depends|" -e "s|@MAINTAINER@|$maint|" \
  "$here/control.in" >"$root/DEBIAN/control"
echo "libwdelta $sover wdeltafs (>= ${version%-*})" >"$root/DEBIAN/shlibs"
echo "activate-noawait ldconfig" >"$root/DEBIAN/triggers"
install -m 755 "$here/prerm" "$root/DEBIAN/prerm"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort | xargs md5sum) \
  >"$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/shlibs" "$root/DEBIAN/triggers" "$root/DEBIAN/md5sums"
# directories 0755, files 0644 unless executable (the staged tree's umask must not leak)
find "$root" -type d -exec chmod 755 {} +
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "built $out"
echo "Depends: $depends"
