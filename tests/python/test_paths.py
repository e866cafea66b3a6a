"""Endpoint mapping under --cgi-bin and path traversal attempts.

Raw requests through http.client: the request-target goes out exactly as
written (a WebSocket client library might normalise it)."""

import os
import shutil
import tempfile
import unittest

from harness import Server, ServerTestCase, raw_upgrade

NOT_FOUND = [
    "/",
    "/nope.sh",
    "/sub",
    "/sub/",
    "/sub/nope.sh",
    "/.hidden.sh",
    "/sub/../env.sh",              # raw .. (even though it stays inside)
    "/../outside/outside.sh",
    "/../../../../bin/true",
    "/sub/../../outside/outside.sh",
    "/./env.sh",
    "/%2e%2e/outside/outside.sh",
    "/%2E%2E/outside/outside.sh",
    "/.%2e/outside/outside.sh",
    "/%2e./outside/outside.sh",
    "/sub/%2e%2e/env.sh",
    "/%2e/env.sh",
    "/sub%2fenv.sh",
    "/sub%2Fenv.sh",
    "/%2fbin%2ftrue",
    "/..%2foutside%2foutside.sh",
    "/%2e%2e%2foutside%2foutside.sh",
    "//bin/true",
    "//etc/passwd",
    "/escape.sh",                  # symlink pointing outside cgi-bin
    "/outdir/outside.sh",          # directory symlink pointing outside
    "/%2e%68idden.sh",             # encoded dotfile name
    "/%2ehidden.sh",
    "/env.sh%00.txt",
]


class PathTest(ServerTestCase):

    def test_control_requests_succeed(self):
        # the same raw request shape does work for real scripts
        for path in ["/quiet.sh", "/quiet.sh/extra/path", "/sub/pwd.sh", "/inside.sh",
                     "/quiet.sh?a=..%2f.."]:
            with self.subTest(path=path):
                status, _, _ = raw_upgrade(self.server.port, path)
                self.assert_status(status, 101, path)

    def test_traversal_and_missing_scripts_are_404(self):
        for path in NOT_FOUND:
            with self.subTest(path=path):
                status, _, _ = raw_upgrade(self.server.port, path)
                self.assert_status(status, 404, path)

    async def test_websocket_client_404(self):
        from websockets.exceptions import InvalidStatus
        for path in ["/nope.sh", "/%2e%2e/outside/outside.sh", "/escape.sh"]:
            with self.subTest(path=path):
                with self.assertRaises(InvalidStatus) as ctx:
                    await self.connect(path)
                self.assertEqual(ctx.exception.response.status_code, 404)
        self.assertEqual(await self.api_ok("GET", "/connections"), [])


class LateScriptTest(unittest.TestCase):

    def test_script_added_after_start_is_served(self):
        tmp = tempfile.mkdtemp(prefix="ws2http-cgi-")
        self.addCleanup(shutil.rmtree, tmp, True)
        server = Server(cgi_bin=tmp)
        self.addCleanup(server.kill)
        server.start()
        self.assertEqual(raw_upgrade(server.port, "/late.sh")[0], 404)
        path = os.path.join(tmp, "late.sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)
        self.assertEqual(raw_upgrade(server.port, "/late.sh")[0], 101)
        os.unlink(path)
        self.assertEqual(raw_upgrade(server.port, "/late.sh")[0], 404)
        self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
