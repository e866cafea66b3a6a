"""ws2http_session: a WebSocket client that survives network blips, for ws2http's resumable sessions.

The Python twin of /ws2http.js (contrib/ws2http.js): asyncio and the `websockets` package (13 or
later, its asyncio API), nothing else. Copy this file next to your program. Docs: docs/CLIENT.md;
wire contract: docs/PROTOCOL.md, "Resumable sessions". MIT OR Apache-2.0, like ws2http.

    async with Ws2httpSession("ws://127.0.0.1:8080/chat.sh/lobby?nick=bot") as ws:
        ws.send("hello")                  # queued while reconnecting, re-sent if the server missed it
        async for message in ws:          # app messages only, each exactly once, in order
            print(message)

The connection offers the subprotocol ws2http.session.v1; the server's first message names the
session ({"ws2http":"session","id","token"}). When the connection drops without a close frame, the
helper reconnects (backoff with jitter) offering ws2http.resume.TOKEN.RECEIVED; the server answers
{"ws2http":"resumed","token","received":M,"replayed":K}, replays every message after RECEIVED, and the
helper re-sends its own messages after M. A server that does not select the subprotocol gets plain
reconnects, each one a new connection announced through on_reset.
"""

import asyncio
import json
import random

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = ["Ws2httpSession", "Ws2httpClosed", "SESSION_PROTOCOL"]

SESSION_PROTOCOL = "ws2http.session.v1"
PLAIN_PROTOCOL = "ws2http.plain"      # for a ws2http that offers no session on the endpoint to select
RESUME_PREFIX = "ws2http.resume."
EXPIRED, BAD_RESUME = 4410, 4400   # the server refused the resume: start over
DROPPED = (1005, 1006)             # no close frame (1006), or no code in it: the session lives on


class Ws2httpClosed(Exception):
    """The session ended for good: close() was called, the server closed it, or the first connection
    (or max_retries reconnects in a row) failed. recv() raises it once every received message was read."""

    def __init__(self, code, reason=""):
        super().__init__("closed %s%s" % (code, " " + reason if reason else ""))
        self.code, self.reason = code, reason


class _Refused(Exception):
    """The server refused to resume (4410/4400): start a new session now."""


class _Entry:
    __slots__ = ("seq", "data", "size", "written")

    def __init__(self, seq, data):
        self.seq, self.data, self.written = seq, data, False
        self.size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)


