#!/usr/bin/env python3
"""Stress readers for a mounted wdeltafs, byte-compared with the originals.

usage:
  stress.py run --mnt MNT --model NAME=FTDIR[:BASEDIR] [--model ...]
                [--seconds S] [--threads T] [--seq-threads N] [--seed S]
                [--daemon-pid PID] [--cache-size BYTES] --results FILE
  stress.py report --results FILE [--rss-slack-mb MB] [--daemon-rc RC]
                   [--daemon-log LOG] [--title TEXT]

`run` starts T reader threads (the first N stream whole files, the others
issue random preads) over every file of every model directory MNT/NAME, for
S seconds.  Every byte read from the mount is compared with the same range
of FTDIR/<file> (or BASEDIR/<file> for a non-weight file the fine-tune lacks):
  - streamers open a file chosen at random (weighted by size), drop its page
    cache (posix_fadvise DONTNEED, so the daemon serves it rather than the
    kernel's page cache), read it to EOF with 1 MiB os.read calls and check
    the total length;
  - random readers pread (offset, length) triples: lengths 1..64 KiB,
    1..3 MiB or 1..16 bytes, offsets anywhere, at 1 MiB block boundaries
    +-8 or crossing EOF; before half of the reads the file's page cache is
    dropped; now and then a file is closed and opened again.
At the end it reads VmHWM of the daemon from /proc/PID/status (before the
caller unmounts) and the cache counters from MNT/.wdeltafs/status, and writes
the counts as JSON to FILE.  Exit 0 unless it could not run at all.

`report` (after the caller has unmounted) adds the daemon's exit status and
the sanitizer reports found in its log, prints a markdown table and exits 1
if a limit is broken: mismatches or errors > 0, a thread that did no read,
VmHWM >= cache_size + slack, daemon exit status != 0, a sanitizer report.
Standard library only; the GIL is released in os.pread/os.read, so threads
keep the daemon busy.
"""
import argparse
import json
import os
import random
import sys
import threading
import time

MiB = 1 << 20


