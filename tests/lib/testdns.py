#!/usr/bin/python3
"""testdns.py - a scriptable authoritative DNS server for mailwarden's tests.

Usage:
    testdns.py --port PORT [--addr 127.0.0.1] --zone FILE.json [--portfile F] [-v]

--port 0 picks a free port (the same number for UDP and TCP) and writes it to
--portfile once both listeners are up (written atomically: a reader that sees
the file sees the whole number).  SIGHUP reloads the zone file (a bad file is
logged and the old zones kept); SIGTERM/SIGINT stop the server.

Zone file: a JSON object {"NAME": [entry, ...], ...}.  Names are matched
case-insensitively, with or without a trailing dot.  Entries:

    {"A": "192.0.2.1"}              {"AAAA": "2001:db8::1"}
    {"TXT": "text"}                 one RR, one character-string (split at 255 bytes)
    {"TXT": ["s1", "s2"]}           one RR, several character-strings (each split at 255);
                                    [] is served as one empty string
    {"SPF": ...}                    type 99, same forms as TXT; also served as TXT
                                    unless the name has its own TXT entry (openspf rule)
    {"TXT": "NONE"}, {"SPF": "NONE"}  publishes nothing but counts as an entry
    {"MX": [10, "mx.example"]}      {"PTR": "host.example"}   {"NS": "ns.example"}
    {"CNAME": "target"}             answer = the CNAME + the target's RRs of the asked
                                    type, following chains (a loop stops the chain)
    "TIMEOUT"                       queries of a type with no record here get no reply
    "SERVFAIL"                      every query at this name gets SERVFAIL
    "REFUSED"                       every query at this name gets REFUSED
    "TRUNCATE"                      UDP replies have TC set and no answers; TCP is normal

Record entries may carry "ttl" (default 300, or --ttl) and "encoding" (how a
JSON string becomes bytes: "utf-8", the default, or "latin-1" to write raw
bytes 0x80-0xff as \\u0080-\\u00ff).  "\\u0000" in a string is a NUL byte.

Answers: a name not in the file and with no name below it -> NXDOMAIN; a name
that exists (or has names below it: an empty non-terminal) with no record of
the type -> NOERROR with an empty answer (NODATA).  Negative answers carry a
synthesized SOA whose minimum is --negttl (default 300).  AA is always set;
EDNS is echoed (UDP payload 1232); an answer bigger than the client's UDP size
is truncated (TC) so the client retries over TCP.
"""

import argparse
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading

from dnslib import A, AAAA, CNAME, DNSHeader, DNSLabel, DNSRecord, EDNS0, MX, NS, PTR, QTYPE, RCODE, RR, SOA, TXT

T_SPF = 99
SPECIAL = ("TIMEOUT", "SERVFAIL", "REFUSED", "TRUNCATE")
MAX_UDP = 1232


class ZoneError(Exception):
    pass


def norm(name):
    """Owner-name key: the name's bytes, ASCII letters lower-cased (DNS case
    rules; other bytes untouched), no trailing dot.  A query name (DNSLabel) is
    keyed by its raw label bytes, so names with spaces, '%', ':' or '/' (the
    openspf suite has them) match the zone file's spelling; str(DNSLabel)
    would give the escaped presentation form ("\\032") instead."""
    if isinstance(name, DNSLabel):
        return b".".join(name.label).lower()
    name = str(name)
    if name.endswith(".") and name != ".":
        name = name[:-1]
    return name.encode("utf-8").lower()


def to_bytes(s, enc):
    if not isinstance(s, str):
        raise ZoneError("string expected, got %r" % (s,))
    return s.encode(enc)


def txt_strings(value, enc):
    """A TXT/SPF entry value -> list of <=255-byte character-strings."""
    items = value if isinstance(value, list) else [value]
    if not items:
        # A TXT RR without any character-string is not valid DNS (resolvers
        # reject the answer); serve one empty string, which is what pyspf's
        # driver effectively does for the suite's "SPF: [ ]".
        return [b""]
    out = []
    for item in items:
        b = to_bytes(item, enc)
        if not b:
            out.append(b"")
            continue
        out.extend(b[i:i + 255] for i in range(0, len(b), 255))
    return out


