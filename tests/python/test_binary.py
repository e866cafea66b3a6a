"""Binary payloads: all 256 byte values survive both directions."""

import asyncio
import random
import unittest

from harness import TIMEOUT, ServerTestCase

ALL_BYTES = bytes(range(256))


class BinaryTest(ServerTestCase):

    async def echo(self, payload):
        ws = await self.connect("/binecho.sh")
        await ws.send(payload)
        return ws, await self.recv(ws)

    async def test_all_256_byte_values_round_trip(self):
        ws, got = await self.echo(ALL_BYTES)
        self.assertIsInstance(got, bytes)
        self.assertEqual(got, ALL_BYTES)
        # reversed, and several times on one connection (events in order)
        for payload in (ALL_BYTES[::-1], b"\x00", b"\r\n\r\n", b"\n" * 10, ALL_BYTES * 4):
            await ws.send(payload)
            self.assertEqual(await self.recv(ws), payload)

    async def test_empty_binary_message(self):
        ws, got = await self.echo(b"")
        self.assertEqual(got, b"")

    async def test_text_message_bytes_reach_stdin_exactly(self):
        text = "h\u00e9llo\r\nw\u00f6rld \u20ac \U0001F600\n\n"
        ws, got = await self.echo(text)
        self.assertIsInstance(got, bytes)
        self.assertEqual(got, text.encode("utf-8"))

    async def test_large_binary_payload(self):
        # larger than a pipe buffer in both directions
        payload = bytes((i * 7 + i // 256) % 256 for i in range(256 * 1024))
        ws, got = await self.echo(payload)
        self.assertEqual(len(got), len(payload))
        self.assertEqual(got, payload)

    async def test_pipelined_messages_pings_and_fragments_come_back_in_order(self):
        # After each message event a follower thread may read the socket
        # (16 KiB at once), run the whole messages at its head and give the
        # rest back to the reader (ws::follow): whichever reads them, each
        # message comes back once, whole and in order, and each ping is
        # answered.
        ws = await self.connect("/binecho.sh")
        rng = random.Random(22)
        sizes = [1, 50, 300, 5000, 16 * 1024 - 6, 20000, 70000]
        for burst in range(8):
            payloads = [rng.randbytes(rng.choice(sizes)) for _ in range(12)]
            pongs = []
            for i, payload in enumerate(payloads):
                if i % 4 == 1:
                    half = len(payload) // 2
                    await ws.send([payload[:half], payload[half:]])
                else:
                    await ws.send(payload)
                if i % 5 == 2:
                    pongs.append(await ws.ping(b"%d-%d" % (burst, i)))
            for i, payload in enumerate(payloads):
                got = await self.recv(ws)
                self.assertEqual(got, payload, "burst %d, message %d (%d bytes)" % (burst, i, len(payload)))
            for pong in pongs:
                await asyncio.wait_for(pong, TIMEOUT)


if __name__ == "__main__":
    unittest.main()
