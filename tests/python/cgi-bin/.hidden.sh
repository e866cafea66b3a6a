#!/bin/sh
# Dotfile: must never be served (404).
echo "hidden script ran"
