#!/usr/bin/python3
"""Hostile rua values and history lines do not stop aggregate reporting (issue 13,
defect 3; issue 15, "a destination that is refused is refused alone").

Mail from an outside client (network namespace) through a real Postfix and the daemon
(--history) at domains whose DMARC records (test DNS zone) publish:
  aa-good.test, m-good.test, zz-good.test   one plain rua each (they sort before,
                                            between and after the hostile ones)
  a-overlong.test   a 600-byte local part (the defect: the state journal refused it,
                    the run stopped for good, every later domain lost its report)
  b-many.test       300 same-domain addresses (the record parser keeps 16; the report
                    mails report.max_destinations = 5 and refuses the rest, counted)
  c-scheme.test     https:, ftp:, data: URIs only
  d-crlf.test       CR/LF percent-encoded (an RCPT/header injection attempt) and raw
  e-size.test       "!size" junk, and an address with a huge !size: RFC 9990 (the
                    default report.format) ignores "!..." suffixes, so all three are
                    good destinations (issue 15); the RFC 7489 parser still refuses junk
  f-mixed.test      a hostile address first, then a good one (refusal is per address)
plus a second history directory with hand-written hostile lines (a policy domain with
CR/LF, one with "../", a bad source IP).

Proves: `mailwarden report --send` exits 0 and sends every good report: each arrives at
the sink once and validates (xmllint --schema); the bad destinations, the destinations
over the limit and the refused history records are counted in the output; nothing of
the injection reaches Postfix (no "victim" recipient, no injected header); the output
holds no raw control characters; the period is closed, so a rerun sends nothing new,
finds everything done and counts the same refusals again.
"""
import gzip, os, re, subprocess, sys, time, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_reports import SCHEMAS, attachment, sink_reports, validate

sys.path.insert(0, os.path.join(H.SOURCE_DIR, "tests", "fixtures", "history"))
from make_fixture import line as history_line   # noqa: E402  (MWH1 + CRC32C)

LONG_LOCAL = "x" * 600
MANY = ",".join("mailto:r%d@b-many.test" % i for i in range(300))
RUA = {
    "aa-good.test": "mailto:dmarc@aa-good.test",
    "m-good.test": "mailto:dmarc@m-good.test",
    "zz-good.test": "mailto:dmarc@zz-good.test",
    "a-overlong.test": "mailto:%s@a-overlong.test" % LONG_LOCAL,
    "b-many.test": MANY,
    "c-scheme.test": "https://c-scheme.test/dmarc,ftp://c-scheme.test/x,data:text/plain;a@c-scheme.test",
    "d-crlf.test": "mailto:a%0d%0aRCPT%20TO:%3cvictim@x.test%3e@d-crlf.test,"
                   "mailto:b@d-crlf.test%0d%0aX-Injected:%20yes",
    "e-size.test": "mailto:r1@e-size.test!junk,mailto:r2@e-size.test!10m!20m,"
                   "mailto:r3@e-size.test!99999999999999999999999t",
    "f-mixed.test": "mailto:%s@f-mixed.test,mailto:dmarc@f-mixed.test" % LONG_LOCAL,
}
# what the report tool must do with them
GOOD_DEST = {"dmarc@aa-good.test", "dmarc@m-good.test", "dmarc@zz-good.test", "dmarc@f-mixed.test",
             "r0@b-many.test", "r1@b-many.test", "r2@b-many.test", "r3@b-many.test", "r4@b-many.test",
             "r1@e-size.test", "r2@e-size.test", "r3@e-size.test"}
BAD_DEST = 1 + 3 + 2 + 0 + 1      # overlong, schemes, crlf, size suffixes (ignored), mixed
OVER_LIMIT = 16 - 5               # the record parser keeps 16 URIs, 5 are mailed


