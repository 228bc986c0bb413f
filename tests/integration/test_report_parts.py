#!/usr/bin/python3
"""What the aggregate reports say, where they go, and large reports (issue 15, section 1).

A hand-written history (as `mailwarden serve` writes it: MWH1 + CRC32C, see
tests/fixtures/history/make_fixture.py) for 2025-03-01, mailed by `mailwarden report
--send` through a real Postfix to its smtp-sink, with a test DNS zone:

  big.test     p=reject, 1500 source IPs, each failing and delivered by the monitor-only
               policy (override "local_policy rule monitor"); report.max_size = 10000:
               the report is split by source range into several reports
  ext.test     rua=mailto:agg@collector.test; ext.test._report._dmarc.collector.test
               authorises and carries its own rua=mailto:real@collector.test
  evil.test    rua=mailto:agg@hijack.test; the authorising record's rua names another
               host (victim.test): neither address may get a report
  quiet.test   p=reject, one failure delivered with no override recorded (a temperror),
               and rua=mailto:dmarc@quiet.test!1k (an RFC 7489 size suffix)
  testing.test p=reject; t=y, one failure quarantined instead of rejected

Proves:
  - every report that arrives validates against the RFC 9990 schema (xmllint);
  - big.test arrives as several reports with distinct report ids, each mail within
    report.max_size, whose rows together are exactly the 1500 sources (each once, in
    contiguous source ranges), each row with reason local_policy "rule monitor";
  - a <reason> is written whenever the disposition is below the policy: local_policy
    with a comment for quiet.test, policy_test_mode for testing.test;
  - ext.test's report goes to real@collector.test (the destination's own rua), not to
    agg@collector.test; evil.test's goes nowhere (refused, "another host");
  - the "!1k" suffix is ignored in the RFC 9990 format (quiet.test's report arrives),
    kept with --format rfc7489 (a dry run says the rua's !size refuses it);
  - a run killed (SIGKILL) after its second delivery, then rerun, delivers every report
    and every part exactly once; a third run sends nothing; a run with another
    report.max_size (other parts, other ids) sends nothing either: the journal knows the
    period's data went to that address under the earlier ids.
"""
import gzip, os, re, subprocess, sys, time, xml.etree.ElementTree as ET
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_reports import NS, SCHEMAS, attachment, sink_reports, strip_delivery, validate

sys.path.insert(0, os.path.join(H.SOURCE_DIR, "tests", "fixtures", "history"))
from make_fixture import line as history_line   # noqa: E402

DAY1 = 1740787200          # 2025-03-01T00:00:00Z
MAX_SIZE = 10000
NBIG = 1500


def rec(t, dom, ip, disp, rua, p="reject", tflag="n", override=None, hfrom=None, eto="rcpt.example"):
    r = {"time": t, "source_ip": ip, "header_from": hfrom or dom, "envelope_from": "fwd.example",
         "envelope_to": eto, "spf_domain": "fwd.example", "spf_scope": "mfrom",
         "spf_result": "pass", "policy_domain": dom, "p": p, "sp": "", "np": "", "adkim": "r",
         "aspf": "r", "t": tflag, "psd": "u", "discovery": "treewalk", "disposition": disp,
         "dkim_aligned": "fail", "spf_aligned": "fail", "reporter_host": "mx1.report.test",
         "dkim": [{"domain": "fwd.example", "selector": "s", "result": "pass"}], "rua": rua}
    if override:
        r["override"] = override
    return r


