"""Fixtures of the preemption tests (tests/preempt).

`loop_kind` runs a test on goloop (preemption on) and again on stock
asyncio, where it is expected to fail with NotPreempted: the stock variant
is what proves that the test can tell a preempting loop from a cooperative
one.  It is a strict xfail, so a stock run that passes fails the suite.
"""
import pytest

from preempt_helpers import GOLOOP, STOCK, NotPreempted

_STOCK_CANNOT_PREEMPT = pytest.mark.xfail(
    raises=NotPreempted,
    strict=True,
    reason="stock asyncio never preempts: this variant proves the test discriminates",
)


@pytest.fixture(params=[GOLOOP, pytest.param(STOCK, marks=_STOCK_CANNOT_PREEMPT)])
def loop_kind(request):
    """'goloop' or 'asyncio' (the latter an expected NotPreempted failure)."""
    return request.param
