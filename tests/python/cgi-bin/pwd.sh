#!/bin/sh
# open: reports the working directory the script runs in.
echo "cwd $(pwd -P)"
