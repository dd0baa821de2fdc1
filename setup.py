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


class BuildExt(build_ext):
    def build_extensions(self):
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
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
