<?php
// Fixture for tests/python/test_backends.py (FpmSharedPoolTest): a message
// takes 300 ms, then comes back as one line, so two messages sent at once are
// two requests in flight at once (two php-fpm workers, two connections).
// open and close print nothing.
if (getenv('WS_EVENT') === 'message') {
    header('Content-Type: text/plain');
    usleep(300000);
    echo file_get_contents('php://input'), "\n";
}
