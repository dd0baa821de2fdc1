"""goloop's benchmark suite: python -m benchmarks (see benchmarks/runner.py).

The suite runs from the project root, so the root is on sys.path, and so is
the source tree's goloop/ package -- which has no compiled modules unless it
was built in place (setup.py build_ext --inplace).  In a virtualenv where
goloop was pip-installed instead (make bench), that unbuilt copy would shadow
the installed one.  So when the tree's goloop is not built for this
interpreter, the root is taken off sys.path here, before anything imports
goloop; the benchmarks package itself is already imported and keeps working
through its own __path__.
"""
import importlib.machinery
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree_goloop_is_built():
    package = os.path.join(ROOT, "goloop")
    return any(os.path.exists(os.path.join(package, "_goloop" + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _is_root(entry):
    return os.path.realpath(entry or os.curdir) == os.path.realpath(ROOT)


if not _tree_goloop_is_built():
    sys.path[:] = [entry for entry in sys.path if not _is_root(entry)]
