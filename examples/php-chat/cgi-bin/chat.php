<?php
// One URL, two jobs:
//   - a plain HTTP GET (classic CGI, WS_EVENT empty) renders the chat page
//     for ?room=ROOM&nick=NICK;
//   - the page's JavaScript opens a WebSocket to this same URL, and ws2http
//     runs this script again for every event on it (WS_EVENT = open, message
//     or close). What the script prints is sent out: JSON messages, one per
//     line, behind @room / @others directives.
//
// Messages (server -> browser), all JSON objects with a "type":
//   {"type":"welcome","room":R,"nick":N}                to the one who joined
//   {"type":"join","nick":N,"time":T}                   to the others
//   {"type":"message","nick":N,"text":S,"time":T}       to everyone in the room
//   {"type":"leave","nick":N,"time":T}                  to the others
//   {"type":"members","room":R,"members":[N, ...]}      to everyone, after a join or leave
//   {"type":"error","text":S}                           to one connection
// Browser -> server: {"text": "..."} (or plain text).
declare(strict_types=1);
require __DIR__ . '/lib.php';

$event = (string)getenv('WS_EVENT');

if ($event === '') {
    render_page();
} elseif ($event === 'open') {
    on_open();
} elseif ($event === 'message') {
    on_message();
} elseif ($event === 'close') {
    on_close();
}
exit;

function on_open(): void
{
    $room = valid_room($_GET['room'] ?? null);
    $nick = valid_nick($_GET['nick'] ?? null);
    if ($room === null || $nick === null) {
        // A non-2xx status refuses the WebSocket handshake.
        http_response_code(400);
        header('Content-Type: text/plain; charset=utf-8');
        echo $room === null ? "invalid room name\n" : "invalid nickname\n";
        return;
    }
    $srv = ROOM_PREFIX . $room;
    // The directives below apply after this script exits and the handshake is
    // complete: until then this connection is not in the room, so the member
    // list from the control API does not hold it yet; add it here.
    $members = room_members($room, $nick);
    echo "@set nick $nick\n";
    echo "@set room $room\n";
    echo "@join $srv\n";
    echo json_line(['type' => 'welcome', 'room' => $room, 'nick' => $nick]), "\n";
    echo "@others $srv ", json_line(['type' => 'join', 'nick' => $nick, 'time' => now_iso()]), "\n";
    echo "@room $srv ", json_line(['type' => 'members', 'room' => $room, 'members' => $members]), "\n";
}

function on_message(): void
{
    $room = ws_meta('room');
    $nick = ws_meta('nick');
    if (!is_string($room) || $room === '' || !is_string($nick) || $nick === '') {
        return;
    }
    if (getenv('WS_MESSAGE_TYPE') === 'binary') {
        echo json_line(['type' => 'error', 'text' => 'binary messages are not supported']), "\n";
        return;
    }
    $raw = (string)file_get_contents('php://input');
    // {"text": "..."} from the page; anything else counts as plain text.
    $data = json_decode($raw, true);
    $text = is_array($data) && isset($data['text']) && is_string($data['text']) ? $data['text'] : $raw;
    $text = trim($text);
    if ($text === '') {
        return;
    }
    if (preg_match('/^.{0,' . MAX_TEXT . '}/su', $text, $m)) {
        $text = $m[0];
    }
    $msg = ['type' => 'message', 'nick' => $nick, 'text' => $text, 'time' => now_iso()];
    // JSON starts with "{" and never spans lines, so a text such as
    // "@close" or "hi\n@broadcast x" can never be read as a directive.
    echo '@room ', ROOM_PREFIX, $room, ' ', json_line($msg), "\n";
}

function on_close(): void
{
    $room = ws_meta('room');
    $nick = ws_meta('nick');
    if (!is_string($room) || $room === '' || !is_string($nick) || $nick === '') {
        return;
    }
    $srv = ROOM_PREFIX . $room;
    // The closing connection is still a member while this runs: leave it out.
    $members = room_members($room, null, (string)getenv('WS_CONNECTION_ID'));
    echo "@others $srv ", json_line(['type' => 'leave', 'nick' => $nick, 'time' => now_iso()]), "\n";
    echo "@others $srv ", json_line(['type' => 'members', 'room' => $room, 'members' => $members]), "\n";
}

