#!/usr/bin/python3
"""Daemon failure and signals behind a real Postfix; no mail is ever lost.

Proves:
  - SIGKILL of the daemon in the middle of a session (after the message headers were
    sent) and while an SPF DNS lookup is pending: with milter_default_action=tempfail the
    client gets a 4xx and nothing is delivered or queued; with accept the mail is delivered;
  - mail accepted before a kill is in the maildir; after a restart mail flows again and
    carries our A-R; every message that got a 250 is delivered exactly once, queue empty;
  - SIGTERM with a message in flight (its SPF lookup pending on a silent DNS server) lets
    that message finish with a real verdict (spf=temperror in our A-R), then the daemon
    exits 0;
  - SIGHUP with a valid new config (-c file) switches the authserv-id for later mail; with
    a broken config the daemon keeps running with the old one and logs FILE:LINE.
"""
import os, signal, sys, time, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

GOOD = "alice@pass.fail.test"
SLOW = "alice@slow.fail.test"   # TXT lookup never answered
HELO = "helo.fail.test"


def tok():
    return "tok-%s" % uuid.uuid4().hex


def send_and_check(chk, pf, label, accepted, authserv_id=H.AUTHSERV_ID, expect_ar=True):
    t = tok()
    res = pf.send(GOOD, "bob@dest.test", helo=HELO, headers=["Subject: %s %s" % (label, t)])
    if not chk.check("%s: accepted (250)" % label, res.code == "250", res.final or res.transcript[-300:]):
        return None
    accepted.append(t)
    m = pf.wait_delivered(t)
    if chk.check("%s: delivered" % label, m is not None) and expect_ar:
        ours = H.ar_headers(m, authserv_id)
        chk.check("%s: carries our A-R (%s) with spf=pass" % (label, authserv_id),
                  len(ours) == 1 and "spf=pass" in ours[0], m.get_all("Authentication-Results"))
    return m


def dns_seen(tdns, start, name):
    return name in tdns.log_text()[start:]


def kill_mid_data(chk, h, pf, ns, daemon, label):
    t = tok()
    c = H.StepClient(h, ns.host_addr, pf.port, GOOD, "bob@dest.test", t, helo=HELO, netns=ns)
    chk.check("%s: session paused inside DATA" % label, c.wait_paused(), c.lines)
    daemon.stop(signal.SIGKILL)
    chk.equal("%s: daemon killed" % label, daemon.returncode, -signal.SIGKILL)
    final = c.resume() or ""
    c.close()
    return t, final


