"""The client helpers of resumable sessions (issue 17) against the real server.

- /ws2http.js (contrib/ws2http.js compiled in): served in every mode (console, --root with a file of
  that name, --no-console, the single script), JavaScript MIME type, Cache-Control and ETag with 304,
  405 for other methods, the same bytes as the copy in contrib/;
- contrib/ws2http_session.py, the Python helper, through a loopback proxy that cuts the TCP stream
  without a close frame (cutproxy.py) while echoes, POST /send/{id} and room messages flow: every
  message exactly once and in order, the same connection id, no close or open event, rooms and
  metadata intact; a session past its grace starts over (on_reset, one close event resume-expired);
  a server without sessions (--resume-grace 0, a --per-connection endpoint) gets plain reconnects;
- the usage example of docs/CLIENT.md, run as printed.

The browser side (Chromium with ws2http.js in the chat examples and the console) is in
test_browser_resume.py.
"""

import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

from cutproxy import CutProxy
from harness import REPO_ROOT, ServerTestCase, complete_lines, data_path, needs, unique, wait_for

sys.path.insert(0, os.path.join(REPO_ROOT, "contrib"))
from ws2http_session import Ws2httpClosed, Ws2httpSession  # noqa: E402

JS_FILE = os.path.join(REPO_ROOT, "contrib", "ws2http.js")
WAIT = 15.0


def http_get(port, path, method="GET", headers=None):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


class ServedHelperTest(ServerTestCase):
    """GET /ws2http.js in each mode."""

    def check_served(self, port):
        with open(JS_FILE, "rb") as f:
            source = f.read()
        status, headers, body = http_get(port, "/ws2http.js")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/javascript; charset=utf-8")
        self.assertEqual(headers["Cache-Control"], "public, max-age=300")
        self.assertEqual(body, source)
        etag = headers["ETag"]
        self.assertRegex(etag, r'^"[0-9a-f]{16}"$')
        status, headers, body = http_get(port, "/ws2http.js", "HEAD")
        self.assertEqual((status, headers["ETag"], headers["Content-Length"], body),
                         (200, etag, str(len(source)), b""))
        status, headers, body = http_get(port, "/ws2http.js", headers={"If-None-Match": etag})
        self.assertEqual((status, body), (304, b""))
        status, headers, _ = http_get(port, "/ws2http.js", "POST")
        self.assertEqual((status, headers["Allow"]), (405, "GET, HEAD"))

    def start_other(self, args, **kw):
        server = self.make_server(args=args, **kw).start()
        self.addCleanup(server.kill)
        self.addCleanup(server.stop)
        return server

    def test_served_with_the_console(self):
        self.check_served(self.server.port)

    def test_a_file_of_that_name_in_root_does_not_shadow_it(self):
        root = tempfile.mkdtemp(prefix="ws2http-root-")
        self.addCleanup(shutil.rmtree, root, True)
        for name, text in (("ws2http.js", "alert('stale copy')"), ("index.html", "<p>site</p>")):
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        server = self.start_other(["--root", root])
        self.check_served(server.port)
        self.assertEqual(http_get(server.port, "/")[2], b"<p>site</p>")

    def test_served_without_the_console(self):
        server = self.start_other(["--no-console"])
        self.assertEqual(http_get(server.port, "/")[0], 404)
        self.check_served(server.port)

    def test_served_by_the_single_script(self):
        server = self.start_other([], cgi_bin=None, script="tests/python/cgi-bin/resume.sh")
        self.check_served(server.port)


class Events:
    """The lines resume.sh writes for one TAG: open ID, resume ID, close ID CAUSE."""

    def __init__(self, case):
        self.tag = unique("h")
        self.path = data_path(self.tag + ".events")
        case.track(self.path)

    def lines(self):
        return complete_lines(self.path) or []


