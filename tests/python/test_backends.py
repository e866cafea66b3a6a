"""The FastCGI and HTTP backends against real servers (docs/BACKENDS.md).

FastCGI (--fastcgi): php-fpm, started here with a pool config of its own
(tests/python/nginx/php-fpm.conf) on a loopback port or a unix socket, runs
examples/php-chat unchanged (WebSocket events and pages) and the PHP fixtures
in tests/python/fpm/; it is killed, stopped and restarted under a live server.

HTTP (--backend-url): nginx with fcgiwrap runs the repository's shell scripts
and the fixtures in tests/python/nginx/sh/, and php-fpm behind nginx runs PHP
(tests/python/nginx/*.conf, ws2http_params). A small recording HTTP server
started by the tests checks the exact request headers, response parsing,
status handling, a backend going away and coming back, and keep-alive.

php-fpm, nginx and fcgiwrap are looked up in PATH and the sbin directories;
a test that needs a missing one fails, saying how to install them (./test does). Every wait is bounded.
"""

import asyncio
import base64
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import test_examples
from harness import (HEX32, REPO_ROOT, TIMEOUT, ServerTestCase, complete_lines,
                     data_path, needs, raw_upgrade, read_file, unique, wait_for)
from test_examples import PHP_DIR, TOKEN, ChatFlow, http_call

NGINX_DIR = os.path.join(REPO_ROOT, "tests", "python", "nginx")
FPM_DIR_REL = os.path.join("tests", "python", "fpm")
FPM_DIR = os.path.join(REPO_ROOT, FPM_DIR_REL)
READY_TIMEOUT = 10.0
ALL_BYTES = bytes(range(256))


def find_program(*patterns):
    """First match of the name patterns in PATH, then the sbin directories
    (where Debian puts php-fpm8.2, nginx and fcgiwrap)."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += ["/usr/sbin", "/usr/local/sbin", "/sbin"]
    for pattern in patterns:
        for d in dirs:
            for path in sorted(glob.glob(os.path.join(d, pattern)), reverse=True):
                if os.path.isfile(path) and os.access(path, os.X_OK):
                    return path
    return None


PHP_FPM = find_program("php-fpm", "php-fpm[0-9]*", "php[0-9]*-fpm")
NGINX = find_program("nginx")
FCGIWRAP = find_program("fcgiwrap")
IS_ROOT = os.geteuid() == 0

# php-fpm, nginx and fcgiwrap: the "backends" suite of tests/suites.txt.
needs_fpm = needs("backends")
needs_nginx = needs("backends")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refusing_port(test):
    """A port where nothing listens for as long as `test` runs: bound and
    never listening, so a connect is refused at once. (A port that is only
    free when picked may be taken meanwhile by another test's server, which
    then answers instead.)"""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    test.addCleanup(s.close)
    return s.getsockname()[1]


def tcp_ready(port):
    def check():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    return check


def unix_ready(path):
    def check():
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(path)
                return True
        except OSError:
            return False
    return check


def render(template, out_path, **subs):
    with open(os.path.join(NGINX_DIR, template)) as f:
        text = f.read()
    for key, value in subs.items():
        text = text.replace("@%s@" % key, str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, "unfilled placeholders in %s: %s" % (template, left)
    with open(out_path, "w") as f:
        f.write(text)
    return out_path


def count_sockets(port):
    """TCP sockets in /proc/net/tcp with `port` at either end, excluding the
    listener: (established, other states such as TIME_WAIT)."""
    est = other = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "0A":   # LISTEN
                continue
            ports = {int(local.split(":")[1], 16), int(remote.split(":")[1], 16)}
            if port in ports:
                if state == "01":
                    est += 1
                else:
                    other += 1
    return est, other


class Daemon:
    """An external server (php-fpm, nginx, fcgiwrap) in a process group of its
    own, output to a log file; `ready` is polled until it returns true."""

    def __init__(self, name, cmd, ready, log_path):
        self.name, self.cmd, self.ready, self.log_path = name, cmd, ready, log_path
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("%s did not start: %s\n%s"
                                     % (self.name, " ".join(self.cmd), self.log()))
            time.sleep(0.02)
        return self

    def signal(self, sig):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        """SIGKILL to the whole group: the master and every worker die at once."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.kill()   # leftover workers of the group, if any

    def log(self):
        return read_file(self.log_path) or ""


def php_fpm(workdir, listen, children=4):
    """php-fpm with tests/python/nginx/php-fpm.conf; listen is a TCP port or a
    unix socket path."""
    if isinstance(listen, int):
        address, ready = "127.0.0.1:%d" % listen, tcp_ready(listen)
    else:
        address, ready = listen, unix_ready(listen)
    conf = render("php-fpm.conf", os.path.join(workdir, "php-fpm.conf"),
                  DIR=workdir, LISTEN=address, CHILDREN=children)
    cmd = [PHP_FPM, "-F", "-y", conf] + (["-R"] if IS_ROOT else [])
    d = Daemon("php-fpm", cmd, ready, os.path.join(workdir, "php-fpm.out"))
    d.address = address if isinstance(listen, int) else "unix:" + listen
    d.port = listen if isinstance(listen, int) else None
    return d.start()


def fcgiwrap(workdir, port):
    cmd = [FCGIWRAP, "-c", "4", "-f", "-s", "tcp:127.0.0.1:%d" % port]
    return Daemon("fcgiwrap", cmd, tcp_ready(port), os.path.join(workdir, "fcgiwrap.out")).start()


