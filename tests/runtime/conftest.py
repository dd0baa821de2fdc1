"""Shared fixtures of the runtime's C-level tests (tests/runtime).

Two ways in to the same C tests (csrc/runtime/testing/rt_tests.c):
  - the cffi module goloop._runtime_cffi, from the installed goloop package
    (fixture `rt`; test_runtime.py);
  - the plain C main csrc/runtime/testing/selftest.c, compiled here from the
    source tree: natively, and for AArch64 with aarch64-linux-gnu-gcc -static,
    run under qemu-user (fixtures `native_tc` / `arm64_tc`;
    test_cross_aarch64.py and test_asm_mutations.py).

Missing tools never pass silently: under CI (CI=true) they fail the test,
elsewhere they skip it with the command that installs them.
"""
import os
import platform
import re
import shlex
import shutil
import subprocess
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "csrc" / "runtime"
TESTING = RUNTIME / "testing"

# What the selftest links: runtime + test helpers + main.  Every .S is
# assembled on every architecture (each is empty off its own).
C_SOURCES = [RUNTIME / "stack.c", RUNTIME / "proc.c", RUNTIME / "overflow.c",
             RUNTIME / "sysmon.c",
             TESTING / "rt_tests.c", TESTING / "selftest.c"]
ASM_SOURCES = [RUNTIME / "asm_amd64.S", RUNTIME / "asm_arm64.S",
               TESTING / "regs_amd64.S", TESTING / "regs_arm64.S"]
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME}", f"-I{TESTING}"]

CROSS_HINT = ("apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross "
              "qemu-user, or run scripts/ensure-cross-tools.sh")

COMMON_TESTS = [
    "ring", "alignment_entry", "alignment_resume", "stack_reuse", "trim_deep",
    "trim_shallow", "guard_page", "err_dead", "err_notg", "err_thread",
    "err_einval", "err_running", "sysmon_long_step", "sysmon_short_steps",
    "sysmon_sleeps_while_polling", "sysmon_detach",
]
ARCH_TESTS = {
    "x86-64": ["regs_gpr_rbx_rbp_r12_r15", "regs_mxcsr", "regs_x87cw"],
    "AArch64": ["regs_gpr_x19_x29", "regs_fp_d8_d15", "regs_fpcr"],
}

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")


def missing_tools(what, hint):
    """Fail under CI, skip elsewhere: `what` is missing."""
    msg = f"{what} missing; to get them: {hint}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


class Toolchain:
    """Compiles the selftest for one target; objects are built once and
    reused, so a variant (a mutated .S) costs one assemble and one link."""

    def __init__(self, name, cc, workdir, ldflags=(), runner=(), missing=None):
        self.name = name
        self.cc = shlex.split(cc) if cc else []
        self.workdir = Path(workdir)
        self.ldflags = list(ldflags)
        self.runner = list(runner)
        self.missing = missing      # (what, hint) when the tools are not here
        self._objects = None

    def require(self):
        """Call first in a test body, so a missing tool makes the test fail
        (under CI) or skip, rather than error in a fixture."""
        if self.missing:
            missing_tools(*self.missing)
        return self

    def compile(self, src, obj):
        cmd = [*self.cc, *CFLAGS, "-c", str(src), "-o", str(obj)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0 and not p.stderr.strip(), (
            f"{' '.join(cmd)} failed or warned:\n{p.stderr}")
        return obj

    def objects(self):
        if self._objects is None:
            self._objects = {}
            for src in C_SOURCES + ASM_SOURCES:
                obj = self.workdir / (src.name.replace(".", "_") + ".o")
                self._objects[src.name] = self.compile(src, obj)
        return self._objects

    def link(self, exe, replace=None):
        """Link the selftest; `replace` maps a source name to another .o."""
        objs = dict(self.objects())
        objs.update(replace or {})
        cmd = [*self.cc, *self.ldflags, *map(str, objs.values()), "-lpthread",
               "-o", str(exe)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0 and not p.stderr.strip(), (
            f"{' '.join(cmd)} failed or warned:\n{p.stderr}")
        return exe

    def run(self, exe, *args, timeout=120, **kw):
        return subprocess.run([*self.runner, str(exe), *args], capture_output=True,
                              text=True, timeout=timeout, **kw)


def parse_selftest(out):
    """{name: line} of PASS/FAIL lines, and (passed, failed) of the summary."""
    results, summary = {}, None
    for line in out.splitlines():
        m = re.match(r"^(PASS|FAIL|SKIP) ([A-Za-z0-9_]+)", line)
        if m:
            results[m.group(2)] = line
        m = SUMMARY.match(line)
        if m:
            summary = (int(m.group(1)), int(m.group(2)))
    return results, summary


def native_arch():
    return {"x86_64": "x86-64", "aarch64": "AArch64", "arm64": "AArch64"}.get(
        platform.machine(), platform.machine())


@pytest.fixture(scope="session")
def native_tc(tmp_path_factory):
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    missing = None
    if not cc or not shutil.which(shlex.split(cc)[0]):
        missing = ("a native C compiler (gcc)", "apt-get install gcc")
    return Toolchain(native_arch(), cc, tmp_path_factory.mktemp("native"),
                     missing=missing)


@pytest.fixture(scope="session")
def arm64_tc(tmp_path_factory):
    cc = shutil.which("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    libc = None
    if cc:
        p = subprocess.run([cc, "-print-file-name=libc.a"], capture_output=True,
                           text=True)
        libc = p.stdout.strip()
        libc = libc if os.path.isabs(libc) and os.path.exists(libc) else None
    missing = [n for n, ok in [("aarch64-linux-gnu-gcc", cc),
                               ("the static AArch64 libc (libc6-dev-arm64-cross)", libc),
                               ("qemu-aarch64", qemu)] if not ok]
    return Toolchain("AArch64", cc, tmp_path_factory.mktemp("arm64"),
                     ldflags=["-static"], runner=[qemu] if qemu else [],
                     missing=("AArch64 cross tools (" + ", ".join(missing) + ")",
                              CROSS_HINT) if missing else None)


def expected_tests(arch):
    """Every test selftest must run on `arch`, in no particular order."""
    return COMMON_TESTS + ARCH_TESTS[arch]


@pytest.fixture(scope="session")
def rth():
    """This file's helpers, for the test modules (a fixture rather than an
    import, so it works whatever pytest's import mode and other conftests)."""
    return types.SimpleNamespace(
        parse_selftest=parse_selftest, expected_tests=expected_tests,
        native_arch=native_arch, ARCH_TESTS=ARCH_TESTS, RUNTIME=RUNTIME,
        TESTING=TESTING)


@pytest.fixture(scope="session")
def rt():
    """The cffi module, from the goloop package under test."""
    from goloop import _runtime_cffi

    return _runtime_cffi
