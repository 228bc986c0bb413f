#!/usr/bin/python3
"""Exim from Debian's packages, extracted with dpkg -x (never installed), for the
integration tests (recipe: ../shared/notes/mta-recipes.md §5.2).

  debs = fetch_debs(h, [...])      apt-get download into the scratch dir (or $MW_DEB_CACHE)
  ex = Exim(h, scan_port, rcpt_port, netns=ns); ex.start()
  ex.send(...) / ex.submit(...)    swaks from the namespace client
  ex.find(token) / ex.wait_delivered(token)   messages the smtp-sink received

The configuration is contrib/exim/exim.conf.template with only its @PLACEHOLDERS@
filled in; it .includes contrib/exim/mailwarden-{rcpt,data}.acl unchanged, so the
tests run exactly the shipped snippets. Exim runs in a private mount namespace
(`unshare -m`) where /etc/passwd and /etc/group are bind-mounted copies that
contain the compiled-in Debian-exim user; nothing on the system changes.
Any missing piece raises harness.Skip with the reason (exit 77).
"""
import glob, os, shutil, subprocess
import harness as H

EXIM_DEBS = ["exim4-daemon-heavy", "exim4-base", "libidn12", "libmariadb3"]
AUTH_PASSWORD = "secret"


def fetch_debs(h, names):
    """Download the named packages (apt-get download) and return {name: path}."""
    cache = os.environ.get("MW_DEB_CACHE") or h.path("debs")
    os.makedirs(cache, exist_ok=True)
    out = {}
    missing = [n for n in names if not glob.glob(os.path.join(cache, n + "_*.deb"))]
    if missing:
        if not shutil.which("apt-get"):
            raise H.Skip("apt-get not available to download %s" % " ".join(missing))
        rc, text = H.run(["apt-get", "download"] + missing, timeout=300, check=False, cwd=cache)
        if rc != 0:
            raise H.Skip("cannot download %s with apt-get (offline?): %s" % (" ".join(missing), text.strip()[-300:]))
    for n in names:
        found = sorted(glob.glob(os.path.join(cache, n + "_*.deb")))
        if not found:
            raise H.Skip("package %s not downloaded" % n)
        out[n] = found[-1]
    return out


def extract(debs, root):
    os.makedirs(root, exist_ok=True)
    for path in debs.values():
        H.run(["dpkg", "-x", path, root], timeout=120)


def free_id():
    """A uid/gid number used by neither /etc/passwd nor /etc/group."""
    used = set()
    for f in ("/etc/passwd", "/etc/group"):
        with open(f) as fh:
            for line in fh:
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    used.add(int(parts[2]))
    for i in range(990, 200, -1):
        if i not in used:
            return i
    raise H.Skip("no free system uid/gid for Debian-exim")


def missing_libs(binary, libdir):
    env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    r = subprocess.run(["ldd", binary], capture_output=True, text=True, env=env)
    return [l.split()[0] for l in r.stdout.splitlines() if "not found" in l]


def fill(template, values):
    with open(template) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    return text


def start_sink(h, name="smtp-sink"):
    """smtp-sink on 127.0.0.1 dumping every message into a directory; (port, dir)."""
    if not shutil.which("smtp-sink"):
        raise H.Skip("smtp-sink (postfix) not installed")
    port, d = H.free_port(), h.path(name)
    os.makedirs(d, exist_ok=True)
    shutil.chown(d, "nobody")
    h.spawn(name, ["smtp-sink", "-u", "nobody", "-d", d + "/%Y%m%d%H%M%S.", "127.0.0.1:%d" % port, "64"])
    H.wait_port(port)
    return port, d


class Sink:
    """Messages an smtp-sink wrote (H.Message objects)."""

    def __init__(self, d):
        self.dir = d

    def messages(self):
        return [H.Message(os.path.join(self.dir, n)) for n in sorted(os.listdir(self.dir))]

    def find(self, token):
        return [m for m in self.messages() if token.encode() in m.raw]

    def wait_delivered(self, token, timeout=20):
        found = H.wait_for(lambda: self.find(token), timeout)
        return found[0] if found else None


def strip_sink(raw):
    """The message as sent by the MTA: smtp-sink's pseudo headers and Received removed,
    CRLF line ends (for DKIM verification)."""
    import re
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    while lines and re.match(rb"X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args):", lines[0]):
        lines.pop(0)
    if lines and lines[0].startswith(b"Received: from") and b"smtp-sink" in b"\n".join(lines[:4]):
        lines.pop(0)
        while lines and lines[0][:1] in (b" ", b"\t"):
            lines.pop(0)
    return b"\r\n".join(lines)


