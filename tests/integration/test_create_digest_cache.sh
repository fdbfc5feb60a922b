#!/bin/bash
# wdelta create takes its base's hashes from the digest cache the mount and
# find-base keep (issue 18: a base hashed once, not once per delta):
#  - a first create of a base whose files are older than the racy window
#    stores its digest (the identity `wdelta hash` prints), a second reads it
#    (shown by a cache entry edited to another value: the delta records it),
#    and both deltas are byte-identical;
#  - a shard rewritten in place with its size and mtime put back (as cp -p,
#    rsync -t do) is a miss (its change time is in the key): the delta
#    records the new hash; the entry is not replaced while the shard's change
#    is under 2 s old (a hash of a file changed within one timestamp tick
#    may not be the hash of what its stat describes), and is replaced later.
# The cache: /var/cache/wdeltafs for root, else $XDG_CACHE_HOME/wdeltafs (set
# here to the test's directory); the entries of this test's directories are
# removed at exit.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_bins wdelta genmodel
require_python
setup_tmp wdcreatecache
W=$WDELTA
if [ "$(id -u)" = 0 ]; then CD=/var/cache/wdeltafs; else export XDG_CACHE_HOME="$T/xdg"; CD="$XDG_CACHE_HOME/wdeltafs"; fi
B=$(cd "$T" && pwd -P)/g/base
at_exit 'for f in "$CD"/base-*.digest; do [ -f "$f" ] && head -n 1 "$f" | grep -q "^$B|" && rm -f "$f"; done'
entry() { local f; for f in "$CD"/base-*.digest; do [ -f "$f" ] && head -n 1 "$f" | grep -q "^$B|" && echo "$f"; done; }
base_hash() { "$W" inspect --json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["base_hash"])'; }

gen_pair "$T/g" --params 300k --shards 2 --seed 21 || die "genmodel failed"
sleep 3 # the base's files older than the racy window
ID=$("$W" hash "$T/g/base") || die "wdelta hash failed"
ID=${ID%% *}

create_delta "$T/g/base" "$T/g/ft" "$T/d1.wdelta" || die "create failed"
E=$(entry)
check "first create: the base's digest stored (one entry, the identity wdelta hash prints)" \
  bash -c '[ -n "$1" ] && [ "$(echo "$1" | wc -l)" = 1 ] && [ "$(sed -n 2p "$1")" = "$2" ]' _ "$E" "$ID"
check "first create: the delta records that identity" [ "$(base_hash "$T/d1.wdelta")" = "$ID" ]
create_delta "$T/g/base" "$T/g/ft" "$T/d2.wdelta" || die "create failed"
check "second create (from the cache): byte-identical delta" cmp -s "$T/d1.wdelta" "$T/d2.wdelta"
FAKE=$(printf 'ab%.0s' $(seq 32))
cp "$E" "$T/entry.saved"
sed -i "2s/.*/$FAKE/" "$E"
create_delta "$T/g/base" "$T/g/ft" "$T/d3.wdelta" || die "create failed"
check "second create reads the cache (an edited entry's identity is what it records)" \
  [ "$(base_hash "$T/d3.wdelta")" = "$FAKE" ]
cp "$T/entry.saved" "$E"

# a shard changed in place, its size and mtime put back
S=$(ls "$T/g/base"/*.safetensors | tail -n 1)
"$PY" - "$S" <<'EOF' || die "rewriting the shard failed"
import os, sys
p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    f.seek(st.st_size - 2)
    b = f.read(2)
    f.seek(st.st_size - 2)
    f.write(bytes([b[0] ^ 0x01, b[1]]))
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
st2 = os.stat(p)
assert st2.st_size == st.st_size and st2.st_mtime_ns == st.st_mtime_ns
EOF
ID2=$("$W" hash "$T/g/base") || die "wdelta hash failed"
ID2=${ID2%% *}
create_delta "$T/g/base" "$T/g/ft" "$T/d4.wdelta" || die "create failed"
check "shard rewritten with its old size and mtime: hashed again (new identity recorded)" \
  bash -c '[ "$1" != "$2" ] && [ "$(cat "$3")" = "$1" ]' _ "$ID2" "$ID" <(base_hash "$T/d4.wdelta")
check "... its entry not replaced while the change is under 2 s old" cmp -s "$E" "$T/entry.saved"
sleep 3
create_delta "$T/g/base" "$T/g/ft" "$T/d5.wdelta" || die "create failed"
check "... and replaced later (the new identity), the delta the same" \
  bash -c '[ "$(sed -n 2p "$1")" = "$2" ] && cmp -s "$3" "$4"' _ "$(entry)" "$ID2" "$T/d4.wdelta" "$T/d5.wdelta"
"$W" apply "$T/d5.wdelta" --base "$T/g/base" -o "$T/out" >/dev/null 2>&1
check "the delta made from the cached hash applies to the base (result verified)" same_model "$T/out" "$T/g/ft"
finish
