"""End to end tests in a real browser: Debian's headless Chromium, driven
through chromedriver with the W3C WebDriver protocol (webdriver.py).

- the dev console at GET / (no --root): pick /echo.sh, connect, send, see the
  echo in the log, disconnect; from http://localhost:PORT and
  http://127.0.0.1:PORT, open /chat.sh/ROOM?nick=x through the path field,
  chat, clear the log; a refused handshake (404, the open script's 403) shows
  its status, reason and the server log line to look for;
- examples/php-chat: two browsers join one room through the room picker, chat
  both ways (markup stays text), and one leaves.

A screenshot of the chat goes to docs/chat-screenshot.png with
WS2HTTP_SCREENSHOT=1, else to a temporary directory. Without chromium,
chromedriver or php-cgi a test fails with the command that installs them
(WS2HTTP_TEST_SKIP=browser skips them on purpose, see tests/suites.txt).
"""

import os
import shutil
import struct
import tempfile
import unittest

import webdriver
from harness import CGI_BIN_REL, REPO_ROOT, Server, needs

WAIT = 10.0
browser_tool = needs("browser")
php_cgi = needs("php")

MEMBERS_JS = "return [...document.querySelectorAll('#members li')].map(li => li.textContent)"
MESSAGES_JS = """return [...document.querySelectorAll('#messages .msg')].map(
    d => [d.querySelector('.nick').textContent, d.querySelector('.text').textContent])"""
NOTICES_JS = """return [...document.querySelectorAll('#messages .notice .text')].map(
    e => e.textContent)"""


class BrowserTestCase(unittest.TestCase):

    def start_server(self, cgi_bin, args=()):
        server = Server(cgi_bin=cgi_bin, args=list(args))
        self.addCleanup(server.kill)
        self.addCleanup(server.stop)
        self.server = server.start()
        self.base = "http://127.0.0.1:%d" % server.port
        return server

    def browser(self):
        b = webdriver.Browser()
        self.addCleanup(b.quit)
        return b

    def wait(self, b, predicate, what, timeout=WAIT):
        try:
            return b.wait_until(predicate, timeout, what)
        except AssertionError as e:
            raise AssertionError("%s\nserver log (end):\n%s"
                                 % (e, self.server.log_text()[-3000:])) from None


class ConsoleTest(BrowserTestCase):
    """The built-in dev console page (GET / without --root)."""

    @browser_tool
    def setUp(self):
        self.start_server("cgi-bin")

    def log_lines(self, b):
        """[(timestamp, text)] of the #log lines."""
        return [tuple(x) for x in b.execute(
            """return [...document.querySelectorAll('#log > div')].map(d => {
                 const t = d.querySelector('time');
                 return [t ? t.textContent : null,
                         d.textContent.slice(t ? t.textContent.length : 0)];
               })""")]

    def test_echo_round_trip(self):
        b = self.browser()
        b.get(self.base + "/")
        endpoints = b.execute(
            "return [...document.querySelectorAll('#endpoint option')].map(o => o.value)")
        for ep in ("/echo.sh", "/chat.sh"):
            self.assertIn(ep, endpoints)
        self.assertEqual(b.text("#state"), "not connected")

        b.find("#endpoint option[value='/echo.sh']").click()
        self.assertEqual(b.execute("return document.getElementById('endpoint').value"), "/echo.sh")
        b.find("#go").click()
        url = "ws://127.0.0.1:%d/echo.sh" % self.server.port
        self.wait(b, lambda: b.text("#state") == "connected to " + url, "state connected")
        self.assertEqual(b.text("#go"), "Disconnect")

        b.find("#msg").send_keys("hello browser")
        b.find("#sendbtn").click()

        def echoed():
            lines = self.log_lines(b)
            return lines if ("← hello browser" in [t for _, t in lines]) else None
        lines = self.wait(b, echoed, "the echo in #log")
        texts = [t for _, t in lines]
        self.assertLess(texts.index("→ hello browser"), texts.index("← hello browser"), texts)
        for stamp, text in lines:
            self.assertRegex(stamp or "", r"^\d\d:\d\d:\d\d\.\d{3}$", "no timestamp on %r" % text)
        self.assertEqual(b.execute("return document.getElementById('msg').value"), "")

        b.find("#go").click()   # now "Disconnect"
        self.wait(b, lambda: any(t.startswith("closed 1000") for _, t in self.log_lines(b)),
                  "closed 1000 in #log")
        self.wait(b, lambda: b.text("#state") == "not connected", "state not connected")
        self.assertEqual(b.text("#go"), "Connect")


