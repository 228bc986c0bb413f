#!/usr/bin/python3
"""The in-process DNS answer cache (dns.cache_size) in the running daemon.

A scripted milter client sends inbound messages (SPF, HELO SPF, DMARC lookups
against testdns) to `mailwarden serve`, and the Prometheus counters show:
  - default configuration: the first message's lookups miss the cache, the next
    messages' identical lookups all hit it (misses stay put, hits grow);
  - a SIGHUP reload builds a new resolver: its cache starts cold (misses again);
  - dns.cache_size = 0: no cache, neither hits nor misses are counted, the
    messages are still decided the same way (spf=pass in the A-R header).
"""
import os, signal, socket, struct, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H


def pkt(cmd, payload=b""):
    return struct.pack(">I", len(payload) + 1) + cmd + payload


def z(*strs):
    return b"".join(s.encode() + b"\0" for s in strs)


class Mta:
    """Just enough of an MTA's milter side: one connection, several messages."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.s.sendall(pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)))
        assert self.reply()[0] == b"O"
        ip = "192.0.2.7"
        self.s.sendall(pkt(b"D", b"C" + z("j", "mx.test.example", "{daemon_name}", "smtpd",
                                          "{client_addr}", ip)) +
                       pkt(b"C", z("client.example.org") + b"4" + struct.pack(">H", 40000) + z(ip)))
        assert self.reply()[0] == b"c"
        self.s.sendall(pkt(b"H", z("client.example.org")))

    def reply(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    cmd, data = self.buf[4:5], self.buf[5:4 + n]
                    self.buf = self.buf[4 + n:]
                    return cmd, data
            d = self.s.recv(65536)
            if not d:
                return None, None
            self.buf += d

    def message(self, qid):
        """Send one message; return our Authentication-Results value ('' if none)."""
        self.s.sendall(pkt(b"A") + pkt(b"D", b"M" + z("i", qid)) +
                       pkt(b"M", z("<alice@example.com>")) + pkt(b"R", z("<bob@dest.test>")) +
                       pkt(b"L", z("From", " Alice <alice@example.com>")) +
                       pkt(b"L", z("Subject", " hello")) + pkt(b"N") +
                       pkt(b"B", b"Hello.\r\n" * 10) + pkt(b"D", b"E" + z("i", qid)) + pkt(b"E"))
        env = (self.reply()[0], self.reply()[0])     # MAIL and RCPT are answered
        assert env == (b"c", b"c"), env
        ar = ""
        while True:
            c, d = self.reply()
            if c == b"i" and d[4:].startswith(b"Authentication-Results\0"):
                ar = d[4 + len(b"Authentication-Results\0"):-1].decode()
            if c in (b"c", b"a", b"r", b"t", b"d", b"y", None):
                return ar

    def close(self):
        self.s.sendall(pkt(b"Q"))
        self.s.close()


def metrics(port):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    out = {}
    for line in c.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    c.close()
    return out


HITS, MISSES = "mailwarden_dns_cache_hits_total", "mailwarden_dns_cache_misses_total"


def queries(m):
    """Lookups made (every answer class, cache hits included)."""
    return sum(v for k, v in m.items() if k.startswith("mailwarden_dns_queries_total{"))


def body(h, chk):
    # hour-long TTLs: "messages 2 and 3 hit the cache" must not race the harness's
    # 5 s default TTL on a slow (sanitizer, loaded) run
    dns_port, _ = h.start_testdns({"example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all", "ttl": 3600}],
                                   "_dmarc.example.com": [{"TXT": "v=DMARC1; p=none", "ttl": 3600}]},
                                  verbose=False)

    # ---- the default: a cache of 10000 answers
    mport = H.free_port()
    conf = h.write("mw.conf", 'metrics = { listen = "127.0.0.1:%d"; };\n' % mport)
    d = h.start_daemon(dns=[dns_port], args=["-c", conf])
    H.wait_port(mport, proc=d)
    m0 = metrics(mport)
    chk.equal("default: no lookups yet", (m0.get(HITS), m0.get(MISSES)), (0, 0))
    m = Mta(d.port)
    ar = m.message("Q1")
    chk.check("message 1 decided: spf=pass dmarc=pass", "spf=pass" in ar and "dmarc=pass" in ar, ar)
    m1 = metrics(mport)
    chk.check("message 1: its lookups missed the (empty) cache", m1[MISSES] >= 2, m1[MISSES])
    chk.equal("message 1: every lookup a miss", m1[MISSES], queries(m1))
    ar = m.message("Q2")
    m2 = metrics(mport)
    ar3 = m.message("Q3")
    m3 = metrics(mport)
    for q, a in (("Q2", ar), ("Q3", ar3)):
        chk.check("message %s decided: spf=pass dmarc=pass" % q, "spf=pass" in a and "dmarc=pass" in a, a)
    # (the SPF layer caches its results, so later messages make fewer lookups)
    chk.equal("messages 2 and 3: no further misses", m3[MISSES], m1[MISSES])
    chk.check("messages 2 and 3: made lookups", queries(m3) > queries(m1), (queries(m1), queries(m3)))
    chk.equal("messages 2 and 3: every lookup a hit", m3[HITS] - m1[HITS], queries(m3) - queries(m1))
    m.close()

    # ---- a reload builds a new resolver: cold cache
    d.send_signal(signal.SIGHUP)
    ok = H.wait_for(lambda: metrics(mport).get("mailwarden_config_generation") == 2, timeout=15)
    chk.check("SIGHUP: configuration generation 2", ok)
    m = Mta(d.port)
    ar = m.message("Q4")
    m4 = metrics(mport)
    chk.check("after the reload: spf=pass", "spf=pass" in ar, ar)
    chk.equal("after the reload: the first message misses again", m4[MISSES] - m3[MISSES], m1[MISSES])
    m.close()
    d.stop()

    # ---- dns.cache_size = 0
    mport = H.free_port()
    conf = h.write("mw0.conf", 'metrics = { listen = "127.0.0.1:%d"; };\ndns = { cache_size = 0; };\n'
                   % mport)
    d = h.start_daemon(dns=[dns_port], args=["-c", conf])
    H.wait_port(mport, proc=d)
    m = Mta(d.port)
    for q in ("Q5", "Q6"):
        ar = m.message(q)
        chk.check("cache_size 0: message %s spf=pass dmarc=pass" % q, "spf=pass" in ar and "dmarc=pass" in ar, ar)
    m.close()
    m6 = metrics(mport)
    chk.equal("cache_size 0: no cache hits or misses counted", (m6[HITS], m6[MISSES]), (0, 0))
    chk.equal("cache_size 0: the same lookups for the same two messages", queries(m6), queries(m2))


if __name__ == "__main__":
    H.run_test(body, "dns_cache")
