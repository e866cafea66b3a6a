"""End to end tests in a real browser: Debian's headless Chromium, driven
through chromedriver with the W3C WebDriver protocol (webdriver.py).

- the dev console at GET / (no --root): pick /echo.sh, connect, send, see the
  echo in the log, disconnect;
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
from harness import REPO_ROOT, Server, needs

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
