#!/usr/bin/python3
"""ARC (RFC 8617) behind a real Postfix (issue 14 §1), with dkimpy (python3-dkim) on
the other side.

A message from alice@reject.test (p=reject), DKIM-signed by reject.test, is forwarded:
the forwarder authenticates it (its Authentication-Results say dkim=pass
header.d=reject.test), adds a Subject tag (which breaks the author's signature) and
seals it with dkimpy's arc_sign.  It then reaches our Postfix from a client that
reject.test's SPF does not allow, so DMARC fails.  Proves:
  - a passing chain sealed by a trusted sealer (dmarc.trusted_arc_sealers) whose AAR
    shows an aligned pass: delivered (250), our A-R says arc=pass with smtp.remote-ip
    and header.oldest-pass, dmarc=fail with override=trusted_forwarder, the summary
    line names rule dmarc-override-deliver, `check --json` explains it;
  - the same chain sealed by a sealer we do not trust: 550;
  - a trusted sealer's chain whose message was changed after sealing (arc=fail): 550;
  - a trusted sealer whose AAR shows no aligned pass: 550;
  - arc.seal: what we deliver carries our ARC set (instance 2, cv=pass, d=seal.test)
    and dkimpy's arc_verify passes the whole chain; a message without a chain gets
    i=1 cv=none and dkimpy passes that too.
"""
import json, os, re, subprocess, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

DOMAINS = ("reject.test", "fwd.test", "other.test", "seal.test")


def keygen(keydir, dom):
    d = os.path.join(keydir, dom)
    os.makedirs(d, mode=0o700)
    out = H.run([H.MW_BINARY, "keygen", "--domain", dom, "--selector", "s1", "--type", "rsa",
                 "--bits", "2048", "--out", d], timeout=60)[1]
    line = [l for l in out.splitlines() if "IN TXT" in l][0]
    with open(os.path.join(d, "s1.private"), "rb") as f:
        return re.findall(r'"([^"]*)"', line), f.read(), os.path.join(d, "s1.private")