class BrokenServerTest(unittest.IsolatedAsyncioTestCase):
    """contrib/ws2http_session.py against a server whose session message is incomplete."""

    async def test_a_session_message_without_a_token_ends_the_session_instead_of_hanging(self):
        from websockets.asyncio.server import serve

        async def handler(ws):
            await ws.send('{"ws2http":"session","id":"x"}')
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0, subprotocols=["ws2http.session.v1"]) as server:
            port = server.sockets[0].getsockname()[1]
            s = Ws2httpSession("ws://127.0.0.1:%d/x" % port, max_retries=0)
            with self.assertRaises(Ws2httpClosed):
                await asyncio.wait_for(s.start(), WAIT)
            with self.assertRaises(Ws2httpClosed):
                await asyncio.wait_for(s.recv(), WAIT)


class PythonHelperTest(ServerTestCase):
    """contrib/ws2http_session.py through a cutting proxy."""

    def proxy(self):
        proxy = CutProxy(self.server.port)
        self.addCleanup(proxy.close)
        return proxy

    def session(self, proxy, path, **kw):
        kw.setdefault("min_delay", 0.02)
        kw.setdefault("max_delay", 0.2)
        return Ws2httpSession("ws://127.0.0.1:%d%s" % (proxy.port, path), **kw)

    async def api(self, method, path, body=None):
        return await asyncio.to_thread(self.server.api, method, path, body)

    async def test_every_message_exactly_once_across_cuts(self):
        proxy, events, room = self.proxy(), Events(self), unique("r")
        resets = []
        s = self.session(proxy, "/resume.sh?log=%s&room=%s" % (events.tag, room), on_reset=resets.append)
        await s.start()
        self.addAsyncCleanup(s.close)
        first = s.id
        self.assertTrue(s.resumable)
        self.assertRegex(first, r"^[0-9a-f]{32}$")
        # The session message comes before the open event's directives apply.
        await wait_for(lambda: (self.server.api("GET", "/connections/" + first)[3] or {}).get("rooms") == [room],
                       WAIT, "the open event's @join")
        n = 150
        got = []

        async def client_sends():
            # Each message runs the script: at most a few waiting, far below --max-queue (64).
            for i in range(n):
                await wait_for(lambda: i - sum(m.startswith("echo:") for m in got) < 8, WAIT, "echoes")
                self.assertTrue(s.send("c%d" % i))

        async def api_sends():
            for i in range(n):
                status, _, body, _ = await self.api("POST", "/send/" + first, "api%d" % i)
                self.assertEqual(status, 200, body)
                status, _, body, _ = await self.api("POST", "/rooms/" + room, "room%d" % i)
                self.assertEqual((status, body), (200, b'{"delivered":1}'))

        async def cuts():
            # Only on a socket whose session message arrived: a cut between the resume's 101 and its
            # "resumed" message is test_a_resume_whose_answer_was_lost_is_retried's case.
            for _ in range(6):
                await asyncio.sleep(random.uniform(0.05, 0.3))
                await wait_for(lambda: s.status == "open", WAIT, "the session open")
                proxy.cut()

        async def receive():
            while len(got) < 3 * n:
                got.append(await asyncio.wait_for(s.recv(), WAIT))

        await asyncio.gather(client_sends(), api_sends(), cuts(), receive())
        for prefix in ("echo:c", "api", "room"):
            mine = [m for m in got if m.startswith(prefix) and m[len(prefix):].isdigit()]
            self.assertEqual(mine, ["%s%d" % (prefix, i) for i in range(n)], prefix)
        self.assertEqual(len(got), 3 * n, got)
        self.assertEqual((s.id, resets), (first, []))
        self.assertGreaterEqual(s.resumes, 1)
        self.assertEqual(events.lines(), ["open " + first], "no close, no open event")
        status, _, _, conn = await self.api("GET", "/connections/" + first)
        self.assertEqual(status, 200)
        self.assertEqual((conn["rooms"], conn["metadata"]), ([room], {"tag": events.tag}))
        await s.close()
        await wait_for(lambda: len(events.lines()) > 1 and events.lines()[-1].startswith("close "), WAIT,
                       "the close event")
        closes = [ln for ln in events.lines() if ln.startswith("close ")]
        self.assertEqual(closes, ["close %s client" % first])

    async def test_a_resume_whose_answer_was_lost_is_retried(self):
        """The network dies again between a resume's 101 and its "resumed" message: the server has
        taken the resume (and rotated the token), the client never learned the new token. Its next
        resume, with the token it has, must still work: nothing lost, no new session."""
        proxy, events = self.proxy(), Events(self)
        resets = []
        s = self.session(proxy, "/resume.sh?log=" + events.tag, on_reset=resets.append)
        await s.start()
        self.addAsyncCleanup(s.close)
        first = s.id
        s.send("one")
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:one")
        proxy.cut_next_after_handshake()
        proxy.cut()
        await wait_for(lambda: proxy.cut_after_handshake == 0, WAIT, "the resume cut after its 101")
        s.send("two")
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:two")
        self.assertEqual((s.id, resets), (first, []))
        self.assertEqual(events.lines(), ["open " + first])

    async def test_a_session_past_its_grace_starts_over(self):
        self.server.stop()
        self.server.kill()
        self.server = self.make_server(args=["--resume-grace", "1"]).start()
        proxy, events = self.proxy(), Events(self)
        resets = []
        s = self.session(proxy, "/resume.sh?log=" + events.tag, on_reset=resets.append)
        await s.start()
        self.addAsyncCleanup(s.close)
        first = s.id
        s.send("before")
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:before")
        proxy.offline()
        await wait_for(lambda: "close %s resume-expired" % first in events.lines(), WAIT, "the grace to expire")
        s.send("after")   # queued: never written to the lost session, so it goes to the new one
        proxy.online()
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:after")
        self.assertEqual(len(resets), 1, resets)
        self.assertNotEqual(s.id, first)
        self.assertEqual(resets[0]["id"], s.id)
        self.assertIn("4410", resets[0]["reason"])
        # Written to the lost session: its echo came, but the helper cannot know that it was read.
        self.assertEqual(resets[0]["unconfirmed"], ["before"])
        self.assertEqual(events.lines(), ["open " + first, "close %s resume-expired" % first, "open " + s.id])

    async def check_plain_reconnects(self, path):
        proxy = self.proxy()
        resets = []
        s = self.session(proxy, path, on_reset=resets.append)
        await s.start()
        self.addAsyncCleanup(s.close)
        self.assertEqual((s.resumable, s.id), (False, None))
        s.send("one")
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:one")
        proxy.cut()
        await wait_for(lambda: resets, WAIT, "a plain reconnect")
        self.assertIn("without a session", resets[0]["reason"])
        s.send("two")
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:two")

    async def test_sessions_off_gives_plain_reconnects(self):
        self.server.stop()
        self.server.kill()
        self.server = self.make_server(args=["--resume-grace", "0"]).start()
        await self.check_plain_reconnects("/resume.sh")

    async def test_a_per_connection_endpoint_gives_plain_reconnects(self):
        self.server.stop()
        self.server.kill()
        self.server = self.make_server(args=["--per-connection", "/resume_pc.sh"]).start()
        await self.check_plain_reconnects("/resume_pc.sh")

    async def test_a_refused_first_handshake_is_final(self):
        proxy = self.proxy()
        with self.assertRaises(Ws2httpClosed) as caught:
            await self.session(proxy, "/nope.sh").start()
        self.assertEqual(caught.exception.code, 1006)
        self.assertIn("404", caught.exception.reason)

    async def test_the_server_closing_is_final(self):
        proxy = self.proxy()
        s = self.session(proxy, "/resume.sh")
        await s.start()
        status, *_ = await self.api("DELETE", "/connections/%s?code=4001&reason=go" % s.id)
        self.assertEqual(status, 200)
        with self.assertRaises(Ws2httpClosed) as caught:
            await asyncio.wait_for(s.recv(), WAIT)
        self.assertEqual((caught.exception.code, caught.exception.reason, s.status), (4001, "go", "closed"))


