"""Conformance with CPython's own asyncio test suite.

Runs this interpreter's test.test_asyncio on goloop (loops from
goloop.EventLoopPolicy, and goloop variants of the per-loop test classes) and
on the stock loop, in two child interpreters at once, and fails listing every
test that passes on stock but not on goloop and is not in
expected_differences.txt, and every listed difference that no longer holds.
The counts table is printed (pytest -s shows it; it is in the failure
message) and written to .venvs/reports/conformance-<version>.txt when that
directory exists.  See cpython_conformance.py and conformance_driver.py.

Standalone: python tests/conformance/run_conformance.py [--loop goloop|stock]
[-k PATTERN].

Environment: GOLOOP_CONFORMANCE_JOBS (children at once, default 2),
GOLOOP_CONFORMANCE_TEST_TIMEOUT (seconds one test may take, default 90),
GOLOOP_CONFORMANCE_DEADLINE (seconds one loop's run may take, default 900),
GOLOOP_CONFORMANCE_K (a -k pattern, for a quick partial run).
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:      # pytest's prepend import mode has put it there already
    sys.path.insert(0, HERE)
import cpython_conformance as cc  # noqa: E402  (it puts tests/ on sys.path)
import suite_runner as sr  # noqa: E402


def test_expected_differences_file_parses():
    sr.check_expected_file(cc.EXPECTED_FILE, "test.test_asyncio.")


def test_cpython_asyncio_conformance():
    why_not = cc.has_test_asyncio(sys.executable)
    if why_not:
        pytest.skip(why_not)
    pattern = os.environ.get("GOLOOP_CONFORMANCE_K")
    version, runs, comparison = cc.run_conformance(
        python=sys.executable,
        patterns=[pattern] if pattern else [],
        jobs=int(os.environ.get("GOLOOP_CONFORMANCE_JOBS", "2")),
        per_test_timeout=float(os.environ.get("GOLOOP_CONFORMANCE_TEST_TIMEOUT", "90")),
        deadline_seconds=float(os.environ.get("GOLOOP_CONFORMANCE_DEADLINE", "900")),
    )
    sr.conclude(comparison, "conformance", version)