def vm_field(pid, field):
    """VmHWM / VmRSS of pid in bytes, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def drop_cache(fd):
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def first_diff(a, b):
    n = min(len(a), len(b))
    lo, hi = 0, n
    if a[:n] == b[:n]:
        return n
    while hi - lo > 1:  # a[:lo] equal, a[:hi] differs
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def cmd_run(a):
    files = []  # (virtual path, original path, size)
    for spec in a.model:
        name, _, dirs = spec.partition("=")
        ft, _, base = dirs.partition(":")
        vdir = os.path.join(a.mnt, name)
        try:
            # only files (lineage lives in .wdeltafs/lineage; an older daemon
            # had a `parent` symlink here)
            names = sorted(n for n in os.listdir(vdir) if not os.path.islink(os.path.join(vdir, n)))
        except OSError as e:
            print(f"stress: cannot list {vdir}: {e}", file=sys.stderr)
            return 2
        if not names:
            print(f"stress: {vdir} is empty", file=sys.stderr)
            return 2
        for n in names:
            orig = os.path.join(ft, n)
            if not os.path.exists(orig) and base:
                orig = os.path.join(base, n)
            if not os.path.isfile(orig):
                print(f"stress: {vdir}/{n} has no original in {ft} or {base}", file=sys.stderr)
                return 2
            sv, so = os.stat(os.path.join(vdir, n)).st_size, os.stat(orig).st_size
            if sv != so:
                print(f"stress: size differs: {vdir}/{n} {sv} vs {orig} {so}", file=sys.stderr)
                return 2
            files.append((os.path.join(vdir, n), orig, so))
    weights = [f[2] + 1 for f in files]
    virtual_bytes = sum(f[2] for f in files)

    lock = threading.Lock()
    c = {"seq_reads": 0, "rand_reads": 0, "seq_bytes": 0, "rand_bytes": 0,
         "streams": 0, "streams_partial": 0, "mismatches": 0, "errors": 0,
         "short_at_eof": 0, "reopens": 0}
    per_thread = [0] * a.threads
    problems = []
    stop = threading.Event()
    t_start = time.monotonic()
    deadline = t_start + a.seconds

    def note(kind, msg):
        with lock:
            c[kind] += 1
            if len(problems) < 20:
                problems.append(msg)

    def add(**kw):
        with lock:
            for k, v in kw.items():
                c[k] += v

    def streamer(tid):
        rng = random.Random(a.seed * 1000 + tid)
        while time.monotonic() < deadline and not stop.is_set():
            i = rng.choices(range(len(files)), weights)[0]
            vpath, opath, size = files[i]
            try:
                fv = os.open(vpath, os.O_RDONLY)
            except OSError as e:
                note("errors", f"open({vpath}): {e}")
                time.sleep(0.01)
                continue
            fo = os.open(opath, os.O_RDONLY)
            drop_cache(fv)
            off, nreads, complete = 0, 0, False
            try:
                while True:
                    if time.monotonic() >= deadline:
                        break
                    try:
                        got = os.read(fv, MiB)
                    except OSError as e:
                        note("errors", f"read({vpath}, at {off}, 1 MiB): {e}")
                        break
                    want = os.pread(fo, MiB, off)
                    nreads += 1
                    if got != want:
                        note("mismatches", f"stream {vpath} at {off}: got {len(got)} bytes, "
                             f"want {len(want)}, first difference at +{first_diff(got, want)}")
                        break
                    off += len(got)
                    if not got:
                        complete = True
                        break
            finally:
                os.close(fv)
                os.close(fo)
            if complete and off != size:
                note("mismatches", f"stream {vpath}: {off} bytes to EOF, want {size}")
            add(seq_reads=nreads, seq_bytes=off,
                streams=1 if complete else 0, streams_partial=0 if complete else 1)
            with lock:
                per_thread[tid] += nreads

    def random_reader(tid):
        rng = random.Random(a.seed * 1000 + tid)
        fds = {}
        reads = nbytes = 0
        try:
            while not stop.is_set():
                if reads % 16 == 0 and time.monotonic() >= deadline:
                    break
                if rng.random() < 0.9:
                    i = rng.choices(range(len(files)), weights)[0]
                else:
                    i = rng.randrange(len(files))
                vpath, opath, size = files[i]
                if i in fds and rng.random() < 0.005:
                    os.close(fds[i][0])
                    os.close(fds[i][1])
                    del fds[i]
                    add(reopens=1)
                if i not in fds:
                    try:
                        fv = os.open(vpath, os.O_RDONLY)
                    except OSError as e:
                        note("errors", f"open({vpath}): {e}")
                        time.sleep(0.01)
                        continue
                    fds[i] = (fv, os.open(opath, os.O_RDONLY))
                fv, fo = fds[i]
                r = rng.random()
                if r < 0.6:
                    ln = rng.randint(1, 65536)
                elif r < 0.9:
                    ln = rng.randint(1, 3 * MiB)
                else:
                    ln = rng.randint(1, 16)
                k = rng.random()
                if k < 0.1 and size:
                    off = max(0, size - rng.randint(0, ln))
                elif k < 0.25:
                    off = rng.randrange(size // MiB + 1) * MiB + rng.randint(-8, 8)
                    off = min(max(off, 0), size)
                else:
                    off = rng.randrange(size + 1) if size else 0
                if rng.random() < 0.5:
                    drop_cache(fv)
                reads += 1
                try:
                    got = os.pread(fv, ln, off)
                except OSError as e:
                    note("errors", f"pread({vpath}, off={off}, len={ln}): {e}")
                    continue
                want = os.pread(fo, ln, off)
                nbytes += len(got)
                if got != want:
                    note("mismatches", f"pread {vpath} off={off} len={ln}: got {len(got)} bytes, "
                         f"want {len(want)}, first difference at +{first_diff(got, want)}")
                elif len(got) < ln:
                    add(short_at_eof=1)
                if reads % 64 == 0:
                    add(rand_reads=64, rand_bytes=nbytes)
                    with lock:
                        per_thread[tid] += 64
                    nbytes = 0
        finally:
            for fv, fo in fds.values():
                os.close(fv)
                os.close(fo)
            add(rand_reads=reads % 64, rand_bytes=nbytes)
            with lock:
                per_thread[tid] += reads % 64

    def guarded(fn, tid):
        try:
            fn(tid)
        except Exception as e:  # a bug here must not look like a pass
            note("errors", f"thread {tid}: {type(e).__name__}: {e}")

    nseq = min(a.seq_threads, a.threads)
    ths = [threading.Thread(target=guarded, args=(streamer if t < nseq else random_reader, t),
                            daemon=True) for t in range(a.threads)]
    for t in ths:
        t.start()
    next_progress = t_start + a.progress
    max_rss = 0
    while any(t.is_alive() for t in ths):
        time.sleep(0.5)
        now = time.monotonic()
        if a.daemon_pid:
            rss = vm_field(a.daemon_pid, "VmRSS")
            if rss is None:
                note("errors", f"daemon {a.daemon_pid} is gone")
                stop.set()
            else:
                max_rss = max(max_rss, rss)
        if now >= next_progress:
            next_progress += a.progress
            with lock:
                s = dict(c)
            print(f"stress: {now - t_start:6.0f}s  reads {s['seq_reads'] + s['rand_reads']}  "
                  f"{(s['seq_bytes'] + s['rand_bytes']) / 1e6:.0f} MB  streams {s['streams']}  "
                  f"mismatches {s['mismatches']}  errors {s['errors']}  "
                  f"daemon RSS {rss / MiB if a.daemon_pid and rss else 0:.1f} MiB",
                  file=sys.stderr, flush=True)
        if now > deadline + a.grace:
            note("errors", f"readers still running {a.grace:.0f}s after the deadline (hung read?)")
            break
    elapsed = time.monotonic() - t_start

    res = dict(c)
    res.update(seconds=elapsed, threads=a.threads, seq_threads=nseq, models=len(a.model),
               files=len(files), virtual_bytes=virtual_bytes, cache_size=a.cache_size,
               idle_threads=sum(1 for n in per_thread if n == 0), problems=problems,
               daemon_pid=a.daemon_pid, max_sampled_rss=max_rss)
    if a.daemon_pid:
        res["vm_hwm"] = vm_field(a.daemon_pid, "VmHWM")
    try:
        with open(os.path.join(a.mnt, ".wdeltafs", "status")) as f:
            st = json.load(f)
        res["cache"] = st.get("cache", {})
        res["open_files_at_end"] = st.get("open_files")
    except (OSError, ValueError) as e:
        res["cache"] = {}
        res["status_error"] = str(e)
    with open(a.results, "w") as f:
        json.dump(res, f, indent=1)
    for p in problems:
        print("stress:   " + p, file=sys.stderr)
    return 0


def cmd_report(a):
    with open(a.results) as f:
        r = json.load(f)
    sanitizer = []
    if a.daemon_log:
        try:
            with open(a.daemon_log, errors="replace") as f:
                for line in f:
                    if ("ERROR: AddressSanitizer" in line or "ERROR: LeakSanitizer" in line
                            or "runtime error" in line or "WARNING: ThreadSanitizer" in line):
                        sanitizer.append(line.rstrip())
        except OSError as e:
            sanitizer.append(f"cannot read {a.daemon_log}: {e}")
    MB = 1e6
    cache = r.get("cache", {})
    limit_rss = r["cache_size"] + a.rss_slack_mb * MiB
    hwm = r.get("vm_hwm")
    reads = r["seq_reads"] + r["rand_reads"]
    nbytes = r["seq_bytes"] + r["rand_bytes"]
    rows = []  # (measure, value, limit, ok or None)
    rows.append(("duration", f"{r['seconds']:.0f} s", "-", None))
    rows.append(("readers (streaming / random)",
                 f"{r['threads']} ({r['seq_threads']} / {r['threads'] - r['seq_threads']})", "-", None))
    rows.append(("models / files / virtual size",
                 f"{r['models']} / {r['files']} / {r['virtual_bytes'] / MB:.1f} MB", "-", None))
    rows.append(("cache_size", f"{r['cache_size'] / MiB:.1f} MiB", "10% of virtual", None))
    rows.append(("reads (1 MiB stream reads + random preads)",
                 f"{reads} ({r['seq_reads']} + {r['rand_reads']})", "> 0", reads > 0))
    rows.append(("bytes read and compared", f"{nbytes / MB:.1f} MB ({nbytes / MB / max(r['seconds'], 1e-9):.1f} MB/s)",
                 "-", None))
    rows.append(("whole-file streams (complete / cut at the deadline)",
                 f"{r['streams']} / {r['streams_partial']}", "-", None))
    rows.append(("reader threads that did no read", str(r["idle_threads"]), "0", r["idle_threads"] == 0))
    rows.append(("mismatches", str(r["mismatches"]), "0", r["mismatches"] == 0))
    rows.append(("errors", str(r["errors"]), "0", r["errors"] == 0))
    if cache:
        rows.append(("daemon cache hits / misses / evictions",
                     f"{cache.get('hits', '?')} / {cache.get('misses', '?')} / {cache.get('evictions', '?')}",
                     "-", None))
        dec = cache.get("decoded_bytes")
        rows.append(("daemon decoded", f"{dec / MB:.1f} MB in {cache.get('decode_seconds', 0):.1f} s"
                     if isinstance(dec, (int, float)) else "?", "-", None))
    else:
        rows.append(("daemon .wdeltafs/status", r.get("status_error", "missing"), "readable", False))
    rows.append(("daemon peak RSS (VmHWM, before unmount)",
                 f"{hwm / MiB:.1f} MiB" if hwm else "unknown",
                 f"< {limit_rss / MiB:.1f} MiB", bool(hwm) and hwm < limit_rss))
    if a.daemon_rc is not None:
        rows.append(("daemon exit status after unmount", str(a.daemon_rc), "0", a.daemon_rc == 0))
    if a.daemon_log:
        rows.append(("sanitizer reports in daemon log", str(len(sanitizer)), "0", not sanitizer))

    if a.title:
        print(f"\n{a.title}\n")
    print("| measure | value | limit | ok |")
    print("| --- | ---: | --- | --- |")
    for m, v, lim, ok in rows:
        print(f"| {m} | {v} | {lim} | {'-' if ok is None else ('yes' if ok else '**NO**')} |")
    for p in r.get("problems", []):
        print("  problem: " + p)
    for s in sanitizer[:10]:
        print("  sanitizer: " + s)
    bad = [m for m, _, _, ok in rows if ok is False]
    if bad:
        print("stress: FAILED: " + "; ".join(bad))
        return 1
    print("stress: all limits met")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--mnt", required=True)
    r.add_argument("--model", action="append", required=True, help="NAME=FTDIR[:BASEDIR]")
    r.add_argument("--seconds", type=float, default=600)
    r.add_argument("--threads", type=int, default=16)
    r.add_argument("--seq-threads", type=int, default=8)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--daemon-pid", type=int, default=0)
    r.add_argument("--cache-size", type=int, default=0)
    r.add_argument("--progress", type=float, default=30, help="seconds between progress lines")
    r.add_argument("--grace", type=float, default=120, help="seconds past the deadline before giving up")
    r.add_argument("--results", required=True)
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--rss-slack-mb", type=float, default=64)
    p.add_argument("--daemon-rc", type=int)
    p.add_argument("--daemon-log")
    p.add_argument("--title")
    a = ap.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_report(a)


if __name__ == "__main__":
    sys.exit(main())
