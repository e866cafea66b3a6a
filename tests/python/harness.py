"""Shared helpers for the Python integration tests of ws2http.

Every test starts its own real server binary (WS2HTTP_BIN, default
/work/main/target/debug/ws2http) on port 0 for both listeners, learns the ports
from the two startup lines, talks to it with the `websockets` client and
http.client, and stops it with SIGTERM at the end. Nothing here sleeps for a
fixed time: every wait polls a condition with a deadline.
"""

import asyncio
import functools
import glob
import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

from websockets.asyncio.client import connect as ws_connect

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
# Passed relative to the server's working directory (the repo root), so the
# tests also check that SCRIPT_FILENAME is made absolute.
CGI_BIN_REL = os.path.join("tests", "python", "cgi-bin")
CGI_BIN = os.path.join(REPO_ROOT, CGI_BIN_REL)
BIN = os.environ.get("WS2HTTP_BIN", "/work/main/target/debug/ws2http")
# Where the fixture scripts write their logs (keyed by connection id).
DATA_DIR = "/tmp/ws2http-pytest"

# Put into the server's own environment; must never reach a script.
LEAK_NAME = "PYTEST_LEAK_CHECK"
LEAK_VALUE = "must-not-leak"

TIMEOUT = 5.0          # default wait for one expected event
START_TIMEOUT = 15.0   # server start-up

LISTEN_RE = re.compile(r"listening on https?://(\S+):(\d+)\s*$")
API_RE = re.compile(r"control API on http://(\S+):(\d+)\s*$")

HEX32 = re.compile(r"^[0-9a-f]{32}$")


class ServerStartError(Exception):
    pass


