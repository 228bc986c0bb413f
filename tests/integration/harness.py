#!/usr/bin/python3
"""Integration-test harness for mailwarden: the real daemon behind a real Postfix.

Run test scripts with Debian's /usr/bin/python3 (needs python3-dnslib and
python3-authres). Everything listens on loopback ports chosen at run time, plus one
host-side veth address of a private network namespace (TEST-NET addresses that never
leave the machine), so that Postfix sees a non-loopback client: libspf2 passes every
127.0.0.0/8 client, so SPF would never really be evaluated from loopback.

Building blocks (all owned by a Harness; everything is torn down on exit, failure,
SIGTERM/SIGINT or the watchdog firing):
  Harness.spawn()          child process, own session, log file, killed on exit
  Harness.start_nsd()      NSD serving zone texts (recipe §2)
  Harness.start_testdns()  tests/lib/testdns.py scriptable server (TIMEOUT/SERVFAIL/...)
  Harness.create_netns()   namespace + veth pair; NetNS.swaks() sends from inside it
  Harness.start_postfix()  private instance, smtpd_milters -> the daemon, maildir + smtp-sink;
                           submission=True adds a SASL port (fakedovecotauth.py) -> pf.submit()
  Harness.start_daemon()   `mailwarden serve -f ...` with stderr captured
  swaks(), Message, ar_headers(), parse_ar()   sending and reading delivered mail
  StepClient (smtpstep.py) an SMTP session paused inside DATA; Background: a send in a thread
  run_test(fn, timeout)    wrapper: Checker + Harness + exit code 0/1/77
Environment: MW_BINARY, MW_SOURCE_DIR, MW_BUILD_DIR (set by ctest), MW_KEEP_TMP=1
keeps the scratch directory for post-mortem. A separate reaper process kills every
process group and namespace the harness created if the harness itself is SIGKILLed.
"""
import atexit, json, os, queue, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time, traceback

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("MW_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("MW_BUILD_DIR") or "/tmp/build-main"
MW_BINARY = os.environ.get("MW_BINARY") or os.path.join(BUILD_DIR, "mailwarden")
AUTHSERV_ID = "mx.test.example"
POSTFIX_MASTER = os.path.join(subprocess.run(["postconf", "-h", "daemon_directory"], capture_output=True,
                                             text=True).stdout.strip() or "/usr/lib/postfix/sbin", "master")


class Skip(Exception):
    """Raise to end a test with exit status 77 (ctest SKIP)."""


class Checker:
    """Counts and prints one line per check."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("PASS %s" % name, flush=True)
        else:
            self.failed += 1
            print("FAIL %s%s" % (name, (": " + str(detail)) if detail else ""), flush=True)
        return bool(ok)

    def equal(self, name, got, want):
        return self.check(name, got == want, "got %r, want %r" % (got, want))


# ---------------------------------------------------------------- utilities

def free_port(udp_too=False):
    """A port free on 127.0.0.1 (TCP, and UDP too when asked)."""
    for _ in range(200):
        t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
        try:
            if udp_too:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                finally:
                    u.close()
            return port
        finally:
            t.close()
    raise RuntimeError("no free port")


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    """Wait until host:port accepts TCP connections; fail early if proc died."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            raise RuntimeError("%s exited (%s) before listening on %d:\n%s"
                               % (proc.name, proc.returncode, port, proc.log_tail()))
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listening on %s:%d after %.0fs" % (host, port, timeout))


def wait_for(pred, timeout=10.0, step=0.05):
    """Poll pred() until it returns something truthy; return that or None."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)



# Reaper: a small separate process that outlives a SIGKILLed harness. The harness
# tells it, over a pipe, each process group and namespace it creates; when the pipe
# closes without "done" (the harness died), it kills those groups and deletes the
# namespaces. Normal cleanup happens in Harness.cleanup() and then sends "done".
REAPER = r"""
import os, signal, subprocess, sys
os.setsid()
pgids, nets = [], []
for line in sys.stdin:
    kind, _, arg = line.strip().partition(" ")
    if kind == "done":
        sys.exit(0)
    (pgids if kind == "pgid" else nets).append(arg)
for g in reversed(pgids):
    try:
        os.killpg(int(g), signal.SIGKILL)
    except OSError:
        pass
for n in nets:
    subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=20)
