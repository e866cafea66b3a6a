#!/bin/sh
# Background push through the control API (WS_API_URL / WS_API_TOKEN).
# message: starts a detached job that POSTs "pushed: <payload>" to
# /send/<own id> with curl, and exits at once without printing anything.
case "$WS_EVENT" in
message)
    payload=$(cat)
    (
        curl -sS -X POST \
            -H "Authorization: Bearer $WS_API_TOKEN" \
            -H "Content-Type: text/plain; charset=utf-8" \
            --data-binary "pushed: $payload" \
            "$WS_API_URL/send/$WS_CONNECTION_ID"
    ) > /dev/null 2>&1 < /dev/null &
    ;;
esac
exit 0
