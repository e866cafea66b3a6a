<?php
// Fixture for tests/python/test_backends.py, run by php-fpm (ws2http
// --fastcgi, or nginx fastcgi_pass behind ws2http --backend-url).
//
// open, message: one text message, a JSON object with every contract
//   variable the request carries (getenv(), i.e. the FastCGI params), every
//   WS_META_* and HTTP_* in $_SERVER, and the request body as "_stdin_b64".
// message whose payload starts with "@": the payload is printed in line mode
//   instead, so a test can run directives (@join, @set, ...) through PHP.
// open with ?fatal=1, message "fatal": a PHP fatal error (PHP answers
//   Status: 500; the error goes to the log).
// close: the same JSON is written to /tmp/ws2http-pytest/<id>.close.json
//   (nothing can be sent to a closing connection).
declare(strict_types=1);
// Errors to the log only: with php-fpm (and php-cgi) display_errors=stderr
// still prints them into the output, where they would become messages.
// log_errors with no error_log sends them as FCGI_STDERR (fastcgi.logging),
// which ws2http logs.
ini_set('display_errors', '0');
ini_set('log_errors', '1');

const NAMES = [
    'GATEWAY_INTERFACE', 'SERVER_SOFTWARE', 'SERVER_NAME', 'SERVER_PORT',
    'SERVER_PROTOCOL', 'REQUEST_METHOD', 'SCRIPT_NAME', 'SCRIPT_FILENAME',
    'PATH_INFO', 'PATH_TRANSLATED', 'QUERY_STRING', 'REQUEST_URI',
    'REMOTE_ADDR', 'REMOTE_PORT', 'CONTENT_LENGTH', 'CONTENT_TYPE',
    'REDIRECT_STATUS', 'WS_EVENT', 'WS_CONNECTION_ID', 'WS_MESSAGE_TYPE',
    'WS_CLOSE_CODE', 'WS_CLOSE_REASON', 'WS_CLOSE_CAUSE', 'WS_ROOMS',
    'WS_API_URL', 'WS_API_TOKEN', 'PATH', 'WS2HTTP_API_URL', 'WS2HTTP_API_TOKEN',
    'REQUEST_SCHEME', 'HTTPS',
];

function dump(): array
{
    $out = [];
    foreach (NAMES as $name) {
        $v = getenv($name);
        if ($v !== false) {
            $out[$name] = $v;
        }
    }
    foreach ($_SERVER as $k => $v) {
        if (is_string($v) && (strncmp($k, 'WS_META_', 8) === 0 || strncmp($k, 'HTTP_', 5) === 0)) {
            $out[$k] = $v;
        }
    }
    $out['_stdin_b64'] = base64_encode((string)file_get_contents('php://input'));
    $out['_pid'] = getmypid();
    return $out;
}

$event = (string)getenv('WS_EVENT');
if ($event === 'close') {
    $dir = '/tmp/ws2http-pytest';
    @mkdir($dir, 0777, true);
    $id = preg_replace('/[^0-9a-f]/', '', (string)getenv('WS_CONNECTION_ID'));
    $tmp = "$dir/.$id." . getmypid();
    file_put_contents($tmp, json_encode(dump()));
    rename($tmp, "$dir/$id.close.json");
    exit;
}
$payload = (string)file_get_contents('php://input');
if ($event === 'open' && ($_GET['fatal'] ?? '') !== '' || $event === 'message' && $payload === 'fatal') {
    no_such_function();
}
if ($event === 'message' && str_starts_with($payload, '@')) {
    header('Content-Type: text/plain');
    echo $payload, "\n";
    exit;
}
header('Content-Type: application/json');
echo json_encode(dump(), JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE);
