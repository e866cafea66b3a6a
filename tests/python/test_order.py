"""Ordering within a connection, parallelism across connections, streaming."""

import unittest

from harness import ServerTestCase, complete_lines, data_path, wait_for


class OrderTest(ServerTestCase):

    async def connect_stream(self):
        ws = await self.connect("/stream.sh")
        greeting = await self.recv_text(ws)
        self.assertRegex(greeting, r"^id [0-9a-f]{32}$")
        cid = greeting[3:]
        self.track(data_path(cid + ".events"))
        self.track(data_path(cid + ".go"))
        return ws, cid

    def go(self, cid):
        with open(data_path(cid + ".go"), "w"):
            pass

    async def test_messages_processed_in_order(self):
        ws, cid = await self.connect_lines()
        for i in range(40):
            await ws.send("m%d" % i)
        for i in range(40):
            await self.assert_next(ws, "m%d" % i)

    async def test_output_streams_while_script_runs(self):
        ws, cid = await self.connect_stream()
        await ws.send("wait")
        # "first" must arrive while the script is still waiting for us
        await self.assert_next(ws, "first")
        events = complete_lines(data_path(cid + ".events"))
        self.assertEqual(events, ["start wait"])
        self.go(cid)
        await self.assert_next(ws, "second")

    async def test_next_event_waits_for_previous(self):
        ws, cid = await self.connect_stream()
        other, other_id = await self.connect_lines()
        await ws.send("wait")
        await self.assert_next(ws, "first")
        await ws.send("x")
        await ws.send("y")
        # meanwhile another connection is served (events of different
        # connections run in parallel)
        await other.send("ping")
        await self.assert_next(other, "ping")
        self.assertEqual(complete_lines(data_path(cid + ".events")), ["start wait"])
        self.go(cid)
        await self.assert_next(ws, "second")
        await self.assert_next(ws, "x")
        await self.assert_next(ws, "y")
        events = await wait_for(
            lambda: (lambda l: l if l and len(l) >= 6 else None)(
                complete_lines(data_path(cid + ".events"))),
            what="event log")
        self.assertEqual(events, ["start wait", "end wait", "start x", "end x",
                                  "start y", "end y"])

    async def test_connections_run_in_parallel(self):
        a, ida = await self.connect_stream()
        b, idb = await self.connect_stream()
        await a.send("wait")
        await self.assert_next(a, "first")
        await b.send("wait")
        await self.assert_next(b, "first")       # b runs while a's script waits
        self.go(idb)
        await self.assert_next(b, "second")
        self.go(ida)
        await self.assert_next(a, "second")


if __name__ == "__main__":
    unittest.main()
