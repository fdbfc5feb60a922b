#!/usr/bin/env bash
# Integrity of what wdelta writes (issue 15):
#  - modes: new outputs take 0666 (files) / 0777 (directories) less the umask;
#    --force keeps the mode of what it replaces (create, apply, rebase);
#  - many tensors: opening and creating scale linearly with the tensor count
#    (80,000 tiny tensors: open < 1 s, create < 5 s with the release build),
#    and the delta is not larger than the model;
#  - interruption: SIGINT/SIGTERM during create, apply and rebase leave no
#    temporary behind; what a killed (SIGKILL) run left is removed by the
#    next run to the same output, and a live process's temporary is kept.
# Env: WDELTA_BIN = directory holding wdelta, genmodel (default build-asan).
# Exit: 0 pass, 77 skip, 1 fail.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
require_python
setup_tmp wdelta-integrity
W="$WDELTA"
mode() { stat -c %a "$1"; }

# ------------------------------------------------------------ modes
gen_pair "$T/g" --params 1M --seed 3 || die "genmodel failed"
(umask 077; "$W" create -q --base "$T/g/base" --finetuned "$T/g/ft" -o "$T/a.wdelta" >/dev/null 2>"$T/err") ||
  { sed 's/^/      | /' "$T/err"; die "create failed"; }
check "create under umask 077: the delta is 0600 (got $(mode "$T/a.wdelta"))" [ "$(mode "$T/a.wdelta")" = 600 ]
(umask 022; "$W" create -q --base "$T/g/base" --finetuned "$T/g/ft" -o "$T/b.wdelta" >/dev/null 2>&1)
check "create under umask 022: 0644 (got $(mode "$T/b.wdelta"))" [ "$(mode "$T/b.wdelta")" = 644 ]
(umask 002; "$W" create -q --base "$T/g/base" --finetuned "$T/g/ft" -o "$T/c.wdelta" >/dev/null 2>&1)
check "create under umask 002: 0664 (got $(mode "$T/c.wdelta"))" [ "$(mode "$T/c.wdelta")" = 664 ]
chmod 600 "$T/b.wdelta"
(umask 022; "$W" create -q --force --base "$T/g/base" --finetuned "$T/g/ft" -o "$T/b.wdelta" >/dev/null 2>&1)
check "create --force over a 0600 delta keeps 0600 (got $(mode "$T/b.wdelta"))" [ "$(mode "$T/b.wdelta")" = 600 ]
chmod 640 "$T/b.wdelta"
(umask 077; "$W" create -q --force --base "$T/g/base" --finetuned "$T/g/ft" -o "$T/b.wdelta" >/dev/null 2>&1)
check "create --force over a 0640 delta keeps 0640 (got $(mode "$T/b.wdelta"))" [ "$(mode "$T/b.wdelta")" = 640 ]

