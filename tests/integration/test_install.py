#!/usr/bin/python3
"""The production path: install, start daemonised, log, reload, stop (issue 16).

As root (skipped with 77 otherwise), in a private mount namespace whose /dev/log is a
unix datagram socket this test reads (no syslogd, no systemd needed):
  - `cmake --install BUILD --prefix ROOT` installs the binary, man pages, policies,
    the sample config, units generated for the configured prefix, sysusers, tmpfiles,
    logrotate and the MTA snippets; a second install keeps an edited config;
  - `sbin/mailwarden config-test -c etc/mailwarden/test.conf` (relative) passes;
  - `sbin/mailwarden serve -c etc/mailwarden/test.conf` (relative, daemonised,
    log.target left at its default, auto) exits 0 only once the milter listens (the
    port is connectable the moment it returns), the pid file names a running
    supervisor whose cwd is /, its worker runs as the configured user, and the
    start-up lines (the configuration file read, "listening") reach syslog with the
    right priorities;
  - a SIGHUP with a broken config is refused: "reload refused" with FILE:LINE logged
    at error priority, mailwarden_config_reloads_total{result="failure"} counts it,
    the same worker keeps serving;
  - a second `serve` on the same port exits 1 with the reason on stderr and in the log;
  - SIGTERM stops it and removes the pid file.
Without the fixes: serve with a relative -c exits 0 and nothing runs, and a daemon
logs nothing (stderr is /dev/null, the default target was stderr).
"""
import os, pwd, re, shutil, signal, socket, subprocess, sys, threading, time, urllib.request
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

USER, GROUP = "nobody", "nogroup"

# In a private mount namespace: a tmpfs over /dev with the few devices a
# daemon uses bound back in, and /dev/log pointing at the test's socket.
NS_SETUP = r"""
set -e
mkdir -p "$T/olddev"
mount --bind /dev "$T/olddev"
mount -t tmpfs -o mode=0755 tmpfs /dev
for n in null zero urandom random full; do : > /dev/$n; mount --bind "$T/olddev/$n" /dev/$n; done
ln -s "$T/log.sock" /dev/log
cd "$ROOT"
exec "$@"
"""


