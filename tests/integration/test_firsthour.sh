#!/usr/bin/env bash
# A new user's first hour (issue 14), tools side:
#   1. make test installs every package its tests call (tools/deps.sh --test),
#      or prints the one apt-get line and fails; .ci/run installs nothing itself
#   2. --force never deletes files wdelta did not write (apply, create,
#      rebase/convert); an empty output directory is taken; modes are kept
#   3. create's input policy: training state, our own outputs and subfolders
#      left out and named, unknown files stored and named, --exclude
#   4. exit codes: usage 2, bad data 1, missing input 3; codec options that do
#      not belong to the strategy are usage errors
#   5. progress off a terminal: few lines, the last one complete; apply of a v1
#      file counts the files it writes; make install/uninstall with PREFIX and
#      DESTDIR (the unit names PREFIX's wdeltafs, uninstall leaves no file);
#      eval --json names
# Env: WDELTA_BIN (default build-asan).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
setup_tmp wdelta-firsthour
W="$WDELTA"
G="$T/g"
gen_pair "$G" --params 300k --shards 2 --seed 14 || die "genmodel failed"
NT=$("$PY" -c 'import json,sys; print(len([k for k in json.load(open(sys.argv[1]))["weight_map"]]))' "$G/ft/model.safetensors.index.json" 2>/dev/null)

# rc CMD...: the exit status of CMD (stdout to $T/out, stderr to $T/err)
rc() { "$@" >"$T/out" 2>"$T/err"; echo $?; }

# ------------------------------------------------------------------ 1. packages
DEPS="$REPO/tools/deps.sh"
pkgs=$(bash -c '. <(sed -n "/^BUILD_PKGS=/p; /^TEST_PKGS=/p" "$1"); echo $BUILD_PKGS $TEST_PKGS' _ "$DEPS")
# every program a test calls, and the Debian package that must provide it
missing_pkg=""
for pp in getfattr:attr setfattr:attr useradd:passwd userdel:passwd runuser:util-linux su:util-linux \
          mountpoint:util-linux findmnt:util-linux mount:mount umount:mount fusermount3:fuse3 \
          mount.fuse3:fuse3; do
  prog=${pp%%:*} pkg=${pp#*:}
  grep -qw -- "$prog" "$REPO"/tests/integration/test_*.sh "$REPO"/tests/integration/lib.sh || continue
  case " $pkgs " in *" $pkg "*) ;; *) missing_pkg="$missing_pkg $prog($pkg)" ;; esac
  # where the program is installed, its owner must be that package
  p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$prog" 2>/dev/null)
  if [ -n "$p" ] && command -v dpkg >/dev/null; then
    owner=$(dpkg -S "$(readlink -f "$p")" 2>/dev/null | head -n1 | cut -d: -f1)
    [ -z "$owner" ] || [ "$owner" = "$pkg" ] || case " $pkgs " in *" $owner "*) ;; *) missing_pkg="$missing_pkg $prog($owner)" ;; esac
  fi
done
# the Python tests: /usr/bin/python3 with Debian's numpy
for pkg in python3 python3-numpy; do
  case " $pkgs " in *" $pkg "*) ;; *) missing_pkg="$missing_pkg $pkg" ;; esac
done
check "tools/deps.sh lists the package of every program the tests call${missing_pkg:+ (missing:$missing_pkg)}" [ -z "$missing_pkg" ]
check "make test checks the test packages (deps.sh --quiet --test)" \
  bash -c 'make -s -n -C "$1" test 2>/dev/null | grep -q "tools/deps.sh --quiet --test"' _ "$REPO"
check ".ci/run installs no package before make test (only make itself)" \
  bash -c '! grep -vE "^\s*#" "$1/.ci/run" | grep -E "apt-get install|deps\.sh" | grep -vqE "apt-get install (-y --no-install-recommends )?make\b"' _ "$REPO"
if id nobody >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v runuser >/dev/null; then
  cp "$DEPS" "$T/deps.sh"; chmod 755 "$T" "$T/deps.sh"
  runuser -u nobody -- env EXTRA_PKGS=wdeltafs-no-such-package bash "$T/deps.sh" --quiet --test >"$T/out" 2>"$T/err"; r=$?
  check "not root, a package missing: deps.sh exits 1 and prints the one apt-get line (exit $r: $(tail -n1 "$T/err"))" \
    bash -c '[ "$1" = 1 ] && [ "$(grep -c "apt-get install" "$2")" = 1 ] && grep -q "apt-get install -y --no-install-recommends.* wdeltafs-no-such-package" "$2"' _ "$r" "$T/err"
