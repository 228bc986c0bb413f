#!/usr/bin/python3
"""DKIM signing and verification through a real Postfix (issue 4, item 5).

Keys: RSA-2048 and Ed25519 from `mailwarden keygen`; the printed zone-file records are
pasted verbatim into the NSD zone for dkim.test (with its SPF record), so NSD itself
checks the record syntax. The daemon signs with both (`--sign` twice, same domain).
Proves:
  - SASL submission (pf.submit, {auth_authen}): both the maildir copy and the copy
    relayed to the smtp-sink carry exactly two DKIM-Signatures (d=dkim.test, s=r2048
    rsa-sha256 and s=ed ed25519-sha256) that dkimpy verifies with exactly the published
    records (and rejects once the body is changed); a subdomain sender is signed too; the
    summary line says signed=...; mail from the internal network (127.0.0.1) is signed;
    authenticated mail from a domain without a key is not, and the log says why.
  - unauthenticated mail from the namespace client is not signed (no DKIM-Signature),
    gets dkim=none, and `mailwarden check` explains why.
  - inbound through the MX port: our signed message re-injected gets dkim=pass for both
    signatures with header.d/i/s/a/b (header.b a >= 8-char prefix of b=); a changed body
    gets dkim=fail; a key with a revoked record (p=) is not pass (permerror or fail);
    with testdns timing out one selector that signature gets dkim=temperror while the two
    others still pass and the message is delivered (default policy); a third-party
    simple/simple signature passes (headers reach the verifier byte-exact); duplicate tags
    make a signature permerror without a key lookup (RFC 6376 3.2).
  - with dkim.canonicalization = simple/simple our signatures still verify after Postfix
    wrote them, and added headers have the usual blank after the colon.
  - hostile DKIM-Signature headers (missing tags, huge values, bad base64, duplicate
    tags, junk, 8-bit, 3000 signatures) are accepted and delivered within seconds, the
    worker never dies, and the next message is handled normally.
"""
import json, os, re, subprocess, sys, time, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

DOM = "dkim.test"
HOSTILE_DEADLINE = 10.0      # seconds for the message with hostile signatures


def keygen(h, keydir, sel, typ, bits=None):
    argv = [H.MW_BINARY, "keygen", "--domain", DOM, "--selector", sel, "--type", typ, "--out", keydir]
    argv += ["--bits", str(bits)] if bits else []
    out = H.run(argv, timeout=60)[1]
    line = [l for l in out.splitlines() if "IN TXT" in l][0]
    return line, "".join(re.findall(r'"([^"]*)"', line))


def tags(value):
    """DKIM-Signature tag list -> {tag: value without whitespace} (first occurrence)."""
    out = {}
    for part in value.split(";"):
        k, _, v = part.partition("=")
        out.setdefault(k.strip(), re.sub(r"\s+", "", v))
    return out


