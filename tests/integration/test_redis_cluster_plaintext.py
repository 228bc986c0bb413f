#!/usr/bin/python3
"""Neither a Redis Cluster node nor a sentinel can send our traffic off loopback
(issue 18, redis.allow_plaintext).

The configuration check refuses a non-loopback Redis address unless
redis.allow_plaintext = true (hiredis 0.14 has no TLS).  A cluster learns its nodes from
the cluster itself (CLUSTER SLOTS, MOVED, ASK), so the same rule must hold there: a
fake cluster node on loopback answers CLUSTER SLOTS with every slot on 203.0.113.5
(TEST-NET-3) and every command with MOVED to it.  The daemon must never use that node:
the message gets the configured failure action (tempfail), the log says why, and the fake
node sees no rate-limit command succeed elsewhere.  Without the check the daemon adds the
node and connects to it in plaintext (its log then shows a connect failure to
203.0.113.5 instead of the refusal).  The same with a fake sentinel that names
203.0.113.5 as the master.
"""
import os, socket, sys, threading
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_redis_cluster import milter_send

FAR = "203.0.113.5"


def resp_encode(v):
    if isinstance(v, int):
        return b":%d\r\n" % v
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    if isinstance(v, str):
        return resp_encode(v.encode())
    if isinstance(v, list):
        return b"*%d\r\n" % len(v) + b"".join(resp_encode(x) for x in v)
    raise TypeError(v)


class FakeNode:
    """Answers CLUSTER SLOTS with every slot on FAR:6379, PING with PONG, anything else
    with MOVED to FAR; counts the commands it saw."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                if not line.startswith(b"*"):
                    continue
                args = []
                for _ in range(int(line[1:])):
                    n = int(f.readline()[1:])
                    args.append(f.read(n + 2)[:-2])
                cmd = [a.upper() for a in args[:2]]
                self.seen.append(b" ".join(cmd).decode(errors="replace"))
                if cmd[:1] == [b"SENTINEL"]:
                    c.sendall(resp_encode([FAR, "6379"]))
                elif cmd[:2] == [b"CLUSTER", b"SLOTS"]:
                    c.sendall(resp_encode([[0, 16383, [FAR, 6379, "n1"]]]))
                elif cmd[:1] == [b"PING"]:
                    c.sendall(b"+PONG\r\n")
                else:
                    c.sendall(b"-MOVED 1234 %s:6379\r\n" % FAR.encode())
        except (OSError, ValueError):
            return
        finally:
            c.close()


def body(h, chk):
    node = FakeNode()
    conf = h.write("mw.conf", (
        'policy = "default";\n'
        'state = { backend = "redis"; };\n'
        'redis = { cluster_nodes = [ "127.0.0.1:%d" ]; failure_action = "tempfail";\n'
        '          command_timeout = 500; connect_timeout = 300; };\n'
        'ratelimit = { rules = ( { name = "per-sender"; key = "sender"; rate = "5/1d"; stage = "mail"; } ); };\n')
        % node.port)
    dns_port, _ = h.start_testdns({"sender.test": [{"TXT": "v=spf1 ?all"}],
                                   "_dmarc.sender.test": [{"TXT": "NONE"}]})
    d = h.start_daemon(dns=[dns_port], args=["-c", conf], name="mw")
    kind, text = milter_send(d.port, "a@sender.test", "b@dest.test", "QPLAIN1")
    chk.check("the message gets the failure action (state unavailable), not accepted unchecked",
              kind == "unavailable", (kind, text))
    line = H.wait_for(lambda: next((l for l in d.log_text().splitlines()
                                    if FAR in l and "allow_plaintext" in l), None), 10)
    chk.check("the log names the refused node and the key", line, d.log_text()[-1500:])
    chk.check("no connection attempt to the far node was logged",
              not any(FAR in l and "allow_plaintext" not in l for l in d.log_text().splitlines()),
              [l for l in d.log_text().splitlines() if FAR in l][:5])
    chk.check("the fake node was asked for the slot map", any("CLUSTER SLOTS" in s for s in node.seen),
              node.seen[:10])
    d.stop()

    # the same class through Sentinel: a sentinel naming a master off loopback
    conf = h.write("mw-sentinel.conf", (
        'policy = "default";\n'
        'state = { backend = "redis"; };\n'
        'redis = { sentinels = [ "127.0.0.1:%d" ]; master_name = "mymaster"; failure_action = "tempfail";\n'
        '          command_timeout = 500; connect_timeout = 300; };\n'
        'ratelimit = { rules = ( { name = "per-sender"; key = "sender"; rate = "5/1d"; stage = "mail"; } ); };\n')
        % node.port)
    d = h.start_daemon(dns=[dns_port], args=["-c", conf], name="mw-sentinel")
    kind, text = milter_send(d.port, "a@sender.test", "b@dest.test", "QPLAIN2")
    chk.check("sentinel: the message gets the failure action", kind == "unavailable", (kind, text))
    line = H.wait_for(lambda: next((l for l in d.log_text().splitlines()
                                    if FAR in l and "allow_plaintext" in l), None), 10)
    chk.check("sentinel: the log names the refused master and the key", line, d.log_text()[-1500:])


if __name__ == "__main__":
    H.run_test(body, "redis-cluster-plaintext", timeout=120)