def zone(client_ip):
    z = {}
    for dom, rua in RUA.items():
        z[dom] = [{"TXT": "v=spf1 ip4:%s -all" % client_ip}]
        z["_dmarc." + dom] = [{"TXT": "v=DMARC1; p=none; rua=%s" % rua}]
    # a raw CR/LF inside the record: the record parser drops that URI itself
    z["_dmarc.d-crlf.test"][0]["TXT"] += ",mailto:c@d-crlf.test\r\nRCPT TO:<victim2@x.test>"
    return z


def hostile_history(d, t):
    """A history file with hostile lines (written as another host would)."""
    os.makedirs(d)
    base = {"time": t, "source_ip": "192.0.2.77", "header_from": "h.test", "envelope_from": "h.test",
            "envelope_to": "dest.test", "spf_domain": "h.test", "spf_scope": "mfrom", "spf_result": "pass",
            "p": "none", "disposition": "none", "dkim_aligned": "fail", "spf_aligned": "pass",
            "reporter_host": "mx9.test", "dkim": []}
    recs = [dict(base, policy_domain="evil.test\r\nBcc: victim3@x.test", rua=["mailto:d@evil.test"]),
            dict(base, policy_domain="../../evil", rua=["mailto:d@evil.test"]),
            dict(base, policy_domain="zz-good.test", source_ip="not-an-ip\r\n",
                 rua=["mailto:dmarc@zz-good.test"])]
    period = t - t % 3600
    name = "history-%s.log" % time.strftime("%Y%m%d%H%M%S", time.gmtime(period))
    with open(os.path.join(d, name), "wb") as f:
        for r in recs:
            f.write(history_line(r))


def report(conf, env, *args):
    e = dict(os.environ)
    e.update(env)
    p = subprocess.run([H.MW_BINARY, "report", "-c", conf] + list(args), capture_output=True,
                       text=True, timeout=300, env=e)
    return p.returncode, p.stdout, p.stderr


