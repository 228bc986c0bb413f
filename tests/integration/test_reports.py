#!/usr/bin/python3
"""DMARC aggregate reports end to end (issue 6): `mailwarden report` on the history
fixture (tests/fixtures/history, see make_fixture.py), mailed through a real Postfix
(STARTTLS offered with a self-signed certificate) to its smtp-sink.

Proves:
  - the reports built from the fixture have exactly the expected rows and counts (two
    hosts' directories merge: 5 + 3 = 8 for the main row; one host alone gives 5), the
    file names are receiver!domain!begin!end!id.xml.gz, and every report validates with
    `xmllint --schema` in both formats (RFC 9990 and RFC 7489);
  - a history with torn, corrupt and other-version lines reports the intact records
    and counts the rest;
  - the relay's TLS certificate is verified (issue 13, item 8): refused (deferred, a
    clear reason) with the default settings against the self-signed certificate, and
    with report.tls_ca_file but a relay name the certificate does not carry; sent over
    TLS with report.tls_ca_file pointing at it, and with report.tls_verify = false;
  - --send: every report mail arrives (over verified STARTTLS), with the RFC 9990 subject,
    Auto-Submitted: auto-generated, a gzip attachment that decompresses and validates,
    and a DKIM signature (our signer, --sign) that dkimpy verifies against the
    published key; the authorised external rua (example.com._report._dmarc.thirdparty.test)
    gets its report, the unauthorised one (unauthorised.test) is refused and gets
    nothing; the duplicate rua (other case) gets one copy;
  - --dry-run sends and records nothing; a rerun sends nothing new;
  - a run killed (SIGKILL, MW_REPORT_TEST_DIE_AFTER=1) after its first delivery, then
    rerun, delivers every report exactly once;
  - 4xx from the relay: retried with backoff, then deferred (exit 1) and sent by the
    next run; 5xx: failed, not retried, the destination suppressed.
"""
import gzip, os, re, subprocess, sys, xml.etree.ElementTree as ET
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

FIX = os.path.join(H.SOURCE_DIR, "tests", "fixtures", "history")
SCHEMAS = os.path.join(os.path.dirname(os.path.realpath(H.SOURCE_DIR)), "shared", "conformance",
                       "dmarc-xml-schema")
if not os.path.isdir(SCHEMAS):
    SCHEMAS = os.path.join(H.SOURCE_DIR, "..", "shared", "conformance", "dmarc-xml-schema")
NS = "{urn:ietf:params:xml:ns:dmarc-2.0}"
PERIOD = "2025-03-01..2025-03-02"
DAY1 = 1740787200


def report(h, conf, *args, env=None, check=False, timeout=120):
    argv = [H.MW_BINARY, "report", "-c", conf] + list(args)
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=e)
    out = p.stdout + p.stderr
    if check and p.returncode != 0:
        raise RuntimeError("report exited %d:\n%s" % (p.returncode, out))
    return p.returncode, out


def validate(chk, label, xml_bytes, fmt, tmp):
    if not os.path.isdir(SCHEMAS):
        if not getattr(validate, "warned", False):
            print("NOTE: %s absent: schema validation skipped" % SCHEMAS, flush=True)
            validate.warned = True
        return
    path = os.path.join(tmp, "v.xml")
    with open(path, "wb") as f:
        f.write(xml_bytes)
    xsd = os.path.join(SCHEMAS, "dmarc-xml-0.2.xsd" if fmt == "rfc9990" else "rfc7489-fixed.xsd")
    p = subprocess.run(["xmllint", "--noout", "--schema", xsd, path], capture_output=True, text=True)
    chk.check("%s: validates against %s" % (label, os.path.basename(xsd)), p.returncode == 0, p.stderr[-500:])


def rows(root, ns=NS):
    """[(source_ip, count, disposition, envelope_to, ndkim)] of a report."""
    out = []
    for rec in root.findall(ns + "record"):
        row = rec.find(ns + "row")
        out.append((row.findtext(ns + "source_ip"), int(row.findtext(ns + "count")),
                    row.find(ns + "policy_evaluated").findtext(ns + "disposition"),
                    rec.find(ns + "identifiers").findtext(ns + "envelope_to"),
                    len(rec.find(ns + "auth_results").findall(ns + "dkim"))))
    return out


