"""The close event runs exactly once per opened connection, whatever ended it,
with the right code, reason and cause (lines.sh logs "CODE REASON CAUSE" to
/tmp/ws2http-pytest/<id>.close)."""

import asyncio
import unittest

from harness import ServerTestCase, complete_lines, data_path, unique, wait_for


class CloseTest(ServerTestCase):

    async def stop_server(self):
        return await asyncio.to_thread(self.server.stop)

    async def assert_once_after_shutdown(self, cid):
        """Close-exactly-once: after the server has exited there is still
        exactly one close record."""
        self.assertEqual(await self.stop_server(), 0)
        lines = complete_lines(data_path(cid + ".close"))
        self.assertIsNotNone(lines)
        self.assertEqual(len(lines), 1, lines)

    async def test_client_close_with_code_and_reason(self):
        ws, cid = await self.connect_lines()
        await ws.close(4001, "bye")
        self.assertEqual(await self.close_record_once(cid), ("4001", "bye", "client"))
        await self.assert_once_after_shutdown(cid)

    async def test_client_close_without_code_is_1005(self):
        ws, cid = await self.connect_lines()
        await ws.close(code=None)
        self.assertEqual(await self.close_record_once(cid), ("1005", "", "client"))

    async def test_client_close_1000_with_unicode_reason(self):
        ws, cid = await self.connect_lines()
        await ws.close(1000, "f\u00e4rdig")
        self.assertEqual(await self.close_record_once(cid), ("1000", "f\u00e4rdig", "client"))

    async def test_abrupt_tcp_drop_is_1006(self):
        ws, cid = await self.connect_lines()
        ws.transport.abort()
        code, _reason, cause = await self.close_record_once(cid)
        self.assertEqual((code, cause), ("1006", "dropped"))
        await self.assert_once_after_shutdown(cid)

    async def test_drop_during_running_message_script(self):
        ws = await self.connect("/stream.sh")
        greeting = await self.recv_text(ws)
        cid = greeting.split()[1]
        events = self.track(data_path(cid + ".events"))
        go = self.track(data_path(cid + ".go"))
        await ws.send("wait")
        await self.assert_next(ws, "first")
        ws.transport.abort()
        open(go, "w").close()
        lines = await self.wait_events(events, 3)
        # the close event runs after the message event finished, once
        self.assertEqual(lines, ["start wait", "end wait", "close 1006"])
        self.assertEqual(await self.stop_server(), 0)
        self.assertEqual(complete_lines(events), ["start wait", "end wait", "close 1006"])

    async def wait_events(self, path, n):
        return await wait_for(lambda: (complete_lines(path) or []) if
                              len(complete_lines(path) or []) >= n else None,
                              what="%d event log lines in %s" % (n, path))

    async def test_script_close_directive(self):
        ws, cid = await self.connect_lines()
        await ws.send("@close 4002 done")
        await ws.wait_closed()
        self.assertEqual((ws.close_code, ws.close_reason), (4002, "done"))
        self.assertEqual(await self.close_record_once(cid), ("4002", "done", "script"))
        await self.assert_once_after_shutdown(cid)

    async def test_api_close(self):
        ws, cid = await self.connect_lines()
        body = await self.api_ok("DELETE", "/connections/%s?code=4003&reason=admin" % cid)
        self.assertEqual(body, {"closed": 1})
        await ws.wait_closed()
        self.assertEqual((ws.close_code, ws.close_reason), (4003, "admin"))
        self.assertEqual(await self.close_record_once(cid), ("4003", "admin", "api"))
        status, _, _, err = await self.api("DELETE", "/connections/" + cid)
        self.assertEqual(status, 404)
        self.assertIsInstance(err.get("error"), str)
        await self.assert_once_after_shutdown(cid)

    async def test_api_close_default_code(self):
        ws, cid = await self.connect_lines()
        body = await self.api_ok("DELETE", "/connections/" + cid)
        self.assertEqual(body, {"closed": 1})
        await ws.wait_closed()
        self.assertEqual(ws.close_code, 1000)
        self.assertEqual(await self.close_record_once(cid), ("1000", "", "api"))

    async def test_shutdown_closes_everyone_with_1001(self):
        ws1, id1 = await self.connect_lines()
        ws2, id2 = await self.connect_lines()
        rc = await self.stop_server()
        self.assertEqual(rc, 0)
        await asyncio.wait_for(ws1.wait_closed(), 5)
        await asyncio.wait_for(ws2.wait_closed(), 5)
        self.assertEqual(ws1.close_code, 1001)
        self.assertEqual(ws2.close_code, 1001)
        for cid in (id1, id2):
            lines = complete_lines(data_path(cid + ".close"))
            self.assertIsNotNone(lines, "close event did not run before exit")
            self.assertEqual(len(lines), 1, lines)
            code, _, rest = lines[0].partition(" ")
            self.assertEqual(code, "1001")
            self.assertEqual(rest.rpartition(" ")[2], "shutdown")

    async def test_close_script_others_uses_rooms(self):
        room = unique("room-")
        ws1, id1 = await self.connect_lines("?room=" + room)
        ws2, id2 = await self.connect_lines("?room=" + room)
        await ws1.close(4001, "bye")
        await self.assert_next(ws2, "left " + id1)
        self.assertEqual(await self.close_record_once(id1), ("4001", "bye", "client"))
        await self.sentinel(ws2, id2)
        rooms = await self.api_ok("GET", "/rooms")
        self.assertEqual(rooms, {room: 1})

    async def test_failing_message_script_keeps_connection(self):
        ws, cid = await self.connect_lines()
        await ws.send("FAIL")
        await ws.send("after failure")
        await self.assert_next(ws, "after failure")
        await wait_for(lambda: ("lines.sh-fails-on-purpose-" + cid) in self.server.log_text(),
                       what="failing script's stderr in the log")
        info = await self.api_ok("GET", "/connections/" + cid)
        self.assertEqual(info["id"], cid)
        await ws.close(4005, "end")
        self.assertEqual(await self.close_record_once(cid), ("4005", "end", "client"))


if __name__ == "__main__":
    unittest.main()
