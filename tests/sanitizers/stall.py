#!/usr/bin/python3
"""stall.py - run a test program while freezing it now and then, to find
assertions that race the clock.

Usage: stall.py [--pause MS] [--gap MS] [--seed N] [--oversleep MS] -- PROGRAM [ARGS...]

The program runs normally, but at random moments (every 0..GAP ms, default
700) it is stopped with SIGSTOP for PAUSE ms (default 1500) and continued:
what a loaded CI machine or a sanitizer does to a test, only worse and on
purpose.  Only the program's own process is frozen (all its threads); the
helpers it started (a test DNS server, redis-server) keep running, as they
would on a busy machine.

A test that asserts "still cached after sleeping 1.3 s of a 2 s TTL" or "the
timeout took less than 1.5 s" fails here within a few runs; a test whose
assertions depend only on events, counts, a fake clock or very generous
bounds passes.  The exit status is the program's (128 + signal if killed).

Freezes land where the program spends its time, mostly in its own sleeps,
so they rarely split a put from the get right after it.  --oversleep MS
also makes every sleep of 100 ms or more last MS longer (oversleep.c,
built on first use with cc; not for sanitizer builds): deterministic for
"still there after sleeping X" assertions.  --pause 0 disables freezes.

Example: tests/sanitizers/stall.py -- build/tests/unit/test_core_dns_cache
"""
import argparse
import os
import shutil
import random
import signal
import subprocess
import sys
import time


def oversleep_lib():
    """Build oversleep.c next to nothing shared: in /tmp, per user."""
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(here, "oversleep.c")
    lib = f"/tmp/mw-oversleep-{os.getuid()}.so"
    if not os.path.exists(lib) or os.path.getmtime(lib) < os.path.getmtime(src):
        cc = shutil.which("cc") or "gcc"
        tmp = lib + f".{os.getpid()}"
        subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", tmp, src, "-ldl"], check=True)
        os.replace(tmp, lib)
    return lib


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pause", type=int, default=1500, help="ms frozen each time")
    ap.add_argument("--gap", type=int, default=700, help="max ms between freezes")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--oversleep", type=int, default=0, help="ms added to each sleep >= 100 ms")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no program given")
    seed = a.seed if a.seed is not None else int(time.time() * 1000) & 0xFFFFFFFF
    rnd = random.Random(seed)
    sys.stderr.write(f"stall.py: seed {seed}, pauses of {a.pause} ms every 0..{a.gap} ms\n")
    env = None
    if a.oversleep > 0:
        env = dict(os.environ, LD_PRELOAD=oversleep_lib(), MW_OVERSLEEP_MS=str(a.oversleep))
    p = subprocess.Popen(cmd, env=env)
    stalls = 0
    try:
        while True:
            try:
                p.wait(timeout=rnd.uniform(0, a.gap) / 1000.0)
                break
            except subprocess.TimeoutExpired:
                pass
            if a.pause <= 0:
                continue
            try:
                os.kill(p.pid, signal.SIGSTOP)
                time.sleep(a.pause / 1000.0)
                os.kill(p.pid, signal.SIGCONT)
                stalls += 1
            except ProcessLookupError:
                break
    finally:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        rc = p.wait()
    sys.stderr.write(f"stall.py: {stalls} stalls, exit {rc}\n")
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