@needs("redis")
class RestartHelperTest(ServerTestCase):
    """contrib/ws2http_session.py when the instance serving it restarts behind a load balancer (the
    proxy, which sends new connections where a test says). In a cluster (--redis) the instance hands
    the session to another one and closes the socket with 1012: the helper resumes there, nothing
    lost, no new session. Without another instance to take it (1001, the session ended) the resume is
    refused (4410) and the helper starts over."""

    def setUp(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.redis.wait)
        self.addCleanup(self.redis.kill)
        for _ in range(1000):   # at most 10 s for redis-server to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.01)
        self.server_args = ["--redis", "redis://127.0.0.1:%d/0" % port]
        super().setUp()
        self.other = self.make_server().start()
        self.addCleanup(self.other.kill)

    async def open_through(self, proxy, events, resets):
        s = Ws2httpSession("ws://127.0.0.1:%d/resume.sh?log=%s&room=r" % (proxy.port, events.tag),
                           min_delay=0.02, max_delay=0.2, on_reset=resets.append)
        await s.start()
        self.addAsyncCleanup(s.close)
        s.send("one")
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:one")
        return s

    async def test_a_restart_in_a_cluster_resumes_on_another_instance(self):
        proxy, events, resets = CutProxy(self.server.port), Events(self), []
        self.addCleanup(proxy.close)
        s = await self.open_through(proxy, events, resets)
        first = s.id
        await wait_for(lambda: self.other.api("GET", "/connections/" + first)[0] == 200, WAIT, "presence on B")
        proxy.target = ("127.0.0.1", self.other.port)   # the load balancer now sends new connections to B
        self.assertEqual(await asyncio.to_thread(self.server.stop), 0)
        s.send("two")
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:two")
        self.assertEqual((s.id, resets), (first, []))
        self.assertGreaterEqual(s.resumes, 1)
        self.assertEqual(events.lines(), ["open " + first], "no close, no open event")
        status, _, _, conn = self.other.api("GET", "/connections/" + first)
        self.assertEqual((status, conn["rooms"], conn["metadata"]), (200, ["r"], {"tag": events.tag}))

    async def test_a_session_that_ended_with_its_instance_starts_over(self):
        self.assertEqual(await asyncio.to_thread(self.other.stop), 0)   # nobody to hand it to
        proxy, events, resets = CutProxy(self.server.port), Events(self), []
        self.addCleanup(proxy.close)
        s = await self.open_through(proxy, events, resets)
        first = s.id
        alone = self.make_server(args=[]).start()
        self.addCleanup(alone.kill)
        self.addAsyncCleanup(asyncio.to_thread, alone.stop)
        proxy.target = ("127.0.0.1", alone.port)
        self.assertEqual(await asyncio.to_thread(self.server.stop), 0)
        s.send("two")
        self.assertEqual(await asyncio.wait_for(s.recv(), WAIT), "echo:two")
        self.assertEqual(len(resets), 1, resets)
        self.assertIn("4410", resets[0]["reason"])
        self.assertNotEqual(s.id, first)
        self.assertEqual(events.lines(), ["open " + first, "close %s shutdown" % first, "open " + s.id])


