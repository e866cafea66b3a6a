/* wsoh.c: the Pushpin origin, a CGI program behind lighttpd. Pushpin turns
 * WebSocket activity into WebSocket-over-HTTP requests
 * (Content-Type: application/websocket-events; body `OPEN\r\n`,
 * `TEXT 5\r\nhello\r\n`, `CLOSE ...`). Echoing the request's events back
 * is exactly the reply an echo service owes: OPEN accepts the connection,
 * TEXT sends the message back, CLOSE acknowledges the close. So this is
 * echo.c plus the one response header.
 */
#include <unistd.h>

int main(void) {
    static const char head[] = "Content-Type: application/websocket-events\r\n\r\n";
    if (write(1, head, sizeof head - 1) != (ssize_t)(sizeof head - 1)) return 1;
    char buf[65536];
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = write(1, buf + off, (size_t)(n - off));
            if (w <= 0) return 1;
            off += w;
        }
    }
    return n < 0;
}
