"""cffi build of goloop._runtime_cffi: the goroutine runtime, with no CPython
code in it, plus its C-level test helpers, for tests/runtime and benchmarks.

Why a cffi module: the runtime (csrc/runtime) is Python-agnostic C, and its
tests (rt_tests.c: goroutine rings, callee-saved registers around the switch
assembly, stack alignment, stack cache and trimming, the guard page, error
paths) must run with no CPython glue in the picture.  cffi's API mode compiles
them into a small extension that pytest drives; the same test functions also
build into a plain C main (selftest.c) for the AArch64 run under qemu-user.

Run by setuptools through `cffi_modules` in setup.py, from the project root:
source paths are given relative to it, and setup.py's build_ext teaches the
compiler the .S (preprocessed assembly) extension.

For development, `python3 csrc/runtime/testing/cffi_build.py [OUTDIR]` builds
the module alone (default OUTDIR: the current directory) in a temporary
directory and copies the extension to OUTDIR/goloop/.  That path uses
absolute source paths, because cffi compiles from inside its temporary
directory, and teaches distutils' compiler the .S extension itself.
"""
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIME = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(RUNTIME))

RUNTIME_SOURCES = ["stack.c", "proc.c", "overflow.c", "sysmon.c", "asm_amd64.S", "asm_arm64.S"]
TESTING_SOURCES = ["rt_tests.c", "regs_amd64.S", "regs_arm64.S"]

CDEF = """
    typedef struct gl_stats {
        uint64_t stacks_in_use;
        uint64_t stacks_cached;
        uint64_t stacks_mapped;
        uint64_t stacks_reused;
        uint64_t stacks_trimmed;
        uint64_t goroutines_started;
        uint64_t goroutines_finished;
    } gl_stats;
    void gl_get_stats(gl_stats *out);
    int gl_set_default_stack_size(size_t size);
    size_t gl_default_stack_size(void);
    void gl_set_stack_cache_limit(size_t n);
    void gl_set_stack_trim_keep(size_t bytes);
    size_t gl_page_size(void);
    const char *gl_strerror(int err);

    /* csrc/runtime/testing/rt_tests.h */
    #define GL_TEST_SKIP ...
    int gl_test_ring(int n, int laps, char *msg, size_t cap);
    int gl_test_regs_gpr(char *msg, size_t cap);
    int gl_test_regs_fp(char *msg, size_t cap);
    int gl_test_regs_mxcsr(char *msg, size_t cap);
    int gl_test_regs_x87cw(char *msg, size_t cap);
    int gl_test_regs_fpcr(char *msg, size_t cap);
    int gl_test_alignment_entry(char *msg, size_t cap);
    int gl_test_alignment_resume(char *msg, size_t cap);
    int gl_test_stack_reuse(int n, char *msg, size_t cap);
    int gl_test_trim_deep(size_t depth, char *msg, size_t cap);
    int gl_test_trim_shallow(char *msg, size_t cap);
    int gl_test_overflow_child(size_t stack_size);
    int gl_test_guard_page(char *msg, size_t cap);
    int gl_test_err_dead(char *msg, size_t cap);
    int gl_test_err_notg(char *msg, size_t cap);
    int gl_test_err_thread(char *msg, size_t cap);
    int gl_test_err_einval(char *msg, size_t cap);
    int gl_test_err_running(char *msg, size_t cap);
    int gl_test_sysmon_long_step(char *msg, size_t cap);
    int gl_test_sysmon_short_steps(char *msg, size_t cap);
    int gl_test_sysmon_sleeps_while_polling(char *msg, size_t cap);
    int gl_test_sysmon_detach(char *msg, size_t cap);
    double gl_bench_raw_switch_ns(long n);
    double gl_bench_resume_park_ns(long n);
    typedef struct gl_rt_test {
        const char *name;
        int (*fn)(char *msg, size_t cap);
    } gl_rt_test;
    size_t gl_rt_test_count(void);
    const gl_rt_test *gl_rt_test_get(size_t i);
    const char *gl_rt_arch(void);
"""


def _make(absolute):
    def path(*parts):
        p = os.path.join(*parts)
        return p if absolute else os.path.relpath(p, ROOT)

    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        "goloop._runtime_cffi",
        '#include "runtime.h"\n#include "rt_tests.h"\n',
        sources=[path(RUNTIME, f) for f in RUNTIME_SOURCES]
        + [path(HERE, f) for f in TESTING_SOURCES],
        include_dirs=[path(RUNTIME), path(HERE)],
        extra_compile_args=["-Wall", "-Wextra", "-O2"],
        libraries=["pthread"],
    )
    return builder


if __name__ == "__main__":
    # Standalone build: distutils' compiler does not know .S out of the box.
    import shutil
    import tempfile

    import setuptools  # noqa: F401  (makes `distutils` setuptools' copy)
    from distutils.unixccompiler import UnixCCompiler

    if ".S" not in UnixCCompiler.src_extensions:
        UnixCCompiler.src_extensions.append(".S")
    outdir = os.path.join(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "."),
                          "goloop")
    # cffi builds inside its tmpdir (objects named after the absolute source
    # paths); keep all of that out of OUTDIR and copy only the extension.
    with tempfile.TemporaryDirectory(prefix="goloop-cffi-") as tmp:
        built = _make(absolute=True).compile(tmpdir=tmp, verbose=True)
        os.makedirs(outdir, exist_ok=True)
        dest = os.path.join(outdir, os.path.basename(built))
        shutil.copy2(built, dest)
    print(dest)
else:
    ffibuilder = _make(absolute=False)
