"""Measures what ws2http's FastCGI pool costs php-fpm and what it saves
(docs/RELIABILITY.md, "FastCGI pool"). Not a test: it prints figures.

    cargo build
    python3 tests/python/measure_fpm_pool.py target/debug/ws2http [OTHER_BINARY ...]

php-fpm runs pm = static, pm.max_children = 2 (tests/python/nginx/php-fpm.conf),
nginx serves PHP from the same pool (tests/python/nginx/fixtures.conf). For each
binary:

1. pinning: two --fastcgi routes to that pool; a burst of two requests at once
   on the first route (tests/python/fpm/slow.php, 300 ms each), then nothing.
   Then: how long the other route's open event takes, how long nginx takes to
   answer a PHP page, and how long until ws2http holds no connection to php-fpm
   (each capped at 8 s: "> 8 s" means it was still held).
2. throughput: 2,000 messages, one at a time over one WebSocket, through
   tests/python/fpm/echo.php; then 4 clients at once, 500 messages each.

And once, without ws2http: a bare FastCGI client against the same php-fpm,
keep-alive versus a new connection per request (what reusing saves at all).
"""

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import websockets  # noqa: E402

from harness import REPO_ROOT  # noqa: E402
from test_backends import count_sockets, free_port, make_workdir, nginx, php_fpm  # noqa: E402

CAP = 8.0


def start_ws2http(binary, args):
    proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
                             "--cgi-bin", os.path.join(REPO_ROOT, "tests", "python")] + args,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    proc.stdout.readline()
    return proc, port


def stop(proc):
    proc.kill()   # no graceful shutdown: its close events could wait on pinned workers
    proc.wait()


async def timed(coro):
    started = time.monotonic()
    try:
        await asyncio.wait_for(coro, CAP)
        return "%.0f ms" % ((time.monotonic() - started) * 1000)
    except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException) as e:
        return "> %.0f s (%s)" % (CAP, type(e).__name__)


async def pinning(binary, fpm, nginx_port):
    addr = fpm.address
    proc, port = start_ws2http(binary, ["--fastcgi", "/fpm/slow.php=" + addr,
                                        "--fastcgi", "/fpm/env.php=" + addr, "--timeout", "20"])
    try:
        url = "ws://127.0.0.1:%d" % port
        a = await websockets.connect(url + "/fpm/slow.php")
        b = await websockets.connect(url + "/fpm/slow.php")
        await asyncio.gather(a.send("one"), b.send("two"))
        await asyncio.gather(a.recv(), b.recv())

        async def other_route():
            ws = await websockets.connect(url + "/fpm/env.php", open_timeout=CAP + 1)
            await ws.recv()
            await ws.close()

        def page():
            urllib.request.urlopen("http://127.0.0.1:%d/fpm/env.php" % nginx_port, timeout=CAP + 1).read()

        route = await timed(other_route())
        nginx_page = await timed(asyncio.to_thread(page))

        async def released():
            while count_sockets(fpm.port)[0]:
                await asyncio.sleep(0.01)
        started = time.monotonic()
        await a.close()
        await b.close()
        held = await timed(released())
        return route, nginx_page, held, time.monotonic() - started
    finally:
        stop(proc)


async def throughput(binary, fpm):
    proc, port = start_ws2http(binary, ["--fastcgi", "/fpm/echo.php=" + fpm.address])
    try:
        url = "ws://127.0.0.1:%d/fpm/echo.php" % port

        async def client(n):
            ws = await websockets.connect(url)
            for i in range(n):
                await ws.send("m%d" % i)
                await ws.recv()
            await ws.close()
        started = time.monotonic()
        await client(2000)
        one = 2000 / (time.monotonic() - started)
        started = time.monotonic()
        await asyncio.gather(*(client(500) for _ in range(4)))
        four = 2000 / (time.monotonic() - started)
        return one, four
    finally:
        stop(proc)


def bare_fastcgi(port, n=3000):
    script = os.path.join(REPO_ROOT, "tests", "python", "fpm", "echo.php")

    def rec(kind, content):
        return struct.pack("!BBHHBB", 1, kind, 1, len(content), 0, 0) + content

    def params():
        out = b""
        for k, v in {"SCRIPT_FILENAME": script, "REQUEST_METHOD": "POST", "WS_EVENT": "message",
                     "CONTENT_LENGTH": "2"}.items():
            out += bytes([len(k), len(v)]) + k.encode() + v.encode()
        return out

    def request(s, keep):
        s.sendall(rec(1, struct.pack("!HB5x", 1, 1 if keep else 0)) + rec(4, params()) + rec(4, b"")
                  + rec(5, b"hi") + rec(5, b""))
        f = s.makefile("rb")
        while True:
            head = f.read(8)
            kind, length, pad = head[1], struct.unpack("!H", head[4:6])[0], head[6]
            f.read(length + pad)
            if kind == 3:
                return

    def connect():
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    s = connect()
    started = time.monotonic()
    for _ in range(n):
        request(s, True)
    keep = n / (time.monotonic() - started)
    s.close()
    started = time.monotonic()
    for _ in range(n):
        s = connect()
        request(s, False)
        s.close()
    return keep, n / (time.monotonic() - started)


def daemons():
    """A fresh php-fpm (two workers) and nginx in front of it."""
    work = make_workdir()
    fpm = php_fpm(work, free_port(), children=2)
    nginx_port = free_port()
    web = nginx(work, "fixtures.conf", nginx_port, EVENTS_PORT=nginx_port, FPM=fpm.address,
                FCGIWRAP="127.0.0.1:%d" % free_port())
    return fpm, web, nginx_port


async def attempt(coro):
    try:
        return await coro
    except Exception as e:   # a binary that starves itself: report, go on
        return "did not complete (%s: %s)" % (type(e).__name__, e)


async def main(binaries, rounds=3):
    fpm, web, _ = daemons()
    try:
        keep, fresh = bare_fastcgi(fpm.port)
        print("bare FastCGI client, php-fpm echo.php: keep-alive %.0f req/s, new connection each %.0f req/s"
              % (keep, fresh))
    finally:
        web.stop()
        fpm.stop()
    # Throughput rounds alternate between the binaries (the machine is shared).
    results = {b: [] for b in binaries}
    for _ in range(rounds):
        for binary in binaries:
            fpm, web, _ = daemons()
            try:
                results[binary].append(await attempt(throughput(binary, fpm)))
            finally:
                web.stop()
                fpm.stop()
    for binary in binaries:
        fpm, web, nginx_port = daemons()
        try:
            pin = await attempt(pinning(binary, fpm, nginx_port))
        finally:
            web.stop()
            fpm.stop()
        runs = ", ".join(r if isinstance(r, str) else "%.0f/%.0f" % r for r in results[binary])
        print("%s\n  echo.php msg/s, 1 client/4 clients: %s" % (binary, runs))
        if isinstance(pin, str):
            print("  pinning: " + pin)
        else:
            print("  after a burst of 2 on route 1: route 2 open %s, nginx page %s, "
                  "connections to php-fpm released after %s" % pin[:3])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or [os.path.join(REPO_ROOT, "target", "debug", "ws2http")]))
