#!/usr/bin/python3
"""DMARC enforcement through a real Postfix (issue 5, item 7), non-loopback client.

Zone (tests/lib/testdns.py): reject.test / quarantine.test / none.test publish
p=reject / p=quarantine / p=none and an SPF record for the namespace client; evil.test
(the spoofer's envelope domain) has SPF pass for the client but no DMARC record;
signed.test publishes p=reject, SPF -all and a DKIM key from `mailwarden keygen`.
The daemon runs with no policy file (embedded default), --history, --sign signed.test.
Proves:
  - spoofed From: p=reject -> 550 5.7.1 at end of DATA, nothing delivered or queued;
    p=quarantine -> Postfix hold queue (postqueue shows it held, the queue file is in
    hold/ and carries our A-R dmarc=fail), not delivered (default quarantine_action);
    p=none -> delivered with dmarc=fail; A-R reads `dmarc=fail (p=reject dis=reject)
    header.from=... policy.dmarc=reject` in `check`, the summary log line has dmarc=,
    dmarc_policy=, header_from=;
  - aligned mail passes with dmarc=pass: SPF-aligned; DKIM-aligned via our own --sign
    (mail from 127.0.0.1 signed, the delivered copy re-injected from outside with a
    foreign MAIL FROM) and via a dkimpy-signed message; a signature that does not align
    with the From domain does not help (550);
  - hostile From forms get their configured action (default: 550 5.7.1 when a domain
    involved publishes p=reject/quarantine, else delivered with dmarc=permerror);
  - --policy monitor-only delivers the spoofed p=reject mail with dmarc=fail;
  - --history: evaluated messages have records (read back with CRC32C checked).
"""
import json, os, re, subprocess, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_history_crash import read_history

SPOOF_FROM = "mallory@evil.test"


def zone(ip, dkim_txt):
    spf = {"TXT": "v=spf1 ip4:%s -all" % ip}
    z = {"evil.test": [spf], "signed.test": [{"TXT": "v=spf1 -all"}, {"A": "192.0.2.9"}],
         "_dmarc.signed.test": [{"TXT": "v=DMARC1; p=reject"}],
         "s1._domainkey.signed.test": [{"TXT": dkim_txt}],
         # p=reject, and the only aligned identifier's key lookup times out
         "slowkey.test": [{"TXT": "v=spf1 -all"}, {"A": "192.0.2.9"}],
         "_dmarc.slowkey.test": [{"TXT": "v=DMARC1; p=reject"}],
         "s1._domainkey.slowkey.test": ["TIMEOUT"],
         # an IDN domain (réject.test) that publishes p=reject
         "xn--rject-bsa.test": [{"A": "192.0.2.11"}],
         "_dmarc.xn--rject-bsa.test": [{"TXT": "v=DMARC1; p=reject"}],
         # a mailing list host that re-signs what it distributes
         "lists.listhost.test": [{"A": "192.0.2.10"}],
         "s1._domainkey.listhost.test": [{"TXT": dkim_txt}]}
    for p in ("reject", "quarantine", "none"):
        z["%s.test" % p] = [spf, {"A": "192.0.2.8"}]
        z["_dmarc.%s.test" % p] = [{"TXT": "v=DMARC1; p=%s; rua=mailto:agg@%s.test" % (p, p)}]
    return z


