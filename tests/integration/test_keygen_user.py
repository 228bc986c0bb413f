#!/usr/bin/python3
"""Keys for a daemon that runs as another user (issue 16, "Keys").

As root (skipped with 77 otherwise), with the unprivileged user nobody:nogroup:
  - `keygen --user nobody` and `keygen -c CONF` (no --user: the configured `user`)
    write a key (and the directory keygen creates) owned by nobody, mode 0600, that
    nobody can read;
  - `serve` started as root with `user = "nobody"` and that key (its worker runs as
    nobody) signs mail relayed through a real Postfix: the DKIM-Signature verifies with
    dkimpy against the record keygen printed; after a SIGHUP (keys re-read as nobody)
    it still signs;
  - `dns-check` reports each key file's mode and owner: ok for nobody's 0600 key;
    FAIL (exit 1) for a 0640 key (the daemon refuses it), WARN (exit 0) for the same
    key with dkim.allow_unsafe_keys, FAIL for a 0600 key owned by root (nobody cannot
    read it: start and reload would fail), WARN for a key nobody can read but does not
    own.
Without the dns-check change a 0640 key stops dns-check with exit 2 before any row,
and a root-owned key passes silently (dns-check runs as root).
"""
import grp, os, pwd, re, subprocess, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_postfix_dkim import dkimpy_verify, strip_delivery
from test_privdrop import worker_pid

USER, GROUP = "nobody", "nogroup"
DOM, SEL = "sign.test", "kg"


def can_read_as(path, uid, gid):
    """Does uid:gid get the file's bytes?  Tried in a child that became that user."""
    r = subprocess.run(["/usr/bin/python3", "-c", "import sys; sys.stdout.write(open(sys.argv[1]).read(27))", path],
                       capture_output=True, text=True, timeout=30,
                       preexec_fn=lambda: (os.setgroups([]), os.setgid(gid), os.setuid(uid)))
    return r.returncode == 0 and r.stdout.startswith("-----BEGIN PRIVATE KEY")


def record_of(out):
    """The TXT value keygen printed (zone-file strings joined)."""
    line = [l for l in out.splitlines() if "IN TXT" in l]
    return "".join(re.findall(r'"([^"]*)"', line[0])) if line else ""


def key_row(out, path):
    """dns-check's row for a key file: (state, detail) or None."""
    m = re.search(r"^key\s+%s\s+(ok|WARN|FAIL)\s+(.*)$" % re.escape(path), out, re.M)
    return (m.group(1), m.group(2)) if m else None


