#!/usr/bin/env python3
"""chat.py - the WebSocket side of a multi-room chat, Python 3 stdlib only.

ws2http runs this script once per WebSocket event on /chat.py (WS_EVENT is
open, message or close). What it prints goes out as messages: JSON objects,
one per line, behind @room / @others directives. Same messages as the PHP
example (examples/php-chat), same room prefix, so the two can share rooms:

  {"type":"welcome","room":R,"nick":N}              to the one who joined
  {"type":"join","nick":N,"time":T}                 to the others
  {"type":"message","nick":N,"text":S,"time":T}     to everyone in the room
  {"type":"leave","nick":N,"time":T}                to the others
  {"type":"members","room":R,"members":[N, ...]}    to everyone, after a join or leave
  {"type":"error","text":S}                         to one connection

The browser sends {"text": "..."} (plain text works too).

A plain HTTP GET of /chat.py (no WebSocket, WS_EVENT empty) runs it as a
classic CGI script: it answers {"rooms": {"lobby": 2, ...}} for the room list
on index.html.
"""

import datetime
import json
import os
import sys
import urllib.parse

ROOM_PREFIX = "chat:"   # rooms are global to the server: keep ours apart
MAX_NICK = 24
MAX_ROOM = 32
MAX_TEXT = 2000
ROOM_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

out = []  # output lines, written at the end


def log(msg):
    """stderr ends up in ws2http's log."""
    print("python-chat: " + msg, file=sys.stderr)


def valid_nick(nick):
    """The trimmed nickname, or None unless 1-24 letters, digits, spaces, "_", "-", "."."""
    if not isinstance(nick, str):
        return None
    nick = nick.strip()
    if 0 < len(nick) <= MAX_NICK and all(c.isalnum() or c in " _.-" for c in nick):
        return nick
    return None


def valid_room(room):
    """The room name, or None unless 1-32 of [A-Za-z0-9_-]."""
    if not isinstance(room, str):
        return None
    room = room.strip()
    if 0 < len(room) <= MAX_ROOM and set(room) <= ROOM_CHARS:
        return room
    return None


def dumps(value):
    # json.dumps escapes every newline, so one message is always one line
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def query():
    q = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[0] for k, v in q.items()}


def api_get(path):
    """GET on the ws2http control API: decoded JSON, or None when it is not
    configured, unreachable, or answers an error."""
    # WebSocket events get WS_API_URL; plain HTTP requests (classic CGI,
    # where WS_* variables are not set) get WS2HTTP_API_URL.
    prefix = "WS_" if os.environ.get("WS_API_URL") else "WS2HTTP_"
    base = os.environ.get(prefix + "API_URL", "")
    if not base:
        log("neither WS_API_URL nor WS2HTTP_API_URL is set: no control API")
        return None
    import urllib.request  # imported here: message events do not need it
    req = urllib.request.Request(base.rstrip("/") + path, headers={"Accept": "application/json"})
    token = os.environ.get(prefix + "API_TOKEN", "")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(req, timeout=2) as resp:
            return json.load(resp)
    except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
        log("control API GET %s failed: %s" % (path, e))
        return None


def room_members(room, add=None, skip=None):
    """Nicknames in a room, from each connection's "nick" metadata, sorted.
    add: a nickname to include (a connection is not a member yet while its
    open event runs); skip: a connection id to leave out (a closing one is
    still listed during its close event)."""
    conns = api_get("/connections?room=" + urllib.parse.quote(ROOM_PREFIX + room, safe=""))
    nicks = []
    for c in conns if isinstance(conns, list) else []:
        if not isinstance(c, dict) or (skip is not None and c.get("id") == skip):
            continue
        nick = (c.get("metadata") or {}).get("nick")
        if isinstance(nick, str) and nick:
            nicks.append(nick)
    if add is not None:
        nicks.append(add)
    return sorted(nicks, key=str.casefold)


def on_open():
    q = query()
    room = valid_room(q.get("room"))
    nick = valid_nick(q.get("nick"))
    if room is None or nick is None:
        # a non-2xx status refuses the WebSocket handshake
        out.extend(["Status: 400 Bad Request", "Content-Type: text/plain; charset=utf-8", "",
                    "invalid room name" if room is None else "invalid nickname"])
        return
    srv = ROOM_PREFIX + room
    members = room_members(room, add=nick)
    out.extend([
        "@set nick " + nick,
        "@set room " + room,
        "@join " + srv,
        dumps({"type": "welcome", "room": room, "nick": nick}),
        "@others %s %s" % (srv, dumps({"type": "join", "nick": nick, "time": now_iso()})),
        "@room %s %s" % (srv, dumps({"type": "members", "room": room, "members": members})),
    ])


def on_message():
    room = os.environ.get("WS_META_room", "")
    nick = os.environ.get("WS_META_nick", "")
    if not room or not nick:
        return
    if os.environ.get("WS_MESSAGE_TYPE") == "binary":
        out.append(dumps({"type": "error", "text": "binary messages are not supported"}))
        return
    raw = sys.stdin.buffer.read().decode("utf-8", "replace")
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    text = data["text"] if isinstance(data, dict) and isinstance(data.get("text"), str) else raw
    text = text.strip()[:MAX_TEXT]
    if not text:
        return
    msg = {"type": "message", "nick": nick, "text": text, "time": now_iso()}
    # the JSON starts with "{" and is one line: never read as a directive
    out.append("@room %s%s %s" % (ROOM_PREFIX, room, dumps(msg)))


def on_close():
    room = os.environ.get("WS_META_room", "")
    nick = os.environ.get("WS_META_nick", "")
    if not room or not nick:
        return
    srv = ROOM_PREFIX + room
    members = room_members(room, skip=os.environ.get("WS_CONNECTION_ID"))
    out.append("@others %s %s" % (srv, dumps({"type": "leave", "nick": nick, "time": now_iso()})))
    out.append("@others %s %s" % (srv, dumps({"type": "members", "room": room, "members": members})))


def http_request():
    """Classic CGI: GET /chat.py -> the active rooms as JSON."""
    method = os.environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        out.extend(["Status: 405 Method Not Allowed", "Allow: GET, HEAD",
                    "Content-Type: application/json", "", dumps({"error": "method not allowed"})])
        return
    rooms = api_get("/rooms")
    if not isinstance(rooms, dict):
        out.extend(["Status: 503 Service Unavailable", "Content-Type: application/json",
                    "Cache-Control: no-store", "", dumps({"error": "control API unavailable"})])
        return
    active = {name[len(ROOM_PREFIX):]: count for name, count in rooms.items()
              if name.startswith(ROOM_PREFIX)}
    out.extend(["Content-Type: application/json", "Cache-Control: no-store", "",
                dumps({"rooms": active})])


def main():
    event = os.environ.get("WS_EVENT", "")
    {"": http_request, "open": on_open, "message": on_message, "close": on_close}.get(
        event, lambda: None)()
    if out:
        sys.stdout.buffer.write(("\n".join(out) + "\n").encode("utf-8"))
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
