<?php
// Run by php-cgi (the default handler for .php when php-cgi is installed).
// php-cgi always prints a header block; text/html means line mode.
$event = getenv('WS_EVENT');
if ($event === 'open') {
    if (!isset($_COOKIE['php']) || $_COOKIE['php'] !== 'yes') {
        http_response_code(403);
        echo "php says no\n";
        return;
    }
    echo "php open " . getenv('WS_CONNECTION_ID') . "\n";
    echo "@join php-room\n";
} elseif ($event === 'message') {
    echo "php got " . file_get_contents('php://input') . "\n";
}
