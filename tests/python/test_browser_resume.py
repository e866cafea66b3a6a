"""Resumable sessions in a real browser (issue 17): Debian's headless Chromium with ws2http.js, as the
chat examples and the console use it, through a network blip.

The blip: the page (and so its WebSocket) goes through a loopback proxy (cutproxy.py) and the test
takes the browser offline with the DevTools protocol (Network.emulateNetworkConditions, which fires
the page's offline/online events) while the proxy cuts the TCP stream or stalls it. The proxy is
needed: Chromium's emulated offline mode does not touch WebSockets, open or new (checked with
Chromium 156: an open socket keeps sending and receiving, a new one connects).

- examples/python-chat: alice's network goes away (the stream cut, new connections reset) while bob
  talks and alice types; when it comes back alice has every message of bob's once and in order, bob
  has alice's, and neither page shows a "left" or "joined"; the same with a network that dies
  silently (the stream stalls, nobody notices until the browser comes back online);
- examples/php-chat: the cut, the same way (needs php-cgi);
- the console: a cut is logged as lost and resumed, the conversation goes on;
- ws2http.js alone: an offline/online flap while the TCP connection survives. The helper leaves the
  old socket for a resume on a new one: it must close it with 4499 (a drop to the server), not leave
  it open, where Chromium would go on answering the server's pings and so acknowledge messages the
  app never saw (the resume then finds a gap: 4410 and a reset).
"""

import os
import shutil
import tempfile
import unittest

import webdriver
from cutproxy import CutProxy
from harness import CGI_BIN_REL, complete_lines, data_path, unique
from test_browser import MEMBERS_JS, MESSAGES_JS, NOTICES_JS, BrowserTestCase, browser_tool, php_cgi