def test(h, chk):
    try:
        import dkim
    except ImportError as e:
        raise H.Skip("python3-dkim missing: %s" % e)
    if not hasattr(dkim, "arc_sign"):
        raise H.Skip("python3-dkim without ARC support")
    ns = h.create_netns()
    keydir = h.path("keys")
    os.makedirs(keydir, mode=0o700)
    keys = {d: keygen(keydir, d) for d in DOMAINS}
    zone = {"reject.test": [{"TXT": "v=spf1 -all"}, {"A": "192.0.2.8"}],
            "_dmarc.reject.test": [{"TXT": "v=DMARC1; p=reject"}]}
    for d in DOMAINS:
        zone["s1._domainkey.%s" % d] = [{"TXT": keys[d][0]}]
    txt = {("s1._domainkey.%s." % d).encode(): "".join(keys[d][0]).encode() for d in DOMAINS}

    def dnsfunc(name, timeout=5):
        return txt.get(name if name.endswith(b".") else name + b".")

    dns, _ = h.start_testdns(zone, verbose=False)
    conf = h.path("mw.conf")
    with open(conf, "w") as f:
        f.write('dkim = { keys = ( { name = "arcseal"; domain = "seal.test"; selector = "s1"; file = "%s"; } ); };\n'
                'arc = { seal = true; key = "arcseal"; };\n'
                'dmarc = { trusted_arc_sealers = [ "fwd.test" ]; };\n' % keys["seal.test"][2])
    daemon = h.start_daemon(dns=[dns], args=["-c", conf])
    pf = h.start_postfix(daemon.port, netns=ns)

    def forwarded(t, sealer, aar, after=b""):
        m = (b"From: Alice <alice@reject.test>\r\nTo: bob@dest.test\r\nSubject: arc " + t.encode() +
             b"\r\nMessage-ID: <" + t.encode() + b"@t>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody " +
             t.encode() + b"\r\n")
        m = dkim.sign(m, b"s1", b"reject.test", keys["reject.test"][1],
                      include_headers=[b"from", b"to", b"subject"]) + m
        # the forwarder checked it on arrival, then tagged the Subject
        m = (b"Authentication-Results: " + sealer.encode() + b"; " + aar + b"\r\n" +
             m.replace(b"Subject: arc", b"Subject: [fwd] arc"))
        seal = dkim.arc_sign(m, b"s1", sealer.encode(), keys[sealer][1], sealer.encode(),
                             include_headers=[b"from", b"to", b"subject"])
        return b"".join(seal) + m + after

    def send(data, mail_from="alice@reject.test"):
        path = h.path("m-%s.eml" % uuid.uuid4().hex[:10])
        with open(path, "wb") as f:
            f.write(data)
        return pf.send(mail_from, "bob@dest.test", helo="mx.fwd.test", data=path)

    def a_r(m):
        un = re.sub(rb"\r?\n[ \t]+", b" ", m.raw).decode("utf-8", "replace")
        return [l for l in un.splitlines() if l.lower().startswith("authentication-results:")
                and H.AUTHSERV_ID in l]

    good = b"dkim=pass header.d=reject.test header.s=s1; spf=fail smtp.mailfrom=alice@reject.test"

    # ---- trusted sealer, aligned pass in its AAR: delivered
    t = "arc-%s" % uuid.uuid4().hex
    res = send(forwarded(t, "fwd.test", good))
    m = pf.wait_delivered(t) if res.code == "250" else None
    chk.check("trusted ARC sealer: delivered (250)", m is not None, res.final)
    ar = " ".join(a_r(m)) if m else ""
    chk.check("trusted ARC sealer: A-R arc=pass with smtp.remote-ip and header.oldest-pass",
              re.search(r"arc=pass \(i=1 sealed by fwd\.test\) smtp\.remote-ip=%s header\.oldest-pass=1"
                        % re.escape(ns.ns_addr), ar) is not None, ar)
    chk.check("trusted ARC sealer: A-R dmarc=fail ... override=trusted_forwarder arc fwd.test",
              re.search(r"dmarc=fail \(p=reject dis=none override=trusted_forwarder arc fwd\.test\)", ar)
              is not None, ar)
    line = H.wait_for(lambda: next((l for l in daemon.log_text().splitlines()
                                    if res.queue_id and res.queue_id in l and "dmarc=" in l), None), 5)
    chk.check("trusted ARC sealer: summary line rule=dmarc-override-deliver",
              line and "dmarc-override-deliver" in line, line)

    # ---- our seal on what we delivered: dkimpy verifies the whole chain
    if m is not None:
        delivered = m.raw
        seals = re.findall(rb"^ARC-Seal:.*(?:\r?\n[ \t].*)*", delivered, re.M | re.I)
        chk.check("arc.seal: the delivered copy carries our ARC-Seal i=2 cv=pass d=seal.test",
                  any(re.search(rb"i=2;", s) and re.search(rb"cv=pass", s) and re.search(rb"d=seal\.test", s)
                      for s in seals), seals)
        cv, results, why = dkim.arc_verify(delivered, dnsfunc=dnsfunc)
        chk.check("arc.seal: dkimpy arc_verify passes our chain (2 sets)",
                  cv == dkim.CV_Pass and len(results) == 2, (cv, why, results))

    # ---- a message without a chain: we seal it as i=1 cv=none; dkimpy passes it
    t = "arc-%s" % uuid.uuid4().hex
    m0 = (b"From: Carol <carol@nowhere.test>\r\nTo: bob@dest.test\r\nSubject: plain " + t.encode() +
          b"\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n")
    res = send(m0, mail_from="carol@nowhere.test")
    m = pf.wait_delivered(t) if res.code == "250" else None
    chk.check("no chain: delivered", m is not None, res.final)
    if m is not None:
        ar = " ".join(a_r(m))
        chk.check("no chain: A-R arc=none", "arc=none" in ar, ar)
        cv, results, why = dkim.arc_verify(m.raw, dnsfunc=dnsfunc)
        chk.check("no chain: our i=1 cv=none seal verifies with dkimpy", cv == dkim.CV_Pass and len(results) == 1,
                  (cv, why))

    # ---- not trusted / broken / no aligned pass: refused as a spoof
    for label, data in (
            ("sealer not trusted (other.test)", forwarded("arc-%s" % uuid.uuid4().hex, "other.test", good)),
            ("trusted sealer, message changed after sealing (arc=fail)",
             forwarded("arc-%s" % uuid.uuid4().hex, "fwd.test", good, after=b"appended after sealing\r\n")),
            ("trusted sealer, AAR without an aligned pass",
             forwarded("arc-%s" % uuid.uuid4().hex, "fwd.test",
                       b"dkim=pass header.d=elsewhere.test; spf=fail smtp.mailfrom=alice@reject.test"))):
        res = send(data)
        chk.check("%s: 550 5.7.1" % label, res.code == "550" and "5.7.1" in res.final, res.final)

    # ---- check --json explains the override
    t = "arc-%s" % uuid.uuid4().hex
    p = subprocess.run([H.MW_BINARY, "check", "--json", "-c", conf, "--dns", "127.0.0.1@%d" % dns,
                        "--ip", ns.ns_addr, "--helo", "mx.fwd.test", "--from", "alice@reject.test",
                        "--rcpt", "bob@dest.test", "--authserv-id", H.AUTHSERV_ID],
                       input=forwarded(t, "fwd.test", good), capture_output=True, timeout=60)
    js = json.loads(p.stdout or b"{}")
    a = js.get("arc") or {}
    d = (js.get("dmarc") or {}).get("override") or {}
    chk.check("check --json: arc {result pass, sealer fwd.test, instances 1}",
              (a.get("result"), a.get("sealer"), a.get("instances")) == ("pass", "fwd.test", 1), a)
    chk.check("check --json: dmarc.override {reason trusted_forwarder arc fwd.test, kinds [trusted_arc]}",
              d.get("reason") == "trusted_forwarder arc fwd.test" and d.get("kinds") == ["trusted_arc"], d)


if __name__ == "__main__":
    H.run_test(test, "arc", timeout=300)
