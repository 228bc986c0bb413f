#!/usr/bin/python3
"""Rate limits and reputation through the real daemon behind a real Postfix (issue 7, item 6).

Clients send from a network namespace (inbound) or through the SASL submission port.
Redis parts use a redis-server this test starts on a free loopback port; they are
skipped (with a SKIP line, the memory-backend part still runs) when redis-server is missing.
  1. burst: 12 parallel sessions against a burst-5 per-client-IP rule at RCPT (5/1d):
     exactly 5 recipients accepted and delivered, 7 refused 451 4.7.1 naming the rule,
     one `refused ... stage=rcpt rule=burst-ip` log line each, queue empty. Memory, then Redis.
  2. two daemons sharing one Redis (one Postfix; `smtpd_milters` switched between them
     with `postfix reload` before each send, and each daemon's log checked to have seen
     its messages): a per-SASL-user 5/1h recipient limit holds across both.
  3. `mailwarden limits list|show|reset` on that bucket; after reset the next recipient passes.
  4. Redis SIGKILLed while 3 threads send: failure_action accept -> every message accepted and
     delivered, one failure line per interval; tempfail -> every send started after the kill
     gets 451 4.7.1; no accepted message lost, queue empty; after Redis restarts on the same
     port the limits apply again (5 accepted, the 6th refused).
  6. a MAIL-stage rule (per client IP, 3/1d) with a RCPT-stage one (per recipient, 1/1d), Redis:
     MAIL is charged with the first recipient in ONE EVALSHA per message (INFO commandstats);
     a recipient refused by the RCPT rule charges nothing (the MAIL rule neither); the
     exceeded MAIL rule refuses at RCPT TO with its own reply (451 4.7.1 naming it).
  5. reputation (min_samples 3): after SPF-fail mail from the namespace address the next
     message's trace shows a negative IP score; after DMARC-pass mail from a second client
     address a positive one. Read from the serve log (log.level debug, trace lines) and from
     `mailwarden check --json` against the same Redis.
"""
import os, re, shutil, signal, socket, subprocess, sys, threading, time, uuid, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

N, B = 12, 5
SENDER = "load@none.rep.test"