def nginx(workdir, site_template, port, **subs):
    """nginx with its own prefix, pid, logs and temp paths in workdir, and the
    site template (tests/python/nginx/*.conf) in its http block."""
    shutil.copy(os.path.join(NGINX_DIR, "ws2http_params"), workdir)
    # The site templates use the stock fastcgi_params for page requests.
    out = subprocess.run([NGINX, "-V"], capture_output=True, text=True).stderr
    m = re.search(r"--conf-path=(\S+)", out)
    stock = os.path.join(os.path.dirname(m.group(1)) if m else "/etc/nginx", "fastcgi_params")
    if os.path.exists(stock):
        shutil.copy(stock, workdir)
    render(site_template, os.path.join(workdir, "site.conf"), DIR=workdir, REPO=REPO_ROOT, **subs)
    temp = "".join("    %s_temp_path %s;\n" % (k, os.path.join(workdir, k))
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = os.path.join(workdir, "nginx.conf")
    with open(main, "w") as f:
        f.write("daemon off;\nworker_processes 1;\npid %s/nginx.pid;\n"
                "error_log %s/nginx-error.log info;\n"
                "events { worker_connections 256; }\n"
                "http {\n    access_log %s/nginx-access.log;\n%s"
                "    default_type application/octet-stream;\n"
                "    include site.conf;\n}\n" % (workdir, workdir, workdir, temp))
    cmd = [NGINX, "-p", workdir, "-c", main, "-e", os.path.join(workdir, "nginx-error.log")]
    d = Daemon("nginx", cmd, tcp_ready(port), os.path.join(workdir, "nginx.out"))
    d.error_log = os.path.join(workdir, "nginx-error.log")
    return d.start()


def make_workdir():
    d = tempfile.mkdtemp(prefix="ws2http-backends-")
    os.chmod(d, 0o755)   # nginx workers run as nobody under root
    return d


class DaemonsMixin:
    """Starts and stops external servers per class (start_class) or per test
    (start_test); both are stopped even when a later start fails."""

    @classmethod
    def start_class(cls, factory, *args, **kw):
        d = factory(*args, **kw)
        cls.addClassCleanup(d.stop)
        return d

    def start_test(self, factory, *args, **kw):
        d = factory(*args, **kw)
        self.addCleanup(d.stop)
        return d

    @classmethod
    def class_workdir(cls):
        d = make_workdir()
        cls.addClassCleanup(shutil.rmtree, d, True)
        return d

    async def sentinel(self, ws, cid):
        """Proves that nothing else is queued for ws (with the API token when
        the class uses one): a unique push must be the very next message."""
        token = TOKEN if TOKEN in self.server_args else None
        mark = unique("sentinel-")
        status, _, raw, _ = await self.api("POST", "/send/" + cid, mark, token=token)
        self.assertEqual(status, 200, raw)
        got = await self.recv(ws)
        self.assertEqual(got, mark, "expected the pushed sentinel next")

    def logs(self, *daemons):
        return "\n".join("--- %s:\n%s" % (d.name, d.log()[-2000:]) for d in daemons) + \
            "\n--- ws2http:\n" + self.server.log_text()[-4000:]


# -----------------------------------------------------------------------------
# FastCGI: the PHP chat on php-fpm


class FpmChatFlow(DaemonsMixin, ChatFlow):
    app_dir = PHP_DIR
    endpoint = "/chat.php"
    unix_socket = False

    @classmethod
    @needs_fpm
    def setUpClass(cls):
        super().setUpClass()
        work = cls.class_workdir()
        listen = os.path.join(work, "fpm.sock") if cls.unix_socket else free_port()
        cls.fpm = cls.start_class(php_fpm, work, listen)

    @property
    def server_args(self):
        return super().server_args + ["--fastcgi", self.fpm.address]

    async def test_two_clients_chat(self):
        await self.check_two_clients_chat()

    async def test_non_ascii_nick(self):
        room = unique("r")
        ws = await self.join(room, "J\u00fcrgen K.", ["J\u00fcrgen K."])
        await ws.send("gr\u00fc\u00df dich")
        await self.expect_message(ws, "J\u00fcrgen K.", "gr\u00fc\u00df dich")

    async def test_index_page_remembers_nick_in_session(self):
        # index.php (GET, form POST on stdin, 303, cookie session) and the chat
        # page, all run by php-fpm through ws2http's page routing.
        await test_examples.PhpChatTest.test_index_page_remembers_nick_in_session(self)
        self.assertIn("(fastcgi ", self.server.log_text())


class FpmChatTcpTest(FpmChatFlow, ServerTestCase):
    """`--fastcgi 127.0.0.1:PORT --cgi-bin examples/php-chat/cgi-bin --root examples/php-chat/public`."""

    async def test_invalid_open_rejected(self):
        # http_response_code(400) in PHP: php-fpm's Status header rejects the handshake
        await self.check_invalid_open_rejected()

    async def test_binary_gets_error(self):
        await self.check_binary_gets_error()

    async def test_index_lists_active_rooms(self):
        # the page reaches the control API through WS2HTTP_API_URL/_TOKEN params
        await test_examples.PhpChatTest.test_index_lists_active_rooms(self)

    async def test_private_files_and_pages(self):
        status, _, body = await self.http("GET", "/lib.php")
        self.assertEqual((status, body), (404, b""))
        status, _, _ = await self.raw("/lib.php")
        self.assertEqual(status, 404)
        status, _, _ = await self.raw("/index.php")   # a page, not an endpoint
        self.assertEqual(status, 404)
        status, headers, _ = await self.http("GET", "/chat.php?room=lobby")
        self.assertEqual((status, headers.get("Location")), (302, "index.php?room=lobby"))

    async def test_static_files_under_the_prefix(self):
        # Regression (fixed): under a --fastcgi prefix every regular file is
        # sent to php-fpm, which refuses style.css with "403 Access denied."
        # (security.limit_extensions); expected: served from --root as without
        # --fastcgi. Workaround: per-file prefixes (FpmPerPrefixChatTest).
        status, headers, _ = await self.http("GET", "/style.css")
        self.assertEqual(status, 200)
        self.assertTrue(headers.get("Content-Type", "").startswith("text/css"))


class FpmChatUnixTest(FpmChatFlow, ServerTestCase):
    """The same over a unix socket: `--fastcgi unix:/path/fpm.sock`."""
    unix_socket = True


class FpmPerPrefixChatTest(DaemonsMixin, ServerTestCase):
    """Per-prefix routes: only the .php files go to php-fpm, so style.css and
    index.html stay static files from --root."""
    cgi_bin = os.path.join(PHP_DIR, "cgi-bin")

    @classmethod
    @needs_fpm
    def setUpClass(cls):
        super().setUpClass()
        cls.fpm = cls.start_class(php_fpm, cls.class_workdir(), free_port())

    @property
    def server_args(self):
        args = ["--root", os.path.join(PHP_DIR, "public"), "--api-token", TOKEN, "--handler", "php=/bin/false"]
        for page in ("/chat.php", "/index.php", "/lib.php"):
            args += ["--fastcgi", "%s=%s" % (page, self.fpm.address)]
        return args

    async def http(self, method, path, body=None, headers=None):
        return await asyncio.to_thread(http_call, self.server.port, method, path, body, headers)

    async def test_static_files_and_php_pages(self):
        status, headers, body = await self.http("GET", "/style.css")
        self.assertEqual(status, 200, self.server.log_text()[-2000:])
        self.assertTrue(headers.get("Content-Type", "").startswith("text/css"))
        status, _, body = await self.http("GET", "/")
        self.assertEqual(status, 200)
        self.assertIn(b"url=index.php", body)
        # --handler php=/bin/false would fail every spawned PHP script: these
        # pages and events can only work through php-fpm
        status, _, body = await self.http("GET", "/index.php")
        self.assert_status(status, 200, "/index.php")
        self.assertIn(b'id="join"', body)
        status, _, body = await self.http("GET", "/lib.php")   # routed, so never served as a file
        self.assertEqual((status, body), (404, b""))
        ws = await self.connect("/chat.php?room=r1&nick=ann")
        self.assertEqual(json.loads(await self.recv_text(ws))["type"], "welcome")


# -----------------------------------------------------------------------------
# FastCGI: the contract, binary data, pooling


class FpmFixtureTest(DaemonsMixin, ServerTestCase):
    """--cgi-bin tests/python --fastcgi /fpm=ADDR: /fpm/*.php go to php-fpm
    (one worker: pm.max_children=1), /cgi-bin/*.sh are still spawned as CGI."""
    cgi_bin = os.path.join("tests", "python")

    @classmethod
    @needs_fpm
    def setUpClass(cls):
        super().setUpClass()
        cls.fpm = cls.start_class(php_fpm, cls.class_workdir(), free_port(), children=1)

    @property
    def server_args(self):
        return ["--fastcgi", "/fpm=" + self.fpm.address, "--api-token", TOKEN]

    async def recv_json(self, ws):
        raw = await self.recv_text(ws)
        try:
            return json.loads(raw)
        except ValueError:
            self.fail("not JSON: %r\n%s" % (raw, self.logs(self.fpm)))

    async def test_every_ws_variable_reaches_php(self):
        headers = dict(additional_headers=[("Cookie", "flavour=oat"), ("X-Custom", "hello world")],
                       user_agent_header="ws2http-pytest/backends")
        ws = await self.connect("/fpm/env.php/room/42?nick=ann&x=%20y", **headers)
        env = await self.recv_json(ws)

        # the same names (and HTTP_* values) as a spawned script of the same server gets
        cgi = await self.connect("/cgi-bin/env.sh/room/42?nick=ann&x=%20y", **headers)
        cgi_env = dict(line.split("=", 1) for line in (await self.recv_text(cgi)).splitlines())
        await cgi.close()
        names = lambda e: {k for k in e if not k.startswith(("_", "HTTP_"))}
        http = lambda e: {k: v for k, v in e.items() if k.startswith("HTTP_") and k != "HTTP_SEC_WEBSOCKET_KEY"}
        self.assertEqual(names(env), names(cgi_env))
        self.assertEqual(http(env), http(cgi_env))

        cid = env.get("WS_CONNECTION_ID", "")
        self.assertRegex(cid, HEX32)
        expected = {
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": "GET", "SCRIPT_NAME": "/fpm/env.php",
            "SCRIPT_FILENAME": os.path.join(FPM_DIR, "env.php"),
            "PATH_INFO": "/room/42", "QUERY_STRING": "nick=ann&x=%20y",
            "REQUEST_URI": "/fpm/env.php/room/42?nick=ann&x=%20y",
            "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.server.port), "REDIRECT_STATUS": "200",
            "WS_EVENT": "open", "WS_ROOMS": "", "WS_API_URL": self.server.api_url,
            "WS_API_TOKEN": TOKEN, "HTTP_COOKIE": "flavour=oat",
            "HTTP_X_CUSTOM": "hello world", "HTTP_USER_AGENT": "ws2http-pytest/backends",
            "_stdin_b64": "",
        }
        for key, value in expected.items():
            self.assertEqual(env.get(key), value, key)
        self.assertTrue(env.get("SERVER_SOFTWARE", "").startswith("ws2http/"))
        self.assertRegex(env.get("REMOTE_PORT", ""), r"^\d+$")
        self.assertIn("PATH", env)
        for absent in ("WS_MESSAGE_TYPE", "WS_CLOSE_CODE", "CONTENT_LENGTH", "WS2HTTP_API_URL"):
            self.assertNotIn(absent, env)

        # directives printed by PHP (line mode), then a text and a binary message
        for line in ("@join r2", "@join r1", "@set nick ann", "@set last_seen 12:00"):
            await ws.send(line)
        await ws.send("hello\nworld")
        env = await self.recv_json(ws)
        self.assertEqual(env.get("WS_CONNECTION_ID"), cid)
        for key, value in {
            "WS_EVENT": "message", "REQUEST_METHOD": "POST", "WS_MESSAGE_TYPE": "text",
            "CONTENT_TYPE": "text/plain; charset=utf-8", "CONTENT_LENGTH": "11",
            "WS_ROOMS": "r1 r2", "WS_META_nick": "ann", "WS_META_last_seen": "12:00",
            "QUERY_STRING": "nick=ann&x=%20y", "PATH_INFO": "/room/42",
        }.items():
            self.assertEqual(env.get(key), value, key)
        self.assertEqual(base64.b64decode(env["_stdin_b64"]), b"hello\nworld")
        await ws.send(b"\x00\xff")
        env = await self.recv_json(ws)
        self.assertEqual((env.get("WS_MESSAGE_TYPE"), env.get("CONTENT_TYPE"), env.get("CONTENT_LENGTH")),
                         ("binary", "application/octet-stream", "2"))
        self.assertEqual(base64.b64decode(env["_stdin_b64"]), b"\x00\xff")

        # the close event sees code, reason, cause, rooms and metadata
        await ws.close(4001, "bye now")
        path = self.track(data_path(cid + ".close.json"))
        text = await wait_for(lambda: read_file(path), TIMEOUT, "close dump from php-fpm")
        env = json.loads(text)
        for key, value in {
            "WS_EVENT": "close", "REQUEST_METHOD": "POST", "CONTENT_LENGTH": "0",
            "WS_CLOSE_CODE": "4001", "WS_CLOSE_REASON": "bye now", "WS_CLOSE_CAUSE": "client",
            "WS_ROOMS": "r1 r2", "WS_META_nick": "ann", "WS_CONNECTION_ID": cid,
        }.items():
            self.assertEqual(env.get(key), value, key)
        self.assertNotIn("WS_MESSAGE_TYPE", env)

    async def test_php_errors_go_to_the_log(self):
        # FCGI_STDERR is logged; a fatal error makes PHP answer Status: 500,
        # which rejects an open (app status itself is not available)
        status, _, _ = await self.raw("/fpm/env.php?fatal=1")
        self.assertEqual(status, 500)
        await wait_for(lambda: re.search(r"open \(fastcgi [^)]*\): stderr: PHP message: PHP Fatal error: .*no_such",
                                         self.server.log_text()), TIMEOUT, "the open's error in the log")
        ws = await self.connect("/fpm/env.php")
        cid = (await self.recv_json(ws))["WS_CONNECTION_ID"]
        await ws.send("fatal")
        await wait_for(lambda: re.search(r"\(fastcgi [^)]*\): stderr: PHP message: PHP Fatal error: .*no_such_function",
                                         self.server.log_text()), TIMEOUT, "PHP's error in the log")
        await self.sentinel(ws, cid)   # nothing sent, still open
        await wait_for(lambda: re.search(r"%s\] /fpm/env.php message: ok" % cid, self.server.log_text()),
                       TIMEOUT, "the event counted as done: php-fpm's app status is not visible")
        await ws.send("after")
        self.assertEqual((await self.recv_json(ws))["WS_EVENT"], "message")

    async def test_output_limit_is_a_failed_script(self):
        # Regression (fixed): FastCGI output over --max-output is reported as
        # "backend unavailable" (open: 502); a spawned script or the HTTP
        # backend give "script failed" (open: 500).
        srv = self.make_server(args=self.server_args + ["--max-output", "100"]).start()
        self.addAsyncCleanup(asyncio.to_thread, srv.stop)
        self.addCleanup(srv.kill)
        status, _, _ = await asyncio.to_thread(raw_upgrade, srv.port, "/fpm/env.php")
        self.assertEqual(status, 500)

    async def test_binary_and_text_round_trip(self):
        ws = await self.connect("/fpm/echo.php")
        await ws.send(ALL_BYTES)
        self.assertEqual(await self.recv(ws), ALL_BYTES)
        await ws.send(ALL_BYTES * 300)   # 76 800 bytes: several FastCGI records each way
        self.assertEqual(await self.recv(ws), ALL_BYTES * 300)
        tricky = "@close 4000\r\nline two \u00e9\U0001f600\n"
        await ws.send(tricky)
        self.assertEqual(await self.recv(ws), tricky)

    async def test_many_events_hold_no_worker_between_them(self):
        ws = await self.connect("/fpm/echo.php")
        # (How fast is the benchmark's business: bench workload 6, FastCGI.)
        for i in range(200):
            await ws.send("m%d" % i)
            self.assertEqual(await self.recv_text(ws), "m%d" % i)
        # No connection is kept between requests (each would pin the only
        # worker, docs/BACKENDS.md): nothing stays established to php-fpm.
        if not os.path.exists("/proc/net/tcp"):
            self.fail("/proc/net/tcp is needed to count the connections to php-fpm")
        await wait_for(lambda: count_sockets(self.fpm.port)[0] == 0, TIMEOUT, "no connection left to php-fpm")
        access = read_file(os.path.join(os.path.dirname(self.fpm.log_path), "php-fpm-access.log")) or ""
        self.assertGreaterEqual(access.count("\n"), 201, "php-fpm's access log")

    async def test_page_under_the_prefix_goes_to_php_fpm(self):
        status, headers, body = await asyncio.to_thread(
            http_call, self.server.port, "POST", "/fpm/env.php/x?a=1", b"k=v",
            {"Content-Type": "application/x-www-form-urlencoded", "Cookie": "c=1"})
        self.assertEqual(status, 200, body)
        self.assertTrue(headers.get("Content-Type", "").startswith("application/json"))
        env = json.loads(body)
        for key, value in {
            "REQUEST_METHOD": "POST", "SCRIPT_NAME": "/fpm/env.php", "PATH_INFO": "/x",
            "QUERY_STRING": "a=1", "CONTENT_LENGTH": "3",
            "CONTENT_TYPE": "application/x-www-form-urlencoded", "HTTP_COOKIE": "c=1",
            "WS2HTTP_API_URL": self.server.api_url, "WS2HTTP_API_TOKEN": TOKEN,
        }.items():
            self.assertEqual(env.get(key), value, key)
        self.assertEqual(base64.b64decode(env["_stdin_b64"]), b"k=v")
        self.assertNotIn("WS_EVENT", env)

    async def test_cgi_still_spawned_outside_the_prefix(self):
        ws = await self.connect("/cgi-bin/env.sh")
        env = dict(line.split("=", 1) for line in (await self.recv_text(ws)).splitlines())
        self.assertEqual(env["SCRIPT_FILENAME"], os.path.join(REPO_ROOT, "tests", "python", "cgi-bin", "env.sh"))
        self.assertEqual(env["WS_EVENT"], "open")


class FpmFailureTest(DaemonsMixin, ServerTestCase):
    """php-fpm dies, hangs, comes back: failed events are treated like a
    crashed script and nothing hangs (--timeout 1)."""
    cgi_bin = FPM_DIR_REL

    @needs_fpm
    def setUp(self):
        self.work = make_workdir()
        self.addCleanup(shutil.rmtree, self.work, True)
        self.fpm_port = free_port()
        self.fpm = self.start_test(php_fpm, self.work, self.fpm_port, children=2)
        super().setUp()

    @property
    def server_args(self):
        return ["--fastcgi", "127.0.0.1:%d" % self.fpm_port, "--timeout", "1"]

    async def echo(self, ws, text):
        await ws.send(text)
        self.assertEqual(await self.recv_text(ws), text)

    async def connection_id(self):
        _, _, _, conns = await self.api("GET", "/connections")
        self.assertEqual(len(conns), 1, conns)
        return conns[0]["id"]

    async def test_killed_then_restarted(self):
        ws = await self.connect("/echo.php")
        await self.echo(ws, "before")
        cid = await self.connection_id()

        await asyncio.to_thread(self.fpm.kill)   # master and workers: SIGKILL
        await ws.send("while down")
        # Refused connections, not a timeout: the log names the cause (below).
        await wait_for(lambda: "backend unavailable" in self.server.log_text(), TIMEOUT,
                       "the failed message event in the log")
        # the connection stays open: the next thing it gets is this push
        await self.sentinel(ws, cid)
        status, _, body = await self.raw("/echo.php")
        self.assertEqual(status, 502, body)
        status, _, body = await asyncio.to_thread(http_call, self.server.port, "GET", "/echo.php")
        self.assertEqual(status, 502, body)

        # restarted on the same port: the same connection works again
        self.fpm = self.start_test(php_fpm, self.work, self.fpm_port, children=2)
        await self.echo(ws, "after restart")
        await self.echo(ws, "and again")
        ws2 = await self.connect("/echo.php")
        await self.echo(ws2, "new connection")
        self.assertRegex(self.server.log_text(), r"backend unavailable after [^\n]*cannot connect to 127\.0\.0\.1:%d"
                         % self.fpm_port)

    async def test_stopped_server_times_out(self):
        ws = await self.connect("/echo.php")
        await self.echo(ws, "before")
        cid = await self.connection_id()
        self.fpm.signal(signal.SIGSTOP)   # accepts connections (backlog), never answers
        try:
            await ws.send("while stopped")
            await wait_for(lambda: re.search(r"message: script failed after [^\n]*no complete answer",
                                             self.server.log_text()), TIMEOUT, "the timed-out message event")
            await self.sentinel(ws, cid)
            status, _, _ = await self.raw("/echo.php", timeout=10)
            self.assertEqual(status, 500)   # like an open script that timed out
        finally:
            self.fpm.signal(signal.SIGCONT)
        await self.echo(ws, "after SIGCONT")


class FpmSharedPoolTest(DaemonsMixin, ServerTestCase):
    """Regression: idle pooled connections held php-fpm workers. Two --fastcgi
    routes to one php-fpm pool of two workers (pm.max_children = 2), and nginx
    serving PHP from the same pool. After a burst that used both workers, the
    other route and nginx are served, and ws2http holds no connection to
    php-fpm: FastCGI connections are not kept between requests, and both
    routes share one pool (docs/BACKENDS.md, the pool rule)."""
    cgi_bin = os.path.join("tests", "python")

    @needs_nginx
    def setUp(self):
        self.work = make_workdir()
        self.addCleanup(shutil.rmtree, self.work, True)
        self.fpm = self.start_test(php_fpm, self.work, free_port(), children=2)
        self.nginx_port = free_port()
        self.nginx = self.start_test(nginx, self.work, "fixtures.conf", self.nginx_port,
                                     EVENTS_PORT=self.nginx_port, FPM=self.fpm.address,
                                     FCGIWRAP="127.0.0.1:%d" % free_port())
        super().setUp()

    @property
    def server_args(self):
        return ["--fastcgi", "/fpm/slow.php=" + self.fpm.address,
                "--fastcgi", "/fpm/env.php=" + self.fpm.address, "--timeout", "5"]

    async def test_idle_connections_do_not_hold_the_workers(self):
        # A burst on the first route: two requests at once, two connections.
        a = await self.connect("/fpm/slow.php")
        b = await self.connect("/fpm/slow.php")
        await asyncio.gather(a.send("one"), b.send("two"))
        self.assertEqual(await asyncio.gather(self.recv_text(a), self.recv_text(b)), ["one", "two"])
        # ws2http is idle now. The other route gets a worker ...
        ws = await self.connect("/fpm/env.php")
        env = json.loads(await self.recv_text(ws))
        self.assertEqual(env.get("WS_EVENT"), "open", self.logs(self.fpm))
        # ... and so does another client of the same php-fpm pool.
        status, _, body = await asyncio.to_thread(http_call, self.nginx_port, "GET", "/fpm/env.php")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body).get("SCRIPT_NAME"), "/fpm/env.php")
        # An idle ws2http holds no connection to php-fpm (so no worker) once
        # its idle connections expired.
        if not os.path.exists("/proc/net/tcp"):
            self.fail("/proc/net/tcp is needed to count the connections to php-fpm")
        await wait_for(lambda: count_sockets(self.fpm.port)[0] == 0, TIMEOUT,
                       "no connection left open to php-fpm")


