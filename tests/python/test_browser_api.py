"""The control API against a real browser (headless Chromium, webdriver.py),
with no --api-token, as on a laptop by default:

- CSRF: a page on another port sends what any web page can send without a
  preflight (fetch no-cors POST with a text or form body, a form POST into
  an iframe); none of it may deliver, and each is refused (403) in the log;
- DNS rebinding: Chromium resolves rebind.evil.example to 127.0.0.1
  (--host-resolver-rules), as after a rebinding; a page at
  http://rebind.evil.example:API_PORT/ must not read the connections (421),
  not even with a same-origin fetch.

Without chromium or chromedriver a test fails with the command that installs
them (WS2HTTP_TEST_SKIP=browser skips them on purpose, see tests/suites.txt).
"""

import os
import shutil
import tempfile
import unittest

from websockets.sync.client import connect as ws_connect

import webdriver
from harness import TIMEOUT, Server, needs, unique

WAIT = 10.0
browser_tool = needs("browser")

ATTACK_JS = """
const api = arguments[0];
const text = {mode: 'no-cors', method: 'POST', body: 'pwned-text', headers: {'Content-Type': 'text/plain'}};
const form = {mode: 'no-cors', method: 'POST', body: new URLSearchParams({x: 'pwned-form'})};
const actions = {mode: 'no-cors', method: 'POST', body: '@broadcast pwned-actions'};
window.done = null;
Promise.allSettled([fetch(api + '/broadcast', text), fetch(api + '/rooms/lobby', form),
                    fetch(api + '/actions', actions), fetch(api + '/connections', {mode: 'no-cors'})])
    .then(r => { window.done = r.map(x => x.status); });
// A plain HTML form, posted into an iframe (a navigation, not a fetch).
const frame = document.createElement('iframe');
frame.name = 'sink';
document.body.appendChild(frame);
const f = document.createElement('form');
f.method = 'POST'; f.action = api + '/broadcast'; f.enctype = 'text/plain'; f.target = 'sink';
const i = document.createElement('input');
i.name = 'pwned-form-post'; i.value = 'x';
f.appendChild(i);
document.body.appendChild(f);
f.submit();
"""


class ApiBrowserTest(unittest.TestCase):

    @browser_tool
    def setUp(self):
        self.page_dir = tempfile.mkdtemp(prefix="ws2http-attacker-")
        self.addCleanup(shutil.rmtree, self.page_dir, True)
        with open(os.path.join(self.page_dir, "index.html"), "w") as f:
            f.write("<!doctype html><title>another site</title><p>hello</p>\n")
        server = Server(args=["--root", self.page_dir])
        self.addCleanup(server.kill)
        self.addCleanup(server.stop)
        self.server = server.start()
        self.api = "http://127.0.0.1:%d" % server.api_port
        self.ws = ws_connect(server.ws_url("/lines.sh"), open_timeout=TIMEOUT, proxy=None)
        self.addCleanup(self.ws.close)
        greeting = self.ws.recv(timeout=TIMEOUT)
        self.assertTrue(greeting.startswith("id "), greeting)
        self.conn_id = greeting[3:]

    def browser(self, *args):
        b = webdriver.Browser(args=args)
        self.addCleanup(b.quit)
        return b

    def wait(self, b, predicate, what):
        try:
            return b.wait_until(predicate, WAIT, what)
        except AssertionError as e:
            raise AssertionError("%s\nserver log (end):\n%s"
                                 % (e, self.server.log_text()[-3000:])) from None

    def wait_log(self, needle, count):
        return self.wait(self.b, lambda: self.server.log_text().count(needle) >= count,
                         "%d x %r in the server log" % (count, needle))

    def assert_nothing_delivered(self):
        """The next message is a sentinel pushed now: nothing came before it."""
        mark = unique("sentinel-")
        status, _, raw, _ = self.server.api("POST", "/send/" + self.conn_id, mark)
        self.assertEqual(status, 200, raw)
        self.assertEqual(self.ws.recv(timeout=TIMEOUT), mark)

    def test_a_page_on_another_port_cannot_post(self):
        self.b = b = self.browser()
        b.get("http://127.0.0.1:%d/" % self.server.port)
        self.assertEqual(b.text("p"), "hello")
        b.execute(ATTACK_JS, self.api)
        statuses = self.wait(b, lambda: b.execute("return window.done"), "the fetches to settle")
        # no-cors: the page learns nothing, the requests did go out
        self.assertEqual(statuses, ["fulfilled"] * 4)
        self.wait_log("refused (403)", 5)
        self.assert_nothing_delivered()
        self.assertIn('Origin "http://127.0.0.1:%d"' % self.server.port, self.server.log_text())

    def test_dns_rebinding_cannot_read_connections(self):
        self.b = b = self.browser("--host-resolver-rules=MAP rebind.evil.example 127.0.0.1")
        origin = "http://rebind.evil.example:%d" % self.server.api_port
        b.get(origin + "/connections")
        body = b.execute("return document.body.innerText")
        self.assertIn("is not this API's address", body)
        self.assertNotIn(self.conn_id, body)
        # the page is now same-origin with the "API": its own fetches fail too
        got = b.execute("""
            window.got = null;
            fetch('/connections').then(r => r.text().then(t => { window.got = [r.status, t]; }));
            """)
        self.assertIsNone(got)
        status, text = self.wait(b, lambda: b.execute("return window.got"), "the same-origin fetch")
        self.assertIn(status, (403, 421))
        self.assertNotIn(self.conn_id, text)
        close = b.execute("""
            window.deleted = null;
            fetch('/connections/' + arguments[0], {method: 'DELETE'})
                .then(r => { window.deleted = r.status; });
            """, self.conn_id)
        self.assertIsNone(close)
        self.assertIn(self.wait(b, lambda: b.execute("return window.deleted"), "the DELETE"), (403, 421))
        self.assertIn("refused (421)", self.server.log_text())
        self.assert_nothing_delivered()   # and the connection is still open


if __name__ == "__main__":
    unittest.main()
