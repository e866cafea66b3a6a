<?php
// Shared helpers for index.php and chat.php. Requesting /lib.php itself
// answers 404 (over HTTP and on a WebSocket upgrade alike).
declare(strict_types=1);

// Warnings go to stderr (ws2http's log), never into the page or, worse, into
// the output of a WebSocket event, where they would become chat messages.
// Errors go to the log (ws2http's, through stderr), never into the output,
// where they would become chat messages.
ini_set('display_errors', '0');
ini_set('log_errors', '1');
error_reporting(E_ALL);

if (realpath((string)($_SERVER['SCRIPT_FILENAME'] ?? '')) === __FILE__) {
    http_response_code(404);
    exit;
}

// Rooms are global to one ws2http server, so this app keeps its rooms under
// a prefix of its own: the room "lobby" is "chat:lobby" on the server. The
// Python example uses the same prefix and the same JSON messages, so the two
// apps can share rooms when they run in one server.
const ROOM_PREFIX = 'chat:';
const MAX_NICK = 24;
const MAX_ROOM = 32;
const MAX_TEXT = 2000;

/** For pages only: refuses a WebSocket upgrade to this URL (404). */
function http_only(): void
{
    $event = getenv('WS_EVENT');
    if ($event !== false && $event !== '') {
        http_response_code(404);
        exit;
    }
}

/** The trimmed nickname, or null unless 1-24 letters, digits, spaces, "_", "-", ".". */
function valid_nick($nick): ?string
{
    if (!is_string($nick)) {
        return null;
    }
    $nick = trim($nick);
    if (!preg_match('/^[\p{L}\p{N}_ .\-]{1,' . MAX_NICK . '}$/u', $nick)) {
        return null;
    }
    return $nick;
}

/** The room name, or null unless 1-32 of [A-Za-z0-9_-]. */
function valid_room($room): ?string
{
    if (!is_string($room)) {
        return null;
    }
    $room = trim($room);
    if (!preg_match('/^[A-Za-z0-9_\-]{1,' . MAX_ROOM . '}$/', $room)) {
        return null;
    }
    return $room;
}

/** HTML-escapes text for element content and attribute values. */
function h(string $s): string
{
    return htmlspecialchars($s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

/** One JSON value on one line: json_encode never emits a raw newline. */
function json_line($value): string
{
    return json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
        | JSON_INVALID_UTF8_SUBSTITUTE | JSON_THROW_ON_ERROR);
}

function now_iso(): string
{
    return gmdate('Y-m-d\TH:i:s\Z');
}

/**
 * GET on the ws2http control API; the decoded JSON, or null when the API is
 * not configured, unreachable, or answers anything but 200 with JSON.
 */
function api_get(string $path)
{
    // WebSocket events get WS_API_URL; plain HTTP requests (classic CGI,
    // where WS_* variables are not set) get WS2HTTP_API_URL.
    $base = getenv('WS_API_URL') ?: getenv('WS2HTTP_API_URL');
    if ($base === false || $base === '') {
        error_log('php-chat: neither WS_API_URL nor WS2HTTP_API_URL is set: no control API');
        return null;
    }
    $headers = ['Accept: application/json'];
    $token = getenv('WS_API_URL') ? getenv('WS_API_TOKEN') : getenv('WS2HTTP_API_TOKEN');
    if ($token !== false && $token !== '') {
        $headers[] = 'Authorization: Bearer ' . $token;
    }
    $context = stream_context_create(['http' => [
        'method' => 'GET',
        'header' => implode("\r\n", $headers),
        'timeout' => 2.0,
        'ignore_errors' => true,   // read error bodies instead of warning
    ]]);
    $body = @file_get_contents(rtrim($base, '/') . $path, false, $context);
    if ($body === false) {
        error_log("php-chat: control API $base unreachable");
        return null;
    }
    $status = 0;
    if (isset($http_response_header[0])
        && preg_match('#^HTTP/\S+\s+(\d{3})#', $http_response_header[0], $m)) {
        $status = (int)$m[1];
    }
    if ($status !== 200) {
        error_log("php-chat: control API GET $path answered $status");
        return null;
    }
    $data = json_decode($body, true);
    return is_array($data) ? $data : null;
}

/** Active chat rooms as ["lobby" => 2, ...], or null when the API is unavailable. */
function active_rooms(): ?array
{
    $rooms = api_get('/rooms');
    if ($rooms === null) {
        return null;
    }
    $out = [];
    foreach ($rooms as $name => $count) {
        $name = (string)$name;
        if (strncmp($name, ROOM_PREFIX, strlen(ROOM_PREFIX)) === 0) {
            $out[substr($name, strlen(ROOM_PREFIX))] = (int)$count;
        }
    }
    return $out;
}

/**
 * Nicknames in a room (from each connection's "nick" metadata), sorted.
 * $add: a nickname to include (the connection that is joining right now is
 * not a member yet while its open script runs). $skip: a connection id to
 * leave out (the one that is closing is still listed during its close event).
 */
function room_members(string $room, ?string $add = null, ?string $skip = null): array
{
    $conns = api_get('/connections?room=' . rawurlencode(ROOM_PREFIX . $room));
    $nicks = [];
    foreach ($conns ?? [] as $c) {
        if (!is_array($c) || ($skip !== null && ($c['id'] ?? null) === $skip)) {
            continue;
        }
        $nick = $c['metadata']['nick'] ?? null;
        if (is_string($nick) && $nick !== '') {
            $nicks[] = $nick;
        }
    }
    if ($add !== null) {
        $nicks[] = $add;
    }
    sort($nicks, SORT_STRING | SORT_FLAG_CASE);
    return $nicks;
}

/** Starts the PHP session (file-based; falls back to the temp dir if needed). */
function start_session(): void
{
    $path = session_save_path();
    if ($path === '' || !is_dir($path) || !is_writable($path)) {
        session_save_path(sys_get_temp_dir());
    }
    session_name('PHPCHATSESSID');
    session_start([
        'cookie_httponly' => true,
        'cookie_samesite' => 'Lax',
        'use_strict_mode' => true,
    ]);
}

/**
 * Connection metadata (WS_META_<key>). Through ws2http's HTTP backend a value
 * that is not plain ASCII arrives percent-encoded, and WS_PERCENT_ENCODED
 * names it (see docs/BACKENDS.md); decode it back.
 */
function ws_meta(string $key)
{
    $value = getenv('WS_META_' . $key);
    if (!is_string($value)) {
        return $value;
    }
    $encoded = array_map('trim', explode(',', (string)getenv('WS_PERCENT_ENCODED')));
    return in_array('WS-Meta-' . $key, $encoded, true) ? rawurldecode($value) : $value;
}
