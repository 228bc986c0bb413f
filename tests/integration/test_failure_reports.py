#!/usr/bin/python3
"""RFC 9991 failure reports behind a real Postfix (issue 15, part 2).

Zone: fr.test publishes p=none with fo=1 and ruf to ruf@fr.test (same domain), to
x@unauth.test (external, no _report._dmarc record: must be refused) and to
y@ext.test (external, authorised by fr.test._report._dmarc.ext.test).  The spoofer
(evil.test, SPF pass for the namespace client) sends From: ceo@fr.test: DMARC fails,
the message is delivered (p=none).  `mailwarden report --failure` hands the queued
reports to the same Postfix, which delivers them to its maildir.

Proves:
  - report.failure = full: exactly one report per authorised address (ruf@fr.test and
    y@ext.test), none to the unauthorised x@unauth.test (refused, counted in the summary);
    the report parses with Python's email package as multipart/report;
    report-type=feedback-report with three parts, and the message/feedback-report part
    is checked field by field; the text/rfc822-headers part holds the original header
    as received; a rerun sends nothing again and the spool is empty;
  - report.failure = redacted: the header part and Original-Mail-From carry no local
    part of any address (SHA-256 tokens instead), the domains stay;
  - report.failure_rate = 1: of two failing messages one report is queued, the limit is
    logged once and counted (mailwarden_failure_reports_total{result="rate_limited"});
  - report.failure = off (the default): nothing queued, nothing sent.
"""
import email, email.policy, hashlib, os, re, subprocess, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

SPOOF = "mallory@evil.test"
RUF = "mailto:ruf@fr.test,mailto:x@unauth.test,mailto:y@ext.test"


def zone(ip):
    return {"evil.test": [{"TXT": "v=spf1 ip4:%s -all" % ip}],
            "fr.test": [{"TXT": "v=spf1 -all"}, {"A": "192.0.2.8"}],
            "_dmarc.fr.test": [{"TXT": "v=DMARC1; p=none; fo=1; ruf=%s" % RUF}],
            "fr.test._report._dmarc.ext.test": [{"TXT": "v=DMARC1"}],
            "ext.test": [{"A": "192.0.2.12"}], "unauth.test": [{"A": "192.0.2.13"}]}


def conf(h, name, dns, pf, spool, mode, rate=10, metrics=None):
    return h.write(name, """
hostname = "mx.fr-report.test";
dns = { mode = "forward"; forwarders = ["127.0.0.1@%d"]; timeout = 2000; };
%s
report = {
  email = "reports@mx.fr-report.test";
  relay_host = "127.0.0.1";
  relay_port = %d;
  starttls = false;
  retries = 0;
  timeout = "20s";
  failure = "%s";
  failure_rate = %d;
  failure_dir = "%s";
};
""" % (dns, 'metrics = { listen = "%d"; };' % metrics if metrics else "", pf.port, mode, rate,
       spool))


