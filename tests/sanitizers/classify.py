#!/usr/bin/python3
"""classify.py REPORT_FILE... - split sanitizer log files (log_path output of
ASan/LSan/UBSan/TSan) into single reports and decide for each whether
mailwarden code is involved.

A report is "ours" when a frame of one of its access stacks is in mailwarden
(a source path under filter/, tests/, or a frame in the mailwarden binary or
a test program).  Stacks that only say where a thread or mutex was created
do not count: a race between two threads of an uninstrumented library (e.g.
libunbound's worker thread tearing itself down at exit) is "third-party" even
though our main() started that thread.  Third-party reports are printed
but not counted.  Exit status: number of "ours" reports (at most 100).
"""
import re
import sys

START = re.compile(r"^(==\d+==\s*)?(WARNING: ThreadSanitizer|ERROR: (AddressSanitizer|LeakSanitizer)|"
                   r".*runtime error:)")
CREATION = re.compile(r"^\s+(Thread T\d+ .*created by|Mutex M\d+ .*created at|.*is already destroyed|"
                      r"Location is)")
FRAME = re.compile(r"^\s+#\d+ ")
OURS = re.compile(r"/filter/|/tests/|\(mailwarden\+|\(test_[a-z_]+\+|\(fuzz_[a-z_]+\+|\bmw_[a-z_]+\b")


def reports(text):
    cur = []
    for line in text.splitlines():
        if START.match(line) and cur:
            yield cur
            cur = []
        cur.append(line)
    if cur and any(START.match(l) for l in cur):
        yield cur


def ours(rep):
    in_creation = False
    for line in rep:
        if CREATION.match(line):
            in_creation = True
            continue
        if not line.strip():
            in_creation = False
            continue
        if FRAME.match(line):
            if not in_creation and OURS.search(line):
                return True
        elif line.startswith("  ") and not line.startswith("    "):
            in_creation = False   # a new section header ("  Previous write of ...")
    return False


def main():
    n_ours = n_third = 0
    for path in sys.argv[1:]:
        with open(path, errors="replace") as f:
            text = f.read()
        for rep in reports(text):
            if not any(START.match(l) for l in rep):
                continue
            verdict = ours(rep)
            n_ours += verdict
            n_third += not verdict
            print("--- %s report in %s:" % ("OUR" if verdict else "third-party (not counted)", path))
            print("\n".join(rep[:70]))
    print("=== %d report(s) involving mailwarden code, %d third-party" % (n_ours, n_third))
    return min(n_ours, 100)


if __name__ == "__main__":
    sys.exit(main())
