"""A minimal W3C WebDriver client for Debian's headless Chromium.

Stdlib only (urllib + json): starts its own chromedriver on a free loopback
port, opens one browser session with a fresh profile directory, and offers the
few commands the browser tests need. Always call quit() (or use `with`): it
ends the session, stops chromedriver and removes the profile and the
browser's temporary files.

    with Browser() as b:
        b.get("http://127.0.0.1:8080/")
        b.find("#go").click()
        b.wait_until(lambda: b.text("#state") == "connected")
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = os.environ.get("WS2HTTP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WS2HTTP_CHROMEDRIVER", "/usr/bin/chromedriver")
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"   # W3C web element identifier
ENTER = "\ue007"

# chromedriver is on loopback: never go through an HTTP proxy from the env
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def available():
    return all(os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


class WebDriverError(Exception):
    def __init__(self, error, message):
        super().__init__(f"{error}: {message}")
        self.error = error


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Element:
    def __init__(self, browser, eid):
        self.browser, self.id = browser, eid

    def _cmd(self, method, what, body=None):
        return self.browser._cmd(method, f"/element/{self.id}/{what}", body)

    def click(self):
        self._cmd("POST", "click", {})

    def clear(self):
        self._cmd("POST", "clear", {})

    def send_keys(self, text):
        self._cmd("POST", "value", {"text": text})

    @property
    def text(self):
        return self._cmd("GET", "text")


class Browser:
    def __init__(self, window=(1100, 800), start_timeout=20.0, args=()):
        # the profile, and (as TMPDIR) the browser's own temporary files
        self.dir = tempfile.mkdtemp(prefix="ws2http-browser-")
        self.profile = os.path.join(self.dir, "profile")
        os.mkdir(os.path.join(self.dir, "tmp"))
        self._log = tempfile.TemporaryFile(prefix="chromedriver-log-")
        self.proc = None
        self.session = None
        try:
            self._start_driver(start_timeout)
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--user-data-dir=" + self.profile,
                    "--window-size=%d,%d" % window] + list(args)}}}}
            self.session = self._http("POST", "/session", caps)["sessionId"]
            self._cmd("POST", "/timeouts", {"pageLoad": 15000, "script": 10000, "implicit": 0})
        except BaseException:
            self.quit()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.quit()

    # -- plumbing ----------------------------------------------------------
    def _start_driver(self, timeout):
        for _ in range(3):   # the free port may be taken before chromedriver binds it
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [CHROMEDRIVER, f"--port={self.port}"], stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, TMPDIR=os.path.join(self.dir, "tmp")))
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    if self._http("GET", "/status", timeout=2).get("ready"):
                        return
                except (OSError, WebDriverError):
                    pass
                time.sleep(0.05)
            self._stop_driver()
        raise RuntimeError("chromedriver did not become ready:\n" + self.driver_log())

    def _http(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with _opener.open(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                value = json.loads(raw)["value"]
                raise WebDriverError(value.get("error"), value.get("message")) from None
            except (ValueError, KeyError, AttributeError):
                raise WebDriverError("http %d" % e.code, raw[:500]) from None
        return json.loads(raw)["value"]

    def _cmd(self, method, path, body=None):
        return self._http(method, f"/session/{self.session}{path}", body)

    def driver_log(self):
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-5000:]

    # -- commands ------------------------------------------------------------
    def get(self, url):
        self._cmd("POST", "/url", {"url": url})

    @property
    def url(self):
        return self._cmd("GET", "/url")

    def find(self, css):
        value = self._cmd("POST", "/element", {"using": "css selector", "value": css})
        return Element(self, value[ELEMENT_KEY])

    def text(self, css):
        return self.find(css).text

    def execute(self, script, *args):
        """Runs `script` as a function body in the page; `return` gives the result."""
        return self._cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_until(self, predicate, timeout=10.0, what=None, interval=0.05):
        """Polls predicate() until it returns a truthy value and returns that;
        a missing or stale element counts as not yet."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = predicate()
                if last:
                    return last
            except WebDriverError as e:
                if e.error not in ("no such element", "stale element reference"):
                    raise
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %ss waiting for %s (last: %r)"
                                     % (timeout, what or predicate, last))
            time.sleep(interval)

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self._cmd("GET", "/screenshot")))
        return path

    # -- teardown ------------------------------------------------------------
    def quit(self):
        if self.session is not None:
            try:
                self._http("DELETE", f"/session/{self.session}", timeout=10)
            except (OSError, WebDriverError):
                pass
            self.session = None
        self._stop_driver()
        shutil.rmtree(self.dir, ignore_errors=True)
        if not self._log.closed:
            self._log.close()

    def _stop_driver(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # anything chromedriver left behind in its own process group (a browser
        # whose session never ended cleanly)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc = None
