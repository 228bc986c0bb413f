#!/usr/bin/python3
"""Privilege drop: everything the daemon writes belongs to the user it runs as (issue 13, item 7).

Started as root with `user = nobody`, `group = nogroup` (needs root: skipped with 77
otherwise) and a history directory that does not exist yet, behind a real Postfix:
  - the worker runs as nobody/nogroup with no supplementary group of root's;
  - the history directory and its file are created by nobody:nogroup;
  - the Exim listener's unix socket belongs to nobody:nogroup (mode from socket_mode);
  - a SIGHUP reload succeeds (log and the reload metric), and mail after it is recorded;
  - at the rotation (history.rotate = 60: the test waits for the next minute), the
    new file is created by nobody and the message after the rotation is recorded;
  - `mailwarden report` run by root writes its output as nobody;
  - refusals, each a clear start-up error: a history directory owned by root that
    nobody cannot write; a DKIM key file only root can read (also reported by
    config-test, which checks as the daemon's user).
Without the fix the directory and file are root's, the reload fails with EACCES and the
records after the rotation are lost.
"""
import grp, os, pwd, re, smtplib, subprocess, sys, time, urllib.request
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
from test_history_crash import read_history

USER, GROUP = "nobody", "nogroup"


def zone():
    return {"none.test": [{"A": "192.0.2.1"}, {"TXT": "v=spf1 -all"}],
            "_dmarc.none.test": [{"TXT": "v=DMARC1; p=none; rua=mailto:agg@none.test"}],
            "evil.test": [{"TXT": "v=spf1 -all"}]}


def send(pf, dom):
    msg = ("From: x <x@%s>\r\nTo: bob@dest.test\r\nSubject: privs %s\r\n"
           "Message-ID: <%s@privs>\r\n\r\nbody %s\r\n" % (dom, dom, dom, dom))
    s = smtplib.SMTP("127.0.0.1", pf.port, timeout=60)
    try:
        s.ehlo("client.evil.test")
        return not s.sendmail("a@evil.test", ["bob@dest.test"], msg)
    finally:
        s.quit()


def records_for(hist, dom):
    recs, _ = read_history(hist)
    return [r for r in recs if r.get("header_from") == dom]