def strip_delivery(raw):
    """The recipe's dkimverify.py: drop smtp-sink pseudo headers and its Received (and
    the maildir's Return-Path/Delivered-To); CRLF line ends."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    while lines and re.match(rb"(X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args)"
                             rb"|Return-Path|Delivered-To):", lines[0]):
        lines.pop(0)
    if lines and lines[0].startswith(b"Received: from") and b"smtp-sink" in b"\n".join(lines[:3]):
        lines.pop(0)
        while lines and lines[0][:1] in (b" ", b"\t"):
            lines.pop(0)
    return b"\r\n".join(lines)


def dkimpy_verify(msg, records):
    import dkim

    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip(".").lower(), "").encode() or None
    n = len(re.findall(rb"^DKIM-Signature:", msg, re.M | re.I))
    res = []
    for i in range(n):
        try:
            res.append(bool(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)))
        except Exception:
            res.append(False)
    return res


def dkimpy_sign(msg, sel, keyfile, canon=(b"relaxed", b"simple")):
    import dkim
    with open(keyfile, "rb") as f:
        key = f.read()
    return dkim.sign(msg, sel.encode(), DOM.encode(), key, canonicalize=canon,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + msg


def change_body(msg):
    head, _, body = msg.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n" + b"CHANGED AFTER SIGNING\r\n" + body


def summary_line(daemon, queue_id):
    if not queue_id:
        return None
    line = H.wait_for(lambda: next((l for l in daemon.log_text().splitlines()
                                    if "message" in l and queue_id in l), None), 5)
    return line


def dkim_results(chk, label, m):
    """[(result, props)] of dkim in our (single) A-R, plus the raw A-R value."""
    ours = H.ar_headers(m)
    if not chk.check("%s: exactly one A-R with our authserv-id" % label, len(ours) == 1, ours):
        return [], ""
    try:
        _, res = H.parse_ar(ours[0])
    except Exception as e:
        chk.check("%s: A-R parses with authres" % label, False, "%s: %r" % (e, ours[0]))
        return [], ours[0]
    return [(r, p) for meth, r, p in res if meth == "dkim"], ours[0]


def deliver(chk, pf, label, res, token, rcpt_sub=None):
    if not chk.check("%s: accepted (250)" % label, res.code == "250", res.final or res.transcript[-600:]):
        return None
    m = H.wait_for(lambda: [x for x in pf.find(token) if rcpt_sub is None or rcpt_sub in x.path], 15)
    chk.check("%s: delivered%s" % (label, " to " + rcpt_sub if rcpt_sub else ""), m)
    return m[0] if m else None


def reinject(h, pf, data):
    """Send raw data from the namespace client to the MX port, to a fresh recipient (the
    maildir copy then carries Delivered-To: <it>, so signed data need not change)."""
    rcpt = "r-%s@dest.test" % uuid.uuid4().hex[:12]
    path = h.path(rcpt + ".eml")
    with open(path, "wb") as f:
        f.write(data)
    t0 = time.monotonic()
    res = pf.send("alice@" + DOM, rcpt, helo="mail.dkim.test", data=path)
    return res, time.monotonic() - t0, "Delivered-To: " + rcpt


def hostile_message(token, bh):
    junk_b = "Zm9v" * 15000                                   # 60 KB of base64
    fold = lambda s, n=70: "\r\n\t".join(s[i:i + n] for i in range(0, len(s), n))
    good = "c=relaxed/relaxed; d=dkim.test; s=r2048; h=from:subject; bh=%s" % bh
    longd = ".".join(["x" * 63] * 14) + ".dkim.test"          # ~900 chars
    sigs = [
        "", "v=1", "v=1; a=rsa-sha256; d=dkim.test",                                      # missing tags
        "v=1; a=rsa-sha256; %s; b=!!!not*base64@@@==" % good,                             # bad base64
        "v=1; a=rsa-sha256; %s; b=AAAA; bh=AAAA; s=ed; d=evil.test; a=ed25519-sha256" % good,  # duplicates
        "v=1; a=rsa-sha256; %s; b=%s" % (good, fold(junk_b)),                             # huge b=
        "v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=r2048; h=from; bh=%s; b=AAAA" % (longd, bh),
        "v=1; a=rsa-sha256; c=relaxed; d=dkim.test; s=%s; h=from; bh=%s; b=AAAA" % ("s" * 900, bh),
        "v=1; a=rsa-sha256; d=dkim.test; s=r2048; bh=%s; b=AAAA; h=%s" % (bh, fold("from:" * 3000)),
        "v=1; a=rsa-sha256; %s; l=99999999999999999999999999; t=99999999999999999999; x=1; b=AAAA" % good,
        "v=1; a=rsa-sha999; %s; b=AAAA" % good, "v=2; a=rsa-sha256; %s; b=AAAA" % good,
        "v=1; a=rsa-sha256; %s; i=@evil.test; q=http/get; b=AAAA" % good,
        "v=1; ;;;; ==== ; a=; d=; s=; =x; b==; %s" % ("\\" * 50),
        "v=1; a=rsa-sha256; d=d\u00e9kim.test; s=\u00e9; h=from; bh=%s; b=AAAA" % bh,   # 8-bit
    ]
    sigs += ["v=1; a=rsa-sha256; c=relaxed/relaxed; d=dkim.test; s=n%d; h=from; bh=%s; b=QUFB%04d"
             % (i, bh, i) for i in range(3000)]
    head = ["DKIM-Signature: " + s for s in sigs]
    head += ["From: Alice <alice@dkim.test>", "To: bob@dest.test", "Subject: hostile %s" % token,
             "Date: Mon, 1 Jan 2024 00:00:00 +0000", "Message-ID: <%s@dkim.test>" % token]
    return ("\r\n".join(head) + "\r\n\r\nhostile body %s\r\n" % token).encode("utf-8")


def test(h, chk):
    try:
        import dkim, authres  # noqa: F401
    except ImportError as e:
        raise H.Skip("python3-dkim / python3-authres missing: %s" % e)
    if not os.access(H.MW_BINARY, os.X_OK):
        raise H.Skip("daemon binary %s not built" % H.MW_BINARY)
    ns = h.create_netns()
    keydir = h.path("keys")
    os.makedirs(keydir, mode=0o700)
    lines, records, strings = [], {}, {}
    for sel, typ, bits in (("r2048", "rsa", 2048), ("ed", "ed25519", None), ("rev", "rsa", 2048),
                           ("slow", "rsa", 2048)):
        line, txt = keygen(h, keydir, sel, typ, bits)
        if sel in ("r2048", "ed"):
            lines.append(line)
            records["%s._domainkey.%s" % (sel, DOM)] = txt
            strings[sel] = re.findall(r'"([^"]*)"', line)
    chk.check("keygen: RSA record is k=rsa and split into <=255-byte strings",
              "k=rsa" in records["r2048._domainkey." + DOM] and all(len(s) <= 255 for s in strings["r2048"])
              and len(strings["r2048"]) >= 2, strings["r2048"])
    chk.check("keygen: Ed25519 record is k=ed25519", "k=ed25519" in records["ed._domainkey." + DOM],
              records["ed._domainkey." + DOM])
    spf = "v=spf1 ip4:127.0.0.0/8 ip4:%s -all" % ns.ns_addr
    zone = "\n".join(lines + ['@ IN TXT "%s"' % spf, 'mail IN A %s' % ns.ns_addr,
                              'rev._domainkey IN TXT "v=DKIM1; k=rsa; p="'])
    nsd = h.start_nsd({DOM: zone})              # nsd-checkzone accepts the printed records
    got = H.dns_query(nsd, "r2048._domainkey." + DOM, "TXT")
    chk.check("NSD serves the printed RSA record unchanged",
              got is not None and got.rr and b"".join(got.rr[0].rdata.data).decode() == records["r2048._domainkey." + DOM])
    conf = h.write("mw.conf", "dns = { timeout = 1500; };\n")
    sign = ["-c", conf, "--sign", "%s:r2048:%s/r2048.private" % (DOM, keydir),
            "--sign", "%s:ed:%s/ed.private" % (DOM, keydir)]
    daemon = h.start_daemon(dns=[nsd], args=sign)
    pf = h.start_postfix(daemon.port, netns=ns, submission=True)

    # ---- 2. SASL submission: dual-signed, both verify with dkimpy
    token = "tok-%s" % uuid.uuid4().hex
    res = pf.submit("alice@" + DOM, "alice@" + DOM, "bob@dest.test,carol@sink.test",
                    headers=["From: Alice <alice@dkim.test>", "Subject: dual %s" % token],
                    body="Signed twice.\n\n  trailing  spaces  \n")
    signed = None
    for where in (pf.maildir + "/", pf.sinkdir + "/"):
        m = deliver(chk, pf, "submission", res, token, where)
        if m is None:
            continue
        sigs = m.get_all("DKIM-Signature")
        tl = [tags(v) for v in sigs]
        where = "/sink" if where.startswith(pf.sinkdir) else "/maildir"
        chk.equal("submission%s: two DKIM-Signatures" % where, len(sigs), 2)
        chk.equal("submission%s: d=/s=/a= of the signatures" % where,
                  sorted((t.get("d"), t.get("s"), t.get("a")) for t in tl),
                  [(DOM, "ed", "ed25519-sha256"), (DOM, "r2048", "rsa-sha256")])
        msg = strip_delivery(m.raw)
        chk.equal("submission%s: dkimpy verifies both with the published records" % where,
                  dkimpy_verify(msg, records), [True, True])
        chk.equal("submission%s: dkimpy rejects both once the body is changed" % where,
                  dkimpy_verify(change_body(msg), records), [False, False])
        if where == "/sink":
            signed, signed_copy = msg, m
    line = summary_line(daemon, res.queue_id)
    chk.check("submission: summary line trust=authenticated signed=dkim.test/r2048,dkim.test/ed",
              line and "trust=authenticated" in line and re.search(r"signed=\"?dkim\.test/r2048,dkim\.test/ed", line), line)

    token = "tok-%s" % uuid.uuid4().hex
    res = pf.submit("news", "news@lists.dkim.test", "bob@dest.test",
                    headers=["From: News <news@lists.dkim.test>", "Subject: subdomain %s" % token])
    m = deliver(chk, pf, "subdomain sender", res, token)
    if m:
        chk.equal("subdomain sender: signed d=dkim.test twice, both verify",
                  (sorted(tags(v).get("d") for v in m.get_all("DKIM-Signature")),
                   dkimpy_verify(strip_delivery(m.raw), records)), ([DOM, DOM], [True, True]))

    # a 300 KB body: Postfix hands it over in 64 KB chunks, which the daemon
    # takes in pieces as they are read (never a whole chunk buffered); every
    # line differs, so a byte out of place breaks both signatures
    token = "tok-%s" % uuid.uuid4().hex
    big_body = "".join("line %06d of the big body, %s\r\n" % (i, "x" * (i % 37)) for i in range(7000))
    big = h.write("big.eml", "From: Alice <alice@dkim.test>\r\nTo: bob@dest.test\r\nSubject: big %s\r\n"
                  "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <%s@dkim.test>\r\n\r\n%s"
                  % (token, token, big_body))
    res = pf.submit("alice@" + DOM, "alice@" + DOM, "bob@dest.test", data=big)
    m = deliver(chk, pf, "300 KB body", res, token)
    big_signed = None
    if m:
        big_signed = strip_delivery(m.raw)
        chk.check("300 KB body: delivered whole", len(big_signed) > 300000 and b"line 006999 " in big_signed,
                  len(big_signed))
        chk.equal("300 KB body: signed twice, dkimpy verifies both", dkimpy_verify(big_signed, records),
                  [True, True])

    token = "tok-%s" % uuid.uuid4().hex
    res = pf.send("alice@" + DOM, "bob@dest.test", external=False,
                  headers=["From: alice@dkim.test", "Subject: internal %s" % token])
    m = deliver(chk, pf, "internal 127.0.0.1", res, token)
    if m:
        chk.equal("internal 127.0.0.1: signed twice, both verify",
                  dkimpy_verify(strip_delivery(m.raw), records), [True, True])
    line = summary_line(daemon, res.queue_id)
    chk.check("internal 127.0.0.1: summary line trust=internal", line and "trust=internal" in line, line)

    token = "tok-%s" % uuid.uuid4().hex
    res = pf.submit("alice", "alice@other.test", "bob@dest.test",
                    headers=["From: alice@other.test", "Subject: no key %s" % token])
    m = deliver(chk, pf, "authenticated, no key for other.test", res, token)
    if m:
        chk.equal("no key for other.test: no DKIM-Signature", m.get_all("DKIM-Signature"), [])
    line = summary_line(daemon, res.queue_id)
    chk.check("no key for other.test: summary line has not_signed= naming the sender",
              line and re.search(r"not_signed=.*other\.test", line), line)

    # ---- 3. unauthenticated external mail is not signed
    token = "tok-%s" % uuid.uuid4().hex
    hdrs = ["From: Alice <alice@dkim.test>", "Subject: inbound unsigned %s" % token]
    res = pf.send("alice@" + DOM, "bob@dest.test", helo="mail.dkim.test", headers=hdrs)
    m = deliver(chk, pf, "external unauthenticated", res, token)
    if m:
        chk.equal("external unauthenticated: no DKIM-Signature added", m.get_all("DKIM-Signature"), [])
        dk, ar = dkim_results(chk, "external unauthenticated", m)
        chk.check("external unauthenticated: A-R dkim=none", [r for r, _ in dk] == ["none"], ar)
    line = summary_line(daemon, res.queue_id)
    chk.check("external unauthenticated: summary line trust=inbound, no signed=/not_signed=",
              line and "trust=inbound" in line and " signed=" not in line and "not_signed=" not in line, line)
    mf = h.write("inbound.eml", "\r\n".join(hdrs) + "\r\n\r\nbody\r\n")
    with open(mf, "rb") as f:
        p = subprocess.run([H.MW_BINARY, "check", "--json", "--dns", "127.0.0.1@%d" % nsd, "--ip", ns.ns_addr,
                            "--from", "alice@" + DOM, "--rcpt", "bob@dest.test"] + sign[2:],
                           stdin=f, capture_output=True, timeout=60)
    try:
        js = json.loads(p.stdout)
    except ValueError:
        js = {}
    why = [t for t in js.get("trace", []) if "not signed" in t]
    chk.check("check: inbound from %s not signed, trace says why" % ns.ns_addr,
              js.get("signatures_added") in ([], None) and why and ns.ns_addr in why[0]
              and "not internal" in why[0], (js.get("signatures_added"), js.get("trace")))

    # ---- 4. inbound verification through the MX port
    if signed is None:
        raise RuntimeError("no signed message to re-inject")
    b_of = {tags(v).get("s"): tags(v).get("b", "") for n, v in H.parse_headers(signed)
            if n.lower() == "dkim-signature"}
    res, _, mark = reinject(h, pf, signed)
    m = deliver(chk, pf, "re-injected signed message", res, mark)
    if m:
        dk, ar = dkim_results(chk, "re-injected", m)
        chk.equal("re-injected: dkim=pass for both signatures", sorted(r for r, _ in dk), ["pass", "pass"])
        for r, p in dk:
            s = p.get("header.s")
            bpref = p.get("header.b") or ""
            chk.check("re-injected: s=%s has header.d/s/a/b, header.b a >=8-char prefix of b=" % s,
                      p.get("header.d") == DOM and s in b_of
                      and p.get("header.a") == {"r2048": "rsa-sha256", "ed": "ed25519-sha256"}[s]
                      and len(bpref) >= 8 and b_of[s].startswith(bpref), (p, ar))
            # RFC 8601 pvalue allows a bare "@domain"; a quoted one is dropped by python3-authres
            chk.check("re-injected: s=%s header.i=@dkim.test, readable by authres" % s,
                      p.get("header.i") == "@" + DOM, (p, re.findall(r"header\.i=\S+", ar)))
        chk.check("re-injected: A-R comment names the 2048-bit key", "2048-bit key" in ar, ar)
        chk.check("milter-added headers have a blank after the colon (SMFIP_HDR_LEADSPC)",
                  b"\nAuthentication-Results: " in m.raw and b"\nDKIM-Signature: " in signed_copy.raw,
                  re.findall(rb"\n(?:Authentication-Results|DKIM-Signature):.{0,20}", m.raw))

    def inbound_case(label, data, want_fn, want_desc):
        res, secs, mark = reinject(h, pf, data)
        m = deliver(chk, pf, label, res, mark)
        if m:
            dk, ar = dkim_results(chk, label, m)
            chk.check("%s: %s" % (label, want_desc), want_fn([(p.get("header.s"), r) for r, p in dk]), ar)
            return secs, [r for r, _ in dk]
        return secs, None

    if big_signed is not None:
        inbound_case("re-injected 300 KB body", big_signed,
                     lambda d: sorted(r for _, r in d) == ["pass", "pass"], "dkim=pass for both")
    inbound_case("changed body", change_body(signed),
                 lambda d: sorted(r for _, r in d) == ["fail", "fail"], "dkim=fail for both")
    base = ("From: Alice <alice@dkim.test>\r\nTo: bob@dest.test\r\nSubject: %s\r\n"
            "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <%s@dkim.test>\r\n\r\nthird-party body\r\n")
    tok = "tok-%s" % uuid.uuid4().hex
    revoked = dkimpy_sign((base % ("revoked " + tok, tok)).encode(), "rev", keydir + "/rev.private")
    _, got = inbound_case("revoked key (p=)", revoked, lambda d: [r for _, r in d] in (["permerror"], ["fail"]),
                          "dkim=permerror or fail (not pass)")
    print("INFO revoked key reported as: %s" % got, flush=True)
    tok = "tok-%s" % uuid.uuid4().hex       # simple headers: verifier must see them byte-exact
    simple = dkimpy_sign((base % ("simple\r\n  folded   %s" % tok, tok)).replace("To: ", "To:   ").encode(),
                         "r2048", keydir + "/r2048.private", (b"simple", b"simple"))
    inbound_case("third-party simple/simple", simple, lambda d: [r for _, r in d] == ["pass"], "dkim=pass")
    tok = "tok-%s" % uuid.uuid4().hex
    dup = ("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=dkim.test; s=r2048; h=from:subject;"
           "\r\n\tbh=AAAA; b=QUFBQUFBQUE=; d=evil.test; s=ed; a=ed25519-sha256\r\n")
    inbound_case("duplicate tags", dup.encode() + (base % ("dup " + tok, tok)).encode(),
                 lambda d: [r for _, r in d] == ["permerror"], "dkim=permerror, no key lookup (RFC 6376 3.2)")

    # ---- 5. hostile DKIM-Signature headers (NSD daemon still running)
    tok = "tok-%s" % uuid.uuid4().hex
    bh = tags([v for n, v in H.parse_headers(signed) if n.lower() == "dkim-signature"][0])["bh"]
    res, secs, mark = reinject(h, pf, hostile_message(tok, bh))
    chk.check("hostile: accepted within %.0fs (took %.1fs)" % (HOSTILE_DEADLINE, secs),
              res.code == "250" and secs < HOSTILE_DEADLINE, res.final or res.transcript[-600:])
    m = deliver(chk, pf, "hostile", res, mark)
    if m:
        dk, ar = dkim_results(chk, "hostile", m)
        chk.check("hostile: no dkim=pass, at most 10 dkim results (max_signatures)",
                  dk and "pass" not in [r for r, _ in dk] and len(dk) <= 10, ar[:2000])
        print("INFO hostile (%.2fs): A-R %d bytes, results %s" % (secs, len(ar), [r for r, _ in dk]), flush=True)
    tok = "tok-%s" % uuid.uuid4().hex
    res = pf.send("alice@" + DOM, "bob@dest.test", helo="mail.dkim.test",
                  headers=["From: alice@dkim.test", "Subject: after hostile %s" % tok])
    m = deliver(chk, pf, "next message after hostile", res, tok)
    if m:
        chk.check("next message after hostile: has our A-R", H.ar_headers(m), m.headers[:5])
    chk.check("daemon worker never died", not re.search(r"worker (died|exited)", daemon.log_text()),
              [l for l in daemon.log_text().splitlines() if "worker" in l][:5])

    # ---- 4b. temperror: daemon on testdns, selector "slow" never answers
    tdns, _ = h.start_testdns({
        DOM: [{"TXT": spf}], "r2048._domainkey." + DOM: [{"TXT": strings["r2048"]}],
        "ed._domainkey." + DOM: [{"TXT": strings["ed"]}], "slow._domainkey." + DOM: ["TIMEOUT"]})
    daemon.stop()
    conf2 = h.write("mw-simple.conf", 'dns = { timeout = 1500; };\ndkim = { canonicalization = "simple/simple"; };\n')
    daemon = h.start_daemon(dns=[tdns], port=daemon.port, args=["-c", conf2] + sign[2:])
    three = dkimpy_sign(signed, "slow", keydir + "/slow.private")
    secs, _ = inbound_case("key lookup timeout", three,
                             lambda d: sorted(d) == [("ed", "pass"), ("r2048", "pass"), ("slow", "temperror")],
                             "s=slow temperror, r2048 and ed still pass")
    print("INFO timeout case took %.1fs" % secs, flush=True)
    tok = "tok-%s" % uuid.uuid4().hex
    res = pf.submit("alice", "alice@" + DOM, "carol@sink.test",
                    headers=["From: alice@dkim.test", "Subject: simple %s" % tok], body="  simple  \n\n")
    m = deliver(chk, pf, "simple/simple submission", res, tok)
    if m:
        msg = strip_delivery(m.raw)
        chk.check("simple/simple submission: c=simple/simple, dkimpy verifies both",
                  [tags(v).get("c") for v in m.get_all("DKIM-Signature")] == ["simple/simple"] * 2
                  and dkimpy_verify(msg, records) == [True, True],
                  (dkimpy_verify(msg, records), re.findall(rb"DKIM-Signature:.{0,40}", msg)))
    chk.check("daemon worker never died (testdns run)", not re.search(r"worker (died|exited)", daemon.log_text()),
              daemon.log_tail(5))


if __name__ == "__main__":
    H.run_test(test, "dkim", timeout=300)