class ConsolePathTest(BrowserTestCase):
    """The console's path field, clear-log button and failure report, from
    both loopback names a user types (http://localhost:PORT and
    http://127.0.0.1:PORT)."""

    @browser_tool
    def setUp(self):
        self.start_server("cgi-bin")

    def log_texts(self, b):
        return b.execute("""return [...document.querySelectorAll('#log > div')].map(
            d => d.textContent.slice(d.querySelector('time').textContent.length))""")

    def wait_log_line(self, b, text):
        self.wait(b, lambda: text in self.log_texts(b), "%r in #log" % text)

    def set_path(self, b, path):
        field = b.find("#path")
        field.clear()
        field.send_keys(path)

    def test_chat_room_through_the_path_field_from_both_names(self):
        b = self.browser()
        for host in ("localhost", "127.0.0.1"):
            with self.subTest(host=host):
                origin = "%s:%d" % (host, self.server.port)
                b.get("http://%s/" % origin)
                b.find("#endpoint option[value='/chat.sh']").click()
                self.assertEqual(b.execute("return document.getElementById('path').value"), "/chat.sh")
                self.set_path(b, "/chat.sh/room42?nick=x")
                url = "ws://%s/chat.sh/room42?nick=x" % origin
                self.assertEqual(b.text("#url"), url)   # shown before connecting
                b.find("#go").click()
                self.wait(b, lambda: b.text("#state") == "connected to " + url, "connected from " + host)
                self.wait_log_line(b, "← * welcome to room42, x: type a line to talk to everyone in the room")
                b.find("#msg").send_keys("hello room")
                b.find("#sendbtn").click()
                self.wait_log_line(b, "← x: hello room")

                b.find("#clear").click()
                self.assertEqual(self.log_texts(b), [])
                b.find("#msg").send_keys("after clearing")
                b.find("#sendbtn").click()
                self.wait_log_line(b, "← x: after clearing")
                self.assertEqual(self.log_texts(b), ["→ after clearing", "← x: after clearing"])
                b.find("#go").click()
                self.wait(b, lambda: b.text("#state") == "not connected", "disconnected")
                self.assertFalse(b.find("#failure").text)   # a normal close is no failure

    def test_a_page_on_one_loopback_name_may_open_the_other(self):
        """The origin rule: a page from http://localhost:PORT opens
        ws://127.0.0.1:PORT (the URL ws2http prints) and the other way round."""
        b = self.browser()
        port = self.server.port
        for page, socket in (("localhost", "127.0.0.1"), ("127.0.0.1", "localhost")):
            b.get("http://%s:%d/" % (page, port))
            b.execute("""window.probe = "pending";
                const w = new WebSocket(arguments[0]);
                w.onopen = () => { window.probe = "open"; w.close(); };
                w.onclose = c => { if (window.probe !== "open") window.probe = "closed " + c.code; };""",
                      "ws://%s:%d/echo.sh" % (socket, port))
            self.wait(b, lambda: b.execute("return window.probe") != "pending", "probe from " + page)
            self.assertEqual(b.execute("return window.probe"), "open", "page %s, socket %s" % (page, socket))

    def failure_lines(self, b):
        self.wait(b, lambda: b.find("#failure").text, "#failure shown")
        return b.execute("return [...document.querySelectorAll('#failure > div')].map(d => d.textContent)")

    def test_a_missing_endpoint_shows_404_and_why_there_is_no_log_line(self):
        b = self.browser()
        b.get("http://localhost:%d/" % self.server.port)
        self.set_path(b, "/nope.sh/x?nick=y")
        b.find("#go").click()
        lines = self.failure_lines(b)
        self.assertEqual(lines[0], "Refused: HTTP 404 no WebSocket endpoint here")
        self.assertIn("no script in --cgi-bin answers /nope.sh/x", lines[1])
        self.assertTrue(any(t.startswith("closed 1006") for t in self.log_texts(b)), self.log_texts(b))
        self.assertEqual(b.text("#state"), "not connected")
        b.find("#clear").click()
        self.assertEqual((self.log_texts(b), b.find("#failure").text), ([], ""))


