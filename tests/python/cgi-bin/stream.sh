#!/bin/sh
# Streaming / ordering fixture.
# open: "id <id>". message "wait": prints "first", then waits (at most 10 s)
# until /tmp/ws2http-pytest/<id>.go exists, then prints "second".
# Any other message is echoed. Every message event logs "start X" / "end X",
# the close event logs "close CODE", to /tmp/ws2http-pytest/<id>.events.
D=/tmp/ws2http-pytest
mkdir -p "$D"
E="$D/$WS_CONNECTION_ID.events"
case "$WS_EVENT" in
open)
    echo "id $WS_CONNECTION_ID"
    ;;
message)
    data=$(cat)
    echo "start $data" >> "$E"
    if [ "$data" = wait ]; then
        echo first
        i=0
        while [ ! -e "$D/$WS_CONNECTION_ID.go" ] && [ "$i" -lt 200 ]; do
            sleep 0.05
            i=$((i + 1))
        done
        echo second
    else
        printf '%s\n' "$data"
    fi
    echo "end $data" >> "$E"
    ;;
close)
    echo "close $WS_CLOSE_CODE" >> "$E"
    ;;
esac
