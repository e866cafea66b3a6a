#!/bin/sh
# Copy of ../env.sh one directory down (SCRIPT_NAME /sub/env.sh); a copy,
# not an exec wrapper, because the shell would add PWD to the environment.
# Environment dumper.
# open/message: one text message holding the exact environment the server gave
#   this process (read from /proc, so nothing the shell adds leaks in), as
#   KEY=VALUE lines behind a `Content-Type: application/x-env` header block
#   (any non-text type = the whole body is ONE text message).
# message whose payload starts with "@": the payload is echoed in line mode
#   instead, so a test can run directives (@join, @set, ...) on this endpoint.
# close: when the upgrade request had an `X-Dump-Close: yes` header, the same
#   dump is written to /tmp/ws2http-pytest/<id>.close.env (messages to a
#   closing connection are dropped).
D=/tmp/ws2http-pytest
mkdir -p "$D"
dump() {
    tr '\0' '\n' < /proc/$$/environ
}
case "$WS_EVENT" in
open)
    printf 'Content-Type: application/x-env\n\n'
    dump
    ;;
message)
    payload=$(cat)
    case "$payload" in
    @*) printf '%s\n' "$payload" ;;
    *) printf 'Content-Type: application/x-env\n\n'; dump ;;
    esac
    ;;
close)
    [ "$HTTP_X_DUMP_CLOSE" = yes ] || exit 0
    tmp="$D/.$WS_CONNECTION_ID.$$"
    dump > "$tmp"
    mv "$tmp" "$D/$WS_CONNECTION_ID.close.env"
    ;;
esac
exit 0
