#!/bin/sh
# chat.sh - a multi-room chat in a few lines of shell.
#
# Demonstrates: rooms (@join, @room, @others), per-connection metadata (@set,
# read back as WS_META_nick in later events), PATH_INFO and QUERY_STRING, and
# a close event that still sees the connection's rooms and metadata.
#
#   ws://127.0.0.1:8080/chat.sh/lobby?nick=alice   -> room "lobby", nickname "alice"
#   ws://127.0.0.1:8080/chat.sh                    -> room "lobby", nickname "guest"
#
# Nicknames and room names keep only [A-Za-z0-9_-] (other characters become
# "_", at most 32 of them); "+" and "%20" in the query count as spaces.

set -f  # no globbing of unquoted words
LC_ALL=C
export LC_ALL

# clean WORD DEFAULT: WORD reduced to [A-Za-z0-9_-], at most 32 chars, or DEFAULT.
clean() {
    c=$(printf '%s' "$1" | tr -c 'A-Za-z0-9_-' '_' | cut -c1-32)
    printf '%s' "${c:-$2}"
}

# The value of ?nick= (first occurrence), with "+" and "%20" read as spaces.
query_nick() {
    printf '%s\n' "${QUERY_STRING:-}" | tr '&' '\n' | sed -n 's/^nick=//p' |
        head -n 1 | sed 's/+/ /g; s/%20/ /g'
}

# A header block first: it keeps this a valid CGI program for any server
# (fcgiwrap behind nginx refuses a script that prints none); ws2http reads
# text/plain as line mode, so every line below is still a message or directive.
printf 'Content-Type: text/plain\n\n'

case "${WS_EVENT:-}" in
open)
    nick=$(clean "$(query_nick)" guest)
    room=$(clean "${PATH_INFO#/}" lobby)
    echo "@set nick $nick"
    echo "@join $room"
    echo "@others $room * $nick joined"
    echo "* welcome to $room, $nick: type a line to talk to everyone in the room"
    ;;
message)
    nick=${WS_META_nick:-guest}
    if [ "${WS_MESSAGE_TYPE:-text}" = binary ]; then
        echo "* binary messages are not relayed"
        exit 0
    fi
    set -- ${WS_ROOMS:-}
    room=${1:-}
    if [ -z "$room" ]; then
        echo "* you are in no room"
        exit 0
    fi
    # One chat line per input line. The text sits after "NAME: ", so a line
    # that starts with "@" is relayed as text, never read as a directive.
    while IFS= read -r line || [ -n "$line" ]; do
        [ -n "$line" ] && printf '@room %s %s: %s\n' "$room" "$nick" "$line"
    done
    ;;
close)
    nick=${WS_META_nick:-guest}
    for room in ${WS_ROOMS:-}; do
        echo "@others $room * $nick left"
    done
    ;;
esac
exit 0
