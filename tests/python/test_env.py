"""The CGI environment of every event (RFC 3875 §4.1 plus the WS_* variables)."""

import os
import unittest

import harness
from harness import (CGI_BIN, HEX32, LEAK_NAME, ServerTestCase, data_path,
                     parse_env, read_file, wait_for)

# Everything a script may ever see (contract: "only these, plus PATH and
# names given by --pass-env"), HTTP_* and WS_META_* handled separately.
ALLOWED = {
    "GATEWAY_INTERFACE", "SERVER_SOFTWARE", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "REQUEST_METHOD", "SCRIPT_NAME", "SCRIPT_FILENAME",
    "PATH_INFO", "PATH_TRANSLATED", "QUERY_STRING", "REQUEST_URI",
    "REMOTE_ADDR", "REMOTE_PORT", "CONTENT_LENGTH", "CONTENT_TYPE",
    "REDIRECT_STATUS", "WS_EVENT", "WS_CONNECTION_ID", "WS_MESSAGE_TYPE",
    "WS_CLOSE_CODE", "WS_CLOSE_REASON", "WS_CLOSE_CAUSE", "WS_ROOMS",
    "WS_API_URL", "WS_API_TOKEN", "PATH", "REQUEST_SCHEME", "HTTPS",
}
# Present in every event.
ALWAYS = {
    "GATEWAY_INTERFACE", "SERVER_SOFTWARE", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "REQUEST_METHOD", "SCRIPT_NAME", "SCRIPT_FILENAME",
    "QUERY_STRING", "REQUEST_URI", "REMOTE_ADDR", "REMOTE_PORT",
    "REDIRECT_STATUS", "WS_EVENT", "WS_CONNECTION_ID", "WS_API_URL", "PATH",
    "REQUEST_SCHEME",
}

CUSTOM_HEADERS = [
    ("X-Custom-Header", "hello world"),
    ("X-Multi", "a"),
    ("X-Multi", "b"),
    ("Cookie", "flavour=oat"),
    ("X-Dump-Close", "yes"),           # env.sh writes its close-event dump
    ("Proxy", "http://127.0.0.1:9"),   # httpoxy: must never become HTTP_PROXY
]
USER_AGENT = "ws2http-pytest/1.0"


def expected_http(ws, port):
    """The HTTP_* variables of an upgrade request sent with CUSTOM_HEADERS,
    written out (docs/PROTOCOL.md, Environment: name uppercased, `-` -> `_`,
    repeats joined with ", "; no HTTP_PROXY). Only the random key is taken
    from the request."""
    return {
        "HTTP_HOST": "127.0.0.1:%d" % port,
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": ws.request.headers["Sec-WebSocket-Key"],
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_SEC_WEBSOCKET_EXTENSIONS": "permessage-deflate; client_max_window_bits",
        "HTTP_USER_AGENT": USER_AGENT,
        "HTTP_X_CUSTOM_HEADER": "hello world",
        "HTTP_X_MULTI": "a, b",
        "HTTP_COOKIE": "flavour=oat",
        "HTTP_X_DUMP_CLOSE": "yes",
    }


