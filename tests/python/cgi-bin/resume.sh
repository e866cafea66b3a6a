#!/bin/sh
# Resumable sessions (issue 17), for the client helpers' tests.
# Query: log=TAG (events go to /tmp/ws2http-pytest/TAG.events), room=R.
# open:    "open ID" to the log; joins R; @set tag TAG.
# message: sends "echo:PAYLOAD" back (one line).
# resume:  "resume ID" to the log (when --events lists resume).
# close:   "close ID CAUSE" to the log.
D=/tmp/ws2http-pytest
mkdir -p "$D"
tag=$(printf '%s\n' "$QUERY_STRING" | tr '&' '\n' | sed -n 's/^log=//p' | tr -cd 'A-Za-z0-9_-')
room=$(printf '%s\n' "$QUERY_STRING" | tr '&' '\n' | sed -n 's/^room=//p' | tr -cd 'A-Za-z0-9_-')
log() { [ -n "$tag" ] && printf '%s\n' "$*" >> "$D/$tag.events"; }
case "$WS_EVENT" in
open)
    log "open $WS_CONNECTION_ID"
    [ -n "$room" ] && echo "@join $room"
    echo "@set tag ${tag:-none}"
    ;;
message)
    printf 'echo:%s\n' "$(cat)"
    ;;
resume)
    log "resume $WS_CONNECTION_ID"
    ;;
close)
    log "close $WS_CONNECTION_ID $WS_CLOSE_CAUSE"
    ;;
esac
exit 0
