#!/usr/bin/python3
"""`mailwarden migrate`: OpenDKIM and OpenDMARC configurations into a mailwarden.conf.

1. The stock configs Debian ships (/etc/opendkim.conf from the opendkim package,
   /etc/opendmarc.conf from opendmarc; read where installed, never copied: a part whose
   file is absent is skipped, and the whole test exits 77 when both are) are converted, alone
   and together: exit 0, config-test passes on the result, every setting line of the source is
   named (FILE:LINE) in a comment, and OpenDMARC's default RejectFailures off gives
   policy "monitor-only" with the way to enforce.
2. A busy real-world-style pair (tests/fixtures/migrate/busy: KeyTable with '%', refile:
   SigningTable with a signer field and a wildcard '%' rule, TrustedHosts with IPs, CIDRs,
   localhost, this host's name and a *.domain pattern, every On-* action, FailureReports, HistoryFile, a main.cf with both
   milters): exit 0, config-test passes, every source line named, the expected settings and
   NOT CARRIED items present, the smtpd_milters line printed.
3. Mail signed through `mailwarden check` with the migrated file carries the d= and s= that
   OpenDKIM's KeyTable gives that sender (with '%' resolved) and verifies with dkimpy against
   the public half of the same key file, and with OpenDKIM itself (opendkim -t).
4. OpenDKIM's '%': a KeyTable with a '%' domain key and a '%' key path (one key file per
   domain) is carried as the same files; two domains sign with their own d= and key, a third
   as itself with the shared key, all verified by dkimpy; InternalHosts with a host name is
   carried as file:PATH, and an unresolvable name there fails config-test with FILE:LINE.
5. An existing output file is not overwritten without --force; a database data set
   (KeyTable db:...) is reported as NOT CARRIED, not silently dropped.
"""
import grp, json, os, pwd, re, shutil, socket, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

FIXTURES = os.path.join(H.SOURCE_DIR, "tests", "fixtures", "migrate")
STOCK = {"opendkim": "/etc/opendkim.conf", "opendmarc": "/etc/opendmarc.conf"}


def mw(args, timeout=60):
    return H.run([H.MW_BINARY] + args, timeout=timeout, check=False)


def setting_lines(path):
    """Line numbers of the "Key value" lines of an OpenDKIM-style file."""
    out = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.split("#", 1)[0].strip():
                out.append(i)
    return out


def every_line_named(chk, label, src, text):
    missing = [n for n in setting_lines(src) if "%s:%d)" % (src, n) not in text]
    chk.check("%s: every setting of %s is commented in the output" % (label, src), not missing,
              "lines without a comment: %s" % missing)


def daemon_user():
    """(user, group) the fixture runs as: opendkim when we are root and it exists."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("opendkim")
            grp.getgrnam("opendkim")
            return "opendkim", "opendkim"
        except KeyError:
            pass
    return pwd.getpwuid(os.geteuid()).pw_name, None


def stock(h, chk):
    present = {k: p for k, p in STOCK.items() if os.path.exists(p)}
    combos = [[k] for k in present] + ([list(present)] if len(present) == 2 else [])
    for combo in combos:
        label = "stock " + "+".join(combo)
        out = h.path("stock-%s.conf" % "-".join(combo))
        args = ["migrate", "-o", out]
        for k in combo:
            args += ["--%s" % k, present[k]]
        rc, log = mw(args)
        chk.check("%s: exit 0 (written and valid)" % label, rc == 0, log[-1500:])
        chk.check("%s: says config-test passed" % label, "configuration OK" in log, log[-600:])
        text = open(out).read() if os.path.exists(out) else ""
        for k in combo:
            every_line_named(chk, label, present[k], text)
        rc2, log2 = mw(["config-test", "-c", out])
        chk.check("%s: config-test on the output passes" % label, rc2 == 0, log2[-800:])
        if "opendmarc" in combo:
            chk.check("%s: RejectFailures off (default) -> policy monitor-only" % label,
                      re.search(r'^policy = "monitor-only";', text, re.M) is not None, text[-1500:])
            chk.check("%s: says how to enforce" % label, 'TO ENFORCE DMARC' in text and
                      'policy = "default"' in text)
        if "opendkim" in combo:
            chk.check("%s: Canonicalization carried" % label,
                      re.search(r'canonicalization = "relaxed/simple";', text) is not None)
            chk.check("%s: OversignHeaders carried" % label, 'oversign_headers = [ "From" ];' in text)
            chk.check("%s: local: socket becomes mailwarden's unix socket" % label,
                      'socket = "unix:/run/mailwarden/mailwarden.sock";' in text)
    return bool(present)


def resolvable_host():
    """A host name (not "localhost") that resolves here without DNS: this host's own name."""
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
        return name
    except OSError:
        return "ip6-localhost"


