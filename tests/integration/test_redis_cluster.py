#!/usr/bin/python3
"""Rate limits on a real Redis Cluster shared by two daemons, and a master failover (issue 18).

A Redis Cluster of 3 masters + 3 replicas on loopback (`redis-server --cluster-enabled yes`
x6, `redis-cli --cluster create --cluster-replicas 1`, cluster-node-timeout 1000 ms) and two
`mailwarden serve` daemons with `redis.cluster_nodes`, driven over the milter protocol
(the Python MTA of test_milter_wire.py: connect, MAIL, RCPT, headers, body, end of message).
Rules: per envelope sender at the MAIL stage (B/1d) and per recipient at RCPT (1000/1d), so
every first recipient's call spans two hash tags (two slots: the split-and-refund path);
redis.failure_action = tempfail, so the failover window is visible in the replies.
  1. exactness: 2B messages from one sender, half at each daemon, all in parallel: exactly
     B accepted (and delivered to the end of message), B refused 451 naming the rule, no
     "state unavailable".  The sender's bucket lives on master M (chosen by slot).
  2. ASK and MOVED: the slot of a fresh sender is migrated from its master to another
     (CLUSTER SETSLOT MIGRATING/IMPORTING: the old master answers ASK, the daemons follow it
     with ASKING); then assigned for good (SETSLOT NODE: MOVED, the map is refreshed): the
     limit still admits exactly B, and the bucket is on the new master.
  3. failover: threads send messages with fresh senders at both daemons; M is SIGKILLed
     after a first batch succeeded; the test waits for the event "a replica of M is master
     and cluster_state:ok", then for each daemon to accept a message whose bucket slot
     belonged to M.  Checked: no message lost (every reply is accept, or the store's 451
     "rate limit state unavailable" -- the configured failure action -- which the test,
     like an MTA, retries until accepted), none refused by a limit (all under it), no
     failure action before the kill nor in messages started after the daemon's recovery.
     Printed: time to recover per daemon, window counts.
  4. exact again after the failover: 2B messages from a fresh sender whose slot was M's
     (now served by the promoted replica): exactly B accepted.
Deterministic: every wait is for an event (cluster_state:ok, a role change, a reply); times
are printed, never asserted.
"""
import os, signal, socket, struct, subprocess, sys, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_milter_wire import Mta, pkt, z, connect_pkts

B = 5
RCPT_RULE = "per-rcpt"
SENDER_RULE = "per-sender"