fi

# ------------------------------------------------------------------ 2. --force: apply
create_delta "$G/base" "$G/ft" "$T/d.wdelta" || die "create failed"
O="$T/out1"; mkdir "$O"; chmod 750 "$O"
r=$(rc "$W" apply "$T/d.wdelta" --base "$G/base" -o "$O" -q)
check "apply into an existing empty directory: exit $r" [ "$r" = 0 ]
check "the empty directory's mode 750 is kept ($(stat -c %a "$O"))" [ "$(stat -c %a "$O")" = 750 ]
check "its files are the fine-tune's" same_model "$O" "$G/ft"
r=$(rc "$W" apply "$T/d.wdelta" --base "$G/base" -o "$O" -q)
check "apply onto its own output without --force: refused (exit $r)" [ "$r" = 1 ]
echo "my notes" >"$O/notes.txt"
cp "$O/config.json" "$T/config.before"
echo '{"mine": 1}' >"$O/tokenizer.json"
r=$(rc "$W" apply "$T/d.wdelta" --base "$G/base" -o "$O" --force -q)
check "apply --force onto a directory with foreign files: refused, exit $r, naming them: $(cat "$T/err")" \
  bash -c '[ "$1" = 1 ] && grep -q notes.txt "$2" && grep -q tokenizer.json "$2"' _ "$r" "$T/err"
check "the foreign files are kept, unchanged" \
  bash -c '[ "$(cat "$1/notes.txt")" = "my notes" ] && grep -q mine "$1/tokenizer.json"' _ "$O"
check "nothing else was touched (config.json as before)" cmp -s "$O/config.json" "$T/config.before"
check "no temporary or .old directory left next to it" bash -c '[ -z "$(ls -d "$1".* 2>/dev/null)" ]' _ "$O"
rm "$O/notes.txt" "$O/tokenizer.json"
mkdir "$O/sub"
r=$(rc "$W" apply "$T/d.wdelta" --base "$G/base" -o "$O" --force -q)
check "apply --force onto a directory with a subfolder: refused naming sub/ (exit $r)" \
  bash -c '[ "$1" = 1 ] && grep -q "sub/" "$2" && [ -d "$3/sub" ]' _ "$r" "$T/err" "$O"
rmdir "$O/sub"
echo garbage >"$O/config.json"
r=$(rc "$W" apply "$T/d.wdelta" --base "$G/base" -o "$O" --force -q)
check "apply --force over only its own files: exit $r, rebuilt, mode 750 kept ($(stat -c %a "$O"))" \
  bash -c '[ "$1" = 0 ] && [ "$(stat -c %a "$2")" = 750 ]' _ "$r" "$O"
check "  ... and the files are the fine-tune's again" same_model "$O" "$G/ft"
check "  ... with nothing left next to it" bash -c '[ -z "$(ls -d "$1".* 2>/dev/null)" ]' _ "$O"
echo x >"$T/afile"
r=$(rc "$W" apply "$T/d.wdelta" --base "$G/base" -o "$T/afile" --force -q)
check "apply --force onto a regular file: refused (exit $r), file kept" \
  bash -c '[ "$1" = 1 ] && [ "$(cat "$2")" = x ]' _ "$r" "$T/afile"

# ------------------------------------------------------------------ 2. --force: create, rebase
r=$(rc "$W" create -q -b "$G/base" -f "$G/ft" -o "$T/afile" --force)
check "create --force onto a file that is not a .wdelta: refused (exit $r), file kept: $(cat "$T/err")" \
  bash -c '[ "$1" = 1 ] && [ "$(cat "$2")" = x ] && grep -q "not a .wdelta" "$3"' _ "$r" "$T/afile" "$T/err"
cp "$T/d.wdelta" "$T/e.wdelta"; chmod 600 "$T/e.wdelta"
r=$(rc "$W" create -q -b "$G/base" -f "$G/ft" -o "$T/e.wdelta" --force)
check "create --force over a .wdelta: exit $r, mode 600 kept ($(stat -c %a "$T/e.wdelta"))" \
  bash -c '[ "$1" = 0 ] && [ "$(stat -c %a "$2")" = 600 ]' _ "$r" "$T/e.wdelta"
r=$(rc "$W" rebase "$T/d.wdelta" -b "$G/base" -o "$T/afile" --force -q)
check "rebase --force onto a file that is not a .wdelta: refused (exit $r)" \
  bash -c '[ "$1" = 1 ] && [ "$(cat "$2")" = x ]' _ "$r" "$T/afile"