def instantiate(h, user, group):
    d = h.path("busy")
    os.makedirs(d)
    src = os.path.join(FIXTURES, "busy")
    for name in os.listdir(src):
        text = open(os.path.join(src, name)).read()
        text = text.replace("@DIR@", d).replace("@USER@", user).replace("@GROUP@", ":" + group if group else "")
        text = text.replace("@HOST@", resolvable_host())
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    records = {}
    for sub, dom, sel in (("example.com", "example.com", "mail"), ("example.org", "example.org", "mail2024"),
                          ("shared", "example.net", "shared2024")):
        kd = os.path.join(d, "keys", sub)
        os.makedirs(kd)
        rc, out = mw(["keygen", "--domain", dom, "--selector", sel, "--out", kd])
        if rc != 0:
            raise RuntimeError("keygen: %s" % out)
        rec = "".join(re.findall(r'"([^"]*)"', out.split("IN TXT", 1)[1]))
        records[sel] = rec
    hist = os.path.join(d, "history")
    os.makedirs(hist)
    if os.geteuid() == 0 and user != "root":
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid if group else -1
        for root, dirs, files in os.walk(os.path.join(d, "keys")):
            for n in dirs + files:
                os.chown(os.path.join(root, n), uid, gid)
        os.chown(os.path.join(d, "keys"), uid, gid)
        os.chown(hist, uid, gid)
    return d, records