class Server:
    """One running ws2http process."""

    def __init__(self, args=None, cgi_bin=CGI_BIN_REL, env=None, script=None,
                 listen="127.0.0.1:0", api_listen="127.0.0.1:0", use_flags=True):
        self.args = list(args or [])
        self.cgi_bin = cgi_bin
        self.extra_env = dict(env or {})
        self.script = script
        self.listen = listen
        self.api_listen = api_listen
        self.use_flags = use_flags
        self.proc = None
        self.port = None
        self.api_port = None
        self.api_host = None
        self.stdout_lines = []
        self._lines = queue.Queue()
        self._log = None
        self._log_saved = ""
        self._pump_thread = None

    # -- process ---------------------------------------------------------
    def command(self):
        cmd = [BIN]
        if self.use_flags:
            cmd += ["--listen", self.listen, "--api-listen", self.api_listen]
            if self.cgi_bin is not None:
                cmd += ["--cgi-bin", self.cgi_bin]
        cmd += self.args
        if self.script is not None:
            cmd.append(self.script)
        return cmd

    def environment(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WS2HTTP_") and k != "RUST_LOG"}
        env[LEAK_NAME] = LEAK_VALUE
        # verbose enough that script stderr and refusals reach the log
        env["RUST_LOG"] = "debug"
        env.update(self.extra_env)
        return env

    def spawn(self):
        if not os.path.exists(BIN):
            # Never a skip: a run without the server must not pass as OK.
            raise AssertionError(f"server binary {BIN} not built: run `cargo build` (or set WS2HTTP_BIN)")
        os.makedirs(DATA_DIR, exist_ok=True)
        self._log = tempfile.TemporaryFile(prefix="ws2http-log-")
        self.proc = subprocess.Popen(
            self.command(), cwd=REPO_ROOT, env=self.environment(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log)
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        return self

    def _pump(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def start(self, timeout=START_TIMEOUT):
        self.spawn()
        deadline = time.monotonic() + timeout
        while self.port is None or self.api_port is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise ServerStartError(
                    "no startup lines within %ss; stdout=%r log=%s"
                    % (timeout, self.stdout_lines, self.log_text()))
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait()
                raise ServerStartError(
                    "server exited (%s) before printing its ports; stdout=%r log=%s"
                    % (self.proc.returncode, self.stdout_lines, self.log_text()))
            m = LISTEN_RE.search(line)
            if m:
                self.port = int(m.group(2))
            m = API_RE.search(line)
            if m:
                self.api_host = m.group(1)
                self.api_port = int(m.group(2))
        return self

    def wait_exit(self, timeout=START_TIMEOUT):
        """For servers expected to refuse to start: returns (rc, stdout, log)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("server kept running; log=%s" % self.log_text())
        # let the pump thread drain stdout
        while self._lines.get(timeout=TIMEOUT) is not None:
            pass
        return self.proc.returncode, list(self.stdout_lines), self.log_text()

    def stop(self, timeout=15):
        """SIGTERM, then wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    "server did not exit within %ss of SIGTERM" % timeout)
        return self.proc.returncode

    def kill(self):
        """Kills the process if still running and releases its pipes."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._pump_thread is not None:
            self._pump_thread.join(TIMEOUT)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if self._log is not None:
            self._log_saved = self.log_text()
            self._log.close()
            self._log = None

    def log_text(self):
        if self._log is None:
            return self._log_saved
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    # -- URLs ------------------------------------------------------------
    def ws_url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def api_url(self):
        return f"http://127.0.0.1:{self.api_port}"

    # -- control API (blocking) ------------------------------------------
    def api(self, method, path, body=None, headers=None, token=None):
        """Returns (status, headers, raw body, parsed JSON or None)."""
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if isinstance(body, str):
            # text bodies are labelled explicitly; a body without any
            # Content-Type (also text per the contract) is tested separately
            hdrs.setdefault("Content-Type", "text/plain; charset=utf-8")
            body = body.encode("utf-8")
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw.decode("utf-8")) if raw else None
            except (ValueError, UnicodeDecodeError):
                parsed = None
            return resp.status, resp.headers, raw, parsed
        finally:
            conn.close()


def raw_upgrade(port, path, headers=None, timeout=10):
    """Sends a WebSocket upgrade request with the request-target exactly as
    given (no normalisation) and returns (status, headers, body). The socket is
    closed afterwards, also after a 101."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        base = {
            "Host": f"127.0.0.1:{port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        }
        base.update(headers or {})
        for k, v in base.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = b"" if resp.status == 101 else resp.read()
        return resp.status, resp.headers, body
    finally:
        conn.close()


def parse_env(text):
    env = {}
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        assert sep, "not a KEY=VALUE line: %r" % line
        assert key not in env, "duplicate variable %s" % key
        env[key] = value
    return env


def data_path(name):
    return os.path.join(DATA_DIR, name)


def unique(prefix="t"):
    return prefix + uuid.uuid4().hex[:12]


async def wait_for(predicate, timeout=TIMEOUT, what="condition", interval=0.02):
    """Polls predicate() (sync) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        await asyncio.sleep(interval)


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def complete_lines(path):
    """The newline-terminated lines of a fixture log (None if absent)."""
    text = read_file(path)
    if text is None or not text.endswith("\n"):
        return None
    return text[:-1].split("\n")


class ServerTestCase(unittest.IsolatedAsyncioTestCase):
    """Starts a fresh server for every test (so tests run in any order)."""

    server_args = []
    server_env = {}
    cgi_bin = CGI_BIN_REL
    script = None

    def make_server(self, **kw):
        kw.setdefault("args", self.server_args)
        kw.setdefault("env", self.server_env)
        kw.setdefault("cgi_bin", self.cgi_bin)
        kw.setdefault("script", self.script)
        return Server(**kw)

    def setUp(self):
        self._sockets = []
        self._files = []
        self.server = self.make_server().start()

    async def asyncTearDown(self):
        for ws in self._sockets:
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()
        await asyncio.to_thread(self.server.stop)

    def tearDown(self):
        self.server.kill()
        for path in self._files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def track(self, path):
        self._files.append(path)
        return path

    # -- websocket helpers -------------------------------------------------
    async def connect(self, path, server=None, **kw):
        server = server or self.server
        kw.setdefault("proxy", None)
        kw.setdefault("open_timeout", TIMEOUT * 2)
        kw.setdefault("close_timeout", TIMEOUT)
        kw.setdefault("ping_interval", None)
        ws = await ws_connect(server.ws_url(path), **kw)
        self._sockets.append(ws)
        return ws

    async def recv(self, ws, timeout=TIMEOUT):
        try:
            return await asyncio.wait_for(ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                "no message within %ss; server log:\n%s" % (timeout, self.server.log_text()))

    async def recv_text(self, ws, timeout=TIMEOUT):
        msg = await self.recv(ws, timeout)
        self.assertIsInstance(msg, str, "expected a text message, got %r" % (msg,))
        return msg

    async def connect_lines(self, query="", server=None, **kw):
        """Connects to lines.sh; returns (ws, id) after the "id ..." greeting."""
        ws = await self.connect("/lines.sh" + query, server=server, **kw)
        greeting = await self.recv_text(ws)
        self.assertRegex(greeting, r"^id [0-9a-f]{32}$")
        cid = greeting[3:]
        self.track(data_path(cid + ".close"))
        return ws, cid

    async def raw(self, path, headers=None, timeout=10, server=None):
        """raw_upgrade() off the event loop."""
        server = server or self.server
        return await asyncio.to_thread(raw_upgrade, server.port, path, headers, timeout)

    async def api(self, method, path, body=None, headers=None, token=None, server=None):
        server = server or self.server
        return await asyncio.to_thread(server.api, method, path, body, headers, token)

    async def api_ok(self, method, path, body=None, headers=None, token=None):
        status, hdrs, raw, parsed = await self.api(method, path, body, headers, token)
        self.assertEqual(status, 200, "%s %s -> %s %r" % (method, path, status, raw))
        self.assertTrue((hdrs.get("Content-Type") or "").startswith("application/json"),
                        "Content-Type %r" % hdrs.get("Content-Type"))
        return parsed

    async def assert_next(self, ws, expected, timeout=TIMEOUT):
        got = await self.recv(ws, timeout)
        self.assertEqual(got, expected)

    async def sentinel(self, ws, cid):
        """Proves that nothing else is queued for ws: pushes a unique text
        through the API and asserts it is the very next message."""
        mark = unique("sentinel-")
        body = await self.api_ok("POST", "/send/" + cid, mark)
        self.assertEqual(body, {"delivered": 1})
        await self.assert_next(ws, mark)

    async def close_record(self, cid, timeout=TIMEOUT):
        """Waits for the close event log line "CODE REASON CAUSE" of cid."""
        path = self.track(data_path(cid + ".close"))
        lines = await wait_for(lambda: complete_lines(path), timeout,
                               "close event of %s" % cid)
        return lines

    async def close_record_once(self, cid):
        lines = await self.close_record(cid)
        self.assertEqual(len(lines), 1, "close event ran %d times: %r" % (len(lines), lines))
        code, _, rest = lines[0].partition(" ")
        reason, _, cause = rest.rpartition(" ")
        return code, reason, cause

    async def connect_env(self, path="/env.sh", **kw):
        ws = await self.connect(path, **kw)
        env = parse_env(await self.recv_text(ws))
        self.track(data_path(env.get("WS_CONNECTION_ID", "x") + ".close.env"))
        return ws, env

    def assert_status(self, status, expected, path):
        self.assertEqual(status, expected, "GET %s -> %s; server log:\n%s"
                         % (path, status, self.server.log_text()[-3000:]))


SUITES_FILE = os.path.join(REPO_ROOT, "tests", "suites.txt")
SKIP_VAR = "WS2HTTP_TEST_SKIP"


def suite_requirements():
    """tests/suites.txt: (suite, installer, packages, programs) per line."""
    rows = []
    with open(SUITES_FILE) as f:
        for line in f:
            cols = line.split()
            if cols and not cols[0].startswith("#"):
                suite, installer, packages, programs = cols
                rows.append((suite, installer, packages.split(","), programs.split(",")))
    return rows


def find_program(name):
    """An executable `name` (a trailing * matches any suffix) in PATH or
    the sbin directories, as tests/common/suites.rs looks for it."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += ["/usr/local/sbin", "/usr/sbin", "/sbin"]
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, name))):
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return None


