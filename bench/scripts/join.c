/* join.c: fan-out fixture for ws2http. On the open event it joins every
 * room named in the query string, '+'-separated (`/join?fan1k+fan10k`
 * prints `@join fan1k` and `@join fan10k`); any other event echoes stdin
 * like echo.c.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void out(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w <= 0) _exit(1);
        s += w;
        n -= (size_t)w;
    }
}

int main(void) {
    const char *ev = getenv("WS_EVENT");
    if (ev && strcmp(ev, "open") == 0) {
        const char *q = getenv("QUERY_STRING");
        char line[512];
        while (q && *q) {
            size_t n = strcspn(q, "+&");
            if (n > 0 && n < sizeof line - 8) {
                memcpy(line, "@join ", 6);
                memcpy(line + 6, q, n);
                line[6 + n] = '\n';
                out(line, n + 7);
            }
            q += n;
            if (*q) q++;
        }
        return 0;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) out(buf, (size_t)n);
    return 0;
}
