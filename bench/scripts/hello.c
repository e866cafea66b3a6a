/* hello.c: the `resume` workload's script. The open event says "hello"
 * (one message: a fresh connection is ready when it arrives, so the open
 * script's run is part of what a fresh connect costs); every other event
 * echoes stdin like echo.c (close events get an empty stdin).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    const char *ev = getenv("WS_EVENT");
    if (ev && strcmp(ev, "open") == 0) {
        return write(1, "hello\n", 6) != 6;
    }
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
