#!/bin/sh
# echo.sh: the /bin/sh variant of echo.c, shell builtins only (no fork).
# ws2http: the message arrives without a newline (hence `|| [ -n ... ]`) and
# goes back as one line. websocketd: one line per message, echoed at once.
while IFS= read -r line || [ -n "$line" ]; do
  printf '%s\n' "$line"
done
