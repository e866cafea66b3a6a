#!/bin/bash
# docs/bench-notes/alloc19.md: run as `WS2HTTP_REAL=BIN ws2http-bench idle --ws2http THIS --no-build --runs 1 --idle 10000 --idle-websocketd 0`;
# glibc's malloc_stats() (per arena: system bytes, in use bytes) lands at the end of /tmp/ms/BIN.PID.err.
# (MS_DIR=DIR: there instead of /tmp/ms, so two people measuring do not mix files.)
# wrapper: run the real server (same pid), and after it holds 10,000 sockets + 3 s, print malloc_stats to a file
REAL=$WS2HTTP_REAL
mkdir -p ${MS_DIR:-/tmp/ms}
OUT=${MS_DIR:-/tmp/ms}/$(basename $REAL).$$.err
(
  for i in $(seq 600); do
    n=$(ls /proc/$$/fd 2>/dev/null | wc -l)
    [ "$n" -ge 10000 ] && break
    sleep 0.1
  done
  sleep 3
  gdb -p $$ -batch -ex 'call (void) malloc_stats()' >/dev/null 2>&1
) &
exec "$REAL" "$@" 2>>"$OUT"
