#!/usr/bin/python3
"""Every listener of the daemon (milter, Exim scan, Exim RCPT, metrics) has a connection
cap, a per-request deadline and bounded memory per connection; no peer can hold one, and
the Exim sockets serve only exim.allow_peers. Small caps and short deadlines (cap 8,
deadlines 2-5 s); the checks are on outcomes (served = the right reply, refused = closed
by the daemon within a generous 10 s bound, never hung) and on counters, not on timings:
  - binding: milter `inet:PORT`, Exim `inet:PORT` (both without a host) and metrics
    `PORT` listen on 127.0.0.1 only (/proc/net/tcp), never on every interface;
  - milter: 8 negotiated idle sessions hold the cap; 200 more connections are each
    closed by the daemon at once, counted in mailwarden_listener_refused_total (exactly
    200), logged at most a few times; the worker's thread count and VmRSS stay bounded; a
    held session that trickles a command byte by byte is cut at milter_command_timeout
    (counted), and a new session is then served;
  - Exim scan: 8 clients trickling a request hold the scan pool; a new scan request is
    served or refused fast, a RCPT request is served meanwhile (separate pools); every
    trickler is cut at exim.request_timeout (counted) and a full CHECK is then served;
  - Exim RCPT: the same with RCPT lines, and a scan PING served while the RCPT pool is full;
  - exim.allow_peers = 127.0.0.1/32: connections from 127.0.0.2 to either socket are closed
    without a reply, counted (reason="peer"), logged at most a few times;
  - metrics: 4 tricklers from 127.0.0.1 hold that address's share of the cap; a new
    connection from 127.0.0.1 is served or refused fast, one from 127.0.0.2 is served;
    once they are older than metrics.timeout they are closed to make room and a scrape
    from 127.0.0.1 is served.
"""
import http.client, os, re, socket, struct, sys, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

CAP = 8
CONF = """
milter_max_connections = %(cap)d;
milter_command_timeout = 2;
milter_timeout = 120;
exim = {
  listen = "inet:%(scan)d";
  rcpt_listen = "inet:%(rcpt)d";
  allow_peers = [ "127.0.0.1/32" ];
  max_connections = %(cap)d;
  rcpt_max_connections = %(cap)d;
  request_timeout = 5;
  rcpt_timeout = 5;
};
metrics = { listen = "%(metrics)d"; max_connections = %(cap)d; timeout = 2; };
"""


# ---- small clients -------------------------------------------------------------------

def connect(port, src=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_all(s, limit=65536):
    """Bytes until EOF; ('reset'|'timeout') when the read failed that way."""
    data = b""
    try:
        while len(data) < limit:
            b = s.recv(4096)
            if not b:
                return data, "eof"
            data += b
    except (ConnectionResetError, BrokenPipeError):
        return data, "reset"
    except socket.timeout:
        return data, "timeout"
    return data, "limit"


def outcome(port, request, want, src=None):
    """'served' (the reply starts with want), 'refused' (closed with nothing), or what
    else happened (hung = nothing within 10 s)."""
    t0 = time.monotonic()
    try:
        s = connect(port, src)
    except OSError as e:
        return "connect failed: %s" % e, 0
    try:
        if request:
            try:
                s.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass
        data, how = read_all(s)
    finally:
        s.close()
    took = time.monotonic() - t0
    if data.startswith(want):
        return "served", took
    if not data and how in ("eof", "reset"):
        return "refused", took
    return "hung" if how == "timeout" else "other (%r, %s)" % (data[:60], how), took


def pkt(cmd, payload=b""):
    return struct.pack(">I", len(payload) + 1) + cmd + payload


def read_pkt(s):
    hdr = b""
    while len(hdr) < 5:
        b = s.recv(5 - len(hdr))
        if not b:
            return None
        hdr += b
    n = struct.unpack(">I", hdr[:4])[0] - 1
    body = b""
    while len(body) < n:
        b = s.recv(n - len(body))
        if not b:
            return None
        body += b
    return hdr[4:5]


def milter_session(port):
    """A negotiated milter connection (O and C answered), or None."""
    s = connect(port)
    s.sendall(pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)) +
              pkt(b"C", b"limits.test\x004" + struct.pack(">H", 25) + b"127.0.0.1\x00"))
    if read_pkt(s) == b"O" and read_pkt(s) == b"c":
        return s
    s.close()
    return None