# ------------------------------------------------------------------ 3. create's inputs
F="$T/ckpt"; cp -r "$G/ft" "$F"
head -c 200000 /dev/urandom >"$F/optimizer.pt"
head -c 1000 /dev/urandom >"$F/scheduler.pt"
head -c 1000 /dev/urandom >"$F/rng_state.pth"
head -c 1000 /dev/urandom >"$F/rng_state_3.pth"
head -c 1000 /dev/urandom >"$F/training_args.bin"
echo '{"global_step": 5}' >"$F/trainer_state.json"
head -c 5000 /dev/urandom >"$F/pytorch_model.bin"
echo log >"$F/train.log"
mkdir "$F/checkpoint-500"; echo a >"$F/checkpoint-500/x"
r=$(rc "$W" create -q -b "$G/base" -f "$F" -o "$F/x.wdelta" --exclude '*.log')
cp "$T/out" "$T/create1.out"
check "create on a Trainer checkpoint directory: exit $r" [ "$r" = 0 ]
"$W" inspect --json "$F/x.wdelta" >"$T/insp.json" 2>"$T/err"
check "training state left out of the delta (optimizer, scheduler, rng_state*, training_args, trainer_state)" \
  "$PY" -c 'import json,sys; x=set(json.load(open(sys.argv[1]))["extra_files"]); bad=x & {"optimizer.pt","scheduler.pt","rng_state.pth","rng_state_3.pth","training_args.bin","trainer_state.json"}; assert not bad, bad' "$T/insp.json"
check "--exclude '*.log' left train.log out; pytorch_model.bin and config.json stored" \
  "$PY" -c 'import json,sys; x=set(json.load(open(sys.argv[1]))["extra_files"]); assert "train.log" not in x and "pytorch_model.bin" in x and "config.json" in x, x' "$T/insp.json"
check "the summary names what was left out: optimizer.pt, rng_state.pth, checkpoint-500/, train.log" \
  bash -c 'grep -q "training state.*optimizer.pt" "$1" && grep -q "rng_state.pth" "$1" && grep -q "subdirectory.*checkpoint-500/" "$1" && grep -q "exclude.*train.log" "$1"' _ "$T/create1.out"
check "the summary names pytorch_model.bin, stored whole" grep -q "stored whole.*pytorch_model.bin" "$T/create1.out"
s1=$(stat -c %s "$F/x.wdelta")
r=$(rc "$W" create -q -b "$G/base" -f "$F" -o "$F/x.wdelta" --exclude '*.log' --force)
s2=$(stat -c %s "$F/x.wdelta")
"$W" inspect --json "$F/x.wdelta" >"$T/insp2.json" 2>/dev/null
check "create -o FT/x.wdelta --force twice: the old delta is not embedded (exit $r, $s1 -> $s2 bytes)" \
  bash -c '[ "$1" = 0 ] && [ "$3" -lt $(( $2 + $2 / 10 + 1000 )) ] && "$4" -c "import json,sys; x=json.load(open(sys.argv[1]))[\"extra_files\"]; assert not [n for n in x if n.endswith(\".wdelta\") or \".tmp.\" in n], x" "$5"' \
  _ "$r" "$s1" "$s2" "$PY" "$T/insp2.json"
check "  ... and it is named as left out" grep -q "left out: a delta.*x.wdelta" "$T/out"
rm -rf "$T/ck.out"
"$W" apply "$F/x.wdelta" --base "$G/base" -o "$T/ck.out" -q >/dev/null 2>&1
check "apply rebuilds the weights and the kept files, not the training state" \
  bash -c 'same_model() { local f; for f in "$2"/*; do cmp -s "$f" "$1/$(basename "$f")" || return 1; done; }; same_model "$1" "$2" && [ ! -e "$1/optimizer.pt" ] && cmp -s "$1/pytorch_model.bin" "$3/pytorch_model.bin"' _ "$T/ck.out" "$G/ft" "$F"
# Python's save goes through the same policy (release library: python itself
# is not built with the sanitizers)
if [ -f "$REPO/build/libwdelta.so" ] && "$PY" -c 'import numpy' 2>/dev/null; then
  WDELTA_LIB="$REPO/build/libwdelta.so" PYTHONPATH="$REPO/python" "$PY" -c '
