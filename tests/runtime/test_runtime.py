"""The goroutine runtime's C-level tests, run through cffi.

Each test here calls one C test function of csrc/runtime/testing/rt_tests.c
(via goloop._runtime_cffi) in this process, with no CPython glue involved:
the C function does the work and returns 0 or a reason.  What each checks is
described in rt_tests.h.  Tests that kill the process (the guard page) run
in a fresh Python subprocess: one without faulthandler, where the runtime's
message is followed by the default SIGSEGV action, and one with it, where
the runtime chains to Python's faulthandler (which re-raises the signal).
"""
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def run_c(rt, fn, *args):
    buf = rt.ffi.new("char[]", 2048)
    rc = fn(*args, buf, len(buf))
    msg = rt.ffi.string(buf).decode(errors="replace")
    if rc == rt.lib.GL_TEST_SKIP:
        pytest.skip(msg)
    assert rc == 0, f"C test failed (source line {rc}): {msg}"
    return msg


def arch(rt):
    return rt.ffi.string(rt.lib.gl_rt_arch()).decode()


def test_ring_10000_goroutines(rt):
    run_c(rt, rt.lib.gl_test_ring, 10000, 5)


# The register classes of each architecture (the C functions of the others
# return GL_TEST_SKIP, checked below).
REGS = {"x86_64": ["gpr", "mxcsr", "x87cw"], "aarch64": ["gpr", "fp", "fpcr"]}
ALL_REGS = ["gpr", "fp", "mxcsr", "x87cw", "fpcr"]
MY_REGS = REGS.get(platform.machine(), ["gpr"])
# scripts/memcheck.sh runs this suite under valgrind, whose x86-64 emulation
# does not keep what a program loads into MXCSR or the x87 control word (it
# reads back values of its own): nothing there for the switch to preserve.
MEMCHECK_FP_CONTROL = pytest.mark.skipif(
    os.environ.get("GOLOOP_MEMCHECK") == "1",
    reason="valgrind does not emulate non-default MXCSR / x87 control values")


@pytest.mark.parametrize("which", [
    pytest.param(w, marks=MEMCHECK_FP_CONTROL) if w in ("mxcsr", "x87cw") else w
    for w in MY_REGS])
def test_callee_saved(rt, which):
    """Fails if the switch assembly loses a callee-saved register (GPRs, and
    on AArch64 d8-d15) or a floating-point control register; see
    test_asm_mutations.py for the proof that it does."""
    run_c(rt, getattr(rt.lib, f"gl_test_regs_{which}"))


def test_other_arch_register_tests_skip(rt):
    buf = rt.ffi.new("char[]", 256)
    for which in set(ALL_REGS) - set(MY_REGS):
        rc = getattr(rt.lib, f"gl_test_regs_{which}")(buf, len(buf))
        assert rc == rt.lib.GL_TEST_SKIP, (which, rc, rt.ffi.string(buf))
        assert b"only" in rt.ffi.string(buf)


@pytest.mark.parametrize("where", ["entry", "resume"])
def test_alignment(rt, where):
    run_c(rt, getattr(rt.lib, f"gl_test_alignment_{where}"))


def test_stack_reuse(rt):
    run_c(rt, rt.lib.gl_test_stack_reuse, 1000)


# scripts/sanitize.sh runs this suite under ASan with
# detect_stack_use_after_return, which moves the test's deep frames (their
# address-taken buffers) to ASan's heap "fake stack": the goroutine's stack
# is then never written deeply, and residency cannot be checked.
@pytest.mark.skipif(os.environ.get("GOLOOP_SANITIZED") == "1",
                    reason="under ASan the deep frames live on its fake stack, "
                           "not on the goroutine stack")
def test_trim_deep(rt):
    note = run_c(rt, rt.lib.gl_test_trim_deep, 512 * 1024)
    assert not note, note     # natively, residency must really be checked


def test_trim_shallow(rt):
    run_c(rt, rt.lib.gl_test_trim_shallow)


@pytest.mark.parametrize("name", ["dead", "notg", "thread", "einval", "running"])
def test_error_paths(rt, name):
    run_c(rt, getattr(rt.lib, f"gl_test_err_{name}"))


