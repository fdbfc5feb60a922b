#!/bin/bash
# The Debian package, checked without installing it (make test-deb installs):
# `make deb` builds build/wdeltafs_VERSION-1_ARCH.deb; its control fields
# (Package, Version, Architecture, Maintainer, Installed-Size, Depends naming
# the runtime libraries the ELF files need and fuse3, Description); its
# contents (programs, libwdelta.so.N with its soname and the dev symlink,
# wdelta.h, wdelta.pc, man pages, bash completion, systemd unit with
# /usr/bin, the Python package in /usr/lib/python3/dist-packages naming the
# installed library); lintian reports no error; a five-line C program built
# with pkg-config against the extracted tree runs; every option of each
# command's --help is in the man pages; the completion offers every command.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for p in dpkg-deb dpkg-shlibdeps lintian pkg-config man cc; do
  command -v "$p" >/dev/null || skip "$p missing (tools/deps.sh --test installs it)"
done
[ -f /usr/share/bash-completion/bash_completion ] || skip "bash-completion missing"
setup_tmp wddeb

VERSION=$(sed -n 's/^#define WD_VERSION_STRING "\(.*\)"/\1/p' "$REPO/core/wdelta.h")
ARCH=$(dpkg --print-architecture)
MA=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || cc -print-multiarch)
DEB="$REPO/build/wdeltafs_${VERSION}-1_${ARCH}.deb"
if make -s -C "$REPO" deb >"$T/make.out" 2>&1 && [ -f "$DEB" ]; then pass "make deb built $(basename "$DEB")"
else fail "make deb"; tail -n 20 "$T/make.out" | sed 's/^/      /'; finish; fi

field() { dpkg-deb -f "$DEB" "$1"; }
check "control: Package wdeltafs, Version $VERSION-1, Architecture $ARCH" \
  [ "$(field Package)/$(field Version)/$(field Architecture)" = "wdeltafs/$VERSION-1/$ARCH" ]
check "control: Maintainer, Section, Priority, Installed-Size set" \
  bash -c '[ -n "$1" ] && [ -n "$2" ] && [ -n "$3" ] && [ "$4" -gt 0 ]' _ "$(field Maintainer)" "$(field Section)" "$(field Priority)" "$(field Installed-Size)"
check "control: Description, a synopsis and a long text" \
  bash -c '[ "$(printf "%s\n" "$1" | wc -l)" -ge 3 ]' _ "$(field Description)"
# every library the ELF files need comes from a package Depends names
dpkg-deb -x "$DEB" "$T/x"
deps=$(field Depends)
need_ok=1
for lib in $(objdump -p "$T/x/usr/bin/wdelta" "$T/x/usr/bin/wdeltafs" "$T/x/usr/lib/$MA/libwdelta.so.$VERSION" |
             awk '$1 == "NEEDED" { print $2 }' | sort -u); do
  path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
  pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | cut -d: -f1)
  [ -z "$pkg" ] && pkg=$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1)
  case ", $deps" in *", $pkg "* | *", $pkg,"*) ;; *) echo "      $lib ($pkg) not in Depends: $deps"; need_ok=0 ;; esac
done
check "control: Depends names the package of every NEEDED library" [ $need_ok = 1 ]
check "control: Depends has fuse3 (mount.fuse3, fusermount3) and python3-numpy" \
  bash -c 'case ", $1," in *", fuse3,"*", python3-numpy,"*) ;; *) exit 1 ;; esac' _ "$deps"

# contents
missing=""
for f in usr/bin/wdelta usr/bin/wdeltafs usr/include/wdelta.h "usr/lib/$MA/libwdelta.a" \
         "usr/lib/$MA/libwdelta.so.$VERSION" "usr/lib/$MA/pkgconfig/wdelta.pc" \
         usr/share/man/man1/wdelta.1.gz usr/share/man/man8/wdeltafs.8.gz \
         usr/share/bash-completion/completions/wdelta usr/share/bash-completion/completions/wdeltafs \
         usr/lib/systemd/system/wdeltafs@.service usr/lib/python3/dist-packages/wdelta/__init__.py \
         usr/share/doc/wdeltafs/copyright usr/share/doc/wdeltafs/changelog.Debian.gz; do
  [ -f "$T/x/$f" ] || missing="$missing $f"
