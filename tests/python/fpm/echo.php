<?php
// Fixture for tests/python/test_backends.py: sends every message back byte for
// byte, the PHP twin of cgi-bin/echo.sh. A Content-Type other than text/*
// makes the whole body ONE message: application/octet-stream -> binary.
// open and close print nothing (PHP still sends its default header block).
if (getenv('WS_EVENT') === 'message') {
    $binary = getenv('WS_MESSAGE_TYPE') === 'binary';
    header('Content-Type: ' . ($binary ? 'application/octet-stream' : 'application/x-ws-text'));
    echo file_get_contents('php://input');
}