def busy(h, chk):
    user, group = daemon_user()
    d, records = instantiate(h, user, group)
    out = h.path("busy.conf")
    dk, dm, cf = (os.path.join(d, n) for n in ("opendkim.conf", "opendmarc.conf", "main.cf"))
    rc, log = mw(["migrate", "--opendkim", dk, "--opendmarc", dm, "--postfix-main-cf", cf,
                  "--history-dir", os.path.join(d, "history"), "-o", out])
    chk.check("busy: exit 0 (written and valid)", rc == 0, log[-2000:])
    text = open(out).read() if os.path.exists(out) else ""
    every_line_named(chk, "busy", dk, text)
    every_line_named(chk, "busy", dm, text)
    rc2, log2 = mw(["config-test", "-c", out])
    chk.check("busy: config-test on the output passes", rc2 == 0, log2[-800:])
    chk.check("busy: the smtpd_milters line replaces both milters by one",
              re.search(r"^smtpd_milters = inet:localhost:8891$", log, re.M) is not None, log[-800:])
    expect = [
        ('policy = "default";', "RejectFailures true -> the enforcing default policy"),
        ('authserv_id = "mx1.example.com";', "AuthservID"),
        ('socket = "inet:8891@localhost";', "inet socket carried"),
        ('user = "%s";' % user, "UserID user"),
        ('"10.0.0.0/8", "192.168.1.0/24", "2001:db8:100::/48"', "InternalHosts networks"),
        ('{ name = "shared/example.net"; domain = "example.net"; selector = "shared2024";', "% key resolved"),
        ('{ pattern = "*@example.info"; keys = [ "shared/example.info" ]; }', "% rule with signer"),
        ('trusted_authserv_ids = [ "mx1.example.com", "mx-edge.example.com" ];', "TrustedAuthservIDs"),
        ('dir = "%s";' % os.path.join(d, "history"), "history.dir"),
        ("old history is NOT imported".lower(), "says old history is not imported"),
        ('quarantine_action = "hold";', "HoldQuarantinedMessages"),
        ('sign_headers = [ "From", "To", "Cc",', "SignHeaders"),
        ('oversign_headers = [ "From", "Subject" ];', "OversignHeaders"),
        ('canonicalization = "relaxed/simple";', "Canonicalization"),
        ('min_key_bits = 1024;', "MinimumKeyBits"),
        ('level = "debug";', "LogWhy"),
        ('target = "syslog";', "Syslog"),
    ]
    low = text.lower()
    for needle, what in expect:
        chk.check("busy: %s" % what, (needle.lower() in low), needle)
    chk.check("busy: a host name in InternalHosts is carried (resolved at load)",
              '"%s"' % resolvable_host() in text, resolvable_host())
    # On-* actions: mapped to what mailwarden does, or said why not
    for needle, what in (('dkim = [ "fail" ]; action = "reject"; }', "On-BadSignature reject: the policy rule"),
                         ('dkim = [ "temperror" ]; action = "tempfail"; }', "On-DNSError tempfail: the policy rule"),
                         ("On-NoSignature accept (%s/opendkim.conf:" % d, "On-NoSignature named"),
                         ("On-KeyNotFound accept (%s/opendkim.conf:" % d, "On-KeyNotFound named"),
                         ("On-InternalError tempfail (%s/opendkim.conf:" % d, "On-InternalError named"),
                         ("On-Default accept (%s/opendkim.conf:" % d, "On-Default named")):
        chk.check("busy: %s" % what, needle in text, needle)
    for key in ("On-NoSignature", "On-KeyNotFound", "On-InternalError"):
        chk.check("busy: %s: carried (mailwarden does the same)" % key,
                  re.search(r"%s \S+ \([^)]*\): carried: mailwarden does the same" % key, text) is not None)
    gaps = [("*.example.org", "host-name patterns in InternalHosts/IgnoreHosts"),
            ("On-Security reject", "On-Security: no such class in mailwarden"),
            ("On-SignatureError tempfail", "On-SignatureError: no setting"),
            ("On-DNSError tempfail", "On-DNSError"),
            ('"*@*": key "shared" signs as the sender\'s domain (%)', "wildcard % rule"),
            ("On-BadSignature reject", "On-BadSignature"),
            ("FailureReports true", "FailureReports"),
            ("FailureReportsSentBy", "FailureReportsSentBy")]
    summary = text.split("\n\n", 1)[0]
    for needle, what in gaps:
        chk.check("busy: NOT CARRIED in the summary: %s" % what, needle in summary, summary[-1500:])
    chk.check("busy: signer field i= reported", '"@example.info" (i=) is not carried' in text)
    return out, records


def signing(h, chk, conf, records):
    import dkim
    msg_t = ("From: Joe <joe@%s>\nTo: sue@example.org\nSubject: hello\nDate: Sat, 05 Dec 2026 09:00:00 +0000\n"
             "Message-ID: <1.%s@test>\n\nHello there.\n")
    # sender -> (d=, s=) as OpenDKIM's KeyTable/SigningTable give it
    for dom, want_d, want_s in (("example.com", "example.com", "mail"), ("sub.example.com", "example.com", "mail"),
                                ("example.org", "example.org", "mail2024"),
                                ("example.net", "example.net", "shared2024")):
        msg = (msg_t % (dom, dom)).encode()
        p = subprocess.run([H.MW_BINARY, "check", "-c", conf, "--json", "--auth", "joe", "--ip", "192.0.2.1",
                            "--dns", "127.0.0.1@9", "--from", "joe@%s" % dom, "--rcpt", "sue@example.org"],
                           input=msg, capture_output=True, timeout=60)
        try:
            res = json.loads(p.stdout)
        except ValueError:
            chk.check("sign %s: check --json output" % dom, False, p.stdout[-500:] + p.stderr[-500:])
            continue
        added = res.get("signatures_added") or []
        chk.check("sign %s: one signature d=%s s=%s" % (dom, want_d, want_s),
                  len(added) == 1 and added[0]["domain"] == want_d and added[0]["selector"] == want_s, added)
        sigs = [v for n, v in res["headers"]["add"] if n.lower() == "dkim-signature"]
        signed = b"".join(b"DKIM-Signature: " + v.encode() + b"\n" for v in sigs) + msg
        recs = {"%s._domainkey.%s" % (want_s, want_d): records[want_s]}

        def dnsfunc(name, timeout=5):
            return recs.get(name.decode().rstrip(".").lower(), "").encode() or None
        ok = False
        try:
            ok = dkim.DKIM(signed).verify(dnsfunc=dnsfunc)
        except dkim.ValidationError as e:
            ok = "ValidationError %s" % e
        chk.check("sign %s: dkimpy verifies with the key of the KeyTable entry" % dom, ok is True, ok)
        if shutil.which("/usr/sbin/opendkim"):
            mf = h.write("signed-%s.eml" % dom, signed.decode().replace("\n", "\r\n"))
            keys = h.write("testkeys-%s" % dom, "".join("%s %s\n" % kv for kv in recs.items()))
            c = h.write("verify-%s.conf" % dom, "Mode v\nTestPublicKeys %s\nSyslog no\n"
                        "AlwaysAddARHeader yes\n" % keys)
            r = subprocess.run(["/usr/sbin/opendkim", "-x", c, "-vvv", "-t", mf], capture_output=True,
                               text=True, timeout=60)
            chk.check("sign %s: OpenDKIM verifies it too" % dom, r.returncode == 0 and
                      "dkim=pass" in (r.stdout + r.stderr) and
                      "header.d=%s" % want_d in (r.stdout + r.stderr), (r.stdout + r.stderr)[-600:])


