#!/bin/sh
# Fixture for tests/python/test_backends.py, run by fcgiwrap behind nginx
# (ws2http --backend-url): every variable it reads comes from ws2http's WS-*
# headers through nginx's ws2http_params.
# open: @set nick from ?nick=, a greeting with the path.
# message: a payload starting with "@" is printed as is (directives); any
#   other payload gets one line describing the event.
#   The payload "noheader" gets output without a header block, which
#   fcgiwrap refuses (nginx answers 502).
# close: "CODE REASON CAUSE nick=N rooms=R" to /tmp/ws2http-pytest/<id>.close
# Behind fcgiwrap a script must always print a header block.
payload=$(cat)
if [ "${WS_EVENT:-}" = message ] && [ "$payload" = noheader ]; then
    echo "this line has no header block before it"
    exit 0
fi
printf 'Content-Type: text/plain\n\n'
case "${WS_EVENT:-}" in
open)
    echo "@set nick ${QUERY_STRING#nick=}"
    echo "hello from $SCRIPT_NAME path=$PATH_INFO id=$WS_CONNECTION_ID"
    ;;
message)
    case "$payload" in
    @*) printf '%s\n' "$payload" ;;
    *) printf 'event=%s type=%s nick=%s last_seen=%s rooms=[%s] text=%s\n' \
        "$WS_EVENT" "${WS_MESSAGE_TYPE-unset}" "${WS_META_nick-unset}" \
        "${WS_META_last_seen-unset}" "$WS_ROOMS" "$payload" ;;
    esac
    ;;
close)
    d=/tmp/ws2http-pytest
    mkdir -p "$d"
    id=$(printf '%s' "$WS_CONNECTION_ID" | tr -cd 0-9a-f)
    printf '%s %s %s nick=%s rooms=[%s]\n' "$WS_CLOSE_CODE" "$WS_CLOSE_REASON" \
        "$WS_CLOSE_CAUSE" "${WS_META_nick-unset}" "$WS_ROOMS" > "$d/.$id.$$"
    mv "$d/.$id.$$" "$d/$id.close"
    ;;
esac
exit 0
