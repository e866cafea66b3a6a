#!/bin/sh
# Lives OUTSIDE the cgi-bin directory; reachable only through the escape.sh
# and outdir/ symlinks or ../ tricks, which the server must refuse (404).
echo "escaped"
