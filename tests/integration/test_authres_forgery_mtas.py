#!/usr/bin/python3
"""One set of hostile messages through real Postfix, real Sendmail and real Exim: no
forged Authentication-Results reaches a mailbox through any front end.

One daemon serves all three MTAs (milter for Postfix and Sendmail, the rspamd-protocol
scan for Exim through the shipped ACL). Every message is sent byte-exact (smtplib from a
network namespace, so SPF is really evaluated) to each MTA. Forged A-R headers claim our
authserv-id and carry the word "forged"; foreign ones carry "kept-N".

Cases:
  spacing   a foreign "Authentication-Results : other.example" first (blanks before the
            colon: issue 13, defect 1), then forged ones (blank, tab before the colon)
  variants  case, folding (id on a continuation line), comments before the id, forged
            header first / in the middle / last, foreign ones in between
  many      1005 forged A-R (issue 13, defect 2: the 1001st and later were kept) and 2
            foreign ones (Sendmail refuses headers over its 32 KiB MaxHeadersLength: 552)
  cr        a bare CR between the name and the colon
  fold      a fold between the name and the colon ("Authentication-Results\\r\\n : ...")

For every delivered copy, read as liberally as any downstream parser could (header
section unfolded, the name being whatever precedes the first colon with all white
space removed): no A-R claiming our authserv-id other than ours, no "forged" text in any
A-R, every foreign A-R kept. The same message gives the same A-R headers through every
MTA that delivers it. Where the MTAs disagree on what is a header ("cr", "fold": Postfix
ends the header section there, Sendmail and Exim take a header), the message may be
refused instead, never delivered with the forged header: Exim cannot remove a header
whose name is folded (remove_header matches blanks only), so the daemon rejects it.
"""
import os, re, sys, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H
import mta_exim as X
import mta_sendmail as S

ID = H.AUTHSERV_ID

SENDER = r'''
import smtplib, sys
host, port, mail_from, rcpt, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
data = open(path, "rb").read()
s = smtplib.SMTP(host, port, local_hostname="nohelo.spf.test", timeout=120)
try:
    s.sendmail(mail_from, [rcpt], data)
    print("CODE 250")
except smtplib.SMTPDataError as e:
    print("CODE %d %s" % (e.smtp_code, e.smtp_error.decode(errors="replace")))
except smtplib.SMTPResponseException as e:
    print("CODE %d %s" % (e.smtp_code, e.smtp_error.decode(errors="replace")))
try:
    s.quit()
except Exception:
    pass
'''


def base(token, extra_top, extra_mid, extra_end):
    h = list(extra_top) + [
        "From: Alice <alice@pass.spf.test>",
        "To: bob@dest.test",
    ] + list(extra_mid) + [
        "Subject: forgery %s" % token,
        "Date: Mon, 1 Jan 2024 00:00:01 +0000",
        "Message-ID: <%s@pass.spf.test>" % token,
    ] + list(extra_end)
    return ("\r\n".join(h) + "\r\n\r\nbody %s\r\n" % token).encode()


def cases(token):
    c = {}
    c["spacing"] = (base(token, [
        "Authentication-Results : other.example; none (kept-1)",
        "Authentication-Results: %s; dmarc=pass header.from=pass.spf.test (forged-1)" % ID,
        "Authentication-Results  : %s; spf=pass (forged-2)" % ID,
        "Authentication-Results\t: %s; dkim=pass (forged-3)" % ID,
    ], [], ["Authentication-Results: third.example; spf=none (kept-2)"]), ["kept-1", "kept-2"])
    c["variants"] = (base(token, [
        "authentication-results: %s; dmarc=pass (forged-1)" % ID.upper(),
        "Authentication-Results: second.example; dkim=none (kept-1)",
    ], [
        "AUTHENTICATION-RESULTS:\r\n\t%s;\r\n\tspf=pass (forged-2)" % ID,
        "Authentication-Results: (a comment) %s (another); dkim=pass (forged-3)" % ID,
        "Authentication-Results: %s.evil; dkim=pass (kept-2)" % ID,
    ], ["Authentication-Results:%s; dmarc=pass (forged-4)" % ID]), ["kept-1", "kept-2"])
    many = ["Authentication-Results: %s; dmarc=pass (forged-%d)" % (ID, i) for i in range(1005)]
    c["many"] = (base(token, many[:500] + ["Authentication-Results: a.example; none (kept-1)"],
                      many[500:], ["Authentication-Results: b.example; none (kept-2)"]), ["kept-1", "kept-2"])
    c["cr"] = (base(token, ["Authentication-Results: other.example; none (kept-1)"], [],
                    ["Authentication-Results\r: %s; dmarc=pass (forged-1)" % ID]), ["kept-1"])
    c["fold"] = (base(token, ["Authentication-Results: other.example; none (kept-1)"], [],
                      ["Authentication-Results\r\n : %s; dmarc=pass (forged-1)" % ID]), ["kept-1"])
    return c


