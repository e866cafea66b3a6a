#!/bin/sh
# Fixture for tests/python/test_backends.py: the repository's cgi-bin/chat.sh,
# unchanged, behind fcgiwrap (it prints its own CGI header block).
exec sh "$(dirname "$0")/../../../../cgi-bin/chat.sh"
