"""Script output: header blocks, line mode and every directive.

lines.sh writes each message payload back to stdout unchanged, so the client
decides what the script "prints"."""

import base64
import unittest

from harness import ServerTestCase, unique


class LineModeTest(ServerTestCase):

    async def test_plain_lines_become_text_messages(self):
        ws, cid = await self.connect_lines()
        await ws.send("hello")                     # final line without newline
        await self.assert_next(ws, "hello")
        await ws.send("one\ntwo\r\nthree\r\n")       # LF and CRLF
        await self.assert_next(ws, "one")
        await self.assert_next(ws, "two")
        await self.assert_next(ws, "three")
        await ws.send("\n\nx\n\r\n\ny\n\n")          # empty lines ignored
        await self.assert_next(ws, "x")
        await self.assert_next(ws, "y")
        await ws.send("  spaced  \tline ")            # no trimming of text
        await self.assert_next(ws, "  spaced  \tline ")
        await ws.send("caf\u00e9 \u2603")
        await self.assert_next(ws, "caf\u00e9 \u2603")
        await self.sentinel(ws, cid)

    async def test_double_at_escapes_literal_at(self):
        ws, cid = await self.connect_lines()
        await ws.send("@@hello\n@@@x\n@@")
        await self.assert_next(ws, "@hello")
        await self.assert_next(ws, "@@x")
        await self.assert_next(ws, "@")
        await self.sentinel(ws, cid)

    async def test_unknown_and_malformed_directives_are_skipped(self):
        ws, cid = await self.connect_lines()
        await ws.send("@frobnicate now\n@\n@send\n@join\n@leave\n"
                      "@set\n@set bad-key value\n@set bad.key value\n@close abc\n"
                      "@close 999\n@close 1005\n@close 1006\n@close 2999\n@close 5000\n"
                      "@binary %%%not-base64%%%\n@room\n@others\nafter")
        await self.assert_next(ws, "after")
        await self.sentinel(ws, cid)
        self.assertTrue(ws.state.name == "OPEN", ws.state)
        info = await self.api_ok("GET", "/connections/" + cid)
        self.assertEqual(info["rooms"], [])
        self.assertEqual(info["metadata"], {})

    async def test_send_to_connection(self):
        ws1, id1 = await self.connect_lines()
        ws2, id2 = await self.connect_lines()
        await ws1.send("@send %s hi there  \n@send %s \n@send %s @x" % (id2, id2, id2))
        await self.assert_next(ws2, "hi there  ")
        await self.assert_next(ws2, "")        # TEXT may be empty
        await self.assert_next(ws2, "@x")      # TEXT is taken literally
        await ws1.send("@send %s to myself" % id1)
        await self.assert_next(ws1, "to myself")
        await ws1.send("@send 00000000000000000000000000000000 nobody\nstill-here")
        await self.assert_next(ws1, "still-here")
        await self.sentinel(ws1, id1)
        await self.sentinel(ws2, id2)

    async def test_join_room_others_leave(self):
        room = unique("room-")
        ws1, id1 = await self.connect_lines()
        ws2, id2 = await self.connect_lines()
        ws3, id3 = await self.connect_lines()
        await ws1.send("@join " + room + "\nj1")
        await self.assert_next(ws1, "j1")
        await ws2.send("@join " + room + "\nj2")
        await self.assert_next(ws2, "j2")
        await ws1.send("@room %s to all members" % room)
        await self.assert_next(ws1, "to all members")
        await self.assert_next(ws2, "to all members")
        await ws1.send("@others %s not to me" % room)
        await self.assert_next(ws2, "not to me")
        await self.sentinel(ws1, id1)
        await self.sentinel(ws3, id3)        # ws3 is in no room
        rooms = await self.api_ok("GET", "/rooms")
        self.assertEqual(rooms, {room: 2})
        await ws2.send("@leave " + room + "\nleft")
        await self.assert_next(ws2, "left")
        await ws1.send("@room %s after leave" % room)
        await self.assert_next(ws1, "after leave")
        await self.sentinel(ws2, id2)
        self.assertEqual(await self.api_ok("GET", "/rooms"), {room: 1})
        await ws1.send("@leave " + room + "\nbye")
        await self.assert_next(ws1, "bye")
        self.assertEqual(await self.api_ok("GET", "/rooms"), {})

    async def test_room_directive_from_non_member(self):
        room = unique("room-")
        ws1, id1 = await self.connect_lines("?room=" + room)
        ws2, id2 = await self.connect_lines()
        await ws2.send("@room %s from outside" % room)
        await self.assert_next(ws1, "from outside")
        await self.sentinel(ws2, id2)

    async def test_join_on_open(self):
        room = unique("room-")
        ws1, id1 = await self.connect_lines("?room=" + room)
        info = await self.api_ok("GET", "/connections/" + id1)
        self.assertEqual(info["rooms"], [room])

    async def test_broadcast_reaches_only_this_endpoint(self):
        ws1, id1 = await self.connect_lines()
        ws2, id2 = await self.connect_lines()
        quiet = await self.connect("/quiet.sh")
        listed = await self.api_ok("GET", "/connections?endpoint=/quiet.sh")
        self.assertEqual(len(listed), 1)
        quiet_id = listed[0]["id"]
        await ws1.send("@broadcast hello everyone")
        await self.assert_next(ws1, "hello everyone")
        await self.assert_next(ws2, "hello everyone")
        await self.sentinel(quiet, quiet_id)

    async def test_set_metadata(self):
        ws, cid = await self.connect_lines()
        await ws.send("@set nick bob\n@set Level_2 x y z\nok")
        await self.assert_next(ws, "ok")
        info = await self.api_ok("GET", "/connections/" + cid)
        self.assertEqual(info["metadata"], {"nick": "bob", "Level_2": "x y z"})
        await ws.send("@set nick\n@set nick2 \nok2")
        await self.assert_next(ws, "ok2")
        info = await self.api_ok("GET", "/connections/" + cid)
        self.assertEqual(info["metadata"], {"Level_2": "x y z"})

    async def test_binary_directive(self):
        ws, cid = await self.connect_lines()
        data = bytes(range(256))
        await ws.send("@binary " + base64.b64encode(data).decode())
        got = await self.recv(ws)
        self.assertIsInstance(got, bytes)
        self.assertEqual(got, data)
        # padding is optional
        await ws.send("@binary " + base64.b64encode(b"ab").decode().rstrip("="))
        self.assertEqual(await self.recv(ws), b"ab")
        await ws.send("@binary " + base64.b64encode(b"abcd").decode().rstrip("="))
        self.assertEqual(await self.recv(ws), b"abcd")
        await self.sentinel(ws, cid)

    async def test_close_directive_default_code(self):
        ws, cid = await self.connect_lines()
        await ws.send("@close")
        await ws.wait_closed()
        self.assertEqual(ws.close_code, 1000)
        code, reason, cause = await self.close_record_once(cid)
        self.assertEqual((code, reason, cause), ("1000", "", "script"))

    async def test_close_directive_with_code_and_reason(self):
        ws, cid = await self.connect_lines()
        await ws.send("@close 4002 done and dusted")
        await ws.wait_closed()
        self.assertEqual(ws.close_code, 4002)
        self.assertEqual(ws.close_reason, "done and dusted")
        self.assertEqual(await self.close_record_once(cid),
                         ("4002", "done and dusted", "script"))

    async def test_lines_after_close_directive_not_sent_to_closed_connection(self):
        ws1, id1 = await self.connect_lines()
        ws2, id2 = await self.connect_lines()
        await ws1.send("@close 4003\n@send %s still applied" % id2)
        await ws1.wait_closed()
        self.assertEqual(ws1.close_code, 4003)
        # "all other actions apply"
        await self.assert_next(ws2, "still applied")


