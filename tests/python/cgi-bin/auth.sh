#!/bin/sh
# Cookie authentication + subprotocol selection.
# open without cookie session=ok: 403 with a text body and a custom header.
# open with it: Status 200, two Set-Cookie headers, picks subprotocol chat.v2
# when the client offers it, and sends "welcome".
# With an X-Test-Tag header, the open event records its connection id in
# /tmp/ws2http-pytest/auth-<tag>.id and the close event appends
# "CODE REASON CAUSE" to /tmp/ws2http-pytest/<id>.close. message: echo.
D=/tmp/ws2http-pytest
mkdir -p "$D"
case "$WS_EVENT" in
open)
    case "$HTTP_X_TEST_TAG" in
    *[!A-Za-z0-9]*|'') ;;
    *) echo "$WS_CONNECTION_ID" > "$D/auth-$HTTP_X_TEST_TAG.id" ;;
    esac
    case "$HTTP_COOKIE" in
    *session=ok*)
        printf 'Status: 200 OK\r\n'
        printf 'Set-Cookie: seen=1; Path=/\r\n'
        printf 'Set-Cookie: lang=en\r\n'
        case "$HTTP_SEC_WEBSOCKET_PROTOCOL" in
        *chat.v2*) printf 'Sec-WebSocket-Protocol: chat.v2\r\n' ;;
        esac
        printf '\r\n'
        echo welcome
        ;;
    *)
        printf 'Status: 403 Forbidden\r\n'
        printf 'Content-Type: text/plain\r\n'
        printf 'X-Reason: missing-cookie\r\n'
        printf '\r\n'
        printf 'no cookie\n'
        ;;
    esac
    ;;
message)
    cat
    ;;
close)
    [ -n "$HTTP_X_TEST_TAG" ] || exit 0
    echo "$WS_CLOSE_CODE $WS_CLOSE_REASON $WS_CLOSE_CAUSE" >> "$D/$WS_CONNECTION_ID.close"
    ;;
esac
