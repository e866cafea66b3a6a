"""A loopback TCP proxy that a test cuts: the network blip of the resumable-session tests.

It forwards 127.0.0.1:PORT to a target port, byte for byte (HTTP and WebSocket alike), in a thread
of its own with its own event loop, so both asyncio tests and the synchronous browser tests use it
the same way:

    with CutProxy(server.port) as proxy:
        url = "ws://127.0.0.1:%d/chat.sh" % proxy.port
        proxy.cut()           # every open connection dies at once, both sides, without a close frame
        proxy.offline()       # new connections are reset as soon as they arrive ...
        proxy.online()        # ... until this
        proxy.stall()         # open connections stop forwarding (a dead network nobody noticed)
        proxy.hold()          # new connections are accepted but wait (proxy.held counts them) ...
        proxy.release()       # ... until this
        proxy.cut_next_after_handshake()   # the next connection dies right after the server's 101:
                                           # the client gets the 101, and nothing after it

Why a proxy: Chromium's DevTools "offline" (Network.emulateNetworkConditions) does not touch an
open WebSocket, nor new ones; a cut of the TCP stream is what a lost network looks like to both ends.
"""

import asyncio
import socket
import threading


class CutProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.pairs = set()       # (client transport writer, server writer)
        self.is_offline = False
        self.connections = 0     # accepted so far (refused ones included)
        self.refused = 0
        self.cut_after_handshake = 0   # connections still to cut right after the server's response head
        self.held = 0            # new connections waiting for release()
        self._gate = None        # set: new connections go through (hold() clears it)
        self._server = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._listen())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _listen(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.port = sock.getsockname()[1]

    async def _accept(self, reader, writer):
        self.connections += 1
        if self.is_offline:
            self.refused += 1
            _abort(writer)
            return
        if not self._gate.is_set():
            self.held += 1
            await self._gate.wait()
            self.held -= 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        pair = (writer, up_writer)
        self.pairs.add(pair)
        head_only = self.cut_after_handshake > 0
        if head_only:
            self.cut_after_handshake -= 1
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer, head_only, pair))
        except asyncio.CancelledError:
            pass   # close()
        finally:
            self.pairs.discard(pair)
            for w in pair:
                _close(w)

    # -- what a test does ------------------------------------------------------------------

    def cut(self):
        """Kills every open connection now: a TCP reset to both sides, no WebSocket close frame."""
        async def cut():
            for pair in list(self.pairs):
                for w in pair:
                    _abort(w)
            self.pairs.clear()
        self._call(cut())

    def offline(self):
        """Cuts every open connection and resets new ones until online()."""
        self.is_offline = True
        self.cut()

    def online(self):
        self.is_offline = False

    def cut_next_after_handshake(self):
        """The next connection forwards the server's response head (a WebSocket 101) and then dies
        at once, both sides, without what followed it."""
        self.cut_after_handshake += 1

    def hold(self):
        """New connections are accepted but not forwarded (nor refused) until release()."""
        async def hold():
            self._gate.clear()
        self._call(hold())

    def release(self):
        async def release():
            self._gate.set()
        self._call(release())

    def stall(self):
        """Open connections stop forwarding in both directions but stay open."""
        async def stall():
            for pair in list(self.pairs):
                for w in pair:
                    w.transport.pause_reading()
                    w.stalled = True
        self._call(stall())

    @property
    def open_connections(self):
        return len(self.pairs)

    def close(self):
        async def close():
            if self._server is not None:
                self._server.close()
            for pair in list(self.pairs):
                for w in pair:
                    _abort(w)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self._call(close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


async def _pump(reader, writer, head_only=False, pair=()):
    """Copies reader to writer. head_only: up to the end of the response head, then aborts pair."""
    try:
        if head_only:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            await writer.drain()
            await asyncio.sleep(0.05)   # the head reaches the client before the reset
            for w in pair:
                _abort(w)
            return
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if getattr(writer, "stalled", False):
                continue   # a dead network: what is read goes nowhere
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.CancelledError, asyncio.IncompleteReadError):
        pass
    finally:
        _close(writer)   # what the other side sent still arrives, then the end of the stream


def _close(writer):
    transport = writer.transport
    if transport is not None and not transport.is_closing():
        transport.close()


def _abort(writer):
    transport = writer.transport
    if transport is not None and not transport.is_closing():
        transport.abort()
