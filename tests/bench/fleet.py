#!/usr/bin/python3
"""fleet.py - a fleet of mailwarden daemons on one shared rate-limit state (issue 18).

N daemons (N = 1, 2, 4) with the same rate-limit rules (bench.py's four: per-ip at MAIL,
per-sender, per-rcpt, per-user) against one Redis, then against a Redis Cluster of 3
masters + 3 replicas; each daemon driven by its own milterload (inbound, DKIM-signed
4k messages, one recipient).  Printed per run: messages/s (total, per daemon), Redis
commands/s and commands per message (INFO commandstats deltas summed over the masters),
Redis CPU ms per message (/proc of the redis-server processes), and the same daemons
without rate limits (the cost of the limits).  Then the capacity estimate: one Redis
core / Redis CPU per message -> messages/s one Redis (one master; the Cluster: 3) can
serve, and how many MTA hosts at a given per-host rate.  Medians of --runs runs.
Prints figures, checks nothing: not a test.

    tests/bench/run --only fleet [--runs 3] [--messages 2000]
"""
import argparse, json, os, statistics, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402
H = B.H
sys.path.insert(0, os.path.join(B.SRC, "tests", "integration"))
from test_redis_cluster import Cluster, resp  # noqa: E402

RULES = ['ratelimit = { rules = (',
         '  { name = "per-ip"; key = [ "ip" ]; rate = "100000000/1h"; stage = "mail"; },',
         '  { name = "per-sender"; key = [ "sender" ]; rate = "100000000/1h"; },',
         '  { name = "per-rcpt"; key = [ "recipient" ]; cost = "recipient"; rate = "100000000/1h"; },',
         '  { name = "per-user"; key = [ "sasl_user" ]; rate = "100000000/1h"; '
         'trust = [ "authenticated" ]; }',
         '); };']


