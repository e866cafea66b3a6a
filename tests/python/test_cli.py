"""Command line: startup lines, env-var flags, refusing an exposed API without
a token, signals."""

import signal
import unittest

import harness
from harness import Server, ServerTestCase

LINE1 = r"^ws2http: listening on http://127\.0\.0\.1:(\d+)$"
LINE2 = r"^ws2http: control API on http://127\.0\.0\.1:(\d+)$"


class CliTest(unittest.TestCase):

    def start(self, **kw):
        server = Server(**kw)
        self.addCleanup(server.kill)
        return server.start()

    def test_startup_lines(self):
        server = self.start()
        self.assertEqual(len(server.stdout_lines), 2, server.stdout_lines)
        self.assertRegex(server.stdout_lines[0], LINE1)
        self.assertRegex(server.stdout_lines[1], LINE2)
        self.assertNotEqual(server.port, 0)
        self.assertNotEqual(server.api_port, 0)
        self.assertNotEqual(server.port, server.api_port)
        self.assertEqual(server.stop(), 0)
        self.assertEqual(len(server.stdout_lines), 2, server.stdout_lines)

    def test_sigint_exits_zero(self):
        server = self.start()
        server.proc.send_signal(signal.SIGINT)
        self.assertEqual(server.proc.wait(15), 0)

    def test_refuses_public_api_without_token(self):
        server = Server(api_listen="0.0.0.0:0").spawn()
        self.addCleanup(server.kill)
        rc, out, log = server.wait_exit()
        self.assertNotEqual(rc, 0)
        self.assertFalse(any("control API on" in line for line in out), out)
        self.assertIn("token", log.lower())

    def test_refuses_public_api_from_env_without_token(self):
        server = Server(use_flags=False, env={
            "WS2HTTP_LISTEN": "127.0.0.1:0", "WS2HTTP_API_LISTEN": "0.0.0.0:0",
            "WS2HTTP_CGI_BIN": harness.CGI_BIN_REL}).spawn()
        self.addCleanup(server.kill)
        rc, out, log = server.wait_exit()
        self.assertNotEqual(rc, 0)

    def test_env_var_flags(self):
        server = self.start(use_flags=False, env={
            "WS2HTTP_LISTEN": "127.0.0.1:0", "WS2HTTP_API_LISTEN": "127.0.0.1:0",
            "WS2HTTP_CGI_BIN": harness.CGI_BIN_REL, "WS2HTTP_API_TOKEN": "envtok"})
        status, _, _, parsed = server.api("GET", "/rooms")
        self.assertEqual(status, 401)
        status, _, _, parsed = server.api("GET", "/rooms", token="envtok")
        self.assertEqual((status, parsed), (200, {}))
        status, _, _ = harness.raw_upgrade(server.port, "/quiet.sh")
        self.assertEqual(status, 101)
        self.assertEqual(server.stop(), 0)


class PublicApiWithTokenTest(ServerTestCase):
    server_args = ["--api-token", "pub-token"]

    def make_server(self, **kw):
        kw["api_listen"] = "0.0.0.0:0"
        return super().make_server(**kw)

    async def test_api_url_is_loopback_form(self):
        ws, env = await self.connect_env("/env.sh")
        self.assertEqual(env["WS_API_URL"], "http://127.0.0.1:%d" % self.server.api_port)
        self.assertEqual(env["WS_API_TOKEN"], "pub-token")
        self.assertEqual(await self.api_ok("GET", "/rooms", token="pub-token"), {})


if __name__ == "__main__":
    unittest.main()