# -----------------------------------------------------------------------------
# HTTP backend: nginx + fcgiwrap (shell scripts), nginx + php-fpm (PHP)


class NginxFixtureTest(DaemonsMixin, ServerTestCase):
    """nginx (tests/python/nginx/fixtures.conf) in front of fcgiwrap and php-fpm;
    ws2http sends every event there with --backend-url PREFIX=URL."""
    cgi_bin = os.path.join("tests", "python", "cgi-bin")

    @classmethod
    @needs_nginx
    def setUpClass(cls):
        super().setUpClass()
        work = cls.work = cls.class_workdir()
        cls.fpm = cls.start_class(php_fpm, work, free_port())
        cls.wrap_port = free_port()
        cls.fcgiwrap = cls.start_class(fcgiwrap, work, cls.wrap_port)
        cls.port = free_port()
        cls.nginx = cls.start_class(nginx, work, "fixtures.conf", cls.port, EVENTS_PORT=cls.port,
                                    FPM=cls.fpm.address, FCGIWRAP="127.0.0.1:%d" % cls.wrap_port)

    @property
    def server_args(self):
        base = "http://127.0.0.1:%d" % self.port
        return ["--api-token", TOKEN,
                "--backend-url", "/echo.sh=%s/cgi-bin/echo.sh" % base,
                "--backend-url", "/chat.sh=%s/sh/chat.sh" % base,
                "--backend-url", "/noheader=%s/sh/noheader.sh" % base,
                "--backend-url", "/room=%s/sh/room.sh" % base,
                "--backend-url", "/php=%s/fpm/env.php" % base]

    def all_logs(self):
        return self.logs(self.nginx, self.fcgiwrap, self.fpm) + "\n--- nginx error.log:\n" + \
            (read_file(self.nginx.error_log) or "")[-3000:]

    async def recv_text(self, ws, timeout=TIMEOUT):
        try:
            msg = await asyncio.wait_for(ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("no message within %ss\n%s" % (timeout, self.all_logs()))
        self.assertIsInstance(msg, str)
        return msg

    async def test_echo_sh_text_and_all_bytes(self):
        ws = await self.connect("/echo.sh")
        for msg in ("hello", "@join x", "two\nlines\n", ALL_BYTES, b"", ALL_BYTES * 40):
            await ws.send(msg)
            got = await self.recv(ws)
            self.assertEqual(got, msg, "echo of %r" % (msg[:20],))

    async def test_demo_chat_sh(self):
        # cgi-bin/chat.sh itself, unchanged (sh/chat.sh only execs it)
        room = unique("r")
        alice = await self.connect("/chat.sh/%s?nick=alice" % room)
        self.assertEqual(await self.recv_text(alice),
                         "* welcome to %s, alice: type a line to talk to everyone in the room" % room)
        bob = await self.connect("/chat.sh/%s?nick=bob" % room)
        await self.recv_text(bob)
        self.assertEqual(await self.recv_text(alice), "* bob joined")
        await alice.send("hi @room x")
        self.assertEqual(await self.recv_text(alice), "alice: hi @room x")
        self.assertEqual(await self.recv_text(bob), "alice: hi @room x")
        await bob.close()
        self.assertEqual(await self.recv_text(alice), "* bob left")

    async def test_variables_and_directives_through_nginx(self):
        ws = await self.connect("/room/sub/path?nick=ann")
        greeting = await self.recv_text(ws)
        m = re.fullmatch(r"hello from /sh/room\.sh path=/sub/path id=([0-9a-f]{32})", greeting)
        self.assertIsNotNone(m, greeting)
        cid = m.group(1)
        await ws.send("plain")
        self.assertEqual(await self.recv_text(ws),
                         "event=message type=text nick=ann last_seen=unset rooms=[] text=plain")
        for line in ("@join lobby", "@join attic", "@set last_seen noon", "@room lobby to the room"):
            await ws.send(line)
        self.assertEqual(await self.recv_text(ws), "to the room")
        await ws.send(b"bin")
        self.assertEqual(await self.recv_text(ws),
                         "event=message type=binary nick=ann last_seen=noon rooms=[attic lobby] text=bin")
        _, _, _, conn = await self.api("GET", "/connections/" + cid, token=TOKEN)
        self.assertEqual(conn["metadata"], {"nick": "ann", "last_seen": "noon"})
        await ws.close(4002, "done")
        lines = await wait_for(lambda: complete_lines(self.track(data_path(cid + ".close"))),
                               TIMEOUT, "close record")
        self.assertEqual(lines, ["4002 done client nick=ann rooms=[attic lobby]"])

    async def test_script_without_header_block(self):
        # fcgiwrap refuses output without a header block: nginx answers 502,
        # which fails the open like a crashed script (500) ...
        status, _, body = await self.raw("/noheader")
        self.assertIn(status, (500, 502), body)
        self.assertRegex(self.server.log_text(), r"open: [^\n]*answered 502")

    async def test_script_without_header_block_message(self):
        # Regression (fixed): a message event answered 502 by nginx is
        # logged, but nginx's HTML error page is sent to the client as text
        # messages ("<html>", ...). Expected: nothing delivered.
        ws = await self.connect("/room?nick=x")
        cid = (await self.recv_text(ws)).rsplit("id=", 1)[1]
        await ws.send("noheader")
        await wait_for(lambda: re.search(r"message: script failed after [^\n]*answered 502",
                                         self.server.log_text()), TIMEOUT, "the failed event in the log")
        await self.sentinel(ws, cid)

    async def test_php_fpm_behind_nginx(self):
        ws = await self.connect("/php/a/b?nick=ann", additional_headers=[("Cookie", "k=v")])
        env = json.loads(await self.recv_text(ws))
        cid = env.get("WS_CONNECTION_ID", "")
        self.assertRegex(cid, HEX32)
        for key, value in {
            "WS_EVENT": "open", "WS_ROOMS": "", "QUERY_STRING": "nick=ann", "PATH_INFO": "/a/b",
            "SCRIPT_NAME": "/fpm/env.php", "SCRIPT_FILENAME": os.path.join(FPM_DIR, "env.php"),
            "WS_API_URL": self.server.api_url, "WS_API_TOKEN": TOKEN, "HTTP_COOKIE": "k=v",
        }.items():
            self.assertEqual(env.get(key), value, key)
        self.assertNotIn("WS_MESSAGE_TYPE", env)
        await ws.send("@set nick ann")
        await ws.send("@join lobby")
        await ws.send(ALL_BYTES)
        env = json.loads(await self.recv_text(ws))
        for key, value in {"WS_EVENT": "message", "WS_MESSAGE_TYPE": "binary", "WS_ROOMS": "lobby",
                           "WS_META_nick": "ann", "CONTENT_TYPE": "application/octet-stream",
                           "CONTENT_LENGTH": "256"}.items():
            self.assertEqual(env.get(key), value, key)
        self.assertEqual(base64.b64decode(env["_stdin_b64"]), ALL_BYTES)
        await ws.close(4003, "bye")
        path = self.track(data_path(cid + ".close.json"))
        env = json.loads(await wait_for(lambda: read_file(path), TIMEOUT, "close dump"))
        for key, value in {"WS_EVENT": "close", "WS_CLOSE_CODE": "4003", "WS_CLOSE_REASON": "bye",
                           "WS_CLOSE_CAUSE": "client", "WS_META_nick": "ann"}.items():
            self.assertEqual(env.get(key), value, key)

    async def test_keep_alive_to_nginx(self):
        log = os.path.join(self.work, "events.log")
        before = len((read_file(log) or "").splitlines())
        ws = await self.connect("/echo.sh")
        for i in range(20):
            await ws.send("k%d" % i)
            self.assertEqual(await self.recv(ws), "k%d" % i)
        def logged():
            lines = (read_file(log) or "").splitlines()[before:]
            return lines if len(lines) >= 21 else None
        lines = await wait_for(logged, TIMEOUT, "21 requests in nginx's access log")
        conns = {line.split()[0] for line in lines}
        self.assertLessEqual(len(conns), 3, "21 events over %d TCP connections:\n%s"
                             % (len(conns), "\n".join(lines)))
        self.assertGreaterEqual(max(int(line.split()[1]) for line in lines), 15)


class NginxPhpChatTest(DaemonsMixin, ChatFlow, ServerTestCase):
    """The complete example of docs/BACKENDS.md (tests/python/nginx/php-chat.conf):
    browsers talk to nginx only; pages go to php-fpm, WebSocket upgrades are
    proxied to ws2http, and ws2http sends every event back to nginx's events
    server (--backend-url /chat.php=...), which runs chat.php on php-fpm."""
    app_dir = PHP_DIR
    endpoint = "/chat.php"

    @classmethod
    @needs_nginx
    def setUpClass(cls):
        super().setUpClass()
        cls.fpm = cls.start_class(php_fpm, cls.class_workdir(), free_port())
        cls.events_port = free_port()

    @property
    def server_args(self):
        return ["--api-token", TOKEN, "--backend-url",
                "/chat.php=http://127.0.0.1:%d/chat.php" % self.events_port]

    def setUp(self):
        super().setUp()
        self.work = make_workdir()
        self.addCleanup(shutil.rmtree, self.work, True)
        self.public_port = free_port()
        self.nginx = self.start_test(
            nginx, self.work, "php-chat.conf", self.public_port,
            PUBLIC_PORT=self.public_port, EVENTS_PORT=self.events_port, FPM=self.fpm.address,
            WS2HTTP="127.0.0.1:%d" % self.server.port, ROOT=os.path.join(REPO_ROOT, PHP_DIR, "public"),
            SCRIPTS=os.path.join(REPO_ROOT, PHP_DIR, "cgi-bin"),
            API_URL=self.server.api_url, API_TOKEN=TOKEN)

    class ViaNginx:
        def __init__(self, port):
            self.port = port

        def ws_url(self, path):
            return "ws://127.0.0.1:%d%s" % (self.port, path)

    async def connect(self, path, server=None, **kw):
        return await super().connect(path, server=server or self.ViaNginx(self.public_port), **kw)

    async def http(self, method, path, body=None, headers=None):
        return await asyncio.to_thread(http_call, self.public_port, method, path, body, headers)

    async def test_two_clients_chat(self):
        await self.check_two_clients_chat()
        # every event went through nginx's events server: 2 opens, 6 messages, 1 close
        access = read_file(os.path.join(self.work, "nginx-access.log")) or ""
        self.assertGreaterEqual(access.count('"POST /chat.php HTTP/1.1" 200'), 9, access)

    async def test_invalid_open_rejected(self):
        await self.check_invalid_open_rejected()

    async def test_non_ascii_nick(self):
        # Regression (fixed): the HTTP backend panics building the request
        # when a header value is not ASCII (WS-Meta-nick: J\u00fcrgen K.);
        # the event never runs, and the server then hangs on shutdown.
        try:
            room = unique("r")
            ws = await self.join(room, "J\u00fcrgen K.", ["J\u00fcrgen K."])
            await ws.send("hallo")
            msg = json.loads(await asyncio.wait_for(ws.recv(), 2))
            self.assertEqual((msg.get("nick"), msg.get("text")), ("J\u00fcrgen K.", "hallo"))
        except BaseException:
            self.server.kill()   # it would not stop on SIGTERM
            raise

    async def test_pages_session_and_room_list(self):
        await test_examples.PhpChatTest.test_index_page_remembers_nick_in_session(self)
        await test_examples.PhpChatTest.test_index_lists_active_rooms(self)
        status, headers, _ = await self.http("GET", "/style.css")
        self.assertEqual(status, 200)
        # forged events: the public server gives PHP no WS_* variables, so a
        # POST with WS-* headers is just a page request
        status, headers, _ = await self.http("POST", "/chat.php?room=lobby&nick=eve", b"x",
                                             {"WS-Event": "message", "WS-Meta-nick": "admin"})
        self.assertEqual(status, 200)
        self.assertTrue(headers.get("Content-Type", "").startswith("text/html"))


# -----------------------------------------------------------------------------
# HTTP backend: a recording server (exact request headers, responses, failures)


class RecordingBackend:
    """An HTTP/1.1 server (keep-alive) that records every request and answers
    like a tiny ws2http app:
      open     ?status=N: N with a body; else "@set nick" from ?nick=, @join
               from ?join=, a greeting; Set-Cookie; Sec-WebSocket-Protocol chat
               when offered
      message  "@..." line mode as is; "json" one application/json body;
               "fail" a 500; "noctype" two lines without a Content-Type;
               "stream" a chunked body: "first", then "second"
               once `release` is set; binary echoed as application/octet-stream;
               else "got: TEXT"
      close    200 with an empty body
    """

    def __init__(self, port=0):
        self.port = port
        self.requests = []
        self.lock = threading.Lock()
        self.sockets = set()
        self.httpd = None
        self.release = threading.Event()

    def start(self):
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # headers and body are two writes: no Nagle delay between them
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with backend.lock:
                    backend.sockets.add(self.connection)

            def finish(self):
                with backend.lock:
                    backend.sockets.discard(self.connection)
                super().finish()

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                rec = {"method": self.command, "path": self.path, "version": self.request_version,
                       "headers": list(self.headers.items()), "body": body, "peer": self.client_address}
                with backend.lock:
                    backend.requests.append(rec)
                status, headers, out = backend.answer(rec)
                if out is None:   # streamed: one line now, one when released
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for line in (b"first\n", b"second\n"):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                        backend.release.wait(TIMEOUT)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self):
        """Down for real: no listener, and kept-alive connections cut."""
        if self.httpd is None:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd = None
        with self.lock:
            socks = list(self.sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def answer(self, rec):
        h = {k.lower(): v for k, v in rec["headers"]}
        event = h.get("ws-event")
        if event == "open":
            q = urllib.parse.parse_qs(h.get("ws-query", ""))
            if "status" in q:
                return int(q["status"][0]), [("Content-Type", "text/plain"), ("X-Why", "test")], \
                    b"refused by the backend\n"
            lines = []
            if "nick" in q:
                lines.append("@set nick " + q["nick"][0])
            if "join" in q:
                lines.append("@join " + q["join"][0])
            lines.append("welcome " + h.get("ws-connection-id", "?"))
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("Set-Cookie", "seen=1; Path=/")]
            if "chat" in h.get("sec-websocket-protocol", ""):
                headers.append(("Sec-WebSocket-Protocol", "chat"))
            return 200, headers, ("\n".join(lines) + "\n").encode()
        if event == "message":
            body = rec["body"]
            if h.get("ws-message-type") == "binary":
                return 200, [("Content-Type", "application/octet-stream")], body
            if body.startswith(b"@"):
                return 200, [("Content-Type", "text/plain")], body + b"\n"
            if body == b"json":
                return 200, [("Content-Type", "application/json")], b'{"a":\n 1}'
            if body == b"noctype":
                return 200, [], b"@join nct\nplain line\n"
            if body == b"stream":
                return 200, [("Content-Type", "text/plain")], None
            if body == b"fail":
                return 500, [("Content-Type", "text/plain")], b"sent anyway\n"
            return 200, [("Content-Type", "text/plain")], b"got: " + body + b"\n"
        return 200, [], b""

    def of(self, cid, event=None):
        with self.lock:
            return [r for r in self.requests
                    if dict((k.lower(), v) for k, v in r["headers"]).get("ws-connection-id") == cid
                    and (event is None or dict((k.lower(), v) for k, v in r["headers"]).get("ws-event") == event)]


