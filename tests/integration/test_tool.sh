#!/usr/bin/env bash
# End-to-end tests of the wdelta CLI: generated models (genmodel) and, when
# present, ../shared/models/pairB.  Malformed inputs must give one clear error
# line, a non-zero exit, no sanitizer report and no output file.
# Env: WDELTA_BIN = directory of the binaries under test (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel

setup_tmp tool "$REPO/tests/tmp"

# run DESC CMD...: must succeed without sanitizer output
run() {
  local desc=$1; shift
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ $rc -ne 0 ] || ! san_clean "$T/err"; then
    fail "$desc (exit $rc)"; sed 's/^/      /' "$T/err" | head -n 20
    return 1
  fi
  pass "$desc"
  return 0
}

# expect_fail DESC OUTPATH CMD...: must fail cleanly (exit 1 or 2, one line
# "wdelta: ..." on stderr, no sanitizer report) and leave nothing at OUTPATH
# (OUTPATH "-" = no output to check).
expect_fail() {
  local desc=$1 outp=$2; shift 2
  "$@" >"$T/out" 2>"$T/err.all"
  local rc=$?
  # progress lines ("apply:  35%, ...") are not part of the error message
  grep -avE '^(create|apply|verify): +[0-9]+%' "$T/err.all" >"$T/err"
  local lines; lines=$(wc -l <"$T/err")
  local why=""
  if [ $rc -eq 0 ]; then why="succeeded"
  elif [ $rc -ne 1 ] && [ $rc -ne 2 ] && [ $rc -ne 3 ]; then why="exit $rc"
  elif ! san_clean "$T/err.all"; then why="sanitizer report"
  elif [ "$lines" -ne 1 ]; then why="$lines lines on stderr (want 1)"
  elif ! grep -q '^wdelta: ' "$T/err"; then why="stderr does not start with 'wdelta: '"
  elif [ "$outp" != "-" ] && [ -e "$outp" ]; then why="left $outp behind"
  fi
  if [ -n "$why" ]; then
    fail "$desc: $why"; sed 's/^/      /' "$T/err" | head -n 20
    return 1
  fi
  pass "$desc -> $(cat "$T/err")"
  return 0
}

