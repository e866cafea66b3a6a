<?php
// params.php: prints the FastCGI parameters this request arrived with, as
// one line (KEY \x1e VALUE, pairs joined by \x1f), so that the bench's direct
// php-fpm client can send exactly what ws2http sends.
$skip = ['PHP_SELF', 'REQUEST_TIME', 'REQUEST_TIME_FLOAT', 'FCGI_ROLE', 'argv', 'argc'];
$o = [];
foreach ($_SERVER as $k => $v) {
    if (is_string($v) && !in_array($k, $skip, true)) {
        $o[] = $k . "\x1e" . $v;
    }
}
echo implode("\x1f", $o), "\n";
