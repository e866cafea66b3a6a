import collections, subprocess, sys
def prof(data, pid, per_member_n):
    out = subprocess.run(["perf","script","-i",data,"-F","pid,tid,comm,ip,sym","--pid",str(pid),"-G"],capture_output=True,text=True).stdout
    c = collections.Counter(); comms = collections.Counter(); n=0
    for l in out.splitlines():
        if not l.strip(): continue
        p = l.split()
        # pid/tid comm? format: "comm pid/tid ip sym"
        c[" ".join(p[3:]) if len(p)>3 else p[-1]] += 1; comms[p[0]] += 1; n += 1
    return c, comms, n
N = 150000
b, bc, bn = prof(sys.argv[1], sys.argv[2], N)
w, wc, wn = prof(sys.argv[3], sys.argv[4], N)
us = lambda k: k * 0.5e-3 / N * 1e6
print("baseline samples", bn, f"{us(bn):.2f} µs/member", dict(bc))
print("ws2http samples", wn, f"{us(wn):.2f} µs/member", dict(wc))
keys = set(b) | set(w)
rows = sorted(keys, key=lambda k: -(w[k] - b[k]))
print(f"{'symbol (self)':50} {'base':>6} {'ws2http':>7} {'diff':>6}  µs/member")
for k in rows[:25]:
    print(f"{k[:50]:50} {us(b[k]):6.2f} {us(w[k]):7.2f} {us(w[k]-b[k]):6.2f}")
print("... most negative")
for k in rows[-6:]:
    print(f"{k[:50]:50} {us(b[k]):6.2f} {us(w[k]):7.2f} {us(w[k]-b[k]):6.2f}")
