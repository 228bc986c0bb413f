#!/usr/bin/python3
"""`--opt=value` works for every option of every subcommand, exactly like `--opt value`.

For each subcommand (serve, check, config-test, config-dump, keygen, dns-check, limits,
report, migrate) one or more invocations are run twice, once with every long option
written `--opt value` and once `--opt=value`; the exit status and the output (with the
scratch paths normalised) must be the same, and the run must have done its job (not
merely failed the same way twice: each case says what its success looks like).
`-c FILE`, `--config FILE` and `--config=FILE` all read FILE. An option that takes no
value refuses one (`--json=yes`) instead of reading "yes" as an argument, and arguments
after `--` are left alone.
"""
import os, re, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H


def mw(args, stdin=None, timeout=60):
    p = subprocess.run([H.MW_BINARY] + args, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout, start_new_session=True)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def joined(args):
    """--opt value -> --opt=value for every long option that has a value."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("-") and a not in FLAGS:
            out.append("%s=%s" % (a, args[i + 1]))
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def normal(out):
    """What differs between two runs of the same command: timestamps, pids, fresh keys."""
    out = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z mailwarden\[\d+\]", "TS", out)
    out = re.sub(r"p=[A-Za-z0-9+/=\" ]+", "p=KEY", out)
    return re.sub(r"\b\d+(\.\d+)? ?(ms|s)\b", "T", out)


FLAGS = {"--json", "--force", "--dry-run", "--send", "--keys", "--defaults", "--man", "--foreground"}


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    conf = h.write("mw.conf", 'authserv_id = "mx.test.example";\n'
                   'dns = { mode = "forward"; forwarders = [ "127.0.0.1@1" ]; timeout = "300ms"; };\n'
                   'spf = { enabled = false; };\ndmarc = { enabled = false; };\n'
                   'dkim = { verify = false; };\narc = { verify = false; };\n'
                   'report = { state_dir = "%s"; };\n' % h.path("rstate"))
    os.makedirs(h.path("rstate"), exist_ok=True)
    os.makedirs(h.path("hist"), exist_ok=True)
    h.write("opendkim.conf", "Domain example.org\nSelector s1\nKeyFile %s/k.private\n" % h.tmp)
    msg = b"From: a@example.org\r\nTo: b@dest.test\r\nSubject: x\r\n\r\nbody\r\n"

    # (name, args with spaces, stdin, what success looks like: a predicate on (rc, out), cwd-relative outputs)
    cases = [
        ("config-test -c", ["config-test", "-c", conf], None, lambda rc, o: rc == 0 and "configuration OK" in o),
        ("config-test --config", ["config-test", "--config", conf], None,
         lambda rc, o: rc == 0 and "configuration OK" in o),
        ("config-dump --config -n --socket", ["config-dump", "--config", conf, "-n", "--socket",
                                              "inet:9994@127.0.0.1", "--policy", "strict"], None,
         lambda rc, o: rc == 0 and 'socket = "inet:9994@127.0.0.1";  # command line' in o
         and "mw.conf:2" in o and 'policy = "strict";  # command line' in o),
        ("check", ["check", "--config", conf, "--ip", "192.0.2.9", "--helo", "client.example",
                   "--from", "a@example.org", "--rcpt", "b@dest.test", "--queue-id", "Q1", "--json"], msg,
         lambda rc, o: rc == 0 and '"action":"accept"' in o and "client 192.0.2.9" in o),
        ("serve --help", ["serve", "--config", conf, "--help"], None, lambda rc, o: rc == 0 and "usage" in o),
        ("keygen", ["keygen", "--domain", "example.org", "--selector", "s1", "--type", "ed25519",
                    "--out", None], None, lambda rc, o: rc == 0 and "v=DKIM1" in o),
        ("dns-check", ["dns-check", "--config", conf, "--dns", "127.0.0.1@1"], None,
         lambda rc, o: "127.0.0.1" in o or rc != 0),
        ("limits", ["limits", "list", "--config", conf, "--redis", "127.0.0.1:1"], None,
         lambda rc, o: rc != 0 and "127.0.0.1" in o),
        ("report", ["report", "--config", conf, "--history", h.path("hist"), "--period", "2026-01-01",
                    "--out", None, "--format", "rfc7489"], None, lambda rc, o: rc == 0),
        ("migrate", ["migrate", "--opendkim", h.path("opendkim.conf"), "--history-dir", "/var/lib/mw/h",
                     "--output", None, "--force"], None, lambda rc, o: "wrote OUT/mailwarden.conf" in o),
    ]
    for name, args, stdin, ok in cases:
        results = []
        for form in ("space", "equals"):
            d = h.path("out-%s-%s" % (name.replace(" ", "_"), form))
            os.makedirs(d, exist_ok=True)
            a = [d if x is None and args[i - 1] != "--output" else
                 (os.path.join(d, "mailwarden.conf") if x is None else x) for i, x in enumerate(args)]
            if form == "equals" and name != "config-test -c":
                a = joined(a)
                chk.check("%s: the equals form has --opt=value" % name,
                          any(x.startswith("--") and "=" in x for x in a), a)
            rc, out = mw(a, stdin)
            results.append((rc, normal(out.replace(d, "OUT")), sorted(os.listdir(d))))
        (rc1, o1, f1), (rc2, o2, f2) = results
        chk.check("%s: --opt=value does what --opt value does (rc %s, %s)" % (name, rc1, rc2),
                  rc1 == rc2 and o1 == o2 and len(f1) == len(f2), "\n--- space:\n%s\n--- equals:\n%s" % (o1[-600:], o2[-600:]))
        chk.check("%s: and it did its job" % name, ok(rc2, o2), o2[-600:])

    # an option without a value refuses one
    rc, out = mw(["check", "--json=yes", "--ip", "192.0.2.9"])
    chk.check("--json=yes is refused (rc %s)" % rc, rc == 2 and "--json takes no value" in out, out)
    rc, out = mw(["serve", "--foreground=1"])
    chk.check("serve --foreground=1 is refused (rc %s)" % rc, rc == 2 and "takes no value" in out, out)
    # --opt= with an empty value is an empty value
    rc, out = mw(["config-dump", "--config=%s" % conf, "--pid-file=", "-n"])
    chk.check("--pid-file= is the empty value", rc == 0 and 'pid_file = "";  # command line' in out, out)
    # config-dump --defaults > x.conf && config-test -c x.conf, exactly so (a shell)
    x = h.path("x.conf")
    p = subprocess.run(["/bin/sh", "-c", '"$0" config-dump --defaults > "$1" && "$0" config-test -c "$1"',
                        H.MW_BINARY, x], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    chk.check("config-dump --defaults > x.conf && config-test -c x.conf (rc %s)" % p.returncode,
              p.returncode == 0 and "configuration OK" in out, out)
    rc, out = mw(["config-dump", "-c", x, "-n"])
    chk.check("the defaults file sets every key (-n lists socket with its line)",
              rc == 0 and 'socket = "inet:8894@127.0.0.1";  # %s:2' % x in out, out[:300])

    # after "--" nothing is split
    rc, out = mw(["config-test", "--config", conf, "--", "--x=y"])
    chk.check("arguments after -- are not split (rc %s)" % rc, rc == 2 and "--" in out, out)


if __name__ == "__main__":
    H.run_test(test, "cli_options", timeout=300)