class EnvironmentTest(ServerTestCase):

    def check_clean(self, env, ws, extra=()):
        http = expected_http(ws, self.server.port)
        for key in env:
            if key.startswith("HTTP_"):
                self.assertIn(key, http, "unexpected header variable %s" % key)
            elif key.startswith("WS_META_"):
                continue
            else:
                self.assertTrue(key in ALLOWED or key in extra,
                                "variable %s=%r is not part of the contract" % (key, env[key]))
        self.assertNotIn(LEAK_NAME, env)
        self.assertNotIn("HTTP_PROXY", env)
        for key in ALWAYS:
            self.assertIn(key, env, "missing %s" % key)

    def check_http(self, env, ws):
        got = {k: v for k, v in env.items() if k.startswith("HTTP_")}
        self.assertEqual(got, expected_http(ws, self.server.port))

    def check_common(self, env, ws, script_name, query, uri, path_info=None):
        self.check_clean(env, ws)
        self.check_http(env, ws)
        self.assertEqual(env["GATEWAY_INTERFACE"], "CGI/1.1")
        self.assertRegex(env["SERVER_SOFTWARE"], r"^ws2http/\d+\.\d+\.\d+")
        self.assertEqual(env["SERVER_NAME"], "127.0.0.1")
        self.assertEqual(env["SERVER_PORT"], str(self.server.port))
        self.assertEqual(env["SERVER_PROTOCOL"], "HTTP/1.1")
        self.assertEqual(env["SCRIPT_NAME"], script_name)
        filename = env["SCRIPT_FILENAME"]
        self.assertTrue(os.path.isabs(filename), filename)
        self.assertEqual(os.path.realpath(filename),
                         os.path.realpath(os.path.join(CGI_BIN, script_name.lstrip("/"))))
        self.assertEqual(env["QUERY_STRING"], query)
        self.assertEqual(env["REQUEST_URI"], uri)
        self.assertEqual(env["REMOTE_ADDR"], "127.0.0.1")
        self.assertEqual(env["REMOTE_PORT"], str(ws.local_address[1]))
        self.assertEqual(env["REDIRECT_STATUS"], "200")
        self.assertRegex(env["WS_CONNECTION_ID"], HEX32)
        self.assertEqual(env["WS_API_URL"], "http://127.0.0.1:%d" % self.server.api_port)
        self.assertEqual(env.get("WS_API_TOKEN", ""), "")
        self.assertTrue(env["PATH"])
        if path_info:
            self.assertEqual(env["PATH_INFO"], path_info)
            translated = env["PATH_TRANSLATED"]
            self.assertTrue(os.path.isabs(translated), translated)
            self.assertTrue(translated.endswith(path_info), translated)
        else:
            self.assertEqual(env.get("PATH_INFO", ""), "")
            self.assertEqual(env.get("PATH_TRANSLATED", ""), "")

    async def open_env(self, path="/env.sh/a/b?x=1&y=a%20b&z"):
        return await self.connect_env(path, additional_headers=CUSTOM_HEADERS,
                                      user_agent_header=USER_AGENT)

    async def test_open_event_environment(self):
        ws, env = await self.open_env()
        self.check_common(env, ws, "/env.sh", "x=1&y=a%20b&z",
                          "/env.sh/a/b?x=1&y=a%20b&z", "/a/b")
        self.assertEqual(env["REQUEST_METHOD"], "GET")
        self.assertEqual(env["WS_EVENT"], "open")
        self.assertEqual(env.get("WS_ROOMS", ""), "")
        self.assertEqual(env.get("CONTENT_LENGTH", "0"), "0")
        self.assertFalse([k for k in env if k.startswith("WS_META_")])
        self.assertNotIn("WS_CLOSE_CODE", env)
        self.assertNotIn("WS_CLOSE_REASON", env)

    async def test_text_message_environment(self):
        ws, open_env = await self.open_env()
        payload = "h\u00e9llo \u20ac"      # 10 bytes in UTF-8
        await ws.send(payload)
        env = parse_env(await self.recv_text(ws))
        self.check_common(env, ws, "/env.sh", "x=1&y=a%20b&z",
                          "/env.sh/a/b?x=1&y=a%20b&z", "/a/b")
        self.assertEqual(env["REQUEST_METHOD"], "POST")
        self.assertEqual(env["WS_EVENT"], "message")
        self.assertEqual(env["WS_MESSAGE_TYPE"], "text")
        self.assertEqual(env["CONTENT_LENGTH"], "10")
        self.assertEqual(env["CONTENT_TYPE"], "text/plain; charset=utf-8")
        self.assertEqual(env["WS_CONNECTION_ID"], open_env["WS_CONNECTION_ID"])
        self.assertNotIn("WS_CLOSE_CODE", env)

    async def test_binary_message_environment(self):
        ws, open_env = await self.open_env()
        payload = b"\xff\xfe binary \x01\x02"
        await ws.send(payload)
        env = parse_env(await self.recv_text(ws))
        self.check_common(env, ws, "/env.sh", "x=1&y=a%20b&z",
                          "/env.sh/a/b?x=1&y=a%20b&z", "/a/b")
        self.assertEqual(env["REQUEST_METHOD"], "POST")
        self.assertEqual(env["WS_EVENT"], "message")
        self.assertEqual(env["WS_MESSAGE_TYPE"], "binary")
        self.assertEqual(env["CONTENT_LENGTH"], str(len(payload)))
        self.assertEqual(env["CONTENT_TYPE"], "application/octet-stream")
        self.assertEqual(env["WS_CONNECTION_ID"], open_env["WS_CONNECTION_ID"])

    async def test_rooms_and_metadata_variables(self):
        ws, _ = await self.open_env()
        await ws.send("@join zeta\n@join alpha\n@set Nick bob\n@set snake_case_2 v\n"
                      "@set Greeting hello world\n@set bad-key nope\n@join alpha")
        await ws.send("env")
        env = parse_env(await self.recv_text(ws))   # nothing was sent as text before it
        self.assertEqual(env["WS_ROOMS"], "alpha zeta")
        metas = {k: v for k, v in env.items() if k.startswith("WS_META_")}
        self.assertEqual(metas, {"WS_META_Nick": "bob", "WS_META_snake_case_2": "v",
                                 "WS_META_Greeting": "hello world"})
        await ws.send("@set Nick\n@set Greeting \n@leave zeta")
        await ws.send("env")
        env = parse_env(await self.recv_text(ws))
        self.assertEqual(env["WS_ROOMS"], "alpha")
        metas = {k: v for k, v in env.items() if k.startswith("WS_META_")}
        self.assertEqual(metas, {"WS_META_snake_case_2": "v"})
        await ws.send("@leave alpha")
        await ws.send("env")
        env = parse_env(await self.recv_text(ws))
        self.assertEqual(env.get("WS_ROOMS", ""), "")

    async def test_close_event_environment(self):
        ws, open_env = await self.open_env()
        cid = open_env["WS_CONNECTION_ID"]
        await ws.send("@join room-b\n@join room-a\n@set Nick carol")
        await ws.send("env")     # round trip: the directives are applied
        await self.recv_text(ws)
        local_port = ws.local_address[1]
        await ws.close(4001, "bye")
        path = data_path(cid + ".close.env")
        text = await wait_for(lambda: read_file(path), what="close env dump")
        env = parse_env(text)
        # ws.request is still the upgrade request; REMOTE_PORT from before
        self.check_clean(env, ws)
        self.check_http(env, ws)
        self.assertEqual(env["WS_EVENT"], "close")
        self.assertEqual(env["REQUEST_METHOD"], "POST")
        self.assertEqual(env["CONTENT_LENGTH"], "0")
        self.assertEqual(env["WS_CLOSE_CODE"], "4001")
        self.assertEqual(env["WS_CLOSE_REASON"], "bye")
        self.assertEqual(env["WS_CLOSE_CAUSE"], "client")
        self.assertEqual(env["WS_CONNECTION_ID"], cid)
        self.assertEqual(env["WS_ROOMS"], "room-a room-b")
        self.assertEqual(env["WS_META_Nick"], "carol")
        self.assertEqual(env["SCRIPT_NAME"], "/env.sh")
        self.assertEqual(env["PATH_INFO"], "/a/b")
        self.assertEqual(env["QUERY_STRING"], "x=1&y=a%20b&z")
        self.assertEqual(env["REQUEST_URI"], "/env.sh/a/b?x=1&y=a%20b&z")
        self.assertEqual(env["REMOTE_PORT"], str(local_port))
        self.assertEqual(env["GATEWAY_INTERFACE"], "CGI/1.1")
        self.assertEqual(env["REDIRECT_STATUS"], "200")
        self.assertEqual(env["WS_API_URL"], "http://127.0.0.1:%d" % self.server.api_port)

    async def test_no_path_info_and_empty_query(self):
        ws, env = await self.connect_env("/env.sh", additional_headers=CUSTOM_HEADERS,
                                         user_agent_header=USER_AGENT)
        self.check_common(env, ws, "/env.sh", "", "/env.sh", None)
        self.assertIn("QUERY_STRING", env)   # always set, even when empty

    async def test_script_in_subdirectory(self):
        ws, env = await self.connect_env("/sub/env.sh/x/y.txt?q",
                                         additional_headers=CUSTOM_HEADERS,
                                         user_agent_header=USER_AGENT)
        self.check_common(env, ws, "/sub/env.sh", "q", "/sub/env.sh/x/y.txt?q", "/x/y.txt")

    async def test_symlink_inside_cgi_bin_is_a_script(self):
        ws, env = await self.connect_env("/inside.sh")
        self.assertEqual(env["SCRIPT_NAME"], "/inside.sh")
        self.assertEqual(env["WS_EVENT"], "open")
        self.assertTrue(os.path.isabs(env["SCRIPT_FILENAME"]))

    async def test_connection_ids_unique_and_stable(self):
        ws1, env1 = await self.connect_env()
        ws2, env2 = await self.connect_env()
        self.assertRegex(env1["WS_CONNECTION_ID"], HEX32)
        self.assertRegex(env2["WS_CONNECTION_ID"], HEX32)
        self.assertNotEqual(env1["WS_CONNECTION_ID"], env2["WS_CONNECTION_ID"])
        await ws1.send("env")
        again = parse_env(await self.recv_text(ws1))
        self.assertEqual(again["WS_CONNECTION_ID"], env1["WS_CONNECTION_ID"])
        # the API knows both under the same ids
        listed = await self.api_ok("GET", "/connections?endpoint=/env.sh")
        self.assertEqual(sorted(c["id"] for c in listed),
                         sorted([env1["WS_CONNECTION_ID"], env2["WS_CONNECTION_ID"]]))

    async def test_working_directory_is_script_directory(self):
        ws = await self.connect("/pwd.sh")
        self.assertEqual(await self.recv_text(ws), "cwd " + os.path.realpath(CGI_BIN))
        ws = await self.connect("/sub/pwd.sh")
        self.assertEqual(await self.recv_text(ws),
                         "cwd " + os.path.realpath(os.path.join(CGI_BIN, "sub")))