"""


class Reaper:
    def __init__(self):
        self.p = subprocess.Popen(["/usr/bin/python3", "-c", REAPER], stdin=subprocess.PIPE, text=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def tell(self, kind, arg):
        try:
            self.p.stdin.write("%s %s\n" % (kind, arg)); self.p.stdin.flush()
        except OSError:
            pass

    def done(self):
        self.tell("done", "")
        try:
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait()


class Proc:
    """A child process of the harness (own session so its whole group can be killed)."""

    def __init__(self, name, argv, log, env=None, cwd=None):
        self.name, self.argv, self.log = name, argv, log
        self.logf = open(log, "ab")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                      stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                      start_new_session=True)
        self.pid = self.popen.pid

    @property
    def returncode(self):
        return self.popen.returncode

    def alive(self):
        return self.popen.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        """waitpid() with a timeout; returns the exit status or None if still running."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal, wait, then SIGKILL the process group if it is still there."""
        if self.alive():
            self.send_signal(sig)
            if self.wait(timeout) is None:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait()
        try:                               # stray grandchildren of the group
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.logf.close()
        return self.popen.returncode

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])


def run(argv, timeout=60, check=True, **kw):
    """subprocess.run with a hard timeout (kills the whole process group)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        raise RuntimeError("timeout after %ss: %s\n%s" % (timeout, " ".join(argv), out.decode("utf-8", "replace")))
    out = out.decode("utf-8", "replace")
    if check and p.returncode != 0:
        raise RuntimeError("exit %d: %s\n%s" % (p.returncode, " ".join(argv), out))
    return p.returncode, out


# ---------------------------------------------------------------- mail reading

def parse_headers(raw):
    """Unfolded [(name, value)] of the header block, in order."""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    head = text.split("\n\n", 1)[0]
    out = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        elif ":" in line:
            n, v = line.split(":", 1)
            out.append((n, v.strip()))
    return out


class Message:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.raw = f.read()
        self.headers = parse_headers(self.raw)

    def get_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def index(self, name, pred=lambda v: True):
        """Position of the first header `name` whose value satisfies pred, or None."""
        for i, (n, v) in enumerate(self.headers):
            if n.lower() == name.lower() and pred(v):
                return i
        return None


def ar_authserv_id(value):
    return re.split(r"[;\s]", value.strip(), 1)[0]


def ar_headers(msg, authserv_id=AUTHSERV_ID):
    """A-R header values claiming authserv_id (case-insensitive)."""
    return [v for v in msg.get_all("Authentication-Results")
            if ar_authserv_id(v).lower() == authserv_id.lower()]


def parse_ar(value):
    """Parse with python3-authres; returns (header, [(method, result, {ptype.prop: value})])."""
    import authres
    h = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
    res = [(r.method, r.result, {"%s.%s" % (p.type, p.name): p.value for p in r.properties})
           for r in h.results]
    return h, res


# ---------------------------------------------------------------- sending

class SendResult:
    def __init__(self, rc, transcript):
        self.rc, self.transcript = rc, transcript
        self.replies = [l[4:].strip() for l in transcript.splitlines() if l.startswith(("<-  ", "<** "))]
        self.final = ""                  # last reply before QUIT (the end-of-data verdict)
        for line in transcript.splitlines():
            if line.startswith(" -> QUIT"):
                break
            if line.startswith(("<-  ", "<** ")):
                self.final = line[4:].strip()
        m = re.search(r"queued as ([0-9A-Za-z]+)", transcript)
        self.queue_id = m.group(1) if m else None

    @property
    def code(self):
        return self.final[:3]

    def __repr__(self):
        return "SendResult(rc=%d, final=%r)" % (self.rc, self.final)


def swaks(server, port, mail_from, rcpt, helo="client.example.test", headers=(), body="test body",
          data=None, netns=None, timeout=90, extra=()):
    """Send one message with swaks. data: path of a raw message file (replaces headers/body).
    netns: run inside that NetNS so the client address is not loopback."""
    argv = ["swaks", "--server", "%s:%d" % (server, port), "--from", mail_from or "<>", "--to", rcpt,
            "--helo", helo, "--timeout", "%ds" % (timeout - 5)]
    if data:
        argv += ["--data", "@" + data]
    else:
        for h in headers:
            argv += ["--header", h]
        argv += ["--body", body]
    argv += list(extra)
    if netns is not None:
        argv = netns.wrap(argv)
    rc, out = run(argv, timeout=timeout, check=False)
    return SendResult(rc, out)


class Background(threading.Thread):
    """Run fn(*args, **kw) in a thread (e.g. a send that will hang on a slow lookup);
    .join_result(timeout) returns its value or re-raises its exception."""

    def __init__(self, fn, *args, **kw):
        super().__init__(daemon=True)
        self.fn, self.args, self.kw, self.result, self.error = fn, args, kw, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn(*self.args, **self.kw)
        except BaseException as e:
            self.error = e

    def join_result(self, timeout):
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError("background task still running after %ss" % timeout)
        if self.error:
            raise self.error
        return self.result


class StepClient:
    """smtpstep.py (optionally inside a namespace): an SMTP session paused after the
    message headers. wait_paused(), then resume() -> final reply line."""

    def __init__(self, h, host, port, mail_from, rcpt, token, helo="client.example.test", netns=None):
        argv = ["/usr/bin/python3", os.path.join(HERE, "smtpstep.py"), host, str(port), helo,
                mail_from, rcpt, token]
        if netns is not None:
            argv = netns.wrap(argv)
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        h.cleanups.append(self.close)
        self.lines, self.q = [], queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        for line in self.p.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def _until(self, prefix, timeout):
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def wait_paused(self, timeout=30):
        return self._until("PAUSED", timeout) is not None

    def resume(self, timeout=90):
        self.p.stdin.write("go\n"); self.p.stdin.flush()
        line = self._until("FINAL ", timeout)
        return line[6:] if line else None

    def close(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait()


# ---------------------------------------------------------------- network namespace

class NetNS:
    def __init__(self, name, host_addr, ns_addr, veth):
        self.name, self.host_addr, self.ns_addr, self.veth = name, host_addr, ns_addr, veth

    def wrap(self, argv):
        return ["ip", "netns", "exec", self.name] + list(argv)


def _cleanup_stale_netns():
    """Remove mwtest-<pid> namespaces left by harness runs that were SIGKILLed."""
    try:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    except Exception:
        return
    for m in re.finditer(r"^mwtest-(\d+)\b", out, re.M):
        pid = int(m.group(1))
        if not os.path.exists("/proc/%d" % pid):
            subprocess.run(["ip", "netns", "del", "mwtest-%d" % pid], capture_output=True, timeout=10)


# ---------------------------------------------------------------- the harness

ZONE_HEAD = """$ORIGIN {origin}.
$TTL 60
@ IN SOA ns1.{origin}. hostmaster.{origin}. 1 3600 600 86400 60
@ IN NS ns1.{origin}.
ns1 IN A 127.0.0.1
"""


class Harness:
    def __init__(self, name="mwtest"):
        self.tmp = tempfile.mkdtemp(prefix="mw-it-%s." % name)
        os.chmod(self.tmp, 0o755)         # postfix and nobody (virtual, smtp-sink) traverse it
        self.procs, self.cleanups, self.failed = [], [], False
        self.reaper = Reaper()
        self._done = False
        atexit.register(self.cleanup)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def spawn(self, name, argv, **kw):
        os.makedirs(self.path("logs"), exist_ok=True)
        p = Proc(name, argv, self.path("logs", name + ".log"), **kw)
        self.reaper.tell("pgid", p.pid)
        self.procs.append(p)
        return p

    def cleanup(self):
        if self._done:
            return
        self._done = True
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:
                print("cleanup: %s" % e, file=sys.stderr)
        for p in reversed(self.procs):
            try:
                p.stop(timeout=5)
            except Exception as e:
                print("cleanup %s: %s" % (p.name, e), file=sys.stderr)
        self.reaper.done()
        if os.environ.get("MW_KEEP_TMP"):
            print("kept scratch dir %s" % self.tmp, file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- DNS
    def start_nsd(self, zones, complete=()):
        """zones: {origin: records text}; SOA/NS are added, except for the origins listed in
        complete, whose text is a whole zone file (e.g. one signed with ldns-signzone).
        Returns the port (127.0.0.1)."""
        d = self.path("nsd-%d" % len(self.procs))
        os.makedirs(d)
        port = free_port(udp_too=True)
        conf = ["server:", "  ip-address: 127.0.0.1", "  port: %d" % port, '  username: ""',
                '  chroot: ""', '  zonesdir: "%s"' % d, '  pidfile: "%s/nsd.pid"' % d,
                '  database: ""', '  zonelistfile: "%s/zone.list"' % d,
                '  xfrdfile: "%s/xfrd.state"' % d, '  xfrdir: "%s"' % d,
                '  logfile: "%s/nsd.log"' % d, "  server-count: 1", "  verbosity: 1",
                "remote-control:", "  control-enable: no"]
        # Serve every parent of the test zones too (empty, SOA/NS only), so a
        # name above them (e.g. _dmarc.test during a DMARC tree walk) gets
        # NXDOMAIN as in the real DNS, not REFUSED (which resolvers turn into
        # SERVFAIL, i.e. a temporary error).
        zones = dict(zones)
        for origin in list(zones):
            labels = origin.rstrip(".").split(".")
            for i in range(1, len(labels)):
                parent = ".".join(labels[i:])
                if parent not in zones and parent + "." not in zones:
                    zones[parent] = ""
        for origin, text in zones.items():
            origin = origin.rstrip(".")
            with open(os.path.join(d, origin + ".zone"), "w") as f:
                full = origin in [c.rstrip(".") for c in complete]
                f.write((text if full else ZONE_HEAD.format(origin=origin) + text) + "\n")
            conf += ["zone:", "  name: %s" % origin, "  zonefile: %s.zone" % origin]
        with open(os.path.join(d, "nsd.conf"), "w") as f:
            f.write("\n".join(conf) + "\n")
        run(["nsd-checkconf", d + "/nsd.conf"], timeout=20)
        for origin in zones:
            run(["nsd-checkzone", origin.rstrip("."), "%s/%s.zone" % (d, origin.rstrip("."))], timeout=20)
        p = self.spawn("nsd", ["nsd", "-d", "-c", d + "/nsd.conf"])
        first = next(iter(zones)).rstrip(".")
        if not wait_for(lambda: dns_query(port, first, "SOA") is not None or not p.alive(), 10):
            raise RuntimeError("NSD does not answer:\n" + p.log_tail())
        if not p.alive():
            raise RuntimeError("NSD exited:\n" + p.log_tail())
        return port

    def start_testdns(self, zone, verbose=True):
        """Start tests/lib/testdns.py with zone = {name: [entries]} (see its docstring:
        {"TXT": ...}, {"A": ...}, "TIMEOUT", "SERVFAIL", ...). Returns (port, Proc);
        rewrite the zone file and SIGHUP the Proc to change answers."""
        script = os.path.join(SOURCE_DIR, "tests", "lib", "testdns.py")
        if not os.path.exists(script):
            raise Skip("%s not available" % script)
        n = len(self.procs)
        zf, pf = self.path("testdns-%d.json" % n), self.path("testdns-%d.port" % n)
        with open(zf, "w") as f:
            json.dump(zone, f)
        p = self.spawn("testdns-%d" % n, ["/usr/bin/python3", script, "--port", "0", "--zone", zf,
                                           "--portfile", pf, "--ttl", "5", "--negttl", "5"]
                       + (["-v"] if verbose else []))
        if not wait_for(lambda: os.path.exists(pf) or not p.alive(), 10) or not p.alive():
            raise RuntimeError("testdns did not start:\n" + p.log_tail())
        with open(pf) as f:
            p.port = int(f.read())
        p.zone_file = zf
        return p.port, p

    # ---- network namespace
    def create_netns(self):
        if os.geteuid() != 0:
            raise Skip("network namespaces need root")
        _cleanup_stale_netns()
        pid = os.getpid()
        name, veth_h, veth_n = "mwtest-%d" % pid, "mwh%d" % pid, "mwn%d" % pid
        try:
            run(["ip", "netns", "add", name], timeout=20)
        except Exception as e:
            raise Skip("cannot create a network namespace: %s" % e)
        self.cleanups.append(lambda: run(["ip", "netns", "del", name], timeout=20, check=False))
        self.reaper.tell("netns", name)
        try:
            _, used = run(["ip", "-4", "-o", "addr"], timeout=10)
            # Namespaces take /30s from 198.51.100.0/24 only. Tests write fixed addresses
            # from 192.0.2.0/24 into their zones (A records, ip4: terms that must NOT
            # match the client); a client drawn from that range once matched such a term
            # (192.0.2.250 in test_spf_conformance_postfix) and turned an SPF fail into a pass.
            # Extra client addresses (add_alt_address) come from 203.0.113.0/24.
            slots = [("198.51.100", i) for i in range(0, 256, 4)]
            k = pid % len(slots)
            for net, base in slots[k:] + slots[:k]:
                host, cli = "%s.%d" % (net, base + 1), "%s.%d" % (net, base + 2)
                if (" %s/" % host) not in used and (" %s/" % cli) not in used:
                    break
            else:
                raise Skip("no free TEST-NET /30 for the namespace")
            run(["ip", "link", "add", veth_h, "type", "veth", "peer", "name", veth_n], timeout=20)
            self.cleanups.append(lambda: run(["ip", "link", "del", veth_h], timeout=20, check=False))
            run(["ip", "link", "set", veth_n, "netns", name], timeout=20)
            run(["ip", "addr", "add", host + "/30", "dev", veth_h], timeout=20)
            run(["ip", "link", "set", veth_h, "up"], timeout=20)
            for cmd in (["ip", "addr", "add", cli + "/30", "dev", veth_n], ["ip", "link", "set", veth_n, "up"],
                        ["ip", "link", "set", "lo", "up"]):
                run(["ip", "netns", "exec", name] + cmd, timeout=20)
        except Skip:
            raise
        except Exception as e:
            raise Skip("cannot set up the veth pair: %s" % e)
        ns = NetNS(name, host, cli, veth_h)
        # the address becomes usable once DAD-free IPv4 is up; make sure the ns reaches us
        probe = socket.socket(); probe.bind((host, 0)); probe.listen(1)
        ok = run(ns.wrap(["/usr/bin/python3", "-c", "import socket; socket.create_connection(('%s', %d), 5)"
                          % (host, probe.getsockname()[1])]), timeout=20, check=False)[0] == 0
        probe.close()
        if not ok:
            raise Skip("namespace %s cannot reach %s" % (name, host))
        return ns

    # ---- Postfix
    def start_postfix(self, milter_port, netns=None, default_action="tempfail", main_extra=None,
                      submission=False):
        """submission=True adds a SASL submission listener (pf.sub_port, any user with
        password "secret", {daemon_name}=ORIGINATING) backed by fakedovecotauth.py."""
        pf = Postfix(self, milter_port, netns, default_action, main_extra or {}, submission)
        pf.start()
        return pf

    # ---- the daemon
    def start_daemon(self, dns=(), port=None, args=(), name="mailwarden", authserv_id=AUTHSERV_ID):
        if not os.access(MW_BINARY, os.X_OK):
            raise Skip("daemon binary %s not built" % MW_BINARY)
        port = port or free_port()
        argv = [MW_BINARY, "serve", "-f", "--socket", "inet:%d@127.0.0.1" % port]
        for d in dns:
            argv += ["--dns", "127.0.0.1@%d" % d]
        if authserv_id:
            argv += ["--authserv-id", authserv_id]
        argv += list(args)
        p = self.spawn("%s-%d" % (name, len(self.procs)), argv)
        p.port = port
        wait_port(port, proc=p, timeout=15)
        return p


def dns_query(port, name, qtype="A", timeout=0.3):
    """One query to 127.0.0.1:port; returns the dnslib reply or None."""
    from dnslib import DNSRecord
    try:
        return DNSRecord.parse(DNSRecord.question(name, qtype).send("127.0.0.1", port, timeout=timeout))
    except Exception:
        return None


MASTER_CF = """\
{listen}
pickup     unix  n  -  n  60   1  pickup
cleanup    unix  n  -  n  -    0  cleanup
qmgr       unix  n  -  n  300  1  qmgr
rewrite    unix  -  -  n  -    -  trivial-rewrite
bounce     unix  -  -  n  -    0  bounce
defer      unix  -  -  n  -    0  bounce
trace      unix  -  -  n  -    0  bounce
verify     unix  -  -  n  -    1  verify
flush      unix  n  -  n  1000? 0 flush
proxymap   unix  -  -  n  -    -  proxymap
proxywrite unix  -  -  n  -    1  proxymap
smtp       unix  -  -  n  -    -  smtp
relay      unix  -  -  n  -    -  smtp
showq      unix  n  -  n  -    -  showq
error      unix  -  -  n  -    -  error
retry      unix  -  -  n  -    -  error
discard    unix  -  -  n  -    -  discard
local      unix  -  n  n  -    -  local
virtual    unix  -  n  n  -    -  virtual
anvil      unix  -  -  n  -    1  anvil
scache     unix  -  -  n  -    1  scache
postlog    unix-dgram n - n -  1  postlogd
"""


class Postfix:
    """Private Postfix instance (recipe §3). Mail to *@dest.test lands in maildir
    self.maildir; mail to *@sink.test (and any other domain, e.g. relayed from the
    submission port) goes to an smtp-sink that dumps to self.sinkdir."""

    def __init__(self, h, milter_port, netns, default_action, main_extra, submission=False):
        self.h, self.netns, self.submission = h, netns, submission
        self.sub_port = free_port() if submission else None
        self.auth_port = free_port() if submission else None
        self.dir = h.path("pf")
        self.etc, self.maildir, self.sinkdir = self.dir + "/etc", self.dir + "/mail/sink", h.path("sink")
        self.port, self.sink_port = free_port(), free_port()
        self.addrs = ["127.0.0.1"] + ([netns.host_addr] if netns else [])
        for sub in ("etc", "spool", "data", "mail"):
            os.makedirs(self.dir + "/" + sub, exist_ok=True)
        os.makedirs(self.sinkdir, exist_ok=True)
        shutil.chown(self.dir + "/data", "postfix")
        shutil.chown(self.dir + "/mail", "nobody", "nogroup")
        shutil.chown(self.sinkdir, "nobody")
        self.main = {
            "compatibility_level": "3.6", "config_directory": self.etc,
            "queue_directory": self.dir + "/spool", "data_directory": self.dir + "/data",
            "mail_owner": "postfix", "setgid_group": "postdrop", "syslog_name": "postfix-mwtest",
            "maillog_file": self.dir + "/maillog", "maillog_file_prefixes": h.tmp,
            "myhostname": AUTHSERV_ID, "mydomain": "test.example", "myorigin": "$myhostname",
            "mydestination": "", "inet_interfaces": ", ".join(self.addrs), "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8", "alias_maps": "", "alias_database": "",
            "local_recipient_maps": "", "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_milters": "inet:127.0.0.1:%d" % milter_port,
            "milter_default_action": default_action, "milter_protocol": "6",
            "milter_connect_macros": "j {daemon_name} {daemon_addr} {daemon_port} v _ {client_addr} "
                                     "{client_name} {client_port} {client_ptr}",
            "milter_helo_macros": "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
            "milter_mail_macros": "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} "
                                  "{mail_mailer} {daemon_name} {client_addr}",
            "milter_end_of_data_macros": "i {daemon_name} {auth_authen} {client_addr}",
            "virtual_mailbox_domains": "dest.test", "virtual_mailbox_base": self.dir + "/mail",
            "virtual_mailbox_maps": "static:sink/", "virtual_uid_maps": "static:65534",
            "virtual_gid_maps": "static:65534", "relay_domains": "sink.test",
            "transport_maps": "inline:{ sink.test=smtp:[127.0.0.1]:%d }" % self.sink_port,
            "default_transport": "smtp:[127.0.0.1]:%d" % self.sink_port,   # outbound mail -> sink too
            "delay_warning_time": "0", "queue_run_delay": "30s",
            "smtpd_sasl_type": "dovecot", "smtpd_sasl_path": "inet:127.0.0.1:%d" % (self.auth_port or 1),
            "smtpd_sasl_auth_enable": "no",
        }
        self.main.update(main_extra)

    def _write(self):
        with open(self.etc + "/main.cf", "w") as f:
            for k, v in self.main.items():
                f.write("%s = %s\n" % (k, v))
        listen = "\n".join("%s:%d inet n - n - - smtpd" % (a, self.port) for a in self.addrs)
        if self.submission:
            for a in self.addrs:
                listen += ("\n%s:%d inet n - n - - smtpd\n  -o syslog_name=postfix-mwtest/submission\n"
                           "  -o smtpd_sasl_auth_enable=yes\n  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
                           "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
                           "  -o milter_macro_daemon_name=ORIGINATING\n  -o cleanup_service_name=subcleanup"
                           % (a, self.sub_port))
            listen += "\nsubcleanup unix n - n - 0 cleanup\n  -o milter_macro_daemon_name=ORIGINATING"
        with open(self.etc + "/master.cf", "w") as f:
            f.write(MASTER_CF.format(listen=listen))

    def start(self):
        self._write()
        self.h.spawn("smtp-sink", ["smtp-sink", "-u", "nobody", "-d", self.sinkdir + "/%Y%m%d%H%M%S.",
                                   "127.0.0.1:%d" % self.sink_port, "64"])
        wait_port(self.sink_port)
        if self.submission:
            auth = self.h.spawn("dovecot-auth", ["/usr/bin/python3", os.path.join(HERE, "fakedovecotauth.py"),
                                                 str(self.auth_port), "secret"])
            wait_port(self.auth_port, proc=auth)
        run(["postfix", "-c", self.etc, "check"], timeout=60)
        # master -d: stays in the foreground as our child (postfix start-fg would put a
        # shell in between); `postfix stop` or SIGTERM to it stops every service
        self.proc = self.h.spawn("postfix", [POSTFIX_MASTER, "-c", self.etc, "-d"])
        self.h.cleanups.append(self.stop)
        for a in self.addrs:
            wait_port(self.port, host=a, proc=self.proc, timeout=20)

    def stop(self):
        if self.proc.alive():
            run(["postfix", "-c", self.etc, "stop"], timeout=30, check=False)
            if self.proc.wait(15) is None:
                self.proc.stop()

    def set(self, **params):
        """Change main.cf parameters and `postfix reload` (new smtpd processes use them)."""
        self.main.update(params)
        self._write()
        run(["postfix", "-c", self.etc, "reload"], timeout=30)
        time.sleep(0.5)

    def log(self):
        try:
            with open(self.dir + "/maillog", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def send(self, mail_from, rcpt, external=True, **kw):
        """swaks to this instance; external=True sends from the namespace address."""
        if external and self.netns:
            return swaks(self.netns.host_addr, self.port, mail_from, rcpt, netns=self.netns, **kw)
        return swaks("127.0.0.1", self.port, mail_from, rcpt, **kw)

    def submit(self, user, mail_from, rcpt, password="secret", external=True, **kw):
        """SASL (PLAIN) submission through the submission listener."""
        extra = ["--auth", "PLAIN", "--auth-user", user, "--auth-password", password] + list(kw.pop("extra", ()))
        host, ns = (self.netns.host_addr, self.netns) if external and self.netns else ("127.0.0.1", None)
        return swaks(host, self.sub_port, mail_from, rcpt, netns=ns, extra=extra, **kw)

    def messages(self):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            if os.path.isdir(d):
                out += [Message(os.path.join(d, n)) for n in sorted(os.listdir(d))]
        if os.path.isdir(self.sinkdir):
            out += [Message(os.path.join(self.sinkdir, n)) for n in sorted(os.listdir(self.sinkdir))]
        return out

    def find(self, token):
        """Delivered messages (maildir and smtp-sink) whose raw text contains token."""
        return [m for m in self.messages() if token.encode() in m.raw]

    def wait_delivered(self, token, timeout=15):
        found = wait_for(lambda: self.find(token), timeout)
        return found[0] if found else None

    def flush(self):
        run(["postqueue", "-c", self.etc, "-f"], timeout=30, check=False)

    def queue(self):
        return run(["postqueue", "-c", self.etc, "-p"], timeout=30, check=False)[1]


# ---------------------------------------------------------------- driver

def run_test(fn, name, timeout=600):
    """Run fn(h, chk) with a watchdog; print the summary and exit 0/1/77."""
    chk, h = Checker(), Harness(name)

    def on_alarm(sig, frm):
        raise TimeoutError("test exceeded %ds" % timeout)

    def on_term(sig, frm):
        raise SystemExit("killed by signal %d" % sig)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(timeout)
    rc = None
    try:
        fn(h, chk)
    except Skip as e:
        print("SKIP: %s" % e, flush=True)
        rc = SKIP
    except BaseException as e:
        traceback.print_exc()
        chk.check("test ran to completion", False, "%s: %s" % (type(e).__name__, e))
    finally:
        signal.alarm(0)
        if chk.failed and rc is None:
            dump_logs(h)
        h.cleanup()
    print("%d passed, %d failed" % (chk.passed, chk.failed), flush=True)
    sys.exit(rc if rc is not None else (1 if chk.failed else 0))


def dump_logs(h, n=40):
    for p in h.procs:
        try:
            tail = p.log_tail(n)
        except Exception:
            continue
        if tail.strip():
            print("---- last lines of %s (%s)\n%s" % (p.name, p.log, tail), file=sys.stderr)
    ml = os.path.join(h.tmp, "pf", "maillog")
    if os.path.exists(ml):
        with open(ml, errors="replace") as f:
            print("---- last lines of postfix maillog\n%s" % "".join(f.readlines()[-n:]), file=sys.stderr)
