#!/bin/sh
# clock.sh - a script that keeps talking after it has exited.
#
# Demonstrates: the control API. On open the script starts a background job
# and exits at once; the job POSTs the time to
#   $WS_API_URL/send/$WS_CONNECTION_ID
# once a second for 10 seconds (with "Authorization: Bearer $WS_API_TOKEN" when
# the server has a token). It stops early when the API answers 404 (the
# connection is gone) or cannot be reached.
#
# The job uses curl, else wget. With neither installed it cannot push, and the
# script says so instead of "clock started".
#
# The job ignores SIGHUP (as nohup does) and its stdin, stdout and stderr point
# at /dev/null: ws2http reads the script's output until the pipe closes, so a
# job that kept the pipe open would hold the event (here: the handshake) until
# the job ended.

# push TEXT: POST TEXT to this connection; prints the HTTP status (000 = no answer).
push() {
    if command -v curl >/dev/null 2>&1; then
        if [ -n "${WS_API_TOKEN:-}" ]; then
            curl -s -o /dev/null -w '%{http_code}' -X POST \
                -H 'Content-Type: text/plain; charset=utf-8' \
                -H "Authorization: Bearer $WS_API_TOKEN" \
                --data-binary "$1" "$WS_API_URL/send/$WS_CONNECTION_ID"
        else
            curl -s -o /dev/null -w '%{http_code}' -X POST \
                -H 'Content-Type: text/plain; charset=utf-8' \
                --data-binary "$1" "$WS_API_URL/send/$WS_CONNECTION_ID"
        fi
    else
        # wget has no status option: read it from the response headers (-S).
        if [ -n "${WS_API_TOKEN:-}" ]; then
            wget -S -O /dev/null --header='Content-Type: text/plain; charset=utf-8' \
                --header="Authorization: Bearer $WS_API_TOKEN" \
                --post-data="$1" "$WS_API_URL/send/$WS_CONNECTION_ID" 2>&1
        else
            wget -S -O /dev/null --header='Content-Type: text/plain; charset=utf-8' \
                --post-data="$1" "$WS_API_URL/send/$WS_CONNECTION_ID" 2>&1
        fi | sed -n 's/^ *HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' | tail -n 1
    fi
}

# The background job: 10 ticks, one a second.
tick() {
    delivered=no
    i=1
    while [ "$i" -le 10 ]; do
        sleep 1
        status=$(push "tick $i/10: $(date -u +%H:%M:%S) UTC")
        case "$status" in
        2*) delivered=yes ;;
        *)
            # 404: the connection is gone; 000: the server is gone. Before the
            # first delivery allow a few tries, in case the handshake is slow.
            [ "$delivered" = yes ] || [ "$i" -ge 3 ] && return 0
            ;;
        esac
        i=$((i + 1))
    done
}

# A header block first: it keeps this a valid CGI program for any server
# (fcgiwrap behind nginx refuses a script that prints none); ws2http reads
# text/plain as line mode, so every line below is still a message or directive.
printf 'Content-Type: text/plain\n\n'

case "${WS_EVENT:-}" in
open)
    if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
        echo "clock unavailable: it needs curl or wget to reach the control API"
        exit 0
    fi
    (trap '' HUP; tick) </dev/null >/dev/null 2>&1 &
    echo "clock started"
    ;;
esac
exit 0
