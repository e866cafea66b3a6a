#!/bin/sh
# Resumable sessions (test_resume.py): every event that runs is logged to
# /tmp/ws2http-pytest/<id>.events, one line each, so a test sees which ran.
# open:    "open"; joins room "r" (or ?room=R) and sets name=bob.
# message: "message <payload>"; echoes "echo <payload>" back.
# close:   "close CODE CAUSE ROOMS NAME" (its rooms and metadata then).
# resume:  "resume COUNT ADDR".
D=/tmp/ws2http-pytest
mkdir -p "$D"
log="$D/$WS_CONNECTION_ID.events"
case "$WS_EVENT" in
open)
    echo "open" >> "$log"
    room=r
    case "$QUERY_STRING" in
    room=*) room=${QUERY_STRING#room=} ;;
    esac
    echo "@join $room"
    echo "@set name bob"
    ;;
message)
    payload=$(cat)
    echo "message $payload" >> "$log"
    echo "echo $payload"
    ;;
close)
    echo "close $WS_CLOSE_CODE $WS_CLOSE_CAUSE $WS_ROOMS $WS_META_name" >> "$log"
    ;;
resume)
    echo "resume $WS_RESUME_COUNT $WS_RESUME_REMOTE_ADDR" >> "$log"
    ;;
esac
