#!/usr/bin/python3
"""DKIM key DNSSEC state and partial-body (l=) signatures (issue 4), through `mailwarden check`.

NSD serves two zones; the daemon's resolver validates with a trust anchor file holding the
DNSKEY of sec.test (an RFC 5011 anchor file names one zone):
  - sec.test, signed with ldns-signzone: selector s1 -> the A-R comment says "secure";
    selector s2, whose key record was altered after signing (its RRSIG no longer matches)
    -> "bogus", and the signature never passes;
  - plain.test: unsigned, outside the anchor -> "unprotected".
Without a trust anchor no DNSSEC state is claimed at all.
l= (dkimpy signs with length=True, relaxed/relaxed):
  - body exactly as signed -> pass;
  - text appended after signing (the classic l= abuse) -> neutral, "covers only part";
  - body cut shorter than l= -> fail, "l= is longer than the body".
"""
import glob, json, os, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
import harness as H

SEL = "s1"


def need(tool):
    if subprocess.run(["sh", "-c", "command -v %s" % tool], capture_output=True).returncode != 0:
        raise H.Skip("%s missing (contrib/install-deps.sh --test installs ldnsutils)" % tool)


def rsa_key(h, name):
    """(PEM private key bytes, base64 SubjectPublicKeyInfo) for a new RSA-2048 key."""
    pem = h.path(name + ".pem")
    H.run(["openssl", "genrsa", "-out", pem, "2048"], timeout=60)
    der = subprocess.run(["openssl", "rsa", "-in", pem, "-pubout", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    import base64
    with open(pem, "rb") as f:
        return f.read(), base64.b64encode(der).decode()


def key_txt(b64):
    rdata = "v=DKIM1; k=rsa; p=" + b64
    return " ".join('"%s"' % rdata[i:i + 200] for i in range(0, len(rdata), 200))


def signed_zone(h, origin, records, tamper=None):
    """Zone text for origin signed with a fresh KSK (ldns), and the DNSKEY line for the
    anchor file.  tamper(text) -> text alters the signed zone afterwards."""
    d = h.path("zsk-" + origin)
    os.makedirs(d)
    zf = os.path.join(d, origin + ".zone")
    with open(zf, "w") as f:
        f.write(H.ZONE_HEAD.format(origin=origin) + records + "\n")
    base = subprocess.run(["ldns-keygen", "-a", "RSASHA256", "-b", "2048", "-k", origin], cwd=d,
                          capture_output=True, text=True, check=True).stdout.strip()
    H.run(["ldns-signzone", "-e", "20371231000000", zf, os.path.join(d, base)], timeout=60)
    with open(zf + ".signed") as f:
        text = f.read()
    with open(glob.glob(os.path.join(d, base + ".key"))[0]) as f:
        dnskey = f.read().strip()
    return (tamper(text) if tamper else text), dnskey


def dkim_sign(msg, domain, key, length=False, sel=SEL):
    import dkim
    sig = dkim.sign(msg, sel.encode(), domain.encode(), key, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date"], length=length)
    return sig + msg


def message(domain, body=b"Hello,\r\nthis is the body.\r\n"):
    return (b"From: Alice <alice@%s>\r\nTo: bob@example.net\r\nSubject: dnssec and l=\r\n"
            b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <m1@%s>\r\n\r\n"
            % (domain.encode(), domain.encode())) + body


def check(h, port, conf, domain, msg):
    r = subprocess.run([H.MW_BINARY, "check", "-c", conf, "--dns", "127.0.0.1@%d" % port,
                        "--authserv-id", H.AUTHSERV_ID, "--ip", "192.0.2.1",
                        "--from", "alice@" + domain, "--rcpt", "bob@example.net", "--json"],
                       input=msg, capture_output=True, timeout=60)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError("check printed no JSON (rc %d): %s" % (r.returncode, r.stderr[-800:]))
    ar = [v for n, v in out["headers"]["add"] if n.lower() == "authentication-results"]
    return out, (ar[0] if ar else "")


def dkim_ar(ar):
    """The result of the first dkim= resinfo in an A-R value."""
    _, res = H.parse_ar(ar)
    for meth, result, props in res:
        if meth == "dkim":
            return result
    return None


def test(h, chk):
    need("ldns-keygen")
    need("ldns-signzone")
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    keys = {d: rsa_key(h, d) for d in ("sec.test", "bad", "plain.test")}
    _, other_b64 = rsa_key(h, "other")
    sec_recs = "%s._domainkey IN TXT %s\ns2._domainkey IN TXT %s\n" % (
        SEL, key_txt(keys["sec.test"][1]), key_txt(keys["bad"][1]))
    # after signing, swap s2's p= for another key's: its RRSIG no longer matches
    sec_text, sec_key = signed_zone(h, "sec.test", sec_recs,
                                    tamper=lambda t: t.replace(keys["bad"][1][100:140], other_b64[100:140]))
    chk.check("s2._domainkey.sec.test was altered after signing", sec_text.count(other_b64[100:140]) == 1)
    port = h.start_nsd({"sec.test": sec_text,
                        "plain.test": "%s._domainkey IN TXT %s\n" % (SEL, key_txt(keys["plain.test"][1]))},
                       complete=("sec.test",))
    anchors = h.path("anchors.key")
    with open(anchors, "w") as f:
        f.write(sec_key + "\n")
    conf = h.write("dnssec.conf", 'dns = { trust_anchor = "%s"; };\n' % anchors)
    plainconf = h.write("plain.conf", "")

    cases = [("sec.test", "pass", "secure"), ("plain.test", "pass", "unprotected")]
    for dom, want, state in cases:
        out, ar = check(h, port, conf, dom, dkim_sign(message(dom), dom, keys[dom][0]))
        chk.equal("%s: dkim=%s with a trust anchor" % (dom, want), dkim_ar(ar), want)
        chk.check("%s: A-R comment names the key size and DNSSEC state %s" % (dom, state),
                  "2048-bit key; %s" % state in ar, ar)
    out, ar = check(h, port, conf, "sec.test", dkim_sign(message("sec.test"), "sec.test", keys["bad"][0], sel="s2"))
    res = dkim_ar(ar)
    chk.check("s2 (bogus key record): never passes", res in ("temperror", "permerror", "fail"),
              "%s: %s" % (res, ar))
    chk.check("s2 (bogus key record): the A-R says bogus", "bogus" in ar, ar)
    out, ar = check(h, port, plainconf, "sec.test", dkim_sign(message("sec.test"), "sec.test", keys["sec.test"][0]))
    chk.equal("no trust anchor: dkim=pass", dkim_ar(ar), "pass")
    chk.check("no trust anchor: no DNSSEC state claimed",
              not any(w in ar for w in ("secure", "unprotected", "bogus")), ar)

    # l=: partial-body signatures
    k = keys["plain.test"][0]
    body = b"Hello,\r\nthis is the body.\r\n"
    signed = dkim_sign(message("plain.test", body), "plain.test", k, length=True)
    chk.check("the l= signature carries l=", b"l=" in signed.split(b"\r\n\r\n")[0])
    out, ar = check(h, port, plainconf, "plain.test", signed)
    chk.equal("l= covering the whole body: pass", dkim_ar(ar), "pass")
    out, ar = check(h, port, plainconf, "plain.test", signed + b"\r\nClick here: https://evil.example/\r\n")
    chk.equal("text appended after l=: neutral", dkim_ar(ar), "neutral")
    chk.check("appended text: the reason says the signature covers only part of the body",
              "covers only part" in ar, ar)
    dm = [x for x in out["dkim"]]
    chk.check("appended text: check --json reports neutral too",
              dm and dm[0].get("result") == "neutral", json.dumps(dm)[:400])
    cut = signed[:-len(b"this is the body.\r\n")] + b"this\r\n"
    out, ar = check(h, port, plainconf, "plain.test", cut)
    chk.equal("body shorter than l=: fail", dkim_ar(ar), "fail")
    chk.check("body shorter than l=: reason names l=", "l= is longer than the body" in ar, ar)


if __name__ == "__main__":
    H.run_test(test, "dkimsec", timeout=300)
