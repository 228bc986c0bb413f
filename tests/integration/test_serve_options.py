#!/usr/bin/python3
"""`serve --help`, mailwarden(8) and the README list the same serve options.

The options are read from the three places: the usage synopsis printed by `serve --help`
(its bracketed part) and its option list, the SYNOPSIS entry `mailwarden serve` of
docs/mailwarden.8 and its OPTIONS section, and the `mailwarden serve [...]` line of
README.md. The sets must be equal, and serve must really accept each option (run with
it, then --help: an unknown option is refused before --help is reached).
"""
import os, re, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

OPT = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")
# the same option, two spellings: compared by the long name
SHORT = {"-f": "--foreground", "-c": "--config", "-h": "--help"}


def norm(opts):
    return {SHORT.get(o, o) for o in opts} - {"--help"}


def test(h, chk):
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    rc, help_text = H.run([H.MW_BINARY, "serve", "--help"], timeout=10, check=False)
    chk.equal("serve --help exits 0", rc, 0)
    synopsis = help_text.split("Runs the milter")[0]
    listed = "\n".join(l for l in help_text.splitlines() if l.startswith("  -"))
    help_syn = norm(OPT.findall(synopsis))
    help_list = norm(o for pair in re.findall(r"^  (-[\w-]+)(?:, (--[\w-]+))?", listed, re.M)
                     for o in pair if o)
    chk.check("serve --help: synopsis and option list agree", help_syn == help_list,
              "only in synopsis %s, only in list %s" % (help_syn - help_list, help_list - help_syn))

    with open(os.path.join(H.SOURCE_DIR, "docs", "mailwarden.8")) as f:
        man = f.read().replace("\\-", "-")
    m = re.search(r"^\.B mailwarden serve\n(.*?)^\.PP", man, re.M | re.S)
    man_syn = norm(OPT.findall(m.group(1))) if m else set()
    opts_sec = re.search(r"^\.SH OPTIONS\n(.*?)^\.SH ", man, re.M | re.S)
    man_opts = set()
    for line in (opts_sec.group(1) if opts_sec else "").splitlines():
        if line.startswith((".BI", ".BR", ".B ")) and line.split()[1:2] and line.split()[1].startswith("-"):
            man_opts |= set(OPT.findall(line))
    man_opts = norm(man_opts)

    with open(os.path.join(H.SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    r = re.search(r"`mailwarden serve (\[[^`]*)`", readme)
    readme_syn = norm(OPT.findall(r.group(1))) if r else set()

    chk.check("serve --help lists options (%d)" % len(help_syn), len(help_syn) >= 10, help_syn)
    chk.check("mailwarden(8) SYNOPSIS == serve --help", man_syn == help_syn,
              "only in man %s, only in --help %s" % (man_syn - help_syn, help_syn - man_syn))
    chk.check("mailwarden(8) OPTIONS describes every serve option", help_syn <= man_opts,
              "missing %s" % (help_syn - man_opts))
    chk.check("README's serve line == serve --help", readme_syn == help_syn,
              "only in README %s, only in --help %s" % (readme_syn - help_syn, help_syn - readme_syn))

    # each option is really accepted by serve (a value where it takes one)
    conf = h.write("mw.conf", "")
    values = {"--config": conf, "--socket": "inet:8894@127.0.0.1", "--dns": "127.0.0.1@53",
              "--authserv-id": "mx.test.example", "--internal": "10.0.0.0/8", "--policy": "default",
              "--sign": "example.org:s1:/nonexistent.key", "--pid-file": "/run/x.pid", "--user": "root",
              "--group": "root", "--redis": "127.0.0.1:6379", "--history": "/tmp/h"}
    for o in sorted(help_syn):
        argv = [H.MW_BINARY, "serve", o] + ([values[o]] if o in values else []) + ["--help"]
        rc, out = H.run(argv, timeout=10, check=False)
        chk.check("serve accepts %s (rc %s)" % (o, rc), rc == 0 and "usage" in out, out[-300:])


if __name__ == "__main__":
    H.run_test(test, "serve_options", timeout=120)
