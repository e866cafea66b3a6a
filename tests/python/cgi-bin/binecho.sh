#!/bin/sh
# Binary echo: every message comes back as ONE binary message holding exactly
# the bytes the script read on stdin.
case "$WS_EVENT" in
message)
    printf 'Content-Type: application/octet-stream\r\n\r\n'
    cat
    ;;
esac
exit 0
