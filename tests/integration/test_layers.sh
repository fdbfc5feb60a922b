#!/bin/bash
# The shape of libwdelta, read from what the build made (nm), not from the
# sources:
#   1. the object files of core/ form no cycle: file A -> file B when A uses
#      a symbol B defines; and every edge runs down the layer order (the
#      Makefile's CORE_LAYERS, core/util first): a file uses only files of
#      its own folder or of folders listed before it;
#   2. libwdelta.so exports exactly the functions that core/wdelta.h (the
#      one installed header) declares with WD_API, all of them named wd_*;
#   3. both checks catch what they are for: two objects that use each other
#      are a cycle, an upward use is reported, a library exporting a name
#      the header does not declare fails the export check.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v nm >/dev/null || skip "nm missing (apt-get install binutils)"
[ -f "$BIN/libwdelta.so" ] || skip "$BIN/libwdelta.so not built"
ls "$BIN"/core/*/*.o >/dev/null 2>&1 || skip "$BIN/core/*/*.o not built"
setup_tmp wdlayers

LAYERS=$(sed -n 's/^CORE_LAYERS *:= *//p' "$REPO/Makefile")
[ -n "$LAYERS" ] || die "no CORE_LAYERS line in the Makefile"

# edges OBJ...: "A B SYMBOL" for each symbol object A uses and object B
# defines (A != B); objects named by their path below the last core/.
edges() {
  local o
  for o in "$@"; do
    nm "$o" | awk -v f="${o##*/core/}" '
      $1 == "U" && NF == 2 { print "U", f, $2 }
      NF == 3 && $2 ~ /^[TDBRVWi]$/ { print "D", f, $3 }'
  done | awk '
    $1 == "D" { def[$3] = $2; next }
    { use[++n] = $2 " " $3 }
    END {
      for (i = 1; i <= n; i++) {
        split(use[i], u, " ")
        if ((u[2] in def) && def[u[2]] != u[1]) print u[1], def[u[2]], u[2]
      }
    }' | sort -u
}

# cycles EDGEFILE: the files left after repeatedly removing every file that
# uses no remaining file (empty output: the graph has no cycle)
cycles() {
  awk '
    { from[++n] = $1; to[n] = $2; node[$1] = 1; node[$2] = 1 }
    END {
      do {
        removed = 0
        for (a in node) busy[a] = 0
        for (i = 1; i <= n; i++) if ((from[i] in node) && (to[i] in node)) busy[from[i]] = 1
        for (a in node) if (!busy[a]) { delete node[a]; removed = 1 }
      } while (removed)
      for (a in node) print a
    }' "$1" | sort
}

# upward EDGEFILE LAYERS: the edges from a folder to one listed after it
upward() {
  awk -v order="$2" '
    BEGIN { n = split(order, l, " "); for (i = 1; i <= n; i++) rank[l[i]] = i }
    {
      split($1, a, "/"); split($2, b, "/")
      if (!(a[1] in rank) || !(b[1] in rank)) { print "not in a layer:", $0; next }
      if (rank[b[1]] > rank[a[1]]) print $1, "->", $2, "(" $3 ")"
    }' "$1"
}