def summary(out):
    m = re.search(r"^summary: .*$", out, re.M)
    return m.group(0) if m else ""


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("binary not built")
    ns = h.create_netns()
    dns, _ = h.start_testdns(zone(ns.ns_addr), verbose=False)
    hist = h.path("history")
    daemon = h.start_daemon(dns=[dns], args=["--history", hist])
    pf = h.start_postfix(daemon.port, netns=ns)

    # ---- one message per domain, from outside: the daemon writes the history
    day = int(time.time()) // 86400 * 86400
    for dom in sorted(RUA):
        tok = "tok-%s" % uuid.uuid4().hex
        path = h.path("m-%s.eml" % tok)
        with open(path, "wb") as f:
            f.write(("From: user@%s\r\nTo: bob@dest.test\r\nSubject: %s\r\nMessage-ID: <%s@t>\r\n"
                     "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody %s\r\n" % (dom, tok, tok, tok)).encode())
        res = pf.send("user@" + dom, "bob@dest.test", helo="mx." + dom, data=path)
        chk.check("%s: message accepted (p=none)" % dom, res.code == "250", res.final)

    def history_domains():
        from test_history_crash import read_history
        recs, _ = read_history(hist)
        doms = {r.get("policy_domain") for r in recs}
        return doms if doms >= set(RUA) else None
    got = H.wait_for(history_domains, 20)
    chk.check("history: a record for every domain", got, got)
    hostile_dir = h.path("history-hostile")
    hostile_history(hostile_dir, int(time.time()))

    # ---- the report run: period = today, "now" = the day after tomorrow (today is over)
    d0 = time.strftime("%Y-%m-%d", time.gmtime(day))
    d1 = time.strftime("%Y-%m-%d", time.gmtime(day + 86400))
    env = {"MW_REPORT_TEST_NOW": str(day + 2 * 86400 + 60)}
    conf = h.write("report.conf", """
hostname = "mx.report.test";
dns = { mode = "forward"; forwarders = ["127.0.0.1@%d"]; timeout = 2000; };
report = {
  org_name = "Hostile Test Org";
  email = "dmarc-reports@report.test";
  receiver = "mx.report.test";
  relay_host = "127.0.0.1";
  relay_port = %d;
  pacing = 0;
  retries = 0;
  backoff = 0;
  timeout = "20s";
  state_dir = "%s";
  history_dirs = ["%s", "%s"];
};
""" % (dns, pf.port, h.path("state"), hist, hostile_dir))
    rc, out, err = report(conf, env, "--period", "%s..%s" % (d0, d1), "--send")
    allout = out + err
    s = summary(out)
    chk.equal("report: exit 0 (bad destinations are the publisher's fault)", rc, 0)
    chk.check("report: every good destination sent (%d)" % len(GOOD_DEST),
              " %d sent, 0 already done, 0 deferred, 0 failed" % len(GOOD_DEST) in s, allout[-3000:])
    chk.check("report: %d bad destinations counted" % BAD_DEST, " %d bad destinations" % BAD_DEST in s, s)
    chk.check("report: %d over the destination limit counted" % OVER_LIMIT,
              " %d over the destination limit" % OVER_LIMIT in s, s)
    chk.check("report: the hostile history records refused alone and counted",
              re.search(r"^  3 records refused alone \(first: bad policy domain ", out, re.M), out[:2000])
    chk.check("report: the overlong address named as refused",
              re.search(r"\"mailto:x{100}.*\": refused: bad destination: local part longer than 64", out), out[:3000])
    chk.check("report: non-mailto refused", "\"https://c-scheme.test/dmarc\": refused: bad destination: "
              "not a mailto: URI" in out, out[:3000])
    chk.check("report: output has no raw control characters",
              not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", allout), repr(allout[:300]))
    chk.check("report: no period left open", "taking up period" not in out, out[:500])

    # ---- what arrived: each good destination once, a valid report; nothing else
    def arrived():
        got = sink_reports(pf)
        tos = {to for (_, to) in got}
        return got if tos >= GOOD_DEST else None
    got = H.wait_for(arrived, 30) or sink_reports(pf)
    tos = sorted(to for (_, to) in got)
    chk.equal("sink: exactly the good destinations got a report", sorted(set(tos)), sorted(GOOD_DEST))
    chk.check("sink: one copy each", all(len(v) == 1 for v in got.values()), {k: len(v) for k, v in got.items()})
    tmp = h.path("xml")
    os.makedirs(tmp)
    for (rid, to), ms in sorted(got.items()):
        fn, gz = attachment(ms[0])
        if chk.check("%s: has the gzip attachment" % to, gz is not None):
            validate(chk, "report to %s" % to, gzip.decompress(gz), "rfc9990", tmp)
            if to == "dmarc@zz-good.test":
                xml = gzip.decompress(gz).decode()
                chk.check("zz-good.test: the bad-IP history record is not in it", "not-an-ip" not in xml)
    raw = b"".join(m.raw for m in pf.messages())
    chk.check("sink: nothing for the injected recipients", b"victim" not in raw)
    chk.check("sink: no injected header", b"X-Injected" not in raw)
    chk.check("postfix: no injected RCPT", "victim" not in pf.log())

    # ---- rerun: everything done, nothing sent, the same refusals counted again
    n_before = len(pf.messages())
    rc, out, err = report(conf, env, "--period", "%s..%s" % (d0, d1), "--send")
    s = summary(out)
    chk.equal("rerun: exit 0", rc, 0)
    chk.check("rerun: nothing sent, all done",
              " 0 sent, %d already done, 0 deferred" % len(GOOD_DEST) in s, s)
    chk.check("rerun: the refusals counted again", " %d bad destinations, %d over the destination limit"
              % (BAD_DEST, OVER_LIMIT) in s, s)
    time.sleep(1)
    chk.equal("rerun: no new mail", len(pf.messages()), n_before)


if __name__ == "__main__":
    if not os.path.isdir(SCHEMAS):
        print("NOTE: schemas absent: validation skipped", flush=True)
    H.run_test(test, "report_hostile", timeout=600)
