#!/usr/bin/python3
"""test_dkim_verifiers.py - signatures mailwarden makes verify with independent
verifiers: dkimpy (python3-dkim) and OpenDKIM's own verifier (opendkim -t with
TestPublicKeys).

Keys come from `mailwarden keygen` (RSA-2048 and Ed25519); its printed zone
record is what the verifiers are given, so the record format is tested too.
Messages are signed with both keys (dual), in relaxed/relaxed and
simple/simple, through `mailwarden check --json` when it reports
signatures_added, else through a tiny C driver built here against the
checks-layer libraries in MW_BUILD_DIR (mw_dkim_msg_* directly).

Environment: MW_BINARY, MW_SOURCE_DIR, MW_BUILD_DIR (set by ctest).
Exit: 0 all passed, 1 any failure, 77 skipped (a verifier or build input missing).
Prints "N passed, N failed".
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC = os.environ.get("MW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MW_BUILD_DIR", "")
BINARY = os.environ.get("MW_BINARY", os.path.join(BUILD, "mailwarden"))
SHARED = os.path.join(SRC, "..", "shared", "conformance")

DRIVER_C = r"""
/* sign driver for test_dkim_verifiers.py (until `check` signs); keys come
 * from the daemon binary's own keygen. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "dkim.h"
#include "buf.h"
int main(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[1], "sign") != 0)
        return 2;
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(argv[2], NULL, &errs);
    mw_dkim_signer *s = cfg ? mw_dkim_signer_create(cfg, &errs) : NULL;
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msg[i]);
    if (s == NULL)
        return 2;
    size_t keys[8], nk;
    char why[256];
    nk = mw_dkim_signer_lookup(s, argv[3], keys, 8, why, sizeof why);
    if (nk == 0) {
        fprintf(stderr, "%s\n", why);
        return 3;
    }
    mw_buf in = MW_BUF_INIT;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, stdin)) > 0)
        mw_buf_append(&in, tmp, n);
    mw_buf_puts(&in, "");
    mw_dkim_msg *m = mw_dkim_msg_begin(NULL, s, keys, nk, "drv");
    char *p = in.data, *body;
    mw_buf name = MW_BUF_INIT, val = MW_BUF_INIT;
    int have = 0;
    for (;;) {
        char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        size_t l2 = len > 0 && p[len - 1] == '\r' ? len - 1 : len;
        int cont = l2 > 0 && (p[0] == ' ' || p[0] == '\t');
        if (have && !cont) {
            mw_dkim_msg_header(m, name.data, val.data ? val.data : "", val.len);
            have = 0;
        }
        if (l2 == 0 || !eol) { p = eol ? eol + 1 : p + len; break; }
        if (cont) { mw_buf_putc(&val, '\n'); mw_buf_append(&val, p, l2); }
        else {
            char *c = memchr(p, ':', l2);
            if (c) {
                mw_buf_reset(&name); mw_buf_reset(&val);
                mw_buf_append(&name, p, (size_t)(c - p));
                mw_buf_append(&val, c + 1, l2 - (size_t)(c - p) - 1); mw_buf_puts(&val, "");
                have = 1;
            }
        }
        p = eol + 1;
    }
    body = p;
    mw_dkim_msg_eoh(m);
    size_t blen = strlen(body);
    for (size_t off = 0; off < blen; off += 1000)
        mw_dkim_msg_body(m, (unsigned char *)body + off, blen - off < 1000 ? blen - off : 1000);
    char **sigs = NULL;
    size_t nsigs = 0;
    mw_dkim_msg_end(m, NULL, &sigs, &nsigs);
    for (size_t i = 0; i < nsigs; i++)
        printf("DKIM-Signature: %s\n", sigs[i]);
    fputs(in.data, stdout);
    mw_dkim_sigs_free(sigs, nsigs);
    mw_dkim_msg_free(&m);
    mw_dkim_signer_destroy(&s);
    mw_config_free(&cfg);
    return nsigs == nk ? 0 : 4;
}
"""

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL: " + what, file=sys.stderr)
    return ok


def skip(why):
    print("SKIP: " + why)
    print("0 passed, 0 failed")
    sys.exit(77)


def build_driver(tmp):
    """Compile the driver against the layer libraries of MW_BUILD_DIR."""
    inc = os.path.join(SRC, "include", "mailwarden")
    libs = [os.path.join(BUILD, "libmw_%s.a" % l) for l in ("checks", "core", "util")]
    if not all(os.path.exists(l) for l in libs) or shutil.which("cc") is None:
        return None
    src = os.path.join(tmp, "drv.c")
    with open(src, "w") as f:
        f.write(DRIVER_C)
    exe = os.path.join(tmp, "drv")
    cmd = (["cc", "-std=c17", "-D_GNU_SOURCE", "-o", exe, src]
           + ["-I" + os.path.join(inc, d) for d in ("tools", "checks", "core", "util")]
           + libs + ["-lspf2", "-lunbound", "-lconfig", "-lopendkim", "-lcrypto", "-lpthread"])
    # Sanitizer builds: the libraries need the runtime too.
    cache = os.path.join(BUILD, "CMakeCache.txt")
    if os.path.exists(cache) and re.search(r"^MW_SANITIZE:BOOL=ON", open(cache).read(), re.M):
        cmd += ["-fsanitize=address,undefined"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return None
    return exe


def keygen(tool, tmp, sel, typ):
    r = subprocess.run(tool + ["keygen", "--domain", "example.com", "--selector", sel,
                               "--type", typ, "--out", tmp], capture_output=True, text=True)
    if not check(r.returncode == 0, "keygen %s: %s" % (typ, r.stderr)):
        return None
    path = os.path.join(tmp, sel + ".private")
    check(os.stat(path).st_mode & 0o777 == 0o600, "key file mode 0600")
    m = re.match(r'^(\S+)\._domainkey\.example\.com\. IN TXT \((( "[^"]*")+) \)$', r.stdout.strip())
    if not check(m is not None, "zone-file record syntax: %r" % r.stdout):
        return None
    parts = re.findall(r'"([^"]*)"', m.group(2))
    check(all(len(p) <= 255 for p in parts), "strings <= 255 bytes")
    return "".join(parts)


def dkimpy_verify(msg, records):
    import dkim

    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip(".").lower(), "").encode() or None

    def one(i):
        try:
            return dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
        except dkim.ValidationError:
            return False

    n = len(re.findall(rb"^DKIM-Signature:", msg, re.M | re.I))
    return [one(i) for i in range(n)]


def opendkim_verify(tmp, msgfile, records):
    """opendkim -t in verify mode with the keys from a TestPublicKeys file."""
    keys = os.path.join(tmp, "testkeys")
    with open(keys, "w") as f:
        for name, rec in records.items():
            f.write("%s %s\n" % (name, rec))
    conf = os.path.join(tmp, "opendkim.conf")
    with open(conf, "w") as f:
        f.write("Mode v\nTestPublicKeys %s\nSyslog no\nMinimumKeyBits 1024\n"
                "AlwaysAddARHeader yes\n" % keys)
    r = subprocess.run(["/usr/sbin/opendkim", "-x", conf, "-vvv", "-t", msgfile],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def main():
    if shutil.which("/usr/sbin/opendkim") is None:
        skip("opendkim not installed (contrib/install-deps.sh --test)")
    try:
        import dkim  # noqa: F401
    except ImportError:
        skip("python3-dkim not installed")
    tmp = tempfile.mkdtemp(prefix="mw-dkimv-")
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def signed_by_check(tmp, conf, msg):
    """Sign through `mailwarden check --json` if it already signs, else None."""
    if not os.path.exists(BINARY):
        return None
    r = subprocess.run([BINARY, "check", "-c", conf, "--json", "--auth", "user",
                        "--ip", "192.0.2.1", "--from", "joe@example.com", "--rcpt", "sue@example.net"],
                       input=msg, capture_output=True)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        return None
    if not out.get("signatures_added"):
        return None   # e.g. a From outside the signing table: the driver signs for joe@example.com
    # headers.add is a list of [name, value] pairs, top first
    add = [h for h in out.get("headers", {}).get("add", [])
           if isinstance(h, list) and h[0].lower() == "dkim-signature"]
    return b"".join(b"DKIM-Signature: " + h[1].encode() + b"\n" for h in add) + msg


def run(tmp):
    drv = build_driver(tmp)
    if drv is None:
        skip("cannot build the signing driver against MW_BUILD_DIR=%r" % BUILD)
    # keygen: the real binary (keygen.c now needs the tools layer: privilege drop, config)
    tool = [BINARY]
    records = {}
    for sel, typ in (("rsa2024", "rsa"), ("ed2024", "ed25519")):
        rec = keygen(tool, tmp, sel, typ)
        if rec is None:
            return
        records["%s._domainkey.example.com" % sel] = rec

    messages = {
        "plain": b"From: Joe <joe@example.com>\nTo: Sue <sue@example.net>\nSubject: test\n"
                 b"Date: Tue, 4 Jun 2024 10:00:00 +0000\nMessage-ID: <a@example.com>\n\n"
                 b"Hello   there  \n\n\n",
        "folded": b"From: Joe <joe@example.com>\nTo: a@example.net,\n\tb@example.net\n"
                  b"Subject: a folded\n subject line\nMIME-Version: 1.0\n"
                  b"Content-Type: text/plain\n\n" + b"x" * 900 + b"\n" + b"line\n" * 300,
        "empty-body": b"From: joe@example.com\nSubject: nothing\n\n",
    }
    for name in ("test.message", "ed25519test.msg", "rfc6376.msg"):
        path = os.path.join(SHARED, "dkimpy", name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                messages[name] = f.read().replace(b"\r\n", b"\n")

    for canon in ("relaxed/relaxed", "simple/simple", "relaxed/simple"):
        conf = os.path.join(tmp, "mw-%s.conf" % canon.replace("/", "-"))
        with open(conf, "w") as f:
            f.write('dkim = {\n keys = (\n'
                    '  { name = "rsa"; domain = "example.com"; selector = "rsa2024"; '
                    'file = "%s/rsa2024.private"; },\n'
                    '  { name = "ed"; domain = "example.com"; selector = "ed2024"; '
                    'file = "%s/ed2024.private"; }\n );\n'
                    ' signing = ( { pattern = "*@example.com"; keys = [ "rsa", "ed" ]; } );\n'
                    ' canonicalization = "%s";\n};\n' % (tmp, tmp, canon))
        for mname, msg in messages.items():
            what = "%s %s" % (canon, mname)
            signed = signed_by_check(tmp, conf, msg)
            if signed is None:
                r = subprocess.run([drv, "sign", conf, "joe@example.com"], input=msg,
                                   capture_output=True,
                                   env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
                if not check(r.returncode == 0, "%s: sign: %s" % (what, r.stderr.decode())):
                    continue
                signed = r.stdout
            crlf = signed.replace(b"\n", b"\r\n")
            check(crlf.count(b"DKIM-Signature:") == 2, "%s: two signatures" % what)
            check(b"c=" + canon.encode() in signed, "%s: c=%s" % (what, canon))
            res = dkimpy_verify(crlf, records)
            check(res == [True, True], "%s: dkimpy verifies both: %s" % (what, res))
            # OpenDKIM: each signature alone (its test mode reports one result).
            sigs = re.findall(rb"^DKIM-Signature:.*?\n(?![ \t])", signed, re.M | re.S)
            body = signed[sum(len(s) for s in sigs):]
            for i, sig in enumerate(sigs):
                mf = os.path.join(tmp, "v.eml")
                with open(mf, "wb") as f:
                    f.write((sig + body).replace(b"\n", b"\r\n"))
                rc, out = opendkim_verify(tmp, mf, records)
                check(rc == 0 and "dkim=pass" in out,
                      "%s: opendkim verifies signature %d: rc=%d %s" % (what, i, rc, out[-400:]))
                with open(mf, "wb") as f:
                    f.write((sig + body).replace(b"\n", b"\r\n").replace(b"\r\n\r\n", b"\r\n\r\nX\r\n", 1))
                rc, out = opendkim_verify(tmp, mf, records)
                check("dkim=fail" in out and "dkim=pass" not in out,
                      "%s: opendkim rejects a changed body, signature %d: %s" % (what, i, out[-300:]))
            # A changed body fails both verifiers.
            tampered = crlf.replace(b"\r\n\r\n", b"\r\n\r\nX", 1)
            res = dkimpy_verify(tampered, records)
            check(res == [False, False], "%s: dkimpy rejects a changed body: %s" % (what, res))


if __name__ == "__main__":
    sys.exit(main())
