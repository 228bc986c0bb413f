#!/usr/bin/python3
"""The Debian package: build it, install it into a clean root, purge it (issue 16).

As root (skipped with 77 otherwise, or when dpkg-buildpackage/debhelper, unshare,
nsenter or overlayfs are missing):
  - `dpkg-buildpackage -b` on a copy of the source tree (the worktree is not touched;
    DEB_BUILD_OPTIONS=nocheck, -j2, ccache when installed) builds mailwarden_*.deb;
  - the package: Depends from dh_shlibdeps (libunbound8, libspf2-2, ...) plus adduser;
    /etc/mailwarden/mailwarden.conf and /etc/logrotate.d/mailwarden are conffiles; the
    files are where `cmake --install` with the prefix /usr puts them (the unit in
    /lib/systemd/system, bookworm's unit directory);
  - the clean root: an overlay over the host's / (the host's libraries and dpkg database,
    every write into a scratch upper directory) in a private mount namespace with its own
    /run (no /run/systemd/system: systemd is not running there, as in a chroot), entered
    with chroot.  Nothing is written to the host.  In it, twice:
      1. with systemd-sysusers present: `dpkg -i` creates the mailwarden system user and
         group, /var/lib/mailwarden and /etc/mailwarden/keys; starts nothing (no process
         in the root); `mailwarden --version` (the package's version) and `mailwarden
         config-test` on the shipped /etc/mailwarden/mailwarden.conf pass; `keygen --user
         mailwarden` writes a key that user owns and reads; an edited conffile survives a
         re-install and `dpkg -r`; `dpkg --purge` removes everything the package put or
         made, except the administrator's DKIM key (and the user, Debian practice);
      2. with systemd-sysusers and systemd-tmpfiles removed from the root: postinst
         creates the user with adduser and the directories itself; purge leaves nothing.
    "Everything": the upper directory after the purge is compared with before the
    install; only dpkg's and the account databases' own files may differ.
Without the fix in cmake/install.cmake (DESTDIR applied twice to the sample config) the
package ships /etc/mailwarden/mailwarden.conf under the build directory's path and it is
no conffile.
"""
import glob, os, pwd, re, shutil, signal, stat, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

PKG = "mailwarden"
CONFFILES = {"/etc/mailwarden/mailwarden.conf", "/etc/logrotate.d/mailwarden"}
FILES = ["/usr/sbin/mailwarden", "/usr/share/man/man8/mailwarden.8.gz",
         "/usr/share/man/man5/mailwarden.conf.5.gz", "/usr/share/mailwarden/policies/default.conf",
         "/usr/share/mailwarden/mailwarden.conf.sample", "/etc/mailwarden/mailwarden.conf",
         "/lib/systemd/system/mailwarden.service", "/lib/systemd/system/mailwarden-report.service",
         "/lib/systemd/system/mailwarden-report.timer", "/lib/systemd/system/mailwarden-failure-report.timer",
         "/lib/systemd/system/mailwarden-failure-report.service", "/usr/lib/sysusers.d/mailwarden.conf",
         "/usr/lib/tmpfiles.d/mailwarden.conf", "/etc/logrotate.d/mailwarden",
         "/usr/share/mailwarden/sendmail/mailwarden.m4", "/usr/share/mailwarden/postfix/main.cf.snippet",
         "/usr/share/mailwarden/exim/mailwarden-data.acl", "/usr/share/doc/mailwarden/copyright"]
# Files in the root that installing and purging may leave changed: dpkg's own
# database and logs, the account databases (the user stays), caches rebuilt by
# triggers (man-db).
ALLOWED = re.compile(r"^(var/lib/dpkg/|var/log/|var/cache/(man|debconf|ldconfig)/|etc/ld\.so\.cache$|"
                     r"etc/(passwd|group|shadow|gshadow)-?$|etc/\.pwd\.lock$)")

NS_SETUP = r"""
set -e
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
mount -t proc proc "$T/root/proc"
mount --bind /dev "$T/root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$T/root/run"
mount -t tmpfs -o mode=1777 tmpfs "$T/root/tmp"
cp "$DEB" "$T/root/tmp/"
: > "$T/ready"
exec sleep 100000
"""