def message(from_lines, token, extra=b""):
    if isinstance(from_lines, str):
        from_lines = from_lines.encode("utf-8")
    return (from_lines + b"\r\nTo: bob@dest.test\r\nSubject: dmarc " + token.encode() +
            b"\r\nMessage-ID: <" + token.encode() + b"@t>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            + extra + b"\r\nbody " + token.encode() + b"\r\n")


class Ctx:
    def __init__(self, h, chk, pf):
        self.h, self.chk, self.pf = h, chk, pf

    def send(self, data, mail_from=SPOOF_FROM, rcpt="bob@dest.test"):
        path = self.h.path("m-%s.eml" % uuid.uuid4().hex[:10])
        with open(path, "wb") as f:
            f.write(data)
        return self.pf.send(mail_from, rcpt, helo="mx.evil.test", data=path)

    def dmarc_of(self, m):
        ours = H.ar_headers(m)
        if len(ours) != 1:
            return None, ours
        mm = re.search(r"\bdmarc=(\w+)", ours[0])
        return (mm.group(1) if mm else None), ours[0]

    def rejected(self, label, res, token):
        chk = self.chk
        eod = re.search(r"^ -> \.\s*$\n^<\*\* 550 5\.7\.1", res.transcript, re.M)   # reply to the final "."
        chk.check("%s: 550 5.7.1 at end of DATA" % label, res.code == "550" and eod,
                  res.final or res.transcript[-300:])
        self.pf.flush()
        chk.check("%s: nothing delivered" % label, not H.wait_for(lambda: self.pf.find(token), 2))
        q = self.pf.queue()
        chk.check("%s: nothing queued" % label, token not in q and "Mail queue is empty" in q, q[-300:])

    def delivered(self, label, res, token, dmarc, header_from=None):
        chk = self.chk
        if not chk.check("%s: accepted (250)" % label, res.code == "250", res.final or res.transcript[-300:]):
            return None
        m = self.pf.wait_delivered(token)
        if not chk.check("%s: delivered" % label, m is not None):
            return None
        got, ar = self.dmarc_of(m)
        chk.check("%s: A-R dmarc=%s%s" % (label, dmarc, " header.from=" + header_from if header_from else ""),
                  got == dmarc and (header_from is None or "header.from=%s" % header_from in ar), ar)
        return m


def keygen(h, keydir):
    out = H.run([H.MW_BINARY, "keygen", "--domain", "signed.test", "--selector", "s1", "--type", "rsa",
                 "--bits", "2048", "--out", keydir], timeout=60)[1]
    line = [l for l in out.splitlines() if "IN TXT" in l][0]
    return re.findall(r'"([^"]*)"', line)


def strip_delivery(raw):
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    while lines and re.match(rb"(Return-Path|Delivered-To):", lines[0]):
        lines.pop(0)
    return b"\r\n".join(lines)


def hostile_forms():
    """(label, From header bytes, expectation): 'reject' or ('permerror', None)."""
    R = "ceo@reject.test"
    return [
        ("two From headers (evil + p=reject)", b"From: a@evil.test\r\nFrom: " + R.encode(), "reject"),
        ("two From headers (evil + p=none)", b"From: a@evil.test\r\nFrom: b@none.test", "permerror"),
        ("two addresses (evil, p=reject)", b"From: a@evil.test, " + R.encode(), "reject"),
        ("two addresses (p=none, evil)", b"From: b@none.test, a@evil.test", "permerror"),
        ("no domain", b"From: ceo", "permerror"),
        ("unparsable: unbalanced '<' (p=reject)", b"From: <" + R.encode(), "reject"),
        ("unparsable: unbalanced '<' (p=none)", b"From: <b@none.test", "permerror"),
        ("unparsable: quoted angle address then bare p=reject address",
         b'From: "<a@evil.test>" ' + R.encode(), "reject"),
        ("quoted display name with another domain", b'From: "a@evil.test" <' + R.encode() + b">", "reject"),
        ("quoted-pair display name", b'From: "a\\"@evil.test\\\\" <' + R.encode() + b">", "reject"),
        ("comment with another domain", b"From: " + R.encode() + b" (a@evil.test)", "reject"),
        ("group syntax", b"From: Friends: " + R.encode() + b";", "reject"),
        ("empty group", b"From: undisclosed-recipients:;", "permerror"),
        ("encoded-word display name", b"From: =?utf-8?q?Boss=20a@evil.test?= <" + R.encode() + b">", "reject"),
        ("encoded-word instead of an address", b"From: =?us-ascii?q?ceo=40reject.test?=", "permerror"),
        ("folded From", b"From: The\r\n CEO\r\n\t<" + R.encode() + b">", "reject"),
        ("8-bit display name", b"From: Jos\xc3\xa9 \xe9 <" + R.encode() + b">", "reject"),
        ("NUL inside the address", b"From: ceo@reject.test\x00@evil.test", "reject"),
        # not first: Postfix drops a leading "From " line as an mbox separator
        ("obs-from: blank before the colon (RFC 5322 4.5.3)", b"X-Order: 1\r\nFrom : " + R.encode(), "reject"),
        # RFC 9989: several addresses all in one domain are one Author Domain
        ("two addresses, one p=reject domain", b"From: a@reject.test, " + R.encode(), "reject"),
        # a U-label From domain is looked up by its A-label (xn--rject-bsa.test publishes p=reject)
        ("IDN From domain (U-label) of a p=reject domain", b"From: ceo@r\xc3\xa9ject.test", "reject"),
        ("IDN From domain, upper case", b"From: CEO <ceo@R\xc3\x89JECT.test>", "reject"),
        # found by review: From domains the parser could not read were delivered unchecked
        ("obs-domain: comment inside the domain", b"From: CEO <ceo@reject ().test>", "reject"),
        ("obs-domain: fold inside the domain", b"From: CEO <ceo@reject\r\n .test>", "reject"),
        ("quoted domain", b'From: ceo@"reject.test"', "reject"),
        ("domain literal naming the domain", b"From: ceo@[reject.test]", "reject"),
        ("invisible LRM after the domain", b"From: CEO <ceo@reject.test\xe2\x80\x8e>", "reject"),
        ("invisible LRM before the domain", b"From: CEO <ceo@\xe2\x80\x8ereject.test>", "reject"),
        ("bidi override in the domain", b"From: CEO <ceo@reject.test\xe2\x80\xae>", "reject"),
        ("U+180E inside the domain", b"From: CEO <ceo@rej\xe1\xa0\x8eect.test>", "reject"),
        ("invalid UTF-8 after the domain", b"From: CEO <ceo@reject.test\xa0>", "reject"),
    ]


def test(h, chk):
    try:
        import dkim  # noqa: F401
    except ImportError as e:
        raise H.Skip("python3-dkim missing: %s" % e)
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    ns = h.create_netns()
    keydir = h.path("keys")
    os.makedirs(keydir, mode=0o700)
    dkim_txt = keygen(h, keydir)
    dns, _ = h.start_testdns(zone(ns.ns_addr, dkim_txt), verbose=False)
    hist = h.path("history")
    sign = ["--sign", "signed.test:s1:%s/s1.private" % keydir]
    daemon = h.start_daemon(dns=[dns], args=["--history", hist] + sign)     # no -c: embedded default
    pf = h.start_postfix(daemon.port, netns=ns)
    c = Ctx(h, chk, pf)
    tok = lambda: "tok-%s" % uuid.uuid4().hex

    # ---- spoofed mail by policy
    t = tok()
    res = c.send(message("From: CEO <ceo@reject.test>", t))
    c.rejected("spoofed p=reject", res, t)
    chk.check("spoofed p=reject: reply names the domain and the policy",
              "reject.test" in res.final and "reject" in res.final.split("5.7.1", 1)[-1], res.final)
    line = H.wait_for(lambda: next((l for l in daemon.log_text().splitlines()
                                    if "header_from=reject.test" in l and "dmarc=" in l), None), 5)
    chk.check("spoofed p=reject: summary line dmarc=fail dmarc_policy=reject header_from=reject.test",
              line and "dmarc=fail" in line and "dmarc_policy=reject" in line, line)

    t = tok()
    res = c.send(message("From: ceo@quarantine.test", t))
    chk.check("spoofed p=quarantine: accepted into Postfix (250)", res.code == "250", res.final)
    q = pf.queue()
    held = res.queue_id and re.search(r"^%s!" % re.escape(res.queue_id), q, re.M)
    chk.check("spoofed p=quarantine: postqueue shows it on hold (%s!)" % res.queue_id, held, q[-400:])
    hold = os.path.join(pf.dir, "spool", "hold", res.queue_id or "-")
    chk.check("spoofed p=quarantine: queue file in hold/", os.path.exists(hold), os.listdir(os.path.join(pf.dir, "spool")))
    pc = H.run(["postcat", "-c", pf.etc, "-q", res.queue_id or "-"], timeout=30, check=False)[1]
    chk.check("spoofed p=quarantine: held copy has our A-R dmarc=fail (p=quarantine",
              t in pc and re.search(r"dmarc=fail \(p=quarantine", pc) is not None, pc[-600:])
    pf.flush()
    chk.check("spoofed p=quarantine: not delivered", not H.wait_for(lambda: pf.find(t), 2))
    if res.queue_id:                     # drop it, so later "nothing queued" checks see an empty queue
        H.run(["postsuper", "-c", pf.etc, "-d", res.queue_id, "hold"], timeout=30, check=False)

    t = tok()
    res = c.send(message("From: ceo@none.test", t))
    c.delivered("spoofed p=none", res, t, "fail", "none.test")
    line = H.wait_for(lambda: next((l for l in daemon.log_text().splitlines()
                                    if res.queue_id and res.queue_id in l and "dmarc=" in l), None), 5)
    chk.check("spoofed p=none: summary line dmarc=fail dmarc_policy=none header_from=none.test",
              line and "dmarc=fail" in line and "dmarc_policy=none" in line and "header_from=none.test" in line, line)

    # check --json / A-R wording for the p=reject spoof
    p = subprocess.run([H.MW_BINARY, "check", "--json", "--dns", "127.0.0.1@%d" % dns, "--ip", ns.ns_addr,
                        "--helo", "mx.evil.test", "--from", SPOOF_FROM, "--rcpt", "bob@dest.test",
                        "--authserv-id", H.AUTHSERV_ID], input=message("From: ceo@reject.test", "chk"),
                       capture_output=True, timeout=60)
    js = json.loads(p.stdout or b"{}")
    d = js.get("dmarc") or {}
    chk.check("check --json: dmarc {result fail, policy reject, disposition reject, domain, org_domain, alignment}",
              (d.get("result"), d.get("policy"), d.get("disposition"), d.get("domain"), d.get("org_domain"),
               d.get("alignment")) == ("fail", "reject", "reject", "reject.test", "reject.test",
                                       {"spf": False, "dkim": False}) and "override" in d, d)
    ar = " ".join(v for n, v in (js.get("headers") or {}).get("add", []) if n == "Authentication-Results")
    chk.check("check: A-R dmarc=fail (p=reject dis=reject) header.from=reject.test policy.dmarc=reject",
              "dmarc=fail (p=reject dis=reject) header.from=reject.test policy.dmarc=reject" in ar, ar)

    # ---- aligned mail
    t = tok()
    res = c.send(message("From: ceo@reject.test", t), mail_from="ceo@reject.test")
    c.delivered("SPF-aligned (MAIL FROM reject.test)", res, t, "pass", "reject.test")
    t = tok()
    res = pf.send("ceo@signed.test", "bob@dest.test", external=False, data=None,
                  headers=["From: CEO <ceo@signed.test>", "Subject: dmarc %s" % t])
    m = pf.wait_delivered(t) if res.code == "250" else None
    signed = m is not None and any("d=signed.test" in v.replace(" ", "") for v in m.get_all("DKIM-Signature"))
    chk.check("--sign: mail from 127.0.0.1 delivered with a DKIM-Signature d=signed.test", signed,
              res.final if m is None else m.get_all("DKIM-Signature"))
    if signed:
        data = strip_delivery(m.raw)
        res = c.send(data, rcpt="r-%s@dest.test" % uuid.uuid4().hex[:8])
        c.delivered("DKIM-aligned (our --sign, re-injected, MAIL FROM evil.test)", res,
                    res.queue_id or t, "pass", "signed.test")
    import dkim
    with open(os.path.join(keydir, "s1.private"), "rb") as f:
        key = f.read()
    for frm, label, want in (("ceo@signed.test", "DKIM-aligned (dkimpy-signed)", "pass"),
                             ("ceo@reject.test", "DKIM not aligned (d=signed.test, From reject.test)", "reject")):
        t = tok()
        msg = message("From: %s" % frm, t)
        msg = dkim.sign(msg, b"s1", b"signed.test", key, include_headers=[b"from", b"to", b"subject"]) + msg
        res = c.send(msg)
        if want == "pass":
            c.delivered(label, res, t, "pass", "signed.test")
        else:
            c.rejected(label, res, t)

    # ---- RFC 9989 §5: a mailing list that re-signed a p=reject author's message
    # (Subject tag, footer, its own DKIM signature) is quarantined, not refused;
    # the same message without the list's signature is a spoof: 550.
    def list_message(t, signed):
        m = message("From: Alice <alice@reject.test>", t,
                    extra=b"List-Id: Developers <dev.lists.listhost.test>\r\n"
                          b"List-Post: <mailto:dev@lists.listhost.test>\r\n")
        m = m.replace(b"Subject: dmarc", b"Subject: [dev] dmarc") + b"-- \r\ndev mailing list\r\n"
        if signed:
            m = dkim.sign(m, b"s1", b"listhost.test", key,
                          include_headers=[b"from", b"to", b"subject", b"list-id"]) + m
        return m
    t = tok()
    res = c.send(list_message(t, True), mail_from="dev-bounces@lists.listhost.test")
    chk.check("mailing list re-signed p=reject mail: accepted (250), not refused", res.code == "250", res.final)
    pc = H.run(["postcat", "-c", pf.etc, "-q", res.queue_id or "-"], timeout=30, check=False)[1]
    pc1 = re.sub(r"\r?\n[ \t]+", " ", pc)                  # unfold
    ar = next((l for l in pc1.splitlines() if l.startswith("Authentication-Results:")), "")
    chk.check("mailing list: held (quarantine), A-R says dmarc=fail dis=quarantine override=mailing_list",
              t in pc and re.search(r"dmarc=fail \(p=reject dis=quarantine override=mailing_list "
                                    r"dev\.lists\.listhost\.test\)", ar) is not None, ar)
    chk.check("mailing list: on hold, not delivered", res.queue_id and
              os.path.exists(os.path.join(pf.dir, "spool", "hold", res.queue_id)), res.queue_id)
    line = H.wait_for(lambda: next((l for l in daemon.log_text().splitlines()
                                    if res.queue_id and res.queue_id in l and "dmarc=" in l), None), 5)
    chk.check("mailing list: the summary line names the rule dmarc-reject-list-or-forwarder",
              line and "dmarc-reject-list-or-forwarder" in line, line)
    if res.queue_id:
        H.run(["postsuper", "-c", pf.etc, "-d", res.queue_id, "hold"], timeout=30, check=False)
    t = tok()
    res = c.send(list_message(t, False), mail_from="dev-bounces@lists.listhost.test")
    c.rejected("list headers without the list's DKIM signature (a spoof)", res, t)

    # ---- the only aligned identifier has a temporary error: 451, never 550 nor delivered
    t = tok()
    msg = message("From: ceo@slowkey.test", t)
    msg = dkim.sign(msg, b"s1", b"slowkey.test", key, include_headers=[b"from", b"to", b"subject"]) + msg
    res = c.send(msg)
    eod = re.search(r"^ -> \.\s*$\n^<\*\* 451 4\.7\.1", res.transcript, re.M)
    chk.check("aligned DKIM key lookup timed out: 451 4.7.1 at end of DATA (temperror, not 550)",
              res.code == "451" and eod, res.transcript[-600:])
    chk.check("aligned DKIM key lookup timed out: not delivered", not H.wait_for(lambda: pf.find(t), 2))
    line = H.wait_for(lambda: next((l for l in daemon.log_text().splitlines()
                                    if "header_from=slowkey.test" in l and "dmarc=" in l), None), 5)
    chk.check("aligned DKIM key lookup timed out: summary line dmarc=temperror",
              line and "dmarc=temperror" in line, line)

    # ---- several From addresses, all in one domain: one Author Domain, evaluated (RFC 9989)
    t = tok()
    res = c.send(message("From: a@reject.test, CEO <ceo@reject.test>", t), mail_from="ceo@reject.test")
    c.delivered("two From addresses in one domain, SPF-aligned: DMARC evaluated, pass", res, t, "pass",
                "reject.test")

    # ---- hostile From forms
    for label, frm, want in hostile_forms():
        t = tok()
        res = c.send(message(frm, t))
        if want == "reject":
            c.rejected("hostile From / %s" % label, res, t)
        else:
            c.delivered("hostile From / %s" % label, res, t, "permerror")

    # ---- history records of the evaluated messages
    recs, st = read_history(hist)
    chk.check("history: all lines whole (CRC32C ok, nothing torn)", st["ok"] > 0 and st["torn"] == 0
              and st["bad_checksum"] == 0 and st["bad_version"] == 0, st)
    chk.check("history: the deferred (451) message is not recorded (its retry will be: counted once)",
              not any(r.get("header_from") == "slowkey.test" for r in recs),
              [r for r in recs if r.get("header_from") == "slowkey.test"])
    by = {}
    for r in recs:
        by.setdefault((r.get("header_from"), r.get("disposition")), []).append(r)
    for hf, disp in (("reject.test", "reject"), ("quarantine.test", "quarantine"), ("none.test", "none"),
                     ("signed.test", "none")):
        chk.check("history: record header_from=%s disposition=%s" % (hf, disp), by.get((hf, disp)),
                  sorted(by)[:20])
    r = (by.get(("reject.test", "reject")) or [{}])[0]
    chk.check("history: p=reject record has source_ip, envelope_from, spf, p, alignment, rua",
              r.get("source_ip") == ns.ns_addr and r.get("envelope_from") == "evil.test"
              and r.get("spf_result") == "pass" and r.get("p") == "reject" and r.get("spf_aligned") == "fail"
              and r.get("dkim_aligned") == "fail" and r.get("rua") == ["mailto:agg@reject.test"], r)
    r = (by.get(("signed.test", "none")) or [{}])[0]
    chk.check("history: DKIM-aligned record has dkim_aligned=pass and the signature",
              r.get("dkim_aligned") == "pass" and any(s.get("domain") == "signed.test" and s.get("result") == "pass"
                                                      for s in r.get("dkim", [])), r)

    # ---- monitor-only
    daemon.stop()
    daemon = h.start_daemon(dns=[dns], port=daemon.port, args=["--policy", "monitor-only"])
    t = tok()
    res = c.send(message("From: ceo@reject.test", t))
    c.delivered("monitor-only: spoofed p=reject", res, t, "fail", "reject.test")


if __name__ == "__main__":
    H.run_test(test, "dmarc", timeout=300)
