#!/usr/bin/python3
"""SPF behind a real Postfix, from a non-loopback client (network namespace).

Proves, for MAIL FROM and for HELO (null sender, HELO domain carries the record):
pass, fail, softfail, neutral, none, permerror (record libspf2 cannot compile) from
NSD zones, and temperror (DNS timeout, scripted by tests/lib/testdns.py):
  - the delivered message has exactly one A-R with our authserv-id, above the
    message's own headers, parseable by python3-authres, with spf=<expected> and the
    right smtp.mailfrom / smtp.helo;
  - Received-SPF starts with the expected result and carries client-ip=<namespace ip>;
  - the daemon logs a summary line with the Postfix queue id;
  - with --policy strict an SPF fail is refused with 550 5.7.23 and nothing is delivered,
    while an SPF pass still goes through.
"""
import os, re, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

RESULTS = ["pass", "fail", "softfail", "neutral", "none", "permerror"]


def spf_zone(ip):
    rec = {"pass": "v=spf1 ip4:%s -all" % ip, "fail": "v=spf1 -all", "softfail": "v=spf1 ~all",
           "neutral": "v=spf1 ?all", "none": None,
           # 300.0.0.1 is not an IPv4 address: the record does not compile -> permerror
           "permerror": "v=spf1 ip4:%s ip4:300.0.0.1 -all" % ip}
    lines = ["nohelo IN A 192.0.2.250"]
    for r, txt in rec.items():
        for name in (r, "helo-" + r):
            lines.append("%s IN A 192.0.2.250" % name)
            if txt:
                lines.append('%s IN TXT "%s"' % (name, txt))
    return "\n".join(lines)


def check_delivery(chk, pf, ns, label, res, token, expect, mailfrom=None, helo=None):
    """Assertions on one delivered message. Returns the message (or None)."""
    if not chk.check("%s: accepted (250)" % label, res.code == "250", res.final or res.transcript[-400:]):
        return None
    m = pf.wait_delivered(token)
    if not chk.check("%s: delivered" % label, m is not None):
        return None
    ours = H.ar_headers(m)
    chk.equal("%s: exactly one A-R with our authserv-id" % label, len(ours), 1)
    if not ours:
        return m
    first_own = min(i for i in (m.index("From"), m.index("Subject"), m.index("Date")) if i is not None)
    chk.check("%s: our A-R is above the message's own headers" % label,
              m.index("Authentication-Results", lambda v: v == ours[0]) < first_own, m.headers[:6])
    try:
        hdr, results = H.parse_ar(ours[0])
    except Exception as e:
        chk.check("%s: A-R parses with authres" % label, False, "%s: %r" % (e, ours[0]))
        return m
    chk.check("%s: A-R parses with authres" % label, hdr.authserv_id == H.AUTHSERV_ID, ours[0])
    spf = [(res_, props) for meth, res_, props in results if meth == "spf"]
    if mailfrom is not None:
        hit = [r for r, p in spf if p.get("smtp.mailfrom", "").lower() == mailfrom.lower()]
        chk.check("%s: A-R spf=%s smtp.mailfrom=%s" % (label, expect, mailfrom), hit == [expect], ours[0])
    if helo is not None:
        hit = [r for r, p in spf if p.get("smtp.helo", "").lower() == helo.lower()]
        chk.check("%s: A-R spf=%s smtp.helo=%s" % (label, expect, helo), hit[:1] == [expect], ours[0])
    rs = m.get_all("Received-SPF")
    chk.check("%s: one Received-SPF" % label, len(rs) == 1, rs)
    if rs:
        v = rs[0]
        chk.check("%s: Received-SPF starts with %s" % (label, expect),
                  re.match(r"%s\b" % expect, v, re.I) is not None, v)
        chk.check("%s: Received-SPF client-ip=%s" % (label, ns.ns_addr),
                  re.search(r"client-ip=%s;" % re.escape(ns.ns_addr), v + ";") is not None, v)
        ident = re.search(r"identity=([\w-]+)", v)
        want = "mailfrom" if mailfrom is not None else "helo"
        chk.check("%s: Received-SPF identity=%s (when given)" % (label, want),
                  ident is None or ident.group(1).lower() == want, v)
        if helo is not None:
            chk.check("%s: Received-SPF helo=%s" % (label, helo),
                      re.search(r"helo=%s\b" % re.escape(helo), v, re.I) is not None, v)
    return m