def strip_delivery(raw):
    """Drop smtp-sink's pseudo headers and its Received; CRLF line ends."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    while lines and re.match(rb"(X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args)"
                             rb"|Return-Path|Delivered-To):", lines[0]):
        lines.pop(0)
    if lines and lines[0].startswith(b"Received: from") and b"smtp-sink" in b"\n".join(lines[:3]):
        lines.pop(0)
        while lines and lines[0][:1] in (b" ", b"\t"):
            lines.pop(0)
    return b"\r\n".join(lines)


def sink_reports(pf):
    """{(report_id, to): [Message]} of the report mails in the sink."""
    out = {}
    for m in pf.messages():
        subj = " ".join(m.get_all("Subject"))
        mm = re.search(r"Report-ID: <([0-9a-f]+)>", subj)
        if not mm:
            continue
        to = (m.get_all("To") or [""])[0].strip().lower()
        out.setdefault((mm.group(1), to), []).append(m)
    return out


def attachment(m):
    import email
    msg = email.message_from_bytes(m.raw)
    for part in msg.walk():
        if part.get_content_type() == "application/gzip":
            return part.get_filename(), part.get_payload(decode=True)
    return None, None


def write_conf(h, name, dns_port, pf, state, receiver, extra="", retries=1, relay="127.0.0.1",
               ca=None):
    """ca: report.tls_ca_file (default: the relay's certificate, see test())."""
    ca = write_conf.ca if ca is None else ca
    return h.write(name, """
hostname = "mx.report.test";
dns = { mode = "forward"; forwarders = ["127.0.0.1@%d"]; timeout = 2000; };
report = {
  org_name = "Report Test Org";
  email = "dmarc-reports@report.test";
  extra_contact = "https://report.test/dmarc";
  receiver = "%s";
  relay_host = "%s";
  relay_port = %d;
  pacing = 0;
  retries = %d;
  backoff = 1;
  timeout = "20s";
  state_dir = "%s";
  history_dirs = ["%s/mx1", "%s/mx2"];
  %s
  %s
};
""" % (dns_port, receiver, relay, pf.port, retries, state, FIX, FIX,
       'tls_ca_file = "%s";' % ca if ca else "", extra))


write_conf.ca = ""


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("binary not built")
    rc, out = H.run([H.MW_BINARY, "report", "--help"], check=False)
    if "history" not in out:
        raise H.Skip("this binary has no report command")
    import dkim  # noqa: F401  (python3-dkim)

    # DKIM key for the reporting domain
    keydir = h.path("keys")
    kout = H.run([H.MW_BINARY, "keygen", "--domain", "report.test", "--selector", "rep", "--type",
                  "rsa", "--out", keydir], timeout=60)[1]
    keyline = [l for l in kout.splitlines() if "IN TXT" in l][0]
    keyrec = "".join(re.findall(r'"([^"]*)"', keyline))
    sign = "report.test:rep:%s/rep.private" % keydir

    dns_port, _ = h.start_testdns({
        "_dmarc.example.com": [{"TXT": "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"}],
        "_dmarc.example.org": [{"TXT": "v=DMARC1; p=reject; rua=mailto:dmarc@example.org"}],
        "example.com._report._dmarc.thirdparty.test": [{"TXT": "v=DMARC1"}],
        "example.org._report._dmarc.unauthorised.test": [{"TXT": "v=spf1 -all"}],
        "rep._domainkey.report.test": [{"TXT": keyrec}],
    }, verbose=False)

    # Postfix offering STARTTLS with a self-signed certificate for the relay's address
    cert, key = h.path("tls.crt"), h.path("tls.key")
    H.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.test.example",
           "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout", key, "-out", cert],
          timeout=60)
    os.chmod(key, 0o600)
    if "tlsmgr" not in H.MASTER_CF:   # smtpd's TLS needs the tlsmgr service (entropy, cache)
        H.MASTER_CF += "tlsmgr     unix  -  -  n  1000? 1  tlsmgr\n"
    pf = h.start_postfix(H.free_port(), default_action="accept", main_extra={
        "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key,
        "smtpd_tls_received_header": "yes"})

    write_conf.ca = cert     # the relay is verified against its certificate (see the end)
    conf = write_conf(h, "report.conf", dns_port, pf, h.path("state1"), "mx.report.test")
    tmp = h.path("work")
    os.makedirs(tmp)

    # ---- files from the fixture: rows, counts, names, schema validity
    for fmt in ("rfc9990", "rfc7489"):
        outdir = h.path("out-" + fmt)
        rc, out = report(h, conf, "--period", PERIOD, "--out", outdir, "--format", fmt)
        chk.equal("%s: exit 0" % fmt, rc, 0)
        files = sorted(os.listdir(outdir))
        chk.equal("%s: three report files" % fmt, len(files), 3)
        for fn in files:
            chk.check("%s: file name %s" % (fmt, fn),
                      re.fullmatch(r"mx\.report\.test!example\.(com|org)!\d+!\d+![0-9a-f]{32}\.xml\.gz", fn), fn)
            data = gzip.open(os.path.join(outdir, fn)).read()
            validate(chk, "%s %s" % (fmt, fn.split("!")[1]), data, fmt, tmp)
            root = ET.fromstring(data)
            ns = NS if fmt == "rfc9990" else ""
            b, e = fn.split("!")[2:4]
            chk.equal("%s: date_range matches the name" % fmt,
                      (root.findtext("%sreport_metadata/%sdate_range/%sbegin" % (ns, ns, ns)),
                       root.findtext("%sreport_metadata/%sdate_range/%send" % (ns, ns, ns))), (b, e))
            if fn.split("!")[1] == "example.com":
                want = [("192.0.2.1", 8, "pass" if fmt == "rfc9990" else "none", "example.net", 1),
                        ("192.0.2.1", 1, "pass" if fmt == "rfc9990" else "none", "other.example", 1),
                        ("192.0.2.99", 1, "none", "example.net", 2),
                        ("198.51.100.7", 2, "reject", "example.net", 2),
                        ("2001:db8::25" if fmt == "rfc9990" else "2001:db8:0:0:0:0:0:25", 2,
                         "quarantine", "example.net", 0)]
                chk.equal("%s: example.com rows and counts (mx1 + mx2 merged)" % fmt, rows(root, ns), want)
                chk.equal("%s: org_name" % fmt, root.findtext("%sreport_metadata/%sorg_name" % (ns, ns)),
                          "Report Test Org")
            elif b == str(DAY1):
                chk.equal("%s: example.org day 1 rows" % fmt, [r[:2] for r in rows(root, ns)],
                          [("203.0.113.5", 4), ("203.0.113.9", 1)])
            else:
                chk.equal("%s: example.org day 2 rows" % fmt, [r[:2] for r in rows(root, ns)],
                          [("203.0.113.5", 2)])

    # one host alone: 5, not 8
    outdir = h.path("out-mx1")
    report(h, conf, "--period", "2025-03-01", "--out", outdir, "--history", FIX + "/mx1", check=True)
    fn = [f for f in os.listdir(outdir) if "!example.com!" in f][0]
    chk.equal("mx1 alone: main row count 5", rows(ET.fromstring(gzip.open(os.path.join(outdir, fn)).read()))[0][1], 5)

    # torn history: the intact records, the rest counted
    outdir = h.path("out-torn")
    rc, out = report(h, conf, "--period", "2025-03-01", "--out", outdir, "--history", FIX + "/torn")
    chk.equal("torn: exit 0", rc, 0)
    chk.check("torn: counted", "7 records, 4 torn, 1 bad checksum, 1 other version" in out, out)
    files = os.listdir(outdir)
    if chk.equal("torn: one report", len(files), 1):
        data = gzip.open(os.path.join(outdir, files[0])).read()
        chk.equal("torn: rows of the intact records", [r[:2] for r in rows(ET.fromstring(data))],
                  [("192.0.2.10", 3), ("192.0.2.11", 3), ("192.0.2.12", 1)])
        validate(chk, "torn", data, "rfc9990", tmp)

    # ---- dry run: nothing sent, nothing recorded
    rc, out = report(h, conf, "--period", PERIOD, "--dry-run", "--sign", sign)
    chk.equal("dry run: exit 0", rc, 0)
    chk.check("dry run: would send to dmarc@example.com", "dmarc@example.com: would send" in out, out)
    chk.check("dry run: unauthorised refused", "agg@unauthorised.test: refused" in out, out)
    chk.check("dry run: no state written", not os.path.exists(h.path("state1", "state.journal")))


    # ---- send
    rc, out = report(h, conf, "--period", PERIOD, "--send", "--sign", sign)
    chk.equal("send: exit 0", rc, 0)
    chk.check("send: 4 sent, 2 refused", "4 sent, 0 already done, 0 deferred, 0 failed, 2 refused" in out, out)
    chk.check("send: over TLS", "sent over TLS" in out, out)
    ids = dict(re.findall(r"^report (example\.\S+ \S+) .* id=([0-9a-f]+)", out, re.M))
    want = {(ids["example.com 2025-03-01T00:00:00Z"], "dmarc@example.com"),
            (ids["example.com 2025-03-01T00:00:00Z"], "reports@thirdparty.test"),
            (ids["example.org 2025-03-01T00:00:00Z"], "dmarc@example.org"),
            (ids["example.org 2025-03-02T00:00:00Z"], "dmarc@example.org")}
    got = H.wait_for(lambda: (lambda s: s if set(s) >= want else None)(sink_reports(pf)), 30) or sink_reports(pf)
    chk.equal("send: the four report mails arrived", set(got), want)
    chk.check("send: nothing for the unauthorised rua",
              not any("unauthorised" in m.raw.decode("latin-1") for m in pf.messages()))
    records = {}
    for (rid, to), ms in got.items():
        m = ms[0]
        label = "mail %s..%s" % (rid[:8], to)
        subj = " ".join(m.get_all("Subject"))
        chk.check(label + ": RFC 9990 subject",
                  re.fullmatch(r"Report Domain: example\.(com|org) Submitter: mx\.report\.test Report-ID: <%s>" % rid,
                               re.sub(r"\s+", " ", subj)), subj)
        chk.equal(label + ": Auto-Submitted", m.get_all("Auto-Submitted"), ["auto-generated"])
        chk.check(label + ": relayed over TLS", any("TLS" in v for v in m.get_all("Received")), m.get_all("Received"))
        fn, gz = attachment(m)
        chk.check(label + ": attachment name", fn is not None and fn.endswith("!%s.xml.gz" % rid), fn)
        if gz:
            data = gzip.decompress(gz)
            validate(chk, label, data, "rfc9990", tmp)
        raw = strip_delivery(m.raw)
        try:
            ok = dkim.DKIM(raw).verify(dnsfunc=lambda name, timeout=5:
                                       keyrec.encode() if name.decode().rstrip(".").lower() == "rep._domainkey.report.test" else None)
        except Exception as e:
            ok = e
        chk.check(label + ": DKIM verifies (dkimpy)", ok is True, ok)
        records[(rid, to)] = 1

    # ---- rerun: nothing new
    n_before = len(pf.messages())
    rc, out = report(h, conf, "--period", PERIOD, "--send", "--sign", sign)
    chk.equal("rerun: exit 0", rc, 0)
    chk.check("rerun: nothing sent", " 0 sent, 6 already done" in out, out)
    H.wait_for(lambda: None, 2)
    chk.equal("rerun: no new mail", len(pf.messages()), n_before)

    # ---- killed mid-send, then rerun: each report exactly once
    conf2 = write_conf(h, "report2.conf", dns_port, pf, h.path("state2"), "mx2.report.test")
    rc, out = report(h, conf2, "--period", PERIOD, "--send", "--sign", sign,
                     env={"MW_REPORT_TEST_DIE_AFTER": "1"})
    chk.equal("crash: killed by SIGKILL", rc, -9)
    chk.check("crash: one delivery before", out.count(": sent") == 1, out)
    rc, out = report(h, conf2, "--period", PERIOD, "--send", "--sign", sign)
    chk.equal("crash rerun: exit 0", rc, 0)
    chk.check("crash rerun: the other three sent", "3 sent, 1 already done, 0 deferred, 0 failed, 2 refused" in out, out)
    ids2 = set(re.findall(r"id=([0-9a-f]+)", out))

    def phase2():
        s = {k: v for k, v in sink_reports(pf).items() if k[0] in ids2}
        return s if len(s) >= 4 else None
    s2 = H.wait_for(phase2, 30) or {k: v for k, v in sink_reports(pf).items() if k[0] in ids2}
    chk.equal("crash rerun: four distinct report mails", len(s2), 4)
    chk.check("crash rerun: each exactly once", all(len(v) == 1 for v in s2.values()),
              {k: len(v) for k, v in s2.items()})

    # ---- 4xx and 5xx from the relay
    pf.set(smtpd_recipient_restrictions="check_recipient_access inline:{ reports@thirdparty.test=REJECT, "
                                        "dmarc@example.org=DEFER }, permit_mynetworks, reject")
    conf3 = write_conf(h, "report3.conf", dns_port, pf, h.path("state3"), "mx3.report.test",
                       "suppress_5xx_after = 1;")
    rc, out = report(h, conf3, "--period", PERIOD, "--send", "--sign", sign)
    chk.equal("4xx/5xx: exit 1", rc, 1)
    chk.check("4xx: retried then deferred", "temporary failure at rcpt" in out and "deferred after 2 attempts" in out, out)
    chk.check("5xx: failed and suppressed", "reports@thirdparty.test: failed at rcpt" in out
              and "destination now suppressed" in out, out)
    chk.check("4xx/5xx: counts", "1 sent, 0 already done, 2 deferred, 1 failed" in out, out)
    pf.set(smtpd_recipient_restrictions="permit_mynetworks, reject")
    rc, out = report(h, conf3, "--period", PERIOD, "--send", "--sign", sign)
    chk.equal("after 4xx: exit 0", rc, 0)
    chk.check("after 4xx: the deferred two sent, the failed one not retried",
              "2 sent, 4 already done" in out and "reports@thirdparty.test: already failed" in out, out)

    # ---- the relay's certificate (issue 13, item 8): verified by default
    one = ("--period", "2025-03-02", "--send")    # one report, one destination
    # (receiver tls.report.test: other report ids than the runs below check)
    c = write_conf(h, "tls-default.conf", dns_port, pf, h.path("state-tls1"), "tls.report.test", retries=0,
                   ca="")
    rc, out = report(h, c, *one)
    chk.equal("tls default: the self-signed relay certificate is refused (exit 1)", rc, 1)
    chk.check("tls default: a clear reason, deferred, nothing sent",
              "TLS certificate verification failed for 127.0.0.1: self-signed certificate" in out
              and "deferred after 1 attempt at starttls" in out and " 0 sent, 0 already done, 1 deferred" in out, out)
    chk.check("tls default: the log names the keys", "report.tls_ca_file" in out, out)
    rc, out = report(h, c, *one)
    chk.check("tls default: retried by the next run, still refused",
              rc == 1 and "certificate verification failed" in out, out)
    c = write_conf(h, "tls-name.conf", dns_port, pf, h.path("state-tls2"), "tls.report.test", retries=0,
                   relay="localhost", ca=cert)
    rc, out = report(h, c, *one)
    chk.check("tls CA file, wrong name (localhost vs IP:127.0.0.1): refused",
              rc == 1 and "verification failed for localhost: hostname mismatch" in out, out)
    c = write_conf(h, "tls-noverify.conf", dns_port, pf, h.path("state-tls3"), "tls.report.test", retries=0,
                   ca="", extra="tls_verify = false;")
    rc, out = report(h, c, *one)
    chk.check("tls_verify = false: sent over TLS", rc == 0 and "sent over TLS" in out
              and " 1 sent" in out, out)
    c = write_conf(h, "tls-ca.conf", dns_port, pf, h.path("state-tls4"), "tls.report.test", retries=0, ca=cert)
    rc, out = report(h, c, *one)
    chk.check("tls_ca_file = the relay's CA: verified, sent over TLS", rc == 0 and "sent over TLS" in out
              and " 1 sent" in out, out)


if __name__ == "__main__":
    H.run_test(test, "reports", timeout=600)