class Zone:
    """Parsed zone: name -> {"types": {qtype: [(rdata, ttl)]}, "has": set, "flags": set}."""

    def __init__(self, path, default_ttl):
        with open(path, "rb") as f:
            raw = json.loads(f.read().decode("utf-8"))
        if not isinstance(raw, dict):
            raise ZoneError("zone file must be a JSON object")
        self.names = {}
        self.parents = set()   # every proper ancestor of a name: empty non-terminals
        for name, entries in raw.items():
            key = norm(name)
            node = self.names.setdefault(key, {"types": {}, "has": set(), "flags": set()})
            if not isinstance(entries, list):
                entries = [entries]
            for e in entries:
                self._add(node, str(name), e, default_ttl)
            labels = key.split(b".")
            for i in range(1, len(labels)):
                self.parents.add(b".".join(labels[i:]))
        # SPF is also served as TXT when the name has no TXT entry of its own.
        for node in self.names.values():
            if "SPF" in node["has"] and "TXT" not in node["has"]:
                for rd, ttl in node["types"].get(T_SPF, []):
                    node["types"].setdefault(QTYPE.TXT, []).append((TXT(rd.data), ttl))

    @staticmethod
    def _add(node, name, e, default_ttl):
        if isinstance(e, str):
            if e.upper() not in SPECIAL:
                raise ZoneError("%s: unknown keyword %r" % (name, e))
            node["flags"].add(e.upper())
            return
        if not isinstance(e, dict):
            raise ZoneError("%s: bad entry %r" % (name, e))
        ttl = int(e.get("ttl", default_ttl))
        enc = e.get("encoding", "utf-8")
        kinds = [k for k in e if k not in ("ttl", "encoding")]
        if len(kinds) != 1:
            raise ZoneError("%s: entry needs exactly one record type: %r" % (name, e))
        kind = kinds[0].upper()
        v = e[kinds[0]]
        node["has"].add(kind)
        if kind in ("TXT", "SPF"):
            if v == "NONE":
                return
            rd = TXT(txt_strings(v, enc))   # SPF (99) has the TXT rdata format
            qt = QTYPE.TXT if kind == "TXT" else T_SPF
        elif kind == "A":
            rd, qt = A(v), QTYPE.A
        elif kind == "AAAA":
            rd, qt = AAAA(v), QTYPE.AAAA
        elif kind == "MX":
            if not (isinstance(v, list) and len(v) == 2):
                raise ZoneError("%s: MX wants [pref, name]" % name)
            rd, qt = MX(v[1], int(v[0])), QTYPE.MX
        elif kind == "PTR":
            rd, qt = PTR(v), QTYPE.PTR
        elif kind == "NS":
            rd, qt = NS(v), QTYPE.NS
        elif kind == "CNAME":
            rd, qt = CNAME(v), QTYPE.CNAME
        else:
            raise ZoneError("%s: unsupported type %s" % (name, kind))
        node["types"].setdefault(qt, []).append((rd, ttl))


