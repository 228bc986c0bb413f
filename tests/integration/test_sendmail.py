#!/usr/bin/python3
"""mailwarden behind a real Sendmail 8.17 (Debian packages extracted with dpkg -x), as a
milter configured by the shipped contrib/sendmail/mailwarden.m4 (included unchanged).

The client sends from a network namespace (not loopback: SPF is really evaluated).
Proves:
  - the generated sendmail.cf carries the snippet's filter line (F=T) and macro lists;
  - SPF pass / fail: exactly one A-R with our authserv-id above the message's headers,
    parseable by python3-authres, spf=<result> smtp.mailfrom=<sender>, Received-SPF with
    client-ip=<namespace address>; the summary line carries Sendmail's queue id (i,
    which Sendmail sends at MAIL FROM);
  - DKIM verify: a sender-signed message gets dkim=pass header.d=...;
  - forged A-R: every A-R claiming our authserv-id is removed, the foreign one kept in place;
  - signing on the MSA port with SMTP AUTH ({daemon_name}=MSA, {auth_authen}=alice):
    a DKIM-Signature that verifies on the relayed message (dkimpy), no inbound A-R;
  - DMARC reject under the default policy: a From in reject.test (p=reject) with an
    unaligned envelope gets 550 5.7.1 in reply to the final "." and is not delivered;
    SPF-aligned mail from reject.test is delivered with dmarc=pass header.from=reject.test;
  - policy: with --policy strict an SPF fail is refused with 550 5.7.23;
  - RCPT-time rate limit through the milter (-c FILE, rule sendmail-rcpt ip 3/1h burst 3
    stage rcpt): of 4 recipients the first 3 get 250 and are delivered, the 4th gets
    451 4.7.1 naming the rule.
"""
import os, re, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
import mta_exim as X
import mta_sendmail as S
import test_exim as T


