#!/bin/sh
# Directive exerciser (line mode).
# open:    sends "id <WS_CONNECTION_ID>"; with ?room=R it also joins room R.
# message: writes the payload back to stdout unchanged, so whatever the client
#          sends is interpreted as script output (text lines, @directives,
#          header blocks ...). Payload "FAIL" makes the script fail (exit 7)
#          with a marker on stderr and no output.
# close:   appends "CODE REASON CAUSE" to /tmp/ws2http-pytest/<id>.close,
#          says "@others ROOM left <id>" in each room it was in, and prints a
#          text line addressed to itself (which the server must drop).
D=/tmp/ws2http-pytest
mkdir -p "$D"
case "$WS_EVENT" in
open)
    echo "id $WS_CONNECTION_ID"
    case "$QUERY_STRING" in
    room=*) echo "@join ${QUERY_STRING#room=}" ;;
    esac
    ;;
message)
    in="$D/.$WS_CONNECTION_ID.$$.in"
    cat > "$in"
    if [ "$(cat "$in")" = FAIL ]; then
        rm -f "$in"
        echo "lines.sh-fails-on-purpose-$WS_CONNECTION_ID" >&2
        exit 7
    fi
    cat "$in"
    rm -f "$in"
    ;;
close)
    echo "$WS_CLOSE_CODE $WS_CLOSE_REASON $WS_CLOSE_CAUSE" >> "$D/$WS_CONNECTION_ID.close"
    for r in $WS_ROOMS; do
        echo "@others $r left $WS_CONNECTION_ID"
    done
    echo "to-self-must-be-dropped"
    ;;
esac