class Trickler(threading.Thread):
    """Sends prefix, then one byte of pad every 0.3 s; records when the daemon cut it."""

    def __init__(self, port, prefix, src=None, total=400):
        super().__init__(daemon=True)
        self.s = connect(port, src)
        self.prefix, self.total = prefix, total
        self.cut_after = None
        self.stop = False

    def run(self):
        t0 = time.monotonic()
        try:
            self.s.sendall(self.prefix)
            for _ in range(self.total):
                if self.stop:
                    return
                time.sleep(0.3)
                self.s.send(b"a")
                self.s.setblocking(False)
                try:
                    if self.s.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                finally:
                    self.s.setblocking(True)
        except OSError:
            self.cut_after = time.monotonic() - t0

    def close(self):
        self.stop = True
        self.s.close()


def worker_pid(sup):
    kids = open("/proc/%d/task/%d/children" % (sup, sup)).read().split()
    return int(kids[0]) if kids else sup


def status(pid):
    st = {}
    for line in open("/proc/%d/status" % pid):
        k, _, v = line.partition(":")
        st[k] = v.strip()
    return int(st["Threads"]), int(st["VmRSS"].split()[0])


def listen_addrs(port):
    out = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(f).read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            fields = l.split()
            addr, p = fields[1].split(":")
            if fields[3] == "0A" and int(p, 16) == port:
                if len(addr) == 8:
                    out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    raw = bytes.fromhex(addr)
                    out.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    return out


def metrics(port, src=None):
    """name{labels} -> value (a dict), from one scrape."""
    s = connect(port, src)
    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    data, _ = read_all(s, 1 << 22)
    s.close()
    m = {}
    for line in data.decode(errors="replace").split("\r\n\r\n", 1)[-1].splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            m[k] = float(v)
    return m


def refused(m, listener, reason):
    return m.get('mailwarden_listener_refused_total{listener="%s",reason="%s"}' % (listener, reason), 0)


def timeouts(m, listener):
    return m.get('mailwarden_listener_timeouts_total{listener="%s"}' % listener, 0)


SCAN_MSG = (b"From: a@limits.test\r\nTo: b@limits.test\r\nSubject: limits\r\n"
            b"Message-ID: <l1@limits.test>\r\n\r\nbody\r\n")


def scan_request(msg=SCAN_MSG):
    return (b"CHECK RSPAMC/1.3\r\nContent-length: %d\r\nQueue-Id: LIM1\r\nFrom: <a@limits.test>\r\n"
            b"Rcpt: <b@limits.test>\r\nHelo: limits.test\r\nIP: 127.0.0.1\r\n\r\n" % len(msg)) + msg


PING = b"PING RSPAMC/1.3\r\n\r\n"
RCPT = b"RCPT ip=127.0.0.1 helo=limits.test from=<a@limits.test> rcpt=<b@limits.test>\n"


def wait_all_cut(chk, label, ts, bound):
    H.wait_for(lambda: all(t.cut_after is not None for t in ts), bound)
    cut = [t.cut_after for t in ts]
    chk.check("%s: every trickler cut by the daemon (seconds after start: %s)" % (
        label, [None if c is None else round(c, 1) for c in cut]),
        all(c is not None for c in cut), cut)
    for t in ts:
        t.close()


# ---- the test --------------------------------------------------------------------------