import sys, wdelta as dt
dt.save_delta_from_paths(sys.argv[1], sys.argv[2], sys.argv[3], strategy="lossless", exclude=["*.log", "pytorch*"], allow_new_tensors=True)' \
    "$T/py.wdelta" "$F" "$G/base" >"$T/out" 2>&1
  "$W" inspect --json "$T/py.wdelta" >"$T/insp3.json" 2>/dev/null
  check "python save_delta_from_paths(exclude=...): the same policy ($(tail -n1 "$T/out"))" \
    "$PY" -c 'import json,sys; x=set(json.load(open(sys.argv[1]))["extra_files"]); assert "config.json" in x and not x & {"optimizer.pt","train.log","pytorch_model.bin","x.wdelta","trainer_state.json"}, x' "$T/insp3.json"
fi
r=$(rc "$W" create -q -b "$G/base" -f "$F" -o "$T/y.wdelta" --exclude 'model-0000*')
check "--exclude matching a weights file: refused (exit $r): $(cat "$T/err")" \
  bash -c '[ "$1" = 1 ] && grep -q "weights" "$2" && [ ! -e "$3" ]' _ "$r" "$T/err" "$T/y.wdelta"

# ------------------------------------------------------------------ 4. exit codes
u() { # DESC ARGS...: a usage error, exit 2, one line
  local d=$1; shift
  rm -f "$T/u.wdelta"
  local r; r=$(rc "$W" "$@")
  check "usage error, exit 2: $d ($r: $(head -n1 "$T/err"))" bash -c '[ "$1" = 2 ] && [ "$(wc -l <"$2")" = 1 ] && [ ! -e "$3" ]' _ "$r" "$T/err" "$T/u.wdelta"
}
u "--density without --strategy sparse" create -q -b "$G/base" -f "$G/ft" -o "$T/u.wdelta" --density 0.5
u "--group-size with --strategy sparse" create -q -b "$G/base" -f "$G/ft" -o "$T/u.wdelta" -s sparse --group-size 64
u "--rank with --strategy int4" create -q -b "$G/base" -f "$G/ft" -o "$T/u.wdelta" -s int4 --rank 4
u "--max-error without --strategy auto" create -q -b "$G/base" -f "$G/ft" -o "$T/u.wdelta" --max-error 0.1
u "--strategy auto without --max-error" create -q -b "$G/base" -f "$G/ft" -o "$T/u.wdelta" -s auto
u "--block-size 100" create -q -b "$G/base" -f "$G/ft" -o "$T/u.wdelta" --block-size 100
u "--block-size 1000001 (not a multiple of 8)" create -q -b "$G/base" -f "$G/ft" -o "$T/u.wdelta" --block-size 1000001
u "an unknown strategy" create -q -b "$G/base" -f "$G/ft" -o "$T/u.wdelta" -s int3
m() { # DESC ARGS...: a missing input, exit 3
  local d=$1; shift
  local r; r=$(rc "$W" "$@")
  check "missing input, exit 3: $d ($r: $(head -n1 "$T/err"))" bash -c '[ "$1" = 3 ] && [ "$(wc -l <"$2")" = 1 ]' _ "$r" "$T/err"
}
m "apply of a missing file" apply "$T/none.wdelta" -b "$G/base" -o "$T/m.out"
m "apply with a missing base" apply "$T/d.wdelta" -b "$T/nobase" -o "$T/m.out"
m "create with a missing fine-tune" create -b "$G/base" -f "$T/noft" -o "$T/m.wdelta"
m "verify of a missing file" verify "$T/none.wdelta"
m "inspect of a missing file" inspect "$T/none.wdelta"
m "hash of a missing directory" hash "$T/nodir"
m "apply --chain of a missing path" apply "$T/d.wdelta" -b "$G/base" -o "$T/m.out" --chain "$T/nochain"
m "a file given as --base" apply "$T/d.wdelta" -b "$T/d.wdelta" -o "$T/m.out"
head -c 3000 "$T/d.wdelta" >"$T/trunc.wdelta"
r=$(rc "$W" inspect "$T/trunc.wdelta")
check "a truncated delta: exit 1 ($r: $(cat "$T/err"))" [ "$r" = 1 ]
cp "$T/d.wdelta" "$T/flip.wdelta"
printf '\xff\xff\xff\xff' | dd of="$T/flip.wdelta" bs=1 seek=2000 conv=notrunc 2>/dev/null
r=$(rc "$W" verify "$T/flip.wdelta" -q)
check "a corrupt block: verify exits 1 ($r: $(cat "$T/err"))" [ "$r" = 1 ]
check "wdelta --help documents the exit codes" \
  bash -c '"$1" --help | grep -q "^exit status" && "$1" --help | grep -qE "^ +3 +a needed input"' _ "$W"

