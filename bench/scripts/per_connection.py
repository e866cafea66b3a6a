#!/usr/bin/env python3
"""Per-connection processes, ws2http --per-connection vs websocketd (issue 15).

Usage: per_connection.py WS2HTTP_BIN [--conns N] [--lines N] [--echo N] [--runs N]

For each server, in the same session, alternating:
  idle:   N connections to `cat` held open; server RSS (the server process only,
          not its children) before and after, per connection.
  stream: one connection to `seq 1 LINES`: messages per second until it ends.
  echo:   one connection to `cat`: ECHO messages sent with a window of 64 in
          flight, each echoed back: round trips per second.
Prints one line per server and measurement, then the medians.
"""
import argparse, asyncio, os, shutil, socket, statistics, subprocess, sys, tempfile, time

import websockets


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"port {port} never opened")


def start(kind, bin_, d, script):
    port = free_port()
    if kind == "websocketd":
        cmd = ["websocketd", f"--port={port}", "--address=127.0.0.1", "--loglevel=error", os.path.join(d, script)]
        path = "/"
    else:
        cmd = [bin_, "--listen", f"127.0.0.1:{port}", "--api-listen", "127.0.0.1:0", "--cgi-bin", d,
               "--per-connection", "*", "--max-connection-procs", "100000", "--max-connections-per-ip", "100000",
               "--no-console"]
        path = "/" + script
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
    wait_port(port)
    return p, f"ws://127.0.0.1:{port}{path}"


async def idle(url, pid, n):
    before = rss_kib(pid)
    conns = []
    for _ in range(n):
        conns.append(await websockets.connect(url, ping_interval=None, max_size=None))
    await asyncio.sleep(1.0)
    after = rss_kib(pid)
    for c in conns:
        await c.close()
    return (after - before) / n


async def stream(url, lines):
    t = time.perf_counter(); got = 0
    async with websockets.connect(url, ping_interval=None, max_size=None) as ws:
        try:
            async for _ in ws:
                got += 1
        except websockets.ConnectionClosed:
            pass
    took = time.perf_counter() - t
    assert got >= lines - 1, f"got {got} of {lines}"
    return got / took


async def echo(url, n, window=64):
    async with websockets.connect(url, ping_interval=None, max_size=None) as ws:
        t = time.perf_counter(); sent = recv = 0
        while recv < n:
            while sent < n and sent - recv < window:
                await ws.send(f"message {sent}"); sent += 1
            await ws.recv(); recv += 1
        return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ws2http")
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--lines", type=int, default=100000)
    ap.add_argument("--echo", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if not shutil.which("websocketd"):
        raise SystemExit("websocketd is not installed (apt install websocketd)")
    d = tempfile.mkdtemp()
    for name, body in [("cat.sh", "exec cat"), ("seq.sh", f"exec seq 1 {a.lines}")]:
        with open(os.path.join(d, name), "w") as f:
            f.write(f"#!/bin/sh\n{body}\n")
        os.chmod(os.path.join(d, name), 0o755)
    res = {}
    for run in range(a.runs):
        for kind in ["websocketd", "ws2http"]:
            for what in ["idle", "stream", "echo"]:
                script = "seq.sh" if what == "stream" else "cat.sh"
                p, url = start(kind, a.ws2http, d, script)
                try:
                    if what == "idle":
                        v = asyncio.run(idle(url, p.pid, a.conns))
                    elif what == "stream":
                        v = asyncio.run(stream(url, a.lines))
                    else:
                        v = asyncio.run(echo(url, a.echo))
                finally:
                    p.terminate(); p.wait()
                res.setdefault((kind, what), []).append(v)
                print(f"run {run} {kind:10} {what:6} {v:12.1f}", flush=True)
    units = {"idle": "KiB of server RSS per idle connection", "stream": "messages/s from one process", "echo": "round trips/s through one process"}
    for what in ["idle", "stream", "echo"]:
        w, x = statistics.median(res[("websocketd", what)]), statistics.median(res[("ws2http", what)])
        print(f"median {what:6}: websocketd {w:10.1f}  ws2http {x:10.1f}  ratio ws2http/websocketd {x / w if w else float('nan'):.3f}  ({units[what]})")


if __name__ == "__main__":
    main()