# exports LIB: the functions and data LIB exports (dynamic, defined)
exports() { nm -D --defined-only "$1" | awk 'NF == 3 && $2 ~ /^[TDBRVWi]$/ { print $3 }' | sort -u; }
# declared HEADER: the names declared with WD_API in HEADER (a declaration
# starts a line with WD_API and runs to its ';'; the name is the word
# before its first parenthesis)
declared() {
  awk '/^WD_API / { d = ""; on = 1 }
    on {
      d = d " " $0
      if (index($0, ";") || index($0, "{")) {
        on = 0; sub(/\(.*/, "", d); n = split(d, w, /[ *]+/); print w[n]
      }
    }' "$1" | sort -u
}

# ---- 1. the library's own objects (those of a source that exists: an
# incremental build keeps the objects of removed files)
objs=()
for o in "$BIN"/core/*/*.o; do
  rel=${o#"$BIN"/core/}
  [ -f "$REPO/core/${rel%.o}.c" ] && objs+=("$o")
done
edges "${objs[@]}" >"$T/edges"
check "the object graph has edges (nm read the objects)" test -s "$T/edges"
cycles "$T/edges" >"$T/cycles"
if [ -s "$T/cycles" ]; then
  fail "core/ objects form no cycle; in a cycle or using one: $(tr '\n' ' ' <"$T/cycles")"
else
  pass "core/ objects form no cycle ($(wc -l <"$T/edges") symbol uses between files)"
fi
upward "$T/edges" "$LAYERS" >"$T/upward"
if [ -s "$T/upward" ]; then
  fail "every use runs down the layers ($LAYERS); upward: $(head -5 "$T/upward" | tr '\n' ';')"
else
  pass "every use runs down the layers ($LAYERS)"
fi
for o in "$BIN"/core/*.o; do
  [ -e "$o" ] && fail "an object outside the layer folders: $o"
done

# ---- 2. the exports
exports "$BIN/libwdelta.so" >"$T/exported"
declared "$REPO/core/wdelta.h" >"$T/declared"
check "the header declares functions with WD_API" test "$(wc -l <"$T/declared")" -gt 50
check "libwdelta.so exports symbols" test -s "$T/exported"
grep -v '^wd_' "$T/exported" >"$T/unprefixed"
check "every exported name starts with wd_ ($(wc -l <"$T/exported") exported)" not test -s "$T/unprefixed"
comm -23 "$T/exported" "$T/declared" >"$T/undeclared"
check "every export is declared in core/wdelta.h$( [ -s "$T/undeclared" ] && echo ": not: $(head -5 "$T/undeclared" | tr '\n' ' ')")" \
  not test -s "$T/undeclared"
comm -13 "$T/exported" "$T/declared" >"$T/missing"
check "every WD_API function is exported$( [ -s "$T/missing" ] && echo ": not: $(head -5 "$T/missing" | tr '\n' ' ')")" \
  not test -s "$T/missing"

# ---- 3. the checks catch a cycle, an upward use and a stray export
CC=${CC:-cc}
if command -v "$CC" >/dev/null; then
  mkdir -p "$T/core/low" "$T/core/high"
  printf 'int wd_high(void);\nint wd_low(void) { return wd_high() + 1; }\n' >"$T/low.c"
  printf 'int wd_low(void);\nint wd_high(void) { return 2; }\nint wd_top(void) { return wd_low(); }\n' >"$T/high.c"
  printf '__attribute__((visibility("default"))) int stray(void) { return 3; }\n' >"$T/stray.c"
  "$CC" -c -fPIC "$T/low.c" -o "$T/core/low/low.o" && "$CC" -c -fPIC "$T/high.c" -o "$T/core/high/high.o" &&
    "$CC" -shared -fPIC "$T/stray.c" "$T/low.c" "$T/high.c" -o "$T/libstray.so" || die "cannot build the probes"
  edges "$T"/core/*/*.o >"$T/p_edges"
  cycles "$T/p_edges" >"$T/p_cycles"
  check "a pair of objects using each other is found as a cycle" test "$(tr '\n' ' ' <"$T/p_cycles")" = "high/high.o low/low.o "
  upward "$T/p_edges" "low high" >"$T/p_up"
  check "a use of a higher layer is reported" grep -q '^low/low.o -> high/high.o (wd_high)' "$T/p_up"
  exports "$T/libstray.so" >"$T/p_exp"
  printf 'WD_API int wd_low(void);\nWD_API int\n  wd_high(void);\n' >"$T/p.h"
  declared "$T/p.h" >"$T/p_decl"
  check "declarations spanning lines are read" test "$(tr '\n' ' ' <"$T/p_decl")" = "wd_high wd_low "
  check "an export the header does not declare is found" test "$(comm -23 "$T/p_exp" "$T/p_decl" | tr '\n' ' ')" = "stray wd_top "
else
  echo "(no C compiler: the probes of part 3 are left out)"
fi
finish
