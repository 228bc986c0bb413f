#!/usr/bin/python3
"""SMTP client that pauses in the middle of DATA, for killing the milter mid-session.

usage: smtpstep.py HOST PORT HELO FROM RCPT TOKEN
Sends EHLO, MAIL, RCPT, DATA and the message headers, prints "PAUSED" and waits for a
line on stdin; then sends the body and ".", prints "FINAL <reply>" and quits.
Each server reply is printed as "<- reply". Run it with `ip netns exec` for a
non-loopback client address.
"""
import socket, sys


def main():
    host, port, helo, mfrom, rcpt, token = sys.argv[1:7]
    s = socket.create_connection((host, int(port)), timeout=120)
    f = s.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline().decode("latin1").rstrip("\r\n")
            if not line:
                raise SystemExit("connection closed")
            lines.append(line)
            if line[3:4] != "-":
                print("<- " + line, flush=True)
                return line

    def cmd(c):
        s.sendall(c.encode() + b"\r\n")
        return reply()

    reply()
    for c in ("EHLO " + helo, "MAIL FROM:<%s>" % mfrom, "RCPT TO:<%s>" % rcpt, "DATA"):
        r = cmd(c)
        if r[:1] not in "23":
            print("FINAL " + r, flush=True)
            return
    s.sendall(("From: <%s>\r\nTo: <%s>\r\nSubject: mid-session %s\r\nMessage-ID: <%s@test>\r\n"
               % (mfrom, rcpt, token, token)).encode())
    print("PAUSED", flush=True)
    sys.stdin.readline()
    s.sendall(b"\r\nbody of %s\r\n.\r\n" % token.encode())
    print("FINAL " + reply(), flush=True)
    try:
        cmd("QUIT")
    except (OSError, SystemExit):
        pass


if __name__ == "__main__":
    main()