done
check "contents: every file in place${missing:+ (missing:$missing)}" [ -z "$missing" ]
check "library: soname libwdelta.so.0, libwdelta.so.0 -> the file, libwdelta.so -> libwdelta.so.0" \
  bash -c 'd=$1/usr/lib/$2; [ "$(objdump -p "$d/libwdelta.so.$3" | awk "\$1 == \"SONAME\" { print \$2 }")" = libwdelta.so.0 ] &&
    [ "$(readlink "$d/libwdelta.so.0")" = "libwdelta.so.$3" ] && [ "$(readlink "$d/libwdelta.so")" = libwdelta.so.0 ]' _ "$T/x" "$MA" "$VERSION"
check "systemd unit: ExecStart=/usr/bin/wdeltafs" grep -q '^ExecStart=/usr/bin/wdeltafs ' "$T/x/usr/lib/systemd/system/wdeltafs@.service"
check "python: _libpath.py names the installed /usr/lib/$MA/libwdelta.so.0" \
  grep -qx "LIBRARY = '/usr/lib/$MA/libwdelta.so.0'" "$T/x/usr/lib/python3/dist-packages/wdelta/_libpath.py"
check "python: the packaged wdelta imports (its library pointed at the extracted one)" \
  bash -c 'cd / && WDELTA_LIB="$1/usr/lib/$2/libwdelta.so.0" PYTHONPATH="$1/usr/lib/python3/dist-packages" "$3" -c "import wdelta, sys; sys.exit(0 if wdelta.__file__.startswith(sys.argv[1]) else 1)" "$1"' \
  _ "$T/x" "$MA" "$PY"
check "no file in the package is world-writable or owned by a user" \
  bash -c '! dpkg-deb -c "$1" | awk "{ print \$1, \$2 }" | grep -v " root/root$" | grep -q . && ! dpkg-deb -c "$1" | grep -q "^.......w"' _ "$DEB"

# lintian: no errors (warnings kept on purpose are listed in the README)
lintian --tag-display-limit 0 "$DEB" >"$T/lintian.out" 2>&1
grep -v 'running with root privileges' "$T/lintian.out" | sed 's/^/      lintian: /'
check "lintian: no errors" bash -c '! grep -q "^E: " "$1"' _ "$T/lintian.out"

# a C program against the extracted tree, through pkg-config
cat >"$T/prog.c" <<'CEOF'
#include <stdio.h>
#include <wdelta.h>
int main(void)
{
    return printf("%s %s\n", wd_codec_name(WD_CODEC_ZSTD), WD_VERSION_STRING) < 0;
}
CEOF
PC="env PKG_CONFIG_SYSROOT_DIR=$T/x PKG_CONFIG_LIBDIR=$T/x/usr/lib/$MA/pkgconfig pkg-config"
check "pkg-config --modversion wdelta: $VERSION" [ "$($PC --modversion wdelta)" = "$VERSION" ]
check "cc prog.c \$(pkg-config --cflags --libs wdelta) builds against the extracted tree" \
  bash -c 'cc "$1/prog.c" $($2 --cflags --libs wdelta) -o "$1/prog" 2>"$1/cc.err" || { cat "$1/cc.err"; exit 1; }' _ "$T" "$PC"
check "the program needs libwdelta.so.0 (the soname)" bash -c 'objdump -p "$1/prog" | grep -q "NEEDED *libwdelta.so.0"' _ "$T"
check "it runs with the extracted library: wd_codec_name(WD_CODEC_ZSTD) is zstd" \
  bash -c '[ "$(LD_LIBRARY_PATH="$1/x/usr/lib/$2" "$1/prog")" = "zstd $3" ]' _ "$T" "$MA" "$VERSION"