class Exim:
    def __init__(self, h, scan_port, rcpt_port, netns=None, relay_domains="dest.test"):
        if os.geteuid() != 0:
            raise H.Skip("Exim from extracted packages needs root (mount namespace)")
        for tool in ("unshare", "dpkg", "ldd"):
            if not shutil.which(tool):
                raise H.Skip("%s not available" % tool)
        self.h, self.netns = h, netns
        self.dir = h.path("exim")
        self.root = self.dir + "/root"
        self.port, self.sub_port = H.free_port(), H.free_port()
        self.scan_port, self.rcpt_port = scan_port, rcpt_port
        self.relay_domains = relay_domains
        self.addrs = ["127.0.0.1"] + ([netns.host_addr] if netns else [])

    def start(self):
        extract(fetch_debs(self.h, EXIM_DEBS), self.root)
        exim = self.root + "/usr/sbin/exim4"
        libdir = self.root + "/usr/lib/x86_64-linux-gnu"
        if not os.path.exists(exim):
            raise H.Skip("exim4 binary not found in the extracted packages")
        os.chmod(exim, 0o755)          # setuid => LD_LIBRARY_PATH ignored
        miss = missing_libs(exim, libdir)
        if miss:
            raise H.Skip("extracted exim4 lacks shared libraries: %s" % ", ".join(miss))
        self.sink_port, sinkdir = start_sink(self.h, "exim-sink")
        self.sink = Sink(sinkdir)
        uid = free_id()
        for sub in ("spool", "log"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
            os.chown(os.path.join(self.dir, sub), uid, uid)
        os.chmod(self.dir, 0o755)
        with open("/etc/passwd") as f:
            pw = [l for l in f if not l.startswith("Debian-exim:")]
        with open("/etc/group") as f:
            gr = [l for l in f if not l.startswith("Debian-exim:")]
        self.h.write("exim/passwd", "".join(pw) + "Debian-exim:x:%d:%d::/nonexistent:/usr/sbin/nologin\n" % (uid, uid))
        self.h.write("exim/group", "".join(gr) + "Debian-exim:x:%d:\n" % uid)
        contrib = os.path.join(H.SOURCE_DIR, "contrib", "exim")
        conf = fill(os.path.join(contrib, "exim.conf.template"), {
            "DIR": self.dir, "EXIM_PATH": exim, "INTERFACES": "<; " + " ; ".join(self.addrs),
            "SMTP_PORT": self.port, "SUBMIT_PORT": self.sub_port,
            "SCAN_ADDRESS": "127.0.0.1 %d" % self.scan_port,
            "RCPT_SOCKET": "inet:127.0.0.1:%d" % self.rcpt_port, "CONTRIB": contrib,
            "RELAY_DOMAINS": self.relay_domains, "SMARTHOST_PORT": self.sink_port,
            "AUTH_PASSWORD": AUTH_PASSWORD})
        self.conf = self.h.write("exim/exim.conf", conf)
        self.runsh = self.h.write("exim/run-exim.sh", "#!/bin/sh\n"
                                  "mount --bind %s/passwd /etc/passwd || exit 1\n"
                                  "mount --bind %s/group /etc/group || exit 1\n"
                                  "LD_LIBRARY_PATH=%s exec %s -C %s \"$@\"\n"
                                  % (self.dir, self.dir, libdir, exim, self.conf), mode=0o755)
        rc, out = H.run(self.cmd(["-bV"]), timeout=60, check=False)
        if rc != 0 or "Exim version" not in out:
            raise RuntimeError("exim -bV failed:\n%s" % out)
        self.version = out.splitlines()[0]
        self.proc = self.h.spawn("exim", self.cmd(["-bdf"]))
        for a in self.addrs:
            H.wait_port(self.port, host=a, proc=self.proc, timeout=20)
            H.wait_port(self.sub_port, host=a, proc=self.proc, timeout=20)

    def cmd(self, args):
        return ["unshare", "-m", "--propagation", "private", self.runsh] + list(args)

    def mainlog(self):
        try:
            with open(self.dir + "/log/mainlog", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def paniclog(self):
        try:
            with open(self.dir + "/log/paniclog", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def send(self, mail_from, rcpt, external=True, **kw):
        if external and self.netns:
            return H.swaks(self.netns.host_addr, self.port, mail_from, rcpt, netns=self.netns, **kw)
        return H.swaks("127.0.0.1", self.port, mail_from, rcpt, **kw)

    def submit(self, user, mail_from, rcpt, password=AUTH_PASSWORD, external=True, **kw):
        extra = ["--auth", "PLAIN", "--auth-user", user, "--auth-password", password] + list(kw.pop("extra", ()))
        host, ns = (self.netns.host_addr, self.netns) if external and self.netns else ("127.0.0.1", None)
        return H.swaks(host, self.sub_port, mail_from, rcpt, netns=ns, extra=extra, **kw)