def owner(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def worker_pid(sup_pid):
    """The supervisor's child (the worker)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/status" % pid) as f:
                st = f.read()
        except OSError:
            continue
        if re.search(r"^PPid:\s*%d$" % sup_pid, st, re.M):
            return int(pid), st
    return None, ""


def metric(port, name, label):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def serve_once(argv, timeout=30):
    """Run `serve -f` expected to refuse to start: (returncode, stderr); returncode None
    (and the process group killed) if it started and kept running instead."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        _, err = p.communicate(timeout=timeout)
        return p.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        _, err = p.communicate()
        return None, err


def test(h, chk):
    if os.geteuid() != 0:
        raise H.Skip("needs root (starts the daemon as root, which drops to %s)" % USER)
    try:
        uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid
    except KeyError:
        raise H.Skip("no user %s / group %s" % (USER, GROUP))
    dns, _ = h.start_testdns(zone(), verbose=False)
    state = h.path("state")
    os.makedirs(state)
    os.chown(state, uid, gid)                      # like systemd's StateDirectory=
    hist = os.path.join(state, "history")          # does not exist: the daemon makes it
    exim_sock = h.path("run", "exim.sock")
    os.makedirs(os.path.dirname(exim_sock))
    mport = H.free_port()
    conf = h.write("mw.conf", 'user = "%s";\ngroup = "%s";\n'
                   'trust = { internal_networks = [ "192.0.2.254/32" ]; };\n'
                   'dns = { timeout = 2000; };\n'
                   'history = { dir = "%s"; rotate = 60; fsync_interval = 0; };\n'
                   'exim = { listen = "unix:%s"; };\n'
                   'metrics = { listen = "127.0.0.1:%d"; };\n' % (USER, GROUP, hist, exim_sock, mport))
    port = H.free_port()
    d = h.start_daemon(dns=[dns], port=port, args=["-c", conf], name="mw")
    pf = h.start_postfix(port, default_action="tempfail",
                         main_extra={"milter_connect_timeout": "5s", "milter_command_timeout": "20s"})

    wpid, st = worker_pid(d.pid)
    chk.check("worker found", wpid is not None)
    chk.check("worker runs as %s (real, effective, saved, fs uid)" % USER,
              re.search(r"^Uid:\s+%d\s+%d\s+%d\s+%d$" % ((uid,) * 4), st, re.M), st[:400])
    chk.check("worker runs as group %s (all four gids)" % GROUP,
              re.search(r"^Gid:\s+%d\s+%d\s+%d\s+%d$" % ((gid,) * 4), st, re.M))
    groups = re.search(r"^Groups:\s*(.*)$", st, re.M).group(1).split()
    chk.check("no supplementary group but the user's own", all(int(g) == gid for g in groups), groups)
    chk.equal("exim unix socket belongs to %s:%s" % (USER, GROUP), owner(exim_sock), (uid, gid))

    chk.check("message 1 accepted", send(pf, "m1.none.test"))
    chk.check("message 1 recorded", H.wait_for(lambda: records_for(hist, "m1.none.test"), timeout=30))
    chk.equal("history dir made by %s:%s" % (USER, GROUP), owner(hist), (uid, gid))
    files = sorted(os.listdir(hist))
    chk.check("history files all belong to %s" % USER,
              files and all(owner(os.path.join(hist, f))[0] == uid for f in files), files)

    d.send_signal(1)                               # SIGHUP to the supervisor
    chk.check("reload logged as done",
              H.wait_for(lambda: "configuration reloaded (generation 2)" in d.log_text(), timeout=30),
              d.log_tail(10))
    chk.check("no reload refused", "reload refused" not in d.log_text(), d.log_tail(10))
    chk.equal("reload metric: one success, no failure",
              (metric(mport, "mailwarden_config_reloads_total", 'result="success"'),
               metric(mport, "mailwarden_config_reloads_total", 'result="failure"')), (1.0, 0.0))
    chk.check("message 2 (after the reload) accepted", send(pf, "m2.none.test"))
    chk.check("message 2 recorded", H.wait_for(lambda: records_for(hist, "m2.none.test"), timeout=30))

    # the rotation: wait for the next 60 s period, then the next message opens a new file
    before = set(os.listdir(hist))
    period = int(time.time()) // 60
    H.wait_for(lambda: int(time.time()) // 60 > period, timeout=70, step=0.2)
    chk.check("message 3 (after the rotation) accepted", send(pf, "m3.none.test"))
    chk.check("message 3 recorded", H.wait_for(lambda: records_for(hist, "m3.none.test"), timeout=30))
    new = sorted(set(os.listdir(hist)) - before)
    chk.check("rotation made a new file", len(new) == 1, (sorted(before), new))
    chk.check("the new file belongs to %s" % USER, new and owner(os.path.join(hist, new[0]))[0] == uid)
    chk.check("no history write error logged", not re.search(r"history .*(denied|failed)", d.log_text()),
              d.log_tail(10))

    # `mailwarden report` run by root: becomes nobody before writing anything
    out = os.path.join(state, "out")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    r = subprocess.run([H.MW_BINARY, "report", "-c", conf, "--period", today, "--out", out],
                       capture_output=True, text=True, timeout=120)
    chk.check("report as root ran", r.returncode == 0, r.stdout[-500:] + r.stderr[-500:])
    made = [os.path.join(out, f) for f in os.listdir(out)] if os.path.isdir(out) else []
    chk.check("report wrote something", len(made) > 0, r.stdout[-300:])
    chk.check("report's output belongs to %s" % USER,
              owner(out)[0] == uid and all(owner(p)[0] == uid for p in made) if made else False,
              [(p, owner(p)) for p in made])
    rootish = [f for f in os.listdir(hist) if owner(os.path.join(hist, f))[0] != uid]
    chk.check("nothing in the history dir belongs to anyone else", not rootish, rootish)
    d.stop()

    # refused at start, clearly: a history dir owned by root that nobody cannot write
    bad = h.path("roothist")
    os.makedirs(bad)
    os.chmod(bad, 0o755)
    conf2 = h.write("mw2.conf", 'user = "%s";\nhistory = { dir = "%s"; };\n' % (USER, bad))
    rc, err = serve_once([H.MW_BINARY, "serve", "-f", "-c", conf2, "--socket", "inet:%d@127.0.0.1" % H.free_port()])
    chk.check("root-owned history dir: start refused with a clear reason",
              rc not in (0, None) and "not writable by user %s" % USER in err, (rc, err[-600:]))
    chk.check("... and nothing created in it", os.listdir(bad) == [], os.listdir(bad))

    # a DKIM key only root can read: config-test and start both say so
    key = h.path("keys", "k.pem")
    os.makedirs(os.path.dirname(key))
    H.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key])
    os.chmod(key, 0o600)
    conf3 = h.write("mw3.conf", 'user = "%s";\n'
                    'dkim = { keys = ( { name = "k"; domain = "none.test"; selector = "s"; file = "%s"; } ); };\n'
                    % (USER, key))
    p = subprocess.run([H.MW_BINARY, "config-test", "-c", conf3], capture_output=True, text=True, timeout=60)
    chk.check("config-test: root-only key reported as unreadable by %s" % USER,
              p.returncode != 0 and "user %s" % USER in p.stderr and key in p.stderr, p.stdout + p.stderr)
    rc, err = serve_once([H.MW_BINARY, "serve", "-f", "-c", conf3, "--socket", "inet:%d@127.0.0.1" % H.free_port()])
    chk.check("serve: root-only key refused at start, naming the user",
              rc not in (0, None) and key in err and "running as user %s" % USER in err, (rc, err[-600:]))
    os.chown(key, uid, gid)
    p = subprocess.run([H.MW_BINARY, "config-test", "-c", conf3], capture_output=True, text=True, timeout=60)
    chk.check("config-test: the key owned by %s is fine" % USER, p.returncode == 0, p.stdout + p.stderr)


if __name__ == "__main__":
    H.run_test(test, "privdrop", timeout=400)