class PassEnvTest(ServerTestCase):
    server_args = ["--pass-env", "PYTEST_PASSED", "--pass-env", "PYTEST_ALSO"]
    server_env = {"PYTEST_PASSED": "yes please", "PYTEST_ALSO": "2",
                  "PYTEST_NOT_PASSED": "no"}

    async def test_pass_env_names_reach_script(self):
        ws, env = await self.connect_env("/env.sh")
        self.assertEqual(env["PYTEST_PASSED"], "yes please")
        self.assertEqual(env["PYTEST_ALSO"], "2")
        self.assertNotIn("PYTEST_NOT_PASSED", env)
        self.assertNotIn(LEAK_NAME, env)
        for key in env:
            self.assertTrue(key in ALLOWED or key.startswith(("HTTP_", "WS_META_"))
                            or key in ("PYTEST_PASSED", "PYTEST_ALSO"), key)


class SingleScriptModeTest(ServerTestCase):
    cgi_bin = None
    script = os.path.join(harness.CGI_BIN_REL, "env.sh")

    async def test_every_path_goes_to_the_one_script(self):
        ws, env = await self.connect_env("/any/where?k=v")
        self.assertEqual(env["SCRIPT_NAME"], "")
        self.assertEqual(env["PATH_INFO"], "/any/where")
        self.assertEqual(env["QUERY_STRING"], "k=v")
        self.assertEqual(env["REQUEST_URI"], "/any/where?k=v")
        self.assertTrue(os.path.isabs(env["SCRIPT_FILENAME"]))
        self.assertEqual(os.path.realpath(env["SCRIPT_FILENAME"]),
                         os.path.realpath(os.path.join(CGI_BIN, "env.sh")))
        self.assertEqual(env["WS_EVENT"], "open")
        ws2, env2 = await self.connect_env("/")
        self.assertEqual(env2["PATH_INFO"], "/")
        self.assertEqual(env2["SCRIPT_NAME"], "")
        listed = await self.api_ok("GET", "/connections")
        self.assertEqual(len(listed), 2)
        self.assertEqual({c["endpoint"] for c in listed}, {"/"})
        by_endpoint = await self.api_ok("GET", "/connections?endpoint=/")
        self.assertEqual(len(by_endpoint), 2)


if __name__ == "__main__":
    unittest.main()
