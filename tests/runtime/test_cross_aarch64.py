"""The runtime's C selftest as plain executables: native, and AArch64 under
qemu-user.

The selftest (csrc/runtime/testing/selftest.c) links the runtime and the
C-level tests with no Python at all, so the AArch64 port of the switch
assembly (asm_arm64.S) is exercised for real: compiled with
aarch64-linux-gnu-gcc -static and run under qemu-aarch64.  The native build
runs the same tests on the host (x86-64 here) as a stand-alone program.

Without the cross tools the AArch64 tests skip with the command that installs
them, except under CI (CI=true), where they fail: CI must not lose the only
run of the AArch64 assembly silently.
"""
import resource
import signal

import pytest


def _no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def check_selftest(rth, tc, exe, arch, tmp_path):
    p = tc.run(exe, cwd=tmp_path, preexec_fn=_no_core)
    report = (f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
    results, summary = rth.parse_selftest(p.stdout)
    assert summary is not None, f"no 'N passed, M failed' line\n{report}"
    assert p.stdout.rstrip().splitlines()[-1] == "%d passed, %d failed" % summary, report
    failed_lines = [line for line in results.values() if not line.startswith("PASS")]
    assert summary[1] == 0 and not failed_lines, report
    expected = rth.expected_tests(arch)
    missing = [n for n in expected if not results.get(n, "").startswith("PASS")]
    assert not missing, f"no PASS line for {missing}\n{report}"
    assert summary[0] == len(expected), report
    assert f"# goloop runtime selftest on {arch}" in p.stdout, report
    assert p.returncode == 0, report
    return results, p


def test_native_selftest(native_tc, rth, tmp_path):
    native_tc.require()
    exe = native_tc.link(tmp_path / "selftest")
    results, _ = check_selftest(rth, native_tc, exe, native_tc.name, tmp_path)
    # Natively MADV_DONTNEED works, so the trim check must not be waived.
    assert results["trim_deep"] == "PASS trim_deep", results["trim_deep"]


def test_aarch64_selftest_under_qemu(arm64_tc, rth, tmp_path):
    arm64_tc.require()
    exe = arm64_tc.link(tmp_path / "selftest-arm64")
    with open(exe, "rb") as f:
        elf = f.read(20)
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183, \
        "not an AArch64 ELF (e_machine 183)"
    results, p = check_selftest(rth, arm64_tc, exe, "AArch64", tmp_path)
    for name in ["regs_gpr_x19_x29", "regs_fp_d8_d15", "regs_fpcr",
                 "alignment_entry", "alignment_resume", "guard_page"]:
        assert results[name].startswith(f"PASS {name}"), p.stdout


@pytest.mark.parametrize("target", ["native", "aarch64"])
def test_selftest_overflow_child(request, rth, tmp_path, target):
    """`selftest overflow-child` dies by SIGSEGV after the runtime's message
    (under qemu-user, qemu re-raises the guest's signal on itself)."""
    tc = request.getfixturevalue("native_tc" if target == "native" else "arm64_tc")
    tc.require()
    exe = tc.link(tmp_path / "selftest")
    p = tc.run(exe, "overflow-child", "131072", cwd=tmp_path, preexec_fn=_no_core,
               timeout=60)
    assert p.returncode in (-signal.SIGSEGV, -signal.SIGBUS), (p.returncode, p.stderr)
    assert "(overflow-test) overflowed its stack of 131072 bytes" in p.stderr, p.stderr
    assert "gl_set_default_stack_size" in p.stderr, p.stderr
