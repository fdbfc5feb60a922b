#!/usr/bin/env python3
"""Random-read check of files served by wdeltafs against the originals.

usage: randread.py [--reads N] [--threads T] [--seed S] [--max-len BYTES]
                   VIRTUAL ORIGINAL [VIRTUAL ORIGINAL ...]

Every worker thread opens each pair once and issues os.pread(fd, length,
offset) on both files with random (file, offset, length) triples; offsets are
spread over the whole file, some lengths cross the end of file (to check short
reads), some start at block-ish boundaries.  Prints the counts and exits 1 on
any mismatch or error (the first few are described), 0 otherwise.  Standard
library only.
"""
import argparse
import os
import random
import sys
import threading


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=3 << 20)
    ap.add_argument("pairs", nargs="+")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        ap.error("VIRTUAL ORIGINAL arguments must come in pairs")
    pairs = [(a.pairs[i], a.pairs[i + 1]) for i in range(0, len(a.pairs), 2)]
    sizes = []
    for v, o in pairs:
        sv, so = os.stat(v).st_size, os.stat(o).st_size
        if sv != so:
            print(f"randread: size differs: {v} {sv} vs {o} {so}")
            return 1
        sizes.append(so)

    lock = threading.Lock()
    counts = {"reads": 0, "bytes": 0, "mismatch": 0, "error": 0, "short": 0}
    problems = []

    def note(kind, msg):
        with lock:
            counts[kind] += 1
            if len(problems) < 10:
                problems.append(msg)

    def worker(tid, nreads):
        rng = random.Random(a.seed * 1000 + tid)
        fds = []
        try:
            for v, o in pairs:
                fds.append((os.open(v, os.O_RDONLY), os.open(o, os.O_RDONLY)))
        except OSError as e:
            note("error", f"thread {tid}: open: {e}")
            for fv, fo in fds:
                os.close(fv)
                os.close(fo)
            return
        nb = 0
        try:
            for _ in range(nreads):
                i = rng.randrange(len(pairs))
                size = sizes[i]
                r = rng.random()
                if r < 0.6:
                    ln = rng.randint(1, 65536)
                elif r < 0.9:
                    ln = rng.randint(1, a.max_len)
                else:
                    ln = rng.randint(1, 16)
                kind = rng.random()
                if kind < 0.1 and size > 0:
                    off = max(0, size - rng.randint(0, ln))      # crosses EOF
                elif kind < 0.25:
                    blk = 1 << 20
                    off = (rng.randrange(size // blk + 1)) * blk + rng.randint(-8, 8)
                    off = min(max(off, 0), size)
                else:
                    off = rng.randrange(size + 1) if size else 0
                fv, fo = fds[i]
                try:
                    got = os.pread(fv, ln, off)
                except OSError as e:
                    note("error", f"pread({pairs[i][0]}, off={off}, len={ln}): {e}")
                    continue
                want = os.pread(fo, ln, off)
                nb += len(got)
                if got != want:
                    first = next((k for k in range(min(len(got), len(want)))
                                  if got[k] != want[k]), min(len(got), len(want)))
                    note("mismatch", f"{pairs[i][0]} off={off} len={ln}: got {len(got)} bytes, "
                         f"want {len(want)}, first difference at +{first}")
                elif len(got) < ln:
                    with lock:
                        counts["short"] += 1
        finally:
            for fv, fo in fds:
                os.close(fv)
                os.close(fo)
            with lock:
                counts["reads"] += nreads
                counts["bytes"] += nb

    per = [a.reads // a.threads + (1 if t < a.reads % a.threads else 0) for t in range(a.threads)]
    ths = [threading.Thread(target=worker, args=(t, per[t])) for t in range(a.threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    print(f"randread: {counts['reads']} reads from {a.threads} threads over {len(pairs)} file(s), "
          f"{counts['bytes'] / 1e6:.1f} MB, {counts['short']} short at EOF, "
          f"{counts['mismatch']} mismatches, {counts['error']} errors")
    for p in problems:
        print("randread:   " + p)
    return 1 if counts["mismatch"] or counts["error"] or counts["reads"] != a.reads else 0


if __name__ == "__main__":
    sys.exit(main())
