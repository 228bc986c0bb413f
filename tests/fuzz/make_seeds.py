#!/usr/bin/python3
"""make_seeds.py - (re)write the seed corpora in tests/fuzz/corpus/<target>/.

Small realistic inputs plus hostile ones (the shapes that broke other
milters: NULs, 8-bit bytes, unbalanced quoting, deep nesting, huge counts).
Files are named seed-<n>; regression inputs for fixed crashes live beside
them as crash-<what> and are never rewritten by this script.
Usage: tests/fuzz/make_seeds.py   (idempotent)
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

S = {}

S["fromhdr"] = [
    b"alice@example.com",
    b" Alice Example <alice@example.com>",
    b"\"Example, Alice\" <alice@Example.COM.>",
    b"=?utf-8?q?Al=C3=AFce?= <alice@example.com>",
    b"alice@example.com (comment (nested (deeper)))",
    b"undisclosed-recipients:;",
    b"friends: a@example.com, b@example.org;",
    b"a@example.com, b@example.org",
    b"\"quoted\\\"local\"@example.com",
    b"Alice <alice@example.com\r\n\t>",
    b"alice",
    b"<>",
    b"paypal.com@evil.example <x@evil.example>",
    b"\"a@b.example\" <x@evil.example>",
    b"<alice@example.com",
    b"\"unterminated <alice@example.com>",
    b"alice@exa\x00mple.com",
    b"alice@ex\xc3\xa4mple.com",
    b"(" * 200 + b"a@b.example" + b")" * 200,
    b"\\" * 100,
    b", " * 100 + b"a@b.example",
    b"a@[192.0.2.1]",
    b"x@" + b"a." * 130 + b"example",
]

S["authres"] = [
    b"mx.example.net; spf=pass smtp.mailfrom=a@example.com",
    b" mx.example.net 1; dkim=pass header.d=example.com header.s=sel header.b=abcdefgh",
    b"\"mx.example.net\"; none",
    b"(comment) mx.example.net (more); dmarc=fail (p=reject) header.from=example.com",
    b"mx.example.net;\r\n\tspf=pass smtp.mailfrom=\"a b\"@example.com;\r\n\tdkim=fail reason=\"bad sig\"",
    b"MX.EXAMPLE.NET; arc=pass",
    b"mx.example.net; " + b"spf=pass; " * 60,
    b"mx.example.net; spf=pass " + b"a.b=c " * 20,
    b"\"unterminated",
    b"\"a\\",
    b"(((((((((((",
    b";",
    b"mx\x00.example.net; spf=pass",
    b"mx.example.net; spf=pass smtp.mailfrom=\xff\xfe@example.com",
    b"x" * 300 + b"; none",
    b"mx.example.net; dkim=pass header.i=@example.com (\"quoted) comment\")",
]

S["spf_record"] = [
    b"v=spf1 -all",
    b"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx ~all",
    b"v=spf1 include:_spf.example.com redirect=_spf.example.net",
    b"v=spf1 a:%{d}/24//64 mx:mail.%{d2} exists:%{ir}.%{v}._spf.%{d} -all\nstrong-bad\nemail.example.com\nmx.example.org\n192.0.2.3",
    b"v=spf1 exists:%{l1r+-}.%{o}.%{h}.%{p}.%{i} exp=explain.%{d} -all\nfirst.last\nexample.com\nhelo\n2001:db8::1",
    b"v=spf1 -all exp=%{ir}.%{v}.x\nuser\nexample.com\nh\n::ffff:192.0.2.1",
    b"v=spf1 ptr:%{d} ?all unknown-mod=x.y foo.bar=%{d}",
    b"v=spf1 redirect=a redirect=b",
    b"v=spf1 ip4:300.1.1.1",
    b"v=spf1 ip4:192.0.2.1/33 ip6:::/129",
    b"v=spf1 a:%",
    b"v=spf1 a:%{z}",
    b"v=spf1 a:%{d999r}.example.com",
    b"v=spf1 a:%%%_%-.%{d}",
    b"v=spf1 a:foo.123",
    b"v=spf1 \x00 -all",
    b"v=spf1 \xc3\xa4 -all",
    b"V=SPF1",
    b"v=spf1 " + b"a " * 500,
    b"v=spf1 exists:" + b"%{o}." * 100 + b"example.com",
    b"The %{l} at %{o} from %{c} via %{r} at %{t}: %{i} %{p} %{v} %{h} %%",
    b"%{ir}.%{v}._spf.%{d2}",
]

S["failrep"] = [
    b"\x00mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
    b"time 1796479200\nto ruf@a.example\nto f@b.example\n\nSubject: x\r\n\r\nbody\r\n",
    b"\x00mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
    b"time 1\nto a b@a.example\n\nx",
    b"\x01From: John <john.doe@example.com>\r\nTo: \"a b\"@x.example, c@d.example",
    b"\x01hello\n--mw-failure-0\nX-Injected: yes\r\n" + b"x" * 3000,
    b"\x01a@b.c@d.e@@\x00\xff@\xc3\xbc",
]

S["dmarc_record"] = [
    b"v=DMARC1; p=reject; rua=mailto:dmarc@example.com",
    b"v=DMARC1; p=none; sp=quarantine; np=reject; adkim=s; aspf=r; pct=50; t=y; psd=n",
    b"v=DMARC1;p=quarantine;rua=mailto:a@example.com!10m,mailto:b@example.org;ruf=mailto:f@example.com;fo=1;rf=afrf;ri=86400",
    b"v = DMARC1 ; p = reject",
    b"v=DMARC1; rua=mailto:only@example.com",
    b"v=DMARC1; p=bogus",
    b"v=DMARC1; p=reject; p=none",
    b"v=DMARC1; p=reject; pct=-1; pct=1000",
    b"v=DMARC1; p=reject; rua=" + b"mailto:a@example.com," * 100,
    b"v=dmarc1; p=reject",
    b"v=DMARC1",
    b"v=DMARC1; p=reject\x00; sp=none",
    b"v=DMARC1; p=reject; rua=mailto:\xff@example.com",
    b";;;;;;;;;;",
    b"v=DMARC1; p=reject; " + b"x=y; " * 200,
    b"v=DMARC1; p=reject; pct=99999999999999999999999",
]

HIST_JSON = (b'{"time":1740873600,"source_ip":"192.0.2.1","header_from":"example.com",'
             b'"envelope_from":"example.com","envelope_to":"example.net","spf_domain":"example.com",'
             b'"spf_scope":"mfrom","spf_result":"pass","dkim":[{"domain":"example.com","selector":"s1",'
             b'"result":"pass"}],"rua":["mailto:dmarc@example.com"],"policy_domain":"example.com",'
             b'"p":"reject","disposition":"none","dkim_aligned":"pass","spf_aligned":"pass",'
             b'"reporter_host":"mx1.example.net"}')


def hist_line(json):
    head = b"MWH1 %d " % len(json)
    return head + b"%08x " % crc32c(head + json) + json


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


S["proc_stat"] = [
    b"4242 (mail) warden (x)) S 1 4242 4242 0 -1 4194560 2810 0 0 0 137 58 0 0 20 0 5 0 123456 "
    b"987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 16386 0 0 0 17 1 0 0 0 0 0 0 0\n",
    b"cpu  1 2 3\nbtime 1764921600\nprocesses 77\n",
]

# history_line: first byte even = raw line; odd = JSON framed by the harness
S["history_line"] = [
    b"\x00" + hist_line(HIST_JSON),
    b"\x00" + hist_line(HIST_JSON)[:60],
    b"\x00MWH1 12 0000000g {}",
    b"\x00MWH2 2 00000000 {}",
    b"\x00" + hist_line(HIST_JSON)[:40] + hist_line(HIST_JSON),
    b"\x01" + HIST_JSON,
    b"\x01{\"time\":0}",
    b"\x01{\"time\":-1,\"dkim\":[],\"rua\":[]}",
    b"\x01{\"time\":1,\"header_from\":\"\\u00e4\\u20ac\\ud800\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
    b"\x01{\"time\":1,\"future\":{\"a\":[1,2.5e3,true,false,null,{\"b\":\"c\"}]}}",
    b"\x01{\"time\":1,\"x\":" + b"[" * 40 + b"]" * 40 + b"}",
    b"\x01{\"time\":1,\"header_from\":\"a\",\"header_from\":\"b\",\"dkim\":[{}],\"dkim\":[{}]}",
    b"\x01{\"time\":99999999999999999999}",
    b"\x01{\"time\":1,\"rua\":[\"a\",\"b\",]}",
    b"\x01{\"time\":1,\"p\":\"\\u0000\"}",
    b"\x01{\"time\":1,\"dkim\":[{\"domain\":\"d\",\"domain\":\"e\",\"selector\":1}]}",
]

S["config"] = [
    b"",
    b"socket = \"inet:8894@127.0.0.1\";\nauthserv_id = \"mx.example.net\";\n",
    b"socket = \"unix:/run/mailwarden/milter.sock\";\nsocket_mode = \"0660\";\nuser = \"mailwarden\";\n"
    b"pid_file = \"/run/mailwarden/mailwarden.pid\";\n",
    b"dns = { mode = \"forward\"; forwarders = [\"127.0.0.1@53\", \"::1\"]; timeout = 2000; tcp = true; };\n",
    b"trust = { internal_networks = [\"10.0.0.0/8\", \"2001:db8::/32\"]; submission_daemons = [\"ORIGINATING\"]; };\n",
    b"spf = { enabled = true; helo = false; timeout = 20000; };\ndmarc = { enabled = true; mode = \"rfc7489\"; "
    b"never_reject = [\"*.example.com\"]; quarantine_action = \"header\"; };\n",
    b"history = { dir = \"/var/lib/mailwarden/history\"; fsync_interval = 1000; on_error = \"tempfail\"; };\n",
    b"dkim = { sign = true; keys = ( { name = \"k\"; domain = \"example.com\"; selector = \"s\"; file = \"/nonexistent.pem\"; } );\n"
    b"  signing = ( { pattern = \"*@example.com\"; keys = [\"k\"]; } ); };\n",
    b"ratelimit = { rules = ( { name = \"r1\"; key = [\"ip\"]; rate = \"100/1h\"; burst = 10; } ); };\n",
    b"log = { target = \"syslog\"; format = \"json\"; level = \"debug\"; facility = \"local7\"; };\n",
    b"socket = \"inet:99999@host\";\nsocket_mode = \"9999\";\n",
    b"unknown.key = 1;\ndns = { timeout = -5; };\ntrust = { internal_networks = [\"10.0.0.1/8\"]; };\n",
    b"dns = { forwarders = [\"127.0.0.1@53\"]; };\n",
    b"a = \"\\x00\";\n",
    b"socket = \"unterminated\n",
    b"x = (" * 50 + b")" * 50 + b";\n",
    b"trust = { internal_networks = [" + b"\"10.0.0.0/8\"," * 200 + b"\"::1\"]; };\n",
]

SIGNED = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel;\r\n"
          b"\tt=1700000000; h=from:to:subject:date; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
          b"\tb=dGVzdA==\r\n")
MSG = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hi\r\n"
       b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello.\r\n")
KEY = (b"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYt"
       b"IxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhi"
       b"tdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB")
S["dkim_verify"] = [
    KEY + b"\n" + SIGNED + MSG,
    b"\n" + SIGNED + MSG,
    b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to : subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n" + MSG,
    KEY + b"\n" + SIGNED.replace(b"d=example.com;", b"d=example.com; d=evil.example;") + MSG,
    KEY + b"\n" + SIGNED.replace(b"h=from", b"h=from:from:from") + MSG,
    KEY + b"\n" + SIGNED.replace(b"v=1;", b"v=1; l=3;") + MSG + b"appended\r\n",
    b"v=DKIM1; k=rsa; p=\n" + SIGNED + MSG,
    b"v=DKIM1; k=rsa; p=AAAA; t=y:s; h=sha1; s=email\n" + SIGNED + MSG,
    b"v=DKIM1; p=" + b"A" * 2000 + b"\n" + SIGNED + MSG,
    KEY + b"\n" + SIGNED * 12 + MSG,
    KEY + b"\n" + b"DKIM-Signature: \r\n" + b"DKIM-Signature: ;;;;;;;=;=\r\n" + MSG,
    KEY + b"\n" + b"DKIM-Signature: v=1; a=rsa-sha256; d=\x00; s=\xff; b=; bh=\r\n" + MSG,
    KEY + b"\n" + MSG.replace(b"\r\n\r\n", b"\r\n" + b"X-Long: " + b"a" * 5000 + b"\r\n\r\n"),
    KEY + b"\n" + SIGNED + MSG.replace(b"\r\n", b"\n"),
    KEY + b"\n" + SIGNED + MSG + b"\r\n" * 50 + b"trailing\r",
]

S["milter_session"] = [
    b"E0\nC192.0.2.1 client.example.org\nK\nHclient.example.org\nF<alice@example.com>\nR<bob@example.net>\n"
    b"XFrom: Alice <alice@example.com>\nXSubject: hi\nXAuthentication-Results: mx.example.net; spf=pass\nO\nBHello.\\r\\n\nD\n",
    b"E1\nTv=spf1 ip4:192.0.2.0/24 -all\nC192.0.2.1 client.example.org\nHclient.example.org\nF<alice@example.com>\n"
    b"R<bob@example.net>\nXFrom: alice@example.com\nO\nBbody\\r\\n\nD\n",
    b"E1\nTv=DMARC1; p=reject; rua=mailto:d@example.com\nC198.51.100.7 x\nHx\nF<a@example.com>\nR<b@example.net>\n"
    b"XFrom: a@example.com, b@example.org\nXFrom: c@example.com\nO\nD\nF<>\nXFrom: <>\nD\n",
    b"C10.1.2.3 internal\nM{auth_authen}=alice\nM{daemon_name}=ORIGINATING\nMi=4XyzQ1\nF<alice@example.com>\nR<x@y.z>\n"
    b"XFrom: alice@example.com\nXDKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from; bh=x; b=y\nO\nBbody\nD\nA\n",
    b"F<a@b>\nF<c@d>\nR<e@f>\nD\nD\nA\nA\nO\nO\nB\nD\n",
    b"C\nM{auth_authen}=\nM{daemon_name}=\\0\nMi=\\xff\\xfe\nH\\0\nF\\r\\n\nR\\0\nX:\\n\\t\nXFrom:\\0\nD\n",
    b"C::ffff:10.1.2.3\nF<a@example.com>\n" + b"R<r@example.net>\n" * 50 + b"D\n",
    b"C2001:db8::1 v6.example\nF<a@example.com>\nXAuthentication-Results: MX.EXAMPLE.NET; dkim=pass\n"
    b"XAuthentication-Results: \\n\\tmx.example.net;\\n\\tdkim=pass\nXauthentication-results: other; spf=fail\nO\nD\n",
    b"Tv=DKIM1; p=\nF<a@example.com>\nXDKIM-Signature: v=1; a=ed25519-sha256; d=example.com; s=s; h=from:from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\n"
    b"XFrom: a@example.com\nO\nD\n",
]

def _pkt(cmd, payload=b""):
    return (len(payload) + 1).to_bytes(4, "big") + cmd + payload


def _z(*strs):
    return b"".join(s + b"\0" for s in strs)


_OPT = _pkt(b"O", (6).to_bytes(4, "big") + (0x1FF).to_bytes(4, "big") + (0x1FFFFF).to_bytes(4, "big"))
_MSG = (_OPT + _pkt(b"D", b"C" + _z(b"j", b"mx.example.net", b"{client_addr}", b"192.0.2.1"))
        + _pkt(b"C", _z(b"client.example.org") + b"4" + (25000).to_bytes(2, "big") + _z(b"192.0.2.1"))
        + _pkt(b"H", _z(b"client.example.org"))
        + _pkt(b"D", b"M" + _z(b"i", b"4XyzQ1", b"{auth_authen}", b"alice"))
        + _pkt(b"M", _z(b"<alice@example.com>", b"SIZE=120", b"BODY=8BITMIME"))
        + _pkt(b"R", _z(b"<bob@example.net>"))
        + _pkt(b"L", _z(b"From", b" Alice <alice@example.com>")) + _pkt(b"L", _z(b"Subject", b" hi"))
        + _pkt(b"N") + _pkt(b"B", b"Hello.\r\n") + _pkt(b"E") + _pkt(b"A"))
S["milter_proto"] = [
    _MSG + _pkt(b"Q"),
    _MSG + _pkt(b"K") + _OPT + _pkt(b"C", _z(b"v6") + b"6" + b"\0\x19" + _z(b"IPv6:2001:db8::1")),
    _pkt(b"C", _z(b"local") + b"L\0\0" + _z(b"/run/x")) + _pkt(b"C", _z(b"unknown") + b"U"),
    _pkt(b"y", _z(b"550 5.7.1 no")) + _pkt(b"i", b"\0\0\0\0" + _z(b"X-A", b" b")) + _pkt(b"m", b"\0\0\0\1" + _z(b"X", b""))
    + _pkt(b"O", (6).to_bytes(4, "big") + (0x131).to_bytes(4, "big") + (0x1C0380).to_bytes(4, "big")
           + (0).to_bytes(4, "big") + _z(b"j {client_addr}") + (5).to_bytes(4, "big") + _z(b"i"))
    + _pkt(b"q", _z(b"why")) + _pkt(b"h", _z(b"a", b"b")) + _pkt(b"c") + _pkt(b"p"),
    _pkt(b"D", b"C" + _z(b"j")) + _pkt(b"D", b"Zx\0y\0") + _pkt(b"D", b"C" + b"j\0x"),
    _pkt(b"L", b"Subject\0") + _pkt(b"L", _z(b"a", b"b", b"c")) + _pkt(b"M", b"<a@b>"),
    b"\0\0\0\0Q",
    b"\xff\xff\xff\xffB",
    b"\0\x10\0\x01B" + b"x" * 100,
    _pkt(b"B", bytes(range(256)) * 16) + _pkt(b"E", b"tail\r\n"),
    _pkt(b"L", _z(b"X-Long", b" " + b"a" * 70000)),
    _pkt(b"y", _z(b"550 100% sure\r\n\x01\x7f")),
]

S["exim_request"] = [
    b"CHECK RSPAMC/1.3\nContent-length: 120\nQueue-Id: 1rABCd-000123-Xy\nFrom: <alice@example.com>\n"
    b"Rcpt: <bob@example.net>\nRcpt: <carol@example.net>\nHelo: client.example.org\nHostname: client.example.org\n"
    b"IP: 192.0.2.1\nUser: alice\n",
    b"PING SPAMC/1.5\n",
    b"SYMBOLS RSPAMC/1.3\nContent-length: 0\n",
    b"CHECK RSPAMC/1.3\nContent-length: -1\n",
    b"CHECK RSPAMC/1.3\nContent-length: 99999999999999999999999\n",
    b"CHECK RSPAMC/1.3\nContent-length: 12x\n",
    b"CHECK RSPAMC/1.3\nFrom: <>\nFrom: <a@b>\n",
    b"CHECK RSPAMC/1.3\n" + b"Rcpt: <r@example.net>\n" * 1200,
    b"CHECK\n",
    b"CHECK RSPAMC/9.9\n",
    b"CHECK RSPAMC/1.3\nNoColon\n: empty name\nHelo:\nIP: \x00\xff\n",
    b"CHECK RSPAMC/1.3\nHelo: " + b"h" * 10000 + b"\n",
]

S["exim_rcpt"] = [
    b"RCPT ip=192.0.2.1 helo=client.example.org from=alice@example.com rcpt=bob@example.net auth= port=25\n",
    b"RCPT ip=2001:db8::1 from= rcpt=<bob@example.net> auth=alice port=587\r\n",
    b"RCPT",
    b"RCPT ",
    b"RCPTX ip=1",
    b"RCPT ip=1 ip=2 ip=3 helo=a helo=b",
    b"RCPT =x ==y noeq k=",
    b"RCPT ip=\x00 helo=\xff\xfe",
    b"RCPT " + b"helo=" + b"x" * 5000,
    b"RCPT " + b"a=b " * 1000,
    b"rcpt ip=1",
]

MBOX = (b"From alice@example.com Tue Nov 14 22:13:20 2023\n"
        b"Received: from client.example.org ([192.0.2.1])\n\tby mx.example.net with esmtp\n"
        b"X-Envelope-From: <alice@example.com>\nX-Envelope-To: <bob@example.net>\n"
        b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: hi\n"
        b"Authentication-Results: mx.example.net; spf=pass\n"
        b"Authentication-Results: other.example;\n\tdkim=pass\n\nHello.\n>From the body\n")
S["exim_mbox"] = [
    b"\xff" + MBOX,
    b"\x00" + MBOX,
    b"\x07" + MBOX.replace(b"\n", b"\r\n"),
    b"\xff" + b"Subject: no envelope line\n\nbody",
    b"\xff" + b"From x\nSubject: no blank line at the end",
    b"\xff" + b"From x\n\tcontinuation first\nA: b\n\n",
    b"\x10" + b"From x\nAuthentication-Results: " + b"a" * 3000 + b"\n\n",
    b"\x10" + b"From x\nAuthentication-Results: x;\x00\x01\x7f\r\r\n\n\n",
    b"\xff" + b"From x\n" + b"Authentication-Results: a; none\n" * 100 + b"\n",
    b"\xff" + b"From x\nNoColonHeader\n: empty\nA:\n\n\r\n\r\r\n\n",
    b"\x00" + b"From x\nA: " + b"b" * 5000 + b"\n\n",
]

ARC_SET = (b"ARC-Seal: a=rsa-sha256; b=dGVzdA==; cv=none; d=example.com; i=1; s=rsa; t=12345\r\n"
           b"ARC-Message-Signature: a=rsa-sha256;\r\n b=dGVzdA==;\r\n"
           b" bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; c=relaxed/relaxed;\r\n"
           b" d=example.com; h=from:to:subject; i=1; s=rsa; t=12345\r\n"
           b"ARC-Authentication-Results: i=1; lists.example.org; spf=pass smtp.mfrom=a@example.com\r\n")
S["cidr_names"] = [
    b"127.0.0.1\nlocalhost\n192.168.0.0/24\n",
    b"# TrustedHosts\n10.0.0.0/8   # lan\nmx1.example.net\n[192.0.2.1]\n",
    b"*.example.pw\n.example.com\n!192.0.2.1\nnx.example\ntmp.example\n",
    b"::1\nfe80::/10\n::ffff:1.2.3.4\n2001:db8::/129\n10.0.0.1/8\n",
    b"file:/etc/hosts\nrefile:/nonexistent\n/dev/null\n",
    b"a b c\n" + b"x" * 5000 + b"\n\x00\xff\n",
]

S["arc"] = [
    KEY + b"\n" + MSG,
    KEY + b"\n" + ARC_SET + MSG,
    b"\n" + ARC_SET + MSG,
    KEY + b"\n" + ARC_SET.replace(b"i=1", b"i=2").replace(b"cv=none", b"cv=pass") + ARC_SET + MSG,
    KEY + b"\n" + ARC_SET.replace(b"cv=none", b"cv=fail") + MSG,
    KEY + b"\n" + ARC_SET.replace(b"i=1", b"i=51") + MSG,
    KEY + b"\n" + ARC_SET * 3 + MSG,
    KEY + b"\n" + ARC_SET.replace(b"h=from:to:subject", b"h=" + b"from:" * 500 + b"arc-seal") + MSG,
    b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
    + ARC_SET.replace(b"rsa-sha256", b"ed25519-sha256") + MSG,
    KEY + b"\n" + b"ARC-Seal: ;;\r\nARC-Message-Signature: i=1; b\r\nARC-Authentication-Results: i=\r\n" + MSG,
    KEY + b"\n" + ARC_SET.replace(b"c=relaxed/relaxed", b"c=simple/simple; l=3") + MSG + b"appended\r\n",
]


# ---- received DMARC reports (reports-in): XML, then containers
RPT = (b'<?xml version="1.0" encoding="UTF-8"?>\n<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">'
       b'<version>1.0</version><report_metadata><org_name>google.com</org_name><email>n@google.com</email>'
       b'<report_id>123</report_id><date_range><begin>1700000000</begin><end>1700086399.0</end></date_range>'
       b'</report_metadata><policy_published><domain>Example.COM</domain><p>reject</p><pct>100</pct>'
       b'</policy_published><record><row><source_ip>2001:db8:0:0::1</source_ip><count>3</count>'
       b'<policy_evaluated><disposition>None</disposition><dkim>Pass</dkim><spf>fail</spf><reason><type>'
       b'forwarded</type></reason></policy_evaluated></row><identifiers><header_from>example.com</header_from>'
       b'</identifiers><auth_results><dkim><domain>example.com</domain><result>pass</result></dkim><spf>'
       b'<domain>x.example</domain><result>pass</result></spf></auth_results></record></feedback>\n')
S["rptin_xml"] = [
    RPT,
    RPT.replace(b' xmlns="urn:ietf:params:xml:ns:dmarc-2.0"', b""),
    b'<?xml version="1.0"?> <xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">\n' + RPT.split(b"?>", 1)[1],
    RPT.replace(b"google.com</org_name>", b"google.com \x91x\x92</org_name>"),
    RPT.replace(b"<policy_evaluated>", b"<policy_evaluated><x/>").replace(b"<dkim>Pass</dkim><spf>fail</spf>", b""),
    b'<?xml version="1.0"?>\n<!DOCTYPE f [<!ENTITY x SYSTEM "file:///etc/passwd">]><feedback>&x;</feedback>',
    b'<?xml version="1.0"?>\n<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><feedback>&b;</feedback>',
    b"<feedback>" + b"<record>" * 300,
    b"<feedback><report_metadata><org_name>a</org_name></report_metadata></feedback>",
    RPT.replace(b"<count>3</count>", b"<count>99999999999999999999999</count>"),
    RPT.replace(b"<record>", b"<record>" * 1, 1) * 2,
    b"<html/>",
]


def _mime(part_ct, body, cte="base64"):
    import base64
    enc = base64.encodebytes(body) if cte == "base64" else body
    return (b"From: a@b.example\r\nSubject: Report\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed;\r\n boundary="==b=="\r\n\r\n--==b==\r\n'
            b"Content-Type: text/plain\r\n\r\nA report.\r\n--==b==\r\nContent-Type: " + part_ct +
            b"\r\nContent-Transfer-Encoding: " + cte.encode() +
            b'\r\nContent-Disposition: attachment; filename="r.xml.gz"\r\n\r\n' + enc + b"\r\n--==b==--\r\n")


def _zip(name, data, method=8):
    import io, zipfile
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED if method == 8 else zipfile.ZIP_STORED) as z:
        z.writestr(name, data)
    return b.getvalue()


import gzip as _gzmod


class _gz:
    @staticmethod
    def compress(b):
        return _gzmod.compress(b, mtime=0)
S["rptin_unpack"] = [
    b"\x00" + RPT,
    b"\x00" + _gz.compress(RPT),
    b"\x00" + _zip("r.xml", RPT),
    b"\x00" + _zip("r.xml", RPT, 0),
    b"\x00" + _mime(b"application/gzip", _gz.compress(RPT)),
    b"\x00" + _mime(b"application/zip", _zip("r.xml", RPT)),
    b"\x00" + _mime(b"text/xml", RPT, "quoted-printable"),
    b"\x00From: a@b.example\nContent-Type: message/rfc822\n\n" + _mime(b"application/gzip", _gz.compress(RPT)),
    b"\x00" + _gz.compress(b"<feedback><!--" + b" " * 200000 + b"--></feedback>"),
    b"\x00" + _gz.compress(_gz.compress(RPT)),
    b"\x01" + _zip("r.xml", RPT),
    b"\x01" + _zip("r.xml", RPT)[:-30],
    b"\x02" + _gz.compress(RPT) + _gz.compress(RPT),
    b"\x02" + _gz.compress(RPT)[:-4],
    b"\x03" + _mime(b"application/gzip", _gz.compress(RPT)),
    b"\x03Content-Type: multipart/mixed; boundary=x\n\n" + b"--x\nContent-Type: multipart/mixed; boundary=x\n\n" * 20,
    b"\x03Content-Type: text/plain\n" + b" folded\n" * 500 + b"\nbody",
]


def main():
    for name, seeds in S.items():
        d = os.path.join(HERE, "corpus", name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("seed-"):
                os.unlink(os.path.join(d, f))
        for i, s in enumerate(seeds):
            with open(os.path.join(d, "seed-%02d" % i), "wb") as f:
                f.write(s)
        print("%-16s %d seeds" % (name, len(seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
