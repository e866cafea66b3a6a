"""End to end tests of the example apps: examples/php-chat (php-cgi) and
examples/python-chat (Python, stdlib only), served the way their READMEs say
(--cgi-bin APP/cgi-bin --root APP/public: scripts and static files in
separate directories, so a script is never served as a file), here with an
API token so the scripts' control API calls must carry WS_API_TOKEN.

WebSocket: two clients join a room, see each other in the member lists,
exchange messages both ways (JSON, never read as directives), and one leaves.
Plain HTTP: the PHP pages with their cookie session, the Python room list.

The PHP tests fail on a machine without php-cgi (./test installs it).
"""

import asyncio
import http.client
import json
import os
import re
import shutil
import subprocess
import unittest
import urllib.parse

from websockets.exceptions import InvalidStatus

from harness import REPO_ROOT, ServerTestCase, needs, unique

PHP_DIR = os.path.join("examples", "php-chat")
PY_DIR = os.path.join("examples", "python-chat")
# Each app: its scripts (--cgi-bin) and its static files (--root).
SCRIPTS, PUBLIC = "cgi-bin", "public"
TOKEN = "example-token-" + unique("")
ROOM_PREFIX = "chat:"
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
php_cgi = needs("php")


def http_call(port, method, path, body=None, headers=None):
    """One plain HTTP request (redirects not followed): (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def cookie_from(headers, name):
    """NAME=VALUE from the response's Set-Cookie headers, or None."""
    for value in headers.get_all("Set-Cookie") or []:
        pair = value.split(";", 1)[0].strip()
        if pair.startswith(name + "="):
            return pair
    return None