class HeaderBlockTest(ServerTestCase):

    async def test_status_line_without_blank_line_is_text(self):
        ws, cid = await self.connect_lines()
        await ws.send("Status: 403")
        await self.assert_next(ws, "Status: 403")
        await ws.send("Status: 403\nmore text\n")
        await self.assert_next(ws, "Status: 403")
        await self.assert_next(ws, "more text")
        await self.sentinel(ws, cid)

    async def test_text_content_type_keeps_line_mode(self):
        ws, cid = await self.connect_lines()
        await ws.send("Content-Type: text/plain; charset=utf-8\nX-Other: 1\n\nhello\n@@at\n"
                      "@send %s direct\nlast" % cid)
        await self.assert_next(ws, "hello")
        await self.assert_next(ws, "@at")
        await self.assert_next(ws, "direct")
        await self.assert_next(ws, "last")
        await self.sentinel(ws, cid)

    async def test_no_content_type_is_line_mode_crlf(self):
        ws, cid = await self.connect_lines()
        await ws.send("X-Whatever: yes\r\n\r\nline one\r\nline two\r\n")
        await self.assert_next(ws, "line one")
        await self.assert_next(ws, "line two")
        await self.sentinel(ws, cid)

    async def test_other_content_type_is_one_text_message(self):
        ws, cid = await self.connect_lines()
        body = '{"a": 1}\nline2\n\n@send nobody x\n'
        await ws.send("Content-Type: application/json\n\n" + body)
        await self.assert_next(ws, body)
        await self.sentinel(ws, cid)

    async def test_octet_stream_is_one_binary_message(self):
        ws, cid = await self.connect_lines()
        await ws.send("Content-Type: application/octet-stream\r\n\r\nraw\nbytes\r\n")
        got = await self.recv(ws)
        self.assertEqual(got, b"raw\nbytes\r\n")
        await self.sentinel(ws, cid)

    async def test_invalid_utf8_line_dropped(self):
        ws, cid = await self.connect_lines()
        await ws.send(b"\xff\xfe bad\nok\n\xc3\x28\nalso ok")
        await self.assert_next(ws, "ok")
        await self.assert_next(ws, "also ok")
        await self.sentinel(ws, cid)
        # a whole-body text message that is not UTF-8 is dropped too
        await ws.send(b"Content-Type: application/json\n\n{\"a\": \"\xff\"}\n")
        await self.sentinel(ws, cid)


if __name__ == "__main__":
    unittest.main()
