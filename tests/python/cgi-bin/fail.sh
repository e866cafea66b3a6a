#!/bin/sh
# open: valid output but exit status 3 (must be refused with 500).
echo "fail.sh-stderr-marker" >&2
printf 'Status: 200 OK\r\n\r\nhello\n'
exit 3
