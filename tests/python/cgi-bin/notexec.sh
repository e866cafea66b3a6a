#!/bin/sh
# Deliberately NOT executable (mode 644): with no handler, opening it is a 500.
echo "notexec ran"
