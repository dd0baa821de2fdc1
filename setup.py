"""Build of goloop's native parts.

Two extension modules are built from the same runtime sources (csrc/runtime):
  goloop._goloop        the C-API module: the loop core (csrc/loop), the CPython
                        glue (csrc/cpython) and the runtime
  goloop._runtime_cffi  a cffi module exposing the runtime and its C-level test
                        helpers (csrc/runtime/testing) to pytest, with no
                        CPython code in the picture

The runtime's switch is assembly in .S files, which setuptools does not know
as a source type; BuildExt teaches the compiler that .S files are C-preprocessed
assembly (gcc compiles them with the same driver).

GOLOOP_DEBUG=1 builds without NDEBUG and with -O0 -g, so every assert() in the
native code is checked.

GOLOOP_SANITIZE=address,undefined (any -fsanitize= list) builds both modules
instrumented, with -O1 -g -fno-omit-frame-pointer, and needs CC=clang: the
modules then expect clang's ASan runtime to be preloaded into an interpreter
that is not instrumented itself (scripts/sanitize.sh does all of it).  The
runtime tells ASan about its stack switches only in such a build
(csrc/runtime/sanitizer.h).

GOLOOP_VALGRIND=1 defines GOLOOP_VALGRIND, which makes the runtime register
its goroutine stacks with valgrind (needs valgrind's headers;
scripts/memcheck.sh).
"""
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

RUNTIME_C = ["csrc/runtime/stack.c", "csrc/runtime/proc.c", "csrc/runtime/overflow.c",
             "csrc/runtime/sysmon.c"]
RUNTIME_ASM = ["csrc/runtime/asm_amd64.S", "csrc/runtime/asm_arm64.S"]


def _files(folder, suffix):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(suffix))


# Headers, so that changing one rebuilds (setuptools tracks only sources).
HEADERS = _files("csrc/runtime", ".h") + _files("csrc/cpython", ".h") + _files("csrc/loop", ".h")
GLUE_C = _files("csrc/cpython", ".c")
LOOP_C = _files("csrc/loop", ".c")

WARNINGS = ["-Wall", "-Wextra", "-Wno-missing-field-initializers"]
if os.environ.get("GOLOOP_DEBUG"):
    OPT = ["-O0", "-g", "-UNDEBUG"]
else:
    OPT = ["-O2"]
SANITIZE = os.environ.get("GOLOOP_SANITIZE", "")


def _checker_flags():
    """(compile args, link args, macros) that GOLOOP_SANITIZE and
    GOLOOP_VALGRIND add to every extension; all empty in a normal build.
    They come after the extension's own, so -O1 wins over -O2."""
    cflags, ldflags, macros = [], [], []
    if SANITIZE:
        cflags += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer",
                   "-fno-sanitize-recover=all", "-O1", "-g"]
        ldflags += [f"-fsanitize={SANITIZE}"]
    if os.environ.get("GOLOOP_VALGRIND"):
        macros.append(("GOLOOP_VALGRIND", "1"))
    return cflags, ldflags, macros


def _require_clang(compiler):
    """A sanitized build is meant for clang's runtime (see the docstring)."""
    cc = os.path.basename(compiler.compiler_so[0])
    if "clang" not in cc:
        raise SystemExit(f"GOLOOP_SANITIZE needs CC=clang (the compiler is {cc})")


class BuildExt(build_ext):
    def build_extensions(self):
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
        if SANITIZE:
            _require_clang(self.compiler)
        # Every extension, the cffi one (csrc/runtime/testing) included.
        cflags, ldflags, macros = _checker_flags()
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args or []) + cflags
            ext.extra_link_args = list(ext.extra_link_args or []) + ldflags
            ext.define_macros = list(ext.define_macros or []) + macros
        super().build_extensions()


goloop_ext = Extension(
    "goloop._goloop",
    sources=LOOP_C + GLUE_C + RUNTIME_C + RUNTIME_ASM,
    include_dirs=["csrc/runtime", "csrc/cpython", "csrc/loop"],
    depends=HEADERS,
    extra_compile_args=WARNINGS + OPT,
    libraries=["pthread"],
)

setup(
    ext_modules=[goloop_ext],
    cffi_modules=["csrc/runtime/testing/cffi_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
)