def test(h, chk):
    ns = h.create_netns()
    tdns_port, tdns = h.start_testdns({
        "pass.fail.test": [{"TXT": "v=spf1 ip4:%s -all" % ns.ns_addr}],
        "slow.fail.test": ["TIMEOUT"], HELO: [{"A": "192.0.2.250"}]})
    dns = [tdns_port]
    daemon = h.start_daemon(dns=dns)
    pf = h.start_postfix(daemon.port, netns=ns)
    accepted, refused = [], []

    send_and_check(chk, pf, "before kill", accepted)

    # 1. SIGKILL mid-session, default action tempfail
    t, final = kill_mid_data(chk, h, pf, ns, daemon, "kill/tempfail")
    chk.check("kill/tempfail: client gets 4xx", final.startswith("4"), final)
    refused.append(t)

    # 2. SIGKILL while the SPF lookup is pending
    daemon = h.start_daemon(dns=dns, port=daemon.port)
    t, start = tok(), len(tdns.log_text())
    bg = H.Background(pf.send, SLOW, "bob@dest.test", helo=HELO, headers=["Subject: dns-kill %s" % t])
    chk.check("kill/dns: lookup pending", H.wait_for(lambda: dns_seen(tdns, start, "slow.fail.test"), 20))
    daemon.stop(signal.SIGKILL)
    res = bg.join_result(120)
    chk.check("kill/dns: client gets 4xx", res.code.startswith("4"), res.final)
    refused.append(t)

    # 3. restart: mail flows again
    daemon = h.start_daemon(dns=dns, port=daemon.port)
    send_and_check(chk, pf, "after restart", accepted)

    # 4. milter_default_action = accept
    pf.set(milter_default_action="accept")
    t, final = kill_mid_data(chk, h, pf, ns, daemon, "kill/accept")
    if chk.check("kill/accept: client gets 250", final.startswith("250"), final):
        accepted.append(t)
        chk.check("kill/accept: delivered", pf.wait_delivered(t) is not None)
    send_and_check(chk, pf, "daemon down/accept", accepted, expect_ar=False)
    daemon = h.start_daemon(dns=dns, port=daemon.port)
    pf.set(milter_default_action="tempfail")
    send_and_check(chk, pf, "after second restart", accepted)

    # 5. SIGTERM with a message in flight
    t, start = tok(), len(tdns.log_text())
    bg = H.Background(pf.send, SLOW, "bob@dest.test", helo=HELO, headers=["Subject: sigterm %s" % t])
    chk.check("sigterm: lookup pending", H.wait_for(lambda: dns_seen(tdns, start, "slow.fail.test"), 20))
    daemon.send_signal(signal.SIGTERM)
    res = bg.join_result(120)
    if chk.check("sigterm: in-flight message accepted", res.code == "250", res.final or res.transcript[-300:]):
        accepted.append(t)
        m = pf.wait_delivered(t)
        ours = H.ar_headers(m) if m else []
        chk.check("sigterm: in-flight message has a verdict (spf=temperror in our A-R)",
                  len(ours) == 1 and "spf=temperror" in ours[0], m and m.get_all("Authentication-Results"))
    rc = daemon.wait(40)
    chk.equal("sigterm: daemon exited with status 0", rc, 0)

    # 5b. SIGTERM while a session sits inside DATA (MAIL/RCPT done, no lookup pending)
    daemon = h.start_daemon(dns=dns, port=daemon.port)
    t = tok()
    c = H.StepClient(h, ns.host_addr, pf.port, GOOD, "bob@dest.test", t, helo=HELO, netns=ns)
    chk.check("sigterm/data: session paused inside DATA", c.wait_paused(), c.lines)
    daemon.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    final = c.resume() or ""
    c.close()
    if chk.check("sigterm/data: in-flight message accepted", final.startswith("250"), final):
        accepted.append(t)
        m = pf.wait_delivered(t)
        ours = H.ar_headers(m) if m else []
        chk.check("sigterm/data: in-flight message has our A-R with spf=pass",
                  len(ours) == 1 and "spf=pass" in ours[0], m and m.get_all("Authentication-Results"))
    else:
        refused.append(t)
    chk.equal("sigterm/data: daemon exited with status 0", daemon.wait(40), 0)

    # 6. SIGHUP reload from a config file
    conf = h.path("mw.conf")
    h.write("mw.conf", 'authserv_id = "hup-one.test.example";\n')
    daemon = h.start_daemon(dns=dns, port=daemon.port, authserv_id=None, args=["-c", conf])
    send_and_check(chk, pf, "hup/initial", accepted, authserv_id="hup-one.test.example")
    h.write("mw.conf", '# reloaded\nauthserv_id = "hup-two.test.example";\n')
    daemon.send_signal(signal.SIGHUP)
    time.sleep(1)
    send_and_check(chk, pf, "hup/valid reload", accepted, authserv_id="hup-two.test.example")
    h.write("mw.conf", 'authserv_id = "hup-three.test.example";\nno_such_key = 1;\n')
    start = len(daemon.log_text())
    daemon.send_signal(signal.SIGHUP)
    logged = H.wait_for(lambda: "mw.conf:2:" in daemon.log_text()[start:], 5)
    chk.check("hup/broken: error logged with FILE:LINE", logged, daemon.log_text()[start:][-500:])
    chk.check("hup/broken: daemon still running", daemon.alive(), daemon.returncode)
    send_and_check(chk, pf, "hup/broken keeps old config", accepted, authserv_id="hup-two.test.example")

    # nothing lost, nothing duplicated, nothing left behind
    pf.flush()
    for t in accepted:
        chk.equal("accepted %s delivered exactly once" % t[:12], len(pf.find(t)), 1)
    for t in refused:
        chk.equal("refused %s not delivered" % t[:12], len(pf.find(t)), 0)
    q = pf.queue()
    chk.check("postfix queue empty", "Mail queue is empty" in q, q)


if __name__ == "__main__":
    H.run_test(test, "failure", timeout=600)
