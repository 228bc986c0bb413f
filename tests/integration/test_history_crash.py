#!/usr/bin/python3
"""DMARC history on disk survives SIGKILL while mail flows (issue 5, items 5 and 7).

A real Postfix (loopback client; trust.internal_networks moved off 127.0.0.0/8 so the
mail is inbound and DMARC is evaluated) feeds the daemon (`--history DIR`). Every
message has its own From domain m<N>.none.test (none.test publishes p=none, so the
message is accepted and one history record is written), which ties each record to one
message. Several sender threads send concurrently while a killer SIGKILLs the whole
daemon (supervisor and worker: its process group) every ~0.5 s and starts it again
at once. (Killing only the worker would do too, but the supervisor's restart backoff
doubles up to 30 s, which would starve the loop.) Two runs:
  - history.fsync_interval = 0 (sync after every record) and the default 1000 ms.
Read back with the reader below, written from docs/history-format.md alone
(`MWH1 <len> <crc32c> <json>`, CRC32C checked here in Python), it proves per run:
  - every line of every file reads back whole: CRC and length right, no bad_checksum,
    no bad_version; a torn line may only be a file's last line (a cut-short tail);
  - every message that got 250 has its record (kill -9 loses nothing that was written;
    with fsync_interval = 0 each accepted record was also synced before the 250);
  - the records carry what was sent: header_from, p=none, disposition none,
    source_ip 127.0.0.1, the rua, a sane time; no message has two records.
The reader (read_history) is also used by test_postfix_dmarc.py.
"""
import json, os, re, signal, smtplib, sys, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H

