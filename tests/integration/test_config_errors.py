#!/usr/bin/python3
"""Configuration errors refuse to start, with FILE:LINE.

For each bad file (unknown key, bad CIDR, bad socket spec, libconfig syntax error, two
errors in one file): `mailwarden serve -c FILE` exits non-zero within seconds, prints
FILE:LINE: for the offending line and never opens its socket; `mailwarden config-test -c
FILE` exits non-zero with the same diagnostics (all of them). A valid file passes
config-test. Bad values given on the command line (--socket, --internal) refuse too.
"""
import os, re, socket, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

# name -> (file text, [lines that must be reported])
BAD = {
    "unknown-key": ('authserv_id = "mx.test.example";\nno_such_key = 1;\n', [2]),
    "bad-cidr": ('# trust\ntrust = {\n  internal_networks = ["10.0.0.0/8", "10.1.2.3/33"];\n};\n', [3]),
    "bad-cidr-text": ('trust = {\n  internal_networks = "not-a-network";\n};\n', [2]),
    "bad-socket": ('// daemon\n\nsocket = "inet:notaport@127.0.0.1";\n', [3]),
    "bad-socket-kind": ('socket = "tcp:8894@127.0.0.1";\n', [1]),
    "unknown-nested-key": ('dns = {\n  timeout = 3000;\n  tiemout = 3000;\n};\n', [3]),
    "syntax-error": ('authserv_id = "mx.test.example";\nspf = { enabled = true\n', [None]),
    # a policy name that is neither in policy_dir nor built in: FILE:LINE of the key (issue 17)
    "policy-typo": ('authserv_id = "mx.test.example";\npolicy = "defualt";\n', [2]),
    "policy-shadow-typo": ('policy_shadow = "strcit";\n', [1]),
    "two-errors": ('bogus = 1;\nauthserv_id = "mx.test.example";\ntrust = { internal_networks = ["300.1.1.1/8"]; };\n',
                   [1, 3]),
}
GOOD = ('authserv_id = "mx.test.example";\nsocket = "inet:8894@127.0.0.1";\n'
        'trust = { internal_networks = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]; };\n'
        'dns = { timeout = 3000; };\nspf = { enabled = true; };\n')


def run_mw(args, timeout=15):
    t0 = time.monotonic()
    try:
        rc, out = H.run([H.MW_BINARY] + args, timeout=timeout, check=False)
    except RuntimeError as e:                 # hung: killed by the timeout
        return None, str(e), time.monotonic() - t0
    return rc, out, time.monotonic() - t0


def has_line(out, path, line):
    base = re.escape(os.path.basename(path))
    if line is None:
        return re.search(r"%s:\d+:" % base, out) is not None
    return re.search(r"%s:%d:" % (base, line), out) is not None


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    for name, (text, lines) in BAD.items():
        path = h.write("%s.conf" % name, text)
        port = H.free_port()
        rc, out, dt = run_mw(["serve", "-f", "-c", path, "--socket", "inet:%d@127.0.0.1" % port])
        chk.check("%s: serve exits non-zero" % name, rc not in (None, 0), "rc=%s" % rc)
        chk.check("%s: serve exits quickly (%.1fs)" % (name, dt), dt < 10)
        for ln in lines:
            chk.check("%s: serve reports %s:%s:" % (name, os.path.basename(path), ln or "LINE"),
                      has_line(out, path, ln), out.strip()[-300:])
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            listening = True
        except OSError:
            listening = False
        chk.check("%s: serve never listened" % name, not listening)
        rc, out, dt = run_mw(["config-test", "-c", path])
        chk.check("%s: config-test exits non-zero" % name, rc not in (None, 0), "rc=%s" % rc)
        for ln in lines:
            chk.check("%s: config-test reports %s:%s:" % (name, os.path.basename(path), ln or "LINE"),
                      has_line(out, path, ln), out.strip()[-300:])

    # the policy typo: one diagnostic, with a suggestion, not the same one twice
    rc, out, _ = run_mw(["config-test", "-c", h.path("policy-typo.conf")])
    chk.check("policy typo: 'did you mean \"default\"' with FILE:LINE",
              re.search(r'policy-typo\.conf:2: policy "defualt": .*did you mean "default"', out), out)
    chk.equal("policy typo: reported once", out.count('policy "defualt"'), 1)

    path = h.write("good.conf", GOOD)
    rc, out, _ = run_mw(["config-test", "-c", path])
    chk.check("valid file: config-test exits 0", rc == 0, "rc=%s %s" % (rc, out.strip()[-300:]))

    for label, args in (("command-line bad socket", ["--socket", "inet:99999@127.0.0.1"]),
                        ("command-line bad CIDR", ["--socket", "inet:%d@127.0.0.1" % H.free_port(),
                                                   "--internal", "10.0.0.0/40"])):
        rc, out, dt = run_mw(["serve", "-f", "-c", path] + args)
        chk.check("%s: serve exits non-zero quickly" % label, rc not in (None, 0) and dt < 10,
                  "rc=%s %.1fs %s" % (rc, dt, out.strip()[-300:]))
        chk.check("%s: error names the bad value" % label,
                  ("99999" in out) if "socket" in label else ("10.0.0.0/40" in out), out.strip()[-300:])

    missing = h.path("does-not-exist.conf")
    rc, out, dt = run_mw(["serve", "-f", "-c", missing, "--socket", "inet:%d@127.0.0.1" % H.free_port()])
    chk.check("missing file: serve exits non-zero quickly", rc not in (None, 0) and dt < 10, "rc=%s" % rc)
    chk.check("missing file: error names the file", "does-not-exist.conf" in out, out.strip()[-300:])


if __name__ == "__main__":
    H.run_test(test, "config", timeout=300)