def liberal_headers(raw):
    """Header section (up to the first empty line) unfolded, names with every white
    space removed: what the most permissive reader would take for headers."""
    text = raw.decode("latin1").replace("\r\n", "\n").replace("\r", "\n ")
    head = text.split("\n\n", 1)[0]
    out = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    res = []
    for h in out:
        if ":" in h:
            n, v = h.split(":", 1)
            res.append((re.sub(r"\s", "", n).lower(), v.strip()))
    return res


def ars_of(raw):
    return [v for n, v in liberal_headers(raw) if n == "authentication-results"]


def check_delivered(chk, label, raw, kept):
    ars = ars_of(raw)
    ours = [v for v in ars if re.split(r"[;\s]", re.sub(r"\([^)]*\)", " ", v).strip(), 1)[0].lower() == ID.lower()]
    chk.check("%s: no forged A-R delivered" % label, not any("forged" in v for v in ars),
              [v for v in ars if "forged" in v][:3])
    chk.equal("%s: one A-R with our authserv-id (ours)" % label, len(ours), 1)
    chk.equal("%s: foreign A-R kept" % label, sorted(re.search(r"kept-\d+", v).group(0)
                                                     for v in ars if "kept-" in v), sorted(kept))
    return sorted(re.sub(r"\s+", " ", v) for v in ars if "kept-" in v or "forged" in v)


def test(h, chk):
    ns = h.create_netns()
    nsd = h.start_nsd({"spf.test": "pass IN TXT \"v=spf1 ip4:%s -all\"\nnohelo IN A 192.0.2.250" % ns.ns_addr})
    scan_port, rcpt_port = H.free_port(), H.free_port()
    conf = h.write("mailwarden.conf", 'exim = {\n  listen = "inet:%d@127.0.0.1";\n  rcpt_listen = "inet:%d@127.0.0.1";\n};\n'
                   % (scan_port, rcpt_port))
    daemon = h.start_daemon(dns=[nsd], args=["-c", conf])
    H.wait_port(scan_port, proc=daemon)
    pf = h.start_postfix(daemon.port, netns=ns)
    sm = S.Sendmail(h, daemon.port, netns=ns)
    sm.start()
    ex = X.Exim(h, scan_port, rcpt_port, netns=ns)
    ex.start()
    sender = h.write("send_raw.py", SENDER)
    mtas = [("postfix", pf.port, lambda t: pf.wait_delivered(t, timeout=30), pf.find),
            ("sendmail", sm.port, lambda t: sm.sink.wait_delivered(t, timeout=30), sm.sink.find),
            ("exim", ex.port, lambda t: ex.sink.wait_delivered(t, timeout=30), ex.sink.find)]
    token = uuid.uuid4().hex[:12]
    for name, (data, kept) in cases(token).items():
        seen = {}
        for mta, port, wait, find in mtas:
            tok = "%s-%s-%s" % (name, mta, token)
            path = h.path("%s.eml" % tok)
            with open(path, "wb") as f:
                f.write(data.replace(token.encode(), tok.encode()))
            rc, out = H.run(ns.wrap(["/usr/bin/python3", sender, ns.host_addr, str(port), "alice@pass.spf.test",
                                     "bob@dest.test", path]), timeout=180, check=False)
            m = re.search(r"CODE (\d+)(.*)", out)
            code = m.group(1) if m else "?"
            label = "%s via %s" % (name, mta)
            print("# %s: %s%s" % (label, code, m.group(2)[:100] if m else out[-300:]), flush=True)
            if code == "250":
                msg = wait(tok)
                if not chk.check("%s: delivered" % label, msg is not None):
                    continue
                seen[mta] = check_delivered(chk, label, msg.raw, kept)
            else:
                # a refusal is acceptable only where a forged A-R could not be removed
                # (Exim, folded name) or the MTA itself refuses the message (Sendmail:
                # headers over MaxHeadersLength, bare CR)
                ok = (name in ("cr", "fold") and mta == "exim" and code == "550") or \
                     (name == "many" and mta == "sendmail" and code == "552") or \
                     (name == "cr" and mta == "sendmail" and code == "421" and "Bare carriage return" in out)
                chk.check("%s: refused only where expected (%s)" % (label, code), ok, out[-300:])
                chk.check("%s: refused message not delivered" % label, not H.wait_for(lambda: find(tok), 2))
        if name in ("spacing", "variants", "many") and len(seen) > 1:
            first = next(iter(seen.values()))
            chk.check("%s: the same A-R headers through %s" % (name, ", ".join(seen)),
                      all(v == first for v in seen.values()), seen)
    chk.check("exim: the daemon said why it refused the folded forged A-R",
              re.search(r"cannot match: message rejected", daemon.log_text()), daemon.log_tail(10))


if __name__ == "__main__":
    H.run_test(test, "authres-mtas", timeout=800)
