#!/usr/bin/python3
"""test_fuzz_short.py - build every libFuzzer target (tests/fuzz/build.sh) and
run each briefly (tests/fuzz/run-short.sh, FUZZ_SECONDS, default 20 s).

Exit 0: every target ran clean; 1: a crash, leak, timeout or failed build
(the log names the input, kept under FUZZ_OUT); 77: clang or libFuzzer is
missing.  The last line is "N passed, N failed".
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    cc = os.environ.get("CC", "clang")
    if shutil.which(cc) is None:
        print("clang not found: skipping the fuzz run")
        print("0 passed, 0 failed")
        return 77
    env = dict(os.environ)
    env.setdefault("FUZZ_SECONDS", "20")
    build_dir = os.environ.get("MW_BUILD_DIR")
    # keep the fuzz build next to the test build when ctest runs us
    env.setdefault("FUZZ_BUILD", os.path.join(build_dir, "fuzz") if build_dir else "/tmp/mw-fuzz-build")
    env.setdefault("FUZZ_OUT", os.path.join(build_dir, "fuzz-out") if build_dir else "/tmp/mw-fuzz-out")
    # the sanitizers of the surrounding (ASan) test run must not leak into ours
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        env.pop(k, None)
    p = subprocess.run(["sh", os.path.join(HERE, "run-short.sh")], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.rstrip("\n").split("\n")
    summary = out[-1] if out else ""
    for line in out[:-1]:
        print(line)
    if p.returncode == 77:
        print("clang/libFuzzer missing: skipped")
        print("0 passed, 0 failed")
        return 77
    passed = failed = 0
    try:
        parts = summary.replace(",", "").split()
        passed, failed = int(parts[0]), int(parts[2])
    except (IndexError, ValueError):
        print("unexpected output from run-short.sh: %r" % summary)
        failed = max(1, failed)
    if p.returncode != 0 and failed == 0:
        failed = 1
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and p.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
