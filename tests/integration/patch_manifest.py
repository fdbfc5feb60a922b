#!/usr/bin/env python3
"""patch_manifest.py IN OUT KEY=JSON...: copy the .wdelta v2 file IN to OUT
with top-level manifest keys set (KEY=null removes KEY), the footer's
offsets and SHA-256 written again, so OUT opens as a valid file that claims
whatever the keys say (a crafted parent, a file of an older writer).
A compressed manifest (preamble flag bit 0) is expanded with the zstd
program and written back as plain JSON with the flag cleared (both forms
are valid).  Standard library + zstd(1); layout in core/FORMAT.md."""
import hashlib
import json
import struct
import subprocess
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    data = open(src, "rb").read()
    foot = data[-88:]
    moff, mlen, toff, nb, size = struct.unpack("<5Q", foot[:40])
    assert foot[80:88] == b"wdv2end\0" and size == len(data)
    flags = struct.unpack("<I", data[11:15])[0]
    raw = data[moff:moff + mlen]
    if flags & 1:
        raw = subprocess.run(["zstd", "-dc"], input=raw, stdout=subprocess.PIPE, check=True).stdout
        data = data[:11] + struct.pack("<I", flags & ~1) + data[15:]
    man = json.loads(raw)
    for kv in sys.argv[3:]:
        k, v = kv.split("=", 1)
        v = json.loads(v)
        if v is None:
            man.pop(k, None)
        else:
            man[k] = v
    text = json.dumps(man, separators=(",", ":")).encode()
    table = data[toff:toff + 32 * nb]
    ntoff = moff + len(text)
    nsize = ntoff + len(table) + 88
    head = struct.pack("<5Q", moff, len(text), ntoff, nb, nsize)
    digest = hashlib.sha256(text + table + head).digest()
    out = data[:moff] + text + table + head + digest + b"\0" * 8 + b"wdv2end\0"
    assert len(out) == nsize
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main()
