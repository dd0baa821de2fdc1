"""pytest plugin loaded into aiohttp's own test suite by the runner
(run_aiohttp_suite.py passes `-p aiohttp_suite_plugin`, with this folder on
PYTHONPATH).  It runs inside the suite's own virtualenv, in pytest's main
process and in every pytest-xdist worker, and does four things:

1. The loop.  With GOLOOP_AIOHTTP_LOOP=goloop, every loop asyncio creates is
   a goloop loop.  aiohttp 3.14.5's plugin (aiohttp/pytest_plugin.py)
   parametrizes its `loop` fixture with `loop_factory`, whose only built-in
   factory besides uvloop is "pyloop" = asyncio.new_event_loop, and
   asyncio.new_event_loop() asks the event loop policy; asyncio.run(),
   loop_context() and setup_test_loop() do the same.  So setting goloop's
   policy makes "[pyloop]" tests (and the rest) run on goloop while test ids
   stay identical to the stock run's, which is what the comparison keys on.
   Tests reset the policy with set_event_loop_policy(None), after which
   asyncio instantiates its default policy class again, so that class is
   goloop's too (tests/suite_runner.py's install_goloop, which
   tests/conformance/conformance_driver.py uses too).  Loops the tests build
   by class (the `selector_loop` and `uvloop_loop` fixtures) stay
   what they are, on both runs.  goloop loops created are counted, per test
   and in total, so the runner can check that goloop really ran.

2. The network guard.  The suite is meant to run offline, but a mistake in a
   test must not send traffic beyond this machine: name lookups of anything
   but local names fail with socket.gaierror, and connect()/sendto() to an
   address outside loopback fails with OSError(ENETUNREACH); c-ares
   channels (aiodns, aiohttp's AsyncResolver), whose sockets Python never
   sees, get 127.0.0.1 as their only name server, so their queries stay
   here too.  Both loops get the same guard, and every refused attempt (and
   every c-ares query of a name not local) is recorded with the test, so
   the runner can list tests that reached for the network.

3. A failure's leftovers stay with it.  A test that fails can leave an
   unclosed loop or socket behind (a loop stopped by pytest-timeout, or
   never torn down because the test raised), held by the failure's
   traceback (sys.last_value) or by the policy (set_event_loop), until a
   later test lets go of it; its gc.collect() (aiohttp's loop teardown
   calls one) then frees them, and their ResourceWarnings, errors under
   the suite's filterwarnings, fail that innocent test -- whichever test
   xdist ran next.  After a failed test's teardown this plugin frees them
   and drops their warnings: the failure is already recorded, and a
   difference stays one test.  For the same reason goloop's once-per-
   process PreemptionWarning (a loop on a thread other than the main one)
   is re-armed after every test.

4. The record.  The process that collects reports (xdist's controller, or
   the only process with -n 0) writes one JSON line per finished test to
   GOLOOP_AIOHTTP_RESULTS, flushing each, so that a run that dies still
   leaves what it finished:

       {"id": NODEID, "outcome": ..., "seconds": ..., "detail": ...,
        "goloop_loops": N, "network": [...]}    (a hang's detail starts with
                                                  where the loop's tasks wait)
       {"node_down": "gw0", "error": "..."}          a worker that died
       {"done": true, "exitstatus": N, "loop": ..., "counters": {...}}

   outcome: pass, fail, error (setup/teardown), skip, xfail, xpass (a
   non-strict unexpected pass; aiohttp's strict ones are fail), crash (the
   worker process died in the test: xdist reports it and starts another).
"""
import errno
import gc
import ipaddress
import json
import os
import socket
import sys
import time
import warnings

import pytest

# tests/suite_runner.py (what the conformance driver shares), from tests/
# put last on sys.path for the import only: the suite's own modules and
# conftest.py must not meet goloop's tests/.
_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(_TESTS)
import suite_runner  # noqa: E402

sys.path.remove(_TESTS)

LOOP_ENV = "GOLOOP_AIOHTTP_LOOP"
OUT_ENV = "GOLOOP_AIOHTTP_RESULTS"
DETAIL_LIMIT = 6000