def message(token):
    return ("From: CEO <ceo@fr.test>\r\nTo: Bob <bob@dest.test>\r\nSubject: wire " + token +
            "\r\nMessage-ID: <" + token + "@evil.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            "\r\nbody " + token + "\r\n").encode()


def queued(spool):
    d = os.path.join(spool, "new")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def reports_for(pf, token):
    """Delivered failure reports naming the original message (its token)."""
    out = []
    for m in pf.messages():
        if b"report-type=feedback-report" not in m.raw:
            continue
        if token.encode() in m.raw:
            out.append(m)
    return out


RUNS = []   # every report run's output: checked for sanitizer findings at the end


def run_report(conf_path, *args):
    p = subprocess.run([H.MW_BINARY, "report", "-c", conf_path, "--failure"] + list(args),
                       capture_output=True, text=True, timeout=120)
    RUNS.append(p.stdout + p.stderr)
    return p.returncode, p.stdout + p.stderr


def parse(m):
    msg = email.message_from_bytes(m.raw, policy=email.policy.compat32)
    parts = msg.get_payload() if msg.is_multipart() else []
    return msg, parts


def check_report(chk, label, m, client_ip, redacted):
    msg, parts = parse(m)
    chk.check("%s: multipart/report; report-type=feedback-report" % label,
              msg.get_content_type() == "multipart/report"
              and msg.get_param("report-type") == "feedback-report", msg.get("Content-Type"))
    if not chk.check("%s: three parts (text, feedback-report, rfc822-headers)" % label,
                     [p.get_content_type() for p in parts] ==
                     ["text/plain", "message/feedback-report", "text/rfc822-headers"],
                     [p.get_content_type() for p in parts]):
        return
    fb = parts[1].get_payload()[0]
    want = {"Feedback-Type": "auth-failure", "Version": "1", "Auth-Failure": "dmarc",
            "Source-IP": client_ip, "Reported-Domain": "fr.test", "Identity-Alignment": "none",
            "Delivery-Result": "delivered"}
    for k, v in want.items():
        chk.equal("%s: %s" % (label, k), (fb[k] or "").strip(), v)
    chk.check("%s: User-Agent mailwarden/..." % label, (fb["User-Agent"] or "").startswith("mailwarden/"),
              fb["User-Agent"])
    ar = " ".join((fb["Authentication-Results"] or "").split())
    chk.check("%s: Authentication-Results is ours, dmarc=fail header.from=fr.test" % label,
              ar.startswith(H.AUTHSERV_ID + ";") and "dmarc=fail" in ar and "header.from=fr.test" in ar,
              ar)
    chk.check("%s: Original-Envelope-Id (the queue id)" % label,
              re.fullmatch(r"[0-9A-Za-z]+", (fb["Original-Envelope-Id"] or "").strip()) is not None,
              fb["Original-Envelope-Id"])
    chk.check("%s: Arrival-Date is an RFC 5322 date" % label,
              email.utils.parsedate_tz(fb["Arrival-Date"] or "") is not None, fb["Arrival-Date"])
    omf = (fb["Original-Mail-From"] or "").strip()
    hdr = parts[2].get_payload()
    if redacted:
        tok = "redacted-" + hashlib.sha256(b"ceo").hexdigest()[:16]
        chk.check("%s: Original-Mail-From redacted" % label,
                  omf == "<redacted-%s@evil.test>" % hashlib.sha256(b"mallory").hexdigest()[:16], omf)
        chk.check("%s: header part: no local part left, the From's is its SHA-256 token" % label,
                  "ceo@" not in hdr and "bob@" not in hdr and "mallory@" not in hdr
                  and "%s@fr.test" % tok in hdr and "From: CEO <" in hdr, hdr[:600])
    else:
        chk.equal("%s: Original-Mail-From" % label, omf, "<%s>" % SPOOF)
        chk.check("%s: header part: the original header as received" % label,
                  "From: CEO <ceo@fr.test>" in hdr and "To: Bob <bob@dest.test>" in hdr
                  and "Subject: wire" in hdr, hdr[:600])


def send(h, pf, token):
    path = h.path("m-%s.eml" % token[-10:])
    with open(path, "wb") as f:
        f.write(message(token))
    return pf.send(SPOOF, "bob@dest.test", helo="mx.evil.test", data=path)


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    rc, out = H.run([H.MW_BINARY, "report", "--help"], check=False)
    if "--failure" not in out:
        raise H.Skip("this binary has no report --failure")
    ns = h.create_netns()
    dns, _ = h.start_testdns(zone(ns.ns_addr), verbose=False)
    port = H.free_port()
    pf = h.start_postfix(port, netns=ns, default_action="accept")
    tok = lambda: "tok-%s" % uuid.uuid4().hex

    # ---- full
    spool = h.path("spool-full")
    c = conf(h, "full.conf", dns, pf, spool, "full")
    daemon = h.start_daemon(port=port, args=["-c", c])
    t = tok()
    res = send(h, pf, t)
    chk.equal("full: spoofed mail accepted (p=none)", res.code, "250")
    chk.check("full: delivered", pf.wait_delivered(t) is not None)
    chk.equal("full: one report queued", len(queued(spool)), 1)
    rc, out = run_report(c)
    chk.check("full: report --failure exits 0", rc == 0, out)
    chk.check("full: unauthorised external ruf refused", re.search(
        r"x@unauth\.test: refused: external destination not authorised", out) is not None, out)
    chk.check("full: summary: 2 sent, 1 refused", "2 sent" in out and "1 refused" in out, out)
    H.wait_for(lambda: len(reports_for(pf, t)) >= 2, 20)
    pf.flush()
    reps = reports_for(pf, t)
    tos = sorted(" ".join(r.get_all("To")).strip() for r in reps)
    chk.equal("full: exactly one report each to ruf@fr.test and y@ext.test", tos,
              ["ruf@fr.test", "y@ext.test"])
    for r in reps[:1]:
        check_report(chk, "full", r, ns.ns_addr, redacted=False)
    chk.equal("full: spool empty after sending", queued(spool), [])
    rc, out = run_report(c)
    chk.check("full: rerun sends nothing", rc == 0 and "0 sent" in out, out)
    pf.flush()
    chk.check("full: still exactly two reports", not H.wait_for(lambda: len(reports_for(pf, t)) > 2, 2))
    daemon.stop()

    # ---- redacted
    spool = h.path("spool-red")
    c = conf(h, "red.conf", dns, pf, spool, "redacted")
    daemon = h.start_daemon(port=port, args=["-c", c])
    t = tok()
    res = send(h, pf, t)
    chk.equal("redacted: accepted", res.code, "250")
    chk.equal("redacted: one report queued", len(queued(spool)), 1)
    rc, out = run_report(c)
    chk.check("redacted: report --failure exits 0", rc == 0, out)
    H.wait_for(lambda: len(reports_for(pf, t)) >= 2, 20)
    reps = [r for r in reports_for(pf, t) if "ruf@fr.test" in " ".join(r.get_all("To"))]
    if chk.equal("redacted: one report to ruf@fr.test", len(reps), 1):
        check_report(chk, "redacted", reps[0], ns.ns_addr, redacted=True)
    daemon.stop()

    # ---- rate limit
    spool = h.path("spool-rate")
    mport = H.free_port()
    c = conf(h, "rate.conf", dns, pf, spool, "full", rate=1, metrics=mport)
    daemon = h.start_daemon(port=port, args=["-c", c])
    for i in range(3):
        chk.equal("rate: message %d accepted" % i, send(h, pf, tok()).code, "250")
    chk.equal("rate: one report queued of three", len(queued(spool)), 1)
    import urllib.request
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
    def metric(res):
        mm = re.search(r'^mailwarden_failure_reports_total\{result="%s"\} (\d+)' % res, body, re.M)
        return int(mm.group(1)) if mm else None
    # three ruf addresses: the first message queues all three, the next two are limited
    chk.equal("rate: queued counted", metric("queued"), 3)
    chk.equal("rate: rate_limited counted", metric("rate_limited"), 6)
    daemon.stop()
    log = daemon.log_text()
    if True:
        chk.equal("rate: the limit logged once per address",
                  len(re.findall(r"failure reports to ruf@fr\.test: report\.failure_rate", log)), 1)
    rc, out = run_report(c)
    chk.check("rate: the queued one is sent", rc == 0 and "2 sent" in out, out)

    # ---- off (the default)
    spool = h.path("spool-off")
    c = conf(h, "off.conf", dns, pf, spool, "off")
    daemon = h.start_daemon(port=port, args=["-c", c])
    t = tok()
    chk.equal("off: accepted", send(h, pf, t).code, "250")
    chk.check("off: delivered", pf.wait_delivered(t) is not None)
    chk.equal("off: nothing queued", queued(spool), [])
    rc, out = run_report(c)
    chk.check("off: report --failure sends nothing", rc == 0 and "0 sent" in out, out)
    pf.flush()
    chk.check("off: no report for the message", not H.wait_for(lambda: reports_for(pf, t), 2))
    daemon.stop()
    bad = [o for o in RUNS if "runtime error:" in o or "Sanitizer" in o]
    chk.check("report --failure: no sanitizer finding in any run", not bad, bad[:1])


if __name__ == "__main__":
    H.run_test(test, "failure_reports", timeout=400)
