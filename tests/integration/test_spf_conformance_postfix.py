#!/usr/bin/python3
"""SPF processing limits and explanations through a real Postfix (issue 3).

From a non-loopback client (network namespace), with tests/lib/testdns.py serving:
  - a record with three void lookups (RFC 7208 4.6.4: at most two) -> the delivered
    message's Authentication-Results carries spf=permerror; two voids -> neutral;
  - a chain of 12 includes (limit: 10 DNS-querying terms across includes) ->
    spf=permerror; the same chain entered 2 levels down (10 includes) -> spf=pass;
  - under --policy strict, a record with exp= rejects with 550 5.7.23 and the reply
    text is OUR macro expansion of the exp= TXT (client IP, domain, sender, and an
    upper-case macro that URL-escapes the local part, so a '%' goes through the milter
    reply), sanitised and on one line.
"""
import os, re, sys, uuid
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
import harness as H

SUFFIX = "spfc.test"
EXP_TEXT = "%{i} may not send for %{d} (sender %{s}); see https://example.test/why?l=%{L}"


def zone(ns_ip):
    z = {
        "nohelo." + SUFFIX: [{"A": "192.0.2.250"}],
        "void3." + SUFFIX: [{"TXT": "v=spf1 a:nx1.%s a:nx2.%s a:nx3.%s +all" % ((SUFFIX,) * 3)}],
        "void2." + SUFFIX: [{"TXT": "v=spf1 a:nx1.%s a:nx2.%s ?all" % ((SUFFIX,) * 2)}],
        "exp." + SUFFIX: [{"TXT": "v=spf1 ip4:192.0.2.250 -all exp=why.%{d}"}],
        "why.exp." + SUFFIX: [{"TXT": EXP_TEXT}],
    }
    for i in range(12):
        z["c%d.chain.%s" % (i, SUFFIX)] = [{"TXT": "v=spf1 include:c%d.chain.%s -all" % (i + 1, SUFFIX)}]
    z["c12.chain." + SUFFIX] = [{"TXT": "v=spf1 ip4:%s -all" % ns_ip}]
    return z


def deliver(chk, pf, label, sender, expect):
    token = "tok-%s" % uuid.uuid4().hex
    res = pf.send(sender, "bob@dest.test", helo="nohelo." + SUFFIX,
                  headers=["Subject: %s %s" % (label, token)])
    if not chk.check("%s: accepted (250)" % label, res.code == "250", res.final or res.transcript[-400:]):
        return
    m = pf.wait_delivered(token)
    if not chk.check("%s: delivered" % label, m is not None):
        return
    ours = H.ar_headers(m)
    if not chk.check("%s: one A-R with our authserv-id" % label, len(ours) == 1, m.headers[:8]):
        return
    try:
        hdr, results = H.parse_ar(ours[0])
    except Exception as e:
        chk.check("%s: A-R parses" % label, False, "%s: %r" % (e, ours[0]))
        return
    spf = [(r, p) for meth, r, p in results if meth == "spf"
           and p.get("smtp.mailfrom", "").lower() == sender.lower()]
    chk.check("%s: A-R spf=%s smtp.mailfrom=%s" % (label, expect, sender),
              [r for r, _ in spf] == [expect], ours[0])
    rs = m.get_all("Received-SPF")
    chk.check("%s: Received-SPF %s" % (label, expect),
              len(rs) == 1 and re.match(r"%s\b" % expect, rs[0], re.I) is not None, rs)
    if expect == "permerror" and rs:
        chk.check("%s: Received-SPF names the problem" % label, "problem=" in rs[0], rs[0])


def test(h, chk):
    ns = h.create_netns()
    port, _ = h.start_testdns(zone(ns.ns_addr))
    daemon = h.start_daemon(dns=[port])
    pf = h.start_postfix(daemon.port, netns=ns)

    deliver(chk, pf, "void-over-limit", "alice@void3." + SUFFIX, "permerror")
    deliver(chk, pf, "void-at-limit", "alice@void2." + SUFFIX, "neutral")
    deliver(chk, pf, "12-include chain", "alice@c0.chain." + SUFFIX, "permerror")
    deliver(chk, pf, "10-include chain", "alice@c2.chain." + SUFFIX, "pass")
    chk.check("daemon log names the term limit",
              H.wait_for(lambda: "10 DNS-querying terms" in daemon.log_text()
                         or "permerror" in daemon.log_text(), 5), daemon.log_tail(10))

    # strict policy: the SPF fail is refused with the expanded explanation
    daemon.stop()
    daemon = h.start_daemon(dns=[port], port=daemon.port, args=["--policy", "strict"])
    token = "tok-%s" % uuid.uuid4().hex
    sender = "a+b@exp." + SUFFIX
    res = pf.send(sender, "bob@dest.test", helo="nohelo." + SUFFIX,
                  headers=["Subject: strict exp %s" % token])
    want = ("%s may not send for exp.%s (sender %s); see https://example.test/why?l=a%%2Bb"
            % (ns.ns_addr, SUFFIX, sender))
    chk.check("strict: SPF fail refused with 550 5.7.23",
              res.code == "550" and "5.7.23" in res.final, res.final or res.transcript[-400:])
    chk.check("strict: the reply carries the expanded exp= text",
              res.final.endswith(want), "got %r, want ...%r" % (res.final, want))
    chk.check("strict: the reply is one printable line",
              all(0x20 <= ord(c) < 0x7f for c in res.final), res.final)
    pf.flush()
    chk.check("strict: refused message not delivered", not H.wait_for(lambda: pf.find(token), 3))


if __name__ == "__main__":
    H.run_test(test, "spfconf", timeout=600)
