#!/usr/bin/python3
"""TLS to Redis through the stunnel sidecar of contrib/stunnel-redis.conf (issue 18).

hiredis 0.14 has no TLS; the documented way is a local stunnel in client mode.
The test takes contrib/stunnel-redis.conf as shipped and changes only what a test must
(ports, the CA and name of a self-signed certificate made here, foreground, no setuid),
starts redis-server with TLS only (`--port 0 --tls-port P`), writes a bucket with
`redis-cli --tls`, and reads it with `mailwarden limits list --redis 127.0.0.1:ACCEPT`
through the tunnel.  Also: the same daemon command with a non-loopback --redis is refused
(redis.allow_plaintext), with the address named.  Skipped without stunnel4 or openssl.
"""
import os, re, shutil, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H


def body(h, chk):
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    if not stunnel or not shutil.which("openssl"):
        raise H.Skip("stunnel4 or openssl not installed")
    src = os.environ.get("MW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    mw = os.environ["MW_BINARY"]
    crt, key = h.path("redis.crt"), h.path("redis.key")
    H.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", crt])
    tls_port, acc_port = H.free_port(), H.free_port()
    red = h.spawn("redis-tls", ["redis-server", "--port", "0", "--tls-port", str(tls_port), "--bind", "127.0.0.1",
                                "--tls-cert-file", crt, "--tls-key-file", key, "--tls-ca-cert-file", crt,
                                "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", h.tmp])
    cli = ["redis-cli", "--tls", "--cacert", crt, "-h", "localhost", "-p", str(tls_port)]
    ok = H.wait_for(lambda: subprocess.run(cli + ["PING"], capture_output=True, text=True).stdout.strip() == "PONG", 15)
    chk.check("redis-server answers over TLS", ok, red.log_tail())

    with open(os.path.join(src, "contrib", "stunnel-redis.conf")) as f:
        conf = f.read()
    conf = re.sub(r"(?m)^(setuid|setgid|pid) = .*\n", "", conf)
    conf = conf.replace("foreground = no", "foreground = yes\npid =")
    conf = conf.replace("accept = 127.0.0.1:6380", "accept = 127.0.0.1:%d" % acc_port)
    conf = conf.replace("connect = redis.example.net:6379", "connect = 127.0.0.1:%d" % tls_port)
    conf = conf.replace("CAfile = /etc/ssl/certs/ca-certificates.crt", "CAfile = %s" % crt)
    conf = conf.replace("checkHost = redis.example.net", "checkHost = localhost")
    cpath = h.write("stunnel.conf", conf)
    st = h.spawn("stunnel", [stunnel, cpath])
    H.wait_port(acc_port, proc=st, timeout=15)

    subprocess.run(cli + ["SET", "mw:rl:{from=tls@example.org}:per-sender", "1", "PX", "600000"],
                   capture_output=True, check=True)
    out = subprocess.run([mw, "limits", "list", "--redis", "127.0.0.1:%d" % acc_port],
                         capture_output=True, text=True, timeout=30)
    chk.check("mailwarden reads the bucket through the stunnel sidecar",
              out.returncode == 0 and "{from=tls@example.org}" in out.stdout, (out.returncode, out.stdout, out.stderr))
    # the plaintext port is closed: only the tunnel reaches Redis
    out = subprocess.run([mw, "limits", "list", "--redis", "127.0.0.1:%d" % tls_port],
                         capture_output=True, text=True, timeout=30)
    chk.check("without the sidecar (TLS port spoken in plaintext) it fails", out.returncode != 0,
              (out.returncode, out.stdout, out.stderr))
    out = subprocess.run([mw, "limits", "list", "--redis", "192.0.2.7:6379"],
                         capture_output=True, text=True, timeout=30)
    chk.check("a non-loopback --redis is refused (redis.allow_plaintext)",
              out.returncode != 0 and "192.0.2.7:6379" in out.stderr and "loopback" in out.stderr,
              (out.returncode, out.stderr))


if __name__ == "__main__":
    H.run_test(body, "redis_tls_sidecar", timeout=300)