class Server:
    def __init__(self, args):
        self.args = args
        self.zone = Zone(args.zone, args.ttl)
        self.lock = threading.Lock()

    def log(self, fmt, *a):
        if self.args.verbose:
            sys.stderr.write("testdns: " + (fmt % a) + "\n")
            sys.stderr.flush()

    def reload(self):
        try:
            z = Zone(self.args.zone, self.args.ttl)
        except Exception as e:  # keep serving the old zones
            sys.stderr.write("testdns: reload of %s failed: %s\n" % (self.args.zone, e))
            return
        self.zone = z
        sys.stderr.write("testdns: reloaded %s\n" % self.args.zone)

    def soa(self, qname):
        rd = SOA("ns.testdns.invalid", "hostmaster.testdns.invalid",
                 (1, 3600, 600, 86400, self.args.negttl))
        return RR(".", QTYPE.SOA, rdata=rd, ttl=self.args.negttl)

    def answer(self, data, tcp):
        """Return reply bytes, or None for no reply."""
        try:
            q = DNSRecord.parse(data)
        except Exception as e:
            self.log("unparsable query (%s)", e)
            return None
        if q.header.qr or not q.questions:
            return None
        zone = self.zone   # one consistent snapshot even if SIGHUP swaps it
        qn = q.q.qname
        qt = q.q.qtype
        r = DNSRecord(DNSHeader(id=q.header.id, qr=1, aa=1, ra=0, rd=q.header.rd,
                                opcode=q.header.opcode), q=q.q)
        edns = [a for a in q.ar if a.rtype == QTYPE.OPT]
        if edns:
            r.add_ar(EDNS0(udp_len=MAX_UDP))
        udp_max = 512 if not edns else max(512, min(edns[0].rclass, MAX_UDP))

        key = norm(qn)
        node = zone.names.get(key)
        what = None
        if node is None:
            if key in zone.parents:
                what = "NODATA (empty non-terminal)"
                r.add_auth(self.soa(qn))
            else:
                what = "NXDOMAIN"
                r.header.rcode = RCODE.NXDOMAIN
                r.add_auth(self.soa(qn))
        elif "SERVFAIL" in node["flags"]:
            what = "SERVFAIL"
            r.header.rcode = RCODE.SERVFAIL
        elif "REFUSED" in node["flags"]:
            what = "REFUSED"
            r.header.rcode = RCODE.REFUSED
        elif "TRUNCATE" in node["flags"] and not tcp:
            what = "TRUNCATE"
            r.header.tc = 1
        else:
            rrs, rcode = self.lookup(zone, qn, qt)
            if not rrs and "TIMEOUT" in node["flags"]:
                self.log("%s %s %s -> (no reply)", "tcp" if tcp else "udp", qn, QTYPE.get(qt))
                return None
            r.header.rcode = rcode
            for rr in rrs:
                r.add_answer(rr)
            if not rrs or rcode == RCODE.NXDOMAIN:
                r.add_auth(self.soa(qn))
            what = "%s %d RR" % (RCODE.get(rcode), len(rrs))
        self.log("%s %s %s -> %s", "tcp" if tcp else "udp", qn, QTYPE.get(qt), what)
        out = r.pack()
        if not tcp and len(out) > udp_max:
            r.rr, r.auth = [], []
            r.header.tc = 1
            out = r.pack()
        return out

    def lookup(self, zone, qn, qt):
        """Answer RRs for qn/qt following CNAMEs; returns (rrs, rcode)."""
        rrs = []
        seen = set()
        owner = qn
        while True:
            key = norm(owner)
            node = zone.names.get(key)
            if node is None:
                rcode = RCODE.NXDOMAIN if rrs and key not in zone.parents else RCODE.NOERROR
                return rrs, rcode
            if key in seen:
                return rrs, RCODE.NOERROR       # CNAME loop: stop
            seen.add(key)
            types = node["types"]
            if qt == QTYPE.ANY:
                for t, lst in types.items():
                    rrs.extend(RR(owner, t, rdata=rd, ttl=ttl) for rd, ttl in lst)
                return rrs, RCODE.NOERROR
            if qt in types:
                rrs.extend(RR(owner, qt, rdata=rd, ttl=ttl) for rd, ttl in types[qt])
                return rrs, RCODE.NOERROR
            if QTYPE.CNAME in types and qt != QTYPE.CNAME:
                rd, ttl = types[QTYPE.CNAME][0]
                rrs.append(RR(owner, QTYPE.CNAME, rdata=rd, ttl=ttl))
                owner = rd.label
                continue
            return rrs, RCODE.NOERROR


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        out = self.server.dns.answer(data, False)
        if out is not None:
            sock.sendto(out, self.client_address)


class TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        while True:
            hdr = self._read(conn, 2)
            if hdr is None:
                return
            data = self._read(conn, struct.unpack("!H", hdr)[0])
            if data is None:
                return
            out = self.server.dns.answer(data, True)
            if out is not None:
                conn.sendall(struct.pack("!H", len(out)) + out)

    @staticmethod
    def _read(conn, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = conn.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf


class UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = True


class TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def bind_pair(addr, port):
    """UDP and TCP servers on the same port (port 0: find one free for both)."""
    for _ in range(50):
        u = UDPServer((addr, port), UDPHandler)
        p = u.server_address[1]
        try:
            t = TCPServer((addr, p), TCPHandler)
        except OSError:
            u.server_close()
            if port:
                raise
            continue
        return u, t, p
    raise OSError("no free port pair found")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--zone", required=True)
    ap.add_argument("--portfile")
    ap.add_argument("--ttl", type=int, default=300, help="default TTL of records")
    ap.add_argument("--negttl", type=int, default=300, help="SOA minimum for negative answers")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    try:
        dns = Server(args)
    except Exception as e:
        sys.stderr.write("testdns: %s: %s\n" % (args.zone, e))
        return 2
    u, t, port = bind_pair(args.addr, args.port)
    u.dns = t.dns = dns
    for s in (u, t):
        threading.Thread(target=s.serve_forever, daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: dns.reload())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    if args.portfile:
        tmp = "%s.tmp.%d" % (args.portfile, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.portfile)
    dns.log("listening on %s port %d (udp+tcp)", args.addr, port)

    while not stop.is_set():
        stop.wait(0.5)
    u.shutdown()
    t.shutdown()
    u.server_close()
    t.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
