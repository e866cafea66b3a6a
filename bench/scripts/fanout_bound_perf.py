#!/usr/bin/env python3
"""Splits a `perf record -a -g` of fan-out rounds by process and by kind of
work: user space, the system call path, and the loopback receive softirq
(net_rx_action: the receiver's TCP work, run in the sender's context).

Usage: fanout-bound-perf.py PERF.DATA [SAMPLES.JSON]   (reads `perf script`
output; with the sampler's samples.json, the bench's receiver thread, its
other threads and the server process are named as such)
Prints, for each of the busiest comms, the share of its samples per kind
and per system call (the outermost __x64_sys_* / __do_sys_* frame)."""
import collections
import re
import subprocess
import sys

label = {}
if len(sys.argv) > 2:
    import json
    smp = json.load(open(sys.argv[2]))["samples"]
    last = smp[-1]
    ths = {}
    for x in smp:
        ths.update(x["bench_threads"])
    bench_pid = min(int(t) for t in ths)
    for x in smp:
        for k in x:
            if ":" in k:
                label[int(k.split(":")[1])] = "server"
    label[bench_pid] = "bench"
out = subprocess.run(["perf", "script", "-i", sys.argv[1], "-F", "comm,pid,tid,ip,sym,dso"],
                     capture_output=True, text=True).stdout
per = collections.defaultdict(collections.Counter)
sysc = collections.defaultdict(collections.Counter)
usersym = collections.defaultdict(collections.Counter)
total = collections.Counter()
for block in out.split("\n\n"):
    lines = [l for l in block.splitlines() if l.strip()]
    if not lines:
        continue
    head = lines[0].strip()
    m = re.match(r"(.*?)\s+(\d+)/(\d+)\s*$", head)
    if not m:
        continue
    pid, tid = int(m.group(2)), int(m.group(3))
    comm = label.get(pid, "other") + ("" if pid not in label else f" ({m.group(1).strip()} {tid})")
    if label.get(pid) == "server":
        comm = "server (all threads)"
    frames = [l.strip() for l in lines[1:]]
    syms = [f.split(None, 1)[1] if " " in f else f for f in frames]
    total[comm] += 1
    top = syms[0] if syms else ""
    if any(s.startswith(("net_rx_action", "handle_softirqs", "__do_softirq")) for s in syms):
        kind = "softirq (loopback rx)"
    elif "[kernel.kallsyms]" not in top:
        kind = "user"
        usersym[comm][top.split(" (")[0][:60]] += 1
    else:
        kind = "kernel, not softirq"
    per[comm][kind] += 1
    calls = [s.split("+")[0].split(" ")[0] for s in syms if re.match(r"(__x64_sys_|__do_sys_|do_syscall_64)", s)]
    name = next((c for c in reversed(calls) if c != "do_syscall_64"), None)
    if kind != "user":
        sysc[comm][name or ("(no syscall: " + (syms[-1].split(" (")[0][:40] if syms else "?") + ")")] += 1
for comm, n in total.most_common(8):
    print(f"{comm}: {n} samples")
    for k, v in per[comm].most_common():
        print(f"   {k:26} {100*v/n:5.1f} %")
    for k, v in sysc[comm].most_common(6):
        print(f"      {k:40} {100*v/n:5.1f} %")
    for k, v in usersym[comm].most_common(5):
        print(f"      user: {k:34} {100*v/n:5.1f} %")