# ------------------------------------------------------------------ 5. progress, v1 count, eval
"$W" create -b "$G/base" -f "$G/ft" -o "$T/p.wdelta" >/dev/null 2>"$T/prog" </dev/null
n=$(grep -c . "$T/prog")
last=$(tail -n1 "$T/prog")
check "create off a terminal: at most 2 progress lines for a short run ($n)" [ "$n" -le 2 ]
check "the last progress line is complete: 100% and $NT/$NT tensors ($last)" \
  bash -c '[[ "$1" == *"100%, $2/$2 tensors"* ]]' _ "$last" "$NT"
"$W" create -b "$G/base" -f "$G/ft" -o "$T/p2.wdelta" -s lowrank >/dev/null 2>"$T/prog2" </dev/null
check "create -s lowrank off a terminal: tensor counts never go backwards" \
  awk '{ if (match($0, /[0-9]+\/[0-9]+ tensors/)) { split(substr($0, RSTART, RLENGTH), a, "/"); if (a[1] + 0 < last) bad = 1; last = a[1] + 0 } } END { exit bad }' "$T/prog2"
if command -v script >/dev/null; then
  script -qec "$W create -b $G/base -f $G/ft -o $T/p3.wdelta" /dev/null >"$T/tty.out" 2>&1
  check "create on a terminal: one updating line (no newline-terminated progress lines)" \
    bash -c '! grep -aqE "^create: +[0-9]+%" "$1" && tr "\r" "\n" <"$1" | sed "s/\x1b\[K//g" | grep -aq "^created "' _ "$T/tty.out"
fi
"$W" eval "$T/p2.wdelta" --base "$G/base" --finetuned "$G/ft" --json >"$T/ev.json" 2>/dev/null
check "eval --json: per tensor \"params\" is the parameter count, \"settings\" the codec's settings" \
  "$PY" -c '
import json, sys
j = json.load(open(sys.argv[1]))
t = j["tensors"]
assert all(isinstance(x["params"], int) and x["params"] > 0 for x in t), t[0]
assert any("settings" in x for x in t) and not any("params_count" in x for x in t), t[0]
assert sum(x["params"] for x in t) == j["total"]["params"]' "$T/ev.json"
V="$SHARED/vectors/v1/synth-bf16"
if [ -f "$V/int4.wdelta" ]; then
  mkdir "$T/v1base"; cp "$V/base/"* "$T/v1base/"
  echo '{"model_type": "x"}' >"$T/v1base/config.json"; echo '{}' >"$T/v1base/tokenizer.json"
  nb=$(ls "$T/v1base" | wc -l)
  "$W" apply "$V/int4.wdelta" --base "$T/v1base" -o "$T/v1out" -q >"$T/out" 2>"$T/err"
  nw=$(ls "$T/v1out" 2>/dev/null | wc -l)
  check "apply of a v1 file reports the files it writes ($nw written: $(cat "$T/out"))" \
    bash -c 'grep -q ": $1 files" "$2" && [ "$1" = "$3" ]' _ "$nw" "$T/out" "$nb"
else
  echo "note: $V absent; skipping the v1 file count"
fi

# ------------------------------------------------------------------ install / uninstall
if [ -x "$REPO/build/wdelta" ] && [ -x "$REPO/build/wdeltafs" ] && [ -f "$REPO/build/libwdelta.so" ]; then
  ST="$T/stage" P=/opt/wdtest
  if make -s -C "$REPO" install DESTDIR="$ST" PREFIX="$P" >"$T/inst.out" 2>&1; then
    U="$ST$P/lib/systemd/system/wdeltafs@.service"
    check "installed unit runs \$PREFIX/bin/wdeltafs ($(grep ^ExecStart= "$U" 2>/dev/null))" \
      grep -q "^ExecStart=$P/bin/wdeltafs " "$U"
    check "install makes no empty sbin/" test ! -e "$ST$P/sbin"
    make -s -C "$REPO" uninstall DESTDIR="$ST" PREFIX="$P" >>"$T/inst.out" 2>&1
    left=$(find "$ST" -type f -o -type l | head -n 5)
    check "uninstall removes every file install wrote${left:+ (left: $left)}" [ -z "$left" ]
    check "uninstall removes lib/systemd" test ! -e "$ST$P/lib/systemd"
  else
    fail "make install DESTDIR=$ST PREFIX=$P"; tail -n 5 "$T/inst.out"
  fi
else
  echo "note: build/ (make all) not built; skipping the install check"
fi

finish