_counters = {"goloop_loops": 0}
_network = []           # refused attempts of the running test (worker side)
_probe = None


# ---------------------------------------------------------------- 1. the loop

def _probe_goloop(goloop):
    """asyncio.new_event_loop() must now run task steps on goroutines; the
    description goes in the results' last line (the runner checks it)."""
    try:
        return suite_runner.probe_goloop(goloop, "asyncio.new_event_loop")
    except RuntimeError as e:
        raise pytest.UsageError(f"aiohttp_suite_plugin: {e}") from None
    finally:
        _counters["goloop_loops"] -= 1      # the probe's loop is not a test's


# ---------------------------------------------------------------- 2. the network guard

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
                socket.gethostname()}


def _is_local_host(host):
    if host is None or host == "":
        return True             # the wildcard address / a local bind
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = host.split("%")[0].rstrip(".").lower()
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _refuse(what):
    _network.append(what)


def _install_network_guard():
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto

    def _inet_target(sock, address):
        return (sock.family in (socket.AF_INET, socket.AF_INET6)
                and isinstance(address, tuple) and not _is_local_host(address[0]))

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local_host(host):
            _refuse(f"getaddrinfo({host!r})")
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known "
                                  "(aiohttp_suite_plugin: no lookups beyond this machine)")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if _inet_target(self, address):
            _refuse(f"connect({address!r})")
            raise OSError(errno.ENETUNREACH, "Network is unreachable "
                          "(aiohttp_suite_plugin: loopback only)")
        return real_connect(self, address)

    def connect_ex(self, address):
        if _inet_target(self, address):
            _refuse(f"connect_ex({address!r})")
            return errno.ENETUNREACH
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        address = args[-1] if args else None
        if _inet_target(self, address):
            _refuse(f"sendto({address!r})")
            raise OSError(errno.ENETUNREACH, "Network is unreachable "
                          "(aiohttp_suite_plugin: loopback only)")
        return real_sendto(self, data, *args)

    # __wrapped__ keeps inspect.signature() (mock.create_autospec of
    # socket.socket, which the suite uses) seeing the C methods.
    for fake, real in ((getaddrinfo, real_getaddrinfo), (connect, real_connect),
                       (connect_ex, real_connect_ex), (sendto, real_sendto)):
        fake.__wrapped__ = real
        fake.__doc__ = real.__doc__
    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    _guard_pycares()


LOOPBACK_DNS = ["127.0.0.1"]        # nothing listens there: queries fail, locally


def _guard_pycares():
    """c-ares sends its queries from C: point every channel at loopback,
    and record the names asked for that are not local."""
    try:
        import pycares
    except ImportError:
        return
    channel = pycares.Channel
    real_init = channel.__init__
    real_servers = channel.servers

    def __init__(self, *args, **kwargs):
        kwargs["servers"] = LOOPBACK_DNS
        real_init(self, *args, **kwargs)

    def set_servers(self, servers):
        # Setting servers sends nothing (tests check that resolvers share
        # them); a query then would go to loopback, and is recorded below.
        real_servers.fset(self, LOOPBACK_DNS)

    def recording(method):
        def query(self, name, *args, **kwargs):
            if isinstance(name, (str, bytes)) and not _is_local_host(name):
                _refuse(f"pycares {method.__name__}({name!r}) (sent to {LOOPBACK_DNS[0]})")
            return method(self, name, *args, **kwargs)
        query.__wrapped__ = method
        return query

    __init__.__wrapped__ = real_init
    channel.__init__ = __init__
    channel.servers = property(real_servers.fget, set_servers)
    for name in ("getaddrinfo", "query", "search", "gethostbyname"):
        if hasattr(channel, name):
            setattr(channel, name, recording(getattr(channel, name)))


# ---------------------------------------------------------------- setup, per process

def _is_worker(config):
    return hasattr(config, "workerinput")


def _loop_choice():
    loop = os.environ.get(LOOP_ENV, "stock")
    if loop not in ("goloop", "stock"):
        raise pytest.UsageError(f"{LOOP_ENV}={loop!r}: expected goloop or stock")
    return loop