def crc16(data):
    crc = 0
    for ch in data:
        crc ^= ch << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def keyslot(key):
    s = key.find("{")
    if s >= 0:
        e = key.find("}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return crc16(key.encode()) % 16384


def resp(port, *args, timeout=3.0):
    """One Redis command; the decoded reply (an error reply as RuntimeError instance)."""
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


class Cluster:
    def __init__(self, h, n=6):
        self.h = h
        self.ports = [H.free_port() for _ in range(n)]
        self.procs = {}
        for p in self.ports:
            d = h.path("redis-%d" % p)
            os.makedirs(d, exist_ok=True)
            self.procs[p] = h.spawn("redis-%d" % p, [
                "redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-port", str(H.free_port()),
                "--cluster-config-file", os.path.join(d, "nodes.conf"), "--cluster-node-timeout", "1000",
                "--cluster-replica-validity-factor", "0",
                "--save", "", "--appendonly", "no", "--dir", d])
        for p in self.ports:
            if not H.wait_for(lambda: self.ping(p), 15):
                raise RuntimeError("redis-server %d did not start:\n%s" % (p, self.procs[p].log_tail()))
        out = H.run(["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % p for p in self.ports] +
                    ["--cluster-replicas", "1", "--cluster-yes"], timeout=60)
        self.create_out = out
        if not self.wait_ok(self.ports, 60):
            raise RuntimeError("cluster_state never became ok")

    def ping(self, p):
        try:
            return resp(p, "PING") == "PONG"
        except OSError:
            return False

    def info_ok(self, p):
        try:
            return "cluster_state:ok" in resp(p, "CLUSTER", "INFO")
        except (OSError, TypeError):
            return False

    def wait_ok(self, ports, timeout):
        return H.wait_for(lambda: all(self.info_ok(p) for p in ports), timeout, 0.1)

    def nodes(self, via):
        """[(id, port, flags, master_id, slots)] from CLUSTER NODES."""
        out = []
        for line in resp(via, "CLUSTER", "NODES").splitlines():
            f = line.split()
            port = int(f[1].split("@")[0].rsplit(":", 1)[1])
            out.append((f[0], port, f[2].split(","), f[3], f[8:]))
        return out

    def owner(self, slot, via):
        for r in resp(via, "CLUSTER", "SLOTS"):
            if r[0] <= slot <= r[1]:
                return r[2][0], int(r[2][1])
        return None, None

    def node_id(self, port):
        return resp(port, "CLUSTER", "MYID")


def milter_send(port, sender, rcpt, qid):
    """One message over the milter protocol; ('accept'|'limited'|'unavailable'|'other', text)."""
    try:
        m = Mta(port)
    except OSError as e:
        return "other", "connect: %s" % e
    try:
        m.negotiate()
        m.send(*connect_pkts())
        if m.reply()[0] != b"c":
            return "other", "connect refused"
        m.send(pkt(b"H", z("client.example.org")), pkt(b"D", b"M" + z("i", qid)),
               pkt(b"M", z("<%s>" % sender)), pkt(b"R", z("<%s>" % rcpt)))
        c1, d1 = m.reply()
        c2, d2 = m.reply()
        if c1 != b"c":
            return "other", "MAIL: %r %r" % (c1, d1)
        if c2 == b"y":
            text = d2.rstrip(b"\0").decode(errors="replace")
            if "state unavailable" in text:
                return "unavailable", text
            if "rate limit exceeded" in text:
                return "limited", text
            return "other", text
        if c2 != b"c":
            return "other", "RCPT: %r %r" % (c2, d2)
        m.send(pkt(b"L", z("From", " <%s>" % sender)), pkt(b"L", z("Subject", " t")), pkt(b"N"),
               pkt(b"B", b"Hello.\r\n"), pkt(b"D", b"E" + z("i", qid)), pkt(b"E"))
        while True:
            c, d = m.reply()
            if c in (b"c", b"a"):
                return "accept", ""
            if c is None or c in (b"r", b"t", b"d", b"y"):
                return "other", "EOM: %r %r" % (c, d)
    except (OSError, AssertionError) as e:
        return "other", "%s: %s" % (type(e).__name__, e)
    finally:
        try:
            m.send(pkt(b"Q"))
        except OSError:
            pass
        m.close()


def write_conf(h, name, cl):
    nodes = ", ".join('"127.0.0.1:%d"' % p for p in cl.ports[:3])
    return h.write(name, (
        'policy = "default";\n'
        'state = { backend = "redis"; };\n'
        'redis = { cluster_nodes = [ %s ]; failure_action = "tempfail"; command_timeout = 500;\n'
        '          connect_timeout = 300; };\n'
        'ratelimit = { rules = (\n'
        '  { name = "%s"; key = "sender"; rate = "%d/1d"; stage = "mail"; },\n'
        '  { name = "%s"; key = "recipient"; rate = "1000/1d"; }\n'
        '); };\n') % (nodes, SENDER_RULE, B, RCPT_RULE))


def sender_on(port_owner, cl, via, tag, exclude=()):
    """A sender address whose per-sender bucket slot is served by port_owner."""
    ranges = [(r[0], r[1]) for r in resp(via, "CLUSTER", "SLOTS") if int(r[2][1]) == port_owner]
    for i in range(100000):
        s = "%s%d@sender.test" % (tag, i)
        slot = keyslot("from=%s" % s)
        if s not in exclude and any(a <= slot <= b for a, b in ranges):
            return s
    raise RuntimeError("no sender found on %d: %r" % (port_owner, resp(via, "CLUSTER", "SLOTS")))


def burst(daemons, sender, label):
    """2B messages from one sender, alternating daemons, all at once."""
    res = [None] * (2 * B)
    go = threading.Event()

    def one(i):
        go.wait()
        res[i] = milter_send(daemons[i % 2].port, sender, "r%d-%s@dest.test" % (i, label),
                             "Q%s%03d" % (label.upper(), i))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(2 * B)]
    for t in ts:
        t.start()
    go.set()
    for t in ts:
        t.join(60)
    return res


def check_burst(chk, res, label):
    kinds = [r[0] if r else "none" for r in res]
    chk.equal("%s: exactly B=%d of %d accepted across both daemons" % (label, B, 2 * B),
              kinds.count("accept"), B)
    chk.equal("%s: the others refused by the limit (451 naming %s)" % (label, SENDER_RULE),
              sum(1 for r in res if r and r[0] == "limited" and SENDER_RULE in r[1]
                  and r[1].startswith("451 4.7.1")), B)
    chk.equal("%s: no store failure" % label, kinds.count("unavailable") + kinds.count("other"), 0)


def body(h, chk):
    for tool in ("redis-server", "redis-cli"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            raise H.Skip("%s not installed" % tool)
    cl = Cluster(h)
    masters = [n for n in cl.nodes(cl.ports[0]) if "master" in n[2]]
    chk.equal("cluster: 3 masters with slots", len([m for m in masters if m[4]]), 3)
    conf = write_conf(h, "mw.conf", cl)
    dns_port, _ = h.start_testdns({"sender.test": [{"TXT": "v=spf1 ?all"}],
                                   "_dmarc.sender.test": [{"TXT": "NONE"}]})
    daemons = [h.start_daemon(dns=[dns_port], args=["-c", conf], name="mw-a"),
               h.start_daemon(dns=[dns_port], args=["-c", conf], name="mw-b")]

    # 1. exactness on master M
    mport = masters[0][1]
    s1 = sender_on(mport, cl, cl.ports[1], "one")
    res = burst(daemons, s1, "a")
    check_burst(chk, res, "1 before the failover")
    # The first recipient's call spans two slots (sender, recipient): split per slot, and
    # the recipient buckets of the refused messages refunded (gcra_refund.lua: deleted,
    # being full again); those of the accepted ones charged.
    def rcpt_bucket(i, label):
        key = "mw:rl:{rcpt=r%d-%s@dest.test}:%s" % (i, label, RCPT_RULE)
        return resp(cl.owner(keyslot(key), cl.ports[0])[1], "EXISTS", key)
    kept = [rcpt_bucket(i, "a") for i in range(2 * B)]
    chk.equal("1: recipient buckets charged for accepted messages, refunded for refused ones",
              kept, [1 if r[0] == "accept" else 0 for r in res])
    key1 = "mw:rl:{from=%s}:%s" % (s1, SENDER_RULE)
    chk.check("1: the sender's bucket is on master M (%d)" % mport,
              resp(mport, "EXISTS", key1) == 1, key1)

    # 2. ASK then MOVED: migrate the slot of a fresh sender from its master to another
    src = masters[1][1]
    dst = masters[2][1]
    s2 = sender_on(src, cl, cl.ports[0], "two")
    slot2 = keyslot("from=%s" % s2)
    resp(dst, "CLUSTER", "SETSLOT", str(slot2), "IMPORTING", cl.node_id(src))
    resp(src, "CLUSTER", "SETSLOT", str(slot2), "MIGRATING", cl.node_id(dst))
    r = milter_send(daemons[0].port, s2, "ask1@dest.test", "QASK1")
    r2 = milter_send(daemons[1].port, s2, "ask2@dest.test", "QASK2")
    key2 = "mw:rl:{from=%s}:%s" % (s2, SENDER_RULE)
    chk.check("2: during the migration (ASK) both daemons' messages accepted", (r[0], r2[0]) == ("accept", "accept"),
              (r, r2))
    in_dst = resp(dst, "CLUSTER", "COUNTKEYSINSLOT", str(slot2))
    in_src = resp(src, "CLUSTER", "COUNTKEYSINSLOT", str(slot2))
    chk.check("2: the new bucket was written on the importing master (ASKING + the command)",
              in_dst == 1 and in_src == 0, (in_dst, in_src))
    for p in masters:
        resp(p[1], "CLUSTER", "SETSLOT", str(slot2), "NODE", cl.node_id(dst))
    chk.check("2: every node agrees on the slot's new owner (event, before going on)",
              H.wait_for(lambda: all(cl.owner(slot2, p)[1] == dst for p in cl.ports) and
                         cl.wait_ok(cl.ports, 0.1), 30, 0.1))
    rest = [milter_send(daemons[i % 2].port, s2, "mv%d@dest.test" % i, "QMV%02d" % i) for i in range(B)]
    kinds = [x[0] for x in rest]
    chk.equal("2: after the move (MOVED, map refreshed) the limit holds: B-2 more accepted, then refused",
              kinds, ["accept"] * (B - 2) + ["limited"] * 2)
    chk.check("2: the bucket is on the new master", resp(dst, "EXISTS", key2) == 1)

    # 3. failover of M under load
    results = []        # (daemon, start, end, kind, text, slot_on_M)
    lock = threading.Lock()
    stop = threading.Event()
    killed_at = [None]
    mslots = set()
    for r in resp(cl.ports[1], "CLUSTER", "SLOTS"):
        if r[2][1] == mport:
            mslots.update(range(r[0], r[1] + 1))
    counter = [0]

    def worker(k):
        d = daemons[k % 2]
        while not stop.is_set():
            with lock:
                counter[0] += 1
                i = counter[0]
            sender = "load%d@sender.test" % i
            t0 = time.monotonic()
            kind, text = milter_send(d.port, sender, "l%d@dest.test" % i, "QL%06d" % i)
            t1 = time.monotonic()
            with lock:
                results.append((k % 2, t0, t1, kind, text, keyslot("from=%s" % sender) in mslots, sender, i))

    ws = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for w in ws:
        w.start()
    H.wait_for(lambda: len(results) >= 40, 60)
    before = len(results)
    cl.procs[mport].send_signal(signal.SIGKILL)
    killed_at[0] = time.monotonic()
    cl.procs[mport].wait(10)
    survivors = [p for p in cl.ports if p != mport]

    def promoted():
        try:
            for n in cl.nodes(survivors[0]):
                if "master" in n[2] and "fail" not in n[2] and n[1] != mport and n[4] and \
                        any(int(s.split("-")[0]) in mslots for s in n[4] if s[0].isdigit()):
                    return n[1]
        except (OSError, IndexError, ValueError):
            return None
        return None
    newm = H.wait_for(lambda: promoted() if cl.wait_ok(survivors, 0.1) else None, 60, 0.1)
    promoted_at = time.monotonic()
    chk.check("3: a replica of M was promoted and cluster_state is ok", newm is not None)

    recovered = {}

    def daemon_recovered():
        with lock:
            for d, t0, t1, kind, _, on_m, _, _ in results:
                if on_m and kind == "accept" and t0 >= promoted_at and d not in recovered:
                    recovered[d] = t1
        return len(recovered) == 2
    H.wait_for(daemon_recovered, 60, 0.05)
    # a few more messages after both recovered, then stop
    n_at = len(results)
    H.wait_for(lambda: len(results) >= n_at + 40, 60)
    stop.set()
    for w in ws:
        w.join(60)
    chk.check("3: both daemons recovered (a message on M's slots accepted after the promotion)",
              len(recovered) == 2, recovered)

    kinds = [r[3] for r in results]
    chk.equal("3: no message refused by a limit or without a definite answer",
              [r for r in results if r[3] not in ("accept", "unavailable")], [])
    early = [r for r in results if r[3] == "unavailable" and r[2] < killed_at[0]]
    chk.equal("3: no failure action before the kill", early, [])
    late = [r for r in results if r[3] == "unavailable" and r[0] in recovered and r[1] > recovered[r[0]]]
    chk.equal("3: no failure action in messages started after the daemon recovered", late, [])
    # The MTA retries a 451: every tempfailed message is accepted on retry now.
    retried = [milter_send(daemons[r[0]].port, r[6], "l%d@dest.test" % r[7], "QR%06d" % r[7])
               for r in results if r[3] == "unavailable"]
    chk.check("3: every message tempfailed in the window is accepted on retry (none lost)",
              all(x[0] == "accept" for x in retried), retried)
    win = [r for r in results if r[3] == "unavailable"]
    print("failover: %d messages before the kill, %d in all; %d got the failure action "
          "(451 state unavailable), %d of them with the sender bucket on M's slots, %d with it elsewhere (their recipient bucket can be on M)" % (
              before, len(results), len(win), sum(1 for r in win if r[5]), sum(1 for r in win if not r[5])),
          flush=True)
    print("failover: replica promoted and cluster ok %.3f s after the kill" % (promoted_at - killed_at[0]),
          flush=True)
    for d in sorted(recovered):
        print("failover: daemon %s recovered %.3f s after the kill" % ("ab"[d], recovered[d] - killed_at[0]),
              flush=True)

    # 4. exact again on the promoted replica
    if newm is not None:
        s4 = sender_on(newm, cl, survivors[0], "four")
        chk.check("4: the fresh sender's slot was M's", keyslot("from=%s" % s4) in mslots)
        res = burst(daemons, s4, "d")
        check_burst(chk, res, "4 after the failover")
    for d in daemons:
        chk.check("daemon %s still running" % d.name, d.alive())


if __name__ == "__main__":
    H.run_test(body, "redis_cluster", timeout=600)
