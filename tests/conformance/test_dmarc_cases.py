#!/usr/bin/python3
"""DMARC evaluation cases (tests/conformance/dmarc-cases.yml) through the
DMARC module and our resolver.

For each scenario: its zonedata goes to tests/lib/testdns.py on a loopback
port (the same JSON zone format: the YAML entries map 1:1), its cases to a
tab-separated case file, and the unit-test binary evaluates them:

    test_checks_dmarc --cases FILE.tsv --dns 127.0.0.1@PORT

which prints one line per case (id, result, policy, disposition,
policy_domain, org_domain, spf_aligned, dkim_aligned, testing, reason).
This driver compares them with `expected` and prints "N passed, N failed".

Until the engine evaluates DMARC, the binary is the module's own test
program; the plan is to switch to `mailwarden check --json` (its `dmarc`
object: result, policy, disposition, domain, org_domain, alignment, override).

Environment: MW_DMARC_TOOL (the binary; default MW_BUILD_DIR/tests/
test_checks_dmarc), MW_SOURCE_DIR, MW_DMARC_VERBOSE=1 (print every case),
MW_DMARC_ONLY=ID (one case).  Exit 0 pass, 1 fail, 77 skip.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("MW_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
CASES = os.path.join(HERE, "dmarc-cases.yml")
TESTDNS = os.path.join(SRC, "tests", "lib", "testdns.py")
VERBOSE = os.environ.get("MW_DMARC_VERBOSE") == "1"
ONLY = os.environ.get("MW_DMARC_ONLY")
FIELDS = ["result", "policy", "disposition", "policy_domain", "org_domain", "spf_aligned",
          "dkim_aligned", "testing", "reason"]


def skip(msg):
    print("SKIP: %s" % msg)
    sys.exit(77)


def find_tool():
    t = os.environ.get("MW_DMARC_TOOL")
    if not t:
        build = os.environ.get("MW_BUILD_DIR")
        if not build:
            skip("set MW_DMARC_TOOL or MW_BUILD_DIR")
        t = os.path.join(build, "tests", "test_checks_dmarc")
    if not os.access(t, os.X_OK):
        skip("no DMARC test binary at %s" % t)
    return t


class DNS:
    def __init__(self, workdir, zone):
        self.zonefile = os.path.join(workdir, "zone.json")
        self.portfile = os.path.join(workdir, "port")
        with open(self.zonefile, "w", encoding="utf-8") as f:
            json.dump(zone, f)
        if os.path.exists(self.portfile):
            os.unlink(self.portfile)
        self.proc = subprocess.Popen(["/usr/bin/python3", TESTDNS, "--port", "0", "--portfile",
                                      self.portfile, "--zone", self.zonefile],
                                     stderr=subprocess.PIPE)
        for _ in range(500):
            if os.path.exists(self.portfile):
                with open(self.portfile) as f:
                    txt = f.read().strip()
                if txt:
                    self.port = int(txt)
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("testdns.py exited: %s" % self.proc.stderr.read().decode())
            time.sleep(0.02)
        raise RuntimeError("testdns.py did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def field(v):
    if v is None or v == "":
        return "-"
    s = str(v)
    if "\t" in s or "\n" in s:
        raise ValueError("tab or newline in %r" % s)
    return s


def case_line(cid, c):
    mailfrom = c.get("mailfrom")
    spf_domain = mailfrom.rsplit("@", 1)[-1] if mailfrom else None
    dkim = ",".join("%s:%s" % (s["d"], s.get("result", "pass")) for s in c.get("dkim") or [])
    return "\t".join([field(cid), field(c.get("mode", "rfc9989")), field(c.get("header_from")),
                      field(spf_domain), field(c.get("spf") if spf_domain else None),
                      field(dkim), field(c.get("pct_sample", 0))])


def judge(exp, got):
    """List of mismatch descriptions (empty: pass)."""
    bad = []
    for k, v in exp.items():
        if k not in FIELDS:
            bad.append("unknown expected field %s" % k)
            continue
        want = "-" if v is None else str(v)
        if got.get(k) != want:
            bad.append("%s: expected %s, got %s" % (k, want, got.get(k)))
    return bad


def run_scenario(tool, workdir, sc):
    tests = sc.get("tests") or {}
    ids = [i for i in tests if not ONLY or i == ONLY]
    if not ids:
        return 0, 0
    dns = DNS(workdir, sc.get("zonedata") or {})
    try:
        cfile = os.path.join(workdir, "cases.tsv")
        with open(cfile, "w", encoding="utf-8") as f:
            for cid in ids:
                f.write(case_line(cid, tests[cid]) + "\n")
        out = subprocess.run([tool, "--cases", cfile, "--dns", "127.0.0.1@%d" % dns.port],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    finally:
        dns.stop()
    if out.returncode != 0:
        print("FAIL scenario %r: tool exited %d: %s" % (sc.get("description"), out.returncode,
                                                        out.stderr.decode(errors="replace")))
        return 0, len(ids)
    got = {}
    for line in out.stdout.decode("utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        got[parts[0]] = dict(zip(FIELDS, parts[1:]))
    passed = failed = 0
    for cid in ids:
        g = got.get(cid)
        bad = ["no output"] if g is None else judge(tests[cid].get("expected") or {}, g)
        if bad:
            failed += 1
            print("FAIL %s: %s" % (cid, "; ".join(bad)))
            if g:
                print("     reason: %s" % g.get("reason"))
        else:
            passed += 1
            if VERBOSE:
                print("ok   %s: %s" % (cid, g.get("reason")))
    return passed, failed


def main():
    try:
        import yaml
    except ImportError:
        skip("python3-yaml missing")
    try:
        import dnslib  # noqa: F401  (testdns.py needs it)
    except ImportError:
        skip("python3-dnslib missing")
    tool = find_tool()
    with open(CASES, encoding="utf-8") as f:
        scenarios = [s for s in yaml.safe_load_all(f) if s]
    ids = [i for s in scenarios for i in (s.get("tests") or {})]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        print("FAIL: duplicate case ids: %s" % ", ".join(sorted(dup)))
        print("0 passed, %d failed" % len(dup))
        return 1
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="mw-dmarc-cases-") as workdir:
        for sc in scenarios:
            p, f = run_scenario(tool, workdir, sc)
            passed += p
            failed += f
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
