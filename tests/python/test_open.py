"""The open event: authentication by status, Set-Cookie, subprotocols,
failing/crashing/slow scripts, handlers."""

import unittest

from websockets.exceptions import InvalidStatus

from harness import ServerTestCase, data_path, needs, read_file, unique, wait_for


class OpenTest(ServerTestCase):

    async def expect_rejected(self, path, status, **kw):
        with self.assertRaises(InvalidStatus) as ctx:
            await self.connect(path, **kw)
        self.assertEqual(ctx.exception.response.status_code, status,
                         "server log:\n" + self.server.log_text()[-3000:])
        return ctx.exception.response

    async def test_open_rejected_with_403_and_body(self):
        resp = await self.expect_rejected("/auth.sh", 403)
        self.assertEqual(resp.headers.get("X-Reason"), "missing-cookie")
        # exact raw response through a plain HTTP client as well
        status, headers, body = await self.raw("/auth.sh")
        self.assertEqual(status, 403)
        self.assertEqual(body, b"no cookie\n")
        self.assertTrue(headers.get("Content-Type", "").startswith("text/plain"),
                        headers.get("Content-Type"))
        self.assertEqual(headers.get("X-Reason"), "missing-cookie")
        self.assertIsNone(headers.get("Status"))
        self.assertEqual(await self.api_ok("GET", "/connections"), [])

    async def test_rejected_open_never_gets_close_event(self):
        tag = unique("tag")
        id_file = self.track(data_path("auth-%s.id" % tag))
        await self.expect_rejected("/auth.sh", 403, additional_headers={"X-Test-Tag": tag})
        cid = (await wait_for(lambda: read_file(id_file), what="open id")).strip()
        self.assertRegex(cid, r"^[0-9a-f]{32}$")
        close_file = self.track(data_path(cid + ".close"))
        # a connection that succeeds afterwards gets its close event ...
        tag2 = unique("tag")
        id_file2 = self.track(data_path("auth-%s.id" % tag2))
        ws = await self.connect("/auth.sh", additional_headers={
            "Cookie": "session=ok", "X-Test-Tag": tag2})
        await self.assert_next(ws, "welcome")
        cid2 = read_file(id_file2).strip()
        await ws.close(4000, "done")
        self.assertEqual(await self.close_record_once(cid2), ("4000", "done", "client"))
        # ... and after a clean shutdown the rejected one still has none
        self.assertEqual(await self.stop_server(), 0)
        self.assertIsNone(read_file(close_file))

    async def stop_server(self):
        import asyncio
        return await asyncio.to_thread(self.server.stop)

    async def test_open_accepted_with_cookie_set_cookie_and_welcome(self):
        ws = await self.connect("/auth.sh", additional_headers={"Cookie": "a=b; session=ok"})
        cookies = ws.response.headers.get_all("Set-Cookie")
        self.assertEqual(sorted(cookies), sorted(["seen=1; Path=/", "lang=en"]))
        self.assertEqual(ws.response.status_code, 101)
        self.assertIsNone(ws.subprotocol)
        self.assertIsNone(ws.response.headers.get("Sec-WebSocket-Protocol"))
        await self.assert_next(ws, "welcome")
        await ws.send("echo me")
        await self.assert_next(ws, "echo me")

    async def test_subprotocol_selected_by_script(self):
        ws = await self.connect("/auth.sh", subprotocols=["chat.v1", "chat.v2"],
                                additional_headers={"Cookie": "session=ok"})
        self.assertEqual(ws.subprotocol, "chat.v2")
        self.assertEqual(ws.response.headers.get("Sec-WebSocket-Protocol"), "chat.v2")
        await self.assert_next(ws, "welcome")

    async def test_crashing_open_script_is_500(self):
        await self.expect_rejected("/crash.sh", 500)
        status, _, body = await self.raw("/crash.sh")
        self.assertEqual(status, 500)
        self.assertNotIn(b"never", body)
        self.assertEqual(await self.api_ok("GET", "/connections"), [])

    async def test_failing_open_script_is_500_and_stderr_logged(self):
        await self.expect_rejected("/fail.sh", 500)
        await wait_for(lambda: "fail.sh-stderr-marker" in self.server.log_text(),
                       what="script stderr in the server log")
        self.assertEqual(await self.api_ok("GET", "/connections"), [])

    async def test_not_executable_script_is_500(self):
        status, _, _ = await self.raw("/notexec.sh")
        self.assert_status(status, 500, "/notexec.sh")
        await wait_for(lambda: "notexec.sh" in self.server.log_text(),
                       what="a log line naming the script")

    async def test_handler_needed_for_non_executable(self):
        status, _, _ = await self.raw("/handled.txt")
        self.assert_status(status, 500, "/handled.txt")

    async def test_plain_http_upgrade_gets_101(self):
        status, headers, _ = await self.raw("/quiet.sh")
        self.assertEqual(status, 101)
        self.assertEqual(headers.get("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


class TimeoutTest(ServerTestCase):
    server_args = ["--timeout", "1"]

    async def test_slow_open_script_is_500(self):
        status, _, _ = await self.raw("/hang.sh", timeout=15)
        self.assert_status(status, 500, "/hang.sh")
        ws, cid = await self.connect_lines()      # server still fine
        await ws.send("ok")
        await self.assert_next(ws, "ok")


class HandlerTest(ServerTestCase):
    server_args = ["--handler", "txt=/bin/sh -e"]

    async def test_handler_runs_script_with_arguments(self):
        ws = await self.connect("/handled.txt")
        flags = await self.recv_text(ws)
        self.assertRegex(flags, r"^flags \S*e\S*$")
        await self.assert_next(ws, "handled open")
        await ws.send("x")
        await self.assert_next(ws, flags)
        await self.assert_next(ws, "handled message")


@needs("php")
class PhpTest(ServerTestCase):

    async def test_php_cgi_default_handler(self):
        with self.assertRaises(InvalidStatus) as ctx:
            await self.connect("/hello.php")
        self.assertEqual(ctx.exception.response.status_code, 403)
        status, _, body = await self.raw("/hello.php")
        self.assertEqual(status, 403)
        self.assertEqual(body, b"php says no\n")
        ws = await self.connect("/hello.php", additional_headers={"Cookie": "php=yes"})
        greeting = await self.recv_text(ws)
        self.assertRegex(greeting, r"^php open [0-9a-f]{32}$")
        cid = greeting.split()[-1]
        info = await self.api_ok("GET", "/connections/" + cid)
        self.assertEqual(info["rooms"], ["php-room"])
        self.assertEqual(info["endpoint"], "/hello.php")
        await ws.send("h\u00e9 there")
        await self.assert_next(ws, "php got h\u00e9 there")


if __name__ == "__main__":
    unittest.main()
