#!/usr/bin/python3
"""The openspf SPF conformance suites through mailwarden's real SPF path.

Runs ../shared/conformance/openspf-test-suite/rfc7208-tests.yml (203 tests) and
rfc4408-tests.yml (191) through `mailwarden check --json` (the daemon's engine,
its SPF module on libspf2 and its libunbound resolver), with
tests/lib/testdns.py serving each scenario's zonedata on a loopback port.

Per case: --ip HOST --helo HELO --from MAILFROM; the result compared is
spf.result (for an empty MAIL FROM that is the identity postmaster@HELO, RFC
7208 2.4), and spf.explanation when the case has an `explanation` (DEFAULT
means "no exp= text", i.e. spf.explanation is null and the reply falls back to
our default text).  A case whose expected result is a list passes on any of its
entries (a non-first entry is reported as a warning, as in pyspf's driver).

Expected failures: tests/conformance/spf-expected-failures.txt, lines
"SUITE:ID reason" (SUITE is rfc7208 or rfc4408).  A listed case that fails is
fine; a listed case that PASSES fails the test, so the list stays honest.

RFC 4408 differences: tests/conformance/spf-rfc4408-differences.txt, lines
"ID reason".  The driver compares every RFC 4408 case with the RFC 7208 case
of the same id (accepted results, explanation, inputs) and requires every
difference to be listed there with its reason, and every listed id to be an
actual difference.  A 4408 case we fail is accepted only if it is such a
listed difference and our result is what the RFC 7208 suite expects (we
implement RFC 7208), or if it is in the expected-failures file.

Environment: MW_BINARY (default: mailwarden on PATH), MW_SOURCE_DIR (default:
two levels up), MW_SPF_JOBS (parallel checks, default 4), MW_SPF_SUITE_ONLY
(rfc7208 or rfc4408), MW_SPF_VERBOSE=1 (print the trace of failing cases).
Exit: 0 pass, 1 fail, 77 skip (../shared or python3-yaml/dnslib missing).
"""

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("MW_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
SUITE_DIR = os.path.join(os.path.dirname(os.path.abspath(SRC)), "shared", "conformance",
                         "openspf-test-suite")
TESTDNS = os.path.join(SRC, "tests", "lib", "testdns.py")
XFAIL_FILE = os.path.join(HERE, "spf-expected-failures.txt")
DIFF4408_FILE = os.path.join(HERE, "spf-rfc4408-differences.txt")
SUITES = [("rfc7208", "rfc7208-tests.yml"), ("rfc4408", "rfc4408-tests.yml")]
JOBS = int(os.environ.get("MW_SPF_JOBS", "4"))
VERBOSE = os.environ.get("MW_SPF_VERBOSE") == "1"
# No-one's internal network: the daemon's default (127.0.0.0/8, ::1) would make
# the suite's loopback clients "outbound" and skip SPF.
INTERNAL = "192.0.2.255/32"


def skip(msg):
    print("SKIP: %s" % msg)
    sys.exit(77)


def find_binary():
    b = os.environ.get("MW_BINARY")
    if b:
        return b
    b = shutil.which("mailwarden")
    if b:
        return b
    skip("no mailwarden binary (set MW_BINARY)")


def load_list(path, with_suite):
    """{key: reason}; key is (suite, id) or id.  Blank lines and # comments ignored."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, reason = line.partition(" ")
            if not reason.strip():
                raise SystemExit("%s:%d: an id needs a reason" % (path, n))
            if with_suite:
                suite, sep, tid = key.partition(":")
                if not sep or suite not in dict(SUITES):
                    raise SystemExit("%s:%d: want SUITE:ID, got %r" % (path, n, key))
                key = (suite, tid)
            out[key] = reason.strip()
    return out


def zone_json(zonedata):
    """openspf zonedata -> testdns.py's JSON zone (same rules; see testdns.py)."""
    z = {}
    for name, entries in (zonedata or {}).items():
        out = z.setdefault(str(name), [])
        for e in entries or []:
            if isinstance(e, str):
                out.append(e)           # TIMEOUT
                continue
            for k, v in e.items():
                if k in ("SPF", "TXT"):
                    if isinstance(v, list):
                        v = [str(x) for x in v]
                    out.append({k: v})
                elif k == "MX":
                    out.append({"MX": [int(v[0]), str(v[1])]})
                else:
                    out.append({k: str(v)})
    return z


class DNS:
    def __init__(self, workdir, zone):
        self.dir = tempfile.mkdtemp(dir=workdir)
        self.zone = os.path.join(self.dir, "zone.json")
        with open(self.zone, "w", encoding="utf-8") as f:
            json.dump(zone, f)
        portfile = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen(["/usr/bin/python3", TESTDNS, "--port", "0", "--portfile",
                                      portfile, "--zone", self.zone],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 15
        while time.time() < deadline:
            if os.path.exists(portfile):
                with open(portfile) as f:
                    self.port = int(f.read().strip())
                return
            if self.proc.poll() is not None:
                raise RuntimeError("testdns.py exited: %s" % self.proc.stderr.read().decode())
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("testdns.py did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def write_config(path, port):
    with open(path, "w") as f:
        f.write('dns = { forwarders = [ "127.0.0.1@%d" ]; timeout = 1500; };\n' % port)
        # The HELO identity is not what the suite checks (an empty MAIL FROM
        # makes the MAIL FROM identity postmaster@HELO): skip its extra lookups.
        # spf.timeout: the total deadline; a TIMEOUT case then costs 3 s, not
        # the production 20 s (the per-query cap is 5 s, so the deadline decides).
        f.write("spf = { helo = false; timeout = 3000; };\n")
        f.write('trust = { internal_networks = [ "%s" ]; };\n' % INTERNAL)
        f.write('hostname = "receiver.mailwarden.test";\n')


def run_case(binary, conf, case):
    cmd = [binary, "check", "-c", conf, "--json", "--internal", INTERNAL,
           "--ip", str(case["host"]), "--helo", str(case.get("helo", "")),
           "--from", str(case.get("mailfrom", "")), "--rcpt", "x@y"]
    t0 = time.time()
    p = subprocess.run(cmd, input=b"Subject: spf conformance\r\n\r\nbody\r\n",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    dt = time.time() - t0
    try:
        out = json.loads(p.stdout.decode("utf-8", "replace"))
    except ValueError:
        return None, None, "exit %d, no JSON: %s" % (p.returncode, p.stderr.decode()[-500:]), dt
    spf = out.get("spf") or {}
    return spf.get("result"), spf.get("explanation"), out, dt


def judge(case, result, explanation):
    """(ok, warning)."""
    want = case["result"]
    wants = [str(w) for w in want] if isinstance(want, list) else [str(want)]
    if result not in wants:
        return False, None
    warn = None
    if result != wants[0]:
        warn = "got %s, preferred %s" % (result, wants[0])
    if "explanation" in case:
        we = case["explanation"]
        if we == "DEFAULT":
            if explanation is not None:
                return False, None
        elif explanation != we:
            return False, None
    return True, warn


def load_docs(path):
    import yaml
    with open(path, "rb") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def expectations(docs):
    """id -> case"""
    return {str(tid): c for d in docs for tid, c in (d.get("tests") or {}).items()}


def result_set(c):
    w = c["result"]
    return tuple(map(str, w)) if isinstance(w, list) else (str(w),)


def differences(cases4408, cases7208):
    """4408 id -> text of how its expectation differs from the 7208 case."""
    out = {}
    for tid, c in cases4408.items():
        d = cases7208.get(tid)
        if d is None:
            out[tid] = "not in the RFC 7208 suite"
            continue
        why = []
        if result_set(c) != result_set(d):
            why.append("result %s vs %s" % ("/".join(result_set(c)), "/".join(result_set(d))))
        if c.get("explanation") != d.get("explanation"):
            why.append("explanation %r vs %r" % (c.get("explanation"), d.get("explanation")))
        for k in ("host", "helo", "mailfrom"):
            if str(c.get(k)) != str(d.get(k)):
                why.append("%s %r vs %r" % (k, c.get(k), d.get(k)))
        if why:
            out[tid] = "; ".join(why)
    return out


def run_suite(binary, workdir, suite, docs):
    results = {}     # id -> (ok, got, explanation, case, output, warning, scenario)
    for doc in docs:
        dns = DNS(workdir, zone_json(doc.get("zonedata")))
        try:
            conf = os.path.join(dns.dir, "mailwarden.conf")
            write_config(conf, dns.port)
            cases = list((doc.get("tests") or {}).items())
            with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as ex:
                futs = {ex.submit(run_case, binary, conf, c): (tid, c) for tid, c in cases}
                for fut in concurrent.futures.as_completed(futs):
                    tid, c = futs[fut]
                    try:
                        res, expl, out, dt = fut.result()
                    except Exception as e:  # timeout, crash
                        res, expl, out, dt = None, None, "driver error: %s" % e, 0
                    ok, warn = judge(c, res, expl)
                    results[str(tid)] = (ok, res, expl, c, out, warn, doc.get("description"))
        finally:
            dns.stop()
    return results


def want_text(c):
    w = c["result"]
    s = "/".join(map(str, w)) if isinstance(w, list) else str(w)
    if "explanation" in c:
        s += " exp=%r" % c["explanation"]
    return s


def main():
    if not os.path.isdir(SUITE_DIR):
        skip("conformance data not found at %s (../shared is absent)" % SUITE_DIR)
    try:
        import yaml  # noqa: F401
        import dnslib  # noqa: F401
    except ImportError as e:
        skip("Debian python3-yaml and python3-dnslib are needed (%s); run with /usr/bin/python3" % e)
    binary = find_binary()
    xfail = load_list(XFAIL_FILE, True)
    diff4408 = load_list(DIFF4408_FILE, False)
    only = os.environ.get("MW_SPF_SUITE_ONLY")

    docs = {}
    for suite, fname in SUITES:
        path = os.path.join(SUITE_DIR, fname)
        if not os.path.exists(path):
            skip("%s missing" % path)
        docs[suite] = load_docs(path)
    cases7208 = expectations(docs["rfc7208"])
    diffs = differences(expectations(docs["rfc4408"]), cases7208)

    workdir = tempfile.mkdtemp(prefix="mwspfsuite")
    total_pass = total_fail = 0
    bad = []            # problems that make the test fail
    t_start = time.time()
    try:
        for suite, fname in SUITES:
            if only and only != suite:
                continue
            t0 = time.time()
            res = run_suite(binary, workdir, suite, docs[suite])
            failed = sorted(t for t, r in res.items() if not r[0])
            npass = len(res) - len(failed)
            print("== %s (%s): %d tests, %.1f s" % (suite, fname, len(res), time.time() - t0))
            for tid in sorted(res):
                ok, got, expl, c, out, warn, scen = res[tid]
                if ok and warn:
                    print("  warning %s: %s" % (tid, warn))
            excused = set()
            for tid in failed:
                ok, got, expl, c, out, warn, scen = res[tid]
                tag = ""
                if (suite, tid) in xfail:
                    tag = " [expected failure: %s]" % xfail[(suite, tid)]
                    excused.add(tid)
                elif suite == "rfc4408" and tid in diff4408 and tid in cases7208 \
                        and judge(cases7208[tid], got, expl)[0]:
                    tag = " [RFC 7208 result; RFC 4408 expected otherwise: %s]" % diff4408[tid]
                    excused.add(tid)
                got_s = "%s%s" % (got, " exp=%r" % expl if expl is not None else "")
                print("  FAIL %s (%s): want %s, got %s%s" % (tid, scen, want_text(c), got_s, tag))
                if VERBOSE and isinstance(out, dict):
                    print("       reason: %s" % (out.get("spf") or {}).get("reason"))
                elif not isinstance(out, dict):
                    print("       %s" % out)
            print("%s: %d passed, %d failed" % (suite, npass, len(failed)))
            if failed:
                print("%s failing ids: %s" % (suite, " ".join(failed)))
            total_pass += npass
            total_fail += len(failed)

            # honesty of the lists
            for (s, tid), why in sorted(xfail.items()):
                if s != suite:
                    continue
                if tid not in res:
                    bad.append("%s:%s is listed as expected failure but is not in the suite" % (s, tid))
                elif res[tid][0]:
                    bad.append("%s:%s is listed as expected failure but PASSES now: "
                               "remove it from %s" % (s, tid, os.path.basename(XFAIL_FILE)))
            for tid in failed:
                if tid not in excused:
                    bad.append("%s:%s fails and is not listed" % (suite, tid))
            if suite == "rfc4408":
                print("rfc4408: %d cases expect something else than the RFC 7208 suite, all "
                      "explained in %s" % (len(diffs), os.path.basename(DIFF4408_FILE))
                      if set(diffs) == set(diff4408) else
                      "rfc4408: RFC 4408/7208 differences and %s disagree"
                      % os.path.basename(DIFF4408_FILE))
                for tid in sorted(set(diffs) - set(diff4408)):
                    bad.append("rfc4408:%s expects something else than RFC 7208 (%s) and is not "
                               "explained in %s" % (tid, diffs[tid], os.path.basename(DIFF4408_FILE)))
                for tid in sorted(set(diff4408) - set(diffs)):
                    bad.append("rfc4408:%s is listed in %s but its expectation does not differ "
                               "from RFC 7208" % (tid, os.path.basename(DIFF4408_FILE)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("total time %.1f s" % (time.time() - t_start))
    for b in bad:
        print("PROBLEM: %s" % b)
    print("%d passed, %d failed" % (total_pass, total_fail))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