# ---------------------------------------------------------------- reader (docs/history-format.md)

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    """CRC32C (Castagnoli), reflected, init/final XOR 0xFFFFFFFF."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283          # the standard check value

LINE = re.compile(rb"MWH(\d+) (\d+) ([0-9a-f]{8}) ")


def parse_line(line):
    """('ok', record) | ('torn'|'bad_checksum'|'bad_version', None) for one line (no LF)."""
    m = LINE.match(line)
    if m:
        n, body = int(m.group(2)), line[m.end():]
        if len(body) == n:
            if crc32c(line[:m.start(3)] + body) != int(m.group(3), 16):
                return "bad_checksum", None
            if m.group(1) != b"1":
                return "bad_version", None
            try:
                return "ok", json.loads(body.decode("ascii"))
            except ValueError:
                return "torn", None
    k = line.find(b"MWH1 ", 1)                     # rule 7: a record glued to a fragment
    if k > 0:
        kind, rec = parse_line(line[k:])
        return ("torn+" + kind, rec)
    return "torn", None


def read_history(d):
    """Read every history-*.log in d: (records, stats). stats counts ok, torn,
    torn_mid (a torn line that is not a file's last line), bad_checksum, bad_version,
    files, and lists problems as (file, line number, kind)."""
    recs, st = [], {"files": 0, "ok": 0, "torn": 0, "torn_mid": 0, "bad_checksum": 0, "bad_version": 0,
                    "problems": []}
    if not os.path.isdir(d):
        return recs, st
    for name in sorted(os.listdir(d)):
        if not re.match(r"history-\d{14}\.log$", name):
            continue
        st["files"] += 1
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        tail = lines.pop()                         # b"" when the file ends in LF
        for i, line in enumerate(lines):
            kind, rec = parse_line(line)
            if rec is not None:
                st["ok"] += 1
                recs.append(rec)
            if kind != "ok":
                base = kind.split("+")[0] if kind.startswith("torn+") else kind
                if kind.startswith("torn"):
                    st["torn"] += 1
                    st["torn_mid"] += 1            # it has an LF after it: not the tail
                    kind = "torn (mid-file)"
                else:
                    st[base] += 1
                st["problems"].append((name, i + 1, kind))
        if tail:
            kind, rec = parse_line(tail)
            st["torn"] += 1                        # no LF: torn by definition (rule 1)
            st["problems"].append((name, len(lines) + 1, "torn tail"))
    return recs, st


# ---------------------------------------------------------------- the test

THREADS, RUN_SECONDS, KILL_EVERY, KILLS = 6, 10.0, 0.5, 12


def zone():
    return {"none.test": [{"A": "192.0.2.1"}, {"TXT": "v=spf1 -all"}],
            "_dmarc.none.test": [{"TXT": "v=DMARC1; p=none; rua=mailto:agg@none.test"}],
            "evil.test": [{"TXT": "v=spf1 -all"}]}


def sender(pf, tid, accepted, tried, lock, stop):
    k = 0
    while not stop.is_set():
        k += 1
        dom = "m%d-%d.none.test" % (tid, k)
        msg = ("From: x <x@%s>\r\nTo: bob@dest.test\r\nSubject: crash %s\r\n"
               "Message-ID: <%s@crash>\r\n\r\nbody %s\r\n" % (dom, dom, dom, dom))
        with lock:
            tried.append(dom)
        try:
            s = smtplib.SMTP("127.0.0.1", pf.port, timeout=60)
            try:
                s.ehlo("client.evil.test")
                refused = s.sendmail("a@evil.test", ["bob@dest.test"], msg)
                if not refused:
                    with lock:
                        accepted.append(dom)
            finally:
                try:
                    s.quit()
                except Exception:
                    pass
        except Exception:
            pass                                   # 451 (milter gone) etc.: not accepted


def one_run(h, chk, pf, dns, label, fsync_ms, port):
    hist = h.path("history-%s" % label)
    conf = h.write("mw-%s.conf" % label, 'trust = { internal_networks = [ "192.0.2.254/32" ]; };\n'
                   'dns = { timeout = 2000; };\nhistory = { fsync_interval = %d; };\n' % fsync_ms)
    args = ["-c", conf, "--history", hist]
    daemon = h.start_daemon(dns=[dns], port=port, args=args, name="mw-%s" % label)
    accepted, tried, lock, stop = [], [], threading.Lock(), threading.Event()
    threads = [threading.Thread(target=sender, args=(pf, t, accepted, tried, lock, stop), daemon=True)
               for t in range(THREADS)]
    for t in threads:
        t.start()
    # a count of kills, not a time: a slow (sanitizer, loaded) daemon start
    # must not leave fewer kills than the check wants; the time cap only
    # catches a hang
    kills, t_end = 0, time.monotonic() + 10 * RUN_SECONDS
    while kills < KILLS and time.monotonic() < t_end:
        time.sleep(KILL_EVERY)
        try:
            os.killpg(daemon.pid, signal.SIGKILL)  # the daemon's own process group (our child)
        except ProcessLookupError:
            pass
        daemon.wait(10)
        kills += 1
        daemon = h.start_daemon(dns=[dns], port=port, args=args, name="mw-%s" % label)
    time.sleep(1.0)                                # let the last daemon take a few messages
    stop.set()
    for t in threads:
        t.join(90)
    time.sleep(0.3)
    daemon.stop()                                  # orderly stop after the loop: final sync
    print("INFO %s: %d kills, %d sent, %d accepted (250)" % (label, kills, len(tried), len(accepted)), flush=True)
    chk.check("%s: the killer ran (%d SIGKILLs) and some mail was accepted" % (label, KILLS),
              kills >= KILLS and len(accepted) >= 50, (kills, len(accepted)))
    recs, st = read_history(hist)
    print("INFO %s: %d files, %d records, torn %d, problems %s" % (label, st["files"], st["ok"], st["torn"],
                                                                 st["problems"][:5]), flush=True)
    chk.check("%s: every line has a valid CRC32C and length (no bad_checksum/bad_version)" % label,
              st["bad_checksum"] == 0 and st["bad_version"] == 0, st["problems"][:10])
    chk.check("%s: torn lines only as a file's last line" % label, st["torn_mid"] == 0, st["problems"][:10])
    by = {}
    for r in recs:
        by.setdefault(r.get("header_from"), []).append(r)
    missing = [d for d in accepted if d not in by]
    chk.check("%s: every message that got 250 has its record (%d accepted)" % (label, len(accepted)),
              not missing, "missing %d: %s" % (len(missing), missing[:10]))
    dup = [d for d, rs in by.items() if len(rs) > 1]
    chk.check("%s: no message has two records" % label, not dup, dup[:10])
    strange = [d for d in by if d not in tried]
    chk.check("%s: no record for a message that was not sent" % label, not strange, strange[:10])
    now = time.time()
    bad = [r for r in recs if not (r.get("p") == "none" and r.get("disposition") == "none"
                                   and r.get("source_ip") == "127.0.0.1" and r.get("policy_domain") == "none.test"
                                   and r.get("rua") == ["mailto:agg@none.test"] and r.get("envelope_from") == "evil.test"
                                   and isinstance(r.get("time"), int) and now - 600 < r["time"] <= now + 5)]
    chk.check("%s: records carry header_from, p=none, disposition, source_ip, rua, time" % label,
              recs and not bad, bad[:2])


def test(h, chk):
    dns, _ = h.start_testdns(zone(), verbose=False)
    port = H.free_port()
    first = h.start_daemon(dns=[dns], port=port, args=["--history", h.path("probe")], name="probe")
    pf = h.start_postfix(port, default_action="tempfail",
                         main_extra={"milter_connect_timeout": "5s", "milter_command_timeout": "20s"})
    first.stop()
    one_run(h, chk, pf, dns, "fsync0", 0, port)
    one_run(h, chk, pf, dns, "fsync1000", 1000, port)


if __name__ == "__main__":
    H.run_test(test, "histcrash", timeout=400)
