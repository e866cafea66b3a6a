#!/bin/sh
# Fixture for tests/python/test_backends.py: prints directives but no CGI
# header block, which ws2http accepts and fcgiwrap does not (nginx answers
# 502 Bad Gateway), so every event of this script fails behind nginx.
echo "@join nowhere"
echo "you should not see this"
exit 0