def write_history(d):
    os.makedirs(d)
    recs = []
    t = DAY1 + 3600
    for i in range(NBIG):
        ip = "10.%d.%d.%d" % (i // 250, (i * 7) % 250, i % 250 + 1)
        recs.append(rec(t + i, "big.test", ip, "none", ["mailto:dmarc@big.test"],
                        override="local_policy rule monitor",
                        eto="r%08x.example" % ((i * 2654435761) & 0xffffffff)))
    recs.append(rec(t + 700, "ext.test", "192.0.2.10", "reject", ["mailto:agg@collector.test"]))
    recs.append(rec(t + 701, "evil.test", "192.0.2.11", "reject", ["mailto:agg@hijack.test"]))
    recs.append(rec(t + 702, "quiet.test", "192.0.2.12", "none", ["mailto:dmarc@quiet.test!1k"]))
    recs.append(rec(t + 703, "testing.test", "192.0.2.13", "quarantine", ["mailto:dmarc@testing.test"],
                    tflag="y"))
    with open(os.path.join(d, "history-20250301010000.log"), "wb") as f:
        for r in recs:
            f.write(history_line(r))
    return {r["source_ip"] for r in recs if r["policy_domain"] == "big.test"}


def report(conf, *args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([H.MW_BINARY, "report", "-c", conf, "--period", "2025-03-01"] + list(args),
                       capture_output=True, text=True, timeout=300, env=e)
    return p.returncode, p.stdout + p.stderr


def summary(out):
    m = re.search(r"^summary: .*$", out, re.M)
    return m.group(0) if m else ""


def reasons(rec_el):
    out = []
    for r in rec_el.find(NS + "row").find(NS + "policy_evaluated").findall(NS + "reason"):
        out.append((r.findtext(NS + "type"), r.findtext(NS + "comment") or ""))
    return out


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("binary not built")
    dns, _ = h.start_testdns({
        "ext.test._report._dmarc.collector.test": [{"TXT": "v=DMARC1; rua=mailto:real@collector.test"}],
        "evil.test._report._dmarc.hijack.test": [{"TXT": "v=DMARC1; rua=mailto:victim@victim.test"}],
    }, verbose=False)
    pf = h.start_postfix(H.free_port(), default_action="accept")
    hist = h.path("history")
    big_ips = write_history(hist)
    conf = h.write("report.conf", """
hostname = "mx.report.test";
dns = { mode = "forward"; forwarders = ["127.0.0.1@%d"]; timeout = 2000; };
report = {
  org_name = "Parts Test Org";
  email = "dmarc-reports@report.test";
  receiver = "mx.report.test";
  relay_host = "127.0.0.1";
  relay_port = %d;
  pacing = 0;
  retries = 0;
  backoff = 0;
  timeout = "20s";
  max_size = %d;
  state_dir = "%s";
  history_dirs = ["%s"];
};
""" % (dns, pf.port, MAX_SIZE, h.path("state"), hist))

    # ---- RFC 7489 format: the !size suffix is kept (dry run: nothing sent or recorded)
    rc, out = report(conf, "--dry-run", "--format", "rfc7489")
    chk.check("rfc7489 dry run: quiet.test's !1k limit refuses its report",
              re.search(r"dmarc@quiet\.test: not sent: \d+ bytes exceed the limit of 1024 \(the rua's !size\)",
                        out), out[-3000:])

    # ---- a run killed after its second delivery, then the rerun
    rc, out = report(conf, "--send", env={"MW_REPORT_TEST_DIE_AFTER": "2"})
    chk.check("killed run: died (SIGKILL)", rc == -9, "rc=%s" % rc)
    rc, out = report(conf, "--send")
    s = summary(out)
    chk.equal("rerun: exit 0", rc, 0)
    m = re.search(r"big\.test .*split by source range into (\d+) reports", out)
    nparts = int(m.group(1)) if m else 0
    chk.check("big.test: split into several reports", nparts >= 2, out[:2000])
    chk.check("evil.test: refused, another host",
              re.search(r"agg@hijack\.test: refused: external destination not authorised \(.*another host",
                        out), out[-3000:])
    chk.check("ext.test: the destination's own rua replaces the address",
              "agg@collector.test: replaced by the destination's own rua" in out, out[-3000:])
    chk.check("quiet.test: the !1k suffix ignored (RFC 9990)", "exceed the limit" not in out, out[-3000:])
    chk.check("rerun: nothing deferred, failed or too big",
              re.search(r" 0 deferred, 0 failed, [01] refused, 0 too big", s), s)

    want_to = {"dmarc@big.test", "real@collector.test", "dmarc@quiet.test", "dmarc@testing.test"}
    nwant = nparts + 3

    def arrived():
        got = sink_reports(pf)
        return got if len(got) >= nwant else None
    got = H.wait_for(arrived, 30) or sink_reports(pf)
    chk.equal("sink: every report and part arrived", len(got), nwant)
    chk.check("sink: each exactly once (killed run + rerun)", all(len(v) == 1 for v in got.values()),
              {k: len(v) for k, v in got.items()})
    chk.equal("sink: exactly the expected destinations", sorted({to for (_, to) in got}), sorted(want_to))
    log = pf.log()
    chk.check("postfix: nothing for the hijack, victim or replaced addresses",
              "victim" not in log and "agg@collector.test" not in log and "agg@hijack.test" not in log)

    tmp = h.path("xml")
    os.makedirs(tmp)
    seen_ips, big_ids = [], set()
    for (rid, to), ms in sorted(got.items()):
        fn, gz = attachment(ms[0])
        if not chk.check("%s %s: has the gzip attachment" % (to, rid), gz is not None):
            continue
        data = gzip.decompress(gz)
        validate(chk, "report %s to %s" % (rid, to), data, "rfc9990", tmp)
        root = ET.fromstring(data)
        chk.equal("%s: report_id in the XML is the Subject's" % rid,
                  root.find(NS + "report_metadata").findtext(NS + "report_id"), rid)
        recs = root.findall(NS + "record")
        if to == "dmarc@big.test":
            big_ids.add(rid)
            size = len(strip_delivery(ms[0].raw))
            chk.check("big.test part %s: mail within report.max_size (%d <= %d)" % (rid, size, MAX_SIZE),
                      size <= MAX_SIZE)
            ips = [r.find(NS + "row").findtext(NS + "source_ip") for r in recs]
            seen_ips.append((min(ips), max(ips), ips))
            chk.check("big.test part %s: every row has reason local_policy 'rule monitor'" % rid,
                      all(reasons(r) == [("local_policy", "rule monitor")] for r in recs))
        elif to == "dmarc@quiet.test":
            rs = reasons(recs[0])
            chk.check("quiet.test: reason local_policy with a comment (no override recorded)",
                      len(rs) == 1 and rs[0][0] == "local_policy" and "below the published p=reject" in rs[0][1],
                      rs)
        elif to == "dmarc@testing.test":
            chk.equal("testing.test: reason policy_test_mode", reasons(recs[0]), [("policy_test_mode", "")])
        elif to == "real@collector.test":
            chk.equal("ext.test: report for ext.test",
                      root.find(NS + "policy_published").findtext(NS + "domain"), "ext.test")
    chk.equal("big.test: distinct report ids, one per part", len(big_ids), nparts)
    all_ips = [ip for (_, _, ips) in seen_ips for ip in ips]
    missing, extra = sorted(big_ips - set(all_ips)), len(all_ips) - len(set(all_ips))
    chk.check("big.test: the parts hold every source exactly once",
              not missing and extra == 0 and len(all_ips) == len(big_ips),
              "%d rows, %d missing (first: %s), %d duplicates" % (len(all_ips), len(missing), missing[:5], extra))
    # contiguous source ranges: the parts' ranges (in the report's sort order) never overlap
    ranges = sorted((lo, hi) for (lo, hi, _) in seen_ips)
    chk.check("big.test: contiguous, non-overlapping source ranges",
              all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1)), ranges)

    # ---- a third run: nothing new
    n_before = len(pf.messages())
    rc, out = report(conf, "--send")
    s = summary(out)
    chk.equal("third run: exit 0", rc, 0)
    chk.check("third run: nothing sent", " 0 sent, " in s, s)
    time.sleep(1)
    chk.equal("third run: no new mail", len(pf.messages()), n_before)


    # ---- report.max_size changed: the parts (and their ids) differ, the data was sent
    conf2 = h.write("report2.conf", open(conf).read().replace("max_size = %d;" % MAX_SIZE,
                                                              "max_size = %d;" % (MAX_SIZE * 3)))
    rc, out = report(conf2, "--send")
    s = summary(out)
    chk.equal("max_size changed: exit 0", rc, 0)
    m = re.search(r"big\.test .*split by source range into (\d+) reports", out)
    chk.check("max_size changed: big.test split differently", m and int(m.group(1)) != nparts, out[:1500])
    chk.check("max_size changed: nothing sent again", " 0 sent, " in s, s)
    chk.check("max_size changed: the output says why",
              "split differently by an earlier run): not sent again" in out, out[-2000:])
    time.sleep(1)
    chk.equal("max_size changed: no new mail", len(pf.messages()), n_before)


if __name__ == "__main__":
    H.run_test(test, "report_parts", timeout=600)