class ConsoleRefusalTest(BrowserTestCase):
    """A handshake the open script refuses (tests/python/cgi-bin/auth.sh
    without its cookie): the console shows the status, the script's body and
    the server's log line, and that line is in the server log."""

    @browser_tool
    def setUp(self):
        self.start_server(CGI_BIN_REL)   # the test scripts

    def test_script_refusal_names_status_body_and_log_line(self):
        b = self.browser()
        b.get("http://127.0.0.1:%d/" % self.server.port)
        field = b.find("#path")
        field.clear()
        field.send_keys("/auth.sh?who=me")
        b.find("#go").click()
        self.wait(b, lambda: b.find("#failure").text, "#failure shown")
        lines = b.execute("return [...document.querySelectorAll('#failure > div')].map(d => d.textContent)")
        self.assertRegex(lines[0], r"^Refused: HTTP 403 \S")
        self.assertEqual(lines[1], "Server log: /auth.sh open: rejected 403")
        self.assertIn("/auth.sh open: rejected 403", self.server.log_text())


class PhpChatTest(BrowserTestCase):
    """examples/php-chat in two browsers, run as its README says."""

    app_dir = os.path.join("examples", "php-chat")

    @browser_tool
    @php_cgi
    def setUp(self):
        self.start_server(os.path.join(self.app_dir, "cgi-bin"),
                          ["--root", os.path.join(self.app_dir, "public")])

    def join(self, b, nick, room):
        """Through the room picker form, up to a connected chat page."""
        b.get(self.base + "/index.php")
        for field, value in (("#nick", nick), ("#room", room)):
            el = b.find(field)
            el.clear()
            el.send_keys(value)
        b.find("#join").click()
        self.wait(b, lambda: b.url.endswith("/chat.php?room=%s&nick=%s" % (room, nick)),
                  "%s on chat.php" % nick)
        self.wait(b, lambda: b.text("#status") == "connected", "%s connected" % nick)
        self.assertEqual(b.text("#me"), nick)

    def say(self, b, text):
        b.find("#text").send_keys(text)
        b.find("#send").click()

    def wait_members(self, b, expected):
        self.wait(b, lambda: b.execute(MEMBERS_JS) == expected, "members %r" % expected)

    def wait_message(self, b, nick, text):
        self.wait(b, lambda: [nick, text] in b.execute(MESSAGES_JS),
                  "message %s: %r" % (nick, text))

    def screenshot_path(self):
        if os.environ.get("WS2HTTP_SCREENSHOT") == "1":
            return os.path.join(REPO_ROOT, "docs", "chat-screenshot.png")
        tmp = tempfile.mkdtemp(prefix="ws2http-screenshot-")
        self.addCleanup(shutil.rmtree, tmp, True)
        return os.path.join(tmp, "chat-screenshot.png")

    def test_two_browsers_chat(self):
        alice, bob = self.browser(), self.browser()
        self.join(alice, "alice", "lobby")
        self.join(bob, "bob", "lobby")
        for b in (alice, bob):
            self.wait_members(b, ["alice", "bob"])
        self.wait(alice, lambda: "bob joined" in alice.execute(NOTICES_JS), "bob joined")

        self.say(alice, "hi bob! this page, the form and the WebSocket are all PHP")
        self.wait_message(bob, "alice", "hi bob! this page, the form and the WebSocket are all PHP")
        self.say(bob, "hey alice, one php-cgi run per message")
        self.wait_message(alice, "bob", "hey alice, one php-cgi run per message")

        markup = "<b>x</b> stays text & <i>so does this</i>"
        self.say(alice, markup)
        for b in (alice, bob):
            self.wait_message(b, "alice", markup)
            self.assertEqual(b.execute(
                "return document.querySelectorAll('#messages b, #messages i').length"), 0)
            self.assertIn("&lt;b&gt;x&lt;/b&gt;",
                          b.execute("return document.getElementById('messages').innerHTML"))
        self.assertEqual(alice.text("#text"), "")   # the input was cleared after sending

        path = alice.screenshot(self.screenshot_path())
        with open(path, "rb") as f:
            head = f.read(24)
        self.assertEqual(head[:8], b"\x89PNG\r\n\x1a\n")
        width, height = struct.unpack(">II", head[16:24])
        self.assertGreater(width * height, 0)

        bob.quit()
        self.wait(alice, lambda: "bob left" in alice.execute(NOTICES_JS), "bob left")
        self.wait_members(alice, ["alice"])
        self.assertEqual(alice.text("#status"), "connected")
        self.say(alice, "anyone?")
        self.wait_message(alice, "alice", "anyone?")


if __name__ == "__main__":
    unittest.main()
