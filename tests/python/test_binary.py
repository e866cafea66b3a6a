"""Binary payloads: all 256 byte values survive both directions."""

import unittest

from harness import ServerTestCase

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


if __name__ == "__main__":
    unittest.main()