def pytest_configure(config):
    global _probe
    loop = _loop_choice()
    _install_network_guard()
    if loop == "goloop":
        _probe = _probe_goloop(suite_runner.install_goloop(_counters))
    if not _is_worker(config):
        config.pluginmanager.register(Recorder(config, loop), "aiohttp_suite_recorder")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Counting starts before the fixtures (the `loop` fixture makes the loop)."""
    item._goloop_loops0 = _counters["goloop_loops"]
    _network.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Hand the test's goloop loop count and refused network attempts to its
    last report (user_properties travel from xdist workers to the
    controller); note a failed phase for the teardown below."""
    if call.when == "teardown":
        item.user_properties.append(
            ("goloop_loops", _counters["goloop_loops"] - getattr(item, "_goloop_loops0", 0)))
        if _network:
            item.user_properties.append(("network", list(_network)))
            _network.clear()
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item._aiohttp_suite_failed = True
        if "Timeout (>" in report.longreprtext:
            # A hang: where its tasks wait is the diagnosis (a goloop
            # task's frames are on parked goroutines, which the traceback
            # of the loop's thread does not show).
            item.user_properties.append(("pending_tasks", _pending_tasks()))


def _pending_tasks():
    """Each pending task of the test's loop with the chain of awaits it is
    parked in (qualname:line -> ...)."""
    import asyncio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loop = asyncio.get_event_loop_policy().get_event_loop()
        tasks = asyncio.all_tasks(loop)
    except Exception as e:      # no loop set, or closed: nothing to show
        return f"(no tasks: {e!r})"
    lines = []
    for task in tasks:
        chain, coro = [], task.get_coro()
        while coro is not None and len(chain) < 40:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            name = getattr(coro, "__qualname__", type(coro).__name__)
            chain.append(f"{name}:{frame.f_lineno if frame else '-'}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        lines.append(f"{task.get_name()}: " + " -> ".join(chain))
    return "\n".join(sorted(lines)) or "(no pending tasks)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    """After a failed test's teardown (and pytest's collection of its
    unraisable exceptions, which happens inside), discard what the failure
    left behind."""
    try:
        return (yield)
    finally:
        if getattr(item, "_aiohttp_suite_failed", False):
            _discard_leftovers()
        _rearm_thread_warning()


def _discard_leftovers():
    """Free a failed test's leftovers now, with their unraisable exceptions
    (ResourceWarnings: errors under the suite's filters) dropped: the test
    has failed already, and they must not fail the next one."""
    import asyncio

    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):      # the failure's traceback holds its frames
            delattr(sys, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop(None)    # the policy holds a loop never torn down
    except Exception:
        pass
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous


def _rearm_thread_warning():
    """goloop warns once per process (PreemptionWarning) when a loop runs
    on a thread other than the main one; the suite turns it into an error.
    Re-armed after each test, every test that runs a goloop loop on another
    thread sees it, not only the first of them in a worker, so which tests
    differ does not depend on the order xdist ran them in.  (A private flag
    of goloop's: if it is gone, nothing is done.)"""
    preempt = sys.modules.get("goloop._preempt")
    if preempt is not None and hasattr(preempt, "_warned_thread"):
        preempt._warned_thread = False


def pytest_sessionfinish(session):
    """A worker hands its counters to the controller (xdist's workeroutput)."""
    if _is_worker(session.config):
        session.config.workeroutput["aiohttp_suite"] = _process_counters()


def _process_counters():
    counters = {"goloop_loops": _counters["goloop_loops"], "probe": _probe}
    if "goloop" in sys.modules:
        counters["goloop_stats"] = sys.modules["goloop"].stats()
    return counters


# ---------------------------------------------------------------- 3. the record

_RANK = {"pass": 0, "skip": 1, "xfail": 2, "xpass": 3, "fail": 4, "error": 5, "crash": 6}


def _phase_outcome(report):
    """One phase's report -> (outcome, detail)."""
    if report.when == "???":                    # xdist: the worker died in it
        return "crash", str(report.longrepr)
    wasxfail = hasattr(report, "wasxfail")
    if report.passed:
        return ("xpass" if wasxfail else "pass"), ""
    if report.skipped:
        if wasxfail:
            return "xfail", report.wasxfail or ""
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        return "skip", reason
    kind = "fail" if report.when == "call" else "error"
    return kind, report.longreprtext


def _clip(text, limit=DETAIL_LIMIT):
    """Head and tail of a long failure text: the first error is at the
    head, the teardown's at the tail."""
    if len(text) <= limit:
        return text
    return text[:limit // 3] + "\n[...]\n" + text[-(limit - limit // 3):]


class Recorder:
    """Folds each test's setup/call/teardown reports into one record."""

    def __init__(self, config, loop):
        self.config = config
        self.loop = loop
        path = os.environ.get(OUT_ENV)
        self.out = open(path, "a") if path else None
        self.pending = {}           # nodeid -> record under construction
        self.workers = {}           # worker id -> its counters
        self.t0 = time.monotonic()

    def _write(self, record):
        if self.out is not None:
            self.out.write(json.dumps(record) + "\n")
            self.out.flush()

    def pytest_runtest_logreport(self, report):
        rec = self.pending.setdefault(report.nodeid, {
            "id": report.nodeid, "outcome": "pass", "seconds": 0.0, "detail": "",
            "goloop_loops": 0})
        outcome, detail = _phase_outcome(report)
        rec["seconds"] += getattr(report, "duration", 0.0) or 0.0
        if _RANK[outcome] > _RANK[rec["outcome"]] or (
                report.when == "call" and rec["outcome"] == "pass"):
            rec["outcome"] = outcome
        if detail and outcome != "pass":
            rec["detail"] = _clip((rec["detail"] + "\n" + detail).strip())
        for name, value in getattr(report, "user_properties", ()):
            if name in ("goloop_loops", "network"):
                rec[name] = value
            elif name == "pending_tasks":
                rec["detail"] = _clip(f"pending tasks of the test's loop:\n{value}\n\n"
                                      + rec["detail"])
        node = getattr(report, "node", None)
        if node is not None:
            rec["worker"] = getattr(getattr(node, "gateway", None), "id", None)
        if report.when in ("teardown", "???"):
            rec["seconds"] = round(rec["seconds"], 3)
            self._write(self.pending.pop(report.nodeid))

    def pytest_collectreport(self, report):
        if report.failed:       # a module that does not import: its tests are missing
            self._write({"id": report.nodeid, "outcome": "error", "seconds": 0.0,
                         "detail": _clip(report.longreprtext), "collect": True})

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        wid = node.gateway.id
        out = getattr(node, "workeroutput", None) or {}
        if "aiohttp_suite" in out:
            self.workers[wid] = out["aiohttp_suite"]
        if error is not None:
            self._write({"node_down": wid, "error": _clip(str(error))})

    def pytest_sessionfinish(self, session, exitstatus):
        for rec in self.pending.values():       # a teardown report never came
            self._write(rec)
        self.pending.clear()
        parts = list(self.workers.values()) or [_process_counters()]
        self._write({"done": True, "loop": self.loop, "exitstatus": int(exitstatus),
                     "python": sys.version.split()[0], "seconds": round(time.monotonic() - self.t0, 1),
                     "counters": _sum_counters(parts), "workers": len(self.workers)})
        if self.out is not None:
            self.out.close()
            self.out = None


def _sum_counters(parts):
    """Add up the processes' counters (stats are numbers, except the probe)."""
    total = {"goloop_loops": 0, "probe": None, "goloop_stats": {}}
    for p in parts:
        total["goloop_loops"] += p.get("goloop_loops", 0)
        total["probe"] = total["probe"] or p.get("probe")
        for k, v in (p.get("goloop_stats") or {}).items():
            if k == "longest_step":
                total["goloop_stats"][k] = max(total["goloop_stats"].get(k, 0.0), v)
            elif isinstance(v, (int, float)):
                total["goloop_stats"][k] = total["goloop_stats"].get(k, 0) + v
    return total
