<?php
// Room picker: a plain HTTP page, run as classic CGI by ws2http.
//   GET  index.php            the form (nickname prefilled from the session)
//                             and the active rooms with their member counts
//   POST index.php nick,room  remembers the nickname in the PHP session and
//                             redirects to chat.php?room=ROOM&nick=NICK
declare(strict_types=1);
require __DIR__ . '/lib.php';

http_only();   // a page, not a WebSocket endpoint
start_session();

$nick = $_SESSION['nick'] ?? '';
$room = valid_room($_GET['room'] ?? null) ?? 'lobby';
$error = null;

if (($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST') {
    $postedNick = $_POST['nick'] ?? '';
    $postedRoom = $_POST['room'] ?? '';
    $goodNick = valid_nick($postedNick);
    $goodRoom = valid_room($postedRoom);
    if ($goodNick !== null && $goodRoom !== null) {
        $_SESSION['nick'] = $goodNick;
        header('Location: chat.php?' . http_build_query(['room' => $goodRoom, 'nick' => $goodNick]), true, 303);
        exit;
    }
    http_response_code(400);
    $nick = is_string($postedNick) ? $postedNick : '';
    $room = is_string($postedRoom) ? $postedRoom : '';
    $error = $goodNick === null
        ? 'A nickname is 1 to ' . MAX_NICK . ' letters, digits, spaces, "_", "-" or ".".'
        : 'A room name is 1 to ' . MAX_ROOM . ' of A-Z, a-z, 0-9, "_" and "-".';
} elseif (($_SERVER['REQUEST_METHOD'] ?? 'GET') !== 'GET' && $_SERVER['REQUEST_METHOD'] !== 'HEAD') {
    http_response_code(405);
    header('Allow: GET, HEAD, POST');
    header('Content-Type: text/plain; charset=utf-8');
    echo "method not allowed\n";
    exit;
}

$rooms = active_rooms();
header('Content-Type: text/html; charset=utf-8');
header('Cache-Control: no-store');
?>
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>PHP chat · ws2http</title>
  <link rel="stylesheet" href="style.css">
</head>
<body class="picker">
<main class="card">
  <h1>PHP chat</h1>
  <p class="lead">Pick a nickname and a room. This page, the chat page and the
    WebSocket behind it are all plain PHP scripts run by ws2http.</p>
<?php if ($error !== null): ?>
  <p class="error" id="error"><?= h($error) ?></p>
<?php endif; ?>
  <form method="post" action="index.php" id="join-form">
    <label for="nick">Nickname</label>
    <input id="nick" name="nick" value="<?= h($nick) ?>" maxlength="<?= MAX_NICK ?>"
           required autocomplete="nickname" <?= $nick === '' ? 'autofocus' : '' ?>>
    <label for="room">Room</label>
    <input id="room" name="room" value="<?= h($room) ?>" maxlength="<?= MAX_ROOM ?>"
           pattern="[A-Za-z0-9_\-]+" required <?= $nick !== '' ? 'autofocus' : '' ?>>
    <button id="join" type="submit">Join</button>
  </form>

  <h2>Active rooms</h2>
<?php if ($rooms === null): ?>
  <p class="muted" id="rooms-unavailable">The room list is unavailable right now
    (the ws2http control API did not answer).</p>
<?php elseif ($rooms === []): ?>
  <p class="muted" id="rooms-empty">Nobody is chatting right now. Start a room!</p>
<?php else: ?>
  <ul id="rooms">
<?php foreach ($rooms as $name => $count): ?>
    <li data-room="<?= h($name) ?>" data-count="<?= $count ?>">
      <a href="chat.php?<?= h(http_build_query(['room' => $name])) ?>"><?= h($name) ?></a>
      <span class="count"><?= $count ?> <?= $count === 1 ? 'member' : 'members' ?></span>
    </li>
<?php endforeach; ?>
  </ul>
<?php endif; ?>
</main>
</body>
</html>
