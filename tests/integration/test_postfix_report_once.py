#!/usr/bin/python3
"""What a domain owner's aggregate report says about mail that went through a real Postfix
(issue 15, "what must hold").

Zone (tests/lib/testdns.py): retry.test publishes p=reject with rua, SPF -all, and a DKIM
key whose lookup first times out; reject.test publishes p=reject with rua and SPF for the
namespace client.  The daemon runs behind Postfix with --history.
Proves:
  - a message deferred twice (451 at end of DATA: its only aligned identifier's key
    lookup timed out) and delivered at the third attempt, once the key answers, is ONE
    message: one history record, and `mailwarden report` gives retry.test one row of
    count 1 with disposition pass (RFC 9990) and DKIM pass;
  - the same daemon with the monitor-only policy delivers a spoofed p=reject message,
    and the report row for it carries disposition none and
    <reason><type>local_policy</type> naming the rule (RFC 9990: a reason whenever the
    disposition is below the published policy);
  - each report validates against the RFC 9990 schema (when ../shared is present).
Without the fix (every 4xx attempt written to the history) the report has a row per
attempt (measured: 7 rows of disposition none + 1 pass).
"""
import datetime, gzip, json, os, re, signal, sys, uuid, xml.etree.ElementTree as ET
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_history_crash import read_history
from test_reports import NS, validate

SPOOF_FROM = "mallory@evil.test"


def zone(ip, key_entry):
    spf = {"TXT": "v=spf1 ip4:%s -all" % ip}
    return {"evil.test": [spf],
            "retry.test": [{"TXT": "v=spf1 -all"}, {"A": "192.0.2.9"}],
            "_dmarc.retry.test": [{"TXT": "v=DMARC1; p=reject; rua=mailto:agg@retry.test"}],
            "s1._domainkey.retry.test": [key_entry],
            "reject.test": [spf, {"A": "192.0.2.8"}],
            "_dmarc.reject.test": [{"TXT": "v=DMARC1; p=reject; rua=mailto:agg@reject.test"}]}


def message(frm, token):
    return ("From: %s\r\nTo: bob@dest.test\r\nSubject: once %s\r\nMessage-ID: <%s@t>\r\n"
            "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody %s\r\n" % (frm, token, token, token)).encode()


def report_rows(root):
    out = []
    for rec in root.findall(NS + "record"):
        row = rec.find(NS + "row")
        pe = row.find(NS + "policy_evaluated")
        reasons = [(r.findtext(NS + "type"), r.findtext(NS + "comment")) for r in pe.findall(NS + "reason")]
        dk = [d.findtext(NS + "result") for d in rec.find(NS + "auth_results").findall(NS + "dkim")]
        out.append({"ip": row.findtext(NS + "source_ip"), "count": int(row.findtext(NS + "count")),
                    "disposition": pe.findtext(NS + "disposition"), "dkim": dk, "reasons": reasons})
    return out


def run_report(h, hist, outdir):
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    rc, out = H.run([H.MW_BINARY, "report", "--history", hist, "--period", day, "--out", outdir],
                    timeout=120, check=False)
    if rc != 0:
        raise RuntimeError("report exited %d:\n%s" % (rc, out))
    got = {}
    for fn in sorted(os.listdir(outdir)):
        data = gzip.open(os.path.join(outdir, fn)).read()
        got[fn.split("!")[1]] = data
    return got, out


