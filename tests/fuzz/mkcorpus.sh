#!/usr/bin/env bash
# Regenerates the seed corpora under tests/fuzz/corpus/ from real files:
# safetensors headers of ../shared/models/pairB, the v1 vectors of
# ../shared/vectors/v1/synth-*, a small v2 delta made with build/genmodel and
# build/wdelta, and codec blocks from tests/fuzz/mkcorpus.c.  Needs `make`.
set -eu
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
SHARED="${WDELTA_SHARED:-../shared}"
C=tests/fuzz/corpus
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# m-* files are fuzzer-found inputs merged in by hand (build-fuzz/fuzz_X -merge=1); they stay
mkdir -p "$C"/fuzz_safetensors "$C"/fuzz_v1 "$C"/fuzz_v2 "$C"/fuzz_codec
find "$C" -type f ! -name 'm-*' -delete

# safetensors: the header (8 + N bytes) of real shards, and whole small files
python3 - "$SHARED" "$C/fuzz_safetensors" <<'PY'
import struct, sys, glob, os
shared, out = sys.argv[1], sys.argv[2]
for p in sorted(glob.glob(shared + "/models/pairB/base/*.safetensors")):
    b = open(p, "rb").read(8)
    n = struct.unpack("<Q", b)[0]
    hdr = open(p, "rb").read(8 + n)
    open(os.path.join(out, "hdr-pairB-" + os.path.basename(p)), "wb").write(hdr)
for d in ("synth-f32", "synth-bf16"):
    p = shared + "/vectors/v1/%s/base/model.safetensors" % d
    if os.path.exists(p):
        open(os.path.join(out, "whole-" + d), "wb").write(open(p, "rb").read())
PY

# v1: the deltatensors vectors
for d in synth-f32 synth-bf16; do
  for f in "$SHARED"/vectors/v1/$d/*.wdelta; do cp "$f" "$C/fuzz_v1/$d-$(basename "$f")"; done
done

# v2: a small delta, raw ('R' + file) and as a wrapped manifest + table + data
build/genmodel "$TMP/m" --params 20K --shards 2 >/dev/null
build/wdelta create --base "$TMP/m/base" --finetuned "$TMP/m/ft" -o "$TMP/a.wdelta" --quiet
build/wdelta create --base "$TMP/m/base" --finetuned "$TMP/m/ft" -o "$TMP/b.wdelta" --block-size 4096 --quiet
for f in int4 sparse quantized; do  # v1 files through wd_delta_open (and its v1 view)
  { printf R; cat "$SHARED/vectors/v1/synth-f32/$f.wdelta"; } >"$C/fuzz_v2/raw-v1-$f"
done
python3 - "$TMP" "$C/fuzz_v2" <<'PY'
import struct, sys, os
tmp, out = sys.argv[1], sys.argv[2]
for name in ("a", "b"):
    f = open(os.path.join(tmp, name + ".wdelta"), "rb").read()
    open(os.path.join(out, "raw-" + name), "wb").write(b"R" + f)
    foot = f[-88:]
    moff, mlen, toff, nb = struct.unpack("<4Q", foot[:32])
    data, man, tab = f[16:moff], f[moff:moff + mlen], f[toff:toff + 32 * nb]
    # flags 1: keep the block entries (offsets are then those of the original)
    w = bytes([ord("W"), 1]) + struct.pack("<HI", nb, len(data)) + tab + data + man
    open(os.path.join(out, "wrapped-" + name), "wb").write(w)
PY

# codec: encoded blocks and round-trip inputs
gcc -std=c11 -D_GNU_SOURCE -O1 -Icore -Itests/fuzz tests/fuzz/mkcorpus.c build/libwdelta.a \
  $(pkg-config --libs libzstd libcrypto libcjson) -lm -o "$TMP/mkcorpus"
# lowrank seeds from the real LoRA delta of pairLoRA (its base may be a file naming a directory)
PL="$SHARED/models/pairLoRA"
if [ -d "$PL/base" ]; then PLB="$PL/base"; elif [ -f "$PL/base" ]; then PLB="$PL/$(cat "$PL/base")"; else PLB=""; fi
if [ -n "$PLB" ] && [ -d "$PL/ft" ]; then "$TMP/mkcorpus" "$C/fuzz_codec" "$PLB" "$PL/ft"
else echo "mkcorpus: $PL absent; no lowrank seeds" >&2; "$TMP/mkcorpus" "$C/fuzz_codec"; fi
chmod 644 "$C"/*/*
du -sh "$C"/*
