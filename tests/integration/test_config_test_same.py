#!/usr/bin/python3
"""config-test refuses what serve (and a reload) would refuse (issue 16).

`systemctl reload` runs `mailwarden config-test` before the SIGHUP, so a config that
config-test passes but the daemon refuses makes the reload "succeed" while nothing
changes.  For each configuration below, valid to the key table but refused when the
daemon builds its runtime or binds: `serve -f` refuses to start (non-zero, reason on
stderr), and `config-test` refuses too (non-zero, naming the file and the key).
Without the fix config-test said OK to all of them.  A clean file passes both.
"""
import os, re, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

CASES = {
    "arc key not in the key table": ('arc = { seal = true; key = "nokey"; };\n', "arc.key"),
    "reject text with a 2xx code": ('dmarc = { reject_text = "250 fine"; };\n', "dmarc.reject_text"),
    "missing trust anchor": ('dns = { trust_anchor = "/nonexistent/root.key"; };\n', "trust anchor"),
    "missing public suffix list": ('dmarc = { mode = "rfc7489"; psl_file = "/nonexistent/psl.dat"; };\n',
                                   "psl.dat"),
    "socket address not on this host": ('socket = "inet:%(port)d@192.0.2.55";\n', "192.0.2.55"),
    "unix socket in a missing directory": ('socket = "unix:/nonexistent/mw/milter.sock";\n', "/nonexistent/mw"),
}


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    for name, (text, needle) in sorted(CASES.items()):
        port = H.free_port()
        body = text % {"port": port}
        if "socket" not in body:
            body = 'socket = "inet:%d@127.0.0.1";\n' % port + body
        path = h.write(re.sub(r"\W+", "-", name) + ".conf", body)
        rc, out = H.run([H.MW_BINARY, "serve", "-f", "-c", path], timeout=60, check=False)
        chk.check("%s: serve refuses (rc=%s)" % (name, rc), rc != 0 and needle in out, out.strip()[-300:])
        rc, out = H.run([H.MW_BINARY, "config-test", "-c", path], timeout=60, check=False)
        chk.check("%s: config-test refuses too, naming file and cause" % name,
                  rc != 0 and needle in out and os.path.basename(path) in out, out.strip()[-300:])
    path = h.write("good.conf", 'socket = "inet:%d@127.0.0.1";\narc = { verify = true; };\n' % H.free_port())
    rc, out = H.run([H.MW_BINARY, "config-test", "-c", path], timeout=60, check=False)
    chk.check("a clean file passes config-test", rc == 0 and "configuration OK" in out, out.strip()[-300:])


if __name__ == "__main__":
    H.run_test(test, "cfgsame", timeout=300)