def sign_and_verify(chk, label, conf, dom, want_d, want_s, rec):
    """Sign a message from joe@dom with `check`; one signature d=/s= as wanted, dkimpy verifies it."""
    import dkim
    msg = ("From: Joe <joe@%s>\nTo: sue@example.org\nSubject: hello\nDate: Sat, 05 Dec 2026 09:00:00 +0000\n"
           "Message-ID: <1.%s@test>\n\nHello there.\n" % (dom, dom)).encode()
    p = subprocess.run([H.MW_BINARY, "check", "-c", conf, "--json", "--auth", "joe", "--ip", "192.0.2.1",
                        "--dns", "127.0.0.1@9", "--from", "joe@%s" % dom, "--rcpt", "sue@example.org"],
                       input=msg, capture_output=True, timeout=60)
    try:
        res = json.loads(p.stdout)
    except ValueError:
        chk.check("%s %s: check --json output" % (label, dom), False, p.stdout[-500:] + p.stderr[-500:])
        return
    added = res.get("signatures_added") or []
    chk.check("%s %s: one signature d=%s s=%s" % (label, dom, want_d, want_s),
              len(added) == 1 and added[0]["domain"] == want_d and added[0]["selector"] == want_s, added)
    sigs = [v for n, v in res["headers"]["add"] if n.lower() == "dkim-signature"]
    signed = b"".join(b"DKIM-Signature: " + v.encode() + b"\n" for v in sigs) + msg
    recs = {"%s._domainkey.%s" % (want_s, want_d): rec}

    def dnsfunc(name, timeout=5):
        return recs.get(name.decode().rstrip(".").lower(), "").encode() or None
    ok = False
    try:
        ok = dkim.DKIM(signed).verify(dnsfunc=dnsfunc)
    except dkim.ValidationError as e:
        ok = "ValidationError %s" % e
    chk.check("%s %s: verifies with that key's public half" % (label, dom), ok is True, ok)


