#!/usr/bin/python3
"""Tiny Dovecot-auth-protocol server for Postfix smtpd_sasl_type=dovecot tests.
Accepts PLAIN and LOGIN; any user whose password equals PASSWORD succeeds.
usage: fakedovecotauth.py PORT [PASSWORD]"""
import base64, os, socketserver, sys
PORT = int(sys.argv[1]); PASSWORD = sys.argv[2] if len(sys.argv) > 2 else "secret"

class H(socketserver.StreamRequestHandler):
    def out(self, s):
        self.wfile.write((s + "\n").encode()); self.wfile.flush()
    def handle(self):
        try:
            self.session()
        except (BrokenPipeError, ConnectionResetError):
            pass                                   # e.g. port probes that connect and close
    def session(self):
        self.out("VERSION\t1\t2"); self.out("MECH\tPLAIN\tplaintext"); self.out("MECH\tLOGIN\tplaintext")
        self.out("SPID\t%d" % os.getpid()); self.out("CUID\t1"); self.out("COOKIE\t" + "0" * 32); self.out("DONE")
        pending = {}
        for raw in self.rfile:
            f = raw.decode().rstrip("\n").split("\t")
            if f[0] == "AUTH":
                rid, mech = f[1], f[2].upper()
                kv = dict(x.split("=", 1) for x in f[3:] if "=" in x)
                if mech == "PLAIN":
                    if "resp" not in kv:
                        self.out("CONT\t%s\t" % rid); pending[rid] = ["PLAIN"]; continue
                    self.check_plain(rid, kv["resp"])
                elif mech == "LOGIN":
                    pending[rid] = ["LOGIN"]
                    self.out("CONT\t%s\t%s" % (rid, base64.b64encode(b"Username:").decode()))
                else:
                    self.out("FAIL\t%s" % rid)
            elif f[0] == "CONT":
                rid, data = f[1], (f[2] if len(f) > 2 else "")
                st = pending.get(rid)
                if not st:
                    self.out("FAIL\t%s" % rid); continue
                if st[0] == "PLAIN":
                    del pending[rid]; self.check_plain(rid, data)
                elif len(st) == 1:
                    st.append(base64.b64decode(data).decode())
                    self.out("CONT\t%s\t%s" % (rid, base64.b64encode(b"Password:").decode()))
                else:
                    del pending[rid]; self.finish_auth(rid, st[1], base64.b64decode(data).decode())
    def check_plain(self, rid, b64):
        parts = base64.b64decode(b64).split(b"\0")
        self.finish_auth(rid, parts[1].decode(), parts[2].decode())
    def finish_auth(self, rid, user, pw):
        if pw == PASSWORD:
            self.out("OK\t%s\tuser=%s" % (rid, user))
        else:
            self.out("FAIL\t%s\tuser=%s" % (rid, user))

class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True; daemon_threads = True
S(("127.0.0.1", PORT), H).serve_forever()