def header_map(rec):
    """Lower-case name -> list of values."""
    out = {}
    for k, v in rec["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


class HttpBackendTest(DaemonsMixin, ServerTestCase):
    """--backend-url against the recording server."""

    ORIGIN = "http://app.example"

    def setUp(self):
        self.backend = RecordingBackend().start()
        self.addCleanup(self.backend.stop)
        super().setUp()

    @property
    def server_args(self):
        return ["--api-token", TOKEN, "--allow-origin", self.ORIGIN,
                "--backend-url", "/app=http://127.0.0.1:%d/events?fixed=1" % self.backend.port]

    async def open_app(self, path="/app/room/42?nick=ann&x=%20y", **kw):
        ws = await self.connect(path, **kw)
        greeting = await self.recv_text(ws)
        self.assertRegex(greeting, r"^welcome [0-9a-f]{32}$")
        return ws, greeting.split()[1]

    async def test_request_headers(self):
        ws, cid = await self.open_app(
            additional_headers=[("Cookie", "a=1"), ("Cookie", "b=2"), ("Origin", self.ORIGIN),
                                ("Accept-Language", "de"), ("X-Forwarded-For", "203.0.113.9"),
                                ("X-Not-Forwarded", "x")],
            user_agent_header="ws2http-pytest/agent", subprotocols=["chat"])
        self.assertEqual(ws.subprotocol, "chat")   # chosen by the backend's open response
        self.assertIn("seen=1; Path=/", ws.response.headers.get_all("Set-Cookie"))
        await ws.send("@set nick ann")
        await ws.send("@set last_seen noon")
        await ws.send("@join lobby")
        await ws.send("@join attic")
        await ws.send("hello")
        self.assertEqual(await self.recv_text(ws), "got: hello")
        await ws.send(b"\x00\x01")
        self.assertEqual(await self.recv(ws), b"\x00\x01")
        await ws.close(4001, "bye now")
        closes = await wait_for(lambda: self.backend.of(cid, "close"), TIMEOUT, "close request")

        opens = self.backend.of(cid, "open")
        self.assertEqual(len(opens), 1)
        o = opens[0]
        self.assertEqual((o["method"], o["path"], o["version"]), ("POST", "/events?fixed=1", "HTTP/1.1"))
        self.assertEqual(o["body"], b"")
        h = header_map(o)
        base = {
            "ws-event": ["open"], "ws-connection-id": [cid], "ws-endpoint": ["/app"],
            "ws-path": ["/app/room/42"], "ws-path-info": ["/room/42"], "ws-query": ["nick=ann&x=%20y"],
            "ws-rooms": [""], "ws-api-url": [self.server.api_url], "ws-api-token": [TOKEN],
            "user-agent": ["ws2http-pytest/agent"], "origin": [self.ORIGIN], "accept-language": ["de"],
            "sec-websocket-protocol": ["chat"], "x-forwarded-for": ["203.0.113.9, 127.0.0.1"],
            "x-forwarded-host": ["127.0.0.1:%d" % self.server.port],
            "host": ["127.0.0.1:%d" % self.backend.port],
        }
        for name, value in base.items():
            self.assertEqual(h.get(name), value, name)
        self.assertIn(h.get("cookie"), (["a=1", "b=2"], ["a=1; b=2"]))
        self.assertNotIn("x-not-forwarded", h)
        self.assertNotIn("ws-message-type", h)
        self.assertFalse(any(k.startswith("ws-meta-") or k.startswith("ws-close") for k in h), h)

        text = [r for r in self.backend.of(cid, "message") if r["body"] == b"hello"][0]
        h = header_map(text)
        for name, value in {"ws-message-type": ["text"], "content-type": ["text/plain; charset=utf-8"],
                            "content-length": ["5"], "ws-rooms": ["attic lobby"],
                            "ws-meta-nick": ["ann"], "ws-meta-last_seen": ["noon"],
                            "ws-query": ["nick=ann&x=%20y"], "cookie": h.get("cookie")}.items():
            self.assertEqual(h.get(name), value, name)
        self.assertIn(h.get("cookie"), (["a=1", "b=2"], ["a=1; b=2"]))
        binary = [r for r in self.backend.of(cid, "message") if r["body"] == b"\x00\x01"][0]
        h = header_map(binary)
        self.assertEqual((h.get("ws-message-type"), h.get("content-type")),
                         (["binary"], ["application/octet-stream"]))

        self.assertEqual(len(closes), 1)
        h = header_map(closes[0])
        for name, value in {"ws-close-code": ["4001"], "ws-close-reason": ["bye now"],
                            "ws-close-cause": ["client"], "ws-rooms": ["attic lobby"],
                            "ws-meta-nick": ["ann"]}.items():
            self.assertEqual(h.get(name), value, name)
        self.assertEqual(closes[0]["body"], b"")
        self.assertNotIn("ws-message-type", h)

    async def test_response_parsing(self):
        ws, cid = await self.open_app("/app?nick=bo&join=hall")
        await ws.send("@room hall to the hall\n@@at sign\nplain line\n@binary AAH/")
        self.assertEqual(await self.recv_text(ws), "to the hall")
        self.assertEqual(await self.recv_text(ws), "@at sign")
        self.assertEqual(await self.recv_text(ws), "plain line")
        self.assertEqual(await self.recv(ws), b"\x00\x01\xff")
        await ws.send("json")   # a non-text/* body is ONE message, newlines included
        self.assertEqual(await self.recv_text(ws), '{"a":\n 1}')
        await ws.send(ALL_BYTES)
        self.assertEqual(await self.recv(ws), ALL_BYTES)
        _, _, _, conn = await self.api("GET", "/connections/" + cid, token=TOKEN)
        self.assertEqual((conn["metadata"], conn["rooms"], conn["endpoint"]),
                         ({"nick": "bo"}, ["hall"], "/app"))

    async def test_5xx_answer_is_logged_not_delivered(self):
        # Regression (fixed): the body of a 5xx answer to a message event is
        # applied in line mode, so an error page (nginx's 502 HTML) reaches
        # the client as text messages. Expected: logged, nothing delivered.
        ws, cid = await self.open_app("/app")
        await ws.send("fail")
        await wait_for(lambda: re.search(r"message: script failed after [^\n]*answered 500",
                                         self.server.log_text()), TIMEOUT, "the 500 in the log")
        await self.sentinel(ws, cid)

    async def test_no_content_type_is_line_mode(self):
        # Regression (fixed): a response body without Content-Type is read as
        # application/octet-stream (the HTTP library's default) and arrives as
        # ONE binary message; CGI output without Content-Type is line mode.
        ws, cid = await self.open_app("/app")
        await ws.send("noctype")
        self.assertEqual(await self.recv(ws), "plain line")

    async def test_lines_apply_as_they_arrive(self):
        ws, _ = await self.open_app("/app")
        await ws.send("stream")
        self.assertEqual(await self.recv_text(ws), "first")   # before the response ended
        self.backend.release.set()
        self.assertEqual(await self.recv_text(ws), "second")

    async def test_open_and_close_carry_no_content_type(self):
        # Regression (fixed): open and close requests (empty body) carry
        # "Content-Type: application/octet-stream", the HTTP library's default,
        # so CONTENT_TYPE is set behind nginx where a CGI script has none.
        ws, cid = await self.open_app("/app")
        await ws.close()
        closes = await wait_for(lambda: self.backend.of(cid, "close"), TIMEOUT, "close request")
        self.assertNotIn("content-type", header_map(self.backend.of(cid, "open")[0]))
        self.assertNotIn("content-type", header_map(closes[0]))

    async def test_non_ascii_header_values(self):
        # Regression (fixed): a metadata value or close reason that is not
        # ASCII makes the HTTP backend panic (http-types rejects the header
        # value with unwrap()); the event never reaches the backend and the
        # server no longer stops on SIGTERM.
        try:
            ws, cid = await self.open_app("/app?nick=x")
            await ws.send("@set nick J\u00fcrgen")
            await ws.send("hi")
            self.assertEqual(await asyncio.wait_for(ws.recv(), 2), "got: hi")
            await ws.close(4000, "tsch\u00fc\u00df")
            await wait_for(lambda: self.backend.of(cid, "close"), 2, "close request")
        except BaseException:
            self.server.kill()
            raise

    async def test_open_status_rejects_handshake(self):
        for code in (400, 403, 404, 429):
            with self.subTest(code=code):
                status, headers, body = await self.raw("/app?status=%d" % code)
                self.assertEqual(status, code)
                self.assertEqual(body, b"refused by the backend\n")
                self.assertEqual(headers.get("X-Why"), "test")
        _, _, _, conns = await self.api("GET", "/connections", token=TOKEN)
        self.assertEqual(conns, [])

    async def test_keep_alive(self):
        ws, cid = await self.open_app("/app")
        for i in range(10):
            await ws.send("k%d" % i)
            self.assertEqual(await self.recv_text(ws), "got: k%d" % i)
        peers = [r["peer"] for r in self.backend.of(cid)]
        self.assertEqual(len(peers), 11)
        most = max(peers.count(p) for p in set(peers))
        self.assertGreaterEqual(most, 9, "requests per TCP connection: %s" % peers)

    async def test_backend_down_and_back(self):
        ws, cid = await self.open_app("/app")
        await ws.send("one")
        self.assertEqual(await self.recv_text(ws), "got: one")
        port = self.backend.port
        await asyncio.to_thread(self.backend.stop)

        await ws.send("while down")
        await wait_for(lambda: "message: backend unavailable" in self.server.log_text(), TIMEOUT,
                       "the failed message event in the log")
        await self.sentinel(ws, cid)   # still open
        status, _, body = await self.raw("/app")
        self.assertEqual(status, 502, body)

        self.backend = RecordingBackend(port).start()
        self.addCleanup(self.backend.stop)
        await ws.send("two")
        self.assertEqual(await self.recv_text(ws), "got: two")
        ws2, _ = await self.open_app("/app")
        await ws2.send("three")
        self.assertEqual(await self.recv_text(ws2), "got: three")

    async def other_server(self, args, cgi_bin=os.path.join("tests", "python")):
        srv = self.make_server(args=args, cgi_bin=cgi_bin).start()
        self.addAsyncCleanup(asyncio.to_thread, srv.stop)
        self.addCleanup(srv.kill)
        return srv

    async def test_routing_by_prefix(self):
        # --fastcgi /fpm (nothing listening: 502), two HTTP prefixes, CGI for the rest
        other = RecordingBackend().start()
        self.addCleanup(other.stop)
        srv = await self.other_server([
            "--fastcgi", "/fpm=127.0.0.1:%d" % refusing_port(self),
            "--backend-url", "/api=http://127.0.0.1:%d/a" % self.backend.port,
            "--backend-url", "/api/admin=http://127.0.0.1:%d/b" % other.port])
        for path, status in (("/fpm/env.php", 502), ("/api/x/y", 101), ("/api/admin/z", 101),
                             ("/apis", 404), ("/cgi-bin/lines.sh", 101)):
            with self.subTest(path=path):
                got, _, body = await asyncio.to_thread(raw_upgrade, srv.port, path)
                self.assertEqual(got, status, body)
        seen = lambda b: [(header_map(r)["ws-endpoint"][0], header_map(r)["ws-path-info"][0])
                          for r in b.requests if header_map(r)["ws-event"] == ["open"]]
        self.assertEqual(seen(self.backend), [("/api", "/x/y")])
        self.assertEqual(seen(other), [("/api/admin", "/z")])

    async def test_longer_fastcgi_prefix_beats_http_route(self):
        # Regression (fixed): HTTP prefixes are matched before the file
        # lookup, so a catch-all --backend-url takes /fpm/... although the
        # longer --fastcgi /fpm prefix should win.
        srv = await self.other_server([
            "--fastcgi", "/fpm=127.0.0.1:%d" % refusing_port(self),
            "--backend-url", "http://127.0.0.1:%d/all" % self.backend.port])
        status, _, _ = await asyncio.to_thread(raw_upgrade, srv.port, "/fpm/env.php")
        self.assertEqual(status, 502)   # the FastCGI route, where nothing listens

    async def test_no_backend_at_all(self):
        srv = self.make_server(args=["--backend-url", "http://127.0.0.1:%d/x" % refusing_port(self)]).start()
        try:
            status, _, body = await asyncio.to_thread(raw_upgrade, srv.port, "/anything")
            self.assertEqual(status, 502, body)
            self.assertIn("backend unavailable", srv.log_text())
        finally:
            await asyncio.to_thread(srv.stop)
            srv.kill()


# -----------------------------------------------------------------------------
# docs/BACKENDS.md shows the configuration files these tests run


class DocsTest(unittest.TestCase):

    def test_backends_md_shows_the_tested_files(self):
        with open(os.path.join(REPO_ROOT, "docs", "BACKENDS.md")) as f:
            doc = f.read()
        blocks = set()
        for indent, body in re.findall(r"^( *)```\w*\n(.*?)^\1```", doc, re.S | re.M):
            blocks.add("\n".join(line[len(indent):] for line in body.split("\n")).strip())
        work = make_workdir()
        self.addCleanup(shutil.rmtree, work, True)
        shown = {
            "ws2http_params": {},
            "php-fpm.conf": dict(DIR="/var/lib/ws2http", LISTEN="127.0.0.1:9000", CHILDREN=8),
            "php-chat.conf": dict(PUBLIC_PORT=8088, EVENTS_PORT=8089, FPM="127.0.0.1:9000",
                                  WS2HTTP="127.0.0.1:8080", ROOT="/srv/php-chat/public",
                                  SCRIPTS="/srv/php-chat/cgi-bin",
                                  API_URL="http://127.0.0.1:8081", API_TOKEN="change-this-token"),
        }
        for name, subs in shown.items():
            with self.subTest(file=name):
                path = render(name, os.path.join(work, name), **subs)
                with open(path) as f:
                    self.assertIn(f.read().strip(), blocks,
                                  "docs/BACKENDS.md must show tests/python/nginx/%s as tested" % name)
        self.assertIn("--backend-url /chat.php=http://127.0.0.1:8089/chat.php", doc)
        with open(os.path.join(REPO_ROOT, "README.md")) as f:
            self.assertTrue("(docs/BACKENDS.md)" in f.read(), "README.md must link docs/BACKENDS.md")


if __name__ == "__main__":
    unittest.main()
