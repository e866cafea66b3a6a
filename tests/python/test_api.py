"""The control API: every route, exact JSON shapes and status codes, auth."""

import datetime
import re
import unittest

from harness import ServerTestCase, needs, unique

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
CONNECTION_KEYS = {"id", "endpoint", "remote_addr", "connected_at", "rooms", "metadata"}


class ApiTest(ServerTestCase):

    async def assert_error(self, method, path, status, body=None, headers=None, token=None):
        got, hdrs, raw, parsed = await self.api(method, path, body, headers, token)
        self.assertEqual(got, status, "%s %s -> %s %r" % (method, path, got, raw))
        self.assertTrue((hdrs.get("Content-Type") or "").startswith("application/json"),
                        "error Content-Type %r" % hdrs.get("Content-Type"))
        self.assertIsInstance(parsed, dict, raw)
        self.assertEqual(set(parsed), {"error"}, parsed)
        self.assertIsInstance(parsed["error"], str)
        self.assertTrue(parsed["error"])
        return parsed

    async def quiet_connection(self):
        ws = await self.connect("/quiet.sh")
        listed = await self.api_ok("GET", "/connections?endpoint=/quiet.sh")
        self.assertEqual(len(listed), 1, listed)
        return ws, listed[0]["id"]

    # -- POST /send/{id} ------------------------------------------------
    async def test_send_text(self):
        ws, cid = await self.connect_lines()
        body = await self.api_ok("POST", "/send/" + cid, "hello \u00e9 api\nsecond line",
                                 headers={"Content-Type": "text/plain; charset=utf-8"})
        self.assertEqual(body, {"delivered": 1})
        await self.assert_next(ws, "hello \u00e9 api\nsecond line")   # body verbatim, one message
        body = await self.api_ok("POST", "/send/" + cid, "@join x")     # no directive parsing
        await self.assert_next(ws, "@join x")
        body = await self.api_ok("POST", "/send/" + cid, "")
        self.assertEqual(body, {"delivered": 1})
        await self.assert_next(ws, "")

    async def test_send_without_content_type_is_text(self):
        ws, cid = await self.connect_lines()
        # bytes body: http.client adds no Content-Type header at all
        body = await self.api_ok("POST", "/send/" + cid, "no type \u00e9".encode())
        self.assertEqual(body, {"delivered": 1})
        got = await self.recv(ws)
        self.assertEqual(got, "no type \u00e9", "no Content-Type must mean a text message")
        body = await self.api_ok("POST", "/send/" + cid, b"form",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(await self.recv(ws), "form")

    async def test_send_binary(self):
        ws, cid = await self.connect_lines()
        data = bytes(range(256))
        body = await self.api_ok("POST", "/send/" + cid, data,
                                 headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(body, {"delivered": 1})
        got = await self.recv(ws)
        self.assertIsInstance(got, bytes)
        self.assertEqual(got, data)

    async def test_send_unknown_connection_is_404(self):
        await self.assert_error("POST", "/send/" + "0" * 32, 404, "x")
        await self.assert_error("POST", "/send/not-an-id", 404, "x")

    async def test_send_invalid_utf8_text_is_400(self):
        ws, cid = await self.connect_lines()
        await self.assert_error("POST", "/send/" + cid, 400, b"\xff\xfe",
                                headers={"Content-Type": "text/plain"})
        await self.sentinel(ws, cid)

    # -- POST /rooms/{room} ---------------------------------------------
    async def test_post_to_room(self):
        room = unique("room-")
        ws1, id1 = await self.connect_lines("?room=" + room)
        ws2, id2 = await self.connect_lines("?room=" + room)
        ws3, id3 = await self.connect_lines()
        body = await self.api_ok("POST", "/rooms/" + room, "to the room")
        self.assertEqual(body, {"delivered": 2})
        await self.assert_next(ws1, "to the room")
        await self.assert_next(ws2, "to the room")
        await self.sentinel(ws3, id3)
        body = await self.api_ok("POST", "/rooms/" + room, b"\x00\x01\xff",
                                 headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(body, {"delivered": 2})
        self.assertEqual(await self.recv(ws1), b"\x00\x01\xff")
        self.assertEqual(await self.recv(ws2), b"\x00\x01\xff")
        body = await self.api_ok("POST", "/rooms/" + unique("empty-"), "nobody")
        self.assertEqual(body, {"delivered": 0})

    # -- POST /broadcast --------------------------------------------------
    async def test_broadcast(self):
        ws1, id1 = await self.connect_lines()
        ws2, id2 = await self.connect_lines()
        q, qid = await self.quiet_connection()
        body = await self.api_ok("POST", "/broadcast", "everyone")
        self.assertEqual(body, {"delivered": 3})
        for ws in (ws1, ws2, q):
            await self.assert_next(ws, "everyone")
        body = await self.api_ok("POST", "/broadcast?endpoint=/lines.sh", "lines only")
        self.assertEqual(body, {"delivered": 2})
        await self.assert_next(ws1, "lines only")
        await self.assert_next(ws2, "lines only")
        await self.sentinel(q, qid)
        body = await self.api_ok("POST", "/broadcast?endpoint=/nope.sh", "nobody")
        self.assertEqual(body, {"delivered": 0})
        body = await self.api_ok("POST", "/broadcast", b"\x80bin",
                                 headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(body, {"delivered": 3})
        for ws in (ws1, ws2, q):
            self.assertEqual(await self.recv(ws), b"\x80bin")

    # -- POST /actions ----------------------------------------------------
    async def test_actions(self):
        room = unique("room-")
        wa, ida = await self.connect_lines("?room=" + room)
        wb, idb = await self.connect_lines()
        q, qid = await self.quiet_connection()
        body = await self.api_ok("POST", "/actions",
                                 "@send %s a\n\n@room %s b\r\n@broadcast c\n" % (ida, room))
        self.assertEqual(body, {"applied": 3, "delivered": 5})
        await self.assert_next(wa, "a")
        await self.assert_next(wa, "b")
        await self.assert_next(wa, "c")
        await self.assert_next(wb, "c")      # @broadcast here = every connection
        await self.assert_next(q, "c")
        await self.sentinel(wb, idb)

    async def test_actions_with_explicit_connection(self):
        room = unique("room-")
        wa, ida = await self.connect_lines()
        wb, idb = await self.connect_lines()
        body = await self.api_ok("POST", "/actions",
                                 "@join %s %s\n@set %s nick bob\n@room %s hi\n"
                                 % (idb, room, idb, room))
        self.assertEqual(body, {"applied": 3, "delivered": 1})
        await self.assert_next(wb, "hi")
        info = await self.api_ok("GET", "/connections/" + idb)
        self.assertEqual(info["rooms"], [room])
        self.assertEqual(info["metadata"], {"nick": "bob"})
        body = await self.api_ok("POST", "/actions",
                                 "@leave %s %s\n@set %s nick\n@close %s 4004 closed by api\n"
                                 % (idb, room, idb, ida))
        self.assertEqual(body, {"applied": 3, "delivered": 0})
        await wa.wait_closed()
        self.assertEqual((wa.close_code, wa.close_reason), (4004, "closed by api"))
        self.assertEqual(await self.close_record_once(ida), ("4004", "closed by api", "api"))
        info = await self.api_ok("GET", "/connections/" + idb)
        self.assertEqual(info["rooms"], [])
        self.assertEqual(info["metadata"], {})
        self.assertEqual(await self.api_ok("GET", "/rooms"), {})

    async def test_actions_errors_apply_nothing(self):
        room = unique("room-")
        wa, ida = await self.connect_lines("?room=" + room)
        for bad in ["plain text line", "@others %s x" % room, "@binary AAAA",
                    "@join %s" % room, "@leave %s" % room, "@close", "@@escaped"]:
            with self.subTest(bad=bad):
                await self.assert_error("POST", "/actions", 400,
                                        "@send %s before\n%s\n@send %s after\n" % (ida, bad, ida))
                await self.sentinel(wa, ida)
        info = await self.api_ok("GET", "/connections/" + ida)
        self.assertEqual(info["rooms"], [room])

    # -- GET /connections ---------------------------------------------------
    def check_connection(self, obj, cid, endpoint, ws, rooms, metadata):
        self.assertEqual(set(obj), CONNECTION_KEYS, obj)
        self.assertEqual(obj["id"], cid)
        self.assertEqual(obj["endpoint"], endpoint)
        self.assertEqual(obj["remote_addr"], "127.0.0.1:%d" % ws.local_address[1])
        self.assertRegex(obj["connected_at"], RFC3339_UTC)
        at = datetime.datetime.fromisoformat(obj["connected_at"].replace("Z", "+00:00"))
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - at).total_seconds()), 120, obj["connected_at"])
        self.assertEqual(obj["rooms"], rooms)
        self.assertEqual(obj["metadata"], metadata)

    async def test_connections_list_and_filters(self):
        wa, ida = await self.connect_lines("?room=zz")
        await wa.send("@join aa\n@set nick alice\n@set Lang de\nready")
        await self.assert_next(wa, "ready")
        wb, idb = await self.connect_lines()
        q, qid = await self.quiet_connection()
        listed = await self.api_ok("GET", "/connections")
        self.assertIsInstance(listed, list)
        by_id = {c["id"]: c for c in listed}
        self.assertEqual(set(by_id), {ida, idb, qid})
        self.check_connection(by_id[ida], ida, "/lines.sh", wa, ["aa", "zz"],
                              {"nick": "alice", "Lang": "de"})
        self.check_connection(by_id[idb], idb, "/lines.sh", wb, [], {})
        self.check_connection(by_id[qid], qid, "/quiet.sh", q, [], {})
        ids = lambda items: sorted(c["id"] for c in items)
        self.assertEqual(ids(await self.api_ok("GET", "/connections?room=zz")), [ida])
        self.assertEqual(ids(await self.api_ok("GET", "/connections?endpoint=/lines.sh")),
                         sorted([ida, idb]))
        self.assertEqual(ids(await self.api_ok("GET", "/connections?endpoint=/quiet.sh")), [qid])
        self.assertEqual(await self.api_ok("GET", "/connections?room=zz&endpoint=/quiet.sh"), [])
        self.assertEqual(ids(await self.api_ok("GET", "/connections?room=aa&endpoint=/lines.sh")),
                         [ida])
        self.assertEqual(await self.api_ok("GET", "/connections?room=nope"), [])

    async def test_connection_by_id(self):
        wa, ida = await self.connect_lines()
        await wa.send("@set k v\n@join r\nok")
        await self.assert_next(wa, "ok")
        obj = await self.api_ok("GET", "/connections/" + ida)
        self.check_connection(obj, ida, "/lines.sh", wa, ["r"], {"k": "v"})
        listed = await self.api_ok("GET", "/connections")
        self.assertEqual(listed, [obj])
        await self.assert_error("GET", "/connections/" + "f" * 32, 404)
        await wa.close()
        await self.close_record_once(ida)
        await self.assert_error("GET", "/connections/" + ida, 404)
        self.assertEqual(await self.api_ok("GET", "/connections"), [])

    async def test_rooms_counts(self):
        wa, ida = await self.connect_lines("?room=r1")
        wb, idb = await self.connect_lines("?room=r1")
        await wb.send("@join r2\nok")
        await self.assert_next(wb, "ok")
        self.assertEqual(await self.api_ok("GET", "/rooms"), {"r1": 2, "r2": 1})
        await wb.close()
        await self.close_record_once(idb)
        self.assertEqual(await self.api_ok("GET", "/rooms"), {"r1": 1})

    async def test_delete_unknown_is_404(self):
        await self.assert_error("DELETE", "/connections/" + "0" * 32, 404)

    @needs("curl")
    async def test_script_pushes_later_through_api(self):
        ws = await self.connect("/push.sh")
        await ws.send("later \u00e9")
        await self.assert_next(ws, "pushed: later \u00e9")

    async def test_no_token_needed_without_api_token(self):
        self.assertEqual(await self.api_ok("GET", "/rooms"), {})
        self.assertEqual(await self.api_ok("GET", "/rooms", token="anything"), {})


class ApiAuthTest(ServerTestCase):
    token = "s3cret-t0ken"
    server_args = ["--api-token", token]

    async def test_every_route_needs_the_token(self):
        ws, cid = await self.connect_lines()      # the WebSocket side needs no token
        routes = [
            ("POST", "/send/" + cid, "x"),
            ("POST", "/rooms/r", "x"),
            ("POST", "/broadcast", "x"),
            ("POST", "/broadcast?endpoint=/lines.sh", "x"),
            ("POST", "/actions", "@broadcast x"),
            ("GET", "/connections", None),
            ("GET", "/connections?room=r", None),
            ("GET", "/connections/" + cid, None),
            ("GET", "/rooms", None),
            ("DELETE", "/connections/" + cid, None),
        ]
        bad_headers = [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer " + self.token + "x"},
            {"Authorization": "Bearer " + self.token[:-1]},
            {"Authorization": "Bearer "},
            {"Authorization": self.token},
            {"Authorization": "Basic " + self.token},
        ]
        for method, path, body in routes:
            for headers in bad_headers:
                with self.subTest(method=method, path=path, headers=headers):
                    status, hdrs, raw, parsed = await self.api(method, path, body, headers)
                    self.assertEqual(status, 401, raw)
                    self.assertIsInstance(parsed, dict, raw)
                    self.assertIsInstance(parsed.get("error"), str)
        # nothing was delivered or closed by the refused calls
        await self.sentinel_with_token(ws, cid)
        # and with the right token every route works
        self.assertEqual(await self.api_ok("POST", "/send/" + cid, "hi", token=self.token),
                         {"delivered": 1})
        await self.assert_next(ws, "hi")
        self.assertEqual(await self.api_ok("GET", "/rooms", token=self.token), {})
        listed = await self.api_ok("GET", "/connections", token=self.token)
        self.assertEqual([c["id"] for c in listed], [cid])
        self.assertEqual(await self.api_ok("POST", "/broadcast", "all", token=self.token),
                         {"delivered": 1})
        await self.assert_next(ws, "all")
        self.assertEqual(await self.api_ok("POST", "/actions", "@send %s act" % cid,
                                           token=self.token),
                         {"applied": 1, "delivered": 1})
        await self.assert_next(ws, "act")
        self.assertEqual(await self.api_ok("DELETE", "/connections/" + cid, token=self.token),
                         {"closed": 1})
        await ws.wait_closed()

    async def sentinel_with_token(self, ws, cid):
        mark = unique("sentinel-")
        self.assertEqual(await self.api_ok("POST", "/send/" + cid, mark, token=self.token),
                         {"delivered": 1})
        await self.assert_next(ws, mark)

    @needs("curl")
    async def test_script_pushes_later_through_api(self):
        ws = await self.connect("/push.sh")
        await ws.send("hello")
        await self.assert_next(ws, "pushed: hello")

    async def test_script_sees_token(self):
        ws, env = await self.connect_env("/env.sh")
        self.assertEqual(env["WS_API_TOKEN"], self.token)
        self.assertEqual(env["WS_API_URL"], "http://127.0.0.1:%d" % self.server.api_port)


if __name__ == "__main__":
    unittest.main()
