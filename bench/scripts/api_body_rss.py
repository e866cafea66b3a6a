"""Peak RSS (VmHWM) of ws2http after one POST /broadcast with a 256 MiB body,
sent with Content-Length and chunked. Usage (from the repository root): python3 bench/scripts/api_body_rss.py BINARY...
Issue 11: before the body cap the whole body was buffered (twice)."""
import socket, subprocess, sys, time
def hwm(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmHWM"): return int(l.split()[1]) // 1024
def run(binary, framing):
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--cgi-bin",
                          "tests/fixtures/cgi-bin"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline(); port = int(p.stdout.readline().decode().strip().rsplit(":", 1)[1])
    before = hwm(p.pid)
    total = 256 << 20
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("POST /broadcast HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/plain\r\n%s\r\n\r\n"
               % (port, "Transfer-Encoding: chunked" if framing == "chunked" else "Content-Length: %d" % total)).encode())
    piece = b"x" * (1 << 20)
    t = time.time()
    sent = 0
    try:
        for _ in range(total >> 20):
            s.sendall((b"100000\r\n" + piece + b"\r\n") if framing == "chunked" else piece)
            sent += 1
        if framing == "chunked": s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed: it stopped reading
    s.settimeout(60)
    try:
        status = s.recv(64).split(b"\r\n")[0].decode()
    except OSError as e:
        status = "(connection %s)" % e.strerror
    status += ", %d of %d MiB sent" % (sent, total >> 20)
    s.close()
    print("%-12s %-14s startup %4d MB  peak %4d MB  %s  (%.1fs)" % (binary.split("/")[-1], framing, before, hwm(p.pid), status, time.time() - t))
    p.kill(); p.wait()
for b in sys.argv[1:]:
    for f in ("content-length", "chunked"):
        run(b, f)