def cmdstats(ports):
    """{command: calls} summed over the nodes' INFO commandstats."""
    tot = {}
    for p in ports:
        for line in resp(p, "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[8:].split(":", 1)
                calls = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
                tot[name] = tot.get(name, 0) + calls
    return tot


def redis_ticks(pids):
    return B.cpu_ticks(pids)


class Fleet:
    def __init__(self, b, a):
        self.b, self.a = b, a

    def start(self, n, backend, tag):
        ds = []
        for i in range(n):
            if backend == "none":
                extra = ""
            elif backend == "redis":
                extra = "\n".join(['state = { backend = "redis"; };',
                                   'redis = { host = "127.0.0.1"; port = %d; };' % self.b.redis_port] + RULES)
            else:
                nodes = ", ".join('"127.0.0.1:%d"' % p for p in self.cl.ports[:3])
                extra = "\n".join(['state = { backend = "redis"; };',
                                   'redis = { cluster_nodes = [ %s ]; };' % nodes] + RULES)
            name = "%s-%s-%d" % (tag, backend, i)
            conf, sock = self.b.mw_conf(name, ["rsa"], extra=extra)
            ds.append(B.Daemon(self.b.h, name, [self.b.mw, "serve", "-f", "-c", conf], sock, "mailwarden"))
        return ds

    def masters(self, backend):
        if backend == "redis":
            return [self.b.redis_port], [self.b.redis_proc.pid]
        if backend == "cluster":
            ms = [p for p in self.cl.ports if "role:master" in resp(p, "INFO", "replication")]
            return ms, [self.cl.procs[p].pid for p in ms]
        return [], []

    def one(self, ds, backend, n_msgs):
        """All daemons loaded at once, each by its own milterload; returns the figures."""
        ports, pids = self.masters(backend)
        base = lambda d, n: [self.b.ml, "-s", d.sock, "-z", "4k", "--json", "-i", B.CLIENT_IP, "-f", B.FROM,
                             "--timeout", "120", "-c", str(self.a.conc), "-n", str(n),
                             "--dkim-key", self.b.sender_key, "--dkim-domain", "example.com",
                             "--dkim-selector", "s1"]
        for d in ds:                                   # warm-up, not measured
            B.sh(base(d, 50), timeout=300, check=False)
        c0 = cmdstats(ports)
        r0 = redis_ticks(pids)
        res = [None] * len(ds)

        def go(i, d):
            rc, out = B.sh(base(d, n_msgs), timeout=1800, check=False)
            res[i] = json.loads(out.strip().splitlines()[-1])
        t0 = time.monotonic()
        th = [threading.Thread(target=go, args=(i, d)) for i, d in enumerate(ds)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        wall = time.monotonic() - t0
        c1 = cmdstats(ports)
        r1 = redis_ticks(pids)
        msgs = sum(r["messages"] for r in res)
        errs = sum(r["errors"] + r["tempfailed"] + r["rejected"] for r in res)
        calls = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1}
        # replication and the daemons' slot-map/script housekeeping are not per-message work
        calls = {k: v for k, v in calls.items()
                 if v and k not in ("info", "replconf", "cluster|slots", "cluster|nodes", "ping", "script|load")}
        ncalls = sum(calls.values())
        return {"msgs_per_s": msgs / wall, "per_daemon": [r["msgs_per_s"] for r in res],
                "messages": msgs, "errors": errs, "redis_cmds": ncalls, "redis_cmds_per_s": ncalls / wall,
                "cmds_per_msg": ncalls / max(1, msgs), "by_cmd": calls,
                "evalsha_per_msg": calls.get("evalsha", 0) / max(1, msgs),
                "redis_cpu_ms_per_msg": (r1 - r0) * 1000.0 / B.CLK / max(1, msgs)}

    def run(self):
        b, a = self.b, self.a
        b.keys()
        b.nsd()
        b.redis()
        self.cl = Cluster(b.h)
        out = {}
        for backend in ("none", "redis", "cluster"):
            for n in (1, 2, 4):
                ds = self.start(n, backend, "f%d" % n)
                runs = [self.one(ds, backend, a.messages) for _ in range(a.runs)]
                for d in ds:
                    d.proc.stop()
                med = lambda k: statistics.median(r[k] for r in runs)
                row = {k: med(k) for k in ("msgs_per_s", "redis_cmds_per_s", "cmds_per_msg", "evalsha_per_msg",
                                           "redis_cpu_ms_per_msg", "errors")}
                row["per_daemon"] = statistics.median(sum(r["per_daemon"]) / n for r in runs)
                row["runs_msgs_per_s"] = [round(r["msgs_per_s"], 1) for r in runs]
                row["by_cmd"] = runs[-1]["by_cmd"]
                out["%s N=%d" % (backend, n)] = row
                B.log("%-12s N=%d  %8.1f msg/s total (%s)  %7.1f msg/s per daemon  redis %8.1f cmd/s  "
                      "%.2f cmd/msg (%.2f EVALSHA)  redis cpu %.4f ms/msg  errors %d  %s"
                      % (backend, n, row["msgs_per_s"], row["runs_msgs_per_s"], row["per_daemon"],
                         row["redis_cmds_per_s"], row["cmds_per_msg"], row["evalsha_per_msg"],
                         row["redis_cpu_ms_per_msg"], row["errors"], row["by_cmd"]))
        self.report(out)
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(out, f, indent=1)

    def report(self, out):
        print("\nFleet (%d x %d messages per daemon, medians of %d runs, %d CPUs)"
              % (self.a.runs, self.a.messages, self.a.runs, os.cpu_count()))
        for k, r in out.items():
            print("  %-14s %8.1f msg/s  %7.1f/daemon  %8.1f redis cmd/s  %.2f cmd/msg  redis %.4f ms/msg"
                  % (k, r["msgs_per_s"], r["per_daemon"], r["redis_cmds_per_s"], r["cmds_per_msg"],
                     r["redis_cpu_ms_per_msg"]))
        for n in (1, 2, 4):
            base = out["none N=%d" % n]["msgs_per_s"]
            for be in ("redis", "cluster"):
                v = out["%s N=%d" % (be, n)]["msgs_per_s"]
                print("  cost of limits (%s, N=%d): %+.1f %% msg/s" % (be, n, (v - base) * 100.0 / base))
        # capacity: one Redis master is one core; its CPU per message was measured
        cpu1 = statistics.median(out["redis N=%d" % n]["redis_cpu_ms_per_msg"] for n in (1, 2, 4))
        cpuc = statistics.median(out["cluster N=%d" % n]["redis_cpu_ms_per_msg"] for n in (1, 2, 4))
        cap1 = 1000.0 / cpu1 if cpu1 else float("inf")
        capc = 3 * 1000.0 / cpuc if cpuc else float("inf")
        print("  Redis CPU per message: one Redis %.4f ms, Cluster (3 masters, sum) %.4f ms" % (cpu1, cpuc))
        print("  capacity at 100%% of one core per master: one Redis %.0f msg/s, Cluster %.0f msg/s" % (cap1, capc))
        print("  hosts served at 70% of that:")
        for rate in (10, 50, 100, 500):
            print("    %4d msg/s per host: one Redis %6d hosts, Cluster %6d hosts"
                  % (rate, int(0.7 * cap1 / rate), int(0.7 * capc / rate)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--milterload", required=True)
    ap.add_argument("--mailwarden", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--messages", type=int, default=2000, help="measured messages per daemon per run")
    ap.add_argument("--conc", type=int, default=4, help="milterload connections per daemon")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    ns = argparse.Namespace(milterload=a.milterload, mailwarden=a.mailwarden, quick=False, scale=1.0)
    b = B.Bench(ns)
    try:
        Fleet(b, a).run()
    finally:
        b.h.cleanup()


if __name__ == "__main__":
    main()
