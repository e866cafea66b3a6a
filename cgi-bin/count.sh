#!/bin/sh
# count.sh - streams 1..10, one number per second.
#
# Demonstrates: output is applied line by line as the script prints it, so a
# long-running event handler can stream progress to the client.
#
# Counting starts on every message. The open event only prints a hint: an open
# script must exit before the handshake completes (its exit status decides
# between 101 and 500), so a slow open script would only delay the handshake.

# A header block first: it keeps this a valid CGI program for any server
# (fcgiwrap behind nginx refuses a script that prints none); ws2http reads
# text/plain as line mode, so every line below is still a message or directive.
printf 'Content-Type: text/plain\n\n'

case "${WS_EVENT:-}" in
open)
    echo "send any message and I will count to 10"
    ;;
message)
    i=1
    while [ "$i" -le 10 ]; do
        echo "$i"
        [ "$i" -lt 10 ] && sleep 1
        i=$((i + 1))
    done
    ;;
esac
exit 0