def run_cases(chk, pf, ns, daemon, results, zone_suffix="spf.test"):
    for r in results:
        token = "tok-%s" % uuid.uuid4().hex
        sender = "alice@%s.%s" % (r, zone_suffix)
        res = pf.send(sender, "bob@dest.test", helo="nohelo.spf.test",
                      headers=["Subject: spf mailfrom %s %s" % (r, token)])
        check_delivery(chk, pf, ns, "mailfrom/%s" % r, res, token, r, mailfrom=sender)
        if r == "pass" and res.queue_id:
            ok = H.wait_for(lambda: res.queue_id in daemon.log_text(), 5)
            chk.check("daemon logged a summary line with queue id %s" % res.queue_id, ok,
                      daemon.log_tail(5))
        token = "tok-%s" % uuid.uuid4().hex
        helo = "helo-%s.%s" % (r, zone_suffix)
        res = pf.send("", "bob@dest.test", helo=helo, headers=["Subject: spf helo %s %s" % (r, token)])
        check_delivery(chk, pf, ns, "helo/%s" % r, res, token, r, helo=helo)


def test(h, chk):
    ns = h.create_netns()
    nsd = h.start_nsd({"spf.test": spf_zone(ns.ns_addr)})
    tdns_port, _ = h.start_testdns({
        "timeout.spf.test": ["TIMEOUT"], "helo-timeout.spf.test": ["TIMEOUT"],
        "nohelo.spf.test": [{"A": "192.0.2.250"}],
        "pass.spf.test": [{"TXT": "v=spf1 ip4:%s -all" % ns.ns_addr}],
        "fail.spf.test": [{"TXT": "v=spf1 -all"}]})
    daemon = h.start_daemon(dns=[nsd])
    pf = h.start_postfix(daemon.port, netns=ns)

    run_cases(chk, pf, ns, daemon, RESULTS)

    # temperror: the sender's (or HELO's) domain never answers
    daemon.stop()
    daemon = h.start_daemon(dns=[tdns_port], port=daemon.port)
    for label, sender, helo in (("mailfrom/temperror", "alice@timeout.spf.test", "nohelo.spf.test"),
                                ("helo/temperror", "", "helo-timeout.spf.test")):
        token = "tok-%s" % uuid.uuid4().hex
        res = pf.send(sender, "bob@dest.test", helo=helo, headers=["Subject: %s %s" % (label, token)],
                      timeout=120)
        check_delivery(chk, pf, ns, label, res, token, "temperror",
                       mailfrom=sender or None, helo=None if sender else helo)

    # strict policy: SPF fail refused with 550 5.7.23, pass still delivered
    daemon.stop()
    daemon = h.start_daemon(dns=[nsd], port=daemon.port, args=["--policy", "strict"])
    token = "tok-%s" % uuid.uuid4().hex
    res = pf.send("alice@fail.spf.test", "bob@dest.test", helo="nohelo.spf.test",
                  headers=["Subject: strict fail %s" % token])
    chk.check("strict: SPF fail refused with 550 5.7.23",
              res.code == "550" and "5.7.23" in res.final, res.final or res.transcript[-400:])
    chk.check("strict: swaks reports failure", res.rc != 0, res.rc)
    pf.flush()
    chk.check("strict: refused message not delivered", not H.wait_for(lambda: pf.find(token), 3))
    chk.check("strict: refused message not queued", "Mail queue is empty" in pf.queue(), pf.queue())
    token = "tok-%s" % uuid.uuid4().hex
    res = pf.send("alice@pass.spf.test", "bob@dest.test", helo="nohelo.spf.test",
                  headers=["Subject: strict pass %s" % token])
    check_delivery(chk, pf, ns, "strict/pass", res, token, "pass", mailfrom="alice@pass.spf.test")


if __name__ == "__main__":
    H.run_test(test, "spf", timeout=600)
