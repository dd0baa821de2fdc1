"""Shared fixtures for the CPython glue tests (tests/test_*.py).

The suite runs against whatever ``goloop`` is importable -- the source tree
with PYTHONPATH set, or a pip-installed package.  Subprocesses started by the
tests import the very same package: ``run_python`` puts the directory this
process imported goloop from on the child's PYTHONPATH (unless it is a
site-packages directory, which the child finds by itself), and runs the child
with -P so that the current directory cannot shadow it.

Fixtures here are opt-in (no autouse), so they do not touch tests/runtime/.
"""
import gc
import json
import os
import subprocess
import sys
import textwrap

import pytest

from child_env import subprocess_env


def _run(argv, env, timeout, cwd):
    # -P: the current directory does not go on sys.path, so a source tree's
    # goloop/ (no compiled modules) cannot shadow the package under test.
    return subprocess.run(
        [sys.executable, "-P", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(env),
        cwd=cwd,
    )


def _run_python(code, *args, env=None, timeout=120, cwd=None):
    """Run `code` (dedented) in a fresh interpreter; CompletedProcess (text)."""
    return _run(["-c", textwrap.dedent(code), *args], env, timeout, cwd)


def _run_module(module, *args, env=None, timeout=120, cwd=None):
    """python -m module *args in a fresh interpreter."""
    return _run(["-m", module, *args], env, timeout, cwd)


def _recursion_depth_reached():
    """How many levels of pure-Python recursion the running stack takes
    before RecursionError."""
    n = 0

    def f():
        nonlocal n
        n += 1
        f()

    try:
        f()
    except RecursionError:
        return n
    raise AssertionError("no RecursionError")


@pytest.fixture
def recursion_depth():
    """recursion_depth() -> levels reached on the running stack (see
    _recursion_depth_reached)."""
    return _recursion_depth_reached


@pytest.fixture
def run_python():
    """run_python(code, *argv, env=None, timeout=120, cwd=None)."""
    return _run_python


@pytest.fixture
def run_module():
    """run_module(module, *argv, env=None, timeout=120, cwd=None)."""
    return _run_module


PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_benchmarks(results, *args, timeout=120):
    """python -m benchmarks *args --results `results` from the project root
    (which goes on the path first: the benchmarks package is not installed;
    it steps aside for an installed goloop itself); (CompletedProcess, the
    JSON lines as dicts)."""
    path = subprocess_env().get("PYTHONPATH")
    env = {"PYTHONPATH": PROJECT_ROOT + (os.pathsep + path if path else "")}
    r = _run_module("benchmarks", *args, "--results", str(results), env=env, timeout=timeout, cwd=PROJECT_ROOT)
    lines = results.read_text().splitlines() if results.exists() else []
    return r, [json.loads(line) for line in lines]


@pytest.fixture
def run_benchmarks():
    """run_benchmarks(results_path, *argv, timeout=120) -> (CompletedProcess, rows)."""
    return _run_benchmarks


@pytest.fixture
def no_leftover_goroutines():
    """Fail a test that leaves started, unfinished goroutines behind (other
    than those the module keeps forever in _unkillable by design)."""
    import goloop

    def live():
        gc.collect()
        keep = {id(g) for g in goloop._goloop._unkillable}
        return [g for g in goloop.goroutines() if id(g) not in keep]

    before = {id(g) for g in live()}
    yield
    left = [g for g in live() if id(g) not in before]
    assert not left, f"test left goroutines behind: {left}"


@pytest.fixture
def unraisables(monkeypatch):
    """List collecting what sys.unraisablehook receives during the test
    (as (exc_type, exc_value, err_msg, object) tuples)."""
    seen = []

    def hook(u):
        seen.append((u.exc_type, u.exc_value, u.err_msg, u.object))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return seen


@pytest.fixture
def default_stack_size():
    """Restore the default goroutine stack size after the test."""
    import goloop

    saved = goloop.get_default_stack_size()
    yield saved
    goloop.set_default_stack_size(saved)
