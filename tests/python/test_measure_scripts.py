"""The measurement commands docs/RELIABILITY.md and docs/SECURITY.md show
(bench/scripts/slow_clients.py, bench/scripts/api_body_rss.py) run as shown,
at a small size, so that the figures there can always be reproduced."""

import os
import re
import subprocess
import sys
import unittest

from harness import BIN, REPO_ROOT


def run(*args):
    out = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError("%s failed:\n%s%s" % (args, out.stdout, out.stderr))
    return out.stdout


class MeasureScriptsTest(unittest.TestCase):

    def test_docs_show_the_commands(self):
        with open(os.path.join(REPO_ROOT, "docs", "RELIABILITY.md")) as f:
            self.assertIn("python3 bench/scripts/slow_clients.py -n 1000", f.read())
        with open(os.path.join(REPO_ROOT, "docs", "SECURITY.md")) as f:
            self.assertIn("python3 bench/scripts/api_body_rss.py", f.read())

    def test_slow_clients_cost_no_cpu_while_they_wait(self):
        out = run("bench/scripts/slow_clients.py", "-n", "50", "--secs", "0.5", BIN, "--",
                  "--max-http-connections-per-ip", "100")
        lines = [l for l in out.splitlines() if "conns: CPU" in l]
        self.assertEqual(len(lines), 2, out)
        for line in lines:
            self.assertRegex(line, r"50 conns: CPU +\d+ ms in [\d.]+ s, RSS \+[\d.-]+ KiB per connection")

    def test_api_bodies_over_the_cap_are_refused(self):
        out = run("bench/scripts/api_body_rss.py", BIN)
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        for line in lines:
            self.assertIn("413", line)
            sent = int(re.search(r"(\d+) of 256 MiB sent", line).group(1))
            self.assertLess(sent, 256, "the server kept reading after its 413: " + line)


if __name__ == "__main__":
    unittest.main()
