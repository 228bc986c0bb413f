#!/usr/bin/python3
"""`mailwarden check` says what the daemon does (issue 17 §3).

One config (Redis-backed rate limits, so check and the daemon share the buckets: a
per-recipient rule of 1/1d at RCPT), one test DNS zone, one real Postfix with the daemon.
For three messages the daemon's answer through Postfix and check's verdict (text and
JSON) must agree on the action, the SMTP code and the stage:
  - a rate-limited recipient: 451 at RCPT, rule per-rcpt (check used to print
    "verdict: accept", the refusal only in its trace);
  - a DMARC-rejected message (p=reject spoof): 550 at end of DATA, rule dmarc-reject;
  - an accepted message (p=none): accepted.
"""
import json, os, shutil, subprocess, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_postfix_ratelimit import Redis, write_conf

RULE = '{ name = "per-rcpt"; key = "recipient"; rate = "1/1d"; stage = "rcpt"; }'


def message(frm, token):
    return ("From: %s\r\nTo: x@dest.test\r\nSubject: %s\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            "Message-ID: <%s@t>\r\n\r\nbody %s\r\n" % (frm, token, token, token)).encode()


def test(h, chk):
    if not shutil.which("redis-server"):
        raise H.Skip("redis-server not installed")
    ns = h.create_netns()
    spf = {"TXT": "v=spf1 ip4:%s -all" % ns.ns_addr}
    zone = {"evil.test": [spf],
            "reject.test": [spf, {"A": "192.0.2.8"}], "_dmarc.reject.test": [{"TXT": "v=DMARC1; p=reject"}],
            "none.test": [spf, {"A": "192.0.2.8"}], "_dmarc.none.test": [{"TXT": "v=DMARC1; p=none"}]}
    dns, _ = h.start_testdns(zone, verbose=False)
    redis = Redis(h)
    conf = write_conf(h, "mw.conf", [RULE], redis=redis)
    daemon = h.start_daemon(dns=[dns], args=["-c", conf])
    pf = h.start_postfix(daemon.port, netns=ns)

    def check(frm, rcpt, data, js=True):
        argv = [H.MW_BINARY, "check", "-c", conf, "--dns", "127.0.0.1@%d" % dns, "--ip", ns.ns_addr,
                "--helo", "mx.evil.test", "--from", frm, "--rcpt", rcpt, "--authserv-id", H.AUTHSERV_ID]
        p = subprocess.run(argv + (["--json"] if js else []), input=data, capture_output=True, timeout=60)
        return json.loads(p.stdout or b"{}") if js else p.stdout.decode()

    def send(frm, rcpt, data):
        path = h.path("m-%s.eml" % uuid.uuid4().hex[:8])
        with open(path, "wb") as f:
            f.write(data)
        return pf.send(frm, rcpt, helo="mx.evil.test", data=path)

    # ---- a rate-limited recipient: both refuse it at RCPT with 451 and the rule
    t = "tok-%s" % uuid.uuid4().hex
    rl = "limited-%s@dest.test" % uuid.uuid4().hex[:6]
    first = send("a@evil.test", rl, message("a@none.test", t))
    chk.check("rate limit: the first message to the recipient is accepted", first.code == "250", first.final)
    res = send("a@evil.test", rl, message("a@none.test", t + "b"))
    chk.check("rate limit: the daemon refuses the second at RCPT with 451 4.7.1",
              res.code == "451" and "4.7.1" in res.final, res.final)
    js = check("a@evil.test", rl, message("a@none.test", t + "c"))
    v = js.get("verdict") or {}
    chk.check("rate limit: check agrees: tempfail at rcpt, 451, rule per-rcpt",
              v.get("action") == "tempfail" and v.get("stage") == "rcpt" and (v.get("reply") or "").startswith("451")
              and v.get("rule") == "per-rcpt", v)
    txt = check("a@evil.test", rl, message("a@none.test", t + "d"), js=False)
    chk.check("rate limit: check's text says 'verdict: tempfail at RCPT (rule per-rcpt): 451'",
              "verdict:   tempfail at RCPT (rule per-rcpt): 451" in txt, txt)

    # ---- a DMARC reject: both 550 at end of DATA
    t = "tok-%s" % uuid.uuid4().hex
    res = send("a@evil.test", "d1-%s@dest.test" % t[-6:], message("CEO <ceo@reject.test>", t))
    chk.check("dmarc reject: the daemon answers 550 5.7.1", res.code == "550" and "5.7.1" in res.final, res.final)
    js = check("a@evil.test", "d2-%s@dest.test" % t[-6:], message("CEO <ceo@reject.test>", t))
    v = js.get("verdict") or {}
    chk.check("dmarc reject: check agrees: reject at data, 550, rule dmarc-reject",
              v.get("action") == "reject" and v.get("stage") == "data" and (v.get("reply") or "").startswith("550")
              and v.get("rule") == "dmarc-reject", v)

    # ---- accepted
    t = "tok-%s" % uuid.uuid4().hex
    res = send("a@evil.test", "a1-%s@dest.test" % t[-6:], message("a@none.test", t))
    chk.check("accepted: the daemon accepts (250) and delivers", res.code == "250" and pf.wait_delivered(t),
              res.final)
    js = check("a@evil.test", "a2-%s@dest.test" % t[-6:], message("a@none.test", t))
    v = js.get("verdict") or {}
    chk.check("accepted: check agrees: accept at data", v.get("action") == "accept" and v.get("stage") == "data", v)


if __name__ == "__main__":
    H.run_test(test, "check-agrees", timeout=300)