function render_page(): void
{
    start_session();
    $room = valid_room($_GET['room'] ?? null);
    $nick = valid_nick($_GET['nick'] ?? null);
    if ($nick !== null) {
        $_SESSION['nick'] = $nick;
    } else {
        $nick = valid_nick($_SESSION['nick'] ?? null);
    }
    if ($room === null || $nick === null) {
        header('Location: index.php' . ($room !== null ? '?' . http_build_query(['room' => $room]) : ''));
        return;
    }
    header('Content-Type: text/html; charset=utf-8');
    header('Cache-Control: no-store');
?>
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title><?= h($room) ?> · PHP chat</title>
  <link rel="stylesheet" href="style.css">
</head>
<body class="chat" data-room="<?= h($room) ?>" data-nick="<?= h($nick) ?>">
<header class="bar">
  <h1>#<?= h($room) ?></h1>
  <span id="status" class="status connecting">connecting…</span>
  <span class="me">you are <b id="me"><?= h($nick) ?></b></span>
  <a href="index.php" id="leave">leave</a>
</header>
<div class="layout">
  <section id="messages" aria-live="polite"></section>
  <aside>
    <h2>Members</h2>
    <ul id="members"></ul>
  </aside>
</div>
<form id="send-form" class="composer" autocomplete="off">
  <input id="text" maxlength="<?= MAX_TEXT ?>" placeholder="Say something…" disabled>
  <button id="send" type="submit" disabled>Send</button>
</form>
<noscript><p class="error">This chat needs JavaScript.</p></noscript>
<!-- ws2http's client helper (served by ws2http itself): a network blip resumes
     the same connection, so nobody sees "left"/"joined" and no message is lost. -->
<script src="ws2http.js"></script>
<script>
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const room = document.body.dataset.room;
  const nick = document.body.dataset.nick;
  const messages = $("messages"), members = $("members"), status = $("status");
  const text = $("text"), send = $("send");

  // The WebSocket goes to this very URL (chat.php); ws2http runs chat.php
  // for its events. Everything from the server is put in the page with
  // textContent, never innerHTML, so nicknames and messages stay text.
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    location.pathname + "?room=" + encodeURIComponent(room) + "&nick=" + encodeURIComponent(nick);

  function setStatus(label, cls) {
    status.textContent = label;
    status.className = "status " + cls;
  }

  function clock(iso) {
    const d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function append(el) {
    const atBottom = messages.scrollTop + messages.clientHeight >= messages.scrollHeight - 8;
    messages.appendChild(el);
    if (atBottom) messages.scrollTop = messages.scrollHeight;
  }

  function span(cls, content) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = content;
    return s;
  }

  function addMessage(m) {
    const div = document.createElement("div");
    div.className = "msg" + (m.nick === nick ? " mine" : "");
    div.append(span("time", clock(m.time)), span("nick", m.nick), span("text", m.text));
    append(div);
  }

  function addNotice(line, cls, time) {
    const div = document.createElement("div");
    div.className = "notice " + (cls || "");
    div.append(span("time", clock(time)), span("text", line));
    append(div);
  }

  function setMembers(list) {
    members.replaceChildren(...list.map((name) => {
      const li = document.createElement("li");
      li.textContent = name;
      if (name === nick) li.className = "me";
      return li;
    }));
  }

  let opened = false;
  const ws = new Ws2httpSocket(url);

  ws.onopen = () => {
    opened = true;
    setStatus("connected", "connected");
    text.disabled = send.disabled = false;
    text.focus();
  };

  // Lost and resumed: messages typed meanwhile are queued and sent on resume.
  ws.onstatus = (e) => {
    if (!opened) return;
    if (e.status === "reconnecting") setStatus("reconnecting…", "connecting");
    else if (e.status === "open") setStatus("connected", "connected");
  };

  // Away longer than the server's grace period: this is a new connection
  // (the others saw us leave and join again) and messages in between are missing.
  ws.onreset = () => addNotice("reconnected after a long break: messages in between are missing", "error");

  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { m = { type: "error", text: String(e.data) }; }
    switch (m.type) {
      case "message": addMessage(m); break;
      case "join": addNotice(m.nick + " joined", "join", m.time); break;
      case "leave": addNotice(m.nick + " left", "leave", m.time); break;
      case "members": setMembers(m.members || []); break;
      case "welcome": addNotice("welcome to " + m.room + ", " + m.nick, "welcome"); break;
      case "error": addNotice(m.text, "error"); break;
    }
  };

  ws.onclose = (e) => {
    text.disabled = send.disabled = true;
    if (opened) {
      setStatus("disconnected", "disconnected");
      addNotice("disconnected" + (e.reason ? ": " + e.reason : ""), "error");
    } else {
      setStatus("could not join", "disconnected");
      addNotice("could not join the room (check the nickname and room name)", "error");
    }
  };

  $("send-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = text.value.trim();
    if (!t) return;
    if (!ws.send(JSON.stringify({ text: t }))) {
      addNotice("not sent: too many messages waiting for the connection", "error");
      return;
    }
    text.value = "";
    text.focus();
  });
})();
</script>
</body>
</html>
<?php
}