def test(h, chk):
    try:
        import dkim
    except ImportError as e:
        raise H.Skip("python3-dkim missing: %s" % e)
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    ns = h.create_netns()
    keydir = h.path("keys")
    os.makedirs(keydir, mode=0o700)
    out = H.run([H.MW_BINARY, "keygen", "--domain", "retry.test", "--selector", "s1", "--type", "rsa",
                 "--bits", "2048", "--out", keydir], timeout=60)[1]
    key_txt = re.findall(r'"([^"]*)"', [l for l in out.splitlines() if "IN TXT" in l][0])
    with open(os.path.join(keydir, "s1.private"), "rb") as f:
        key = f.read()
    dns, dnsproc = h.start_testdns(zone(ns.ns_addr, "TIMEOUT"), verbose=False)
    hist = h.path("history")
    daemon = h.start_daemon(dns=[dns], args=["--history", hist])
    pf = h.start_postfix(daemon.port, netns=ns)

    def send(data, mail_from=SPOOF_FROM):
        path = h.path("m-%s.eml" % uuid.uuid4().hex[:10])
        with open(path, "wb") as f:
            f.write(data)
        return pf.send(mail_from, "bob@dest.test", helo="mx.evil.test", data=path)

    # ---- one message, deferred twice, then delivered (the same bytes each time, as a
    #      sending MTA's retries are)
    t = "retry-%s" % uuid.uuid4().hex
    msg = message("ceo@retry.test", t)
    msg = dkim.sign(msg, b"s1", b"retry.test", key, include_headers=[b"from", b"to", b"subject"]) + msg
    for attempt in (1, 2):
        res = send(msg)
        chk.check("attempt %d: 451 at end of DATA (key lookup timed out)" % attempt,
                  res.code == "451", res.transcript[-400:])
    with open(dnsproc.zone_file, "w") as f:
        json.dump(zone(ns.ns_addr, {"TXT": key_txt}), f)
    dnsproc.send_signal(signal.SIGHUP)
    chk.check("the key answers now", H.wait_for(
        lambda: H.dns_query(dns, "s1._domainkey.retry.test", "TXT"), 10))
    # The resolver may keep the failure a few seconds (libunbound caches a SERVFAIL
    # briefly), so the sender retries until accepted, as an MTA would; every further
    # 451 only adds attempts, which must still count once.
    deferred, res = 2, None
    for _ in range(60):
        res = send(msg)
        if res.code != "451":
            break
        deferred += 1
        H.wait_for(lambda: False, 1.0)
    chk.check("retry after the key answers: accepted (after %d deferrals)" % deferred,
              res.code == "250", res.transcript[-400:])
    m = pf.wait_delivered(t)
    ar = H.ar_headers(m) if m is not None else []
    chk.check("the retry: delivered with dmarc=pass", len(ar) == 1 and "dmarc=pass" in ar[0], ar)

    # ---- monitor-only: a spoof at p=reject delivered; its row must carry the reason
    daemon.stop()
    daemon = h.start_daemon(dns=[dns], port=daemon.port, args=["--history", hist, "--policy", "monitor-only"])
    t2 = "spoof-%s" % uuid.uuid4().hex
    res = send(message("ceo@reject.test", t2))
    chk.check("monitor-only: spoofed p=reject accepted", res.code == "250", res.transcript[-400:])
    chk.check("monitor-only: delivered", pf.wait_delivered(t2) is not None)
    daemon.stop()   # history closed: every record on disk

    recs, st = read_history(hist)
    chk.equal("history: one record for the message tried several times",
              len([r for r in recs if r.get("header_from") == "retry.test"]), 1)

    reports, rout = run_report(h, hist, h.path("out"))
    chk.check("report: retry.test and reject.test reports", set(reports) == {"retry.test", "reject.test"},
              (sorted(reports), rout))
    tmp = h.path("v")
    os.makedirs(tmp)
    for dom, data in sorted(reports.items()):
        validate(chk, "report for %s" % dom, data, "rfc9990", tmp)
    if "retry.test" in reports:
        rows = report_rows(ET.fromstring(reports["retry.test"]))
        chk.equal("retry.test: one row, count 1, disposition pass (RFC 9990), DKIM pass",
                  [(r["count"], r["disposition"], r["dkim"]) for r in rows], [(1, "pass", ["pass"])])
    if "reject.test" in reports:
        rows = report_rows(ET.fromstring(reports["reject.test"]))
        chk.check("reject.test (monitor-only): one row, disposition none, reason local_policy with the rule",
                  len(rows) == 1 and rows[0]["count"] == 1 and rows[0]["disposition"] == "none"
                  and len(rows[0]["reasons"]) == 1 and rows[0]["reasons"][0][0] == "local_policy"
                  and "rule" in (rows[0]["reasons"][0][1] or ""), rows)


if __name__ == "__main__":
    H.run_test(test, "report-once", timeout=300)
