#!/usr/bin/env python3
"""Read FILE in 1 MiB chunks (pread at aligned offsets, every chunk tried even
after an error) and compare each chunk that reads with the same range of
REF.  Prints "wrong=BYTES eio=CHUNKS ok=CHUNKS": wrong counts bytes that
were served but differ from REF (a read that fails is not wrong bytes; a
short read whose continuation fails with EIO counts as one EIO).
--hold MARKER GO: read chunk 0, create MARKER, wait (up to 120 s) until the
file GO exists, then read the rest through the same open descriptor.
usage: read_compare.py FILE REF [--hold MARKER GO]"""
import errno, os, sys, time

CHUNK = 1 << 20


def main():
    path, ref = sys.argv[1], sys.argv[2]
    hold = sys.argv[3:6] if len(sys.argv) > 3 and sys.argv[3] == "--hold" else None
    want = open(ref, "rb").read()
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    wrong = eio = ok = 0
    offsets = list(range(0, max(size, len(want)), CHUNK))
    for i, off in enumerate(offsets):
        if hold and i == 1:
            open(hold[1], "w").close()
            t0 = time.time()
            while not os.path.exists(hold[2]) and time.time() - t0 < 120:
                time.sleep(0.05)
        try:
            got = os.pread(fd, CHUNK, off)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            eio += 1
            continue
        exp = want[off:off + CHUNK]
        n = min(len(got), len(exp))
        if got[:n] != exp[:n]:
            wrong += sum(1 for a, b in zip(got[:n], exp[:n]) if a != b)
        if len(got) > len(exp):
            wrong += len(got) - len(exp)
        if len(got) < len(exp):  # the kernel returns what came before a failed part
            try:
                os.pread(fd, CHUNK, off + len(got))
                wrong += len(exp) - len(got)  # a short read that reads on: bytes missing
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
            eio += 1
            continue
        ok += 1
    os.close(fd)
    print("wrong=%d eio=%d ok=%d" % (wrong, eio, ok))


main()
