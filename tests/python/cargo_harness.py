"""The Python side of tests/python_clients.rs, which shows this suite in
`cargo test` one test class at a time.

    python3 cargo_harness.py list        one line per test: ID<TAB>SUITES
    python3 cargo_harness.py run ID...   runs those tests; exit 0 only if
                                         every one ran and passed

SUITES are the suites of tests/suites.txt a test needs beyond "python",
from harness.needs() on the method, its class, setUp or setUpClass. A
module that cannot be imported is listed as "!MODULE<TAB>the error". A
skipped test, an expected failure or an unexpected success fails the run:
a test that did not run must never pass as ok.
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def marks(obj):
    return set(getattr(getattr(obj, "__func__", obj), "ws2http_suites", ()))


def suites_of(test):
    cls = type(test)
    found = marks(getattr(cls, test._testMethodName)) | marks(cls)
    found |= marks(getattr(cls, "setUp")) | marks(getattr(cls, "setUpClass"))
    return sorted(found)


def list_tests():
    loader = unittest.TestLoader()
    for t in flatten(loader.discover(start_dir=HERE, top_level_dir=HERE)):
        if type(t).__name__ == "_FailedTest":
            # An import error: unittest wraps it as a test named after the module.
            err = getattr(t, "_exception", None)
            print("!%s\t%s" % (t._testMethodName, str(err).replace("\n", " ") or "cannot be imported"))
            continue
        print("%s\t%s" % (t.id(), ",".join(suites_of(t))))


class PassedResult(unittest.TextTestResult):
    """Records the ids of the tests that passed. `testsRun` counts a test
    as run as soon as it starts, skipped ones included, so the run is
    judged on this list instead: every requested test must be in it."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.passed = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test.id())


def run(ids):
    tests = unittest.TestLoader().loadTestsFromNames(ids)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=PassedResult)
    result = runner.run(tests)
    problems = []
    for test_id in ids:
        if result.passed.count(test_id) != 1:
            problems.append("%s did not run and pass" % test_id)
    for test, reason in result.skipped:
        problems.append("%s was skipped (%s): every test must run" % (test.id(), reason))
    for test, _ in result.expectedFailures:
        problems.append("%s is an expected failure: every test must pass" % test.id())
    for test in result.unexpectedSuccesses:
        problems.append("%s succeeded unexpectedly" % test.id())
    for p in problems:
        print("cargo_harness: " + p, file=sys.stderr)
    return 0 if result.wasSuccessful() and not problems else 1


def main(argv):
    sys.path.insert(0, HERE)
    if argv[:1] == ["list"]:
        list_tests()
        return 0
    if argv[:1] == ["run"] and len(argv) > 1:
        return run(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