def emulate_offline(b, offline):
    b._cmd("POST", "/goog/cdp/execute", {"cmd": "Network.emulateNetworkConditions", "params": {
        "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}})


class ChatBlip:
    """The blip test, shared by both chat examples (mixed into a BrowserTestCase)."""

    app_dir = None

    def chat_url(self, base, room, nick):
        raise NotImplementedError

    def open_chat(self, b, base, room, nick):
        b.get(self.chat_url(base, room, nick))
        self.wait(b, lambda: b.text("#status") == "connected", "%s connected" % nick)

    def say(self, b, text):
        b.find("#text").send_keys(text)
        b.find("#send").click()

    def messages(self, b):
        return [tuple(m) for m in b.execute(MESSAGES_JS)]

    def members_api(self, room):
        status, _, _, conns = self.server.api("GET", "/connections?room=chat:" + room)
        self.assertEqual(status, 200)
        return sorted((c["id"], c["metadata"].get("nick")) for c in conns)

    def blip(self, how):
        proxy = CutProxy(self.server.port)
        self.addCleanup(proxy.close)
        room = "blip" + how
        alice, bob = self.browser(), self.browser()
        self.open_chat(alice, "http://127.0.0.1:%d" % proxy.port, room, "alice")
        self.open_chat(bob, self.base, room, "bob")
        for b in (alice, bob):
            self.wait(b, lambda b=b: b.execute(MEMBERS_JS) == ["alice", "bob"], "both members")
        self.wait(alice, lambda: "bob joined" in alice.execute(NOTICES_JS), "bob joined")
        self.say(alice, "before")
        self.wait(bob, lambda: ("alice", "before") in self.messages(bob), "alice's first message")
        before = self.members_api(room)
        notices = {"alice": alice.execute(NOTICES_JS), "bob": bob.execute(NOTICES_JS)}

        emulate_offline(alice, True)
        if how == "cut":
            proxy.offline()   # the stream dies; new connections are reset until online()
            self.wait(alice, lambda: alice.text("#status") == "reconnecting…", "alice reconnecting")
        else:
            proxy.stall()     # the stream goes silent; nobody notices
        for i in range(3):
            self.say(bob, "while you were away %d" % i)
        self.say(alice, "typed offline")
        self.wait(bob, lambda: ("bob", "while you were away 2") in self.messages(bob), "bob's own messages")
        proxy.online()
        emulate_offline(alice, False)

        expected = [("alice", "before")] + [("bob", "while you were away %d" % i) for i in range(3)]
        self.wait(alice, lambda: len(self.messages(alice)) >= 5, "alice has everything", timeout=20)
        self.wait(bob, lambda: ("alice", "typed offline") in self.messages(bob), "alice's offline message")
        self.say(bob, "welcome back")
        for b in (alice, bob):
            self.wait(b, lambda b=b: ("bob", "welcome back") in self.messages(b), "the last message")
        got = self.messages(alice)
        self.assertEqual([m for m in got if m[1] != "typed offline"], expected + [("bob", "welcome back")])
        self.assertEqual(got.count(("alice", "typed offline")), 1, got)
        self.assertEqual(self.messages(bob).count(("alice", "typed offline")), 1, self.messages(bob))
        for nick, b in (("alice", alice), ("bob", bob)):
            self.assertEqual(b.execute(NOTICES_JS), notices[nick], "no left/joined on %s's page" % nick)
            self.assertEqual(b.execute(MEMBERS_JS), ["alice", "bob"])
            self.assertEqual(b.text("#status"), "connected")
        self.assertEqual(self.members_api(room), before, "the same connections, no new one")


class PythonChatBlipTest(BrowserTestCase, ChatBlip):
    app_dir = os.path.join("examples", "python-chat")

    @browser_tool
    def setUp(self):
        self.start_server(os.path.join(self.app_dir, "cgi-bin"), ["--root", os.path.join(self.app_dir, "public")])

    def chat_url(self, base, room, nick):
        return "%s/?room=%s&nick=%s" % (base, room, nick)

    def test_a_cut_network_loses_nothing_and_shows_no_leave(self):
        self.blip("cut")

    def test_a_silently_dead_network_resumes_when_the_browser_is_back_online(self):
        self.blip("stall")


class PhpChatBlipTest(BrowserTestCase, ChatBlip):
    app_dir = os.path.join("examples", "php-chat")

    @browser_tool
    @php_cgi
    def setUp(self):
        self.start_server(os.path.join(self.app_dir, "cgi-bin"), ["--root", os.path.join(self.app_dir, "public")])

    def chat_url(self, base, room, nick):
        return "%s/chat.php?room=%s&nick=%s" % (base, room, nick)

    def test_a_cut_network_loses_nothing_and_shows_no_leave(self):
        self.blip("cut")


class ConsoleResumeTest(BrowserTestCase):
    """The console through a cut: lost, resumed, and the conversation goes on; past the grace period,
    a new session; with sessions off, plain reconnects (the 101 selects ws2http.plain: Chromium fails a
    handshake whose 101 selects none of the offered subprotocols)."""

    @browser_tool
    def setUp(self):
        pass

    def log_texts(self, b):
        return b.execute("""return [...document.querySelectorAll('#log > div')].map(
            d => d.textContent.slice(d.querySelector('time').textContent.length))""")

    def connect(self, args=()):
        self.start_server("cgi-bin", args)
        proxy = CutProxy(self.server.port)
        self.addCleanup(proxy.close)
        b = self.browser()
        b.get("http://127.0.0.1:%d/" % proxy.port)
        field = b.find("#path")
        field.clear()
        field.send_keys("/chat.sh/blip?nick=x")
        b.find("#go").click()
        self.wait(b, lambda: b.text("#state").startswith("connected to "), "connected")
        return proxy, b

    def say(self, b, text):
        b.find("#msg").send_keys(text)
        b.find("#sendbtn").click()
        self.wait(b, lambda: "← x: " + text in self.log_texts(b), "the echo of %r" % text)

    def test_past_the_grace_period_a_new_session(self):
        proxy, b = self.connect(["--resume-grace", "1"])
        first = [t for t in self.log_texts(b) if t.startswith("open")][0][len("open (session "):-1]
        proxy.offline()
        self.wait(b, lambda: "connection lost: resuming the session" in self.log_texts(b), "lost")
        self.wait(b, lambda: "[%s] session not resumed within" % first in self.server.log_text(), "expiry")
        proxy.online()
        self.wait(b, lambda: any(t.startswith("session lost (the server refused the resume: 4410")
                                 for t in self.log_texts(b)), "the reset")
        self.say(b, "new session")
        self.assertEqual(self.log_texts(b).count("← * welcome to blip, x: type a line to talk to everyone in the room"), 2)

    def test_sessions_off_plain_reconnects(self):
        proxy, b = self.connect(["--resume-grace", "0"])
        self.assertIn("open", self.log_texts(b))   # no session id
        self.say(b, "plain")
        # The 101 selected ws2http.plain: Chromium took the first handshake (no failed one whose open and
        # close events would show a join and a leave).
        opens = [ln for ln in self.server.log_text().splitlines() if " open from " in ln]
        self.assertEqual(len(opens), 1, opens)
        self.assertNotIn(" closed: ", self.server.log_text())
        proxy.cut()
        self.wait(b, lambda: "a new connection: reconnected without a session (the server does not offer them)"
                                 in self.log_texts(b),
                  "a plain reconnect")
        self.assertIn("connection lost: reconnecting", self.log_texts(b))
        self.say(b, "again")
        self.assertFalse(b.find("#failure").text)

    def test_a_cut_is_resumed(self):
        proxy, b = self.connect()
        opened = [t for t in self.log_texts(b) if t.startswith("open")]
        self.assertRegex(opened[0], r"^open \(session [0-9a-f]{32}\)$")
        session = opened[0][len("open (session "):-1]
        proxy.cut()
        self.wait(b, lambda: "resumed (session %s)" % session in self.log_texts(b), "resumed")
        self.assertIn("connection lost: resuming the session", self.log_texts(b))
        b.find("#msg").send_keys("still here")
        b.find("#sendbtn").click()
        self.wait(b, lambda: "← x: still here" in self.log_texts(b), "the echo")
        self.assertEqual(b.text("#state"), "connected to ws://127.0.0.1:%d/chat.sh/blip?nick=x" % proxy.port)
        self.assertFalse(b.find("#failure").text)


PAGE = """<!doctype html><meta charset="utf-8"><title>flap</title>
<script src="/ws2http.js"></script>
<script>
window.got = []; window.resets = []; window.raw = [];
// Every socket the helper opens, counted below the helper (its handlers go when it leaves one).
class Counting extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    const seen = { n: 0, closed: false };
    window.raw.push(seen);
    this.addEventListener("message", () => { seen.n += 1; });
    this.addEventListener("close", () => { seen.closed = true; });
  }
}
window.ws = new Ws2httpSocket("ws://" + location.host + "/resume.sh" + location.search, { WebSocket: Counting });
ws.onmessage = (e) => got.push(e.data);
ws.onreset = (e) => resets.push(e.reason || "reset");
</script>
"""


class HelperFlapTest(BrowserTestCase):
    """The browser goes offline and online while its WebSocket's TCP connection lives on."""

    @browser_tool
    def setUp(self):
        root = tempfile.mkdtemp(prefix="ws2http-flap-")
        self.addCleanup(shutil.rmtree, root, True)
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write(PAGE)
        self.start_server(CGI_BIN_REL, ["--root", root])

    def test_a_socket_left_for_a_resume_acknowledges_nothing(self):
        proxy = CutProxy(self.server.port)
        self.addCleanup(proxy.close)
        tag = unique("flap")
        events = data_path(tag + ".events")
        b = self.browser()
        b.get("http://127.0.0.1:%d/?log=%s" % (proxy.port, tag))
        self.wait(b, lambda: b.execute("return ws.status === 'open' && ws.id"), "the session open")
        conn = b.execute("return ws.id")
        proxy.hold()
        emulate_offline(b, True)
        emulate_offline(b, False)   # "online": the helper leaves the socket, resumes on a new one
        self.wait(b, lambda: proxy.held == 1, "the resume, held by the proxy")
        count = 100   # more than 32: the server pings after every 32 messages
        for i in range(count):
            status, _, _, _ = self.server.api("POST", "/send/" + conn, "m%d" % i)
            self.assertEqual(status, 200)
        # Left open, the old socket gets every message (1 + count); closed, it gets no more.
        self.wait(b, lambda: b.execute("return raw[0].closed || raw[0].n > %d" % count), "the old socket done")
        proxy.release()
        self.wait(b, lambda: b.execute("return got.length >= %d || resets.length > 0" % count), "the replay")
        self.assertEqual(b.execute("return resets"), [], "no reset: the resume found every message")
        self.assertEqual(b.execute("return got"), ["m%d" % i for i in range(count)])
        self.assertEqual((b.execute("return ws.id"), b.execute("return ws.status")), (conn, "open"))
        self.assertEqual(complete_lines(events), ["open " + conn])


if __name__ == "__main__":
    unittest.main()
