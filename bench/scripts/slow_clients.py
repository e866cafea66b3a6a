"""What slow HTTP clients cost ws2http: N connections that each send one byte
of a request head and then wait, and N that send a whole head except its last
line. Prints the server's CPU time while they wait and its RSS per connection.
Usage (from the repository root):
    python3 bench/scripts/slow_clients.py [-n N] [--secs S] BINARY [-- EXTRA_FLAGS...]
Issue 11: the old front end peeked at every half-sent head every 5 ms for 2 s.
Flags of a newer build (such as --max-http-connections-per-ip) are passed
after the binary; an older build ignores nothing, so leave them out there."""
import argparse, re, socket, subprocess, time


def status(pid, key):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(key):
            return int(line.split()[1])


def ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def measure(binary, extra, n, secs, what, first_bytes):
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--cgi-bin",
                          "tests/fixtures/http-front"] + extra, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(re.search(r":(\d+)$", p.stdout.readline().strip()).group(1))
    p.stdout.readline()
    time.sleep(0.3)
    rss0 = status(p.pid, "VmRSS")
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(first_bytes)
        conns.append(s)
    time.sleep(0.3)
    t0, w0 = ticks(p.pid), time.time()
    time.sleep(secs)
    cpu_ms = (ticks(p.pid) - t0) * 10
    wall = time.time() - w0
    rss = status(p.pid, "VmRSS")
    print("%-10s %-22s %5d conns: CPU %5d ms in %.1f s, RSS +%.1f KiB per connection"
          % (binary.split("/")[-2], what, n, cpu_ms, wall, (rss - rss0) / n))
    for s in conns:
        s.close()
    p.kill()
    p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--secs", type=float, default=1.5)
    ap.add_argument("binary")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    head = b"GET /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nAccept: */*\r\n"
    measure(a.binary, a.extra, a.n, a.secs, "one byte of a head", b"G")
    measure(a.binary, a.extra, a.n, a.secs, "all but the blank line", head)


main()
