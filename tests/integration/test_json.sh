#!/bin/bash
# Every --json output of wdelta is one valid JSON object (python3's json
# parser, strict: no NaN, the text UTF-8), with the keys the help names:
#   create --json, inspect --json (v2 and a chain link), inspect --chain --json
#   (one FILE, FILEs in and out of order, a DIR), verify --json (ok, a wrong
#   base: ok=false, exit 3, the error), hash --json (both kinds), eval --json;
#   names that are not UTF-8 (a directory, a file named with bytes 0xff 0x80)
#   still give valid JSON: U+FFFD in the text, KEY_hex holding the bytes;
#   --version names the format versions read and written.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
require_python
setup_tmp wdjson
W=$WDELTA

# valid NAME CMD...: CMD's stdout parses as one strict JSON object -> $T/NAME.json
valid() {
  local name=$1; shift
  "$@" >"$T/$name.json" 2>"$T/$name.err"
  echo $? >"$T/$name.rc"
  "$PY" -c '
import json, sys
raw = open(sys.argv[1], "rb").read()
def no_const(c): raise ValueError("non-standard constant " + c)
d = json.loads(raw.decode("utf-8"), parse_constant=no_const)
assert isinstance(d, dict), type(d)
' "$T/$name.json"
}
# jq-like check: python expression over d (the parsed JSON of NAME)
has() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$T/$1.json" "$2"; }
rc_of() { cat "$T/$1.rc"; }

gen_pair "$T/g" --params 300k --shards 2 --seed 3 || die "genmodel failed"
gen_pair "$T/h" --params 300k --shards 2 --seed 4 || die "genmodel failed"
mkdir -p "$T/ch"

check "create --json: valid" valid create "$W" create -q --json --base "$T/g/base" --finetuned "$T/g/ft" -o "$T/ch/a.wdelta"
check "create --json: bytes, seconds, ratio, inputs by kind" has create \
  'd["delta_bytes"] == __import__("os").path.getsize(d["output"]) and d["input_bytes"] > d["delta_bytes"] > 0 and d["seconds"] >= 0 and abs(d["ratio"] - d["input_bytes"] / d["delta_bytes"]) < 1e-9 and len(d["inputs"]["delta_coded"]) == 2 and "config.json" in d["inputs"]["stored_whole"] and d["chain_link"] is None'
check "create --json: stdout holds only the JSON (exit 0)" [ "$(rc_of create)" = 0 ]
check "create --json --parent: a chain link" valid link "$W" create -q --json --base "$T/g/base" --finetuned "$T/h/ft" \
  --parent "$T/ch/a.wdelta" -o "$T/ch/b.wdelta"
check "create --json --parent: chain_link 2, parent named" has link 'd["chain_link"] == 2 and d["parent"].endswith("a.wdelta")'

check "inspect --json: valid" valid insp "$W" inspect --json "$T/ch/b.wdelta"
check "inspect --json: a link names its parent" has insp 'd["parent"]["name"] == "a.wdelta" and d["format_version"] == 2'

check "inspect --chain --json FILE: valid" valid c1 "$W" inspect --chain --json "$T/ch/b.wdelta"
check "inspect --chain --json FILE: two links root first, hashes connect" has c1 \
  'd["connected"] and [l["path"][-9:] for l in d["links"]] == ["/a.wdelta", "/b.wdelta"] and d["links"][1]["base_hash"] == d["links"][0]["result_hash"] and d["links"][0]["delta_bytes"] > 0'
valid c2 "$W" inspect --chain --json "$T/ch/b.wdelta" "$T/ch/a.wdelta"; c2=$?
check "inspect --chain --json FILES out of order: valid, exit 1" [ "$c2/$(rc_of c2)" = 0/1 ]
check "inspect --chain --json FILES out of order: connected false, break_at 1" has c2 'd["connected"] is False and d["break_at"] == 1'
check "inspect --chain --json DIR: valid" valid c3 "$W" inspect --chain --json "$T/ch"
check "inspect --chain --json DIR: one chain of depths 0, 1" has c3 \
  'd["deltas"] == 2 and d["chains"] == 1 and [(l["chain"], l["depth"]) for l in d["links"]] == [(1, 0), (1, 1)]'