def test(h, chk):
    ns = h.create_netns()
    dkim_key, dkim_txt = T.rsa_key(h, "sender")
    sign_key, sign_txt = T.keygen(h, "example.com", "mw")
    nsd = h.start_nsd(T.spf_dkim_zones(ns.ns_addr, dkim_txt))
    common = ["--sign", "example.com:mw:%s" % sign_key]
    daemon = h.start_daemon(dns=[nsd], args=common)
    sm = S.Sendmail(h, daemon.port, netns=ns)
    sm.start()
    chk.check("sendmail.cf: the snippet's filter line",
              "Xmailwarden, S=inet:%d@127.0.0.1, F=T," % daemon.port in sm.cf_text)
    chk.check("sendmail.cf: {auth_authen} in the MAIL FROM macro list",
              re.search(r"^O Milter\.macros\.envfrom=.*\{auth_authen\}", sm.cf_text, re.M) is not None)

    def send_and_get(label, token, **kw):
        res = sm.send(**kw)
        if not chk.check("%s: accepted (250)" % label, res.code == "250", res.final or res.transcript[-400:]):
            return None, res
        m = sm.sink.wait_delivered(token)
        chk.check("%s: delivered" % label, m is not None)
        return m, res

    for r in ("pass", "fail"):
        token = "tok-%s" % uuid.uuid4().hex
        sender = "alice@%s.spf.test" % r
        m, res = send_and_get("spf %s" % r, token, mail_from=sender, rcpt="bob@dest.test", helo="nohelo.spf.test",
                              headers=["Subject: spf %s %s" % (r, token)])
        if not m:
            continue
        T.check_ar(chk, "spf %s" % r, m, r, prop=("smtp.mailfrom", sender))
        rs = m.get_all("Received-SPF")
        chk.check("spf %s: one Received-SPF with client-ip=%s" % (r, ns.ns_addr),
                  len(rs) == 1 and re.match(r"%s\b" % r, rs[0], re.I) and "client-ip=%s" % ns.ns_addr in rs[0], rs)
        qid = re.search(r"250 2\.0\.0 (\S+) Message accepted", res.transcript)
        if r == "pass" and qid:
            chk.check("daemon logged a summary line with Sendmail's queue id %s" % qid.group(1),
                      H.wait_for(lambda: "id=%s" % qid.group(1) in daemon.log_text(), 5), daemon.log_tail(5))

    token = "tok-%s" % uuid.uuid4().hex
    raw = h.path("dkim-%s.eml" % token)
    with open(raw, "wb") as f:
        f.write(T.dkim_signed(dkim_key, token))
    m, _ = send_and_get("dkim verify", token, mail_from="alice@pass.spf.test", rcpt="bob@dest.test",
                        helo="nohelo.spf.test", data=raw)
    if m:
        T.check_ar(chk, "dkim verify", m, "pass", method="dkim", prop=("header.d", "dkim.test"))

    token = "tok-%s" % uuid.uuid4().hex
    raw = h.path("forged-%s.eml" % token)
    with open(raw, "w") as f:
        f.write(T.forged_message(token))
    m, _ = send_and_get("forged A-R", token, mail_from="alice@pass.spf.test", rcpt="bob@dest.test",
                        helo="nohelo.spf.test", data=raw)
    if m:
        ars = m.get_all("Authentication-Results")
        T.check_ar(chk, "forged A-R", m, "pass", prop=("smtp.mailfrom", "alice@pass.spf.test"))
        chk.check("forged A-R: no forged content survives", not any("forged" in v for v in ars), ars)
        chk.equal("forged A-R: the foreign A-R is kept", [v for v in ars if v.startswith("other.example")],
                  ["other.example; spf=fail smtp.mailfrom=alice@pass.spf.test"])
        chk.equal("forged A-R: A-R count = ours + foreign", len(ars), 2)

    token = "tok-%s" % uuid.uuid4().hex
    res = sm.submit("alice", "alice@example.com", "bob@dest.test",
                    headers=["From: Alice <alice@example.com>", "Subject: signed %s" % token,
                             "Message-ID: <%s@example.com>" % token])
    chk.check("MSA: AUTH accepted (235)", any(l.startswith("235") for l in res.replies), res.replies)
    chk.check("MSA: accepted (250)", res.code == "250", res.final or res.transcript[-400:])
    m = sm.sink.wait_delivered(token)
    if chk.check("MSA: delivered", m is not None):
        sigs = m.get_all("DKIM-Signature")
        chk.check("MSA: one DKIM-Signature d=example.com s=mw",
                  len(sigs) == 1 and "d=example.com" in sigs[0] and "s=mw" in sigs[0], sigs)
        import dkim
        rec = sign_txt.encode()
        chk.check("MSA: the signature verifies on the relayed message (dkimpy)",
                  dkim.verify(X.strip_sink(m.raw), dnsfunc=lambda name, timeout=5: rec))
        chk.equal("MSA: no A-R of ours on outbound mail", H.ar_headers(m), [])
        chk.check("MSA: daemon saw the SASL login (trust=authenticated)",
                  H.wait_for(lambda: re.search(r"id=\S+ .*trust=authenticated signed=example.com/mw",
                                               daemon.log_text()), 5), daemon.log_tail(5))

    T.check_dmarc(chk, sm, daemon)

    daemon.stop()
    daemon = h.start_daemon(dns=[nsd], port=daemon.port, args=common + ["--policy", "strict"])
    token = "tok-%s" % uuid.uuid4().hex
    res = sm.send("alice@fail.spf.test", "bob@dest.test", helo="nohelo.spf.test",
                  headers=["Subject: strict fail %s" % token])
    chk.check("strict: SPF fail refused with 550 5.7.23", res.code == "550" and "5.7.23" in res.final,
              res.final or res.transcript[-400:])
    chk.check("strict: refused message not delivered", not H.wait_for(lambda: sm.sink.find(token), 3))

    daemon.stop()
    conf = h.write("mailwarden-rl.conf", "ratelimit = { rules = (\n  %s\n); };\n" % (T.RL_RULE % "sendmail-rcpt"))
    daemon = h.start_daemon(dns=[nsd], port=daemon.port, args=["-c", conf] + common)
    T.check_rcpt_limit(chk, sm, "sendmail-rcpt", 4, "rate limit", ["250", "250", "250", "451"])
    chk.check("rate limit: daemon logged the refused recipient with rule sendmail-rcpt",
              re.search(r"refused.*rule=sendmail-rcpt", daemon.log_text()), daemon.log_tail(8))


if __name__ == "__main__":
    H.run_test(test, "sendmail", timeout=600)
