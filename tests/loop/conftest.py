"""Fixtures of the event-loop tests (tests/loop).

Every test here leaves asyncio as it found it: the event loop policy is
reset and no current event loop is left set, whatever the test did.
"""
import asyncio
import warnings

import pytest


@pytest.fixture(autouse=True)
def _restore_asyncio_state():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(policy)
        asyncio.set_event_loop(None)
