#!/usr/bin/env python3
"""CPU time per delivered member in the fan-out workload (bench workload 3).

Runs `ws2http-bench fanout` unchanged and samples, every few ms, the CPU
time of: the bench process (per thread: the receiver is its busiest thread
during rounds), ws2http (process total, so the short-lived ws2http-fanout
threads count), the baseline broadcaster (`__broadcast-server`), the
ksoftirqd threads and /proc/stat (whole machine). The bench prints a note
before each block of rounds ("fan-out: NAME, M members, R rounds, run k/K");
a block's CPU is the difference between the last samples taken before the
note that opens it and the note that follows it. The last block of each
phase is skipped (its end includes shutting the server down). The idle rate
of each process in the 0.4 s before the first block is printed as a check
(when quiet it is < 1 ms/s: nothing to subtract; when the machine is so
loaded that connection setup still runs then, the first blocks are suspect).

Optional: --perf-block N records `perf record -a -g` during the N-th 10k
block of each phase (1-based) into OUT/perf-PHASE.data.

Usage: fanout-bound.py OUTDIR [--perf-block N] -- BENCH ARGS...
Writes OUTDIR/samples.json, OUTDIR/notes.txt and prints a per-block table.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

TCK = os.sysconf("SC_CLK_TCK")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def proc_cpu(pid):
    """utime+stime of the whole thread group (dead threads included), s."""
    s = read(f"/proc/{pid}/stat")
    if s is None:
        return None
    f = s[s.rindex(")") + 2:].split()
    return {"u": int(f[11]) / TCK, "s": int(f[12]) / TCK,
            "cu": int(f[13]) / TCK, "cs": int(f[14]) / TCK}


def threads_ns(pid):
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        s = read(f"/proc/{pid}/task/{t}/schedstat")
        if s:
            out[t] = int(s.split()[0])
    return out


def sys_cpu():
    f = read("/proc/stat").splitlines()[0].split()[1:]
    v = [int(x) / TCK for x in f]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return {"user": user + nice, "system": system, "irq": irq, "softirq": softirq,
            "idle": idle + iowait, "steal": steal}


def children(pid):
    """Children of pid (its threads' `children` lists: cheap)."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        out += [int(c) for c in (read(f"/proc/{pid}/task/{t}/children") or "").split()]
    return out


def ksoftirqd():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and (read(f"/proc/{p}/comm") or "").startswith("ksoftirqd"):
            out.append(int(p))
    return out


def main():
    args = sys.argv[1:]
    out = args[0]
    perf_block = 0
    if args[1] == "--perf-block":
        perf_block = int(args[2])
        args = args[3:]
    else:
        args = args[1:]
    assert args[0] == "--"
    cmd = args[1:]
    os.makedirs(out, exist_ok=True)
    bench = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=open(f"{out}/stdout.md", "w"), text=True)
    notes = []
    perf = {"p": None, "count": {}}

    def reader():
        for line in bench.stderr:
            notes.append((time.monotonic(), line.rstrip()))
            m = re.search(r"fan-out: (.*?), (\d+) members", line)
            if perf["p"] is not None:
                perf["p"].send_signal(signal.SIGINT)
                perf["p"].wait()
                perf["p"] = None
            if perf_block and m and m.group(2) == "10000":
                k = perf["count"].get(m.group(1), 0) + 1
                perf["count"][m.group(1)] = k
                if k == perf_block:
                    tag = "ws2http" if m.group(1) == "ws2http" else "baseline"
                    perf["p"] = subprocess.Popen(
                        ["perf", "record", "-a", "-g", "-F", "2000", "-o", f"{out}/perf-{tag}.data"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    me = os.getpid()
    ksi = ksoftirqd()
    samples = []
    known = set()
    while bench.poll() is None:
        t = time.monotonic()
        for c in children(bench.pid):
            known.add(c)
        smp = {"t": t, "sys": sys_cpu(), "bench": proc_cpu(bench.pid),
               "bench_threads": threads_ns(bench.pid),
               "ksoftirqd": sum(int((read(f"/proc/{p}/schedstat") or "0").split()[0]) for p in ksi),
               "me": proc_cpu(me)}
        for c in known:
            v = proc_cpu(c)
            if v is not None:
                smp[f"child:{c}"] = v
        samples.append(smp)
        time.sleep(0.008)
    th.join()
    json.dump({"notes": notes, "samples": samples}, open(f"{out}/samples.json", "w"))
    with open(f"{out}/notes.txt", "w") as f:
        for t, n in notes:
            f.write(f"{t:.4f} {n}\n")
    analyse(out)


def before(samples, t):
    """The last sample taken before monotonic time t."""
    best = None
    for s in samples:
        if s["t"] < t:
            best = s
        else:
            break
    return best


def tot(v):
    return v["u"] + v["s"] if v else 0.0


def analyse(out):
    d = json.load(open(f"{out}/samples.json"))
    notes, samples = d["notes"], d["samples"]
    blocks = []  # (phase, members, t0, t1)
    idle = {}  # phase -> (t0, t1)
    marks = [(t, n) for t, n in notes if "fan-out:" in n]
    for i, (t, n) in enumerate(marks):
        m = re.search(r"fan-out: (.*?), (\d+) members", n)
        o = re.search(r"fan-out: \d+ connections open", n)
        if o and i + 1 < len(marks):
            phase = "ws2http" if "ws2http" in marks[i + 1][1] else "baseline"
            idle[phase] = (t, marks[i + 1][0])
        if m and i + 1 < len(marks) and re.search(r"fan-out: (.*?), (\d+) members", marks[i + 1][1]):
            phase = "ws2http" if m.group(1) == "ws2http" else "baseline"
            blocks.append((phase, int(m.group(2)), t, marks[i + 1][0]))
    rounds = int(re.search(r"(\d+) rounds", marks[-1][1]).group(1)) if marks else 0

    def delta(a, b, phase):
        # The server: the bench's child that used the most CPU in the window.
        ks = [k for k in b if k.startswith(("child:", "ws2http:", "other:")) and k in a]
        k = max(ks, key=lambda k: tot(b[k]) - tot(a[k]), default=None)
        srv = tot(b.get(k)) - tot(a.get(k)) if k and k in a else float("nan")
        kids = (b[k]["cu"] + b[k]["cs"] - a[k]["cu"] - a[k]["cs"]) if k and k in a else 0.0
        th = {t: (b["bench_threads"][t] - a["bench_threads"].get(t, 0)) / 1e9 for t in b["bench_threads"]}
        recv_tid = max(th, key=th.get)
        sysd = {x: b["sys"][x] - a["sys"][x] for x in b["sys"]}
        return {
            "dt": b["t"] - a["t"],
            "server": srv,
            "server_children": kids,
            "receiver": th[recv_tid],
            "bench_other": tot(b["bench"]) - tot(a["bench"]) - th[recv_tid],
            "ksoftirqd": (b["ksoftirqd"] - a["ksoftirqd"]) / 1e9,
            "sampler": tot(b["me"]) - tot(a["me"]),
            "sys_busy": sum(v for x, v in sysd.items() if x != "idle"),
            "sys_softirq": sysd["softirq"],
            "sys_idle": sysd["idle"],
        }

    rate = {}
    for phase, (t0, t1) in idle.items():
        # The last 0.4 s before the first block: the bench's 500 ms sleep
        # (connection setup and its transients are over).
        a, b = before(samples, t1 - 0.4), before(samples, t1)
        if a and b and b["t"] > a["t"]:
            dd = delta(a, b, phase)
            rate[phase] = {k: v / dd["dt"] for k, v in dd.items() if k != "dt"}
            print(f"idle {phase}: {dd['dt']:.2f} s, rates/s: " +
                  ", ".join(f"{k} {v*1e3:.1f} ms" for k, v in rate[phase].items()))
    res = []
    print(f"{'phase':9} {'members':>7} {'wall s':>7} | µs per member delivered: "
          f"{'server':>7} {'recv':>6} {'bench-oth':>9} {'ksoftirqd':>9} {'sys busy':>8} {'softirq':>7} {'others':>7}")
    for phase, members, t0, t1 in blocks:
        a, b = before(samples, t0), before(samples, t1)
        dd = delta(a, b, phase)
        r = {}  # idle rates are printed as a check, not subtracted (see the module doc)
        n = members * rounds
        row = {"phase": phase, "members": members, "wall": dd["dt"]}
        for k in ("server", "receiver", "bench_other", "ksoftirqd", "sys_busy", "sys_softirq", "sampler"):
            row[k] = (dd[k] - r.get(k, 0.0) * dd["dt"]) / n * 1e6
        row["others"] = row["sys_busy"] - row["server"] - row["receiver"] - row["bench_other"] - row["ksoftirqd"] - row["sampler"]
        row["server_children"] = dd["server_children"]
        res.append(row)
        print(f"{phase:9} {members:7} {dd['dt']:7.2f} | {'':25}{row['server']:7.2f} {row['receiver']:6.2f} "
              f"{row['bench_other']:9.2f} {row['ksoftirqd']:9.2f} {row['sys_busy']:8.2f} {row['sys_softirq']:7.2f} {row['others']:7.2f}")
    json.dump(res, open(f"{out}/blocks.json", "w"), indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "--analyse":
        analyse(sys.argv[2])
    else:
        main()
