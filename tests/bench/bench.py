#!/usr/bin/python3
"""bench.py - the body of tests/bench/run (see there and docs/performance.md).

Side by side, on one generated corpus: mailwarden signing (RSA-2048, Ed25519, dual) and
inbound (SPF + DKIM verify + DMARC), OpenDKIM signing, OpenDKIM verify + OpenDMARC; CPU
per message from each daemon's own /proc/PID/stat; throughput; ratios against one raw
RSA-2048 signature (openssl speed); the whole path through a private Postfix
(smtp-source -> Postfix -> smtp-sink); peak RSS at 200 connections; RSS over many
messages; Redis rate limits on vs off.  Prints figures, checks nothing: not a test.

Reuses tests/integration/harness.py (process groups + reaper, network namespace, the
private Postfix), without changing it.
"""
import argparse, json, os, re, shutil, signal, socket, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import harness as H  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
DNS_ADDR = "127.83.0.1"          # NSD listens here on port 53 (OpenDMARC's libresolv has no port)
AUTHSERV = "mx.bench.example"
FROM = "alice@example.com"
CLIENT_IP = "192.0.2.10"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(argv, timeout=120, check=True, **kw):
    return H.run([str(a) for a in argv], timeout=timeout, check=check, **kw)


# ------------------------------------------------------------------ daemons and /proc

def proc_tree(root):
    """root and all its descendants (by /proc ppid)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def cpu_ticks_split(pids):
    """(utime, stime) in clock ticks, summed over pids (all threads of each)."""
    u = st = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                x = f.read()
        except OSError:
            continue
        fields = x[x.rindex(")") + 2:].split()
        u += int(fields[11])
        st += int(fields[12])
    return u, st


def cpu_ticks(pids):
    return sum(cpu_ticks_split(pids))


def tree_ticks_with_reaped(root):
    """utime+stime of root's live tree plus root's cutime+cstime (children it has reaped):
    Postfix's smtpd/cleanup processes come and go during a run."""
    t = cpu_ticks(proc_tree(root))
    try:
        with open("/proc/%d/stat" % root) as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        t += int(fields[13]) + int(fields[14])
    except OSError:
        pass
    return t


def status_kb(pids, key):
    t = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith(key + ":"):
                        t += int(line.split()[1])
        except OSError:
            pass
    return t


class Daemon:
    def __init__(self, h, name, argv, sock, kind):
        self.h, self.name, self.sock, self.kind = h, name, sock, kind
        self.proc = h.spawn(name, argv)
        kind_, rest = sock.split(":", 1)
        if kind_ == "unix":
            self.postfix_spec = "unix:" + rest
            addr, fam = rest, socket.AF_UNIX
        else:                                   # inet:PORT@HOST
            port, host = rest.split("@")
            self.postfix_spec = "inet:%s:%s" % (host, port)
            addr, fam = (host, int(port)), socket.AF_INET
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if not self.proc.alive():
                raise RuntimeError("%s exited:\n%s" % (name, self.proc.log_text()[-2000:]))
            try:
                s = socket.socket(fam)
                s.connect(addr)
                s.close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("%s: no socket %s:\n%s" % (name, sock, self.proc.log_text()[-2000:]))
        time.sleep(0.2)

    def pids(self):
        return proc_tree(self.proc.pid)

    def ticks(self):
        return cpu_ticks(self.pids())

    def ticks_split(self):
        return cpu_ticks_split(self.pids())

    def rss(self):
        return status_kb(self.pids(), "VmRSS")

    def hwm(self):
        return status_kb(self.pids(), "VmHWM")

    def hwm_dedup(self):
        """Peak memory without counting shared pages twice: the largest process's VmHWM
        (mailwarden's worker) plus the private memory (USS: Private_Clean + Private_Dirty
        of smaps_rollup) of the others (the supervisor, a fork of the same binary, shares
        nearly all its pages with the worker; summing VmHWM counts them twice)."""
        per = []
        for p in self.pids():
            hwm = status_kb([p], "VmHWM")
            uss = 0
            try:
                with open("/proc/%d/smaps_rollup" % p) as f:
                    for line in f:
                        if line.startswith(("Private_Clean:", "Private_Dirty:")):
                            uss += int(line.split()[1])
            except OSError:
                pass
            per.append((hwm, uss))
        if not per:
            return 0
        per.sort(reverse=True)
        return per[0][0] + sum(u for _, u in per[1:])

    def reset_hwm(self):
        for p in self.pids():
            try:
                with open("/proc/%d/clear_refs" % p, "w") as f:
                    f.write("5")
            except OSError:
                pass


