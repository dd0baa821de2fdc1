"""goloop's public entry points: run, new_event_loop, EventLoopPolicy,
install, and asyncio's own ways in (loop_factory, Runner, the policy)."""
import asyncio
import sys
import warnings

import pytest

import goloop
from loop_helpers import normalize, on_goroutine

PY312 = sys.version_info >= (3, 12)
PY314 = sys.version_info >= (3, 14)


async def _where():
    """What a task sees of the loop it runs on."""
    loop = asyncio.get_running_loop()
    return type(loop), loop.get_debug(), on_goroutine(), type(asyncio.current_task())


# -- goloop.run ---------------------------------------------------------------


def test_run_returns_the_result_on_a_goloop_loop():
    async def main(x):
        await asyncio.sleep(0)
        return x * 2, await _where()

    value, (loop_type, _, on_g, task_type) = goloop.run(main(21))
    assert value == 42
    assert loop_type is goloop.EventLoop
    assert on_g, "the main task's step did not run on a goroutine"
    assert task_type is asyncio.Task


def test_run_propagates_the_exception_of_main():
    async def main():
        await asyncio.sleep(0)
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        goloop.run(main())


def test_run_cleans_up_like_asyncio_run():
    """Leftover tasks are cancelled (their finally blocks run), async
    generators are finalized, the loop is closed and unset."""

    def scenario(runner):
        seen = []
        loops = []

        async def forever():
            try:
                await asyncio.sleep(3600)
            finally:
                seen.append("task finally")

        async def agen():
            try:
                yield 1
                yield 2
            finally:
                seen.append("agen finally")

        async def main():
            loops.append(asyncio.get_running_loop())
            asyncio.get_running_loop().create_task(forever())
            g = agen()
            await g.__anext__()
            await asyncio.sleep(0)
            return "done"

        result = runner(main())
        return result, sorted(seen), loops[0].is_closed()

    stock = scenario(asyncio.run)
    ours = scenario(goloop.run)
    assert stock == ("done", ["agen finally", "task finally"], True)
    assert ours == stock


@pytest.mark.parametrize("bad", [42, None, "coro", pytest.param("function", id="coroutine-function")])
def test_run_non_coroutine_is_both_type_and_value_error(bad):
    async def main():
        pass

    if bad == "function":
        bad = main
    # ValueError before 3.14, TypeError from 3.14 (which takes any awaitable).
    with pytest.raises(ValueError if sys.version_info < (3, 14) else TypeError) as stock:
        asyncio.run(bad)
    with pytest.raises(TypeError) as ours:
        goloop.run(bad)
    assert isinstance(ours.value, ValueError)
    assert isinstance(ours.value, goloop._api.NotACoroutineError)
    assert str(ours.value) == str(stock.value)


@pytest.mark.skipif(sys.version_info < (3, 14), reason="asyncio.run() takes awaitables from 3.14")
def test_run_awaits_any_awaitable_from_3_14():
    class Answer:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return 42

    assert asyncio.run(Answer()) == 42
    assert goloop.run(Answer()) == 42


def test_run_inside_a_running_loop_is_refused_like_asyncio_run():
    async def probe(runner):
        coro = _where()
        try:
            runner(coro)
        except Exception as e:
            return type(e), str(e)
        finally:
            coro.close()
        return None

    async def main():
        return await probe(asyncio.run), await probe(goloop.run), await probe(lambda c: goloop.run(42))

    stock, ours, ours_bad = goloop.run(main())
    assert stock == (RuntimeError, "asyncio.run() cannot be called from a running event loop")
    assert ours == stock
    # asyncio.run checks for a running loop before it checks its argument
    assert ours_bad == stock


@pytest.mark.parametrize("debug", [True, False])
def test_run_honours_debug(debug):
    _, stock_debug, _, _ = asyncio.run(_where(), debug=debug)
    _, our_debug, _, _ = goloop.run(_where(), debug=debug)
    assert stock_debug is debug
    assert our_debug is debug


def test_run_debug_none_follows_the_environment(run_python):
    code = """
        import asyncio, goloop
        from asyncio import get_running_loop as g
        async def debug():
            return g().get_debug()
        print(asyncio.run(debug()), goloop.run(debug()))
    """
    plain = run_python(code, env={"PYTHONASYNCIODEBUG": "", "PYTHONDEVMODE": ""})
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["False", "False"]
    env_debug = run_python(code, env={"PYTHONASYNCIODEBUG": "1", "PYTHONDEVMODE": ""})
    assert env_debug.returncode == 0, env_debug.stderr
    assert env_debug.stdout.split() == ["True", "True"]


def test_run_passes_options_to_the_loop():
    loop_type, _, on_g, task_type = goloop.run(_where(), goroutines=False)
    assert loop_type is goloop.EventLoop
    assert not on_g, "goroutines=False still ran a step on a goroutine"
    assert task_type is asyncio.Task
    assert goloop.run(_where(), goroutines=True)[2]


def test_run_rejects_unknown_options(unraisables):
    coro = _where()
    try:
        with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_option'"):
            goloop.run(coro, no_such_option=1)
    finally:
        coro.close()
    with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_option'"):
        goloop.new_event_loop(no_such_option=1)
    import gc

    gc.collect()
    # no half-made loop left behind to complain in __del__
    assert unraisables == []


