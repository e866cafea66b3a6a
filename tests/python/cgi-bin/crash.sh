#!/bin/sh
# open: dies from SIGKILL after printing a valid-looking header block.
printf 'Status: 200 OK\r\n\r\nnever\n'
kill -KILL $$
