#!/bin/bash
# How `wdelta apply` checks its base (issue 18): by default the whole base is
# not hashed first; each block's output checksum checks the base bytes that
# block uses, and the base is hashed only to explain a failure.  So:
#  - a base that differs in a tensor the first check does not read (the last
#    byte of its second shard's largest tensor): apply fails, exit 3, "wrong base" with both identities, and
#    leaves nothing (no output, no temporary directory);
#  - a base that differs from the first block on, or in shapes: the same
#    message from the up-front resolution (exit 3, no block named);
#  - a corrupt delta block with the right base stays a data error (exit 1);
#  - a base holding an extra tensor the delta does not use rebuilds the
#    fine-tune byte-identical; --check-base (the whole base hashed first)
#    refuses that base (exit 3, wrong base) and accepts the right one;
#  - --threads 1 and the default give the same bytes.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
require_python
setup_tmp wdapplybase
W=$WDELTA
rc() { "$@" >"$T/out" 2>&1; RC=$?; }
has() { grep -q -- "$1" "$T/out"; }
left() { ls -d "$1" "$1".tmp.* 2>/dev/null | head -n 1; }

gen_pair "$T/g" --params 300k --shards 2 --seed 21 || die "genmodel failed"
gen_pair "$T/o" --params 300k --shards 2 --seed 22 || die "genmodel failed"
create_delta "$T/g/base" "$T/g/ft" "$T/d.wdelta" -s lossless || die "create failed"
H=$("$W" hash "$T/g/base")

# edit.py MODE SRC DST: DST = the model directory SRC with, for MODE "flip",
# one byte of the last tensor (by data offset) of the last shard changed; for
# "extra", a tensor "zz_unused" added to the last shard
cat >"$T/edit.py" <<'EOF'
import json, os, shutil, struct, sys
mode, src, dst = sys.argv[1:4]
shutil.copytree(src, dst)
shards = sorted(n for n in os.listdir(dst) if n.endswith(".safetensors"))
p = os.path.join(dst, shards[-1])
data = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
hdr = json.loads(data[8:8 + n])
body = data[8 + n:]
if mode == "flip":  # the last byte of the shard's largest tensor (delta-coded, not the first read)
    big = max((v["data_offsets"][1] - v["data_offsets"][0], v["data_offsets"][1]) for k, v in hdr.items()
              if k != "__metadata__")[1]
    body[big - 1] ^= 0x40
else:
    hdr["zz_unused"] = {"dtype": "F32", "shape": [4], "data_offsets": [len(body), len(body) + 16]}
    body += struct.pack("<4f", 1, 2, 3, 4)
    ix = os.path.join(dst, "model.safetensors.index.json")
    if os.path.exists(ix):
        j = json.load(open(ix))
        j["weight_map"]["zz_unused"] = shards[-1]
        os.chmod(ix, 0o644)
        json.dump(j, open(ix, "w"))
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
os.chmod(p, 0o644)
open(p, "wb").write(struct.pack("<Q", len(h)) + h + bytes(body))
EOF
"$PY" "$T/edit.py" flip "$T/g/base" "$T/flip" || die "edit.py flip failed"
"$PY" "$T/edit.py" extra "$T/g/base" "$T/extra" || die "edit.py extra failed"

rc "$W" apply -q "$T/d.wdelta" --base "$T/g/base" -o "$T/ok1" --threads 1
check "apply --threads 1 with the right base (exit $RC) rebuilds the fine-tune" \
  bash -c '[ "$1" -eq 0 ] && cmp -s "$2/model-00001-of-00002.safetensors" "$3/model-00001-of-00002.safetensors" &&
           cmp -s "$2/model-00002-of-00002.safetensors" "$3/model-00002-of-00002.safetensors"' _ "$RC" "$T/ok1" "$T/g/ft"
rc "$W" apply -q "$T/d.wdelta" --base "$T/g/base" -o "$T/ok2"
check "  the default thread count gives the same files (exit $RC)" bash -c '[ "$1" -eq 0 ] && diff -r "$2" "$3" >/dev/null' _ "$RC" "$T/ok1" "$T/ok2"
check "  and every file of the fine-tune" same_model "$T/g/ft" "$T/ok1"

rc "$W" apply -q "$T/d.wdelta" --base "$T/flip" -o "$T/x1" --threads 1
check "one byte changed in a base tensor the first check does not read: exit 3 (got $RC)" [ "$RC" -eq 3 ]
check "  says wrong base with both identities" \
  bash -c 'grep -q "wrong base" "$1" && grep -q "${2:0:16}" "$1" && grep -q "${3:0:16}" "$1"' _ "$T/out" "$H" "$("$W" hash "$T/flip")"
check "  leaves nothing ($(left "$T/x1"))" [ -z "$(left "$T/x1")" ]
rc "$W" apply -q "$T/d.wdelta" --base "$T/flip" -o "$T/x1"
check "  the same with all threads (exit $RC, nothing left)" bash -c '[ "$1" -eq 3 ] && grep -q "wrong base" "$2" && [ -z "$3" ]' _ "$RC" "$T/out" "$(left "$T/x1")"

rc "$W" apply -q "$T/d.wdelta" --base "$T/o/base" -o "$T/x2"
check "another model as the base: exit 3 (got $RC), wrong base, no block named" \
  bash -c '[ "$1" -eq 3 ] && grep -q "wrong base" "$2" && ! grep -q "block" "$2"' _ "$RC" "$T/out"
check "  leaves nothing" [ -z "$(left "$T/x2")" ]

# a flipped byte in the data area of the delta, right base: corrupt data
cp "$T/d.wdelta" "$T/bad.wdelta"
"$PY" - "$T/bad.wdelta" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 3] ^= 0x01
open(p, "wb").write(b)
EOF
rc "$W" apply -q "$T/bad.wdelta" --base "$T/g/base" -o "$T/x3"
check "a corrupt delta block with the right base: exit 1 (got $RC), not called a wrong base" \
  bash -c '[ "$1" -eq 1 ] && ! grep -q "wrong base" "$2"' _ "$RC" "$T/out"
check "  leaves nothing" [ -z "$(left "$T/x3")" ]

rc "$W" apply -q "$T/d.wdelta" --base "$T/extra" -o "$T/x4"
check "a base with an extra tensor the delta does not use: rebuilds the fine-tune (exit $RC)" \
  bash -c '[ "$1" -eq 0 ] && diff -r "$2" "$3" >/dev/null' _ "$RC" "$T/ok1" "$T/x4"
rc "$W" apply -q --check-base "$T/d.wdelta" --base "$T/extra" -o "$T/x5"
check "  --check-base refuses it: exit 3 (got $RC), wrong base" bash -c '[ "$1" -eq 3 ] && grep -q "wrong base" "$2"' _ "$RC" "$T/out"
rc "$W" apply -q --check-base "$T/d.wdelta" --base "$T/g/base" -o "$T/x6" --threads 1
check "  and takes the right base (exit $RC)" bash -c '[ "$1" -eq 0 ] && diff -r "$2" "$3" >/dev/null' _ "$RC" "$T/ok1" "$T/x6"
rc "$W" apply -q --check-base "$T/d.wdelta" --base "$T/flip" -o "$T/x7"
check "  and the base with a changed byte: exit 3 (got $RC), no block named" \
  bash -c '[ "$1" -eq 3 ] && grep -q "wrong base" "$2" && ! grep -q "block" "$2"' _ "$RC" "$T/out"
finish