def test_no_stack_left_in_use(rt):
    stats = rt.ffi.new("gl_stats *")
    rt.lib.gl_get_stats(stats)
    before = stats.stacks_in_use
    run_c(rt, rt.lib.gl_test_ring, 100, 2)
    rt.lib.gl_get_stats(stats)
    assert stats.stacks_in_use == before
    assert stats.goroutines_started >= 100


def test_table_lists_every_test(rt, rth):
    """selftest walks gl_rt_tests; a test dropped from it would go unrun."""
    names = [rt.ffi.string(rt.lib.gl_rt_test_get(i).name).decode()
             for i in range(rt.lib.gl_rt_test_count())]
    assert sorted(names) == sorted(rth.expected_tests(arch(rt)))
    assert rt.lib.gl_rt_test_get(len(names)) == rt.ffi.NULL


def test_benchmarks(rt, record_property):
    raw = rt.lib.gl_bench_raw_switch_ns(200000)
    rp = rt.lib.gl_bench_resume_park_ns(200000)
    record_property("raw_switch_ns", f"{raw:.1f}")
    record_property("resume_park_round_trip_ns", f"{rp:.1f}")
    for v in (raw, rp):
        assert math.isfinite(v) and 0 < v < 100_000, (raw, rp)
    # A round trip is two switches plus bookkeeping.
    assert rp > raw, (raw, rp)


# ---- the guard page, in subprocesses -------------------------------------

OVERFLOW_MSG = re.compile(
    r"goloop: fatal error: goroutine \d+ \(overflow-test\) overflowed its stack "
    r"of 65536 bytes \(guard page hit at 0x[0-9a-f]+\)\.\n"
    r"Set a larger stack size with gl_set_default_stack_size\(\)\.\n")


def _no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(rt, tmp_path, code, *pyflags):
    """`code` in a fresh interpreter that imports the same goloop package."""
    pkg_parent = str(Path(rt.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env.pop("PYTHONFAULTHANDLER", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [pkg_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, *pyflags, "-c", code], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60,
                          preexec_fn=_no_core)


@pytest.mark.parametrize("faulthandler", [False, True], ids=["plain", "faulthandler"])
def test_guard_page_kills_with_message(rt, tmp_path, faulthandler):
    code = ("import sys; from goloop import _runtime_cffi as m; "
            "sys.exit(10 + m.lib.gl_test_overflow_child(0))")
    p = run_python(rt, tmp_path, code, *(["-X", "faulthandler"] if faulthandler else []))
    assert p.returncode in (-signal.SIGSEGV, -signal.SIGBUS), (
        f"exit {p.returncode}, not death by SIGSEGV; stderr:\n{p.stderr}")
    assert OVERFLOW_MSG.search(p.stderr), p.stderr
    if faulthandler:
        # The runtime's message comes first, then Python's faulthandler,
        # to which the handler chained.
        assert "Fatal Python error: Segmentation fault" in p.stderr, p.stderr
        assert p.stderr.index("goloop: fatal error") < p.stderr.index("Fatal Python error")


def test_guard_page_fork_test_via_cffi(rt, tmp_path):
    """The C fork-based test, in a subprocess: forking pytest itself would let
    its faulthandler print a spurious traceback from the child."""
    code = ("from goloop import _runtime_cffi as m; b = m.ffi.new('char[2048]'); "
            "rc = m.lib.gl_test_guard_page(b, 2048); "
            "print(rc); print(m.ffi.string(b).decode())")
    p = run_python(rt, tmp_path, code)
    assert p.returncode == 0, p.stderr
    rc, _, msg = p.stdout.partition("\n")
    assert rc == "0", msg


# sysmon (csrc/runtime/sysmon.c), with no CPython in the picture: a P whose
# preempt callback records what sysmon asked for and when.
@pytest.mark.parametrize("name", ["long_step", "short_steps", "sleeps_while_polling", "detach"])
def test_sysmon(rt, name):
    run_c(rt, getattr(rt.lib, f"gl_test_sysmon_{name}"))
