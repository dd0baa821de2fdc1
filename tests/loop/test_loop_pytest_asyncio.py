"""pytest-asyncio 1.x runs a project's async tests on goloop when the
project's conftest.py says so.

Each test writes a small project into tmp_path and runs pytest on it in a
fresh interpreter.  The project's tests assert that they run on a goloop
loop and that task steps run on goroutines, so a configuration that does
not take effect fails them (test_without_configuration_tests_run_on_stock
shows that it does).

The configurations (README):

  pytest-asyncio >= 1.4 -- the pytest_asyncio_loop_factories hook:

      # conftest.py
      import goloop

      def pytest_asyncio_loop_factories(config, item):
          return {"goloop": goloop.new_event_loop}

  pytest-asyncio 1.0 - 1.3 -- override the event_loop_policy fixture
  (still works on 1.4+, with a PytestDeprecationWarning):

      # conftest.py
      import goloop
      import pytest

      @pytest.fixture(scope="session")
      def event_loop_policy():
          return goloop.EventLoopPolicy()
"""
import re
import textwrap
from importlib import metadata

import pytest

pytest_asyncio = pytest.importorskip("pytest_asyncio", reason="pytest-asyncio is in the test extras")

VERSION = tuple(int(x) for x in re.findall(r"\d+", metadata.version("pytest-asyncio"))[:2])
HAS_LOOP_FACTORIES_HOOK = VERSION >= (1, 4)

HOOK_CONFTEST = """
    import goloop

    def pytest_asyncio_loop_factories(config, item):
        return {"goloop": goloop.new_event_loop}
"""

POLICY_CONFTEST = """
    import goloop
    import pytest

    @pytest.fixture(scope="session")
    def event_loop_policy():
        return goloop.EventLoopPolicy()
"""

PYTEST_INI = """
    [pytest]
    asyncio_mode = strict
    asyncio_default_fixture_loop_scope = function
    asyncio_default_test_loop_scope = function
"""

TESTS = '''
    import asyncio

    import goloop
    import pytest
    import pytest_asyncio


    @pytest_asyncio.fixture
    async def where():
        """An async fixture runs on the same kind of loop."""
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__name__, goloop.current() is not None


    @pytest.mark.asyncio
    async def test_runs_on_a_goloop_loop(where):
        loop = asyncio.get_running_loop()
        assert isinstance(loop, goloop.EventLoop), type(loop)
        assert goloop.current() is not None, "the test's own step is not on a goroutine"
        assert where == ("EventLoop", True)


    @pytest.mark.asyncio
    async def test_task_steps_run_on_goroutines():
        async def child(i):
            first = goloop.current() is not None
            await asyncio.sleep(0)
            return i, first, goloop.current() is not None

        results = await asyncio.gather(*(child(i) for i in range(5)))
        assert results == [(i, True, True) for i in range(5)]


    @pytest.mark.asyncio(loop_scope="module")
    async def test_module_scoped_loop_too():
        assert isinstance(asyncio.get_running_loop(), goloop.EventLoop)
        assert goloop.current() is not None


    def test_sync_tests_are_untouched():
        assert goloop.current() is None
'''


def _project(tmp_path, conftest):
    (tmp_path / "pytest.ini").write_text(textwrap.dedent(PYTEST_INI))
    if conftest is not None:
        (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    (tmp_path / "test_app.py").write_text(textwrap.dedent(TESTS))


def _pytest(run_module, tmp_path, *args):
    return run_module(
        "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args, str(tmp_path), cwd=str(tmp_path), timeout=120
    )


def _counts(stdout):
    tail = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error|errors|skipped)", tail)}


@pytest.mark.skipif(not HAS_LOOP_FACTORIES_HOOK, reason="pytest_asyncio_loop_factories is new in pytest-asyncio 1.4")
def test_loop_factories_hook(run_module, tmp_path):
    _project(tmp_path, HOOK_CONFTEST)
    # warnings are errors: the documented configuration must be warning-free
    r = _pytest(run_module, tmp_path, "-W", "error")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _counts(r.stdout) == {"passed": 4}, r.stdout


def test_event_loop_policy_fixture(run_module, tmp_path):
    _project(tmp_path, POLICY_CONFTEST)
    r = _pytest(run_module, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _counts(r.stdout).get("passed") == 4, r.stdout
    if HAS_LOOP_FACTORIES_HOOK:
        assert "event_loop_policy" in r.stdout and "deprecated" in r.stdout, r.stdout


def test_without_configuration_tests_run_on_stock(run_module, tmp_path):
    """The generated tests can fail: without goloop's configuration the three
    async ones fail on stock asyncio's loop."""
    _project(tmp_path, None)
    r = _pytest(run_module, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert _counts(r.stdout) == {"failed": 3, "passed": 1}, r.stdout
    assert "_UnixSelectorEventLoop" in r.stdout
