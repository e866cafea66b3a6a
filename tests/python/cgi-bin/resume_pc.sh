#!/bin/sh
# A per-connection endpoint (--per-connection /resume_pc.sh) for the client helpers' plain fallback:
# one process per connection, "echo:LINE" for each line.
while IFS= read -r line; do
    printf 'echo:%s\n' "$line"
done