def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    dns, _ = h.start_testdns({"limits.test": [{"TXT": "v=spf1 -all"}]}, verbose=False)
    mport, scan, rcpt, mx = H.free_port(), H.free_port(), H.free_port(), H.free_port()
    conf = h.write("mw.conf", CONF % {"cap": CAP, "scan": scan, "rcpt": rcpt, "metrics": mx})
    d = h.spawn("mailwarden", [H.MW_BINARY, "serve", "-f", "-c", conf, "--socket", "inet:%d" % mport,
                               "--dns", "127.0.0.1@%d" % dns, "--authserv-id", H.AUTHSERV_ID,
                               "--history", h.path("history")])
    for p in (mport, scan, rcpt, mx):
        H.wait_port(p, proc=d, timeout=15)
    wpid = worker_pid(d.pid)

    # ---- binding: no host = loopback
    for label, p in (("milter inet:PORT", mport), ("exim inet:PORT", scan), ("exim rcpt inet:PORT", rcpt),
                     ("metrics PORT", mx)):
        chk.equal("%s listens on 127.0.0.1 only" % label, listen_addrs(p), {"127.0.0.1"})

    # ---- milter: the cap
    # the baseline once the worker has started every listener thread: it logs
    # "listening on" after them (a port answers as soon as it is bound, before
    # the worker's threads exist: a baseline of 1 thread was measured once)
    chk.check("worker started (\"listening on\" logged)",
              H.wait_for(lambda: "info: listening on " in d.log_text(), 30))
    threads0, rss0 = status(wpid)
    held = [milter_session(mport) for _ in range(CAP)]
    chk.check("milter: %d sessions negotiated (the cap)" % CAP, all(held), held)
    m0 = metrics(mx)
    res = [outcome(mport, pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)), b"\x00") for _ in range(200)]
    kinds = sorted(set(r for r, _ in res))
    chk.equal("milter at the cap: 200 new connections all closed by the daemon", kinds, ["refused"])
    chk.check("milter at the cap: each closed within 10 s (slowest %.2f s)" % max(t for _, t in res),
              max(t for _, t in res) < 10)
    m1 = metrics(mx)
    chk.equal("milter: refusals counted", refused(m1, "milter", "limit") - refused(m0, "milter", "limit"), 200)
    threads1, rss1 = status(wpid)
    chk.check("milter: worker threads bounded (%d -> %d with %d sessions + 200 refused)" % (threads0, threads1, CAP),
              threads1 <= threads0 + CAP + 4, (threads0, threads1))
    chk.check("milter: worker VmRSS bounded (%d -> %d KiB)" % (rss0, rss1), rss1 <= rss0 + 32 * 1024)
    lines = len(re.findall(r"refusing a new one", d.log_text()))
    chk.check("milter: refusals logged rate-limited (%d lines for 200)" % lines, 1 <= lines <= 15, lines)

    # a command trickled byte by byte on a held session: cut at the step deadline
    t = Trickler.__new__(Trickler)
    threading.Thread.__init__(t, daemon=True)
    t.s, t.prefix, t.total, t.cut_after, t.stop = held[0], struct.pack(">I", 1001) + b"H", 400, None, False
    t.start()
    wait_all_cut(chk, "milter command trickled", [t], 20)
    held[0] = None
    H.wait_for(lambda: timeouts(metrics(mx), "milter") >= timeouts(m1, "milter") + 1, 10)
    chk.check("milter: the cut counted in listener_timeouts_total",
              timeouts(metrics(mx), "milter") >= timeouts(m1, "milter") + 1)
    fresh = None
    for _ in range(50):   # the freed slot: a new session is served
        fresh = milter_session(mport)
        if fresh:
            break
        time.sleep(0.2)
    chk.check("milter: a new session is served once a slot is free", fresh is not None)
    for s in held + [fresh]:
        if s:
            s.close()

    # ---- Exim scan pool held by tricklers
    H.wait_for(lambda: metrics(mx).get('mailwarden_connections_open{frontend="exim"}') == 0, 10)
    m0 = metrics(mx)
    ts = [Trickler(scan, b"CHECK RSPAMC/1.3\r\nX-Pad: ") for _ in range(CAP)]
    for t in ts:
        t.start()
    H.wait_for(lambda: metrics(mx).get('mailwarden_connections_open{frontend="exim"}') == CAP, 10)
    r, took = outcome(scan, PING, b"RSPAMD/1.3 0 PONG")
    chk.check("exim scan at the cap: a new request served or refused fast (%s in %.1f s)" % (r, took),
              r in ("served", "refused") and took < 10, r)
    r2, _ = outcome(rcpt, RCPT, b"OK")
    chk.equal("exim: a RCPT request is served while the scan pool is full", r2, "served")
    wait_all_cut(chk, "exim scan", ts, 20)
    m1 = metrics(mx)
    chk.check("exim scan: the cuts counted (%d)" % (timeouts(m1, "exim_scan") - timeouts(m0, "exim_scan")),
              timeouts(m1, "exim_scan") - timeouts(m0, "exim_scan") >= CAP)
    chk.equal("exim scan: refusals counted as they happened",
              refused(m1, "exim_scan", "limit") - refused(m0, "exim_scan", "limit"), 1 if r == "refused" else 0)
    r, _ = outcome(scan, scan_request(), b"RSPAMD/1.3 0 EX_OK")
    chk.equal("exim scan: a full CHECK is served afterwards", r, "served")

    # ---- Exim RCPT pool held by tricklers
    H.wait_for(lambda: metrics(mx).get('mailwarden_connections_open{frontend="exim"}') == 0, 10)
    m0 = metrics(mx)
    ts = [Trickler(rcpt, b"RCPT ip=127.0.0.1 helo=") for _ in range(CAP)]
    for t in ts:
        t.start()
    H.wait_for(lambda: metrics(mx).get('mailwarden_connections_open{frontend="exim"}') == CAP, 10)
    r, took = outcome(rcpt, RCPT, b"OK")
    chk.check("exim RCPT at the cap: a new request served or refused fast (%s in %.1f s)" % (r, took),
              r in ("served", "refused") and took < 10, r)
    r2, _ = outcome(scan, PING, b"RSPAMD/1.3 0 PONG")
    chk.equal("exim: a scan request is served while the RCPT pool is full", r2, "served")
    wait_all_cut(chk, "exim RCPT", ts, 20)
    m1 = metrics(mx)
    chk.check("exim RCPT: the cuts counted", timeouts(m1, "exim_rcpt") - timeouts(m0, "exim_rcpt") >= CAP)
    r, _ = outcome(rcpt, RCPT, b"OK")
    chk.equal("exim RCPT: served afterwards", r, "served")

    # ---- exim.allow_peers
    m0 = metrics(mx)
    res = [outcome(p, req, b"x", src="127.0.0.2")[0] for p, req in ((scan, PING), (rcpt, RCPT)) for _ in range(50)]
    chk.equal("exim: peers outside allow_peers closed without a reply (100 tries)", sorted(set(res)), ["refused"])
    m1 = metrics(mx)
    chk.equal("exim: scan refusals by peer counted",
              refused(m1, "exim_scan", "peer") - refused(m0, "exim_scan", "peer"), 50)
    chk.equal("exim: RCPT refusals by peer counted",
              refused(m1, "exim_rcpt", "peer") - refused(m0, "exim_rcpt", "peer"), 50)
    lines = len(re.findall(r"not in exim.allow_peers", d.log_text()))
    chk.check("exim: peer refusals logged rate-limited (%d lines for 100)" % lines, 1 <= lines <= 15, lines)
    chk.equal("exim: an allowed peer is still served", outcome(scan, PING, b"RSPAMD/1.3 0 PONG")[0], "served")

    # ---- metrics endpoint: one address's share (4 of 8) held by tricklers
    m0 = metrics(mx)
    ts = [Trickler(mx, b"GET /metrics HTTP/1.1\r\nX-Pad: ") for _ in range(CAP // 2)]
    for t in ts:
        t.start()
    r, took = outcome(mx, b"GET /metrics HTTP/1.0\r\n\r\n", b"HTTP/1.")
    chk.check("metrics at the per-address cap: served or refused fast (%s in %.1f s)" % (r, took),
              r in ("served", "refused") and took < 10, r)
    r2, _ = outcome(mx, b"GET /metrics HTTP/1.0\r\n\r\n", b"HTTP/1.1 200", src="127.0.0.2")
    chk.equal("metrics: another address is served meanwhile", r2, "served")
    served = H.wait_for(lambda: outcome(mx, b"GET /metrics HTTP/1.0\r\n\r\n", b"HTTP/1.1 200")[0] == "served", 20,
                        step=0.5)
    chk.check("metrics: a scrape from the same address is served once the tricklers are past the deadline",
              served)
    wait_all_cut(chk, "metrics", ts, 10)
    m1 = metrics(mx)
    chk.check("metrics: the cuts counted", timeouts(m1, "metrics") - timeouts(m0, "metrics") >= CAP // 2)

    threads2, rss2 = status(wpid)
    chk.check("at the end: worker threads bounded (%d, started with %d)" % (threads2, threads0),
              threads2 <= threads0 + 3 * CAP + 64 + 4)
    chk.check("at the end: VmRSS bounded (%d KiB, started with %d)" % (rss2, rss0), rss2 <= rss0 + 64 * 1024)
    chk.check("daemon still running", d.alive(), d.log_tail())


if __name__ == "__main__":
    H.run_test(test, "listener-limits", timeout=600)
