#!/usr/bin/python3
"""`mailwarden reports-in` (issue 15, part 3): reading the DMARC aggregate reports
others send about our domains.  No servers: the binary, files, and the SQLite store
(read back with Python's sqlite3 to see exactly what was stored).

Proves:
  - the real-world samples in ../shared/conformance/dmarc-report-samples (skipped with a
    note when absent): every well-formed one is stored (RFC 7489, RFC 9990, no namespace,
    "Pass", times with ".0", windows-1252 bytes in a UTF-8 report, a wrapper before
    <feedback>, the stalwart .eml mails with zip and gzip attachments), the two broken
    ones (truncated, bad markup) are refused with an XML error naming the file, the exit
    status is 1; a second import stores nothing (dedup on org + report id);
  - the summary numbers match what was computed by hand from stalwart/003.xml and
    rfc9990-sample.xml, and the large sample's totals match an independent parse;
  - reports written by `mailwarden report` itself (the history fixture, both formats,
    gzip) import and summarise to the same per-source counts as their own XML says;
  - a Maildir (gzip attachment, base64) and an mbox (zip attachment; text/xml
    quoted-printable part) are read;
  - hostile inputs: bad XML, an XXE entity on file:///etc/passwd (never read), billion
    laughs, a gzip bomb, a zip bomb (declared size) and a zip whose header lies about its
    size, a mail without any report: each a clear error, exit 1, nothing stored;
  - a store failure in the middle of a report (MW_REPORTS_IN_TEST_FAIL_ROW) stores none
    of its rows and no report row; the next import stores it whole;
  - "what changed since last week": new, gone and changed sources, and the readiness,
    on two crafted weeks (text and JSON);
  - the HTML page: one file, inline SVG, no script, no network reference, reporter
    strings escaped.
"""
import gzip, io, ipaddress, json, os, sqlite3, struct, subprocess, sys, zipfile
import xml.etree.ElementTree as ET
from email.message import EmailMessage
from xml.sax.saxutils import escape
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

SAMPLES = os.path.join(os.path.dirname(os.path.realpath(H.SOURCE_DIR)), "shared", "conformance",
                       "dmarc-report-samples")
if not os.path.isdir(SAMPLES):
    SAMPLES = os.path.join(H.SOURCE_DIR, "..", "shared", "conformance", "dmarc-report-samples")
FIX = os.path.join(H.SOURCE_DIR, "tests", "fixtures", "history")