def source_files(src):
    """The tree as git sees it (tracked and untracked, not ignored): no build dirs."""
    try:
        out = subprocess.run(["git", "-C", src, "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True, timeout=60).stdout.decode()
        return [f for f in out.split("\0") if f and os.path.isfile(os.path.join(src, f))]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(src):
            dirs[:] = [x for x in dirs if not x.startswith((".git", "build", "obj-"))]
            files += [os.path.relpath(os.path.join(d, n), src) for n in names]
        return files


def snapshot(upper):
    """{relative path: (kind, mode, uid, gid, size, mtime)} of the overlay's upper dir."""
    snap = {}
    for d, dirs, names in os.walk(upper):
        for n in dirs + names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            snap[os.path.relpath(p, upper)] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid,
                                               st.st_gid, st.st_size, st.st_mtime_ns)
    return snap


def leftovers(before, after):
    """What the install + purge left in the root that was not there before (or is
    changed), other than ALLOWED files and directories that exist on the host too."""
    out = []
    for rel, v in sorted(after.items()):
        if before.get(rel) == v or ALLOWED.match(rel):
            continue
        if v[0] == stat.S_IFDIR and os.path.isdir("/" + rel) and before.get(rel) is None:
            continue            # a host directory copied up (a file was made in it, then removed)
        if v[0] == stat.S_IFDIR and before.get(rel) is not None:
            continue            # its entries are what matters; their changes are listed
        out.append(rel)
    return out


def test(h, chk):
    if os.geteuid() != 0:
        raise H.Skip("needs root (dpkg into a chroot, a mount namespace)")
    missing = [t for t in ("dpkg-buildpackage", "dh", "unshare", "nsenter", "chroot") if not shutil.which(t)]
    if missing:
        raise H.Skip("missing %s: apt-get install debhelper dpkg-dev (contrib/install-deps.sh --test)"
                     % ", ".join(missing))
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            raise H.Skip("no overlayfs: the clean root is an overlay over /")

    # ---- build, out of tree -------------------------------------------------
    src = h.path("src")
    for rel in source_files(H.SOURCE_DIR):
        os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
        shutil.copy2(os.path.join(H.SOURCE_DIR, rel), os.path.join(src, rel))
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
    if shutil.which("ccache"):
        env["CMAKE_C_COMPILER_LAUNCHER"] = "ccache"
    t0 = time.monotonic()
    rc, out = H.run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=src, env=env, timeout=1500, check=False)
    took = time.monotonic() - t0
    print("package build: %.0f s%s" % (took, " (over 2 min)" if took > 120 else ""), flush=True)
    chk.equal("dpkg-buildpackage -b exits 0", rc, 0)
    if rc != 0:
        print(out[-3000:], file=sys.stderr)
        return
    debs = [d for d in glob.glob(h.path("%s_*.deb" % PKG))]
    chk.equal("one mailwarden .deb built", len(debs), 1)
    deb = debs[0]

    # ---- the package itself -------------------------------------------------
    def field(name):
        return H.run(["dpkg-deb", "-f", deb, name])[1].strip()
    depends = field("Depends")
    chk.check("Depends from shlibdeps (libunbound8, libspf2-2, libopendkim11, libssl3) and adduser",
              all(re.search(r"\b%s\b" % re.escape(p), depends)
                  for p in ("libc6", "libunbound8", "libspf2-2", "libopendkim11", "libssl3", "adduser")),
              depends)
    version = field("Version")
    ctl = h.path("ctl")
    H.run(["dpkg-deb", "-e", deb, ctl])
    with open(os.path.join(ctl, "conffiles")) as f:
        conffiles = set(f.read().split())
    chk.equal("conffiles", conffiles, CONFFILES)
    listing = H.run(["dpkg-deb", "-c", deb])[1]
    shipped = {"/" + l.split()[-1].lstrip("./") for l in listing.splitlines() if l.strip()}
    chk.check("FHS layout: binary, man pages, policies, config, units, sysusers, tmpfiles, logrotate, "
              "MTA snippets", all(p in shipped for p in FILES), sorted(set(FILES) - shipped))
    chk.check("nothing under the build directory's path", not [p for p in shipped if p.startswith(("/tmp", "/root"))],
              [p for p in shipped if p.startswith(("/tmp", "/root"))][:3])

    # ---- a clean root: overlay over / in a private mount namespace -----------
    for d in ("upper", "work", "root"):
        os.makedirs(h.path(d))
    upper, root = h.path("upper"), h.path("root")
    nslog = open(h.path("ns.log"), "w")
    ns = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", NS_SETUP],
                          env=dict(os.environ, T=h.tmp, DEB=deb), stdout=nslog, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, start_new_session=True)
    h.reaper.tell("pgid", ns.pid)
    try:
        ready = H.wait_for(lambda: os.path.exists(h.path("ready")) or ns.poll() is not None, timeout=60)
        if not os.path.exists(h.path("ready")):
            with open(h.path("ns.log")) as f:
                raise H.Skip("cannot set up the overlay root (%s): %s" % (ready, f.read()[-300:]))
        # the sleep is the namespace's anchor: its pid is the sh's after exec
        def inroot(argv, user=None, timeout=300, check=False):
            cmd = ["nsenter", "--target", str(ns.pid), "--mount", "--", "chroot"]
            if user:
                cmd.append("--userspec=%s" % user)
            return H.run(cmd + [root] + argv, timeout=timeout, check=check)

        def sh(script, **kw):
            return inroot(["/bin/sh", "-c", script], **kw)

        def exists(path):
            return sh("test -e '%s' || test -L '%s'" % (path, path))[0] == 0

        def statof(path):
            rc, out = sh("stat -c '%%a %%U %%G' '%s'" % path)
            return out.strip() if rc == 0 else None

        def running_in_root():
            """mailwarden processes in the root's mount namespace."""
            mine, pids = os.readlink("/proc/%d/ns/mnt" % ns.pid), []
            for p in os.listdir("/proc"):
                try:
                    if p.isdigit() and int(p) != ns.pid and os.readlink("/proc/%s/ns/mnt" % p) == mine:
                        with open("/proc/%s/comm" % p) as f:
                            if f.read().strip() == "mailwarden":
                                pids.append(int(p))
                except OSError:
                    pass
            return pids

        debname = "/tmp/" + os.path.basename(deb)
        chk.check("systemd does not run in the root", not exists("/run/systemd/system"))
        # no mailwarden account in the root, whatever the host has
        sh("for f in passwd group shadow gshadow; do [ -f /etc/$f ] && sed -i '/^mailwarden:/d' /etc/$f; done; "
           "rm -rf /etc/mailwarden /var/lib/mailwarden", check=True)

        for rnd, sysusers in ((1, True), (2, False)):
            tag = "[%s] " % ("sysusers" if sysusers else "adduser")
            if not sysusers:
                sh("rm -f /usr/bin/systemd-sysusers /usr/bin/systemd-tmpfiles /bin/systemd-sysusers "
                   "/bin/systemd-tmpfiles", check=True)
            elif not exists("/usr/bin/systemd-sysusers"):
                print("no systemd-sysusers on this host: both rounds take the adduser path", flush=True)
            chk.check(tag + "no mailwarden user before the install", sh("getent passwd mailwarden")[0] != 0)
            before = snapshot(upper)

            t0 = time.monotonic()
            rc, out = inroot(["dpkg", "-i", debname])
            chk.equal(tag + "dpkg -i exits 0 (%.0f s)" % (time.monotonic() - t0), rc, 0)
            if rc != 0:
                print(out[-2000:], file=sys.stderr)
                return
            rc, out = sh("dpkg-query -W -f '${Status} ${Version}' mailwarden")
            chk.equal(tag + "installed", out.strip(), "install ok installed " + version)
            rc, out = sh("getent passwd mailwarden")
            f = out.strip().split(":")
            chk.check(tag + "postinst created the system user (uid < 1000, home /var/lib/mailwarden, "
                      "nologin shell)", rc == 0 and len(f) == 7 and int(f[2]) < 1000
                      and f[5] == "/var/lib/mailwarden" and f[6].endswith("nologin"), out.strip())
            chk.check(tag + "... and its group", sh("getent group mailwarden")[0] == 0)
            chk.equal(tag + "/var/lib/mailwarden", statof("/var/lib/mailwarden"), "750 mailwarden mailwarden")
            chk.equal(tag + "/var/lib/mailwarden/history", statof("/var/lib/mailwarden/history"),
                      "750 mailwarden mailwarden")
            chk.equal(tag + "/etc/mailwarden/keys", statof("/etc/mailwarden/keys"), "750 root mailwarden")
            rc, out = sh("cat /var/lib/dpkg/info/mailwarden.conffiles")
            chk.equal(tag + "dpkg records the conffiles", set(out.split()), CONFFILES)
            chk.check(tag + "every file in place", all(exists(p) for p in FILES),
                      [p for p in FILES if not exists(p)])
            chk.check(tag + "the unit is enabled (deb-systemd-helper), the report timer is not",
                      exists("/etc/systemd/system/multi-user.target.wants/mailwarden.service")
                      and not exists("/etc/systemd/system/timers.target.wants/mailwarden-report.timer"))
            chk.equal(tag + "nothing started (no mailwarden process in the root)", running_in_root(), [])

            rc, out = inroot(["/usr/sbin/mailwarden", "--version"])
            chk.check(tag + "mailwarden --version is the package's", rc == 0 and
                      out.split()[:2] == ["mailwarden", version.split("-")[0]], out.strip())
            rc, out = inroot(["/usr/sbin/mailwarden", "config-test", "-c", "/etc/mailwarden/mailwarden.conf"])
            chk.check(tag + "config-test on the shipped /etc/mailwarden/mailwarden.conf", rc == 0, out.strip()[-400:])

            if rnd == 1:
                # keygen into the package's key directory, for the user the unit runs as
                rc, out = inroot(["/usr/sbin/mailwarden", "keygen", "-d", "example.org", "-s", "pkg",
                                  "--out", "/etc/mailwarden/keys", "--user", "mailwarden"])
                chk.check("keygen --user mailwarden into /etc/mailwarden/keys", rc == 0, out.strip()[-300:])
                key = "/etc/mailwarden/keys/pkg.private"
                chk.equal("key owned by mailwarden, 0600", statof(key), "600 mailwarden mailwarden")
                rc, out = inroot(["/bin/sh", "-c", "head -c 27 %s" % key], user="mailwarden:mailwarden")
                chk.check("mailwarden reads its key", rc == 0 and out.startswith("-----BEGIN PRIVATE KEY"),
                          out[:120])
                # conffile handling: an edit survives a re-install and a remove
                sh("echo '# edited by the postmaster' >> /etc/mailwarden/mailwarden.conf", check=True)
                rc, out = inroot(["dpkg", "-i", debname])
                chk.equal("re-install exits 0", rc, 0)
                chk.check("the edited conffile is kept on re-install",
                          sh("grep -q 'edited by the postmaster' /etc/mailwarden/mailwarden.conf")[0] == 0)
                rc, out = inroot(["dpkg", "-r", PKG])
                chk.equal("dpkg -r exits 0", rc, 0)
                chk.check("after remove: binary gone, the edited conffile kept (config-files)",
                          not exists("/usr/sbin/mailwarden")
                          and sh("grep -q 'edited by the postmaster' /etc/mailwarden/mailwarden.conf")[0] == 0
                          and "config-files" in sh("dpkg-query -W -f '${Status}' mailwarden")[1], "")

            rc, out = inroot(["dpkg", "--purge", PKG])
            chk.equal(tag + "dpkg --purge exits 0", rc, 0)
            chk.check(tag + "purged: dpkg knows nothing of it",
                      "not-installed" in sh("dpkg-query -W -f '${Status}' mailwarden 2>&1")[1]
                      or sh("dpkg-query -W mailwarden")[0] != 0)
            chk.check(tag + "the user stays after purge (Debian: its uid may own files elsewhere)",
                      sh("getent passwd mailwarden")[0] == 0)
            left = leftovers(before, snapshot(upper))
            if rnd == 1:
                chk.check("purge keeps the administrator's DKIM key and says so",
                          "keeping /etc/mailwarden/keys" in out and exists("/etc/mailwarden/keys/pkg.private"),
                          out.strip()[-300:])
                expect = ["etc/mailwarden", "etc/mailwarden/keys", "etc/mailwarden/keys/pkg.private"]
                chk.equal("purge leaves only the DKIM key (and its directories)", left, expect)
                sh("rm -rf /etc/mailwarden", check=True)
            else:
                chk.equal(tag + "purge leaves nothing behind", left, [])
            chk.check(tag + "no /var/lib/mailwarden after purge", not exists("/var/lib/mailwarden"))
            # the next round starts without the account
            sh("for f in passwd group shadow gshadow; do sed -i '/^mailwarden:/d' /etc/$f; done", check=True)
    finally:
        try:
            os.killpg(ns.pid, signal.SIGKILL)
        except OSError:
            pass
        ns.wait()
        nslog.close()


if __name__ == "__main__":
    H.run_test(test, "deb", timeout=1800)