class Syslog:
    """Datagrams from /dev/log: (priority, text)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)             # the worker logs as nobody
        self.lines, self.lock = [], threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            m = re.match(rb"<(\d+)>(.*)", data, re.S)
            if m:
                with self.lock:
                    self.lines.append((int(m.group(1)) & 7, m.group(2).decode("utf-8", "replace")))

    def find(self, pat, start=0):
        with self.lock:
            for i, (prio, text) in enumerate(self.lines[start:], start):
                if re.search(pat, text):
                    return i, prio, text
        return None

    def wait(self, pat, start=0, timeout=30):
        return H.wait_for(lambda: self.find(pat, start), timeout=timeout)

    def count(self):
        with self.lock:
            return len(self.lines)

    def dump(self):
        with self.lock:
            return "\n".join("<%d>%s" % l for l in self.lines[-30:])


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    if int(f.read().split(")")[-1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[2])
    return None


def metric(port, name, labels):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    m = re.search(r"^%s\{%s\} (\d+)" % (re.escape(name), re.escape(labels)), body, re.M)
    return int(m.group(1)) if m else 0


def test(h, chk):
    if os.geteuid() != 0:
        raise H.Skip("needs root (mount namespace, privilege drop)")
    if not shutil.which("unshare") or not os.path.isdir(H.BUILD_DIR):
        raise H.Skip("needs unshare(1) and the build directory")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        raise H.Skip("no user %s" % USER)

    root = h.path("root")
    rc, out = H.run(["cmake", "--install", H.BUILD_DIR, "--prefix", root], timeout=120, check=False)
    chk.equal("cmake --install exits 0", rc, 0)
    want = ["sbin/mailwarden", "share/man/man8/mailwarden.8", "share/man/man5/mailwarden.conf.5",
            "share/mailwarden/policies/default.conf", "etc/mailwarden/mailwarden.conf",
            "share/mailwarden/mailwarden.conf.sample", "lib/systemd/system/mailwarden.service",
            "lib/systemd/system/mailwarden-report.timer", "lib/systemd/system/mailwarden-failure-report.timer",
            "lib/systemd/system/mailwarden-failure-report.service", "lib/sysusers.d/mailwarden.conf",
            "lib/tmpfiles.d/mailwarden.conf", "etc/logrotate.d/mailwarden",
            "share/mailwarden/sendmail/mailwarden.m4", "share/mailwarden/postfix/main.cf.snippet",
            "share/mailwarden/exim/mailwarden-data.acl"]
    missing = [w for w in want if not os.path.exists(os.path.join(root, w))]
    chk.check("installed: binary, man pages, policies, config, units, sysusers, tmpfiles, "
              "logrotate, MTA snippets", not missing, "missing %s" % missing)
    # the unit runs the binary of the configured prefix, with its config
    prefix = None
    with open(os.path.join(H.BUILD_DIR, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith("CMAKE_INSTALL_PREFIX:"):
                prefix = line.split("=", 1)[1].strip()
    def slurp(rel):
        try:
            with open(os.path.join(root, rel)) as f:
                return f.read()
        except OSError:
            return ""
    unit = slurp("lib/systemd/system/mailwarden.service")
    m = re.search(r"^ExecStart=(\S+) serve -f -c (\S+)", unit, re.M)
    chk.check("unit ExecStart runs %s/sbin/mailwarden" % prefix,
              m and m.group(1) == "%s/sbin/mailwarden" % prefix, m and m.group(0))
    chk.check("unit's ExecReload runs config-test on the same file",
              m and ("ExecReload=%s config-test -c %s" % (m.group(1), m.group(2))) in unit, unit[-400:])
    m4 = slurp("share/mailwarden/sendmail/mailwarden.m4")
    chk.check("mailwarden.m4 names its installed path",
              "%s/share/mailwarden/sendmail/mailwarden.m4" % prefix in m4 and "/usr/share/doc" not in m4,
              m4.splitlines()[2:3])

    # the sample config survives a re-install once edited
    conf_main = os.path.join(root, "etc/mailwarden/mailwarden.conf")
    os.makedirs(os.path.dirname(conf_main), exist_ok=True)
    with open(conf_main, "a") as f:
        f.write("# edited by the postmaster\n")
    H.run(["cmake", "--install", H.BUILD_DIR, "--prefix", root], timeout=120, check=False)
    with open(conf_main) as f:
        chk.check("re-install keeps an existing mailwarden.conf", "edited by the postmaster" in f.read())

    port, mport = H.free_port(), H.free_port()
    pid_file = h.path("run", "mailwarden.pid")
    os.makedirs(os.path.dirname(pid_file))
    good = ('socket = "inet:%d@127.0.0.1";\npid_file = "%s";\nuser = "%s";\ngroup = "%s";\n'
            'authserv_id = "mx.test.example";\nmetrics = { listen = "127.0.0.1:%d"; };\n'
            % (port, pid_file, USER, GROUP, mport))
    conf = os.path.join(root, "etc/mailwarden/test.conf")
    with open(conf, "w") as f:
        f.write(good)
    rel = "etc/mailwarden/test.conf"
    mw = os.path.join(root, "sbin/mailwarden")

    rc, out = H.run([mw, "--version"], timeout=30, check=False)
    chk.check("installed mailwarden --version", rc == 0 and out.startswith("mailwarden "), out)
    rc, out = H.run([mw, "config-test", "-c", rel], timeout=60, check=False, cwd=root)
    chk.check("config-test -c RELATIVE passes", rc == 0, out.strip()[-300:])

    log = Syslog(h.path("log.sock"))
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")}
    env.update(T=h.tmp, ROOT=root)

    def in_ns(argv, timeout=60):
        """Run argv in the namespace; (exit status, stdout+stderr).  Output goes to a
        file: a daemon that never reports back must not hang the test on a pipe."""
        outp = h.path("serve-%d.out" % time.monotonic_ns())
        with open(outp, "w") as f:
            p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", NS_SETUP,
                                  "sh"] + argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, start_new_session=True)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                rc = None
        with open(outp, errors="replace") as f:
            return rc, f.read()

    sup = None
    try:
        t0 = time.monotonic()
        rc, out = in_ns(["sbin/mailwarden", "serve", "-c", rel])
        chk.equal("serve -c RELATIVE (daemonised) exits 0", rc, 0)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            listening = True
        except OSError:
            listening = False
        chk.check("the milter listens when serve returns (%.1fs)" % (time.monotonic() - t0), listening)
        sup = int(open(pid_file).read()) if os.path.exists(pid_file) else None
        if sup:
            h.reaper.tell("pgid", os.getpgid(sup))
        chk.check("pid file names a running supervisor", sup and alive(sup), pid_file)
        if not sup:
            return
        chk.equal("supervisor's cwd is /", os.readlink("/proc/%d/cwd" % sup), "/")
        with open("/proc/%d/cmdline" % sup) as f:
            chk.check("supervisor is `mailwarden serve`", "serve" in f.read().split("\0"))
        workers = children(sup)
        chk.check("one worker, running as %s" % USER,
                  len(workers) == 1 and uid_of(workers[0]) == pwd.getpwnam(USER).pw_uid,
                  "workers %s" % workers)
        r = log.wait(r"starting: configuration %s" % re.escape(conf))
        chk.check("syslog: the configuration file read (absolute), info", r and r[1] == 6, log.dump())
        r = log.wait(r"listening on inet:%d@127\.0\.0\.1" % port)
        chk.check("syslog: listening, info priority", r and r[1] == 6, log.dump())
        chk.check("syslog lines carry the ident", r and r[2].find("mailwarden[") >= 0, r)

        # broken reload: refused, logged at error with FILE:LINE, counted, old config serves
        before = metric(mport, "mailwarden_config_reloads_total", 'result="failure"')
        with open(conf, "w") as f:
            f.write(good + "no_such_key = 1;\n")
        mark = log.count()
        os.kill(sup, signal.SIGHUP)
        r = log.wait(r"reload refused: %s:7:" % re.escape(conf), start=mark)
        chk.check("syslog: reload refused with FILE:LINE, error priority", r and r[1] == 3, log.dump())
        after = metric(mport, "mailwarden_config_reloads_total", 'result="failure"')
        chk.equal("reload failure counted", after - before, 1)
        chk.check("no 'configuration reloaded' after the broken reload",
                  log.find(r"configuration reloaded", mark) is None)
        chk.equal("the same worker still runs", children(sup), workers)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            ok = True
        except OSError:
            ok = False
        chk.check("the old configuration still serves the milter port", ok)
        rc, out = H.run([mw, "config-test", "-c", rel], timeout=60, check=False, cwd=root)
        chk.check("config-test refuses the same broken file with FILE:LINE (ExecReload)",
                  rc != 0 and "test.conf:7:" in out, out.strip()[-300:])

        # a second daemon cannot bind: non-zero, the reason on stderr and in the log
        with open(conf, "w") as f:
            f.write(good.replace('pid_file = "%s"' % pid_file, 'pid_file = ""')
                    .replace("127.0.0.1:%d" % mport, ""))
        mark = log.count()
        rc, out = in_ns(["sbin/mailwarden", "serve", "-c", rel])
        chk.check("second serve on the same port exits 1", rc == 1, "rc=%s" % rc)
        chk.check("... with the reason on stderr", "Address already in use" in out, out.strip()[-400:])
        r = log.wait(r"cannot start: .*Address already in use", start=mark)
        chk.check("... and in the log at error priority", r and r[1] == 3, log.dump())
        chk.check("the first daemon is unaffected", alive(sup) and children(sup) == workers)

        # stop
        os.kill(sup, signal.SIGTERM)
        gone = H.wait_for(lambda: not alive(sup) and not os.path.exists(pid_file), timeout=60)
        chk.check("SIGTERM stops it and removes the pid file", gone)
        chk.check("syslog: exiting", log.wait(r"exiting", start=mark) is not None, log.dump())
        sup = None
    finally:
        if sup and alive(sup):
            os.kill(sup, signal.SIGKILL)
            for w in children(sup):
                os.kill(w, signal.SIGKILL)


if __name__ == "__main__":
    H.run_test(test, "install", timeout=600)
