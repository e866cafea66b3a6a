"""HTTPS and wss:// with certificate files (--tls-cert, --tls-key), with real
parts: a test CA and certificates made here with `openssl`, Python's `ssl`
with the `websockets` client, `curl --cacert`, and headless Chromium trusting
the test certificate through its SPKI hash.

- pages (classic CGI, the console) over https, the CGI variables HTTPS=on,
  REQUEST_SCHEME=https and SERVER_PORT, for pages, WebSocket events and
  per-connection processes;
- a wss:// echo, the origin check comparing the scheme (an http:// page may
  not open wss:// on the same host and port);
- rotation of the files while a wss:// connection stays open: it keeps
  working, a new connection gets the new certificate (its serial); a bad
  new pair is logged and the old one kept; SIGHUP reloads;
- a client that never finishes the TLS handshake is closed (--http-timeout);
- one clear start-up line for a missing file, bad PEM, a key that is not the
  certificate's;
- the certificate's expiry in /metrics.
"""

import asyncio
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from harness import Server, needs, parse_env

openssl = needs("backends")  # tests/suites.txt: the backends suite lists openssl
curl = needs("curl")

PAGE = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
env
"""
ECHO = """#!/bin/sh
[ "$WS_EVENT" = message ] && cat
exit 0
"""
ENV_EVENT = """#!/bin/sh
[ "$WS_EVENT" = open ] && { printf 'Content-Type: application/x-env\\n\\n'; env; }
exit 0
"""
PER_CONNECTION = """#!/bin/sh
env | grep -E '^(HTTPS|REQUEST_SCHEME|SERVER_PORT)=' | sort | tr '\\n' ' '
echo
"""


def client_hello(server_name):
    """A TLS 1.2/1.3 ClientHello record carrying `server_name` as its SNI."""
    def ext(kind, data):
        return struct.pack(">HH", kind, len(data)) + data
    name = struct.pack(">BH", 0, len(server_name)) + server_name
    exts = (ext(0, struct.pack(">H", len(name)) + name)
            + ext(10, bytes.fromhex("0004001d0017"))          # groups: x25519, P-256
            + ext(13, bytes.fromhex("0006040308040401")))     # signature algorithms
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + bytes.fromhex("0004c02bc02f") + b"\x01\x00"
            + struct.pack(">H", len(exts)) + exts)
    handshake = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


class Pki:
    """A test CA in `dir`, and server certificates it signs."""

    def __init__(self, dir):
        self.dir = dir
        self.ca = os.path.join(dir, "ca.pem")
        self.ca_key = os.path.join(dir, "ca.key")
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=ws2http test CA")

    def issue(self, name, serial):
        """(cert path, key path) of a new certificate for localhost and
        127.0.0.1 with this serial number."""
        key = os.path.join(self.dir, "%s.key" % name)
        csr = os.path.join(self.dir, "%s.csr" % name)
        cert = os.path.join(self.dir, "%s.pem" % name)
        ext = os.path.join(self.dir, "%s.ext" % name)
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
        run("openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
            "-set_serial", str(serial), "-days", "1", "-extfile", ext, "-out", cert)
        return cert, key

    def context(self):
        return ssl.create_default_context(cafile=self.ca)


def served_serial(port, ca):
    """The serial number of the certificate a new TLS connection gets."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
                         input=der, check=True, capture_output=True).stdout.decode()
    return int(out.strip().split("=", 1)[1], 16)