def percent(h, chk):
    """OpenDKIM's %: a KeyTable whose domain is % and whose key path has %, carried as the
    same files; one per-domain key file signs for each of two domains with its own d= and
    key, and the % domain key signs every other domain as itself."""
    user, group = daemon_user()
    d = h.path("pct")
    os.makedirs(d)
    recs = {}
    for sub, dom, sel in (("one.example", "one.example", "per"), ("two.example", "two.example", "per"),
                          ("shared", "any.example", "pct")):
        kd = os.path.join(d, "keys", sub)
        os.makedirs(kd)
        rc, out = mw(["keygen", "--domain", dom, "--selector", sel, "--out", kd])
        if rc != 0:
            raise RuntimeError("keygen: %s" % out)
        recs[sub] = "".join(re.findall(r'"([^"]*)"', out.split("IN TXT", 1)[1]))
    if os.geteuid() == 0 and user != "root":
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid if group else -1
        for root, dirs, files in os.walk(os.path.join(d, "keys")):
            for n in dirs + files:
                os.chown(os.path.join(root, n), uid, gid)
        os.chown(os.path.join(d, "keys"), uid, gid)
    kt = h.write("pct/KeyTable", "perdom  %%:per:%s/keys/%%/per.private\n"
                 "shared  %%:pct:%s/keys/shared/pct.private\n" % (d, d))
    st = h.write("pct/SigningTable", "*@one.example perdom\n*@two.example perdom\n*@* shared\n")
    hosts = h.write("pct/TrustedHosts", "# internal\n127.0.0.1\n%s\n10.0.0.0/8\n" % resolvable_host())
    dk = h.write("pct/opendkim.conf", "Mode sv\nUserID %s%s\nKeyTable file:%s\nSigningTable refile:%s\n"
                 "InternalHosts refile:%s\nCanonicalization relaxed/relaxed\n"
                 % (user, ":" + group if group else "", kt, st, hosts))
    out = h.path("pct.conf")
    rc, log = mw(["migrate", "--opendkim", dk, "-o", out])
    chk.check("%: exit 0 (written and valid)", rc == 0, log[-2000:])
    text = open(out).read() if os.path.exists(out) else ""
    chk.check("%: KeyTable carried as the same file", 'key_table = "file:%s";' % kt in text, text[-1500:])
    chk.check("%: SigningTable carried as the same file", 'signing_table = "refile:%s";' % st in text)
    chk.check("%: InternalHosts (with a host name) carried as the same file",
              'internal_networks = [ "file:%s" ];' % hosts in text, text[-1500:])
    rc2, log2 = mw(["config-test", "-c", out])
    chk.check("%: config-test on the output passes", rc2 == 0, log2[-800:])
    sign_and_verify(chk, "%", out, "one.example", "one.example", "per", recs["one.example"])
    sign_and_verify(chk, "%", out, "two.example", "two.example", "per", recs["two.example"])
    sign_and_verify(chk, "%", out, "three.example", "three.example", "pct", recs["shared"])
    # a host name that does not resolve: config-test names the file and line
    h.write("pct/TrustedHosts", "127.0.0.1\nno-such-host.invalid\n")
    rc3, log3 = mw(["config-test", "-c", out])
    chk.check("%: an unresolvable host name fails config-test with FILE:LINE",
              rc3 != 0 and "%s:2:" % hosts in log3 and "no-such-host.invalid" in log3, log3[-800:])


def refusals(h, chk):
    out = h.write("exists.conf", "# keep me\n")
    rc, log = mw(["migrate", "--opendmarc", h.write("dm.conf", "RejectFailures false\n"), "-o", out])
    chk.check("existing output: refused (exit 2)", rc == 2 and "--force" in log, log[-400:])
    chk.check("existing output: untouched", open(out).read() == "# keep me\n")
    dk = h.write("db.conf", "KeyTable db:/etc/opendkim/keytable.db\nSigningTable refile:%s\n"
                 % h.write("st", "*@example.com k\n"))
    out = h.path("db-out.conf")
    rc, log = mw(["migrate", "--opendkim", dk, "-o", out])
    text = open(out).read() if os.path.exists(out) else ""
    chk.check("db: data set: reported as NOT CARRIED", "NOT CARRIED: KeyTable db:/etc/opendkim/keytable.db"
              in text and "db database" in text, text[-800:])
    chk.check("db: no policy change without OpenDMARC but monitor-only kept", 'policy = "monitor-only";' in text)


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("binary %s not built" % H.MW_BINARY)
    try:
        import dkim  # noqa: F401
    except ImportError:
        raise H.Skip("python3-dkim not installed")
    had_stock = stock(h, chk)
    conf, records = busy(h, chk)
    signing(h, chk, conf, records)
    percent(h, chk)
    refusals(h, chk)
    if not had_stock:
        print("note: neither %s nor %s is installed: the stock-config part was skipped"
              % tuple(STOCK.values()))


if __name__ == "__main__":
    H.run_test(test, "migrate", timeout=300)
