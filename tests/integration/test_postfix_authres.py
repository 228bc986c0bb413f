#!/usr/bin/python3
"""Forged Authentication-Results are removed, foreign ones kept (real Postfix).

The incoming message carries A-R headers claiming our authserv-id in three forms:
first header ("MX.Test.Example"), in the middle of the headers (lower case), and folded
with the id on a continuation line; plus foreign A-R headers ("other.example", and
"mx.test.example.evil", which merely starts with our id). It is sent from the namespace
client (SPF really evaluated) to a maildir recipient and an smtp-sink recipient.
Proves for both copies: exactly one A-R with our id remains, it is ours (spf=pass for the
real sender), it is the first A-R and above the message's headers, it parses with
python3-authres, no forged content survives, and the foreign headers are kept unchanged
and in order; the rest of the header block is untouched.
"""
import os, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

FOREIGN = ["other.example; spf=fail smtp.mailfrom=alice@pass.spf.test",
           "mx.test.example.evil; dkim=pass header.d=pass.spf.test"]


def message(token):
    return "\r\n".join([
        "Authentication-Results: MX.Test.Example; spf=pass smtp.mailfrom=forged-first@pass.spf.test",
        "Received: from relay.other.example (relay.other.example [203.0.113.9])",
        "\tby mx.other.example with ESMTP id 1234; Mon, 1 Jan 2024 00:00:00 +0000",
        "Authentication-Results: " + FOREIGN[0],
        "From: Alice <alice@pass.spf.test>",
        "To: bob@dest.test",
        "authentication-results: mx.test.example; spf=pass smtp.mailfrom=forged-middle@pass.spf.test",
        "Subject: forged A-R %s" % token,
        "Authentication-Results:",
        "\tmx.test.example;",
        "\tdkim=pass header.d=forged-folded.example",
        "Authentication-Results: " + FOREIGN[1],
        "Date: Mon, 1 Jan 2024 00:00:01 +0000",
        "Message-ID: <%s@pass.spf.test>" % token,
        "X-Trailer: last header",
        "",
        "body line 1",
        "Authentication-Results: mx.test.example; spf=pass (in the body, not a header)",
        "",
    ])


def check_copy(chk, m, label, sender):
    ars = m.get_all("Authentication-Results")
    ours = H.ar_headers(m)
    chk.equal("%s: exactly one A-R with our authserv-id" % label, len(ours), 1)
    chk.check("%s: no forged A-R content survives" % label,
              not any("forged" in v for v in ars), ars)
    if ours:
        chk.check("%s: our A-R is the first A-R" % label, ars and ars[0] == ours[0], ars)
        chk.check("%s: our A-R is above the message's headers" % label,
                  m.index("Authentication-Results", lambda v: v == ours[0]) < m.index("Received", lambda v: "relay.other.example" in v),
                  m.headers[:8])
        try:
            hdr, results = H.parse_ar(ours[0])
            chk.check("%s: our A-R parses with authres" % label, hdr.authserv_id == H.AUTHSERV_ID, ours[0])
            spf = [(r, p) for meth, r, p in results if meth == "spf"
                   and p.get("smtp.mailfrom", "").lower() == sender]
            chk.check("%s: our A-R says spf=pass smtp.mailfrom=%s" % (label, sender),
                      [r for r, _ in spf] == ["pass"], ours[0])
        except Exception as e:
            chk.check("%s: our A-R parses with authres" % label, False, "%s: %r" % (e, ours[0]))
    kept = [v for v in ars if v in FOREIGN]
    chk.equal("%s: foreign A-R headers kept unchanged, in order" % label, kept, FOREIGN)
    chk.equal("%s: A-R count = ours + foreign" % label, len(ars), 1 + len(FOREIGN))
    names = [n.lower() for n, _ in m.headers]
    for hname in ("from", "to", "subject", "date", "message-id", "x-trailer"):
        chk.equal("%s: header %s kept once" % (label, hname), names.count(hname), 1)
    chk.check("%s: body untouched" % label,
              b"Authentication-Results: mx.test.example; spf=pass (in the body" in m.raw)


def test(h, chk):
    ns = h.create_netns()
    nsd = h.start_nsd({"spf.test": "pass IN TXT \"v=spf1 ip4:%s -all\"\nnohelo IN A 192.0.2.250" % ns.ns_addr})
    daemon = h.start_daemon(dns=[nsd])
    pf = h.start_postfix(daemon.port, netns=ns)
    token = "tok-%s" % uuid.uuid4().hex
    data = h.write("forged.eml", message(token))
    sender = "alice@pass.spf.test"
    res = pf.send(sender, "bob@dest.test,carol@sink.test", helo="nohelo.spf.test", data=data)
    chk.check("message accepted", res.code == "250", res.final or res.transcript[-400:])
    m = pf.wait_delivered(token)
    if chk.check("delivered to maildir", m is not None):
        check_copy(chk, m, "maildir", sender)
    s = H.wait_for(lambda: [x for x in pf.find(token) if x.path.startswith(pf.sinkdir)], 15)
    if chk.check("delivered to smtp-sink", bool(s)):
        check_copy(chk, s[0], "smtp-sink", sender)


if __name__ == "__main__":
    H.run_test(test, "authres", timeout=300)
