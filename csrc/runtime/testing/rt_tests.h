/*
 * rt_tests.h — C-level tests of goloop's goroutine runtime (csrc/runtime).
 *
 * The tests exercise the runtime with no CPython in the process: they are
 * called from pytest through the cffi module goloop._runtime_cffi and from a
 * plain C main (selftest.c), natively and cross-compiled for AArch64 under
 * qemu-user.  So every test is an ordinary C function with one shape:
 *
 *     int gl_test_NAME(char *msg, size_t cap)
 *
 * returning 0 on success; on failure a nonzero code (the source line of the
 * failed check) with a one-line reason written into msg[0..cap).  A test that
 * does not apply to the machine it runs on (an x86-64 register test on
 * AArch64, say) returns GL_TEST_SKIP and says why in msg.  Tests with a size
 * knob take it first; the table gl_rt_tests[] binds the default sizes and
 * lists, per architecture, the tests that apply there (selftest.c walks it).
 *
 * Tests may change the runtime's process-wide settings (default stack size,
 * cache limit, trim keep); each one puts back what it changed.
 */
#ifndef GOLOOP_RT_TESTS_H
#define GOLOOP_RT_TESTS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GL_TEST_SKIP (-1)

/* ---- scheduling ------------------------------------------------------ */
/* n goroutines park in turn; a driver on g0 resumes them round-robin for
 * `laps` laps, passing a value each way and checking both.  All finish and
 * the stacks in use go back to where they were. */
int gl_test_ring(int n, int laps, char *msg, size_t cap);

/* ---- callee-saved state across a switch ------------------------------- */
/* Two contexts ping-pong through gl_gosave_gogo with distinct patterns
 * loaded in every callee-saved register (regs_<arch>.S); each side checks its
 * own patterns survived the other side's.  x86-64: rbx rbp r12-r15;
 * AArch64: the GPR test checks x19-x28 and x29, the FP test d8-d15. */
int gl_test_regs_gpr(char *msg, size_t cap);
int gl_test_regs_fp(char *msg, size_t cap);          /* AArch64 only */
/* Goroutines, nested, each set a different floating-point control value and
 * check it survives the others' (through gl_resume / gl_park / exit). */
int gl_test_regs_mxcsr(char *msg, size_t cap);       /* x86-64 only */
int gl_test_regs_x87cw(char *msg, size_t cap);       /* x86-64 only */
int gl_test_regs_fpcr(char *msg, size_t cap);        /* AArch64 only */

/* ---- stack pointer alignment ----------------------------------------- */
/* At a goroutine function's entry, and after gl_park / a raw switch
 * returns into it, sp meets the ABI: 16-byte aligned at every call. */
int gl_test_alignment_entry(char *msg, size_t cap);
int gl_test_alignment_resume(char *msg, size_t cap);

/* ---- stacks ----------------------------------------------------------- */
/* n goroutines run one after another: at most one stack is mapped, the
 * others come from the cache. */
int gl_test_stack_reuse(int n, char *msg, size_t cap);
/* A goroutine uses `depth` bytes of its stack; once it finished, the pages
 * below the kept top are no longer resident (mincore) and stacks_trimmed
 * counted it. */
int gl_test_trim_deep(size_t depth, char *msg, size_t cap);
/* A shallow goroutine's stack is cached without a trim. */
int gl_test_trim_shallow(char *msg, size_t cap);

/* ---- guard page -------------------------------------------------------- */
/* Runs in the calling process and must not return: starts a goroutine
 * (label "overflow-test", stack `stack_size` bytes, 0 for 64 KiB) that
 * recurses without bound.  Returns nonzero only if the goroutine could not
 * be started or the recursion came back. */
int gl_test_overflow_child(size_t stack_size);
/* Forks a child that runs gl_test_overflow_child, and checks it died by
 * SIGSEGV/SIGBUS after printing the runtime's overflow message (goroutine id,
 * label, stack size, the default hint naming gl_set_default_stack_size). */
int gl_test_guard_page(char *msg, size_t cap);

/* ---- error paths ------------------------------------------------------- */
int gl_test_err_dead(char *msg, size_t cap);     /* resume finished: EDEAD */
int gl_test_err_notg(char *msg, size_t cap);     /* park on g0: ENOTG */
int gl_test_err_thread(char *msg, size_t cap);   /* other thread: ETHREAD */
int gl_test_err_einval(char *msg, size_t cap);   /* bad stack size: EINVAL */
int gl_test_err_running(char *msg, size_t cap);  /* self / parent: ERUNNING */
int gl_test_sysmon_long_step(char *msg, size_t cap);
int gl_test_sysmon_short_steps(char *msg, size_t cap);
int gl_test_sysmon_sleeps_while_polling(char *msg, size_t cap);
int gl_test_sysmon_detach(char *msg, size_t cap);

/* ---- benchmarks -------------------------------------------------------- */
/* ns per single switch of two contexts ping-ponging with gl_gosave_gogo
 * directly (round trip / 2), over n round trips; negative on failure. */
double gl_bench_raw_switch_ns(long n);
/* ns per gl_resume + gl_park round trip, over n round trips. */
double gl_bench_resume_park_ns(long n);

/* ---- the table ---------------------------------------------------------- */
typedef struct gl_rt_test {
    const char *name;
    int (*fn)(char *msg, size_t cap);
} gl_rt_test;

/* The tests that apply to this architecture, default sizes bound. */
size_t gl_rt_test_count(void);
const gl_rt_test *gl_rt_test_get(size_t i);
/* "x86-64", "AArch64" or "unsupported". */
const char *gl_rt_arch(void);

#ifdef __cplusplus
}
#endif
#endif /* GOLOOP_RT_TESTS_H */