class ChatFlow:
    """The WebSocket tests, shared by both apps (mixed into a ServerTestCase)."""

    app_dir = None
    endpoint = None   # "/chat.php" or "/chat.py"

    @property
    def cgi_bin(self):
        return os.path.join(self.app_dir, SCRIPTS)

    @property
    def server_args(self):
        return ["--root", os.path.join(self.app_dir, PUBLIC), "--api-token", TOKEN]

    def chat_path(self, room, nick):
        return "%s?%s" % (self.endpoint, urllib.parse.urlencode({"room": room, "nick": nick}))

    async def http(self, method, path, body=None, headers=None):
        return await asyncio.to_thread(http_call, self.server.port, method, path, body, headers)

    async def next_json(self, ws, **expected):
        raw = await self.recv_text(ws)
        try:
            msg = json.loads(raw)
        except ValueError:
            self.fail("not JSON: %r" % raw)
        self.assertIsInstance(msg, dict, raw)
        for key, value in expected.items():
            self.assertEqual(msg.get(key), value, "in %r" % raw)
        return msg

    async def join(self, room, nick, members):
        """Connects; checks the welcome and the member list this one gets."""
        ws = await self.connect(self.chat_path(room, nick))
        await self.next_json(ws, type="welcome", room=room, nick=nick)
        await self.next_json(ws, type="members", room=room, members=members)
        return ws

    async def members_via_api(self, room):
        status, _, _, conns = await self.api(
            "GET", "/connections?room=" + urllib.parse.quote(ROOM_PREFIX + room, safe=""),
            token=TOKEN)
        self.assertEqual(status, 200)
        return sorted((c["metadata"].get("nick"), c["metadata"].get("room"), c["endpoint"])
                      for c in conns)

    async def expect_message(self, ws, nick, text):
        msg = await self.next_json(ws, type="message", nick=nick, text=text)
        self.assertRegex(msg.get("time", ""), ISO_TIME)

    async def check_two_clients_chat(self):
        room = unique("r")
        alice = await self.join(room, "alice", ["alice"])
        bob = await self.join(room, "bob", ["alice", "bob"])
        join = await self.next_json(alice, type="join", nick="bob")
        self.assertRegex(join.get("time", ""), ISO_TIME)
        await self.next_json(alice, type="members", room=room, members=["alice", "bob"])
        self.assertEqual(await self.members_via_api(room),
                         [("alice", room, self.endpoint), ("bob", room, self.endpoint)])

        # alice -> room, as the page sends it: {"text": ...}
        await alice.send(json.dumps({"text": "hi bob"}))
        await self.expect_message(alice, "alice", "hi bob")
        await self.expect_message(bob, "alice", "hi bob")

        # bob -> room, as plain text; markup and "@" stay text
        await bob.send("<b>hello</b> @room x")
        await self.expect_message(bob, "bob", "<b>hello</b> @room x")
        await self.expect_message(alice, "bob", "<b>hello</b> @room x")

        # empty messages are ignored: the next thing anyone gets is the one
        # after them; a multi-line text with directives is one JSON message
        await alice.send(json.dumps({"text": "   "}))
        await alice.send("")
        tricky = "line one\n@close 4000\r\n@broadcast pwned\u2028\u0085 \u00e9\U0001f600 end"
        await alice.send(json.dumps({"text": tricky}))
        await self.expect_message(bob, "alice", tricky)
        await self.expect_message(alice, "alice", tricky)

        # bob leaves: alice hears it and gets the new member list
        await bob.close()
        leave = await self.next_json(alice, type="leave", nick="bob")
        self.assertRegex(leave.get("time", ""), ISO_TIME)
        await self.next_json(alice, type="members", room=room, members=["alice"])

        # alice is still connected and chatting
        await alice.send(json.dumps({"text": "anyone?"}))
        await self.expect_message(alice, "alice", "anyone?")
        self.assertEqual(await self.members_via_api(room), [("alice", room, self.endpoint)])

    async def check_rooms_are_separate(self):
        r1, r2 = unique("r"), unique("r")
        alice = await self.join(r1, "alice", ["alice"])
        carol = await self.join(r2, "carol", ["carol"])
        await alice.send("only for r1")
        await self.expect_message(alice, "alice", "only for r1")
        status, _, _, conns = await self.api(
            "GET", "/connections?room=" + urllib.parse.quote(ROOM_PREFIX + r2, safe=""),
            token=TOKEN)
        self.assertEqual(status, 200)
        self.assertEqual(len(conns), 1)
        mark = unique("sentinel-")
        status, _, _, _ = await self.api("POST", "/send/" + conns[0]["id"], mark, token=TOKEN)
        self.assertEqual(status, 200)
        self.assertEqual(await self.recv_text(carol), mark)

    async def check_invalid_open_rejected(self):
        for room, nick in [("lobby", ""), ("", "alice"), ("two words", "alice"),
                           ("lobby", "@close"), ("lobby", "x" * 25), ("r" * 33, "alice")]:
            with self.subTest(room=room, nick=nick):
                with self.assertRaises(InvalidStatus) as ctx:
                    await self.connect(self.chat_path(room, nick))
                self.assertEqual(ctx.exception.response.status_code, 400)
        status, _, _, conns = await self.api("GET", "/connections", token=TOKEN)
        self.assertEqual((status, conns), (200, []))

    async def check_binary_gets_error(self):
        room = unique("r")
        alice = await self.join(room, "alice", ["alice"])
        bob = await self.join(room, "bob", ["alice", "bob"])
        await self.next_json(alice, type="join")
        await self.next_json(alice, type="members")
        await bob.send(b"\x00\x01")
        await self.next_json(bob, type="error")
        await bob.send("after binary")
        # alice never saw the binary message: her next one is this
        await self.expect_message(alice, "bob", "after binary")