def missing_message(suite):
    """None when every program of `suite` is there, else one line naming
    what is missing and the command that installs it."""
    rows = [r for r in suite_requirements() if r[0] == suite]
    if not rows:
        raise ValueError("no suite %r in tests/suites.txt" % suite)
    for _, installer, packages, programs in rows:
        missing = [p for p in programs if find_program(p) is None]
        if missing:
            if installer == "apt":
                cmd = ("" if os.geteuid() == 0 else "sudo ") + "apt-get install -y --no-install-recommends "
            else:
                cmd = "cargo install --locked "
            return ("%s not installed (suite %s): run `%s%s` (or ./test, which installs what every suite "
                    "needs; %s=%s skips these tests on purpose)"
                    % (", ".join(missing), suite, cmd, " ".join(packages), SKIP_VAR, suite))
    return None


def have_php_cgi():
    return find_program("php-cgi") is not None


def needs(*suites):
    """Decorator (test method, setUpClass's function, or class): the test
    needs the programs of these suites (tests/suites.txt). The Rust harness
    (tests/python_clients.rs) reads the mark to run such tests as their own
    unit, ignored when WS2HTTP_TEST_SKIP names the suite. A missing program
    fails the test with the command that installs it: never skipped unseen."""
    problems = [m for m in map(missing_message, suites) if m]

    def mark(obj):
        obj.ws2http_suites = tuple(sorted(set(getattr(obj, "ws2http_suites", ())) | set(suites)))
        return obj

    def decorate(obj):
        if not problems:
            return mark(obj)
        if isinstance(obj, type):
            def setUpClass(cls):
                raise AssertionError(problems[0])
            obj.setUpClass = classmethod(setUpClass)
            return mark(obj)

        @functools.wraps(obj)
        def fail(*a, **k):
            raise AssertionError(problems[0])
        return mark(fail)
    return decorate