# same_dir A B: every file of A is byte-identical in B and B has no others
same_dir() {
  local a=$1 b=$2 f ok=0
  for f in "$a"/*; do
    local n; n=$(basename "$f")
    if ! cmp -s "$f" "$b/$n"; then echo "      differs: $n"; ok=1; fi
  done
  for f in "$b"/*; do
    [ -e "$a/$(basename "$f")" ] || { echo "      extra: $(basename "$f")"; ok=1; }
  done
  return $ok
}

filesize() { stat -c %s "$1"; }
# flip_byte FILE OFFSET: xor the byte at OFFSET with 0x55 (dd, in place)
flip_byte() {
  local f=$1 off=$2 b
  b=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 0x55)))" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}
# u64le FILE OFFSET
u64le() { od -An -tu8 -j "$2" -N8 "$1" | tr -d ' '; }

# ------------------------------------------------------------------ CLI basics
run "--version" "$WDELTA" --version && grep -q '^wdelta [0-9]' "$T/out" || fail "--version output"
run "--help" "$WDELTA" --help
for c in create inspect apply verify hash; do
  run "$c --help" "$WDELTA" $c --help
done
"$WDELTA" >/dev/null 2>&1; [ $? -eq 2 ] && pass "no command exits 2" || fail "no command exits 2"
"$WDELTA" frobnicate >/dev/null 2>"$T/err"; [ $? -eq 2 ] && pass "unknown command exits 2" || fail "unknown command exits 2"
"$WDELTA" create --bogus >/dev/null 2>"$T/err"; [ $? -eq 2 ] && pass "unknown option exits 2" || fail "unknown option exits 2"
"$WDELTA" create --base x >/dev/null 2>"$T/err"; [ $? -eq 2 ] && pass "missing option exits 2" || fail "missing option exits 2"
"$WDELTA" create --threads abc --base a --finetuned b -o c >/dev/null 2>"$T/err"; [ $? -eq 2 ] && pass "bad number exits 2" || fail "bad number exits 2"

# ------------------------------------------------------------------ generated models
# roundtrip NAME GENMODEL-ARGS... : genmodel, create, inspect, apply, verify, hash
roundtrip() {
  local name=$1; shift
  local d="$T/$name"
  if ! "$GENMODEL" "$d" "$@" >"$T/out" 2>"$T/err"; then
    fail "genmodel $name $*"; cat "$T/err"; return 1
  fi
  run "$name: create" "$WDELTA" create --base "$d/base" --finetuned "$d/ft" -o "$d/x.wdelta" --threads 2 || return 1
  grep -q 'ratio' "$T/out" || fail "$name: create prints a summary with the ratio"
  run "$name: inspect" "$WDELTA" inspect "$d/x.wdelta"
  grep -q 'score.weight' "$T/out" && pass "$name: inspect lists the ft-only tensor" || fail "$name: inspect lists the ft-only tensor"
  if run "$name: inspect --json" "$WDELTA" inspect --json "$d/x.wdelta" && [ -n "$PY" ]; then
    "$PY" -c 'import json,sys; json.load(sys.stdin)' <"$T/out" && pass "$name: inspect --json is valid JSON" \
      || fail "$name: inspect --json is valid JSON"
  fi
  # the same inputs give the same bytes whatever the thread count
  if run "$name: create --threads 1" "$WDELTA" create --base "$d/base" --finetuned "$d/ft" -o "$d/x1.wdelta" --threads 1; then
    check "$name: --threads 1 and --threads 2 write identical files" cmp -s "$d/x.wdelta" "$d/x1.wdelta"
    rm -f "$d/x1.wdelta"
  fi
  run "$name: apply" "$WDELTA" apply "$d/x.wdelta" --base "$d/base" -o "$d/out" --threads 2 || return 1
  if same_dir "$d/ft" "$d/out"; then pass "$name: rebuilt files byte-identical"; else fail "$name: rebuilt files byte-identical"; fi
  run "$name: verify" "$WDELTA" verify "$d/x.wdelta"
  run "$name: verify --base" "$WDELTA" verify "$d/x.wdelta" --base "$d/base"
  local h1="" h2=""
  run "$name: hash ft" "$WDELTA" hash "$d/ft" && h1=$(cat "$T/out")
  run "$name: hash rebuilt" "$WDELTA" hash "$d/out" && h2=$(cat "$T/out")
  if [ -n "$h1" ] && [ "$h1" = "$h2" ] && [[ "$h1" =~ ^[0-9a-f]{64}$ ]]; then pass "$name: hash of rebuilt == hash of ft"; else fail "$name: hash '$h1' vs '$h2'"; fi
}

roundtrip g_bf16 --params 400k --shards 2 --dtype bf16 --seed 7
roundtrip g_f32 --params 200k --shards 1 --dtype f32 --seed 3
roundtrip g_f16 --params 200k --shards 3 --dtype f16 --seed 5

G="$T/g_bf16"
D="$G/x.wdelta"

# create --block-size/--level/--force
run "create --level 5 --block-size 64K" "$WDELTA" create --base "$G/base" --finetuned "$G/ft" -o "$T/bs.wdelta" --level 5 --block-size 64K --quiet
run "apply small-block delta" "$WDELTA" apply "$T/bs.wdelta" --base "$G/base" -o "$T/bs.out" --quiet
same_dir "$G/ft" "$T/bs.out" && pass "small-block delta byte-identical" || fail "small-block delta byte-identical"

# different models hash differently
"$GENMODEL" "$T/other" --params 400k --shards 2 --seed 8 >/dev/null 2>&1
h_base=$("$WDELTA" hash "$G/base" 2>/dev/null); h_other=$("$WDELTA" hash "$T/other/base" 2>/dev/null)
[ -n "$h_base" ] && [ "$h_base" != "$h_other" ] && pass "different models hash differently" || fail "different models hash differently"

# verify --base with the wrong base names both hashes
expect_fail "verify --base WRONG" - "$WDELTA" verify "$D" --base "$T/other/base"
grep -q "$h_base" "$T/err" && grep -q "$h_other" "$T/err" && pass "wrong-base error names both hashes" || fail "wrong-base error names both hashes"
expect_fail "apply --base WRONG (other shapes or data)" "$T/wrongbase.out" "$WDELTA" apply "$D" --base "$T/other/base" -o "$T/wrongbase.out"

# output already exists
cp "$D" "$T/exists.wdelta"
expect_fail "create onto an existing file" - "$WDELTA" create --base "$G/base" --finetuned "$G/ft" -o "$T/exists.wdelta"
cmp -s "$D" "$T/exists.wdelta" && pass "existing file untouched" || fail "existing file untouched"
mkdir -p "$T/existsdir"; echo keep >"$T/existsdir/keep"
expect_fail "apply onto an existing dir" - "$WDELTA" apply "$D" --base "$G/base" -o "$T/existsdir"
[ "$(cat "$T/existsdir/keep")" = keep ] && pass "existing dir untouched" || fail "existing dir untouched"
run "create --force overwrites" "$WDELTA" create --base "$G/base" --finetuned "$G/ft" -o "$T/exists.wdelta" --force --quiet
expect_fail "apply --force onto a dir holding a file it does not write" - "$WDELTA" apply "$D" --base "$G/base" -o "$T/existsdir" --force
[ "$(cat "$T/existsdir/keep")" = keep ] && pass "its file kept" || fail "its file kept"
rm "$T/existsdir/keep"
run "apply into the now empty dir" "$WDELTA" apply "$D" --base "$G/base" -o "$T/existsdir" --quiet
run "apply --force replaces its own output" "$WDELTA" apply "$D" --base "$G/base" -o "$T/existsdir" --force --quiet
same_dir "$G/ft" "$T/existsdir" && pass "apply --force result byte-identical" || fail "apply --force result byte-identical"

# missing inputs
expect_fail "create with missing base" "$T/m1.wdelta" "$WDELTA" create --base "$T/nonexistent" --finetuned "$G/ft" -o "$T/m1.wdelta"
expect_fail "create with missing finetuned" "$T/m2.wdelta" "$WDELTA" create --base "$G/base" --finetuned "$T/nonexistent" -o "$T/m2.wdelta"
expect_fail "apply with missing base" "$T/m3" "$WDELTA" apply "$D" --base "$T/nonexistent" -o "$T/m3"
expect_fail "apply of a missing delta" "$T/m4" "$WDELTA" apply "$T/nonexistent.wdelta" --base "$G/base" -o "$T/m4"
expect_fail "inspect of a missing delta" - "$WDELTA" inspect "$T/nonexistent.wdelta"
expect_fail "hash of a missing dir" - "$WDELTA" hash "$T/nonexistent"
expect_fail "create with an unknown strategy" "$T/m5.wdelta" "$WDELTA" create --base "$G/base" --finetuned "$G/ft" -o "$T/m5.wdelta" --strategy int3

# ------------------------------------------------------------------ malformed deltas
size=$(filesize "$D")
# truncated
head -c $((size / 2)) "$D" >"$T/trunc.wdelta"
expect_fail "inspect truncated delta" - "$WDELTA" inspect "$T/trunc.wdelta"
expect_fail "apply truncated delta" "$T/trunc.out" "$WDELTA" apply "$T/trunc.wdelta" --base "$G/base" -o "$T/trunc.out"
expect_fail "verify truncated delta" - "$WDELTA" verify "$T/trunc.wdelta"
head -c $((size - 1)) "$D" >"$T/trunc1.wdelta"
expect_fail "inspect delta missing its last byte" - "$WDELTA" inspect "$T/trunc1.wdelta"
: >"$T/empty.wdelta"
expect_fail "inspect empty file" - "$WDELTA" inspect "$T/empty.wdelta"

# wrong magic
cp "$D" "$T/magic.wdelta"; flip_byte "$T/magic.wdelta" 0
expect_fail "inspect wrong magic" - "$WDELTA" inspect "$T/magic.wdelta"
expect_fail "apply wrong magic" "$T/magic.out" "$WDELTA" apply "$T/magic.wdelta" --base "$G/base" -o "$T/magic.out"

# footer: manifest offset/length (u64 at size-88 and size-80)
moff=$(u64le "$D" $((size - 88)))
mlen=$(u64le "$D" $((size - 80)))
if [ -n "$moff" ] && [ "$moff" -gt 16 ] && [ "$moff" -lt "$size" ]; then
  # a flipped byte inside a data block (middle of the block area)
  cp "$D" "$T/data.wdelta"; flip_byte "$T/data.wdelta" $(( (16 + moff) / 2 ))
  expect_fail "verify with a flipped data byte" - "$WDELTA" verify "$T/data.wdelta"
  expect_fail "verify --base with a flipped data byte" - "$WDELTA" verify "$T/data.wdelta" --base "$G/base"
  expect_fail "apply with a flipped data byte" "$T/data.out" "$WDELTA" apply "$T/data.wdelta" --base "$G/base" -o "$T/data.out"
  # and in the first block (the first shard's header, zstd)
  cp "$D" "$T/data0.wdelta"; flip_byte "$T/data0.wdelta" 20
  expect_fail "apply with a flipped byte in the first block" "$T/data0.out" "$WDELTA" apply "$T/data0.wdelta" --base "$G/base" -o "$T/data0.out"
  # a flipped byte in the manifest (JSON near the end of the file)
  cp "$D" "$T/man.wdelta"; flip_byte "$T/man.wdelta" $((moff + mlen / 2))
  expect_fail "inspect with a flipped manifest byte" - "$WDELTA" inspect "$T/man.wdelta"
  expect_fail "apply with a flipped manifest byte" "$T/man.out" "$WDELTA" apply "$T/man.wdelta" --base "$G/base" -o "$T/man.out"
  # in the block table (just before the footer)
  cp "$D" "$T/tab.wdelta"; flip_byte "$T/tab.wdelta" $((size - 88 - 5))
  expect_fail "inspect with a flipped block-table byte" - "$WDELTA" inspect "$T/tab.wdelta"
  # in the footer itself
  cp "$D" "$T/foot.wdelta"; flip_byte "$T/foot.wdelta" $((size - 88 + 1))
  expect_fail "inspect with a flipped footer byte" - "$WDELTA" inspect "$T/foot.wdelta"
  cp "$D" "$T/foot2.wdelta"; flip_byte "$T/foot2.wdelta" $((size - 4))
  expect_fail "inspect with a flipped footer magic" - "$WDELTA" inspect "$T/foot2.wdelta"
else
  fail "cannot read the manifest offset from the footer (moff='$moff')"
fi

# ------------------------------------------------------------------ malformed safetensors
shard="model-00001-of-00002.safetensors"
# header length huge
cp -r "$G/ft" "$T/hugeft"; chmod -R u+w "$T/hugeft"
printf '\x00\x00\x00\x00\x00\x00\x00\x7f' | dd of="$T/hugeft/$shard" bs=1 seek=0 conv=notrunc status=none
expect_fail "create with a huge safetensors header length" "$T/huge.wdelta" \
  "$WDELTA" create --base "$G/base" --finetuned "$T/hugeft" -o "$T/huge.wdelta"
expect_fail "hash with a huge safetensors header length" - "$WDELTA" hash "$T/hugeft"
expect_fail "apply onto a base with a huge header length" "$T/huge.out" \
  "$WDELTA" apply "$D" --base "$T/hugeft" -o "$T/huge.out"
# header length just past the end of the file
cp -r "$G/ft" "$T/pastft"; chmod -R u+w "$T/pastft"
fs=$(filesize "$T/pastft/$shard")
if [ -n "$PY" ]; then
  "$PY" - "$T/pastft/$shard" "$fs" <<'PYEOF'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    f.write(struct.pack('<Q', int(sys.argv[2])))
PYEOF
  expect_fail "create with a header length past the end" "$T/past.wdelta" \
    "$WDELTA" create --base "$G/base" --finetuned "$T/pastft" -o "$T/past.wdelta"
fi

# header lying about offsets (same JSON length, end offset moved past the data)
if [ -n "$PY" ]; then
  for mode in past overlap shapelie; do
    cp -r "$G/ft" "$T/lie_$mode"; chmod -R u+w "$T/lie_$mode"
    if "$PY" - "$T/lie_$mode/$shard" "$mode" <<'PYEOF'
import json, struct, sys
path, mode = sys.argv[1], sys.argv[2]
with open(path, 'r+b') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    h = json.loads(f.read(n))
    names = sorted((k for k in h if k != '__metadata__'), key=lambda k: h[k]['data_offsets'][0])
    last, first = names[-1], names[0]
    if mode == 'past':
        h[last]['data_offsets'][1] += 4096
    elif mode == 'overlap':
        h[names[1]]['data_offsets'][0] -= 8
    else:
        h[first]['shape'][0] += 1
    s = json.dumps(h, separators=(',', ':')).encode()
    if len(s) > n:
        sys.exit('cannot fit the patched header')
    f.seek(8)
    f.write(s + b' ' * (n - len(s)))
PYEOF
    then
      expect_fail "create with a safetensors header lying about offsets ($mode)" "$T/lie_$mode.wdelta" \
        "$WDELTA" create --base "$G/base" --finetuned "$T/lie_$mode" -o "$T/lie_$mode.wdelta"
    else
      fail "could not patch the header ($mode)"
    fi
  done
  # a header that is not JSON
  cp -r "$G/ft" "$T/notjson"; chmod -R u+w "$T/notjson"
  printf '{"a' | dd of="$T/notjson/$shard" bs=1 seek=8 conv=notrunc status=none
  expect_fail "create with a non-JSON safetensors header" "$T/notjson.wdelta" \
    "$WDELTA" create --base "$G/base" --finetuned "$T/notjson" -o "$T/notjson.wdelta"
else
  echo "note: python3 not found; skipping the header-rewriting cases"
fi
# a shard cut short
cp -r "$G/ft" "$T/shortft"; chmod -R u+w "$T/shortft"
truncate -s -100 "$T/shortft/$shard"
expect_fail "create with a truncated shard" "$T/short.wdelta" \
  "$WDELTA" create --base "$G/base" --finetuned "$T/shortft" -o "$T/short.wdelta"

# ------------------------------------------------------------------ v1 files
V1="$SHARED/vectors/v1/pairB/int4.wdelta"
if [ -f "$V1" ]; then
  "$WDELTA" inspect "$V1" >"$T/out" 2>"$T/err"; rc=$?
  if { [ $rc -eq 0 ] || { [ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ]; }; } && san_clean "$T/err"; then
    pass "inspect of a v1 file: exit $rc $(head -c 200 "$T/err")"
  else
    fail "inspect of a v1 file: exit $rc"; head -n 20 "$T/err"
  fi
else
  echo "note: $V1 absent; skipping the v1 inspect case"
fi

# ------------------------------------------------------------------ pairB
PB="$SHARED/models/pairB"
if [ -d "$PB/base" ] && [ -d "$PB/ft" ]; then
  run "pairB: create" "$WDELTA" create --base "$PB/base" --finetuned "$PB/ft" -o "$T/pairB.wdelta" && cat "$T/out"
  run "pairB: inspect" "$WDELTA" inspect "$T/pairB.wdelta"
  if run "pairB: inspect --json" "$WDELTA" inspect --json "$T/pairB.wdelta" && [ -n "$PY" ]; then
    "$PY" -c 'import json,sys; json.load(sys.stdin)' <"$T/out" && pass "pairB: inspect --json is valid JSON" || fail "pairB: inspect --json is valid JSON"
  fi
  run "pairB: apply" "$WDELTA" apply "$T/pairB.wdelta" --base "$PB/base" -o "$T/pairB.out"
  for f in "$PB/ft"/*; do
    n=$(basename "$f")
    cmp "$f" "$T/pairB.out/$n" && pass "pairB: $n byte-identical" || fail "pairB: $n differs"
  done
  same_dir "$PB/ft" "$T/pairB.out" && pass "pairB: same file set" || fail "pairB: same file set"
  run "pairB: verify" "$WDELTA" verify "$T/pairB.wdelta"
  run "pairB: verify --base" "$WDELTA" verify "$T/pairB.wdelta" --base "$PB/base"
  expect_fail "pairB: verify --base with the ft as base" - "$WDELTA" verify "$T/pairB.wdelta" --base "$PB/ft"
  EXP="$SHARED/vectors/v1/pairB/int4.expected.json"
  if run "pairB: hash --v1 base" "$WDELTA" hash --v1 "$PB/base"; then
    got=$(cat "$T/out")
    if [ -f "$EXP" ]; then
      want=$(grep -o '"parent_hash": *"[0-9a-f]*"' "$EXP" | grep -o '[0-9a-f]\{64\}')
      [ "$got" = "$want" ] && pass "pairB: hash --v1 base == parent_hash ($want)" || fail "pairB: hash --v1 base $got != parent_hash $want"
    else
      echo "note: $EXP absent; not checking the parent_hash"
    fi
  fi
else
  echo "note: $PB absent; skipping the pairB parts"
fi

finish