# -- new_event_loop and asyncio's own entry points ----------------------------


def test_new_event_loop_returns_a_goloop_event_loop():
    loop = goloop.new_event_loop()
    try:
        assert type(loop) is goloop.EventLoop
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert not loop.is_running() and not loop.is_closed()
        assert loop.run_until_complete(_where())[0] is goloop.EventLoop
    finally:
        loop.close()
    assert loop.is_closed()
    assert "goroutines=True" in repr(loop)
    other = goloop.new_event_loop(goroutines=False)
    other.close()
    assert "goroutines=False" in repr(other)


@pytest.mark.skipif(not PY312, reason="asyncio.run() has loop_factory since Python 3.12")
def test_asyncio_run_with_loop_factory():
    loop_type, _, on_g, _ = asyncio.run(_where(), loop_factory=goloop.new_event_loop)
    assert loop_type is goloop.EventLoop
    assert on_g


def test_asyncio_runner_with_loop_factory():
    with asyncio.Runner(loop_factory=goloop.new_event_loop) as runner:
        first = runner.run(_where())
        second = runner.run(_where())
        loop = runner.get_loop()
        assert type(loop) is goloop.EventLoop
    assert first[0] is second[0] is goloop.EventLoop
    assert first[2] and second[2]
    assert loop.is_closed()


def test_event_loop_policy_makes_asyncio_run_use_goloop():
    asyncio.set_event_loop_policy(goloop.EventLoopPolicy())
    try:
        loop_type, _, on_g, _ = asyncio.run(_where())
        assert loop_type is goloop.EventLoop
        assert on_g
        loop = asyncio.new_event_loop()
        assert type(loop) is goloop.EventLoop
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)
    # the default policy is back: stock loops again
    loop_type, _, on_g, _ = asyncio.run(_where())
    assert loop_type is not goloop.EventLoop
    assert not on_g


def test_event_loop_policy_passes_options():
    asyncio.set_event_loop_policy(goloop.EventLoopPolicy(goroutines=False))
    try:
        loop_type, _, on_g, _ = asyncio.run(_where())
    finally:
        asyncio.set_event_loop_policy(None)
    assert loop_type is goloop.EventLoop
    assert not on_g


def test_install_sets_the_policy_and_warns_only_on_312_and_later():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        goloop.install()
    try:
        assert isinstance(asyncio.get_event_loop_policy(), goloop.EventLoopPolicy)
        assert asyncio.run(_where())[0] is goloop.EventLoop
    finally:
        asyncio.set_event_loop_policy(None)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    if PY314:
        # goloop's, then asyncio's own for set_event_loop_policy()
        assert len(deprecations) == 2, [str(w.message) for w in caught]
        assert "'asyncio.set_event_loop_policy' is deprecated" in str(deprecations[1].message)
    if PY312:
        assert len(deprecations) == 1 + PY314, [str(w.message) for w in caught]
        assert "goloop.install() is deprecated" in str(deprecations[0].message)
        # attributed to the caller, not to goloop's own code
        assert deprecations[0].filename == __file__
    else:
        assert deprecations == [], [str(w.message) for w in caught]


def test_event_loop_policy_is_deprecated_from_3_14_as_asyncio_s_is():
    """goloop.EventLoopPolicy warns when used exactly when, and as,
    asyncio.DefaultEventLoopPolicy does; importing goloop never warns."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stock = asyncio.DefaultEventLoopPolicy
        ours = goloop.EventLoopPolicy
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert issubclass(ours, stock)
    if PY314:
        assert messages == [
            "'asyncio.DefaultEventLoopPolicy' is deprecated and slated for removal in Python 3.16",
            "'goloop.EventLoopPolicy' is deprecated and slated for removal in Python 3.16",
        ]
        assert caught[1].filename == __file__
        assert "EventLoopPolicy" not in goloop.__all__
    else:
        assert messages == []
        assert "EventLoopPolicy" in goloop.__all__


def test_import_goloop_warns_nothing(run_python):
    r = run_python("import goloop, goloop.__main__; print('ok')",
                   env={"PYTHONWARNINGS": "error"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_helpers_normalize():
    # the differential tests rely on this to compare messages with addresses
    assert normalize("<obj at 0x7f00ab> fd=12 x.py:33") == "<obj at 0x?> fd=? x.py:?"


# -- python -m goloop ---------------------------------------------------------

_SCRIPT = """
import asyncio, sys
import goloop

async def main():
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    return type(loop).__name__, goloop.current() is not None

print(__name__, sys.argv[1:], *asyncio.run(main()))
"""


def test_python_m_goloop_runs_a_script_on_goloop(run_module, tmp_path):
    try:
        import goloop.__main__  # noqa: F401
    except ImportError:
        pytest.skip("goloop/__main__.py does not exist yet")
    script = tmp_path / "app.py"
    script.write_text(_SCRIPT)
    # No deprecated API on any version (policies are, from 3.14).
    r = run_module("goloop", str(script), "a", "--b", timeout=60,
                   env={"PYTHONWARNINGS": "error::DeprecationWarning"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["__main__", "['a',", "'--b']", "EventLoop", "True"]
    # python -m goloop -m module, from the module's directory
    r = run_module("goloop", "-m", "app", "c", timeout=60, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["__main__", "['c']", "EventLoop", "True"]