class ClientDocTest(ServerTestCase):
    """docs/CLIENT.md's Python example, run as printed (its URL pointed at this server)."""

    cgi_bin = "cgi-bin"   # the docs' server: ws2http --cgi-bin cgi-bin

    async def test_the_python_example(self):
        with open(os.path.join(REPO_ROOT, "docs", "CLIENT.md"), encoding="utf-8") as f:
            text = f.read()
        blocks = re.findall(r"```python\n(.*?)```", text, re.S)
        self.assertEqual(len(blocks), 1, "one ```python block in docs/CLIENT.md")
        code = blocks[0].replace("ws://127.0.0.1:8080/", "ws://127.0.0.1:%d/" % self.server.port)
        self.assertIn("Ws2httpSession", code)
        tmp = tempfile.mkdtemp(prefix="ws2http-client-doc-")
        script = os.path.join(tmp, "example.py")
        with open(script, "w") as f:
            f.write(code)
        self.addCleanup(lambda: (os.unlink(script), os.rmdir(tmp)))
        env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "contrib"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, script, cwd=REPO_ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        self.assertEqual(proc.returncode, 0, err.decode())
        expected = re.findall(r"```text\n(.*?)```", text[text.index("```python"):], re.S)[0]
        self.assertEqual(out.decode(), expected)


if __name__ == "__main__":
    unittest.main()