@openssl
class TlsTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ws2http-tls-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.pki = Pki(self.dir)
        self.cert, self.key = self.pki.issue("server", 1001)
        # The files ws2http is given, replaced in place by the rotation test.
        self.live_cert = os.path.join(self.dir, "live-cert.pem")
        self.live_key = os.path.join(self.dir, "live-key.pem")
        shutil.copy(self.cert, self.live_cert)
        shutil.copy(self.key, self.live_key)
        self.cgi = os.path.join(self.dir, "cgi-bin")
        os.mkdir(self.cgi)
        for name, text in (("page.sh", PAGE), ("echo.sh", ECHO), ("env.sh", ENV_EVENT),
                           ("pc.sh", PER_CONNECTION)):
            path = os.path.join(self.cgi, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)

    def start(self, *args):
        server = Server(cgi_bin=self.cgi, args=["--tls-cert", self.live_cert, "--tls-key", self.live_key]
                        + list(args))
        self.addCleanup(server.kill)
        self.addCleanup(server.stop)
        self.server = server.start()
        self.assertIn("ws2http: listening on https://127.0.0.1:%d" % server.port, server.stdout_lines)
        return server

    def wss(self, path, **kw):
        return ws_connect("wss://localhost:%d%s" % (self.server.port, path), ssl=self.pki.context(), **kw)

    @curl
    def test_pages_and_the_cgi_environment_over_https(self):
        s = self.start()
        url = "https://localhost:%d" % s.port
        out = run("curl", "-sS", "--fail", "--cacert", self.pki.ca, url + "/page.sh?x=1").stdout.decode()
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.assertEqual((env.get("HTTPS"), env.get("REQUEST_SCHEME"), env.get("SERVER_PORT")),
                         ("on", "https", str(s.port)), out)
        self.assertEqual(env.get("QUERY_STRING"), "x=1")
        console = run("curl", "-sS", "--fail", "--cacert", self.pki.ca, url + "/").stdout.decode()
        self.assertIn("wss://", console, "the console opens wss:// from an https page")
        # A client that does not trust the test CA is refused by curl itself.
        bad = subprocess.run(["curl", "-sS", url + "/page.sh"], capture_output=True)
        self.assertNotEqual(bad.returncode, 0)

    def test_plain_http_scripts_see_the_http_scheme(self):
        s = Server(cgi_bin=self.cgi)
        self.addCleanup(s.kill)
        self.addCleanup(s.stop)
        s.start()

        async def go():
            async with ws_connect("ws://127.0.0.1:%d/env.sh" % s.port) as ws:
                return parse_env(await asyncio.wait_for(ws.recv(), 10))
        env = asyncio.run(go())
        self.assertEqual(env.get("REQUEST_SCHEME"), "http")
        self.assertNotIn("HTTPS", env)

    def test_wss_echo_and_event_environment(self):
        s = self.start()

        async def go():
            async with self.wss("/env.sh") as ws:
                env = parse_env(await asyncio.wait_for(ws.recv(), 10))
            async with self.wss("/echo.sh") as ws:
                got = []
                for text in ("hello", "x" * 100_000):
                    await ws.send(text)
                    got.append(await asyncio.wait_for(ws.recv(), 10))
            return env, got
        env, got = asyncio.run(go())
        self.assertEqual((env.get("HTTPS"), env.get("REQUEST_SCHEME"), env.get("SERVER_PORT")),
                         ("on", "https", str(s.port)))
        self.assertEqual(got, ["hello", "x" * 100_000])

    def test_ws2http_connect_speaks_wss(self):
        s = self.start()
        url = "wss://localhost:%d/echo.sh" % s.port
        env = dict(os.environ, SSL_CERT_FILE=self.pki.ca)
        out = subprocess.run([s.command()[0], "connect", url], input=b"hello\n", env=env,
                             capture_output=True, timeout=30)
        self.assertEqual((out.stdout, out.returncode), (b"hello\n", 0), out.stderr)
        # Without the test CA the certificate does not verify.
        env = dict(os.environ, SSL_CERT_FILE=os.path.join(self.dir, "server.pem"))
        out = subprocess.run([s.command()[0], "connect", url], input=b"", env=env, capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 1)
        self.assertIn(b"TLS handshake failed", out.stderr)

    def test_per_connection_process_environment(self):
        self.start("--per-connection", "/pc.sh")

        async def go():
            async with self.wss("/pc.sh") as ws:
                return await asyncio.wait_for(ws.recv(), 10)
        line = asyncio.run(go())
        self.assertEqual(line.split(), ["HTTPS=on", "REQUEST_SCHEME=https", "SERVER_PORT=%d" % self.server.port])

    def test_origin_must_be_https_on_a_tls_listener(self):
        s = self.start()

        async def handshake(origin):
            try:
                async with self.wss("/echo.sh", origin=origin) as ws:
                    await ws.send("ok")
                    return await asyncio.wait_for(ws.recv(), 10)
            except InvalidStatus as e:
                return e.response.status_code
        self.assertEqual(asyncio.run(handshake("https://localhost:%d" % s.port)), "ok")
        self.assertEqual(asyncio.run(handshake("http://localhost:%d" % s.port)), 403)
        self.assertIn("refused a handshake from origin", s.log_text())

    def test_rotation_keeps_open_connections_and_serves_the_new_certificate(self):
        s = self.start()
        self.assertEqual(served_serial(s.port, self.pki.ca), 1001)
        new_cert, new_key = self.pki.issue("renewed", 2002)
        other_cert, other_key = self.pki.issue("other", 3003)

        async def go():
            async with self.wss("/echo.sh") as ws:
                await ws.send("before")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "before")
                # A bad pair first: the new certificate with another's key.
                self.replace(new_cert, other_key)
                await self.until(lambda: "TLS certificate not reloaded" in s.log_text(), "bad pair logged")
                self.assertEqual(served_serial(s.port, self.pki.ca), 1001, "the old pair is kept")
                self.replace(new_cert, new_key)
                await self.until(lambda: served_serial(s.port, self.pki.ca) == 2002, "new serial served")
                await ws.send("after")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "after")
        asyncio.run(go())
        self.assertIn("TLS certificate reloaded", s.log_text())

    def test_sighup_reloads(self):
        s = self.start()
        other_cert, other_key = self.pki.issue("other", 4004)
        # Same size and modification time as the old files: only SIGHUP tells.
        stamps = [os.stat(p) for p in (self.live_cert, self.live_key)]
        self.replace(other_cert, other_key)
        for p, st in zip((self.live_cert, self.live_key), stamps):
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        s.proc.send_signal(signal.SIGHUP)
        asyncio.run(self.until(lambda: served_serial(s.port, self.pki.ca) == 4004, "serial after SIGHUP"))
        self.assertIn("(SIGHUP)", s.log_text())
        self.assertIsNone(s.proc.poll(), "SIGHUP must not stop the server")

    def test_a_stalled_handshake_is_closed(self):
        s = self.start("--http-timeout", "1")
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
            self.assertEqual(c.recv(100), b"", "the server closes the connection")
        asyncio.run(self.until(lambda: "TLS handshake not done within" in s.log_text(), "the timeout logged"))
        # A broken TLS record fails the handshake, logged.
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"\x16\x03\x01\x00\x05hello")
            while c.recv(4096):
                pass
        asyncio.run(self.until(lambda: "TLS handshake failed" in s.log_text(), "failed handshake logged"))

    @curl
    def test_a_clients_server_name_never_reaches_the_log(self):
        # rustls logs a rejected SNI name in full: any client could fill the
        # log with its own bytes, once per handshake. Its target is off.
        s = self.start()
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(client_hello(b"x" * 3000))  # not a DNS name: rustls rejects it
            while c.recv(4096):
                pass
        asyncio.run(self.until(lambda: "TLS handshake failed" in s.log_text(), "the failed handshake logged"))
        self.assertNotIn("x" * 100, s.log_text())

    @curl
    def test_plain_http_on_the_https_port_is_told_to_use_https(self):
        s = self.start()
        out = subprocess.run(["curl", "-sS", "-i", "http://localhost:%d/page.sh" % s.port],
                             capture_output=True, check=True).stdout.decode()
        self.assertTrue(out.startswith("HTTP/1.1 400 Bad Request\r\n"), out)
        self.assertIn("this port speaks HTTPS; use https://localhost:%d/" % s.port, out)
        asyncio.run(self.until(lambda: "plain HTTP sent to the HTTPS port" in s.log_text(), "logged"))
        # Without a Host field, the listener's address stands in.
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                answer += chunk
        self.assertIn(b"use https://127.0.0.1:%d/" % s.port, answer)
        # The server still speaks HTTPS.
        self.assertEqual(run("curl", "-sS", "--fail", "--cacert", self.pki.ca,
                             "https://localhost:%d/page.sh" % s.port).returncode, 0)

    def test_certificate_expiry_in_metrics(self):
        s = self.start()
        end = run("openssl", "x509", "-in", self.cert, "-noout", "-enddate").stdout.decode()
        not_after = int(time.mktime(time.strptime(end.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z"))
                        - time.timezone)
        status, _, raw, _ = s.api("GET", "/metrics")
        self.assertEqual(status, 200)
        text = raw.decode()
        for domain in ("localhost", "127.0.0.1"):
            self.assertIn('ws2http_tls_cert_not_after_seconds{domain="%s"} %d' % (domain, not_after), text)

    def test_startup_errors_are_one_clear_line(self):
        bad_pem = os.path.join(self.dir, "bad.pem")
        with open(bad_pem, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
        empty = os.path.join(self.dir, "empty.pem")
        open(empty, "w").close()
        _, other_key = self.pki.issue("other", 5005)
        missing = os.path.join(self.dir, "missing.pem")
        cases = [
            ([missing, self.key], "--tls-cert %s: cannot read it" % missing),
            ([bad_pem, self.key], "--tls-cert %s: not valid PEM" % bad_pem),
            ([self.cert, empty], "--tls-key %s: no PEM private key in it" % empty),
            ([self.cert, other_key], "--tls-key %s is not the key of the certificate" % other_key),
        ]
        for (cert, key), expected in cases:
            with self.subTest(expected=expected):
                s = Server(cgi_bin=self.cgi, args=["--tls-cert", cert, "--tls-key", key]).spawn()
                self.addCleanup(s.kill)
                rc, out, log = s.wait_exit()
                self.assertNotEqual(rc, 0)
                lines = [l for l in log.splitlines() if "error" in l.lower()]
                self.assertEqual(len(lines), 1, log)
                self.assertIn(expected, lines[0])
                self.assertFalse(any("listening" in l for l in out), out)
        s = Server(cgi_bin=self.cgi, args=["--tls-cert", self.cert]).spawn()
        self.addCleanup(s.kill)
        rc, _, log = s.wait_exit()
        self.assertNotEqual(rc, 0)
        self.assertIn("--tls-key", log)

    # -- helpers -----------------------------------------------------------
    def replace(self, cert, key):
        """Puts a new pair in place the way a renewal job does (a rename each)."""
        for src, dst in ((cert, self.live_cert), (key, self.live_key)):
            tmp = dst + ".tmp"
            shutil.copy(src, tmp)
            os.replace(tmp, dst)

    async def until(self, predicate, what, timeout=15):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s; log:\n%s" % (what, self.server.log_text()[-3000:]))
            await asyncio.sleep(0.1)


def spki_hash(cert):
    """base64 SHA-256 of the certificate's SubjectPublicKeyInfo (what
    Chromium's --ignore-certificate-errors-spki-list takes)."""
    pub = run("openssl", "x509", "-in", cert, "-noout", "-pubkey").stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


BROWSER_PAGE = """<!doctype html><title>wss</title><p id="out">waiting</p>
<script>
const ws = new WebSocket("wss://" + location.host + "/echo.sh");
ws.onopen = () => ws.send("hello over wss");
ws.onmessage = (e) => { document.getElementById("out").textContent = "got: " + e.data; };
ws.onerror = () => { document.getElementById("out").textContent = "error"; };
</script>
"""


@openssl
@needs("browser")
class TlsBrowserTest(unittest.TestCase):
    """Chromium loads an https:// page that opens wss:// and exchanges a message."""

    def test_https_page_opens_wss(self):
        import webdriver
        dir = tempfile.mkdtemp(prefix="ws2http-tls-browser-")
        self.addCleanup(shutil.rmtree, dir, True)
        pki = Pki(dir)
        cert, key = pki.issue("server", 7007)
        root, cgi = os.path.join(dir, "public"), os.path.join(dir, "cgi-bin")
        os.mkdir(root)
        os.mkdir(cgi)
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write(BROWSER_PAGE)
        with open(os.path.join(cgi, "echo.sh"), "w") as f:
            f.write(ECHO)
        os.chmod(os.path.join(cgi, "echo.sh"), 0o755)
        s = Server(cgi_bin=cgi, args=["--root", root, "--tls-cert", cert, "--tls-key", key])
        self.addCleanup(s.kill)
        self.addCleanup(s.stop)
        s.start()
        b = webdriver.Browser(args=["--ignore-certificate-errors-spki-list=" + spki_hash(cert)])
        self.addCleanup(b.quit)
        b.get("https://localhost:%d/index.html" % s.port)
        self.assertEqual(b.url, "https://localhost:%d/index.html" % s.port)
        try:
            b.wait_until(lambda: b.text("#out") == "got: hello over wss", 15, "the echo in the page")
        except AssertionError as e:
            raise AssertionError("%s; page says %r; log:\n%s" % (e, b.text("#out"), s.log_text()[-3000:]))
        self.assertIn("/echo.sh open from", s.log_text())


if __name__ == "__main__":
    unittest.main()