# man pages: render without warnings, name every option of every command
for pg in man1/wdelta.1 man8/wdeltafs.8; do
  check "man $pg renders without warnings" \
    bash -c 'out=$(MANWIDTH=80 man --warnings -l "$1" 2>&1 >/dev/null); [ -z "$out" ] || { echo "$out"; exit 1; }' _ "$T/x/usr/share/man/$pg.gz"
done
MAN1=$(MANWIDTH=200 man -l "$T/x/usr/share/man/man1/wdelta.1.gz" 2>/dev/null | col -b)
W="$T/x/usr/bin/wdelta"
cmds=$("$W" --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ { exit }' | sort -u)
nomiss=""
for c in $cmds; do
  printf '%s\n' "$MAN1" | grep -q "^   $c\$\|^  *$c\b" || nomiss="$nomiss $c"
  for o in $("$W" "$c" --help 2>/dev/null | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
    printf '%s\n' "$MAN1" | grep -qE -- "$o([^A-Za-z0-9-]|\$)" || nomiss="$nomiss $c:$o"
  done
done
check "wdelta(1) has every command and every option of each --help${nomiss:+ (missing:$nomiss)}" [ -z "$nomiss" ]
MAN8=$(MANWIDTH=200 man -l "$T/x/usr/share/man/man8/wdeltafs.8.gz" 2>/dev/null | col -b)
nomiss=""
fsopts=$( { "$T/x/usr/bin/wdeltafs" --help 2>/dev/null | grep -o -- '-o [a-z_0-9]*' | sed 's/^-o //'
           "$T/x/usr/bin/wdeltafs" --help 2>/dev/null | grep -o -- '^  -[a-z] ' | tr -d ' '; } | sort -u)
check "wdeltafs --help lists its -o options (base, cache_size... at least 8)" [ "$(wc -w <<<"$fsopts")" -ge 8 ]
for o in $fsopts; do
  printf '%s\n' "$MAN8" | grep -qE -- "(^|[^A-Za-z_])$o([^A-Za-z0-9_]|\$)" || nomiss="$nomiss $o"
done
check "wdeltafs(8) has every option of its --help${nomiss:+ (missing:$nomiss)}" [ -z "$nomiss" ]
for s in "EXIT STATUS" FILES EXAMPLES; do
  check "both man pages have $s" bash -c 'grep -q "^$1" <<<"$2" && grep -q "^$1" <<<"$3"' _ "$s" "$MAN1" "$MAN8"
done

# bash completion: the first word offers every command
comp() { # FILE WORDS...: COMPREPLY for completing the last word
  local f=$1; shift
  bash -c '. /usr/share/bash-completion/bash_completion; . "$1"; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    "_${COMP_WORDS[0]}" "${COMP_WORDS[0]}" "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"; printf "%s\n" "${COMPREPLY[@]}"' _ "$f" "$@"
}
got=$(comp "$T/x/usr/share/bash-completion/completions/wdelta" wdelta "" | sort -u)
nomiss=""; for c in $cmds; do grep -qx "$c" <<<"$got" || nomiss="$nomiss $c"; done
check "completion: 'wdelta <TAB>' offers every command${nomiss:+ (missing:$nomiss)}" [ -z "$nomiss" ]
check "completion: 'wdelta create --str<TAB>' offers --strategy" \
  bash -c 'grep -qx -- --strategy <<<"$1"' _ "$(comp "$T/x/usr/share/bash-completion/completions/wdelta" wdelta create --str)"
check "completion: 'wdeltafs -o cache_s<TAB>' offers cache_size=" \
  bash -c 'grep -qx cache_size= <<<"$1"' _ "$(comp "$T/x/usr/share/bash-completion/completions/wdeltafs" wdeltafs -o cache_s)"
finish