class PhpChatTest(ChatFlow, ServerTestCase):
    app_dir = PHP_DIR
    endpoint = "/chat.php"

    @php_cgi
    def setUp(self):
        super().setUp()

    async def test_two_clients_chat(self):
        await self.check_two_clients_chat()

    async def test_rooms_are_separate(self):
        await self.check_rooms_are_separate()

    async def test_invalid_open_rejected(self):
        await self.check_invalid_open_rejected()

    async def test_binary_gets_error(self):
        await self.check_binary_gets_error()

    # -- plain HTTP (classic CGI and static files) ---------------------------

    async def test_index_page_remembers_nick_in_session(self):
        status, headers, body = await self.http("GET", "/index.php")
        self.assert_status(status, 200, "/index.php")
        self.assertTrue(headers.get("Content-Type", "").startswith("text/html"))
        page = body.decode()
        for element in ('id="nick"', 'id="room"', 'id="join"', 'action="index.php"'):
            self.assertIn(element, page)
        self.assertIn('value=""', page)  # no nickname yet
        cookie = cookie_from(headers, "PHPCHATSESSID")
        self.assertIsNotNone(cookie, headers.get_all("Set-Cookie"))

        # an invalid nickname: 400 and the form again, with the error
        status, _, body = await self.http(
            "POST", "/index.php", "nick=%40x&room=lobby",
            {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 400)
        self.assertIn('id="error"', body.decode())

        # the form (POST body on stdin) stores the nickname and redirects
        status, headers, _ = await self.http(
            "POST", "/index.php", "nick=Carol+C&room=lobby",
            {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 303)
        self.assertEqual(headers.get("Location"), "chat.php?room=lobby&nick=Carol+C")

        # coming back: the nickname is prefilled from the session
        status, headers, body = await self.http("GET", "/index.php", headers={"Cookie": cookie})
        self.assertEqual(status, 200)
        self.assertIn('value="Carol C"', body.decode())
        self.assertIsNone(cookie_from(headers, "PHPCHATSESSID"))  # same session kept

        # the chat page takes the nickname from the session too
        status, _, body = await self.http("GET", "/chat.php?room=lobby",
                                          headers={"Cookie": cookie})
        self.assertEqual(status, 200)
        page = body.decode()
        self.assertIn('data-room="lobby" data-nick="Carol C"', page)
        for element in ('id="messages"', 'id="members"', 'id="text"', 'id="send"',
                        'id="status"', '<script src="ws2http.js">', "new Ws2httpSocket(", 'href="style.css"'):
            self.assertIn(element, page)

    async def test_chat_page_without_nick_redirects(self):
        status, headers, _ = await self.http("GET", "/chat.php?room=lobby")
        self.assertEqual(status, 302)
        self.assertEqual(headers.get("Location"), "index.php?room=lobby")
        status, headers, _ = await self.http("GET", "/chat.php")
        self.assertEqual(status, 302)
        self.assertEqual(headers.get("Location"), "index.php")

    async def test_chat_page_nick_rules(self):
        # quotes are not allowed in nicknames at all; the page shows what is
        # allowed as text, and the query nickname wins over the session
        status, _, body = await self.http("GET", "/chat.php?room=lobby&nick=%3Cb%3E")
        self.assertEqual(status, 302)  # "<b>" is not a valid nickname
        status, _, body = await self.http("GET", "/chat.php?room=lobby&nick=J%C3%BCrgen+K.")
        self.assertEqual(status, 200)
        self.assertIn('data-nick="J\u00fcrgen K."', body.decode())

    async def test_index_lists_active_rooms(self):
        room = unique("r")
        await self.join(room, "alice", ["alice"])
        status, _, body = await self.http("GET", "/index.php")
        self.assert_status(status, 200, "/index.php")
        page = body.decode()
        self.assertNotIn('id="rooms-unavailable"', page,
                         "index.php could not reach the control API (WS_API_URL/WS_API_TOKEN)")
        self.assertIn('data-room="%s" data-count="1"' % room, page)

    async def test_static_and_private_files(self):
        status, headers, body = await self.http("GET", "/style.css")
        self.assertEqual(status, 200)
        self.assertTrue(headers.get("Content-Type", "").startswith("text/css"))
        self.assertIn(b"#messages", body)
        status, _, body = await self.http("GET", "/")  # static index.html -> index.php
        self.assertEqual(status, 200)
        self.assertIn(b'url=index.php', body)
        status, _, body = await self.http("GET", "/lib.php")
        self.assertEqual((status, body), (404, b""))
        status, _, _ = await self.raw("/lib.php")
        self.assertEqual(status, 404)
        status, _, _ = await self.raw("/index.php")  # a page, not an endpoint
        self.assertEqual(status, 404)


class PhpPageWithoutApiTest(unittest.TestCase):
    """index.php when the control API does not answer: runs php-cgi directly."""

    @php_cgi
    def test_room_list_unavailable(self):
        script = os.path.join(REPO_ROOT, PHP_DIR, SCRIPTS, "index.php")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GATEWAY_INTERFACE": "CGI/1.1",
               "REQUEST_METHOD": "GET", "SCRIPT_FILENAME": script, "SCRIPT_NAME": "/index.php",
               "QUERY_STRING": "", "REDIRECT_STATUS": "200", "SERVER_PROTOCOL": "HTTP/1.1",
               "WS_API_URL": "http://127.0.0.1:9", "WS_API_TOKEN": ""}  # discard port
        out = subprocess.run([shutil.which("php-cgi")], env=env, cwd=os.path.dirname(script),
                             capture_output=True, timeout=30)
        text = out.stdout.decode()
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotRegex(text, r"(?m)^Status: [45]")
        self.assertIn('id="rooms-unavailable"', text)
        self.assertIn('id="join"', text)


class PythonChatTest(ChatFlow, ServerTestCase):
    app_dir = PY_DIR
    endpoint = "/chat.py"

    async def test_two_clients_chat(self):
        await self.check_two_clients_chat()

    async def test_rooms_are_separate(self):
        await self.check_rooms_are_separate()

    async def test_invalid_open_rejected(self):
        await self.check_invalid_open_rejected()

    async def test_binary_gets_error(self):
        await self.check_binary_gets_error()

    async def test_static_page(self):
        status, _, root = await self.http("GET", "/")
        self.assertEqual(status, 200)
        status, headers, body = await self.http("GET", "/index.html")
        self.assertEqual(status, 200)
        self.assertEqual(root, body)
        self.assertTrue(headers.get("Content-Type", "").startswith("text/html"))
        page = body.decode()
        for element in ('id="nick"', 'id="room"', 'id="join"', 'id="messages"',
                        'id="members"', 'id="text"', 'id="send"', 'id="status"'):
            self.assertIn(element, page)

    async def test_room_list_over_http(self):
        room = unique("r")
        await self.join(room, "alice", ["alice"])
        status, headers, body = await self.http("GET", "/chat.py")
        self.assert_status(status, 200, "/chat.py")
        self.assertTrue(headers.get("Content-Type", "").startswith("application/json"))
        self.assertEqual(json.loads(body)["rooms"].get(room), 1)
        status, headers, _ = await self.http("POST", "/chat.py", "x")
        self.assertEqual(status, 405)


class StartCommandTest(unittest.TestCase):
    """The one-command start lines in README.md and the examples' READMEs are
    the layout these tests serve (and never --root equal to --cgi-bin)."""

    def test_readmes_show_the_tested_commands(self):
        for app in (PHP_DIR, PY_DIR):
            command = "ws2http --cgi-bin %s --root %s" % (
                "/".join([app.replace(os.sep, "/"), SCRIPTS]), "/".join([app.replace(os.sep, "/"), PUBLIC]))
            for readme in (os.path.join(REPO_ROOT, "README.md"), os.path.join(REPO_ROOT, app, "README.md")):
                with self.subTest(app=app, readme=readme):
                    with open(readme) as f:
                        text = f.read()
                    # the app's README runs from the repository root too
                    self.assertIn(command, text)
                    self.assertNotIn("--cgi-bin %s --root %s" % (app, app), text)

    def test_scripts_and_static_files_are_apart(self):
        for app, scripts, static in ((PHP_DIR, {"chat.php", "index.php", "lib.php"}, {"index.html", "style.css"}),
                                     (PY_DIR, {"chat.py"}, {"index.html"})):
            with self.subTest(app=app):
                self.assertEqual(set(os.listdir(os.path.join(REPO_ROOT, app, SCRIPTS))), scripts)
                self.assertEqual(set(os.listdir(os.path.join(REPO_ROOT, app, PUBLIC))), static)


if __name__ == "__main__":
    unittest.main()
