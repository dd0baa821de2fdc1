"""Misuse raises a clear exception and never crashes: bad arguments, bad
stack sizes (argument, default, GOLOOP_STACK_SIZE), resuming finished,
running or foreign goroutines, park() outside a goroutine, throw() with a
non-exception, and importing on an unsupported Python version."""
import sys
import threading

import pytest

import goloop

pytestmark = pytest.mark.usefixtures("no_leftover_goroutines")

MIN = goloop._goloop.MIN_STACK_SIZE
MAX = goloop._goloop.MAX_STACK_SIZE

BAD_SIZES = [
    # (value, exception): too small, too large, negative, not an int
    (0, ValueError), (1, ValueError), (MIN - 1, ValueError),
    (MAX + 1, ValueError), (2 ** 64, ValueError), (10 ** 30, ValueError),
    (-1, ValueError), (-MIN, ValueError), (-(2 ** 70), ValueError),
    (True, ValueError),                       # an int, and far too small
    (65536.0, TypeError), ("65536", TypeError), (b"1", TypeError),
    ([65536], TypeError),
]


def test_limits_are_sane():
    # From 3.14 CPython's own minimum (three stack margins) counts too: 96 KiB
    # on a debug build, whose margins are twice a release build's.
    debug_314 = sys.version_info >= (3, 14) and hasattr(sys, "gettotalrefcount")
    assert MIN == (96 if debug_314 else 64) * 1024 and MAX == 1 << 30
    assert issubclass(goloop.GoroutineError, RuntimeError)


def test_non_callable_is_a_type_error():
    for bad in (None, 1, "func", [len], object()):
        with pytest.raises(TypeError, match="needs a callable"):
            goloop.Goroutine(bad)


def test_other_bad_constructor_arguments():
    with pytest.raises(TypeError):
        goloop.Goroutine()
    with pytest.raises(TypeError):
        goloop.Goroutine(len, 1)                        # keyword-only options
    with pytest.raises(TypeError):
        goloop.Goroutine(len, nmae="x")
    with pytest.raises(TypeError, match="name must be a str"):
        goloop.Goroutine(len, name=5)
    with pytest.raises(TypeError, match="contextvars.Context"):
        goloop.Goroutine(len, context={})
    with pytest.raises(TypeError):
        type("Sub", (goloop.Goroutine,), {})            # not subclassable


@pytest.mark.parametrize("value,exc", BAD_SIZES, ids=repr)
def test_bad_stack_size_argument(value, exc):
    with pytest.raises(exc, match="stack_size must be"):
        goloop.Goroutine(len, stack_size=value)


@pytest.mark.parametrize("value,exc", BAD_SIZES, ids=repr)
def test_bad_default_stack_size(value, exc, default_stack_size):
    with pytest.raises(exc, match="stack size must be"):
        goloop.set_default_stack_size(value)
    assert goloop.get_default_stack_size() == default_stack_size


def test_good_stack_sizes(default_stack_size):
    import mmap

    page = mmap.PAGESIZE
    for size in (MIN, MIN + 1, 1 << 20, MAX):
        rounded = (size + page - 1) // page * page
        assert goloop.Goroutine(len, stack_size=size).stack_size == rounded
        goloop.set_default_stack_size(size)
        assert goloop.get_default_stack_size() == rounded
        assert goloop.Goroutine(len).stack_size == rounded
    # The largest stack is usable: reserved, not committed.
    g = goloop.Goroutine(lambda: goloop.park(goloop._goloop._stack_depth()),
                         stack_size=MAX)
    assert 0 < g.resume() < 64 * 1024
    g.resume()
    with pytest.raises(TypeError):
        goloop.set_default_stack_size()


ENV_CHECK = "import goloop; print(goloop.get_default_stack_size())"


@pytest.mark.parametrize("text", ["abc", "10", "2g", "-5", "1.5m", "0x10000", "8MB"])
def test_bad_goloop_stack_size_env(run_python, text):
    proc = run_python(ENV_CHECK, env={"GOLOOP_STACK_SIZE": text})
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: GOLOOP_STACK_SIZE=" + repr(text)), proc.stderr
    assert "Segmentation" not in proc.stderr and "Fatal Python error" not in proc.stderr


@pytest.mark.parametrize("text,size", [("262144", 262144), ("256k", 262144),
                                       (" 1M ", 1 << 20), ("", 8 << 20)])
def test_good_goloop_stack_size_env(run_python, text, size):
    proc = run_python(ENV_CHECK, env={"GOLOOP_STACK_SIZE": text})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == size


