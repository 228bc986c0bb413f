#!/usr/bin/python3
"""Sendmail from Debian's packages, extracted with dpkg -x (never installed; Postfix
stays installed), for the integration tests (recipe: ../shared/notes/mta-recipes.md §4).

  sm = Sendmail(h, milter_port, netns=ns); sm.start()
  sm.send(...) (MTA port, {daemon_name}=MTA), sm.submit(...) (MSA port with SMTP AUTH)
  sm.sink.find(token) / sm.sink.wait_delivered(token)   mail relayed to an smtp-sink

The .mc includes contrib/sendmail/mailwarden.m4 unchanged (only MAILWARDEN_SOCKET is
defined, i.e. the port). Pitfalls handled: libwrap.so.0 comes from the extracted
libwrap0 and the setgid bit of the extracted binary is dropped (else LD_LIBRARY_PATH
is ignored); sendmail stalls 60 s on a hostname without a dot, so it runs in
`unshare -m -u` with an FQDN hostname and private /etc/hosts, /etc/resolv.conf and SASL
config (bind mounts, gone with the namespace).
"""
import os, subprocess
import harness as H
import mta_exim as X

SM_DEBS = ["sendmail-bin", "sendmail-base", "sendmail-cf", "m4", "libwrap0", "sasl2-bin"]
HOSTNAME = "mx-sm.test.example"
PASSWORD = "secret"

MC = """divert(0)dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{host}')dnl
define(`QUEUE_DIR', `{d}/mqueue')dnl
define(`MSP_QUEUE_DIR', `{d}/clientmqueue')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`STATUS_FILE', `{d}/statistics')dnl
define(`ALIAS_FILE', `{d}/aliases')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confHOST_STATUS_DIRECTORY', `')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confTO_IDENT', `0s')dnl
define(`SMART_HOST', `relay:[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {sink}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {sink}')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`nocanonify')dnl
FEATURE(`promiscuous_relay')dnl
FEATURE(`accept_unresolvable_domains')dnl
{daemons}define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl
TRUST_AUTH_MECH(`PLAIN LOGIN')dnl
define(`MAILWARDEN_SOCKET', `inet:{milter}@127.0.0.1')dnl
include(`{contrib}/mailwarden.m4')dnl
MAILER(`smtp')dnl
"""


