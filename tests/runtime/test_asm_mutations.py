"""Proof that the register and alignment tests can fail.

A register test that passes proves little unless it would fail on broken
assembly.  Each case here builds the selftest against a copy of the switch
assembly (csrc/runtime/asm_<arch>.S) with one deliberate bug — a callee-saved
register no longer saved/restored, the MXCSR / x87 CW / FPCR reload dropped,
a goroutine started with a misaligned stack — and requires the matching test
to report FAIL and name what was lost.  The source files are never touched:
the mutated copy is written to a temporary directory and only its object
replaces the real one at link time.

x86-64 mutants run natively, AArch64 mutants under qemu-user (skipped without
the cross tools, failed under CI=true; see conftest.py).

If the runtime assembly is rewritten so that an instruction named here no
longer exists, the case fails with "mutation ... no longer applies": update
the edit to the new code rather than deleting the case.
"""
import re

import pytest


def _norm(line):
    """The instruction on a line, without macro continuation and ';'."""
    return line.split("/*")[0].strip().rstrip("\\").strip().rstrip(";").strip()


def mutate(text, edits):
    """Apply (old_instruction, new_text_or_None[, optional]) edits by line."""
    lines = text.split("\n")
    for edit in edits:
        old, new = edit[0], edit[1]
        optional = len(edit) > 2 and edit[2]
        hits = [i for i, line in enumerate(lines) if _norm(line) == old]
        if optional and not hits:
            continue
        assert len(hits) == 1, (
            f"mutation {old!r} -> {new!r} no longer applies ({len(hits)} matches): "
            "update tests/runtime/test_asm_mutations.py to the new assembly")
        i = hits[0]
        if new is None:
            del lines[i]
        else:
            lines[i] = lines[i].replace(old, new, 1)
    return "\n".join(lines)


def drop(*instrs):
    return [(s, None) for s in instrs]


# (id, edits, test that must fail, text its FAIL line must contain)
X86_64 = [
    ("rbx", drop("pushq %rbx", "popq %rbx"), "regs_gpr_rbx_rbp_r12_r15", "rbx lost"),
    # rbp also travels in Gobuf.bp, which gl_gogo reloads: drop both.
    ("rbp", drop("pushq %rbp", "popq %rbp")
     + [("movq GOBUF_BP(%rdi), %rbp", None, True)],
     "regs_gpr_rbx_rbp_r12_r15", "rbp lost"),
    ("r12", drop("pushq %r12", "popq %r12"), "regs_gpr_rbx_rbp_r12_r15", "r12 lost"),
    ("r13", drop("pushq %r13", "popq %r13"), "regs_gpr_rbx_rbp_r12_r15", "r13 lost"),
    ("r14", drop("pushq %r14", "popq %r14"), "regs_gpr_rbx_rbp_r12_r15", "r14 lost"),
    ("r15", drop("pushq %r15", "popq %r15"), "regs_gpr_rbx_rbp_r12_r15", "r15 lost"),
    ("mxcsr", drop("ldmxcsr (%rsp)"), "regs_mxcsr", "MXCSR of"),
    ("x87cw", drop("fldcw 4(%rsp)"), "regs_x87cw", "x87 control word of"),
    ("misaligned-start", [("call gl_goentry", "subq $8, %rsp\n    call gl_goentry")],
     "alignment_entry", "not 16-byte aligned"),
]


def _arm64_cases():
    pairs = [("x19", "x20", 0), ("x21", "x22", 16), ("x23", "x24", 32),
             ("x25", "x26", 48), ("x27", "x28", 64), ("x29", "x30", 80),
             ("d8", "d9", 96), ("d10", "d11", 112), ("d12", "d13", 128),
             ("d14", "d15", 144)]
    cases = []
    for a, b, off in pairs:
        stp, ldp = f"stp {a}, {b}, [sp, #{off}]", f"ldp {a}, {b}, [sp, #{off}]"
        for lost, kept, koff in [(a, b, off + 8), (b, a, off)]:
            if lost == "x30":       # without lr nothing returns at all
                continue
            test = "regs_fp_d8_d15" if lost.startswith("d") else "regs_gpr_x19_x29"
            cases.append((lost, [(stp, f"str {kept}, [sp, #{koff}]"),
                                 (ldp, f"ldr {kept}, [sp, #{koff}]")],
                          test, f"{lost} lost" if lost != "x29" else "x29 (fp) lost"))
    cases.append(("fpcr", drop("msr fpcr, x9"), "regs_fpcr", "FPCR of"))
    cases.append(("misaligned-start",
                  [("bl gl_goentry", "sub sp, sp, #8\n    bl gl_goentry")],
                  "alignment_entry", "not 16-byte aligned"))
    return cases


AARCH64 = _arm64_cases()


def run_mutant(tc, rth, tmp_path, asm_name, edits, test, expect):
    src = rth.RUNTIME / asm_name
    text = src.read_text()
    mutated = mutate(text, edits)
    assert mutated != text
    copy = tmp_path / asm_name
    copy.write_text(mutated)
    # The copy includes gobuf.h from the runtime directory (CFLAGS has -I).
    obj = tc.compile(copy, tmp_path / (asm_name + ".o"))
    exe = tc.link(tmp_path / "selftest-mutant", replace={asm_name: obj})
    p = tc.run(exe, "--no-bench", test, cwd=tmp_path, timeout=60)
    results, summary = rth.parse_selftest(p.stdout)
    line = results.get(test, "")
    assert line.startswith(f"FAIL {test}:"), (
        f"the mutant ({edits}) was not caught by {test}: exit {p.returncode}\n"
        f"{p.stdout}\n{p.stderr}")
    assert expect in line, line
    assert summary == (0, 1) and p.returncode == 1, p.stdout
    return line


@pytest.mark.parametrize("case", X86_64, ids=[c[0] for c in X86_64])
def test_x86_64_mutant_is_caught(native_tc, rth, tmp_path, case):
    native_tc.require()
    if native_tc.name != "x86-64":
        pytest.skip("x86-64 host only")
    name, edits, test, expect = case
    run_mutant(native_tc, rth, tmp_path, "asm_amd64.S", edits, test, expect)


@pytest.mark.parametrize("case", AARCH64, ids=[c[0] for c in AARCH64])
def test_aarch64_mutant_is_caught(arm64_tc, rth, tmp_path, case):
    arm64_tc.require()
    name, edits, test, expect = case
    run_mutant(arm64_tc, rth, tmp_path, "asm_arm64.S", edits, test, expect)


def test_mutate_refuses_stale_edits():
    with pytest.raises(AssertionError, match="no longer applies"):
        mutate("    pushq %rbx\n", drop("pushq %rbp"))
    assert mutate("  pushq %rbx;   \\\n  ret", drop("pushq %rbx")) == "  ret"
    assert re.search(r"str x20", mutate("    stp x19, x20, [sp, #0];  \\",
                                        [("stp x19, x20, [sp, #0]",
                                          "str x20, [sp, #8]")]))
