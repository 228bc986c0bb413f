#!/usr/bin/python3
"""The ValiMail ARC test suite through mailwarden's ARC module.

Runs every scenario of ../shared/conformance/arc-test-suite/
arc-draft-validation-tests.yml (171 tests) and arc-draft-sign-tests.yml
(17 tests) through tests/conformance/arc_tool.c (filter/checks/arc.c linked
from mw_checks, its key lookups through mw_dns), with tests/lib/testdns.py
serving each scenario's txt-records on a loopback port.

Validation: the chain status (none/pass/fail) is compared with the case's
`cv`.  Three cases expect "" (cv_fail_i1_as_cv_fail, cv_fail_i2_as1_fail,
cv_fail_i2_as2_fail): the suite's reference runner printed nothing for a chain
in which a seal already says cv=fail; RFC 8617 section 5.2 (steps 2 and 3)
makes that chain "fail", which is what we must answer.

Signing: the scenario's private key goes into a key table (0600 file), the
case's sig-headers become dkim.sign_headers (no oversigning), and the A-R
fields of the case's srv-id are consolidated into our A-R value the way the
suite's SCHEMA-README ("AR Consolidation") describes.  The chain status comes
from our own verifier (and must equal the arc= stamp in that A-R).  The
AAR, AMS and AS we produce are compared tag by tag, with all whitespace
removed, to the case's: every tag, b= and bh= included, must be equal byte
for byte.  A case whose expected fields are empty expects no new set.

Expected failures: tests/conformance/arc-expected-failures.txt, lines
"SUITE:ID reason" (SUITE is validation or sign).  A listed case that fails is
accepted; a listed case that PASSES fails the test, so the list stays honest.

Environment: MW_BUILD_DIR (arc_tool is MW_BUILD_DIR/tests/arc_tool),
MW_SOURCE_DIR (default: two levels up), MW_ARC_VERBOSE=1 (print the tool
output of failing cases), MW_ARC_JOBS (parallel cases, default 2).
Exit: 0 pass, 1 fail, 77 skip (../shared, the tool or python3-yaml missing).
"""

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("MW_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
SUITE_DIR = os.path.join(os.path.dirname(os.path.abspath(SRC)), "shared", "conformance",
                         "arc-test-suite")
TESTDNS = os.path.join(SRC, "tests", "lib", "testdns.py")
XFAIL_FILE = os.path.join(HERE, "arc-expected-failures.txt")
VERBOSE = os.environ.get("MW_ARC_VERBOSE") == "1"
JOBS = int(os.environ.get("MW_ARC_JOBS", "2"))


def skip(msg):
    print("SKIP: %s" % msg)
    sys.exit(77)


def find_tool():
    b = os.environ.get("MW_BUILD_DIR")
    cands = [os.path.join(b, "tests", "arc_tool")] if b else []
    cands.append(os.path.join(SRC, "build", "tests", "arc_tool"))
    for c in cands:
        if os.access(c, os.X_OK):
            return c
    skip("no arc_tool binary (build the tests; set MW_BUILD_DIR)")


def load_xfail():
    out = {}
    if os.path.exists(XFAIL_FILE):
        with open(XFAIL_FILE, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key, _, reason = line.partition(" ")
                if not reason.strip():
                    print("%s:%d: a reason is required" % (XFAIL_FILE, n))
                    sys.exit(1)
                out[key] = reason.strip()
    return out


class DNS:
    """tests/lib/testdns.py serving one scenario's key records."""

    def __init__(self, records, tmp):
        self.dir = tempfile.mkdtemp(dir=tmp)
        zone = {name: [{"TXT": str(text)}] for name, text in (records or {}).items()}
        self.zone = os.path.join(self.dir, "zone.json")
        with open(self.zone, "w") as f:
            json.dump(zone, f)
        portfile = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen(["/usr/bin/python3", TESTDNS, "--port", "0", "--portfile",
                                      portfile, "--zone", self.zone],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(portfile):
                with open(portfile) as f:
                    p = f.read().strip()
                if p:
                    self.addr = "127.0.0.1@" + p
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("testdns.py exited: %s" % self.proc.stderr.read().decode())
            time.sleep(0.05)
        raise RuntimeError("testdns.py did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def parse_out(text):
    out = {}
    for line in text.split("\n"):
        if line == "--- headers":
            break
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def tags(value):
    """Tag list -> {name: value}, all whitespace removed (None for empty text)."""
    v = re.sub(r"\s+", "", value or "")
    if not v:
        return None
    out = {}
    for spec in v.strip(";").split(";"):
        k, _, val = spec.partition("=")
        out[k] = val
    return out


def consolidate(message, srv_id):
    """SCHEMA-README "AR Consolidation": our A-R value from the srv-id's A-R fields."""
    head = message.split("\n\n", 1)[0]
    fields, cur = [], None
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and cur is not None:
            cur[1] += "\n" + line
        else:
            name, _, val = line.partition(":")
            cur = [name, val]
            fields.append(cur)
    results = []
    for name, val in fields:
        if name.strip().lower() != "authentication-results":
            continue
        val = val.strip()
        if not val.startswith(srv_id + ";"):
            continue
        for r in val[len(srv_id) + 1:].split(";"):
            r = " ".join(r.split())
            if r:
                results.append(r)
    return srv_id + "; " + ";\n\t".join(results)


def run_tool(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def validation_case(tool, dns, tmp, name, case):
    msgf = os.path.join(tmp, "v-%s.eml" % name)
    with open(msgf, "w", encoding="utf-8") as f:
        f.write(case["message"])
    rc, out, err = run_tool([tool, "verify", dns.addr, msgf])
    if rc != 0:
        return False, "arc_tool exit %d: %s" % (rc, err.strip()), out
    got = parse_out(out)
    want = (case.get("cv") or "fail").lower()
    ok = got.get("result") == want
    return ok, "cv %s, got %s (%s)" % (want, got.get("result"), got.get("reason")), out


def sign_case(tool, dns, tmp, sc, name, case):
    d = tempfile.mkdtemp(dir=tmp)
    keyf = os.path.join(d, "key.pem")
    with open(keyf, "w") as f:
        f.write(sc["privatekey"])
    os.chmod(keyf, 0o600)
    hdrs = ", ".join('"%s"' % h.strip() for h in str(case["sig-headers"]).split(":"))
    conf = os.path.join(d, "mw.conf")
    with open(conf, "w") as f:
        f.write('dkim = {\n  keys = ( { name = "k"; domain = "%s"; selector = "%s"; file = "%s"; } );\n'
                '  sign_headers = [ %s ];\n  oversign_headers = [ ];\n};\n'
                % (sc["domain"], sc["sel"], keyf, hdrs))
    msgf = os.path.join(d, "msg.eml")
    with open(msgf, "w", encoding="utf-8") as f:
        f.write(case["message"])
    arf = os.path.join(d, "ar.txt")
    ar = consolidate(case["message"], str(case["srv-id"]))
    with open(arf, "w", encoding="utf-8") as f:
        f.write(ar)
    rc, out, err = run_tool([tool, "seal", dns.addr, msgf, conf, "k", arf, str(case["t"])])
    if rc != 0:
        return False, "arc_tool exit %d: %s" % (rc, err.strip()), out
    got = parse_out(out)
    stamp = re.search(r"\barc=(\w+)", ar)
    if stamp and stamp.group(1).lower() != got.get("result"):
        return False, "our chain status %s differs from the suite's stamp arc=%s (%s)" % (
            got.get("result"), stamp.group(1), got.get("reason")), out
    want = {k: tags(case.get(k)) for k in ("AAR", "AMS", "AS")}
    if want["AS"] is None:
        ok = got.get("sealed") == "0"
        return ok, "expected no new set, got %s" % (
            "none (%s)" % got.get("why") if ok else "one"), out
    if got.get("sealed") != "1":
        return False, "not sealed: %s" % got.get("why"), out
    diffs = []
    for k in ("AAR", "AMS", "AS"):
        g = tags(got.get(k))
        if k == "AAR":
            g = re.sub(r"\s+", "", got.get(k) or "")
            w = re.sub(r"\s+", "", case.get(k) or "")
            if g != w:
                diffs.append("AAR differs: %s != %s" % (g, w))
            continue
        for t in sorted(set(want[k]) | set(g or {})):
            if (g or {}).get(t) != want[k].get(t):
                diffs.append("%s %s=: got %s, want %s" % (k, t, (g or {}).get(t), want[k].get(t)))
    return not diffs, "; ".join(diffs) or "ok", out


def main():
    try:
        import yaml
    except ImportError:
        skip("python3-yaml is not installed")
    if not os.path.isdir(SUITE_DIR):
        skip("%s is absent (../shared relative to the source root)" % SUITE_DIR)
    tool = find_tool()
    xfail = load_xfail()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mw-arc-suite-") as tmp:
        for suite, fname in (("validation", "arc-draft-validation-tests.yml"),
                             ("sign", "arc-draft-sign-tests.yml")):
            with open(os.path.join(SUITE_DIR, fname), encoding="utf-8") as f:
                scenarios = list(yaml.safe_load_all(f))
            for sc in scenarios:
                if not sc:
                    continue
                dns = DNS(sc.get("txt-records") or sc.get("txt_records"), tmp)
                try:
                    with concurrent.futures.ThreadPoolExecutor(JOBS) as ex:
                        futs = {}
                        for name, case in sc["tests"].items():
                            if suite == "validation":
                                fut = ex.submit(validation_case, tool, dns, tmp, name, case)
                            else:
                                fut = ex.submit(sign_case, tool, dns, tmp, sc, name, case)
                            futs[fut] = "%s:%s" % (suite, name)
                        for fut, key in futs.items():
                            results[key] = fut.result()
                finally:
                    dns.stop()
    bad = []
    counts = {"validation": [0, 0], "sign": [0, 0]}
    for key, (ok, why, out) in sorted(results.items()):
        suite = key.split(":")[0]
        counts[suite][1] += 1
        counts[suite][0] += ok
        if ok and key in xfail:
            bad.append("%s: listed as an expected failure but passes" % key)
        elif not ok and key not in xfail:
            bad.append("%s: %s" % (key, why))
            if VERBOSE:
                print(out)
        elif not ok:
            print("expected failure %s: %s [%s]" % (key, why, xfail[key]))
    for key in xfail:
        if key not in results:
            bad.append("%s: listed as an expected failure but not in the suite" % key)
    for suite, (p, n) in counts.items():
        print("%s: %d of %d passed" % (suite, p, n))
    for b in bad:
        print("FAIL " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
