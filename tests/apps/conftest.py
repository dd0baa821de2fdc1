"""Fixtures of the application tests (tests/apps).

`loop_kind` runs a test on goloop (1 ms slice) and on stock asyncio, with
the same assertions: both must pass.  `hog_kind` does the same for the
latency tests, whose stock variant is a strict expected failure with
LatencyLost (apps_helpers.py).

`postgres_dsn` and `redis_url` are the servers scripts/services.sh started
(the README test command starts them before pytest).  Without them a test
that needs one is skipped, saying so, except under CI=true, where it fails:
CI must not pass by skipping the databases.
"""
import os

import pytest

from apps_helpers import GOLOOP, STOCK, LatencyLost

_STOCK_DOES_NOT_PREEMPT = pytest.mark.xfail(
    raises=LatencyLost,
    strict=True,
    reason="stock asyncio never preempts: a light request waits for the CPU-heavy one "
    "(this variant proves the test discriminates)",
)


@pytest.fixture(params=[GOLOOP, STOCK])
def loop_kind(request):
    """'goloop' or 'asyncio': the same assertions hold on both."""
    return request.param


@pytest.fixture(params=[GOLOOP, pytest.param(STOCK, marks=_STOCK_DOES_NOT_PREEMPT)])
def hog_kind(request):
    """'goloop' or 'asyncio' (the latter an expected LatencyLost failure)."""
    return request.param


def _service(variable, what):
    value = os.environ.get(variable)
    if value:
        return value
    message = (f"{what} is not running: {variable} is unset (the README test command "
               f"starts it with scripts/services.sh; by hand: eval \"$(scripts/services.sh start)\")")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_dsn():
    """postgresql://... of the test PostgreSQL server (trust auth, loopback)."""
    return _service("GOLOOP_TEST_PG_DSN", "PostgreSQL")


@pytest.fixture(scope="session")
def redis_url():
    """redis://... of the test Redis server (loopback, no persistence)."""
    return _service("GOLOOP_TEST_REDIS_URL", "Redis")
