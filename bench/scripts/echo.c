/* echo.c: the "tiny compiled program" of the benchmarks. Copies stdin to
 * stdout, unbuffered, until EOF.
 *
 * - ws2http: one message on stdin (no newline added) -> the same bytes on
 *   stdout -> one text message back (line mode). Open and close events get
 *   an empty stdin and print nothing.
 * - websocketd: one line per message on stdin -> the same line, written at
 *   once (no stdio buffering) -> one message back.
 * - the spawn-limit baseline spawns exactly this binary.
 */
#include <unistd.h>

int main(void) {
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