check "verify --json: valid" valid v1 "$W" verify -q --json "$T/ch/a.wdelta"
check "verify --json: ok, checksums" has v1 'd["ok"] is True and d["error"] is None and d["links"][0]["checksums_ok"]'
check "verify --json --base: valid" valid v2 "$W" verify -q --json "$T/ch/b.wdelta" --base "$T/g/base"
check "verify --json --base (a link): both links' result hashes match" has v2 \
  'd["ok"] and len(d["links"]) == 2 and all(l["result_hash_matches"] for l in d["links"]) and d["links"][1]["output_bytes"] > 0'
check "verify --json with a wrong base: valid JSON still" valid v3 "$W" verify -q --json "$T/ch/a.wdelta" --base "$T/h/base"
check "verify --json with a wrong base: ok false, the error" has v3 'd["ok"] is False and "wrong base" in d["error"]'
check "verify --json with a wrong base: exit 3" [ "$(rc_of v3)" = 3 ]

check "hash --json: valid" valid h1 "$W" hash --json "$T/g/base"
check "hash --json: the same hash as the text output" has h1 \
  "d['hash'] == '$("$W" hash "$T/g/base")' and d['hash_kind'] == 'model identity' and d['tensors'] > 0 and d['tensor_bytes'] > 0"
check "hash --v1 --json: the v1 content hash" valid h2 "$W" hash --v1 --json "$T/g/base"
check "hash --v1 --json: matches hash --v1" has h2 "d['hash'] == '$("$W" hash --v1 "$T/g/base")' and d['hash_kind'] != 'model identity'"

check "eval --json: valid" valid ev "$W" eval --json "$T/ch/a.wdelta" --base "$T/g/base" --finetuned "$T/g/ft"
check "eval --json: lossless, zero error" has ev 'd["total"]["rel_error"] == 0 and d["total"]["file_bytes"] > 0'

# names that are not UTF-8: the library refuses them in tensor names (so a
# manifest never holds one), but paths are the user's: a directory named
# with the bytes 0xff 0x80 holding a chain
ODD="$T/$(printf 'odd\xff\x80dir')"
mkdir -p "$ODD" && cp "$T/ch/a.wdelta" "$T/ch/b.wdelta" "$ODD/"
check "inspect --chain --json in a directory named with bytes 0xff 0x80: valid" valid oddc "$W" inspect --chain --json "$ODD/b.wdelta"
check "inspect --chain --json: U+FFFD in the text, path_hex holds the exact bytes" has oddc \
  'd["links"][1]["path"].endswith("odd\ufffd\ufffddir/b.wdelta") and bytes.fromhex(d["links"][1]["path_hex"]).endswith(b"odd\xff\x80dir/b.wdelta")'
check "verify --json there: valid, file_hex" valid oddv "$W" verify -q --json "$ODD/b.wdelta" --base "$T/g/base"
check "verify --json there: ok, file_hex ends in the exact bytes" has oddv \
  'd["ok"] and bytes.fromhex(d["file_hex"]).endswith(b"\xff\x80dir/b.wdelta") and "\ufffd" in d["links"][0]["path"]'
check "create --json -o there: valid, output_hex" valid oddo "$W" create -q --json --base "$T/g/base" --finetuned "$T/g/ft" -o "$ODD/c.wdelta"
check "create --json -o there: output_hex names the file written" has oddo \
  '__import__("os").path.getsize(bytes.fromhex(d["output_hex"])) == d["delta_bytes"]'
# a file name with such bytes: left out (unsafe to serve), named in valid JSON
cp "$T/g/ft/config.json" "$T/g/ft/$(printf 'odd\xfe.txt')"
check "create --json with a file named with byte 0xfe: valid" valid oddf "$W" create -q --json --base "$T/g/base" \
  --finetuned "$T/g/ft" -o "$T/oddf.wdelta"
check "create --json: that file is listed as left out, its byte as U+FFFD" has oddf \
  '"odd\ufffd.txt" in d["inputs"]["left_out_skipped"]'

check "--version names the format versions read and written" \
  bash -c '"$1" --version | grep -q "reads versions 1 (deltatensors) to 2, writes version 2"' _ "$W"
finish