class Ws2httpSession:
    """One resumable session. Attributes: id (the server's connection id; None in plain mode), status
    ("connecting", "open", "reconnecting", "closed"), resumable (True, False, None before the first
    connection), resets, resumes. Callbacks (plain functions, called in the event loop): on_open(id),
    on_reset(info) with info = {"id", "reason", "unconfirmed": [messages written to the lost session,
    fate unknown]}, on_status(status)."""

    def __init__(self, url, *, min_delay=0.25, max_delay=10.0, connect_timeout=10.0, max_buffer=1000,
                 max_buffer_bytes=1 << 20, max_retries=None, reconnect_codes=(1001, 1012, 1013),
                 ping_interval=20.0, ping_timeout=20.0, max_queue=1000, on_open=None, on_reset=None,
                 on_status=None, **connect_kwargs):
        self.url = url
        self.min_delay, self.max_delay, self.connect_timeout = min_delay, max_delay, connect_timeout
        self.max_buffer, self.max_buffer_bytes, self.max_retries = max_buffer, max_buffer_bytes, max_retries
        self.reconnect_codes = tuple(reconnect_codes)
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.on_open, self.on_reset, self.on_status = on_open, on_reset, on_status
        self.connect_kwargs = connect_kwargs
        self.id = None
        self.status = "connecting"
        self.resumable = None
        self.resets = self.resumes = 0
        self._token = None
        self._received = 0            # app messages had on this session (the server numbers them too)
        self._outbox = []             # unsent, and sent but maybe not received; seq ascending
        self._outbox_bytes = 0
        self._seq = 0
        self._opened = False
        self._closed = False
        self._reset_reason = None
        self._ws = None
        self._queue = asyncio.Queue(max_queue)
        self._wake = asyncio.Event()  # something to write
        self._final = None            # future: (code, reason) once closed for good
        self._first = None            # future: the first session is up
        self._task = None

    # -- public API --------------------------------------------------------------------------

    async def start(self):
        """Connects; returns once the first session is up, raises Ws2httpClosed if it cannot be."""
        loop = asyncio.get_running_loop()
        self._final, self._first = loop.create_future(), loop.create_future()
        self._task = asyncio.create_task(self._run())
        await asyncio.wait([self._first, self._final], return_when=asyncio.FIRST_COMPLETED)
        if not self._first.done():
            raise Ws2httpClosed(*self._final.result())
        return self

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.recv()
        except Ws2httpClosed:
            raise StopAsyncIteration from None

    async def recv(self):
        """The next app message (str or bytes); Ws2httpClosed once the session is over and read."""
        if self._final is None:
            raise RuntimeError("Ws2httpSession: call start() (or use `async with`) first")
        while True:
            if not self._queue.empty():
                return self._queue.get_nowait()
            if self._final.done():
                raise Ws2httpClosed(*self._final.result())
            get = asyncio.ensure_future(self._queue.get())
            await asyncio.wait([get, self._final], return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                return get.result()
            get.cancel()

    def send(self, data):
        """Sends now or queues until the (re)connection is up. False (message dropped) when the queue
        is full of messages never written (max_buffer / max_buffer_bytes), or after close()."""
        if self._closed:
            return False
        entry = _Entry(self._seq + 1, data)
        while self._outbox and (len(self._outbox) >= self.max_buffer
                                or self._outbox_bytes + entry.size > self.max_buffer_bytes):
            if not self._outbox[0].written:
                return False
            self._shift()
        self._seq += 1
        self._outbox.append(entry)
        self._outbox_bytes += entry.size
        self._wake.set()
        return True

    async def close(self, code=1000, reason=""):
        """Ends the session for good (the server runs its close event now)."""
        if self._closed or self._final is None:
            self._closed = True
            return
        self._closed = True
        ws = self._ws
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if ws is not None and ws.transport is not None and not ws.transport.is_closing():
            try:
                await asyncio.wait_for(ws.close(code, reason), self.connect_timeout)
            except (OSError, asyncio.TimeoutError, ConnectionClosed):
                ws.transport.abort()
        self._finish(code, reason)

    @property
    def buffered_count(self):
        """Messages not yet known to be received by the server (written or queued)."""
        return len(self._outbox)

    # -- the connection loop -----------------------------------------------------------------

    async def _run(self):
        attempt = 0
        while not self._closed:
            try:
                ws = await self._open_socket()
            except _Refused as e:
                self._new_session("the server refused the resume: %s" % e)
                continue
            except (OSError, asyncio.TimeoutError, InvalidHandshake, ConnectionClosed, ValueError) as e:
                if not self._opened:
                    return self._finish(_code_of(e), str(e))
                if self.max_retries is not None and attempt >= self.max_retries:
                    return self._finish(_code_of(e), str(e))
                await self._backoff(attempt)
                attempt += 1
                continue
            attempt = 0
            code, reason = await self._serve(ws)
            if self._closed:
                return
            if code in DROPPED:
                self._set_status("reconnecting")
            elif code in self.reconnect_codes and self._token is not None:
                # Resume first (1012: the instance restarts and handed the session to another one of its
                # cluster); a refusal (4410: the session ended with the server) starts a new one.
                self._set_status("reconnecting")
            elif code in self.reconnect_codes:
                self._new_session("the server closed the session: %s %s" % (code, reason))
            else:
                return self._finish(code, reason)
            await self._backoff(attempt)
            attempt += 1

    async def _open_socket(self):
        protocols = [SESSION_PROTOCOL, PLAIN_PROTOCOL]
        if self._token is not None:
            protocols.insert(1, "%s%s.%d" % (RESUME_PREFIX, self._token, self._received))
        ws = await connect(self.url, subprotocols=protocols, open_timeout=self.connect_timeout,
                           ping_interval=None, **self.connect_kwargs)
        if ws.subprotocol != SESSION_PROTOCOL:
            self._ws = ws
            self._plain_open()
            return ws
        try:
            hello = await asyncio.wait_for(ws.recv(), self.connect_timeout)
        except ConnectionClosed as e:
            if _code_of(e) in (EXPIRED, BAD_RESUME) and self._token is not None:
                raise _Refused("%s %s" % (_code_of(e), e.rcvd.reason)) from None
            raise
        except BaseException:
            ws.transport.abort()
            raise
        try:
            self._hello(hello)
        except _Refused:
            # Resumed, but this side no longer holds what the server missed: end that session cleanly.
            await ws.close(1000, "client lost messages to re-send")
            raise
        except BaseException:
            ws.transport.abort()
            raise
        self._ws = ws
        return ws

    def _hello(self, raw):
        try:
            m = json.loads(raw)
        except (ValueError, TypeError):
            m = None
        kind = m.get("ws2http") if isinstance(m, dict) else None
        if kind in ("resumed", "session") and not all(isinstance(m.get(k), str) for k in ("token", "id")):
            # A ValueError, as for any bad first message: _run retries or ends, recv() never hangs.
            raise ValueError("the server's session message lacks its token or id: %r" % (raw,))
        if kind == "resumed" and self._token is not None:
            self._token, self.id = str(m["token"]), str(m["id"])
            self.resumes += 1
            if not self._rewind(m.get("received")):
                raise _Refused("the server missed messages the client no longer keeps")
            self._up()
        elif kind == "session":
            was = self._opened
            self._token, self.id, self.resumable = str(m["token"]), str(m["id"]), True
            self._start_session(self._reset_reason or "the session could not be resumed" if was else None)
            self._reset_reason = None
        else:
            raise ValueError("the server's first message is not a ws2http session message: %r" % (raw,))

    def _plain_open(self):
        self.resumable, self._token, self.id = False, None, None
        self._start_session("reconnected without a session (the server does not offer them)"
                            if self._opened else None)

    def _start_session(self, why):
        unconfirmed = [e.data for e in self._outbox if e.written]
        self._outbox = [e for e in self._outbox if not e.written]
        self._outbox_bytes = sum(e.size for e in self._outbox)
        for i, entry in enumerate(self._outbox, 1):
            entry.seq = i
        self._seq = len(self._outbox)
        self._received = 0
        first = not self._opened
        self._opened = True
        if not first:
            self.resets += 1
            _call(self.on_reset, {"id": self.id, "reason": why, "unconfirmed": unconfirmed})
        self._up()
        if first:
            self._first.set_result(None)
            _call(self.on_open, self.id)

    def _up(self):
        self._set_status("open")
        self._wake.set()

    def _rewind(self, m):
        if not isinstance(m, int) or isinstance(m, bool) or m < 0 or m > self._seq:
            return False
        while self._outbox and self._outbox[0].seq <= m:
            self._shift()
        following = self._outbox[0].seq if self._outbox else self._seq + 1
        for entry in self._outbox:
            entry.written = False
        return following == m + 1

    def _new_session(self, why):
        self._token, self._reset_reason = None, why
        self._set_status("reconnecting")

    async def _serve(self, ws):
        """Reads and writes until the socket ends; (close code, reason) of its end."""
        writer = asyncio.create_task(self._writer(ws))
        keepalive = asyncio.create_task(self._keepalive(ws))
        try:
            while True:
                message = await ws.recv()
                await self._queue.put(message)
                self._received += 1
        except ConnectionClosed as e:
            return _code_of(e), e.rcvd.reason if e.rcvd else ""
        finally:
            self._ws = None
            for task in (writer, keepalive):
                task.cancel()
            await asyncio.gather(writer, keepalive, return_exceptions=True)
            if ws.transport is not None and not ws.transport.is_closing() and self._token is not None \
                    and not self._closed:
                ws.transport.abort()   # never a close frame on a live session

    async def _writer(self, ws):
        while True:
            for entry in [e for e in self._outbox if not e.written]:
                await ws.send(entry.data)
                entry.written = True
                if self._token is None and entry in self._outbox:   # plain mode: nothing to re-send
                    self._outbox.remove(entry)
                    self._outbox_bytes -= entry.size
            self._wake.clear()
            if not any(not e.written for e in self._outbox):
                await self._wake.wait()

    async def _keepalive(self, ws):
        """A dead network shows as a ping without a pong: drop the socket (no close frame) and resume."""
        if not self.ping_interval:
            return
        while True:
            await asyncio.sleep(self.ping_interval)
            pong = await ws.ping()
            try:
                await asyncio.wait_for(pong, self.ping_timeout)
            except asyncio.TimeoutError:
                ws.transport.abort()
                return

    async def _backoff(self, attempt):
        base = min(self.max_delay, self.min_delay * 2 ** attempt)
        await asyncio.sleep(base / 2 + random.random() * base / 2)

    def _shift(self):
        self._outbox_bytes -= self._outbox.pop(0).size

    def _set_status(self, status):
        if status != self.status:
            self.status = status
            _call(self.on_status, status)

    def _finish(self, code, reason):
        self._closed = True
        self._set_status("closed")
        if self._final is not None and not self._final.done():
            self._final.set_result((code, reason))


def _code_of(e):
    if isinstance(e, ConnectionClosed):
        return e.rcvd.code if e.rcvd is not None else 1006
    return 1006


def _call(callback, *args):
    if callback is not None:
        callback(*args)
