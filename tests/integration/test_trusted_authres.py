#!/usr/bin/python3
"""Trusted upstream Authentication-Results (dmarc.trusted_authserv_ids) through
`mailwarden check` with a real resolver and the scriptable test DNS:

- a spoof of a p=reject domain is rejected without the setting;
- with the relay's authserv-id trusted, its spf=pass / dkim=pass results align
  and the same message passes DMARC;
- an A-R from an untrusted id, or one claiming our own id, never helps;
- a trusted A-R saying spf=fail does not turn into a pass.
Prints one line per check and `N passed, N failed`; exit 77 without dnslib."""
import json
import os
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("MW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("MW_BINARY", "/tmp/build-main/mailwarden")
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("PASS", name)
    else:
        failed += 1
        print("FAIL", name, detail)


def main():
    try:
        import dnslib  # noqa: F401
    except ImportError:
        print("SKIP: python3-dnslib missing")
        return 77
    tmp = tempfile.mkdtemp(prefix="mw-trusted-")
    zone = {
        "example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}],
        "_dmarc.example.com": [{"TXT": "v=DMARC1; p=reject"}],
        "relay.test": [{"TXT": "v=spf1 ip4:203.0.113.0/24 -all"}],
    }
    zpath = os.path.join(tmp, "zone.json")
    with open(zpath, "w") as f:
        json.dump(zone, f)
    portfile = os.path.join(tmp, "port")
    dns = subprocess.Popen(["/usr/bin/python3", os.path.join(SRC, "tests", "lib", "testdns.py"),
                            "--port", "0", "--portfile", portfile, "--zone", zpath],
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(portfile) and open(portfile).read().strip():
                break
            time.sleep(0.05)
        port = int(open(portfile).read())

        def run(ar_lines, trusted):
            conf = os.path.join(tmp, "mw.conf")
            with open(conf, "w") as f:
                f.write('authserv_id = "mx.test";\n')
                if trusted:
                    f.write('dmarc = { trusted_authserv_ids = [ %s ]; };\n'
                            % ", ".join('"%s"' % t for t in trusted))
            msg = "".join("Authentication-Results: %s\n" % a for a in ar_lines)
            msg += "From: Boss <boss@example.com>\nTo: x@dest.test\nSubject: hi\n\nbody\n"
            p = subprocess.run([BIN, "check", "-c", conf, "--dns", "127.0.0.1@%d" % port,
                                "--ip", "203.0.113.7", "--helo", "mx.relay.test",
                                "--from", "bounce@relay.test", "--rcpt", "x@dest.test", "--json"],
                               input=msg.encode(), capture_output=True, timeout=60)
            return json.loads(p.stdout)

        up = "border.example.net; spf=pass smtp.mailfrom=boss@example.com; dkim=pass header.d=example.com header.s=s1"
        o = run([up], None)
        check("untrusted by default: dmarc fail", o["dmarc"]["result"] == "fail", o["dmarc"])
        check("untrusted by default: rejected", o["verdict"]["action"] == "reject", o["verdict"])
        o = run([up], ["border.example.net"])
        check("trusted relay: dmarc pass", o["dmarc"]["result"] == "pass", o["dmarc"])
        check("trusted relay: aligned", o["dmarc"]["alignment"]["spf"] or o["dmarc"]["alignment"]["dkim"], o["dmarc"])
        check("trusted relay: accepted", o["verdict"]["action"] == "accept", o["verdict"])
        check("trusted relay: trace says so", any("trusted" in t for t in o["trace"]), o["trace"])
        o = run(["other.example; spf=pass smtp.mailfrom=boss@example.com"], ["border.example.net"])
        check("other id: no help", o["dmarc"]["result"] == "fail", o["dmarc"])
        o = run(["mx.test; dkim=pass header.d=example.com"], ["mx.test"])
        check("our own id is never trusted (forgery removed)", o["dmarc"]["result"] == "fail", o["dmarc"])
        o = run(["BORDER.example.net; spf=fail smtp.mailfrom=boss@example.com"], ["border.example.net"])
        check("trusted spf=fail stays a fail", o["dmarc"]["result"] == "fail", o["dmarc"])
    finally:
        dns.terminate()
        dns.wait()
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