# ------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, a):
        self.a = a
        self.h = H.Harness("bench")
        self.ml = a.milterload
        self.mw = a.mailwarden
        self.results = {}     # label -> dict
        self.notes = []

    # ---- milterload
    def load(self, d, label, n, warm=None, size="4k", conc=8, extra=(), signed=False, auth=None, keep=True,
             sender=FROM):
        base = [self.ml, "-s", d.sock, "-z", size, "--json", "-i", CLIENT_IP, "-f", sender,
                "--timeout", "120"] + list(extra)
        if auth:
            base += ["-a", auth]
        if signed:
            base += ["--dkim-key", self.sender_key, "--dkim-domain", "example.com", "--dkim-selector", "s1"]
        warm = max(20, n // 10) if warm is None else warm
        if warm:
            sh(base + ["-c", conc, "-n", warm], timeout=900, check=False)
        u0, s0 = d.ticks_split()
        t0 = u0 + s0
        rc, out = sh(base + ["-c", conc, "-n", n], timeout=1800, check=False)
        u1, s1 = d.ticks_split()
        t1 = u1 + s1
        try:
            r = json.loads(out.strip().splitlines()[-1])
        except Exception:
            raise RuntimeError("milterload failed for %s:\n%s" % (label, out[-2000:]))
        r["cpu_ms"] = (t1 - t0) * 1000.0 / CLK / max(1, r["messages"])
        r["cpu_user_ms"] = (u1 - u0) * 1000.0 / CLK / max(1, r["messages"])
        r["cpu_sys_ms"] = (s1 - s0) * 1000.0 / CLK / max(1, r["messages"])
        r["daemon"] = d.name
        r["size"] = size
        if keep:
            self.results[label] = r
        log("  %-34s %8.1f msg/s  cpu %6.3f ms/msg  p50 %7.0f us  p99 %7.0f us  errors %d  %s"
            % (label, r["msgs_per_s"], r["cpu_ms"], r["latency_us"]["total"]["p50"],
               r["latency_us"]["total"]["p99"], r["errors"], self.outcome(r)))
        return r

    @staticmethod
    def outcome(r):
        parts = ["acc %d" % r["accepted"]]
        for k in ("rejected", "tempfailed", "quarantine"):
            if r[k]:
                parts.append("%s %d" % (k[:4], r[k]))
        if r["dkim_signatures"]:
            parts.append("sig %d" % r["dkim_signatures"])
        if r["ar_headers"]:
            parts.append("A-R %d (dkim=pass %d spf=pass %d dmarc=pass %d)"
                         % (r["ar_headers"], r["ar_dkim_pass"], r["ar_spf_pass"], r["ar_dmarc_pass"]))
        if r["first_error"]:
            parts.append("ERR " + r["first_error"])
        return ", ".join(parts)

    # ---- setup
    def keys(self):
        kd = self.h.path("keys")
        os.makedirs(kd)
        recs = {}
        for sel, typ in (("rsa", "rsa"), ("ed", "ed25519"), ("s1", "rsa")):
            _, out = sh([self.mw, "keygen", "--domain", "example.com", "--selector", sel, "--type", typ,
                         "--out", kd])
            txt = "".join(re.findall(r'"([^"]*)"', out))
            recs[sel] = txt
        self.kd = kd
        self.sender_key = os.path.join(kd, "s1.private")
        self.records = recs

    def nsd(self):
        d = self.h.path("nsd")
        os.makedirs(d)
        spf = "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 -all"

        def txt(s):
            return " ".join('"%s"' % s[i:i + 200] for i in range(0, len(s), 200))
        zones = {
            "example.com": "\n".join([
                "@ IN TXT %s" % txt(spf),
                "@ IN MX 10 mail.example.com.",
                "mail IN A 192.0.2.10",
                "mail IN TXT \"v=spf1 a -all\"",
                "_dmarc IN TXT \"v=DMARC1; p=reject; adkim=r; aspf=r\"",
                "rsa._domainkey IN TXT ( %s )" % txt(self.records["rsa"]),
                "ed._domainkey IN TXT ( %s )" % txt(self.records["ed"]),
                "s1._domainkey IN TXT ( %s )" % txt(self.records["s1"]),
            ]),
            "com": "", "dest.example": "@ IN TXT \"v=spf1 -all\"", "example": "",
            "in-addr.arpa": "",
        }
        conf = ["server:", "  ip-address: %s" % DNS_ADDR, "  port: 53", '  username: ""', '  chroot: ""',
                '  zonesdir: "%s"' % d, '  pidfile: "%s/nsd.pid"' % d, '  database: ""',
                '  zonelistfile: "%s/zone.list"' % d, '  xfrdfile: "%s/xfrd.state"' % d, '  xfrdir: "%s"' % d,
                '  logfile: "%s/nsd.log"' % d, "  server-count: 1", "  verbosity: 1",
                "remote-control:", "  control-enable: no"]
        for origin, text in zones.items():
            with open(os.path.join(d, origin + ".zone"), "w") as f:
                f.write(H.ZONE_HEAD.format(origin=origin) + text + "\n")
            conf += ["zone:", "  name: %s" % origin, "  zonefile: %s.zone" % origin]
        with open(os.path.join(d, "nsd.conf"), "w") as f:
            f.write("\n".join(conf) + "\n")
        self.nsd_proc = self.h.spawn("nsd", ["nsd", "-d", "-c", d + "/nsd.conf"])
        from dnslib import DNSRecord
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                DNSRecord.parse(DNSRecord.question("example.com", "TXT").send(DNS_ADDR, 53, timeout=0.3))
                break
            except Exception:
                if not self.nsd_proc.alive():
                    raise RuntimeError("NSD exited:\n" + self.nsd_proc.log_text())
                time.sleep(0.1)
        else:
            raise RuntimeError("NSD does not answer on %s:53" % DNS_ADDR)
        with open(self.h.path("resolv.conf"), "w") as f:
            f.write("nameserver %s\noptions attempts:1 timeout:2\n" % DNS_ADDR)

    def redis(self):
        self.redis_port = H.free_port()
        self.redis_proc = self.h.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind",
                                                 "127.0.0.1", "--save", "", "--appendonly", "no",
                                                 "--protected-mode", "no"])
        H.wait_port(self.redis_port, proc=self.redis_proc)

    def mw_conf(self, name, keys, ratelimit=False, extra="", inet=False):
        sock = "inet:%d@127.0.0.1" % H.free_port() if inet else "unix:" + self.h.path(name + ".sock")
        klist = ", ".join('{ name = "%s"; domain = "example.com"; selector = "%s"; file = "%s/%s.private"; }'
                          % (k, k, self.kd, k) for k in keys)
        text = ['socket = "%s";' % sock, 'authserv_id = "%s";' % AUTHSERV, 'hostname = "%s";' % AUTHSERV,
                'socket_mode = "0666";',
                'dns = { forwarders = [ "%s@53" ]; };' % DNS_ADDR,
                'dkim = { keys = ( %s ); signing = ( { pattern = "example.com"; keys = [ %s ]; } ); };'
                % (klist, ", ".join('"%s"' % k for k in keys))]
        if ratelimit:
            text += ['state = { backend = "redis"; };',
                     'redis = { host = "127.0.0.1"; port = %d; };' % self.redis_port,
                     'ratelimit = { rules = (',
                     '  { name = "per-ip"; key = [ "ip" ]; rate = "100000000/1h"; stage = "mail"; },',
                     '  { name = "per-sender"; key = [ "sender" ]; rate = "100000000/1h"; },',
                     '  { name = "per-rcpt"; key = [ "recipient" ]; cost = "recipient"; rate = "100000000/1h"; },',
                     '  { name = "per-user"; key = [ "sasl_user" ]; rate = "100000000/1h"; '
                     'trust = [ "authenticated" ]; }',
                     '); };']
        text.append(extra)
        path = self.h.write(name + ".conf", "\n".join(text) + "\n")
        sh([self.mw, "config-test", "-c", path])
        return path, sock

    def start_mw(self, name, keys, ratelimit=False, inet=False):
        conf, sock = self.mw_conf(name, keys, ratelimit, inet=inet)
        return Daemon(self.h, name, [self.mw, "serve", "-f", "-c", conf], sock, "mailwarden")

    def start_opendkim(self, name, mode):
        sock = self.h.path(name + ".sock")
        lines = ["Syslog no", "Mode %s" % mode, "Socket local:%s" % sock, "UMask 000",
                 "Canonicalization relaxed/relaxed", "SignatureAlgorithm rsa-sha256",
                 "AuthservID %s" % AUTHSERV, "Nameservers %s" % DNS_ADDR, "MinimumKeyBits 1024",
                 "OversignHeaders From,To,Subject", "RequireSafeKeys false", "PidFile %s" % self.h.path(name + ".pid"),
                 # signing: the bench's client (and Postfix's loopback) is internal, as for mailwarden
                 "InternalHosts %s" % ("127.0.0.1, ::1, 192.0.2.0/24" if mode == "s" else "127.0.0.1, ::1")]
        if mode == "s":
            lines += ["Domain example.com", "Selector rsa", "KeyFile %s/rsa.private" % self.kd]
        conf = self.h.write(name + ".conf", "\n".join(l for l in lines if l) + "\n")
        return Daemon(self.h, name, ["/usr/sbin/opendkim", "-f", "-x", conf], "unix:" + sock, "opendkim")

    def start_opendmarc(self, name):
        sock = self.h.path(name + ".sock")
        lines = ["Syslog false", "Socket local:%s" % sock, "UMask 000", "AuthservID %s" % AUTHSERV,
                 "TrustedAuthservIDs %s" % AUTHSERV, "SPFSelfValidate true", "SPFIgnoreResults true",
                 "IgnoreAuthenticatedClients true", "IgnoreHosts %s" % self.h.write(name + ".ignore", "127.0.0.1\n"),
                 "RejectFailures false", "FailureReports false",
                 "PublicSuffixList /usr/share/publicsuffix/effective_tld_names.dat",
                 "PidFile %s" % self.h.path(name + ".pid")]
        conf = self.h.write(name + ".conf", "\n".join(l for l in lines if l) + "\n")
        # own mount namespace: /etc/resolv.conf -> NSD (libresolv cannot be given a port or server)
        cmd = "mount --bind %s /etc/resolv.conf && exec /usr/sbin/opendmarc -f -c %s" % (
            self.h.path("resolv.conf"), conf)
        return Daemon(self.h, name, ["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
                      "unix:" + sock, "opendmarc")

    def openssl_speed(self):
        secs = "1" if self.a.quick else "2"
        _, out = sh(["openssl", "speed", "-seconds", secs, "rsa2048"], timeout=120)
        m = re.search(r"^rsa 2048 bits\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)\s+([\d.]+)", out, re.M)
        self.rsa_sign_ms = 1000.0 / float(m.group(3))
        _, out = sh(["openssl", "speed", "-seconds", secs, "ed25519"], timeout=120)
        m = re.search(r"^\s*253 bits EdDSA \(Ed25519\)\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)", out, re.M)
        self.ed_sign_ms = 1000.0 / float(m.group(3)) if m else None
        log("openssl speed: RSA-2048 sign %.3f ms, Ed25519 sign %s ms"
            % (self.rsa_sign_ms, "%.3f" % self.ed_sign_ms if self.ed_sign_ms else "?"))

    # ---- Postfix path
    def postfix_path(self, daemons):
        q = self.a.quick
        n = max(200, int((1000 if q else 3000) * self.a.scale))
        ns = self.h.create_netns()
        pf = BenchPostfix(self.h, 1, ns, "tempfail", {}, False)
        pf.start()
        body4k = self.h.path("msg4k.eml")
        body4k_signed = self.h.path("msg4k-signed.eml")
        sh([self.ml, "-s", "x", "-z", "4k", "-f", FROM, "--dump", body4k])
        sh([self.ml, "-s", "x", "-z", "4k", "-f", FROM, "--dump", body4k_signed, "--dkim-key", self.sender_key,
            "--dkim-domain", "example.com", "--dkim-selector", "s1"])
        # Two baselines: the inbound scenario (namespace client, DKIM-signed
        # message) and the outbound one (127.0.0.1, unsigned message) cost
        # Postfix different amounts, so each filter is compared with Postfix
        # alone in its own scenario.
        variants = [("Postfix alone", None, "in", body4k_signed),
                    ("Postfix alone, outbound scenario", None, "out", body4k)]
        for label, ds, direction in daemons:
            variants.append((label, ds, direction, body4k_signed if direction == "in" else body4k))
        out = []
        reps = 1 if q else 3
        for label, ds, direction, msgfile in variants:
            milters = " ".join(d.postfix_spec for d in ds) if ds else ""
            pf.set(smtpd_milters=milters, non_smtpd_milters="", milter_default_action="tempfail",
                   milter_protocol="6")
            rates, cpus, pfcs = [], [], []
            for rep in range(reps + 1):          # first round warms up (and is not counted)
                count = n if rep else max(100, n // 10)
                allp = [d for d in (ds or [])]
                t0 = [d.ticks() for d in allp]
                pft0 = tree_ticks_with_reaped(pf.proc.pid)
                if direction == "in":
                    argv = ns.wrap(["smtp-source", "-s", "20", "-m", count, "-F", msgfile, "-f", FROM,
                                    "-t", "bob@sink.test", "-M", "mail.example.com",
                                    "%s:%d" % (ns.host_addr, pf.port)])
                else:
                    argv = ["smtp-source", "-s", "20", "-m", count, "-F", msgfile, "-f", FROM,
                            "-t", "bob@sink.test", "-M", "mail.example.com", "127.0.0.1:%d" % pf.port]
                ts = time.monotonic()
                sh(argv, timeout=600)
                el = time.monotonic() - ts
                self.wait_queue_empty(pf)
                if rep:
                    rates.append(count / el)
                    cpus.append(sum(d.ticks() - t for d, t in zip(allp, t0)) * 1000.0 / CLK / count)
                    pfcs.append((tree_ticks_with_reaped(pf.proc.pid) - pft0) * 1000.0 / CLK / count)
            rate = sorted(rates)[len(rates) // 2]
            pfc = sorted(pfcs)[len(pfcs) // 2]
            for d in ds or []:       # what the filter decided on this path (its last log line)
                if d.kind == "mailwarden":
                    last = [l for l in d.proc.log_text().splitlines() if " message id=" in l][-1:]
                    if last:
                        self.notes.append("Postfix path, %s, last log line: %s" % (label, last[0][:400]))
            out.append({"label": label, "msgs_per_s": rate, "rates": rates, "direction": direction,
                        "milter_cpu_ms": sum(cpus) / len(cpus) if cpus and ds else 0.0, "postfix_cpu_ms": pfc})
            log("  %-34s %8.1f msg/s  (runs %s)  milter cpu %.3f ms/msg  postfix cpu %.3f ms/msg"
                % (label, rate, ", ".join("%.0f" % r for r in rates), sum(cpus) / len(cpus), pfc))
        self.notes.append("Postfix path: %d messages per run, %d runs per variant after a warm-up run; "
                          "20 smtp-source sessions, 4 KiB (signed corpus message for inbound)" % (n, reps))
        base = {o["direction"]: o["msgs_per_s"] for o in out[:2]}
        for o in out:
            o["pct_of_alone"] = 100.0 * o["msgs_per_s"] / base[o["direction"]]
        self.results["postfix"] = out
        pf.stop()

    def wait_queue_empty(self, pf, timeout=300):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            qd = os.path.join(pf.dir, "spool")
            n = 0
            for sub in ("incoming", "active", "deferred", "maildrop", "hold"):
                for _, _, files in os.walk(os.path.join(qd, sub)):
                    n += len(files)
            if n == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("Postfix queue did not drain:\n" + pf.queue()[-2000:])


class BenchPostfix(H.Postfix):
    """The harness's private Postfix, but smtp-sink only counts (no files) and the
    milter goes over a unix socket."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.main.update({"smtpd_milters": "", "default_process_limit": "100",
                          "smtp_destination_concurrency_limit": "20", "smtpd_client_connection_count_limit": "0",
                          "smtpd_client_message_rate_limit": "0", "in_flow_delay": "0"})

    def start(self):
        self._write()
        self.h.spawn("smtp-sink", ["smtp-sink", "-u", "nobody", "127.0.0.1:%d" % self.sink_port, "256"])
        H.wait_port(self.sink_port)
        H.run(["postfix", "-c", self.etc, "check"], timeout=60)
        self.proc = self.h.spawn("postfix", [H.POSTFIX_MASTER, "-c", self.etc, "-d"])
        self.h.cleanups.append(self.stop)
        for a in self.addrs:
            H.wait_port(self.port, host=a, proc=self.proc, timeout=20)


# ------------------------------------------------------------------ report

def fmt(v, p=3):
    return "-" if v is None else ("%.*f" % (p, v))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--milterload", required=True)
    ap.add_argument("--mailwarden", required=True)
    ap.add_argument("--json-out")
    ap.add_argument("--skip-postfix", action="store_true")
    ap.add_argument("--only", choices=["postfix"], help="run only the Postfix path")
    ap.add_argument("--rss-messages", type=int)
    ap.add_argument("--profile", metavar="DIR", help="only run mailwarden under callgrind (inbound, signing)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every message count (smoke runs)")
    a = ap.parse_args()
    b = Bench(a)

    def on_term(sig, frm):
        raise SystemExit("killed by signal %d" % sig)
    signal.signal(signal.SIGTERM, on_term)
    try:
        if a.profile:
            profile(b, a.profile)
        else:
            run(b)
    finally:
        b.h.cleanup()


def run(b):
    a, q = b.a, b.a.quick
    t_start = time.monotonic()
    with open("/proc/loadavg") as f:
        load0 = f.read().split()[:3]
    b.openssl_speed()
    b.keys()
    b.nsd()
    b.redis()
    log("starting daemons")
    mw = b.start_mw("mw-rsa", ["rsa"])
    mw_ed = b.start_mw("mw-ed", ["ed"])
    mw_dual = b.start_mw("mw-dual", ["rsa", "ed"])
    mw_rl = b.start_mw("mw-rl", ["rsa"], ratelimit=True)
    mw_inet = b.start_mw("mw-inet", ["rsa"], inet=True)
    od_s = b.start_opendkim("opendkim-sign", "s")
    od_v = b.start_opendkim("opendkim-verify", "v")
    odm = b.start_opendmarc("opendmarc")
    sc = a.scale
    if a.only == "postfix":
        b.postfix_path([("mailwarden signing (RSA)", [mw], "out"),
                        ("mailwarden signing (RSA), inet socket", [mw_inet], "out"),
                        ("mailwarden inbound", [mw], "in"),
                        ("mailwarden inbound +ratelimit", [mw_rl], "in"),
                        ("OpenDKIM signing", [od_s], "out"),
                        ("OpenDKIM verify + OpenDMARC", [od_v, odm], "in")])
        finish(b, load0, t_start)
        return
    N = int((1500 if q else 5000) * sc)
    N64 = int((600 if q else 2000) * sc)

    log("direct milter load, 4 KiB, 8 connections, unix sockets (label, msg/s, daemon CPU/msg, latency)")
    b.load(mw, "mw sign RSA-2048 4k", N, auth="alice")
    b.load(mw_ed, "mw sign Ed25519 4k", N, auth="alice")
    b.load(mw_dual, "mw sign dual 4k", N, auth="alice")
    b.load(mw, "mw inbound 4k", N, signed=True)
    b.load(mw_rl, "mw inbound +ratelimit 4k", N, signed=True)
    b.load(mw_rl, "mw sign RSA +ratelimit 4k", N, auth="alice")
    b.load(mw, "mw baseline 4k (outbound, unsigned)", N, auth="alice", sender="alice@unsigned.example")
    b.load(mw_inet, "mw sign RSA-2048 4k, inet socket", max(200, N // 8), auth="alice")
    b.load(od_s, "opendkim sign 4k", N, auth="alice")
    b.load(od_v, "opendkim verify 4k", N, signed=True)
    b.load(odm, "opendmarc 4k", N, signed=True)
    log("direct milter load, 64 KiB")
    b.load(mw, "mw sign RSA-2048 64k", N64, size="64k", auth="alice")
    b.load(mw, "mw inbound 64k", N64, size="64k", signed=True)
    b.load(mw_rl, "mw inbound +ratelimit 64k", N64, size="64k", signed=True)
    b.load(mw_rl, "mw sign RSA +ratelimit 64k", N64, size="64k", auth="alice")
    b.load(mw, "mw baseline 64k (outbound, unsigned)", N64, size="64k", auth="alice", sender="alice@unsigned.example")
    b.load(od_s, "opendkim sign 64k", N64, size="64k", auth="alice")
    b.load(od_v, "opendkim verify 64k", N64, size="64k", signed=True)
    b.load(odm, "opendmarc 64k", N64, size="64k", signed=True)
    log("corpus sizes (mailwarden inbound, signed corpus; and signing)")
    for size, n in (("2k", N), ("16k", N // 2), ("256k", N // 10), ("4m", max(10, int((40 if q else 120) * sc)))):
        b.load(mw, "mw inbound %s" % size, n, size=size, signed=True, warm=max(10, n // 10))
        b.load(mw, "mw sign RSA-2048 %s" % size, n, size=size, auth="alice", warm=max(10, n // 10))
    log("rate limits on vs off (inbound, 4 KiB, 3 alternating runs each, median)")
    rl = {"off": [], "on": []}
    rlc = {"off": [], "on": []}
    for i in range(3):
        for key, d in (("off", mw), ("on", mw_rl)):
            r = b.load(d, "rl-" + key, N, signed=True, warm=0, keep=False)
            rl[key].append(r["msgs_per_s"])
            rlc[key].append(r["cpu_ms"])
    b.results["ratelimit"] = {k: sorted(v)[1] for k, v in rl.items()}
    b.results["ratelimit"]["runs"] = rl
    b.results["ratelimit"]["cpu_ms"] = {k: sorted(v)[1] for k, v in rlc.items()}

    log("peak RSS at 200 concurrent connections (VmHWM after clear_refs; all connections open at once)")
    peak = {}
    for d, signed, auth in ((mw, True, None), (mw, False, "alice"), (od_s, False, "alice"), (od_v, True, None),
                            (odm, True, None)):
        d.reset_hwm()
        base = d.rss()
        r = b.load(d, "%s 200conn" % d.name, max(400, int((2000 if not q else 600) * sc)), size="2k,16k,256k", conc=200,
                   extra=["--barrier"], signed=signed, auth=auth, warm=0, keep=False)
        peak["%s (%s)" % (d.name, "inbound" if signed else "signing")] = {
            "rss_before_kb": base, "hwm_kb": d.hwm(), "hwm_dedup_kb": d.hwm_dedup(),
            "nprocs": len(d.pids()), "msgs_per_s": r["msgs_per_s"], "errors": r["errors"]}
        log("    %-30s rss before %6d kB  peak %6d kB  (largest process + others' private: %6d kB)"
            % (d.name, base, d.hwm(), d.hwm_dedup()))
    # one 4 MiB message more or less: 20 at once
    mw.reset_hwm()
    base = mw.rss()
    b.load(mw, "mw 20x 4 MiB at once", 20, size="4m", conc=20, extra=["--barrier"], signed=True, warm=0, keep=False)
    peak["mw-rsa 20 x 4 MiB at once"] = {"rss_before_kb": base, "hwm_kb": mw.hwm()}
    log("    20 x 4 MiB: rss before %d kB, peak %d kB (+%.1f MiB per message)"
        % (base, mw.hwm(), (mw.hwm() - base) / 1024.0 / 20))
    b.results["peak_rss"] = peak

    log("RSS over many messages (mailwarden inbound + rate limits in Redis, and memory backend)")
    total = a.rss_messages or (20000 if q else 200000)
    every = max(1000, total // 20)
    for d, label in ((mw_rl, "mw-rl"),):
        warm = 2000
        b.load(d, "rss warm-up", warm, signed=True, warm=0, keep=False)
        pids = ",".join(str(p) for p in d.pids())
        t0 = time.monotonic()
        p = subprocess.run([b.ml, "-s", d.sock, "-z", "4k", "-c", "8", "-n", str(total), "--json", "-i", CLIENT_IP,
                            "-f", FROM, "--dkim-key", b.sender_key, "--dkim-domain", "example.com",
                            "--dkim-selector", "s1", "--rss-pids", pids, "--rss-every", str(every),
                            "-V", "64"],
                           capture_output=True, text=True, timeout=3600)
        el = time.monotonic() - t0
        samples = [tuple(int(x) for x in l.split()[1:3]) for l in p.stderr.splitlines() if l.startswith("rss ")]
        r = json.loads(p.stdout.strip().splitlines()[-1])
        b.results["rss_series"] = {"daemon": label, "messages": total, "every": every, "samples": samples,
                                   "elapsed_s": el, "msgs_per_s": r["msgs_per_s"], "errors": r["errors"]}
        if samples:
            first, last = samples[0][1], samples[-1][1]
            half = samples[len(samples) // 2][1]
            log("    %d messages in %.0f s: RSS %d kB after %d, %d kB mid, %d kB at end (%+d kB over the second half)"
                % (total, el, first, samples[0][0], half, last, last - half))

    if not a.skip_postfix:
        log("whole path: smtp-source (20 sessions, 4 KiB) -> private Postfix -> smtp-sink")
        try:
            b.postfix_path([("mailwarden signing (RSA)", [mw], "out"),
                            ("mailwarden signing (RSA), inet socket", [mw_inet], "out"),
                            ("mailwarden inbound", [mw], "in"),
                            ("mailwarden inbound +ratelimit", [mw_rl], "in"),
                            ("OpenDKIM signing", [od_s], "out"),
                            ("OpenDKIM verify + OpenDMARC", [od_v, odm], "in")])
        except H.Skip as e:
            b.notes.append("Postfix path skipped: %s" % e)
            log("  skipped: %s" % e)

    finish(b, load0, t_start)


def finish(b, load0, t_start):
    a, q = b.a, b.a.quick
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[:3]
    b.results["machine"] = {"nproc": os.cpu_count(), "cpu": cpu_model(), "load_before": load0,
                            "load_after": load1, "rsa2048_sign_ms": b.rsa_sign_ms,
                            "ed25519_sign_ms": b.ed_sign_ms, "duration_s": time.monotonic() - t_start,
                            "quick": q}
    report(b)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(b.results, f, indent=1)


def profile(b, outdir):
    """callgrind profiles of the mailwarden worker: inbound and RSA signing, 4 KiB.
    Counters are zeroed after a warm-up, so start-up (keys, policy) is not in them."""
    os.makedirs(outdir, exist_ok=True)
    b.keys()
    b.nsd()
    n = int(400 * b.a.scale)
    for name, kw in (("inbound", {"signed": True}), ("sign-rsa", {"auth": "alice"}),
                     ("inbound-64k", {"signed": True, "size": "64k"})):
        conf, sock = b.mw_conf("prof-" + name, ["rsa"])
        out = os.path.join(outdir, "callgrind.%s.%%p" % name)
        d = Daemon(b.h, "prof-" + name, ["valgrind", "--tool=callgrind", "--trace-children=yes",
                                          "--callgrind-out-file=" + out, b.mw, "serve", "-f", "-c", conf],
                   sock, "mailwarden")
        b.load(d, "warm-up " + name, 30, warm=0, conc=4, keep=False, **kw)
        for p in d.pids():
            sh(["callgrind_control", "-z", str(p)], check=False, timeout=60)
        b.load(d, "profile " + name, n, warm=0, conc=4, keep=False, **kw)
        d.proc.stop(timeout=60)
        files = [f for f in os.listdir(outdir) if f.startswith("callgrind.%s." % name)]
        # the worker is the file with the most instructions
        best, best_ir = None, -1
        for f in files:
            with open(os.path.join(outdir, f), errors="replace") as fh:
                txt = fh.read()
            m = re.search(r"^summary:\s*(\d+)", txt, re.M) or re.search(r"^totals:\s*(\d+)", txt, re.M)
            ir = int(m.group(1)) if m else 0
            if ir > best_ir:
                best, best_ir = f, ir
        if not best:
            continue
        _, ann = sh(["callgrind_annotate", "--inclusive=no", os.path.join(outdir, best)], timeout=300, check=False)
        _, inc = sh(["callgrind_annotate", "--inclusive=yes", os.path.join(outdir, best)], timeout=300, check=False)
        with open(os.path.join(outdir, name + ".self.txt"), "w") as f:
            f.write(ann)
        with open(os.path.join(outdir, name + ".inclusive.txt"), "w") as f:
            f.write(inc)
        print("== %s: %s, %.0f instructions per message (%d messages)" % (name, best, best_ir / n, n))
        print("\n".join(ann.splitlines()[:45]))


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def report(b):
    R, m = b.results, b.results["machine"]
    rsa = m["rsa2048_sign_ms"]
    P = print
    P("")
    P("mailwarden benchmark — %s, %d CPUs, load %s before / %s after, %.0f s%s"
      % (m["cpu"], m["nproc"], " ".join(m["load_before"]), " ".join(m["load_after"]), m["duration_s"],
         " (--quick)" if m["quick"] else ""))
    P("one raw RSA-2048 signature (openssl speed): %.3f ms; Ed25519: %s ms" % (rsa, fmt(m["ed25519_sign_ms"])))
    P("")
    P("Direct milter load (milterload, unix socket, 8 connections; CPU = daemon's utime+stime / messages)")
    P("%-34s %8s %7s %6s %6s %6s %8s %8s %6s" % ("filter", "msg/s", "CPU ms", "user", "sys", "x RSA", "p50 ms",
                                                 "p99 ms", "errors"))
    for label, r in R.items():
        if not isinstance(r, dict) or "latency_us" not in r:
            continue
        lt = r["latency_us"]["total"]
        P("%-34s %8.1f %7.3f %6.3f %6.3f %6.2f %8.2f %8.2f %6d"
          % (label, r["msgs_per_s"], r["cpu_ms"], r["cpu_user_ms"], r["cpu_sys_ms"], r["cpu_ms"] / rsa,
             lt["p50"] / 1000, lt["p99"] / 1000, r["errors"]))
    g = lambda k: R[k]["cpu_ms"] if k in R else None   # noqa: E731
    P("")
    P("Combined per message")
    comb = {
        "OpenDKIM verify + OpenDMARC 4k": (g("opendkim verify 4k") or 0) + (g("opendmarc 4k") or 0),
        "OpenDKIM verify + OpenDMARC 64k": (g("opendkim verify 64k") or 0) + (g("opendmarc 64k") or 0),
        "mw full work 4k (inbound+RL + sign RSA+RL)": (g("mw inbound +ratelimit 4k") or 0)
        + (g("mw sign RSA +ratelimit 4k") or 0),
        "mw full work 64k (inbound+RL + sign RSA+RL)": (g("mw inbound +ratelimit 64k") or 0)
        + (g("mw sign RSA +ratelimit 64k") or 0),
    }
    if g("mw inbound +ratelimit 4k") is None:
        comb = {}
    for sz in ("4k", "64k"):
        if comb and "mw baseline %s (outbound, unsigned)" % sz in R:
            comb["mw full work %s, one protocol pass" % sz] = (
                comb["mw full work %s (inbound+RL + sign RSA+RL)" % sz] - g("mw baseline %s (outbound, unsigned)" % sz))
    R["combined"] = comb
    for k, v in comb.items():
        P("  %-46s %7.3f ms  (%.2f x RSA sign)" % (k, v, v / rsa))
    P("")
    P("Latency per stage, p50 / p99 ms (4 KiB)")
    stages = ["connect", "helo", "mail", "rcpt", "headers+eoh", "body", "eom", "total"]
    P("%-34s " % "filter" + " ".join("%13s" % s for s in stages))
    for label in ("mw sign RSA-2048 4k", "mw sign RSA-2048 4k, inet socket", "mw sign dual 4k", "mw inbound 4k", "mw inbound +ratelimit 4k",
                  "opendkim sign 4k", "opendkim verify 4k", "opendmarc 4k"):
        if label in R:
            lu = R[label]["latency_us"]
            P("%-34s " % label + " ".join("%6.2f/%6.2f" % (lu[s]["p50"] / 1000, lu[s]["p99"] / 1000) for s in stages))
    rl = R.get("ratelimit")
    if rl:
        P("")
        P("Rate limits (Redis on loopback, 4 rules): off %.0f msg/s, on %.0f msg/s: cost %.1f %% (runs off %s, on %s)"
          % (rl["off"], rl["on"], 100 * (1 - rl["on"] / rl["off"]),
             " ".join("%.0f" % x for x in rl["runs"]["off"]), " ".join("%.0f" % x for x in rl["runs"]["on"])))
        P("  daemon CPU per message: off %.3f ms, on %.3f ms (%+.1f %%)"
          % (rl["cpu_ms"]["off"], rl["cpu_ms"]["on"], 100 * (rl["cpu_ms"]["on"] / rl["cpu_ms"]["off"] - 1)))
    if "peak_rss" in R:
        P("")
        P("Peak RSS, 200 connections open at once, 2k/16k/256k corpus: VmHWM summed over the daemon's")
        P("processes, and (dedup) the largest process's VmHWM plus the other processes' private memory")
        for k, v in R["peak_rss"].items():
            dd = v.get("hwm_dedup_kb")
            P("  %-38s before %7.1f MiB   peak %7.1f MiB%s" % (k, v["rss_before_kb"] / 1024, v["hwm_kb"] / 1024,
                                                          "   dedup %7.1f MiB" % (dd / 1024) if dd else ""))
    s = R.get("rss_series")
    if s and s["samples"]:
        P("")
        P("RSS over %d messages after warm-up (%s, %.0f msg/s, %d errors), every %d: %s kB"
          % (s["messages"], s["daemon"], s["msgs_per_s"], s["errors"], s["every"],
             " ".join(str(x[1]) for x in s["samples"])))
        xs = s["samples"]
        half = xs[len(xs) // 2:]
        if len(half) > 1:
            slope = (half[-1][1] - half[0][1]) / max(1, half[-1][0] - half[0][0]) * 100000
            P("  start %d kB, end %d kB; slope over the second half %+.1f kB per 100k messages"
              % (xs[0][1], xs[-1][1], slope))
            s["slope_kb_per_100k"] = slope
    if "postfix" in R:
        P("")
        P("Whole path: smtp-source -> Postfix -> smtp-sink (20 sessions, 4 KiB); inbound rows against Postfix alone,")
        P("outbound rows (signing, from 127.0.0.1 with an unsigned message) against Postfix alone in that scenario")
        for o in R["postfix"]:
            P("  %-34s %7.1f msg/s  %5.1f %% of Postfix alone   milter CPU %.3f ms/msg, Postfix CPU %.3f ms/msg"
              % (o["label"], o["msgs_per_s"], o["pct_of_alone"], o["milter_cpu_ms"], o["postfix_cpu_ms"]))
    P("")
    P("Targets (issue 9)")
    tg = []
    v = g("mw sign RSA-2048 4k")
    if v is not None:
        tg.append(("CPU per RSA-signed 4 KiB message <= 1.5 x raw RSA sign", v <= 1.5 * rsa,
                   "%.3f ms = %.2f x %.3f ms" % (v, v / rsa, rsa)))
    v = g("mw inbound 4k")
    if v is not None:
        tg.append(("inbound CPU per 4 KiB message <= 0.4 ms", v <= 0.4, "%.3f ms" % v))
    for sz, lim in (("4k", 0.9), ("64k", 1.1)) if v is not None else ():
        v = comb.get("mw full work %s, one protocol pass" % sz, comb["mw full work %s (inbound+RL + sign RSA+RL)" % sz])
        tg.append(("full work (verify+SPF+DMARC+RSA sign+RL) <= %.1f ms at %s" % (lim, sz), v <= lim, "%.3f ms" % v))
    if "postfix" in R:
        for o in R["postfix"][1:]:
            if o["label"].startswith("mailwarden"):
                tg.append(("Postfix path >= 60 %% of Postfix alone (%s)" % o["label"], o["pct_of_alone"] >= 60,
                           "%.1f %%" % o["pct_of_alone"]))
    if "peak_rss" in R:
        for k, v in R["peak_rss"].items():
            if k.startswith("mw-rsa (") or k.startswith("mw-rsa 20"):
                lim = 30 * 1024 if "(" in k else None
                if lim:
                    tg.append(("peak RSS <= 30 MiB at 200 connections, %s (summed VmHWM)" % k, v["hwm_kb"] <= lim,
                               "%.1f MiB" % (v["hwm_kb"] / 1024)))
                    if v.get("hwm_dedup_kb"):
                        tg.append(("peak RSS <= 30 MiB at 200 connections, %s (dedup)" % k,
                                   v["hwm_dedup_kb"] <= lim, "%.1f MiB" % (v["hwm_dedup_kb"] / 1024)))
    if s and "slope_kb_per_100k" in s:
        tg.append(("flat RSS after warm-up", abs(s["slope_kb_per_100k"]) < 1024,
                   "%+.0f kB per 100k messages" % s["slope_kb_per_100k"]))
    if rl:
        cost = 100 * (1 - rl["on"] / rl["off"])
        tg.append(("rate limits cost <= 10 % throughput (milterload)", cost <= 10, "%.1f %%" % cost))
    if "postfix" in R:
        # the same question on the whole path, where a message also costs
        # Postfix's own work (the milterload figure divides by a message that
        # costs the daemon only ~0.13 ms, so one loopback Redis round trip
        # weighs more there than it does for a postmaster)
        by = {o["label"]: o for o in R["postfix"]}
        a, b2 = by.get("mailwarden inbound"), by.get("mailwarden inbound +ratelimit")
        if a and b2 and a["msgs_per_s"]:
            cost = 100 * (1 - b2["msgs_per_s"] / a["msgs_per_s"])
            tg.append(("rate limits cost <= 10 % throughput (Postfix path)", cost <= 10, "%.1f %%" % cost))
    for name, ok, val in tg:
        P("  [%s] %-62s %s" % ("met" if ok else "NOT MET", name, val))
    R["targets"] = [{"target": n, "met": ok, "value": v} for n, ok, v in tg]
    for n in b.notes:
        P("note: " + n)


if __name__ == "__main__":
    main()
