#!/bin/sh
# echo.sh - sends every message straight back, byte for byte.
#
# Demonstrates: the "message" event (payload on stdin, WS_MESSAGE_TYPE) and the
# CGI header block. Instead of line mode (where a payload such as "@join x"
# would be read as a directive), the reply starts with a Content-Type header:
#   application/octet-stream -> the whole body is ONE binary message
#   application/x-ws-text    -> any non-text/* type: the whole body is ONE text message
# so multi-line text, payloads that start with "@", and all 256 byte values
# come back exactly as they were sent. open and close events print nothing.
#
# Try it:  ws2http connect ws://127.0.0.1:8080/echo.sh

case "${WS_EVENT:-}" in
message)
    if [ "${WS_MESSAGE_TYPE:-text}" = binary ]; then
        printf 'Content-Type: application/octet-stream\n\n'
    else
        printf 'Content-Type: application/x-ws-text\n\n'
    fi
    exec cat
    ;;
*)
    # Nothing to say on open and close. An empty header block keeps the
    # script a valid CGI program for any server (fcgiwrap behind nginx
    # refuses a script that prints nothing; ws2http itself does not mind).
    printf 'Content-Type: text/plain\n\n'
    ;;
esac
exit 0