class Sendmail:
    def __init__(self, h, milter_port, netns=None):
        if os.geteuid() != 0:
            raise H.Skip("Sendmail from extracted packages needs root (mount/UTS namespace)")
        self.h, self.netns, self.milter_port = h, netns, milter_port
        self.dir = h.path("sm")
        self.root = self.dir + "/root"
        self.port, self.sub_port = H.free_port(), H.free_port()
        self.addrs = ["127.0.0.1"] + ([netns.host_addr] if netns else [])

    def start(self):
        d, r = self.dir, self.root
        X.extract(X.fetch_debs(self.h, SM_DEBS), r)
        sm = r + "/usr/libexec/sendmail/sendmail"
        libdir = r + "/usr/lib/x86_64-linux-gnu"
        if not os.path.exists(sm):
            raise H.Skip("sendmail binary not found in the extracted packages")
        os.chmod(sm, 0o755)                       # drop setgid: LD_LIBRARY_PATH must work
        miss = X.missing_libs(sm, libdir)
        if miss:
            raise H.Skip("extracted sendmail lacks shared libraries: %s" % ", ".join(miss))
        if not os.path.isdir("/usr/lib/sasl2"):
            raise H.Skip("/usr/lib/sasl2 missing (bind-mount target for Sendmail.conf)")
        for sub in ("mqueue", "clientmqueue", "sasl2"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(d + "/mqueue", 0o700)
        self.sink_port, sinkdir = X.start_sink(self.h, "sm-sink")
        self.sink = X.Sink(sinkdir)
        self.h.write("sm/hosts", "127.0.0.1\t%s localhost\n::1\t%s localhost\n" % (HOSTNAME, HOSTNAME))
        self.h.write("sm/resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.h.write("sm/service.switch", "hosts\tfiles\naliases\tfiles\n")
        self.h.write("sm/aliases", "")
        self.h.write("sm/sasl2/Sendmail.conf", "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
                     "sasldb_path: %s/sasldb2\nmech_list: PLAIN LOGIN\n" % d)
        env = dict(os.environ, LD_LIBRARY_PATH=libdir)
        p = subprocess.run([r + "/usr/sbin/saslpasswd2", "-p", "-f", d + "/sasldb2", "-c", "-u", HOSTNAME, "alice"],
                             input=PASSWORD + "\n", text=True, capture_output=True, env=env, timeout=30)
        if p.returncode != 0:
            raise H.Skip("saslpasswd2 failed: %s" % p.stderr.strip())
        daemons = ""
        for a in self.addrs:
            daemons += "DAEMON_OPTIONS(`Port=%d, Addr=%s, Name=MTA')dnl\n" % (self.port, a)
            daemons += "DAEMON_OPTIONS(`Port=%d, Addr=%s, Name=MSA, M=E')dnl\n" % (self.sub_port, a)
        mc = MC.replace("{host}", HOSTNAME).replace("{d}", d).replace("{sink}", str(self.sink_port)) \
               .replace("{daemons}", daemons).replace("{milter}", str(self.milter_port)) \
               .replace("{contrib}", os.path.join(H.SOURCE_DIR, "contrib", "sendmail"))
        self.h.write("sm/test.mc", mc)
        cfdir = r + "/usr/share/sendmail/cf/"
        rc, out = H.run([r + "/usr/bin/m4", "-D_CF_DIR_=" + cfdir, cfdir + "m4/cf.m4", d + "/test.mc"],
                        timeout=60, check=False, cwd=d)
        cf = "\n".join(l for l in out.splitlines() if not l.startswith("*** WARNING"))
        if rc != 0 or "Xmailwarden" not in cf:
            raise RuntimeError("m4 failed:\n%s" % out[-2000:])
        self.cf_text = cf
        self.h.write("sm/sendmail.cf", cf + "\n")
        self.runsh = self.h.write("sm/run-sendmail.sh", "#!/bin/sh\n"
                                  "mount --bind {d}/hosts /etc/hosts || exit 1\n"
                                  "mount --bind {d}/resolv.conf /etc/resolv.conf || exit 1\n"
                                  "mount --bind {d}/sasl2 /usr/lib/sasl2 || exit 1\n"
                                  "hostname {host} || exit 1\n"
                                  "LD_LIBRARY_PATH={lib} exec {sm} -C {d}/sendmail.cf -bD -L sm-test \"$@\"\n"
                                  .format(d=d, host=HOSTNAME, lib=libdir, sm=sm), mode=0o755)
        self.proc = self.h.spawn("sendmail", ["unshare", "-m", "-u", "--propagation", "private", self.runsh])
        for a in self.addrs:
            H.wait_port(self.port, host=a, proc=self.proc, timeout=30)
            H.wait_port(self.sub_port, host=a, proc=self.proc, timeout=30)

    def send(self, mail_from, rcpt, external=True, **kw):
        if external and self.netns:
            return H.swaks(self.netns.host_addr, self.port, mail_from, rcpt, netns=self.netns, **kw)
        return H.swaks("127.0.0.1", self.port, mail_from, rcpt, **kw)

    def submit(self, user, mail_from, rcpt, password=PASSWORD, external=True, **kw):
        extra = ["--auth", "PLAIN", "--auth-user", user, "--auth-password", password] + list(kw.pop("extra", ()))
        host, ns = (self.netns.host_addr, self.netns) if external and self.netns else ("127.0.0.1", None)
        return H.swaks(host, self.sub_port, mail_from, rcpt, netns=ns, extra=extra, **kw)