def test(h, chk):
    if os.geteuid() != 0:
        raise H.Skip("needs root (keys for, and a daemon dropping to, %s)" % USER)
    try:
        uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid
        import dkim  # noqa: F401
    except (KeyError, ImportError) as e:
        raise H.Skip("needs user %s, group %s and python3-dkim: %s" % (USER, GROUP, e))
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)

    # ---- keygen: --user, and the configured user by default
    conf = h.write("mw.conf", 'user = "%s";\ngroup = "%s";\ndns = { timeout = 2000; };\n' % (USER, GROUP))
    k1dir = h.path("keys-explicit")
    rc, out = H.run([H.MW_BINARY, "keygen", "-d", DOM, "-s", "x1", "--type", "ed25519", "--out", k1dir,
                     "--user", USER], check=False)
    k1 = os.path.join(k1dir, "x1.private")
    chk.check("keygen --user %s exits 0" % USER, rc == 0, out[-300:])
    st = os.stat(k1) if os.path.exists(k1) else None
    chk.check("--user: key owned by %s:%s, mode 0600" % (USER, GROUP),
              st and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o600),
              st and (st.st_uid, st.st_gid, oct(st.st_mode)))
    chk.check("--user: the directory keygen made is %s's" % USER, os.stat(k1dir).st_uid == uid)
    chk.check("--user: %s reads the key" % USER, can_read_as(k1, uid, gid))

    keydir = h.path("keys")
    rc, out = H.run([H.MW_BINARY, "keygen", "-d", DOM, "-s", SEL, "--type", "ed25519", "--out", keydir,
                     "-c", conf], check=False)
    key = os.path.join(keydir, SEL + ".private")
    chk.check("keygen -c CONF (user from the config) exits 0", rc == 0, out[-300:])
    st = os.stat(key) if os.path.exists(key) else None
    chk.check("configured user: key owned by %s, mode 0600" % USER,
              st and (st.st_uid, st.st_mode & 0o7777) == (uid, 0o600), st and (st.st_uid, oct(st.st_mode)))
    chk.check("configured user: %s reads the key" % USER, can_read_as(key, uid, gid))
    txt = record_of(out)
    chk.check("keygen printed the DNS record", txt.startswith("v=DKIM1; k=ed25519; p="), out[-300:])
    records = {"%s._domainkey.%s" % (SEL, DOM): txt}

    dns, _ = h.start_testdns({DOM: [{"A": "192.0.2.1"}, {"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}],
                              "_dmarc." + DOM: [{"TXT": "v=DMARC1; p=none"}],
                              "%s._domainkey.%s" % (SEL, DOM): [{"TXT": txt}]}, verbose=False)

    # ---- serve as nobody with that key: it signs, also after a reload
    sign = ["--sign", "%s:%s:%s" % (DOM, SEL, key)]
    d = h.start_daemon(dns=[dns], args=["-c", conf] + sign, name="mw")
    wpid, status = worker_pid(d.pid)
    chk.check("the worker runs as %s" % USER,
              wpid and re.search(r"^Uid:\s+%d\s+%d\s+%d\s+%d$" % ((uid,) * 4), status, re.M), status[:200])
    pf = h.start_postfix(d.port)
    for gen in (1, 2):
        if gen == 2:
            d.send_signal(1)
            chk.check("SIGHUP: keys re-read as %s, reload done" % USER,
                      H.wait_for(lambda: "configuration reloaded (generation 2)" in d.log_text(), timeout=30),
                      d.log_tail(10))
        token = "tok-%s" % uuid.uuid4().hex
        res = pf.send("alice@" + DOM, "bob@dest.test", external=False,
                      headers=["From: alice@%s" % DOM, "Subject: keygen %s" % token])
        chk.check("generation %d: accepted" % gen, res.code == "250", res.final or res.transcript[-400:])
        m = pf.wait_delivered(token, timeout=30)
        chk.check("generation %d: delivered" % gen, m is not None)
        if m:
            chk.check("generation %d: one DKIM-Signature d=%s s=%s" % (gen, DOM, SEL),
                      len(m.get_all("DKIM-Signature")) == 1
                      and re.search(r"\bd=%s;.*\bs=%s;" % (re.escape(DOM), SEL),
                                    re.sub(r"\s+", "", m.get_all("DKIM-Signature")[0])),
                      m.get_all("DKIM-Signature"))
            chk.equal("generation %d: dkimpy verifies it" % gen, dkimpy_verify(strip_delivery(m.raw), records),
                      [True])
    chk.check("no key error logged", not re.search(r"key file|cannot open", d.log_text()), d.log_tail(10))
    d.stop()

    # ---- dns-check: the key file's mode and owner
    def dns_check(cfg=conf, path=key):
        rc, out = H.run([H.MW_BINARY, "dns-check", "-c", cfg, "--dns", "127.0.0.1@%d" % dns,
                         "--sign", "%s:%s:%s" % (DOM, SEL, path)], check=False, timeout=60)
        return rc, out, key_row(out, path)

    rc, out, row = dns_check()
    chk.check("dns-check: nobody's 0600 key is ok, exit 0",
              rc == 0 and row and row[0] == "ok" and "owner %s" % USER in row[1], out[-600:])
    os.chmod(key, 0o640)
    rc, out, row = dns_check()
    chk.check("dns-check: a 0640 key FAILs (the daemon refuses it), exit 1",
              rc == 1 and row and row[0] == "FAIL" and "0640" in row[1] and "chmod 600" in row[1], out[-600:])
    chk.check("... and the DNS checks still run", re.search(r"^dkim\s+%s\._domainkey\.%s\s+ok" % (SEL, re.escape(DOM)),
                                                            out, re.M), out[-600:])
    unsafe = h.write("mw-unsafe.conf", open(conf).read() + "dkim = { allow_unsafe_keys = true; };\n")
    rc, out, row = dns_check(unsafe)
    chk.check("dns-check: the 0640 key with dkim.allow_unsafe_keys is a WARN, exit 0",
              rc == 0 and row and row[0] == "WARN" and "0640" in row[1] and re.search(r"1 warning", out),
              out[-600:])
    os.chmod(key, 0o600)
    os.chown(key, 0, 0)
    rc, out, row = dns_check()
    chk.check("dns-check: a root-owned 0600 key FAILs: %s cannot read it, exit 1" % USER,
              rc == 1 and row and row[0] == "FAIL" and "%s cannot read" % USER in row[1]
              and "chown %s" % USER in row[1], out[-600:])
    # readable through the group, but not the user's: a warning (with allow_unsafe)
    os.chown(key, 0, gid)
    os.chmod(key, 0o640)
    rc, out, row = dns_check(unsafe)
    owner_rows = re.findall(r"^key\s+%s\s+WARN\s+(.*)$" % re.escape(key), out, re.M)
    chk.check("dns-check: root:%s 0640 (unsafe allowed): WARN for the mode and for the owner" % GROUP,
              rc == 0 and len(owner_rows) == 2 and any("owned by root, not by %s" % USER in r for r in owner_rows),
              out[-700:])
    os.chown(key, uid, gid)
    os.chmod(key, 0o600)
    rc, out, row = dns_check()
    chk.check("dns-check: back to %s 0600: ok" % USER, rc == 0 and row and row[0] == "ok", out[-400:])


if __name__ == "__main__":
    H.run_test(test, "keygen_user", timeout=600)