(umask 077; "$W" apply -q "$T/a.wdelta" --base "$T/g/base" -o "$T/out7" >/dev/null 2>&1)
fm=$(stat -c %a "$T/out7"/* | sort -u | tr '\n' ' ')
check "apply under umask 077: directory 0700 (got $(mode "$T/out7")), files 0600 (got $fm)" \
  [ "$(mode "$T/out7")" = 700 -a "$fm" = "600 " ]
(umask 022; "$W" apply -q "$T/a.wdelta" --base "$T/g/base" -o "$T/out2" >/dev/null 2>&1)
fm=$(stat -c %a "$T/out2"/* | sort -u | tr '\n' ' ')
check "apply under umask 022: directory 0755 (got $(mode "$T/out2")), files 0644 (got $fm)" \
  [ "$(mode "$T/out2")" = 755 -a "$fm" = "644 " ]
chmod 700 "$T/out2"
(umask 022; "$W" apply -q --force "$T/a.wdelta" --base "$T/g/base" -o "$T/out2" >/dev/null 2>&1)
check "apply --force over a 0700 directory keeps 0700 (got $(mode "$T/out2"))" [ "$(mode "$T/out2")" = 700 ]

# rebase (a chain link flattened; convert is the same wd_flatten)
gen_pair "$T/g3" --params 1M --seed 4 || die "genmodel failed"
mkdir -p "$T/chain"
cp "$T/a.wdelta" "$T/chain/a.wdelta"
(umask 022; "$W" create -q --parent "$T/chain/a.wdelta" --base "$T/g/base" --finetuned "$T/g3/ft" \
  -o "$T/chain/l2.wdelta" >/dev/null 2>"$T/err") || { sed 's/^/      | /' "$T/err"; die "create --parent failed"; }
(umask 077; "$W" rebase -q "$T/chain/l2.wdelta" --base "$T/g/base" -o "$T/r.wdelta" >/dev/null 2>"$T/err")
check "rebase under umask 077: 0600 (got $(mode "$T/r.wdelta" 2>/dev/null))" [ "$(mode "$T/r.wdelta" 2>/dev/null)" = 600 ]
(umask 022; "$W" rebase -q --force "$T/chain/l2.wdelta" --base "$T/g/base" -o "$T/r.wdelta" >/dev/null 2>&1)
check "rebase --force over a 0600 delta keeps 0600 (got $(mode "$T/r.wdelta"))" [ "$(mode "$T/r.wdelta")" = 600 ]
check "rebase leaves no temporary" not ls -d "$T"/r.wdelta.*

# ------------------------------------------------------------ many tensors
# Linear, not quadratic: 4x the tensors must cost well under 16x the CPU
# time (user + system, measured in this run with the same build: less noisy
# than wall-clock time on a busy machine); absolute limits with the release
# build (80,000 tensors: create < 5 s, open < 1 s).
"$PY" "$REPO/tests/integration/gen_many_tensors.py" "$T/m10" 10000 || die "generator failed"
"$PY" "$REPO/tests/integration/gen_many_tensors.py" "$T/m40" 40000 || die "generator failed"
# cpu CMD...: CPU=user+system seconds, WALL, RSS (KB) of CMD (its output discarded)
cpu() {
  CPU=999 WALL=999 RSS=0
  /usr/bin/time -f "%U %S %e %M" -o "$T/time" "$@" >/dev/null 2>"$T/err" || { sed 's/^/      | /' "$T/err"; return 1; }
  read -r u s WALL RSS <"$T/time"
  CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
}
[ -x /usr/bin/time ] || skip "/usr/bin/time absent (Debian package time)"
cpu "$W" create -q --base "$T/m10/base" --finetuned "$T/m10/ft" -o "$T/m10.wdelta"; c10=$CPU
cpu "$W" create -q --base "$T/m40/base" --finetuned "$T/m40/ft" -o "$T/m40.wdelta"; c40=$CPU
cpu "$W" inspect "$T/m10.wdelta"; o10=$CPU
cpu "$W" inspect "$T/m40.wdelta"; o40=$CPU
check "create: 40k tensors ${c40} s CPU, 10k ${c10} s: under 8x for 4x the tensors" \
  awk -v a="$c10" -v b="$c40" 'BEGIN { exit !(b < 8 * (a > 0.2 ? a : 0.2)) }'
check "open (inspect): 40k tensors ${o40} s CPU, 10k ${o10} s: under 8x for 4x the tensors" \
  awk -v a="$o10" -v b="$o40" 'BEGIN { exit !(b < 8 * (a > 0.2 ? a : 0.2)) }'
ds=$(stat -c %s "$T/m40.wdelta") ms=$(stat -c %s "$T/m40/ft/model.safetensors")
check "40k tiny tensors: the delta ($ds bytes) is not larger than the model ($ms bytes)" [ "$ds" -le "$ms" ]
"$W" apply -q "$T/m40.wdelta" --base "$T/m40/base" -o "$T/m40.out" >/dev/null 2>&1
check "40k tensors: apply rebuilds the model exactly" same_model "$T/m40.out" "$T/m40/ft"
# other tiny sizes (1, 2 and 300 elements: below, at and above the size up to
# which tensors are stored together) and another seed
for spec in "1 7" "2 8" "300 9"; do
  set -- $spec
  "$PY" "$REPO/tests/integration/gen_many_tensors.py" "$T/ms$1" 5000 "$1" "$2" || die "generator failed"
  "$W" create -q --base "$T/ms$1/base" --finetuned "$T/ms$1/ft" -o "$T/ms$1.wdelta" >/dev/null 2>"$T/err" ||
    sed 's/^/      | /' "$T/err"
  "$W" apply -q "$T/ms$1.wdelta" --base "$T/ms$1/base" -o "$T/ms$1.out" >/dev/null 2>&1
  ds=$(stat -c %s "$T/ms$1.wdelta" 2>/dev/null || echo 0) ms=$(stat -c %s "$T/ms$1/ft/model.safetensors")
  check "5k tensors of $1 elements: delta $ds bytes, not larger than the model ($ms) and rebuilt exactly" \
    bash -c '[ "$1" -gt 0 ] && [ "$1" -le "$2" ] && cmp -s "$3" "$4"' _ "$ds" "$ms" "$T/ms$1.out/model.safetensors" \
    "$T/ms$1/ft/model.safetensors"
  rm -rf "$T/ms$1" "$T/ms$1.out" "$T/ms$1.wdelta"
done
R="$REPO/build/wdelta"
if [ -x "$R" ]; then
  "$PY" "$REPO/tests/integration/gen_many_tensors.py" "$T/m80" 80000 || die "generator failed"
  cpu "$R" create -q --base "$T/m80/base" --finetuned "$T/m80/ft" -o "$T/m80.wdelta"; cs=$CPU cw=$WALL crss=$RSS
  cpu "$R" inspect "$T/m80.wdelta"; os=$CPU ow=$WALL orss=$RSS
  ds=$(stat -c %s "$T/m80.wdelta") ms=$(stat -c %s "$T/m80/ft/model.safetensors")
  echo "      release build, 80k tensors: create $cs s CPU ($cw s wall, peak RSS $crss KB), open $os s CPU ($ow s wall, $orss KB), delta $ds of model $ms bytes"
  check "release build, 80k tensors: create under 5 s ($cs s CPU)" awk -v a="$cs" 'BEGIN { exit !(a < 5) }'
  check "release build, 80k tensors: open under 1 s ($os s CPU)" awk -v a="$os" 'BEGIN { exit !(a < 1) }'
  check "release build, 80k tensors: the delta is not larger than the model" [ "$ds" -le "$ms" ]
else
  echo "note: $R absent: absolute timings not checked"
fi
rm -rf "$T"/m10* "$T"/m40* "$T"/m80*

# ------------------------------------------------------------ interruption
gen_pair "$T/big" --params 16M --seed 5 || die "genmodel failed"
gen_pair "$T/big2" --params 16M --seed 6 || die "genmodel failed"
# run_and_signal SIG PATTERN CMD...: start CMD, send SIG as soon as a path
# matching PATTERN (a glob) exists, wait; SIGRC = its exit status, SENT = 1 if
# the signal was sent while a temporary existed
run_and_signal() {
  local sig=$1 pat=$2 pid i; shift 2
  # a shell's background job ignores SIGINT, and wdelta keeps an ignored
  # signal ignored: start it with the default action restored
  env --default-signal=INT "$@" >/dev/null 2>"$T/sigerr" &
  pid=$!
  SENT=0
  for i in $(seq 600); do
    if compgen -G "$pat" >/dev/null; then kill -"$sig" "$pid"; SENT=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
  done
  { wait "$pid"; } 2>/dev/null; SIGRC=$?
}
create_big=("$W" create -q --base "$T/big/base" --finetuned "$T/big/ft" -o "$T/s.wdelta")
run_and_signal INT "$T/s.wdelta.tmp.*" "${create_big[@]}"
check "create: SIGINT while writing (sent: $SENT) ends it by SIGINT (status $SIGRC)" [ "$SENT" = 1 -a "$SIGRC" = 130 ]
check "create: after SIGINT no temporary and no output left" not ls -d "$T"/s.wdelta*
run_and_signal TERM "$T/s.wdelta.tmp.*" "${create_big[@]}"
check "create: SIGTERM (sent: $SENT, status $SIGRC): nothing left" \
  bash -c '[ "$1" = 1 ] && [ "$2" = 143 ] && ! ls -d "$3"/s.wdelta* >/dev/null 2>&1' _ "$SENT" "$SIGRC" "$T"
"${create_big[@]}" >/dev/null 2>&1 || die "create failed"
run_and_signal TERM "$T/sout.tmp.*" "$W" apply -q "$T/s.wdelta" --base "$T/big/base" -o "$T/sout"
check "apply: SIGTERM while rebuilding (sent: $SENT, status $SIGRC): nothing left" \
  bash -c '[ "$1" = 1 ] && [ "$2" = 143 ] && ! ls -d "$3"/sout* >/dev/null 2>&1' _ "$SENT" "$SIGRC" "$T"
mkdir -p "$T/ch"
cp "$T/s.wdelta" "$T/ch/s.wdelta"
"$W" create -q --parent "$T/ch/s.wdelta" --base "$T/big/base" --finetuned "$T/big2/ft" -o "$T/ch/l2.wdelta" \
  >/dev/null 2>"$T/err" || { sed 's/^/      | /' "$T/err"; die "create --parent failed"; }
run_and_signal INT "$T/rb.wdelta.rebuild.*" "$W" rebase -q "$T/ch/l2.wdelta" --base "$T/big/base" -o "$T/rb.wdelta"
check "rebase: SIGINT while rebuilding (sent: $SENT, status $SIGRC): nothing left" \
  bash -c '[ "$1" = 1 ] && [ "$2" = 130 ] && ! ls -d "$3"/rb.wdelta* >/dev/null 2>&1' _ "$SENT" "$SIGRC" "$T"

# SIGKILL cannot be caught: the next run to the same output cleans up
run_and_signal KILL "$T/k.wdelta.tmp.*" "$W" create -q --base "$T/big/base" --finetuned "$T/big/ft" -o "$T/k.wdelta"
left=$(ls -d "$T"/k.wdelta.tmp.* 2>/dev/null | head -1)
check "create killed by SIGKILL leaves its temporary ($(basename "${left:-none}"))" [ -n "$left" ]
run_and_signal KILL "$T/kout.tmp.*" "$W" apply -q "$T/s.wdelta" --base "$T/big/base" -o "$T/kout"
aleft=$(ls -d "$T"/kout.tmp.* 2>/dev/null | head -1)
check "apply killed by SIGKILL leaves its directory ($(basename "${aleft:-none}"))" [ -n "$aleft" ]
run_and_signal KILL "$T/kr.wdelta.rebuild.*/model*" "$W" rebase -q "$T/ch/l2.wdelta" --base "$T/big/base" -o "$T/kr.wdelta"
rleft=$(ls -d "$T"/kr.wdelta.rebuild.* 2>/dev/null | head -1)
check "rebase killed by SIGKILL leaves its rebuilt model ($(basename "${rleft:-none}"))" [ -n "$rleft" ]
# a live process's temporary, and a symbolic link named like a dead one's
sleep 300 & live=$!
at_exit "kill $live 2>/dev/null"
echo keep >"$T/k.wdelta.tmp.$live.live"
sh -c 'exit 0' & dead=$!; wait $dead
echo target >"$T/victim"
ln -s "$T/victim" "$T/k.wdelta.tmp.$dead.link"
echo other >"$T/kother.tmp.$dead.x"
"$W" create -q --base "$T/g/base" --finetuned "$T/g/ft" -o "$T/k.wdelta" >/dev/null 2>"$T/err"
check "the next create removed the killed run's temporary" not test -e "$left"
check "a temporary of a live process is kept" test -e "$T/k.wdelta.tmp.$live.live"
check "a symbolic link named like a temporary is not followed (its target kept)" test -e "$T/victim"
check "temporaries of another output name are not touched" test -e "$T/kother.tmp.$dead.x"
"$W" apply -q "$T/a.wdelta" --base "$T/g/base" -o "$T/kout" >/dev/null 2>"$T/err"
check "the next apply removed the killed run's directory" not test -e "$aleft"
"$W" rebase -q "$T/ch/l2.wdelta" --base "$T/big/base" -o "$T/kr.wdelta" >/dev/null 2>"$T/err"
check "the next rebase removed the killed run's rebuilt model" not test -e "$rleft"
check "and left no temporary of its own" not ls -d "$T"/kr.wdelta.rebuild.* "$T"/kr.wdelta.tmp.*
finish