def test_resume_finished_goroutine():
    g = goloop.Goroutine(lambda: 1)
    assert g.resume() == 1
    for call in (g.resume, lambda: g.resume(5), lambda: g.throw(ValueError)):
        with pytest.raises(goloop.GoroutineError,
                           match="^cannot resume a goroutine that has finished$"):
            call()
    g = goloop.Goroutine(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        g.resume()
    with pytest.raises(goloop.GoroutineError, match="finished"):
        g.resume()


def test_resume_running_goroutine():
    def itself():
        me = goloop.current()
        try:
            me.resume()
        except goloop.GoroutineError as e:
            return str(e)

    assert goloop.Goroutine(itself).resume() == \
        "cannot resume a goroutine that is already running"

    # A goroutine suspended in resume() of a child is running too.
    def child():
        try:
            parent.resume()
        except goloop.GoroutineError as e:
            return ("child", str(e))

    def parent_body():
        return goloop.Goroutine(child).resume()

    parent = goloop.Goroutine(parent_body)
    assert parent.resume() == ("child", "cannot resume a goroutine that is already running")
    assert parent.status == "finished"


def test_resume_parked_goroutine_from_another_thread():
    g = goloop.Goroutine(lambda: goloop.park() or "finished")
    g.resume()
    errors = []

    def other():
        try:
            g.resume()
        except goloop.GoroutineError as e:
            errors.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors == ["cannot resume a goroutine that belongs to another thread"]
    assert g.resume() == "finished"


def test_park_outside_a_goroutine():
    with pytest.raises(goloop.GoroutineError, match="park\\(\\) called outside a goroutine"):
        goloop.park()
    with pytest.raises(goloop.GoroutineError):
        goloop.park(1)
    # A thread's own stack is "outside" too.
    errors = []
    t = threading.Thread(target=lambda: errors.append(_capture(goloop.park)))
    t.start()
    t.join()
    assert errors == ["GoroutineError"]


def _capture(func):
    try:
        func()
    except Exception as e:
        return type(e).__name__


def test_wrong_argument_counts():
    g = goloop.Goroutine(lambda: goloop.park(1, 2))
    with pytest.raises(TypeError, match="park\\(\\) takes at most 1 argument"):
        g.resume()
    g = goloop.Goroutine(lambda: goloop.park())
    with pytest.raises(TypeError, match="resume\\(\\) takes at most 1 argument"):
        g.resume(1, 2)
    assert g.status == "idle"
    with pytest.raises(TypeError):
        g.resume(value=1)
    with pytest.raises(TypeError):
        g.throw()
    g.resume()
    g.resume()


def test_throw_non_exception():
    g = goloop.Goroutine(lambda: goloop.park("parked") + "!")
    assert g.resume() == "parked"
    for bad in (None, 1, "error", int, object(), [ValueError]):
        with pytest.raises(TypeError, match="deriving from BaseException"):
            g.throw(bad)
    assert g.status == "parked"

    class Unmakeable(Exception):
        def __init__(self):
            raise OSError("constructor failed")

    with pytest.raises(OSError, match="constructor failed"):
        g.throw(Unmakeable)
    assert g.status == "parked"                     # still fine, still parked
    assert g.resume("ok") == "ok!"


def test_goroutine_new_without_init(run_python):
    # Once a crash (a NULL function run on a fresh stack): in a subprocess.
    proc = run_python("""
        import goloop
        g = goloop.Goroutine.__new__(goloop.Goroutine)
        assert g.status == "idle" and g.name is None and g.frame is None
        repr(g)
        for call in (g.resume, lambda: g.throw(ValueError)):
            try:
                call()
            except goloop.GoroutineError as e:
                print(e)
        assert g not in goloop.goroutines()
        g.__init__(lambda: "late init")
        print(g.resume())
    """)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.splitlines() == [
        "cannot resume a goroutine that was never initialized "
        "(Goroutine.__init__ was not called)"] * 2 + ["late init"]


def test_init_twice():
    g = goloop.Goroutine(lambda: 1)
    with pytest.raises(goloop.GoroutineError, match="called twice"):
        g.__init__(lambda: 2)
    assert g.resume() == 1
    with pytest.raises(goloop.GoroutineError):
        g.__init__(lambda: 2)


def test_no_stack_can_be_mapped(run_python):
    # Address space limited below the stack size asked for: MemoryError, and
    # the goroutine can still be run once memory is available.
    proc = run_python("""
        import resource, goloop
        def vm_bytes():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[0]) * resource.getpagesize()
        limit = vm_bytes() + (256 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        g = goloop.Goroutine(lambda: "ran", stack_size=goloop._goloop.MAX_STACK_SIZE)
        try:
            g.resume()
        except MemoryError:
            print("MemoryError", g.status, goloop.goroutines())
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
        print(g.resume())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["MemoryError idle []", "ran"]


UNSUPPORTED = """
import sys, sysconfig
sys.version_info = {version!r}
if {free_threaded!r}:
    real = sysconfig.get_config_var
    sysconfig.get_config_var = lambda name: 1 if name == "Py_GIL_DISABLED" else real(name)
try:
    import goloop
except ImportError as e:
    print("ImportError:", e)
else:
    print("imported")
"""


@pytest.mark.parametrize("version", [(3, 16, 0, "alpha", 1), (3, 10, 12, "final", 0),
                                     (4, 0, 0, "alpha", 1)])
def test_import_on_unsupported_python(run_python, version):
    proc = run_python(UNSUPPORTED.format(version=version, free_threaded=False))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("ImportError:"), out
    assert "3.11 to 3.15" in out, out
    assert f"{version[0]}.{version[1]}" in out          # and what this one is


def test_import_on_a_free_threaded_build(run_python):
    """3.14t is not available here: the gate's check is exercised by making
    sysconfig report a free-threaded build."""
    version = tuple(sys.version_info)
    proc = run_python(UNSUPPORTED.format(version=version, free_threaded=True))
    out = proc.stdout.strip()
    assert out.startswith("ImportError:"), (out, proc.stderr)
    assert "free-threaded build" in out and "not free-threaded" in out, out


def test_private_step_and_stack_helpers_refuse_bad_input():
    """_goloop's seams for the loop and the tests raise, never crash."""
    with pytest.raises(TypeError):
        goloop._goloop.resume_step(42)             # not a queue
    with pytest.raises(goloop.GoroutineError, match="only on a goroutine"):
        goloop._goloop._recurse_in_c(10 ** 9)      # the thread's stack has no guard message