def rin(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([H.MW_BINARY, "reports-in"] + list(args), capture_output=True, text=True,
                       timeout=300, env=e, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def counts(db):
    c = sqlite3.connect(db)
    try:
        return (c.execute("SELECT COUNT(*) FROM reports").fetchone()[0],
                c.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
    finally:
        c.close()


def report_xml(org, rid, domain, begin, end, rows, ns=False):
    """rows: (ip, count, dkim_aligned, spf_aligned, header_from)"""
    x = ['<?xml version="1.0" encoding="UTF-8"?>',
         '<feedback%s>' % (' xmlns="urn:ietf:params:xml:ns:dmarc-2.0"' if ns else ""),
         '<report_metadata><org_name>%s</org_name><email>d@%s</email><report_id>%s</report_id>'
         '<date_range><begin>%d</begin><end>%d</end></date_range></report_metadata>' % (org, org, rid, begin, end),
         '<policy_published><domain>%s</domain><p>none</p></policy_published>' % domain]
    for ip, n, dk, sp, hf in rows:
        x.append('<record><row><source_ip>%s</source_ip><count>%d</count><policy_evaluated>'
                 '<disposition>none</disposition><dkim>%s</dkim><spf>%s</spf></policy_evaluated></row>'
                 '<identifiers><header_from>%s</header_from></identifiers><auth_results><spf><domain>%s</domain>'
                 '<result>%s</result></spf></auth_results></record>' % (ip, n, dk, sp, escape(hf), domain, sp))
    x.append('</feedback>')
    return "\n".join(x).encode()


def source_map(js):
    return {s["ip"]: s for s in js["period"]["sources"]}


def test_samples(h, chk):
    if not os.path.isdir(SAMPLES):
        print("NOTE: %s absent: the sample part is skipped" % SAMPLES, flush=True)
        return
    db = h.path("samples.db")
    dirs = [os.path.join(SAMPLES, d) for d in ("parsedmarc", "opendmarc", "stalwart")]
    rc, out, err = rin("import", "--db", db, *dirs)
    chk.equal("samples: exit 1 (two broken samples)", rc, 1)
    chk.check("samples: summary line", "summary: 24 stored, 3 already stored, 2 errors" in out, out[-300:])
    chk.check("samples: truncated report refused with an XML error",
              "bad.com_example.com_1337140800_1337227200.xml: XML error" in err, err)
    chk.check("samples: bad markup refused with an XML error", "invalid_xml.xml: XML error" in err, err)
    chk.equal("samples: only those two errors", len(err.strip().splitlines()), 2)
    for what in ("rfc9990-sample.xml", "ikea.com_example.de", "163.com_example.com", "good.com_example.com",
                 "report_with_upper_cased_pass.xml", "protection.outlook.com_example.com",
                 "100.eml: part 1 google.com!stalw.art!1669507200!1669593599.zip",
                 "101.eml: part 2 backschues.net!stalw.art!1667948400!1668034800.xml.gz"):
        chk.check("samples: %s stored" % what, ("stored: " in out) and what in out, what)
    chk.check("samples: RFC 9990 namespace recognised", "(1 rows, 123 messages, RFC 9990 format)" in out, "")
    nrep, nrow = counts(db)
    chk.equal("samples: reports in the store", nrep, 24)
    rc, out, err = rin("import", "--db", db, *dirs)
    chk.check("samples: reimport stores nothing", "summary: 0 stored, 27 already stored, 2 errors" in out, out[-200:])
    chk.equal("samples: store unchanged by the reimport", counts(db), (nrep, nrow))

    # hand-computed: stalwart/003.xml (Fastmail about stalw.art), alone in a store
    db1 = h.path("s003.db")
    rc, out, err = rin("import", "--db", db1, os.path.join(SAMPLES, "stalwart", "003.xml"))
    chk.equal("003: exit 0", rc, 0)
    rc, out, err = rin("summary", "--db", db1, "--since", "all", "--json")
    js = json.loads(out)
    p = js["period"]
    chk.equal("003: reports/messages/dmarc pass", (p["reports"], p["messages"], p["dmarc_pass"]), (1, 9, 1))
    chk.equal("003: readiness", p["readiness_pct"], 11.1)
    chk.equal("003: source order", [s["ip"] for s in p["sources"]],
              ["173.228.157.66", "64.147.108.117", "54.240.8.13", "64.147.108.173"])
    want = {  # ip: messages, spf_pass, dkim_pass, spf_aligned, dkim_aligned, dmarc_pass
        "173.228.157.66": (4, 4, 4, 0, 0, 0), "64.147.108.117": (3, 3, 3, 0, 0, 0),
        "54.240.8.13": (1, 1, 1, 0, 1, 1), "64.147.108.173": (1, 1, 1, 0, 0, 0)}
    for ip, w in want.items():
        s = source_map(js)[ip]
        got = (s["messages"], s["spf_pass"], s["dkim_pass"], s["spf_aligned"], s["dkim_aligned"], s["dmarc_pass"])
        chk.equal("003: %s counts" % ip, got, w)
    rc, out, err = rin("summary", "--db", db1, "--since", "all")
    chk.check("003: text readiness line", "p=reject readiness: 11.1% (1 of 9 messages" in out, out)
    chk.check("003: text table row",
              any(l.split()[:7] == ["173.228.157.66", "4", "4", "4", "0", "0", "0"] for l in out.splitlines()), out)

    # rfc9990-sample: 123 messages from 192.0.2.123, DKIM aligned pass, SPF fail
    rc, out, err = rin("summary", "--db", db, "--since", "all", "--json", "--domain", "example.com")
    s = source_map(json.loads(out))["192.0.2.123"]
    chk.equal("9990 sample: 192.0.2.123", (s["messages"], s["dkim_aligned"], s["spf_aligned"], s["dmarc_pass"]),
              (123, 123, 0, 123))

    # the large sample: totals against an independent parse
    big = [f for f in os.listdir(os.path.join(SAMPLES, "parsedmarc")) if f.startswith("_large")][0]
    root = ET.parse(os.path.join(SAMPLES, "parsedmarc", big)).getroot()
    total = sum(int(r.find("row/count").text) for r in root.iter("record"))
    dmarc = sum(int(r.find("row/count").text) for r in root.iter("record")
                if "pass" in (r.findtext("row/policy_evaluated/dkim"), r.findtext("row/policy_evaluated/spf")))
    db2 = h.path("large.db")
    rc, out, err = rin("import", "--db", db2, os.path.join(SAMPLES, "parsedmarc", big))
    chk.equal("large: exit 0", rc, 0)
    p = json.loads(rin("summary", "--db", db2, "--since", "all", "--json")[1])["period"]
    chk.equal("large: messages and DMARC pass as parsed independently", (p["messages"], p["dmarc_pass"]),
              (total, dmarc))


def test_own_reports(h, chk):
    conf = h.path("report.conf")
    with open(conf, "w") as f:
        f.write('hostname = "mx.report.test";\nreport = { org_name = "Report Test Org"; '
                'email = "dmarc-reports@report.test"; state_dir = "%s"; history_dirs = ["%s/mx1", "%s/mx2"]; };\n'
                % (h.path("state"), FIX, FIX))
    for fmt in ("rfc9990", "rfc7489"):
        outdir = h.path("own-" + fmt)
        H.run([H.MW_BINARY, "report", "-c", conf, "--period", "2025-03-01..2025-03-02", "--out", outdir,
               "--format", fmt], timeout=120)
        files = sorted(os.listdir(outdir))
        chk.equal("own %s: three reports written" % fmt, len(files), 3)
        db = h.path("own-%s.db" % fmt)
        rc, out, err = rin("import", "--db", db, outdir)
        chk.equal("own %s: import exit 0" % fmt, rc, 0)
        chk.check("own %s: 3 stored" % fmt, "summary: 3 stored, 0 already stored, 0 errors" in out, out + err)
        chk.check("own %s: format recognised" % fmt, "RFC %s format" % fmt[3:] in out, out)
        # per source, per domain: what the XML says
        for dom in ("example.com", "example.org"):
            want = {}
            for fn in files:
                root = ET.fromstring(gzip.open(os.path.join(outdir, fn)).read())
                for rec in root.iter():
                    if not rec.tag.endswith("record"):
                        continue
                    g = lambda path: "".join(e.text or "" for e in rec.iter() if e.tag.split("}")[-1] == path)
                    pd = [e for e in root.iter() if e.tag.split("}")[-1] == "domain"][0].text
                    if pd != dom:
                        continue
                    pe = [e for e in rec.iter() if e.tag.split("}")[-1] == "policy_evaluated"][0]
                    pev = {e.tag.split("}")[-1]: e.text for e in pe}
                    ip, n = str(ipaddress.ip_address(g("source_ip"))), int(g("count"))
                    w = want.setdefault(ip, [0, 0])
                    w[0] += n
                    w[1] += n if "pass" in (pev.get("dkim"), pev.get("spf")) else 0
            js = json.loads(rin("summary", "--db", db, "--since", "all", "--json", "--domain", dom)[1])
            got = {s["ip"]: [s["messages"], s["dmarc_pass"]] for s in js["period"]["sources"]}
            chk.equal("own %s %s: per-source messages and DMARC pass" % (fmt, dom), got, want)


def mail_with(att, ctype, fname, cte_b64=True):
    m = EmailMessage()
    m["From"] = "noreply-dmarc-support@google.com"
    m["To"] = "dmarc@example.com"
    m["Subject"] = "Report Domain: example.com Submitter: google.com Report-ID: <1>"
    m.set_content("This is an aggregate report from google.com.")
    maintype, subtype = ctype.split("/")
    if maintype == "text":
        m.add_attachment(att.decode(), subtype=subtype, filename=fname, cte="quoted-printable")
    else:
        m.add_attachment(att, maintype=maintype, subtype=subtype, filename=fname)
    return m.as_bytes()


def test_mailboxes(h, chk):
    md = h.path("Maildir")
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(md, d))
    x1 = report_xml("google.com", "md-1", "example.com", 1700000000, 1700086399,
                    [("192.0.2.1", 5, "pass", "pass", "example.com")])
    with open(os.path.join(md, "new", "1.host"), "wb") as f:
        f.write(mail_with(gzip.compress(x1), "application/gzip", "google.com!example.com!1!2.xml.gz"))
    db = h.path("mail.db")
    rc, out, err = rin("import", "--db", db, md)
    chk.equal("maildir: exit 0", rc, 0)
    chk.check("maildir: gzip attachment stored", "stored: google.com md-1" in out, out + err)

    zb = io.BytesIO()
    with zipfile.ZipFile(zb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("yahoo.com!example.com!1!2.xml",
                   report_xml("yahoo.com", "mb-1", "example.com", 1700000000, 1700086399,
                              [("2001:db8::1", 3, "fail", "fail", "example.com")]))
    m1 = mail_with(zb.getvalue(), "application/zip", "yahoo.zip")
    m2 = mail_with(report_xml("Microsoft", "mb-2", "example.com", 1700000000, 1700086399,
                              [("198.51.100.7", 2, "pass", "fail", "example.com")]), "text/xml", "r.xml")
    mbox = h.path("reports.mbox")
    with open(mbox, "wb") as f:
        for m in (m1, m2):
            f.write(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n" + m.replace(b"\r\n", b"\n") + b"\n")
    rc, out, err = rin("import", "--db", db, mbox)
    chk.equal("mbox: exit 0", rc, 0)
    chk.check("mbox: zip attachment stored", "stored: yahoo.com mb-1" in out and "message 1" in out, out + err)
    chk.check("mbox: quoted-printable text/xml stored", "stored: Microsoft mb-2" in out and "message 2" in out,
              out + err)
    js = json.loads(rin("summary", "--db", db, "--since", "all", "--json")[1])
    chk.equal("mailboxes: sources", sorted(source_map(js)), ["192.0.2.1", "198.51.100.7", "2001:db8::1"])


def lying_zip(data):
    """A zip of data whose local and central headers declare a tiny size."""
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("r.xml", data)
    b = bytearray(zb.getvalue())
    loc = b.find(b"PK\x03\x04")
    cen = b.find(b"PK\x01\x02")
    struct.pack_into("<I", b, loc + 22, 1000)
    struct.pack_into("<I", b, cen + 24, 1000)
    return bytes(b)


def test_hostile(h, chk):
    db = h.path("hostile.db")
    good = report_xml("ok.example", "ok-1", "example.com", 1700000000, 1700086399,
                      [("192.0.2.9", 1, "pass", "pass", "example.com")])
    pad = b" " * (1 << 20)
    head = (b'<?xml version="1.0"?><feedback><report_metadata><org_name>b</org_name><report_id>bomb</report_id>'
            b'<date_range><begin>1</begin><end>2</end></date_range></report_metadata><policy_published>'
            b'<domain>a.example</domain></policy_published><!--')
    bomb = head + pad * 70 + b"--></feedback>"
    lol = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">' +
           "".join('<!ENTITY lol%d "%s">' % (i, ("&lol%d;" % (i - 1) if i > 1 else "&lol;") * 10)
                   for i in range(1, 10)) +
           ']>\n<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>\n').encode()
    xxe = (b'<?xml version="1.0"?>\n<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
           b'<feedback><report_metadata><org_name>&xxe;</org_name><report_id>x</report_id><date_range>'
           b'<begin>1</begin><end>2</end></date_range></report_metadata><policy_published><domain>a.example'
           b'</domain></policy_published></feedback>\n')
    xxe_param = (b'<?xml version="1.0"?>\n<!DOCTYPE feedback SYSTEM "file:///etc/passwd">\n<feedback/>\n')
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("r.xml", bomb)
    cases = [
        ("bad XML", "bad.xml", good.replace(b"</report_id>", b"</report_idx>"), "XML error at line"),
        ("XXE", "xxe.xml", xxe, "DOCTYPE refused"),
        ("external DTD", "xxe2.xml", xxe_param, "DOCTYPE refused"),
        ("billion laughs", "lol.xml", lol, "DOCTYPE refused"),
        ("gzip bomb", "bomb.xml.gz", gzip.compress(bomb), "larger than the limit of 67108864 bytes"),
        ("zip bomb", "bomb.zip", zb.getvalue(), "declared size %d bytes is larger than the limit" % len(bomb)),
        ("lying zip", "lie.zip", lying_zip(bomb), "inflates past its declared size of 1000 bytes"),
        ("mail without report", "x.eml", b"From: a@b.example\nSubject: hi\n\nhello\n", "no DMARC report"),
        ("not a report", "html.xml", b"<html><body>hi</body></html>", "not <feedback>"),
        ("bad count", "cnt.xml", good.replace(b"<count>1</count>", b"<count>-1</count>"), "is not a number"),
        ("bad source ip", "ip.xml", good.replace(b"192.0.2.9", b"192.0.2.999"), "is not an IP address"),
    ]
    for label, fn, data, want in cases:
        p = h.path(fn)
        with open(p, "wb") as f:
            f.write(data)
        rc, out, err = rin("import", "--db", db, p)
        chk.equal("%s: exit 1" % label, rc, 1)
        chk.check("%s: clear error" % label, ("error: %s" % p) in err and want in err, err[-400:])
        chk.check("%s: /etc/passwd never read" % label, "root:" not in out + err, "")
        chk.equal("%s: nothing stored" % label, counts(db), (0, 0))

    # a failure in the middle of a report: none of it is stored
    multi = report_xml("mid.example", "mid-1", "example.com", 1700000000, 1700086399,
                       [("192.0.2.%d" % i, i, "pass", "pass", "example.com") for i in range(1, 6)])
    p = h.path("multi.xml")
    with open(p, "wb") as f:
        f.write(multi)
    rc, out, err = rin("import", "--db", db, p, env={"MW_REPORTS_IN_TEST_FAIL_ROW": "3"})
    chk.equal("row 3 fails: exit 1", rc, 1)
    chk.check("row 3 fails: said so", "row 3: failure injected" in err, err)
    chk.equal("row 3 fails: no report, no row stored", counts(db), (0, 0))
    rc, out, err = rin("import", "--db", db, p)
    chk.equal("then: stored whole", (rc, counts(db)), (0, (1, 5)))


def test_changes_and_html(h, chk):
    db = h.path("weeks.db")
    T = 1767225600            # 2026-01-01 00:00 UTC
    day = 86400
    w1 = report_xml("google.com", "w1", "example.com", T - 13 * day, T - 12 * day,
                    [("192.0.2.1", 10, "pass", "pass", "example.com"),
                     ("192.0.2.2", 10, "pass", "fail", "example.com")])
    w2 = report_xml("google.com", "w2", "example.com", T - 3 * day, T - 2 * day,
                    [("192.0.2.1", 5, "pass", "pass", "example.com"),
                     ("192.0.2.1", 5, "fail", "fail", "example.com"),
                     ("203.0.113.5", 4, "fail", "fail", "<script>alert(1)</script>.example")])
    other = report_xml("google.com", "o1", "example.net", T - 3 * day, T - 2 * day,
                       [("198.51.100.1", 50, "fail", "fail", "example.net")])
    for n, x in (("w1.xml", w1), ("w2.xml", w2), ("o.xml", other)):
        with open(h.path(n), "wb") as f:
            f.write(x)
    rc, out, err = rin("import", "--db", db, h.path("w1.xml"), h.path("w2.xml"), h.path("o.xml"))
    chk.equal("weeks: exit 0", rc, 0)
    rc, out, err = rin("summary", "--db", db, "--domain", "example.com", "--until", "2026-01-01", "--json")
    js = json.loads(out)
    p = js["period"]
    chk.equal("weeks: this week", (p["reports"], p["messages"], p["dmarc_pass"], p["readiness_pct"]),
              (1, 14, 5, 35.7))
    chk.equal("weeks: last week", (js["previous"]["messages"], js["previous"]["readiness_pct"]), (20, 100.0))
    ch = {(c["ip"], c["kind"]): c for c in js["changes"]}
    chk.equal("weeks: changes", sorted(ch), [("192.0.2.1", "pass_rate"), ("192.0.2.2", "gone"),
                                             ("203.0.113.5", "new")])
    c = ch[("192.0.2.1", "pass_rate")]
    chk.equal("weeks: 192.0.2.1 pass rate 100 -> 50", (c["before_pct"], c["after_pct"]), (100.0, 50.0))
    rc, out, err = rin("summary", "--db", db, "--domain", "example.com", "--until", "2026-01-01")
    chk.check("weeks text: new source", "new source 203.0.113.5: 4 messages, 0.0% pass" in out, out)
    chk.check("weeks text: pass rate change", "pass rate of 192.0.2.1: 100.0% -> 50.0%" in out, out)
    chk.check("weeks text: gone source", "gone source 192.0.2.2" in out, out)
    chk.check("weeks text: readiness", "p=reject readiness: 35.7% (5 of 14" in out, out)
    rc, out, err = rin("summary", "--db", db, "--until", "2026-01-01", "--since", "2d", "--json")
    chk.equal("weeks: --since 2d sees nothing", json.loads(out)["period"]["messages"], 0)

    page = h.path("page.html")
    rc, out, err = rin("html", "--db", db, "--domain", "example.com", "--until", "2026-01-01", "-o", page)
    chk.equal("html: exit 0", rc, 0)
    html = open(page, encoding="utf-8").read()
    chk.check("html: inline SVG charts", html.count("<svg") == 2, "")
    chk.check("html: no script", "<script" not in html.lower().replace("&lt;script&gt;", ""), "")
    chk.check("html: reporter string escaped", "&lt;script&gt;alert(1)&lt;/script&gt;.example" in html, "")
    chk.check("html: no network reference", "src=" not in html and "href=" not in html and
              "url(" not in html and html.count("http://") == html.count('xmlns="http://www.w3.org/2000/svg"'), "")
    chk.check("html: sources and changes", "203.0.113.5" in html and "gone source" in html, "")
    chk.check("html: one whole page", html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>"), "")
    rc, out, err = rin("html", "--db", db)
    chk.equal("html without -o: usage error", rc, 2)
    rc, out, err = rin("summary", "--db", h.path("nodir", "x.db"))
    chk.check("unwritable store: clear error, exit 1", rc == 1 and "unable to open" in err, err)


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("binary not built")
    rc, out = H.run([H.MW_BINARY, "--help"], check=False)
    chk.check("--help lists reports-in", "reports-in" in out, out)
    rc, out = H.run([H.MW_BINARY, "reports-in", "--help"], check=False)
    chk.check("reports-in --help", rc == 0 and "import" in out and "summary" in out and "html" in out, out)
    test_samples(h, chk)
    test_own_reports(h, chk)
    test_mailboxes(h, chk)
    test_hostile(h, chk)
    test_changes_and_html(h, chk)


if __name__ == "__main__":
    H.run_test(test, "reports_in", timeout=600)