def resp(port, *args, timeout=2.0):
    """One Redis command (RESP); returns the decoded reply, raises on connection errors."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a)
                                                     for a in (x.encode() for x in args)))
        f = s.makefile("rb")

        def read():
            line = f.readline().rstrip(b"\r\n")
            t, rest = line[:1], line[1:].decode()
            if t in (b"+", b"-"):
                return rest if t == b"+" else RuntimeError(rest)
            if t == b":":
                return int(rest)
            if t == b"$":
                return None if int(rest) < 0 else f.read(int(rest) + 2)[:-2].decode()
            if t == b"*":
                return [read() for _ in range(max(0, int(rest)))]
            raise RuntimeError("bad reply %r" % line)
        return read()
    finally:
        s.close()


class Redis:
    def __init__(self, h):
        self.h, self.port, self.proc = h, H.free_port(), None
        self.start()

    def start(self):
        self.proc = self.h.spawn("redis-%d" % len(self.h.procs),
                                 ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", self.h.tmp])
        if not H.wait_for(lambda: self._ping() or not self.proc.alive(), 10) or not self.proc.alive():
            raise RuntimeError("redis-server did not start:\n" + self.proc.log_tail())

    def _ping(self):
        try:
            return resp(self.port, "PING") == "PONG"
        except OSError:
            return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def write_conf(h, name, rules, redis=None, extra=""):
    text = "policy = \"default\";\n"
    if redis:
        text += 'state = { backend = "redis"; };\nredis = { host = "127.0.0.1"; port = %d; %s };\n' % (
            redis.port, extra)
    if rules:
        text += "ratelimit = { rules = (\n%s\n); };\n" % ",\n".join(rules)
    return h.write(name, text)


RULE_IP = '{ name = "burst-ip"; key = "ip"; rate = "5/1d"; stage = "rcpt"; cost = "recipient"; }'
RULE_SASL = ('{ name = "sasl-hourly"; key = "sasl_user"; rate = "5/1h"; cost = "recipient"; '
             'trust = [ "authenticated" ]; }')
RULE_RCPT = '{ name = "per-rcpt"; key = "recipient"; rate = "5/1d"; }'


def parallel(n, fn):
    """fn(i) in n threads released together; returns the results in order."""
    bar, out = threading.Barrier(n), [None] * n

    def run(i):
        bar.wait()
        try:
            out[i] = fn(i)
        except Exception as e:
            out[i] = e
    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(180)
    return out


def limits(*args):
    return H.run([H.MW_BINARY, "limits"] + list(args), timeout=30, check=False)


def queue_empty(pf):
    return H.wait_for(lambda: "Mail queue is empty" in pf.queue(), 15, 0.5)


def not_delivered(pf, tokens):
    pf.flush()
    time.sleep(1)
    return [t for t in tokens if pf.find(t)]


def burst_case(chk, pf, daemon, label):
    """Check 1: N parallel sessions against the burst-B per-IP rule."""
    toks = ["tok-%s" % uuid.uuid4().hex for _ in range(N)]
    res = parallel(N, lambda i: pf.send(SENDER, "b%d@dest.test" % i, headers=["Subject: burst %s" % toks[i]]))
    ok = [i for i, r in enumerate(res) if isinstance(r, H.SendResult) and r.code == "250"]
    ref = [i for i, r in enumerate(res) if isinstance(r, H.SendResult) and r.code == "451"
           and "4.7.1 rate limit exceeded (burst-ip: 5/1d)" in r.final]
    chk.equal("%s: exactly %d of %d parallel recipients accepted" % (label, B, N), len(ok), B)
    chk.equal("%s: the other %d refused 451 4.7.1 naming burst-ip" % (label, N - B), len(ref), N - B)
    other = [(i, getattr(r, "final", r)) for i, r in enumerate(res) if i not in ok and i not in ref]
    chk.check("%s: no session ended otherwise" % label, not other, other)
    missing = [i for i in ok if not pf.wait_delivered(toks[i], 20)]
    chk.check("%s: every accepted message delivered" % label, not missing, missing)
    chk.check("%s: no refused message delivered" % label, not not_delivered(pf, [toks[i] for i in ref]))
    chk.check("%s: queue empty" % label, queue_empty(pf), pf.queue())
    H.wait_for(lambda: len(re.findall(r"refused\b.*stage=rcpt.*rule=burst-ip", daemon.log_text())) >= N - B, 5)
    got = len(re.findall(r"refused\b.*stage=rcpt.*rule=burst-ip", daemon.log_text()))
    chk.equal("%s: one 'refused stage=rcpt rule=burst-ip' log line per refusal" % label, got, N - B)


def sasl_send(pf, i, token):
    return pf.submit("alice", "alice-%d@sub.test" % i, "r%d@sink.test" % i, headers=["Subject: sasl %s" % token])


def check_shared(chk, h, pf, red, conf, nsd):
    """Check 2 (two daemons, one Redis, one Postfix switched between them) and check 3."""
    da = h.start_daemon(dns=[nsd], args=["-c", conf], name="mw-a")
    db = h.start_daemon(dns=[nsd], args=["-c", conf], name="mw-b")
    codes, via_ok = [], []
    for i in range(1, 8):
        d = da if i % 2 else db
        pf.set(smtpd_milters="inet:127.0.0.1:%d" % d.port)
        tok = "tok-%s" % uuid.uuid4().hex
        r = sasl_send(pf, i, tok)
        codes.append(r.code)
        via_ok.append(bool(H.wait_for(lambda: "alice-%d@sub.test" % i in d.log_text(), 5)))
        if r.code == "250":
            chk.check("shared: message %d (via %s) delivered" % (i, d.name), pf.wait_delivered(tok, 20), r)
        elif i >= 6:
            chk.check("shared: recipient %d via %s refused 451 4.7.1 naming sasl-hourly" % (i, d.name),
                      "4.7.1 rate limit exceeded (sasl-hourly: 5/1h)" in r.final, r.final)
    chk.check("shared: each send went through the daemon it was switched to", all(via_ok), via_ok)
    chk.equal("shared: 5 accepted alternating A/B, 6th (B) and 7th (A) refused", codes, ["250"] * 5 + ["451"] * 2)

    # check 3: limits list / show / reset
    key = "rl:{user=alice}:sasl-hourly"
    rc, out = limits("list", "-c", conf)
    chk.check("limits list: shows %s with 0/5 remaining" % key,
              rc == 0 and re.search(re.escape(key) + r"\s+remaining 0/5\b", out), out)
    rc, out = limits("show", key, "-c", conf)
    chk.check("limits show: rule, rate and remaining 0",
              rc == 0 and re.search(r"rule:\s+sasl-hourly", out) and re.search(r"rate:\s+5/1h, burst 5", out)
              and re.search(r"remaining:\s+0\b", out) and "tat:" in out, out)
    rc, out = limits("reset", key, "-c", conf)
    chk.check("limits reset: exit 0", rc == 0, out)
    rc, out = limits("list", "-c", conf)
    chk.check("limits list after reset: bucket gone", rc == 0 and key not in out, out)
    tok = "tok-%s" % uuid.uuid4().hex
    r = sasl_send(pf, 8, tok)
    chk.check("after reset: next recipient accepted and delivered", r.code == "250" and pf.wait_delivered(tok, 20),
              r.final)
    rc, out = limits("show", key, "-c", conf)
    chk.check("limits show after one more recipient: remaining 4", re.search(r"remaining:\s+4\b", out), out)
    chk.check("shared: queue empty", queue_empty(pf), pf.queue())
    da.stop(); db.stop()


def load(pf, red, nthreads, per, kill_after):
    """nthreads threads send `per` messages each (unique recipients); SIGKILL redis once
    kill_after sends have finished. Returns (t_kill, [(t_start, token, SendResult)])."""
    out, lock, done = [], threading.Lock(), threading.Event()

    def worker(k):
        for j in range(per):
            tok = "tok-%s" % uuid.uuid4().hex
            t0 = time.monotonic()
            try:
                r = pf.send(SENDER, "l%d-%d-%s@dest.test" % (k, j, tok[4:12]), headers=["Subject: load %s" % tok])
            except Exception as e:
                r = e
            with lock:
                out.append((t0, tok, r))
                if len(out) >= kill_after:
                    done.set()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in ts:
        t.start()
    done.wait(120)
    red.kill()
    t_kill = time.monotonic()
    for t in ts:
        t.join(180)
    return t_kill, out


def recover_and_burst(chk, pf, red, daemon, label):
    """Restart Redis on the same port; wait until the daemon uses it again; then 6 sends
    to one recipient: 5 accepted, the 6th refused by per-rcpt."""
    red.start()
    back = H.wait_for(lambda: (pf.send(SENDER, "probe-%s@dest.test" % uuid.uuid4().hex[:8]).code == "250"
                               and "available again" in daemon.log_text()), 30, 0.2)
    chk.check("%s: daemon logs Redis available again after restart" % label, back, daemon.log_tail(8))
    rcpt = "again-%s@dest.test" % uuid.uuid4().hex[:8]
    codes = [pf.send(SENDER, rcpt) for _ in range(B + 1)]
    chk.equal("%s: limits apply again after Redis returns (5 accepted, 6th 451)" % label,
              [r.code for r in codes], ["250"] * B + ["451"])
    chk.check("%s: 6th names per-rcpt" % label, "rate limit exceeded (per-rcpt: 5/1d)" in codes[-1].final,
              codes[-1].final)


def check_kill(chk, h, pf, red, nsd, port):
    for mode in ("accept", "tempfail"):
        label = "redis killed/%s" % mode
        extra = 'command_timeout = 250; failure_action = "%s";' % mode
        conf = write_conf(h, "kill-%s.conf" % mode, [RULE_RCPT], red, extra)
        d = h.start_daemon(dns=[nsd], port=port, args=["-c", conf], name="mw-kill-" + mode)
        t_kill, res = load(pf, red, 3, 6, 6)
        bad = [(t, r) for _, t, r in res if not isinstance(r, H.SendResult)]
        chk.check("%s: all 18 sends ran" % label, len(res) == 18 and not bad, bad)
        after = [(tok, r) for t0, tok, r in res if t0 > t_kill and isinstance(r, H.SendResult)]
        ok = [(tok, r) for _, tok, r in res if isinstance(r, H.SendResult) and r.code == "250"]
        t451 = [(tok, r) for _, tok, r in res if isinstance(r, H.SendResult) and r.code == "451"
                and "4.7.1 rate limit state unavailable" in r.final]
        chk.check("%s: some sends started after the kill" % label, len(after) >= 3, len(after))
        if mode == "accept":
            chk.equal("%s: every message accepted (fail open)" % label, len(ok), len(res))
            log = d.log_text()
            n_rl = len(re.findall(r"ratelimit: state store failed at rcpt .*accepting \(fail open\)", log))
            n_rd = len(re.findall(r"redis \S+: .*since the last report", log))
            chk.equal("%s: rate limiter logs the failure once (per minute)" % label, n_rl, 1)
            chk.equal("%s: store logs the Redis failure once (per minute)" % label, n_rd, 1)
        else:
            chk.check("%s: every send started after the kill got 451 4.7.1 state unavailable" % label,
                      all(r.code == "451" and "4.7.1 rate limit state unavailable" in r.final for _, r in after),
                      [r.final for _, r in after])
            chk.check("%s: sends before the kill accepted" % label, len(ok) >= 5, len(ok))
            chk.check("%s: every send either 250 or 451 4.7.1" % label, len(ok) + len(t451) == len(res),
                      [r.final for _, _, r in res if isinstance(r, H.SendResult)])
            chk.check("%s: daemon logs tempfail (fail closed)" % label,
                      "tempfail (fail closed)" in d.log_text(), d.log_tail(8))
            chk.check("%s: no 451 message delivered" % label, not not_delivered(pf, [t for t, _ in t451]))
        missing = [tok for tok, _ in ok if not pf.wait_delivered(tok, 20)]
        chk.check("%s: every 250-accepted message delivered" % label, not missing, missing)
        chk.check("%s: queue empty" % label, queue_empty(pf), pf.queue())
        recover_and_burst(chk, pf, red, d, label)
        d.stop()


def rep_scores(text):
    """[(ip score or None, samples)] of every 'reputation: ... ip X (N samples)' in text."""
    return [(None if s == "unknown" else float(s), int(n))
            for s, n in re.findall(r"reputation: (?:reputation: )?ip (unknown|-?[0-9.]+) \((\d+) samples?\)", text)]


def evalsha_calls(red):
    m = re.search(r"cmdstat_evalsha:calls=(\d+)", resp(red.port, "INFO", "commandstats") or "")
    return int(m.group(1)) if m else 0


def check_mail_stage(chk, h, pf, red, nsd, port):
    """Check 6: MAIL-stage rule charged with the first recipient, one EVALSHA per message."""
    rules = ['{ name = "mail-ip6"; key = "ip"; rate = "3/1d"; stage = "mail"; }',
             '{ name = "cap6"; key = "recipient"; rate = "1/1d"; }']
    conf = write_conf(h, "mailstage.conf", rules, red)
    d = h.start_daemon(dns=[nsd], port=port, args=["-c", conf], name="mw-mailstage")
    resp(red.port, "CONFIG", "RESETSTAT")
    cap = "cap6-%s@dest.test" % uuid.uuid4().hex[:8]
    codes = []
    for i, rcpt in enumerate([cap, cap, "m6a@dest.test", "m6b@dest.test", "m6c@dest.test"]):
        r = pf.send(SENDER, rcpt, headers=["Subject: mail stage %d" % i])
        codes.append(r)
    chk.equal("mail stage: accepted, cap6 refused, accepted x2, mail-ip6 refused",
              [r.code for r in codes], ["250", "451", "250", "250", "451"])
    chk.check("mail stage: 2nd refused by cap6 (nothing charged)",
              "rate limit exceeded (cap6: 1/1d)" in codes[1].final, codes[1].final)
    chk.check("mail stage: 5th refused at RCPT TO with mail-ip6's reply",
              "4.7.1 rate limit exceeded (mail-ip6: 3/1d)" in codes[4].final, codes[4].final)
    chk.equal("mail stage: one EVALSHA per message (5 messages)", evalsha_calls(red), 5)
    H.wait_for(lambda: re.search(r"refused\b.*stage=rcpt.*rule=mail-ip6", d.log_text()), 5)
    chk.check("mail stage: logged 'refused stage=rcpt rule=mail-ip6'",
              re.search(r"refused\b.*stage=rcpt.*rule=mail-ip6", d.log_text()), d.log_tail(5))
    chk.check("mail stage: queue empty", queue_empty(pf), pf.queue())
    d.stop()


def check_reputation(chk, h, pf, ns, red, nsd, port, alt):
    resp(red.port, "FLUSHALL")
    conf = write_conf(h, "rep.conf", [], red)
    with open(conf, "a") as f:
        f.write('reputation = { enabled = true; min_samples = 3; };\nlog = { level = "debug"; };\n')
    d = h.start_daemon(dns=[nsd], port=port, args=["-c", conf], name="mw-rep")

    def score_after(label, ip, sender, extra):
        tok = "tok-%s" % uuid.uuid4().hex
        mark = len(d.log_text())
        r = pf.send(sender, "rep@dest.test", headers=["Subject: rep %s" % tok], extra=extra)
        chk.check("%s: probe accepted" % label, r.code == "250", r.final)
        H.wait_for(lambda: rep_scores(d.log_text()[mark:]), 5)
        serve = rep_scores(d.log_text()[mark:])
        p = subprocess.run([H.MW_BINARY, "check", "-c", conf, "--dns", "127.0.0.1@%d" % nsd, "--ip", ip,
                            "--from", "x@none.rep.test", "--rcpt", "rep@dest.test", "--json"],
                           input=b"From: x@none.rep.test\r\nSubject: t\r\n\r\nb\r\n", capture_output=True, timeout=30)
        try:
            trace = "\n".join(json.loads(p.stdout)["trace"])
        except Exception as e:
            trace = "unparsable check output (%s): %r %r" % (e, p.stdout[-300:], p.stderr[-300:])
        return serve, rep_scores(trace), trace

    for i in range(3):
        r = pf.send("alice@fail.rep.test", "rep@dest.test", headers=["Subject: bad %d" % i])
        chk.check("reputation: SPF-fail message %d accepted by the default policy" % i, r.code == "250", r.final)
    serve, chkd, trace = score_after("reputation/bad", ns.ns_addr, "x@none.rep.test", ())
    chk.check("reputation: serve trace of the next message shows ip score < 0 with 3 samples",
              serve[:1] and serve[0][0] is not None and serve[0][0] < 0 and serve[0][1] == 3, serve or d.log_tail(5))
    chk.check("reputation: check --json trace shows ip score < 0", chkd[:1] and chkd[0][0] is not None
              and chkd[0][0] < 0, trace)
    li = ["--local-interface", alt]
    for i in range(3):
        r = pf.send("alice@good.rep.test", "rep@dest.test", headers=["Subject: good %d" % i], extra=li)
        chk.check("reputation: DMARC-pass message %d from %s accepted" % (i, alt), r.code == "250", r.final)
    chk.check("reputation: good mail was DMARC pass from %s" % alt,
              re.search(r"client=%s\b.*dmarc=pass" % re.escape(alt), d.log_text()), d.log_tail(5))
    serve, chkd, trace = score_after("reputation/good", alt, "x@none.rep.test", li)
    chk.check("reputation: serve trace for %s shows ip score > 0 with 3 samples" % alt,
              serve[:1] and serve[0][0] is not None and serve[0][0] > 0 and serve[0][1] == 3, serve or d.log_tail(5))
    chk.check("reputation: check --json trace shows ip score > 0", chkd[:1] and chkd[0][0] is not None
              and chkd[0][0] > 0, trace)
    d.stop()


def add_alt_address(h, ns):
    """A second client address inside the namespace (routed /32 on the host veth)."""
    _, used = H.run(["ip", "-4", "-o", "addr"], timeout=10)
    _, routes = H.run(["ip", "-4", "route"], timeout=10)
    for k in range(250):
        alt = "203.0.113.%d" % (2 + (os.getpid() + k) % 250)
        if (" %s/" % alt) not in used and (alt + " ") not in routes and (alt + "/") not in routes:
            break
    H.run(ns.wrap(["ip", "addr", "add", alt + "/32", "dev", "lo"]), timeout=20)
    H.run(["ip", "route", "add", alt + "/32", "via", ns.ns_addr, "dev", ns.veth], timeout=20)
    h.cleanups.append(lambda: H.run(["ip", "route", "del", alt + "/32"], timeout=20, check=False))
    return alt


def test(h, chk):
    ns = h.create_netns()
    alt = add_alt_address(h, ns)
    zone = "\n".join(["none IN A 192.0.2.250", "sub IN A 192.0.2.250",
                      "fail IN A 192.0.2.250", 'fail IN TXT "v=spf1 -all"',
                      "good IN A 192.0.2.250", 'good IN TXT "v=spf1 ip4:%s -all"' % alt,
                      '_dmarc.good IN TXT "v=DMARC1; p=reject"'])
    nsd = h.start_nsd({"rep.test": zone})

    # 1a. memory backend
    conf = write_conf(h, "mem.conf", [RULE_IP])
    d = h.start_daemon(dns=[nsd], args=["-c", conf], name="mw-mem")
    pf = h.start_postfix(d.port, netns=ns, submission=True)
    port = d.port
    burst_case(chk, pf, d, "memory")
    d.stop()

    if not shutil.which("redis-server"):
        print("SKIP: redis-server not installed: Redis checks (1b, 2-5) skipped", flush=True)
        if not chk.failed:
            raise H.Skip("redis-server not installed")
        return
    red = Redis(h)
    # 1b. Redis backend, same milter port
    conf = write_conf(h, "redis.conf", [RULE_IP], red)
    d = h.start_daemon(dns=[nsd], port=port, args=["-c", conf], name="mw-redis")
    burst_case(chk, pf, d, "redis")
    rc, out = limits("show", "rl:{ip=%s}:burst-ip" % ns.ns_addr, "-c", conf)
    chk.check("redis: bucket of the client IP in Redis with 0 remaining", re.search(r"remaining:\s+0\b", out), out)
    d.stop()

    # 6. MAIL-stage rule: charged with the first recipient, one EVALSHA per message
    check_mail_stage(chk, h, pf, red, nsd, port)

    # 2 + 3. two daemons, one Redis
    check_shared(chk, h, pf, red, write_conf(h, "sasl.conf", [RULE_SASL], red), nsd)
    pf.set(smtpd_milters="inet:127.0.0.1:%d" % port)

    # 4. Redis killed mid-load
    check_kill(chk, h, pf, red, nsd, port)

    # 5. reputation
    check_reputation(chk, h, pf, ns, red, nsd, port, alt)


if __name__ == "__main__":
    H.run_test(test, "ratelimit", timeout=400)
