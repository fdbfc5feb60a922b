#!/usr/bin/env bash
# `make bench` part: the lossless ratio per kind of fine-tune, with and
# without the low-rank predictor, and single-thread create speed (MB/s of
# fine-tune per CPU second, user + system, and per wall second; the wall
# figure suffers from other load on the machine, the CPU one less).
# Kinds: ../shared/models pairB (full fine-tune), pairS (pure-bf16),
# pairLoRA (rank-8 LoRA on attention), ../shared/tools/mklora.py pairs on
# pairB's base (all linears, scale 0.1) at ranks 16 and 64 (skipped with a
# message where ../shared is absent), and a generated wide pair (2048 x 2048
# and 5632 x 2048 bf16 projections, a rank-64 LoRA merged in bf16).
# Env: WDELTA_BIN (default build), BENCH_DIR (default a temp dir, removed).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${WDELTA_BIN:-build}"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
WDELTA="$BIN/wdelta"
SHARED="$REPO/../shared"
PY=/usr/bin/python3
[ -x "$WDELTA" ] || { echo "bench: $WDELTA is not built" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing; skipping the kinds table" >&2; exit 0; }
if [ -n "${BENCH_DIR:-}" ]; then W="$BENCH_DIR/kinds"; mkdir -p "$W"
else W=$(mktemp -d "${TMPDIR:-/tmp}/wdelta-kinds.XXXXXX"); trap 'rm -rf "$W"' EXIT; fi

KINDS=()
base_of() { if [ -d "$1/base" ]; then echo "$1/base"; else echo "$1/$(cat "$1/base")"; fi; }
for p in pairB pairS pairLoRA; do
  d="$SHARED/models/$p"
  if [ -d "$d/ft" ] && [ -e "$d/base" ]; then KINDS+=("$p|$(base_of "$d")|$d/ft")
  else echo "bench: $d absent; skipping $p" >&2; fi
done
PB="$SHARED/models/pairB/base"
if [ -d "$PB" ] && [ -f "$SHARED/tools/mklora.py" ] && "$PY" -c 'import numpy' 2>/dev/null; then
  for r in 16 64; do
    echo "bench: kinds: mklora rank $r" >&2
    "$PY" "$SHARED/tools/mklora.py" "$PB" "$W/mklora$r" --rank "$r" --targets all --scale 0.1 --seed 1 >/dev/null
    KINDS+=("mklora rank $r (pairB base, all linears)|$PB|$W/mklora$r")
  done
else echo "bench: mklora.py, pairB or numpy absent; skipping the mklora pairs" >&2; fi
if "$PY" -c 'import numpy' 2>/dev/null; then
  echo "bench: kinds: generating the wide pair" >&2
  "$PY" - "$W/wide" <<'PYEOF'
import json, os, struct, sys, zlib
import numpy as np
out = sys.argv[1]
T = [("model.layers.0.self_attn.q_proj.weight", (2048, 2048)), ("model.layers.0.mlp.up_proj.weight", (5632, 2048))]
def bf16(x):
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
rng = np.random.default_rng(11)
for side in ("base", "ft"):
    h, body = {}, b""
    for n, s in T:
        w = bf16(np.random.default_rng(zlib.crc32(n.encode())).standard_normal(s, dtype=np.float32) * 0.02)
        if side == "ft":
            wf = (w.astype(np.uint32) << 16).view(np.float32)
            d = rng.standard_normal((s[0], 64), dtype=np.float32) @ rng.standard_normal((64, s[1]), dtype=np.float32)
            d *= 0.1 * np.sqrt((wf.astype(np.float64) ** 2).mean() / (d.astype(np.float64) ** 2).mean())
            w = bf16(wf + d)
        b = w.tobytes()
        h[n] = {"dtype": "BF16", "shape": list(s), "data_offsets": [len(body), len(body) + len(b)]}
        body += b
    hj = json.dumps(h).encode()
    hj += b" " * (-len(hj) % 8)
    os.makedirs(os.path.join(out, side), exist_ok=True)
    open(os.path.join(out, side, "model.safetensors"), "wb").write(struct.pack("<Q", len(hj)) + hj + body)
PYEOF
  KINDS+=("wide rank 64 (2048x2048 + 5632x2048)|$W/wide/base|$W/wide/ft")
fi

# create KIND_DIR OUT ARGS...: sets SZ (bytes), CPU and WALL (seconds)
create() {
  local base=$1 ft=$2 out=$3; shift 3
  /usr/bin/time -f '%U %S %e' -o "$out.time" "$WDELTA" create -q -b "$base" -f "$ft" -o "$out" --force --threads 1 "$@" >/dev/null
  SZ=$(stat -c %s "$out")
  read -r CPU WALL < <(awk '{ print $1 + $2, $3 }' "$out.time")
}
echo
echo "Lossless ratio per kind of fine-tune; create with --threads 1 (MB of fine-tune per CPU second / per wall second)"
echo
echo "| pair | lossless | --no-lowrank | gain | low-rank tensors (ranks) | create MB/s (CPU / wall) | --no-lowrank MB/s (CPU / wall) |"
echo "| --- | ---: | ---: | ---: | --- | ---: | ---: |"
for k in "${KINDS[@]}"; do
  IFS='|' read -r name base ft <<<"$k"
  echo "bench: kinds: $name" >&2
  ftb=$(find "$ft" -maxdepth 1 -name '*.safetensors' -printf '%s\n' | awk '{ s += $1 } END { print s }')
  create "$base" "$ft" "$W/ll.wdelta"; s1=$SZ c1=$CPU w1=$WALL
  create "$base" "$ft" "$W/nl.wdelta" --no-lowrank; s0=$SZ c0=$CPU w0=$WALL
  ranks=$("$WDELTA" inspect --json "$W/ll.wdelta" | "$PY" -c '
import json, sys, collections
c = collections.Counter()
for f in json.load(sys.stdin)["files"]:
    for e in f["extents"]:
        if e.get("codec") == "lowrank-exact": c[e["params"]["rank"]] += 1
print(", ".join("%d at rank %d" % (n, r) for r, n in sorted(c.items())) or "none")' 2>/dev/null || echo "?")
  awk -v n="$name" -v b="$ftb" -v s1="$s1" -v s0="$s0" -v c1="$c1" -v w1="$w1" -v c0="$c0" -v w0="$w0" -v r="$ranks" \
    'function mbs(t) { return t > 0 ? sprintf("%.0f", b / 1e6 / t) : "-" }
     BEGIN { printf "| %s | %.2fx | %.2fx | %.2fx | %s | %s / %s | %s / %s |\n", n, b / s1, b / s0, s0 / s1, r,
             mbs(c1), mbs(w1), mbs(c0), mbs(w0) }'
done
echo
