"""Resumable sessions (issue 17; docs/PROTOCOL.md "Resumable sessions").

Real binary, real `websockets` clients. A small loopback proxy (Cutter)
stands between a client and the server and cuts both TCP streams without a
close frame, as a network switch or a reloaded load balancer does. The
fixture script tests/python/cgi-bin/session.sh logs every event that runs to
/tmp/ws2http-pytest/<id>.events, so each test sees which events ran.
"""

import asyncio
import json
import os
import unittest

from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import ServerTestCase, data_path, wait_for, read_file, TIMEOUT

SESSION = "ws2http.session.v1"
PLAIN = "ws2http.plain"


class Cutter:
    """A loopback TCP proxy to the server; cut() ends both streams at once,
    without a close frame (the client's side is reset)."""

    def __init__(self, port):
        self.port = port
        self.pairs = []
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        self.pairs.append((writer, up_w))

        async def pump(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    def cut(self):
        for down, up in self.pairs:
            for w in (down, up):
                w.transport.abort()
        self.pairs = []

    async def stop(self):
        self.cut()
        self.server.close()


def events(cid):
    text = read_file(data_path(cid + ".events")) or ""
    return [line for line in text.split("\n") if line]


class ResumeCase(ServerTestCase):
    server_args = ["--resume-grace", "30"]

    async def open_session(self, path="/session.sh", port=None, extra_protocols=(), **kw):
        """A new session: (ws, hello) after the session message."""
        url_port = port or self.server.port
        from websockets.asyncio.client import connect
        ws = await connect("ws://127.0.0.1:%d%s" % (url_port, path), subprotocols=[SESSION, *extra_protocols],
                           proxy=None, ping_interval=None, open_timeout=TIMEOUT * 2, **kw)
        self._sockets.append(ws)
        self.assertEqual(ws.subprotocol, SESSION)
        hello = json.loads(await self.recv_text(ws))
        self.assertEqual(set(hello), {"ws2http", "id", "token"})
        self.assertEqual(hello["ws2http"], "session")
        self.track(data_path(hello["id"] + ".events"))
        return ws, hello

    async def resume(self, token, received, path="/session.sh", extra=None, **kw):
        """A resume handshake: the socket (the server's answer is its first frame)."""
        protocols = [SESSION, "ws2http.resume.%s.%d" % (token, received)] + (extra or [])
        return await self.connect(path, subprotocols=protocols, **kw)

    async def refused_with(self, ws):
        """The close code a refused resume's socket gets (after its 101)."""
        self.assertEqual(ws.subprotocol, SESSION)
        try:
            msg = await asyncio.wait_for(ws.recv(), TIMEOUT)
            self.fail("expected a close frame, got %r" % (msg,))
        except ConnectionClosed as e:
            return e.rcvd.code, e.rcvd.reason

    async def detached(self, n=1):
        async def gauge():
            _, _, raw, _ = await self.api("GET", "/metrics")
            return ("\nws2http_sessions_detached %d\n" % n) in raw.decode()
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not await gauge():
            self.assertLess(asyncio.get_running_loop().time(), deadline, "sessions_detached never reached %d" % n)
            await asyncio.sleep(0.02)

    async def close_lines(self, cid):
        return await wait_for(lambda: [e for e in events(cid) if e.startswith("close")], TIMEOUT,
                              "close event of %s" % cid)


class ResumeTest(ResumeCase):
    async def test_a_cut_mid_traffic_resumes_with_every_message_once_in_order(self):
        cutter = Cutter(self.server.port)
        port = await cutter.start()
        ws, hello = await self.open_session(port=port)
        cid = hello["id"]
        await self.api_ok("POST", "/send/" + cid, "sync")
        self.assertEqual(await self.recv_text(ws), "sync")
        got = ["sync"]
        sent = ["sync"]
        pushing = asyncio.Event()

        async def push():
            for i in range(200):
                text = "m%d" % i
                if i % 2:
                    await self.api_ok("POST", "/rooms/r", text)
                else:
                    await self.api_ok("POST", "/send/" + cid, text)
                sent.append(text)
                if i == 60:
                    pushing.set()

        pusher = asyncio.create_task(push())
        await pushing.wait()
        try:
            while True:
                got.append(await asyncio.wait_for(ws.recv(), 0.2))
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        # Still flowing: cut now, without a close frame.
        cutter.cut()
        await self.detached()
        ws2 = await self.resume(hello["token"], len(got))
        resumed = json.loads(await self.recv_text(ws2))
        self.assertEqual(resumed["ws2http"], "resumed")
        self.assertEqual(resumed["id"], cid)
        self.assertNotEqual(resumed["token"], hello["token"], "the token rotates")
        await pusher
        while len(got) < len(sent):
            got.append(await self.recv_text(ws2))
        self.assertEqual(got, sent, "every message exactly once, in order")
        await self.sentinel(ws2, cid)
        view = await self.api_ok("GET", "/connections/" + cid)
        self.assertEqual((view["rooms"], view["metadata"]), (["r"], {"name": "bob"}))
        self.assertEqual(events(cid), ["open"], "no close, no open ran (nor resume: not in --events)")
        await ws2.send("after")
        self.assertEqual(await self.recv_text(ws2), "echo after")
        await ws2.close()
        self.assertEqual(await self.close_lines(cid), ["close 1000 client r bob"])
        await cutter.stop()

    async def test_the_client_learns_how_many_of_its_messages_were_read(self):
        ws, hello = await self.open_session()
        for m in ["a", "b"]:
            await ws.send(m)
            self.assertEqual(await self.recv_text(ws), "echo " + m)
        ws.transport.abort()
        await self.detached()
        ws2 = await self.resume(hello["token"], 2)
        resumed = json.loads(await self.recv_text(ws2))
        self.assertEqual((resumed["received"], resumed["replayed"]), (2, 0))
        await self.sentinel(ws2, hello["id"])

    async def test_replayed_counts_the_window_and_what_was_queued_while_away(self):
        ws, hello = await self.open_session()
        cid = hello["id"]
        await self.api_ok("POST", "/send/" + cid, "w")
        self.assertEqual(await self.recv_text(ws), "w")   # written, not acknowledged: in the window
        ws.transport.abort()
        await self.detached()
        for m in ["q1", "q2"]:
            self.assertEqual(await self.api_ok("POST", "/send/" + cid, m), {"delivered": 1})
        ws2 = await self.resume(hello["token"], 0)
        resumed = json.loads(await self.recv_text(ws2))
        self.assertEqual((resumed["ws2http"], resumed["replayed"]), ("resumed", 3))
        for m in ["w", "q1", "q2"]:
            self.assertEqual(await self.recv_text(ws2), m)
        await self.sentinel(ws2, cid)

    async def test_a_resume_takes_over_a_session_whose_socket_is_still_attached(self):
        ws, hello = await self.open_session()
        cid = hello["id"]
        await self.api_ok("POST", "/send/" + cid, "one")
        self.assertEqual(await self.recv_text(ws), "one")
        # The old socket is still open (the server has not noticed anything).
        await self.api_ok("POST", "/send/" + cid, "two")
        ws2 = await self.resume(hello["token"], 1)
        resumed = json.loads(await self.recv_text(ws2))
        self.assertEqual((resumed["ws2http"], resumed["replayed"]), ("resumed", 1))
        self.assertEqual(await self.recv_text(ws2), "two")
        await self.sentinel(ws2, cid)
        # The old socket was dropped without a close frame.
        with self.assertRaises(ConnectionClosed) as caught:
            while True:
                m = await asyncio.wait_for(ws.recv(), TIMEOUT)
                self.assertEqual(m, "two", "the old socket may only have got what was in flight")
        self.assertIsNone(caught.exception.rcvd, "no close frame on the old socket")
        self.assertEqual(events(cid), ["open"])
        resumed_twice = await self.resume(resumed["token"], 2)
        self.assertEqual(json.loads(await self.recv_text(resumed_twice))["ws2http"], "resumed")
        self.assertEqual(events(cid), ["open"])

    async def test_a_resume_whose_answer_was_lost_works_again_with_the_same_token(self):
        ws, hello = await self.open_session()
        cid = hello["id"]
        await self.api_ok("POST", "/send/" + cid, "a")
        self.assertEqual(await self.recv_text(ws), "a")
        ws.transport.abort()
        await self.detached()
        await self.api_ok("POST", "/send/" + cid, "b")
        # The server takes this resume and rotates the token; the network dies
        # before the client reads "resumed" (the test peeks at it, then drops it).
        lost = await self.resume(hello["token"], 1)
        lost_token = json.loads(await self.recv_text(lost))["token"]
        lost.transport.abort()
        again = await self.resume(hello["token"], 1)
        resumed = json.loads(await self.recv_text(again))
        self.assertEqual((resumed["ws2http"], resumed["id"], resumed["replayed"]), ("resumed", cid, 1))
        self.assertEqual(await self.recv_text(again), "b", "replayed once more")
        # The token of the lost answer never reached the client: dead.
        stale = await self.resume(lost_token, 2)
        self.assertEqual(await self.refused_with(stale), (4410, "session expired"))
        # The client's first frame on the new socket shows it has the new token:
        # the one it resumed with dies then.
        await again.send("x")
        self.assertEqual(await self.recv_text(again), "echo x")
        old = await self.resume(hello["token"], 2)
        self.assertEqual(await self.refused_with(old), (4410, "session expired"))
        await self.sentinel(again, cid)
        self.assertEqual(events(cid), ["open", "message x"])

    async def test_forged_rotated_and_malformed_resumes_are_refused_after_the_101(self):
        ws, hello = await self.open_session()
        cid = hello["id"]
        forged = hello["token"][:-1] + ("A" if hello["token"][-1] != "A" else "B")
        self.assertEqual(await self.refused_with(await self.resume(forged, 0)), (4410, "session expired"))
        # Well formed (a connection id, then key and secret) but issued by nobody.
        unknown = "0123456789abcdef" * 2 + "A" * 32
        self.assertEqual(await self.refused_with(await self.resume(unknown, 0)), (4410, "session expired"))
        # Not a token at all (the format is the connection id + 32 base64url characters).
        self.assertEqual(await self.refused_with(await self.resume("x" * 32, 0)), (4400, "bad resume request"))
        too_many = await self.resume(hello["token"], 5)
        self.assertEqual(await self.refused_with(too_many), (4400, "bad resume request"))
        for bad in ["ws2http.resume.%s" % hello["token"], "ws2http.resume.%s.-1" % hello["token"],
                    "ws2http.resume.short.1"]:
            ws_bad = await self.connect("/session.sh", subprotocols=[SESSION, bad])
            self.assertEqual(await self.refused_with(ws_bad), (4400, "bad resume request"), bad)
        other = await self.resume(hello["token"], 0, path="/lines.sh")
        self.assertEqual(await self.refused_with(other), (4400, "bad resume request"))
        # 4400 left the session as it was: it resumes with its token.
        ws2 = await self.resume(hello["token"], 0)
        resumed = json.loads(await self.recv_text(ws2))
        self.assertEqual(resumed["ws2http"], "resumed")
        # A resume with the new token shows the client has it: the old token is dead.
        ws3 = await self.resume(resumed["token"], 0)
        self.assertEqual(json.loads(await self.recv_text(ws3))["ws2http"], "resumed")
        old = await self.resume(hello["token"], 0)
        self.assertEqual(await self.refused_with(old), (4410, "session expired"))
        await self.sentinel(ws3, cid)
        self.assertEqual(events(cid), ["open"])
        _, _, raw, _ = await self.api("GET", "/metrics")
        metrics = raw.decode()
        self.assertIn('ws2http_resumes_total{result="ok"} 2\n', metrics)
        self.assertIn('ws2http_resumes_total{result="expired"} 3\n', metrics)
        self.assertIn('ws2http_resumes_total{result="bad"} 6\n', metrics)
        self.assertNotIn(hello["token"], self.server.log_text(), "tokens stay out of the log")

    async def test_pongs_trim_the_window_and_a_resume_from_before_it_is_a_gap(self):
        ws, hello = await self.open_session()
        cid = hello["id"]
        for i in range(40):
            await self.api_ok("POST", "/send/" + cid, "m%d" % i)
        for i in range(40):
            self.assertEqual(await self.recv_text(ws), "m%d" % i)
        # The client answered the ping after the 32nd message before it sent
        # this (one TCP stream): once it is echoed, the server has the pong.
        await ws.send("x")
        self.assertEqual(await self.recv_text(ws), "echo x")
        ws.transport.abort()
        await self.detached()
        gap = await self.resume(hello["token"], 0)
        self.assertEqual(await self.refused_with(gap), (4410, "session expired"))
        self.assertEqual(await self.close_lines(cid), ["close 1006 resume-gap r bob"])

    async def test_a_clean_close_is_final(self):
        ws, hello = await self.open_session()
        await ws.close()
        self.assertEqual(await self.close_lines(hello["id"]), ["close 1000 client r bob"])
        refused = await self.resume(hello["token"], 0)
        self.assertEqual(await self.refused_with(refused), (4410, "session expired"))

    async def test_a_plain_client_sees_nothing_new(self):
        ws = await self.connect("/session.sh")
        self.assertIsNone(ws.subprotocol)
        await ws.send("hi")
        self.assertEqual(await self.recv_text(ws), "echo hi", "no session message")
        view = await self.api_ok("GET", "/connections")
        ids = [c["id"] for c in view]
        self.assertEqual(len(ids), 1)
        self.track(data_path(ids[0] + ".events"))
        ws.transport.abort()
        self.assertEqual(await self.close_lines(ids[0]), ["close 1006 dropped r bob"])

    async def test_the_handshake_checks_apply_to_a_resume(self):
        ws, hello = await self.open_session()
        ws.transport.abort()
        await self.detached()
        with self.assertRaises(InvalidStatus) as caught:
            await self.resume(hello["token"], 0, origin="http://evil.example")
        self.assertEqual(caught.exception.response.status_code, 403)
        ws2 = await self.resume(hello["token"], 0)
        self.assertEqual(json.loads(await self.recv_text(ws2))["ws2http"], "resumed")


class ResumeEventTest(ResumeCase):
    server_args = ["--events", "open,message,close,resume"]

    async def test_the_resume_event_runs_when_listed(self):
        ws, hello = await self.open_session()
        await ws.send("before")
        self.assertEqual(await self.recv_text(ws), "echo before")
        ws.transport.abort()
        await self.detached()
        ws2 = await self.resume(hello["token"], 1)
        resumed = json.loads(await self.recv_text(ws2))
        await ws2.send("after")
        self.assertEqual(await self.recv_text(ws2), "echo after")
        await ws2.close()
        await self.close_lines(hello["id"])
        self.assertEqual(events(hello["id"]), ["open", "message before", "resume 1 127.0.0.1", "message after",
                                               "close 1000 client r bob"])


class ResumeExpiryTest(ResumeCase):
    server_args = ["--resume-grace", "0.5", "--resume-buffer", "3"]

    async def test_grace_expiry_runs_the_close_event_once(self):
        ws, hello = await self.open_session()
        ws.transport.abort()
        lines = await self.close_lines(hello["id"])
        self.assertEqual(lines, ["close 1006 resume-expired r bob"])
        refused = await self.resume(hello["token"], 0)
        self.assertEqual(await self.refused_with(refused), (4410, "session expired"))
        self.assertEqual([e for e in events(hello["id"]) if e.startswith("close")], lines, "once")

    async def test_overflow_while_detached_ends_the_session(self):
        ws, hello = await self.open_session()
        cid = hello["id"]
        ws.transport.abort()
        await self.detached()
        for i in range(3):
            self.assertEqual(await self.api_ok("POST", "/send/" + cid, "m%d" % i), {"delivered": 1})
        self.assertEqual(await self.api_ok("POST", "/send/" + cid, "m3"), {"delivered": 0})
        self.assertEqual(await self.close_lines(cid), ["close 1006 resume-overflow r bob"])
        refused = await self.resume(hello["token"], 0)
        self.assertEqual(await self.refused_with(refused), (4410, "session expired"))
        self.assertIn("over --resume-buffer", self.server.log_text())


class ResumeTotalTest(ResumeCase):
    """What sessions keep counts against --max-outgoing-bytes-total, all together."""
    server_args = ["--resume-grace", "30", "--max-outgoing-bytes", "1000", "--max-outgoing-bytes-total", "2000"]

    async def test_a_detached_session_that_would_go_over_the_total_ends(self):
        (a, hello_a), (b, hello_b) = await self.open_session(), await self.open_session()
        a.transport.abort()
        b.transport.abort()
        await self.detached(2)
        body = lambda tag: tag + "x" * 599
        for cid, tag in [(hello_a["id"], "a1"), (hello_a["id"], "a2"), (hello_b["id"], "b1")]:
            self.assertEqual(await self.api_ok("POST", "/send/" + cid, body(tag)), {"delivered": 1}, tag)
        # 1800 bytes kept, each session far within --resume-buffer-bytes: 600 more go over 2000.
        self.assertEqual(await self.api_ok("POST", "/send/" + hello_b["id"], body("b2")), {"delivered": 0})
        self.assertEqual(await self.close_lines(hello_b["id"]), ["close 1006 resume-overflow r bob"])
        self.assertEqual(self.server.log_text().count("over --max-outgoing-bytes-total 2000; ending it"), 1)
        ws = await self.resume(hello_a["token"], 0)
        self.assertEqual(json.loads(await self.recv_text(ws))["replayed"], 2)
        for tag in ["a1", "a2"]:
            self.assertEqual(await self.recv_text(ws), body(tag))
        await self.sentinel(ws, hello_a["id"])

    async def test_an_attached_window_over_the_total_drops_its_oldest(self):
        ws, hello = await self.open_session()
        cid = hello["id"]
        body = lambda i: "m%d" % i + "x" * 598
        for i in range(4):
            await self.api_ok("POST", "/send/" + cid, body(i))
            self.assertEqual(await self.recv_text(ws), body(i))
        # Received, not acknowledged: 2400 bytes would be kept, over 2000, so the oldest went.
        ws.transport.abort()
        await self.detached()
        gap = await self.resume(hello["token"], 0)
        self.assertEqual(await self.refused_with(gap), (4410, "session expired"))
        self.assertEqual(await self.close_lines(cid), ["close 1006 resume-gap r bob"])


class ResumeLimitsTest(ResumeCase):
    server_args = ["--max-connections", "1"]

    async def test_a_resume_needs_a_connection_slot_like_any_handshake(self):
        ws, hello = await self.open_session()
        ws.transport.abort()
        await self.detached()
        # The detached session keeps its slot: the resume's handshake finds none free.
        with self.assertRaises(InvalidStatus) as caught:
            await self.resume(hello["token"], 0)
        self.assertEqual(caught.exception.response.status_code, 503)


class ResumeOffTest(ResumeCase):
    server_args = ["--resume-grace", "0"]

    async def test_grace_zero_makes_a_plain_connection(self):
        ws = await self.connect("/session.sh", subprotocols=[SESSION])
        self.assertIsNone(ws.subprotocol)
        await ws.send("hi")
        self.assertEqual(await self.recv_text(ws), "echo hi")

    async def test_a_client_that_offers_plain_gets_it_selected(self):
        # Chromium fails a handshake that offered subprotocols when the 101 selects none.
        ws = await self.connect("/session.sh", subprotocols=[SESSION, PLAIN])
        self.assertEqual(ws.subprotocol, PLAIN)
        await ws.send("hi")
        self.assertEqual(await self.recv_text(ws), "echo hi", "no session message")
        # A resume (sessions are off here): a plain connection too, which the client sees as a reset.
        ws = await self.connect("/session.sh", subprotocols=[SESSION, "ws2http.resume.%s.0" % ("A" * 32), PLAIN])
        self.assertEqual(ws.subprotocol, PLAIN)


class PlainOfferTest(ResumeCase):
    server_args = ["--resume-grace", "30", "--per-connection", "/lines.sh"]

    async def test_sessions_on_select_the_session_and_a_per_connection_endpoint_plain(self):
        ws, _ = await self.open_session(extra_protocols=[PLAIN])
        ws = await self.connect("/lines.sh", subprotocols=[SESSION, PLAIN])
        self.assertEqual(ws.subprotocol, PLAIN)
        ws = await self.connect("/lines.sh", subprotocols=["chat"])
        self.assertIsNone(ws.subprotocol, "not offered: not selected")


if __name__ == "__main__":
    unittest.main()
