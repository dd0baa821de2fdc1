#!/usr/bin/env bash
# The whole test suite, from a fresh machine: for each supported CPython
# (3.11, 3.12, 3.13, 3.14, 3.15) build and install goloop into its own virtual
# environment under .venvs/, then run pytest against the installed package.
# Interpreters are found through pyenv (any installed 3.X.Y) or as python3.X
# on PATH.  3.14 and 3.15, when the host has neither, come from a Debian sid
# root (scripts/sid-root.sh prepares it once in .sid-root/, ~2-3 minutes the
# first time), and their venv, build and pytest commands run inside it through
# scripts/sid-run.sh.  A version that cannot be found (or whose sid root could
# not be prepared) is reported in a loud line at the end, never skipped
# silently.  Under CI=true the AArch64 cross tools are installed when missing
# (on the host, and in the sid root when it is used).
#
#   scripts/test.sh                 all versions, whole suite
#   scripts/test.sh -k recursion    extra arguments go to pytest
#   GOLOOP_PYTHONS="3.12" scripts/test.sh    a subset of versions
#   GOLOOP_PYTHONS="3.14d 3.15d" scripts/test.sh    only the sid root's debug builds
#
# At the end of a whole run (no arguments, no GOLOOP_PYTHONS), the packages
# users get are checked once (scripts/check-package.sh, with CPython 3.12).
#
# Each version's venv gets goloop with its `test` extra; those that run the
# application tests (tests/apps; GOLOOP_APPS_PYTHONS, default 3.12 and 3.14,
# to keep the whole run within its hour) get the `apps` extra too, and those
# tests talk to a PostgreSQL and a Redis server that
# scripts/services.sh installs when missing and starts on loopback before the
# first version, and stops at the end.  A version where the apps extra cannot
# be installed runs the rest and is named in a loud line at the end.
#
# aiohttp's own test suite, its quick subset (tests/aiohttp_suite:
# GOLOOP_AIOHTTP_SUITE=1 GOLOOP_AIOHTTP_SUITE_PATHS=quick, ~1,100 tests on
# goloop and on stock asyncio, ~5 min) runs on the versions in
# GOLOOP_AIOHTTP_SUITE_PYTHONS (default 3.12; "none" for none), and is
# skipped on the others; GOLOOP_AIOHTTP_SUITE_PATHS=all makes it the full
# suite (~25 min).  Its first run downloads the pinned aiohttp sdist and
# makes .venvs/aiohttp-suite-py3.X (~2 min).  Under CI=true a suite that
# cannot be prepared (download, install) fails; otherwise it is skipped and
# named in a loud line at the end.
#
# The debug builds of 3.14 and 3.15 (python3.X-dbg: assertions and reference
# count checks in the interpreter, .venvs/py3.Xd) are in the default run too,
# with the suites of the native parts only (runtime, glue, loop) unless
# pytest arguments are given.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"   # physical: the path sid-run.sh mounts
cd "$ROOT" || exit 1
VERSIONS="${GOLOOP_PYTHONS:-3.11 3.12 3.13 3.14 3.15 3.14d 3.15d}"
# The application tests (tests/apps: frameworks, servers, databases, ~5 min
# a version) run on these, to keep the whole run within its hour.
APPS_VERSIONS="${GOLOOP_APPS_PYTHONS:-3.12 3.14}"
# aiohttp's own test suite, the quick subset (tests/aiohttp_suite), on these.
AIOHTTP_SUITE_VERSIONS="${GOLOOP_AIOHTTP_SUITE_PYTHONS:-3.12}"
AIOHTTP_SUITE_PATHS="${GOLOOP_AIOHTTP_SUITE_PATHS:-quick}"
SID_VERSIONS="3.14 3.15"   # what the Debian sid root provides (and 3.14d, 3.15d)
REPORTS="$ROOT/.venvs/reports"
mkdir -p "$REPORTS"
rm -f "$REPORTS"/*.xml

declare -a MISSING=() FAILED=() PASSED=() APPS_MISSING=()
declare -A MISSING_WHY=()
RUN=()   # prefix for one version's commands: empty on the host, sid-run.sh in the sid root

find_python() {   # prints the path of a CPython $1 (e.g. 3.12), or nothing
    local want="$1" v p
    if command -v pyenv >/dev/null 2>&1; then
        for v in $(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -t. -k3 -n -r); do
            p="$(pyenv prefix "$v" 2>/dev/null)/bin/python$want"
            if [ -x "$p" ]; then echo "$p"; return; fi
        done
    fi
    for p in "/usr/bin/python$want" "/usr/local/bin/python$want" "$(command -v "python$want" 2>/dev/null)"; do
        if [ -n "$p" ] && [ -x "$p" ] && "$p" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" 2>/dev/null; then
            echo "$p"; return
        fi
    done
}

# --- The Debian sid root: CPython 3.14 and 3.15 when the host has none -------

SID_STATE=""   # "", then "ready" or "failed": the root is prepared at most once

sid_root_ready() {   # prepares the sid root (once per run); true when usable
    if [ -z "$SID_STATE" ]; then
        if bash "$ROOT/scripts/sid-root.sh"; then
            SID_STATE=ready
            [ "${CI:-}" = "true" ] && sid_cross_tools
        else
            SID_STATE=failed
        fi
    fi
    [ "$SID_STATE" = ready ]
}

sid_cross_tools() {   # the AArch64 tests run in the root too (qemu-user etc., ~0.8 GB)
    "$ROOT/scripts/sid-run.sh" bash "$ROOT/scripts/ensure-cross-tools.sh"
    "$ROOT/scripts/sid-run.sh" apt-get clean
}

sid_python() {   # the sid root's interpreter for $1: 3.14 -> python3.14, 3.14d -> python3.14-dbg
    case "$1" in
        *d) echo "python${1%d}-dbg" ;;
        *) echo "python$1" ;;
    esac
}

sid_provides() {   # whether the sid root has CPython $1 (3.14, or 3.14d for its debug build)
    case " $SID_VERSIONS " in *" ${1%d} "*) return 0 ;; esac
    return 1
}

# --- One version: venv, build, pytest -----------------------------------------

make_venv() {   # $1 interpreter, $2 venv; (re)made unless it already works
    local py="$1" venv="$2"
    "${RUN[@]}" "$venv/bin/python" -c pass 2>/dev/null && return 0
    "${RUN[@]}" "$py" -m venv --clear "$venv"
}

runs_apps() {   # whether version $1 runs tests/apps (GOLOOP_APPS_PYTHONS)
    case " $APPS_VERSIONS " in *" $1 "*) return 0 ;; esac
    return 1
}

runs_aiohttp_suite() {   # whether version $1 runs aiohttp's suite (GOLOOP_AIOHTTP_SUITE_PYTHONS)
    case " $AIOHTTP_SUITE_VERSIONS " in *" $1 "*) return 0 ;; esac
    return 1
}

install_goloop() {   # $1 version, $2 venv: goloop with the test extra, and the apps extra if it installs
    local ver="$1" venv="$2"
    local pip=("${RUN[@]}" "$venv/bin/python" -m pip install -q --disable-pip-version-check)
    if ! runs_apps "$ver"; then   # a debug build runs the native suites only
        "${pip[@]}" ".[test]"
        return
    fi
    # One build with both extras; if an application package cannot be
    # installed on this version (no wheel, a failed build), the rest of the
    # suite still runs and the summary says that tests/apps could not.
    "${pip[@]}" ".[test,apps]" && return 0
    APPS_MISSING+=("$ver")
    "${pip[@]}" ".[test]"
}

run_version() {   # $1 version, $2 interpreter; the rest goes to pytest.  Uses RUN.
    local ver="$1" py="$2"
    shift 2
    if [ "${ver%d}" != "$ver" ] && [ $# -eq 0 ]; then   # a debug build
        set -- tests/runtime tests/test_*.py tests/loop
    elif [ $# -eq 0 ] && ! runs_apps "$ver"; then
        set -- --ignore=tests/apps
    fi
    local venv="$ROOT/.venvs/py$ver"
    echo "=== CPython $ver: $py${RUN[*]:+ (in the Debian sid root)} -> $venv"
    if ! make_venv "$py" "$venv"; then
        FAILED+=("$ver (venv)")
        return
    fi
    if ! install_goloop "$ver" "$venv"; then
        FAILED+=("$ver (build)")
        return
    fi
    # aiohttp's suite: on for the versions that run it, off on the others
    # (whatever GOLOOP_AIOHTTP_SUITE the caller has).
    local aiohttp_suite=0
    runs_aiohttp_suite "$ver" && aiohttp_suite=1
    # pytest's own executable, not `python -m pytest`: the source tree's
    # goloop/ (without compiled modules) must not shadow the installed one.
    if GOLOOP_AIOHTTP_SUITE=$aiohttp_suite GOLOOP_AIOHTTP_SUITE_PATHS="$AIOHTTP_SUITE_PATHS" \
            "${RUN[@]}" "$venv/bin/pytest" -p no:cacheprovider --junitxml="$REPORTS/py$ver.xml" "$@"; then
        PASSED+=("$ver")
    else
        FAILED+=("$ver")
    fi
}

test_version() {   # $1 version; the rest goes to pytest
    local ver="$1" py
    shift
    py="$(find_python "$ver")"
    if [ -n "$py" ]; then
        run_version "$ver" "$py" "$@"
    elif ! sid_provides "$ver"; then
        MISSING+=("$ver")
        MISSING_WHY[$ver]="install it with pyenv, or put python$ver on PATH"
    elif ! sid_root_ready; then
        MISSING+=("$ver")
        MISSING_WHY[$ver]="not on the host, and the Debian sid root that provides it could not be prepared: see the sid-root.sh message above and .sid-root/prepare.log"
    else
        RUN=("$ROOT/scripts/sid-run.sh")
        run_version "$ver" "$(sid_python "$ver")" "$@"
        RUN=()
    fi
}

# --- The end: what ran, what did not ------------------------------------------

summary() {
    local ver
    echo
    echo "=== summary"
    [ ${#PASSED[@]} -gt 0 ] && echo "passed on CPython: ${PASSED[*]}"
    [ ${#FAILED[@]} -gt 0 ] && echo "FAILED on CPython: ${FAILED[*]}"
    echo "tests/apps ran on CPython: $APPS_VERSIONS (GOLOOP_APPS_PYTHONS; the others skip that folder)"
    echo "aiohttp's own test suite ($AIOHTTP_SUITE_PATHS) ran on CPython: $AIOHTTP_SUITE_VERSIONS (GOLOOP_AIOHTTP_SUITE_PYTHONS; skipped on the others)"
    for ver in "${APPS_MISSING[@]}"; do
        echo "!!!!!!!! CPython $ver: the apps extra (pyproject.toml) could NOT be installed: tests/apps were skipped there !!!!!!!!"
    done
    for ver in "${MISSING[@]}"; do
        echo "!!!!!!!! CPython $ver NOT FOUND: its tests did NOT run (${MISSING_WHY[$ver]}) !!!!!!!!"
    done
    python3 - "$REPORTS" $AIOHTTP_SUITE_VERSIONS <<'PY' || true
import glob, os, sys, xml.etree.ElementTree as ET
t = f = s = 0
for path in sorted(glob.glob(sys.argv[1] + "/*.xml")):
    root = ET.parse(path).getroot()
    for suite in root.iter("testsuite"):
        n = int(suite.get("tests", 0)); e = int(suite.get("errors", 0))
        fl = int(suite.get("failures", 0)); sk = int(suite.get("skipped", 0))
        t += n - fl - e - sk; f += fl + e; s += sk
    # aiohttp's suite skipped where it should have run: it could not be
    # prepared (CI=true fails instead).
    ver = os.path.basename(path)[2:-4]             # py3.12.xml -> 3.12
    for case in root.iter("testcase"):
        skipped = case.find("skipped")
        if (case.get("name") == "test_aiohttp_suite_goloop_vs_stock" and skipped is not None
                and ver in sys.argv[2:]):
            print(f"!!!!!!!! CPython {ver}: aiohttp's own test suite did NOT run: "
                  f"{skipped.get('message', '')} !!!!!!!!")
print(f"all versions: {t} passed, {f} failed, {s} skipped")
PY
}

if [ "${CI:-}" = "true" ]; then
    bash "$ROOT/scripts/ensure-cross-tools.sh"
fi
# PostgreSQL and Redis for tests/apps, on loopback, stopped when this ends.
eval "$(bash "$ROOT/scripts/services.sh" start)"
trap 'bash "$ROOT/scripts/services.sh" stop "${GOLOOP_TEST_SERVICES:-}"' EXIT
for ver in $VERSIONS; do
    test_version "$ver" "$@"
done
# goloop as users get it, once per whole run: sdist and wheel, twine check,
# manylinux repair, installs with no compiler (scripts/check-package.sh).
if [ $# -eq 0 ] && [ -z "${GOLOOP_PYTHONS:-}" ]; then
    echo "=== packaging (scripts/check-package.sh)"
    if bash "$ROOT/scripts/check-package.sh" "$(find_python 3.12)"; then
        PASSED+=("packaging")
    else
        FAILED+=("packaging")
    fi
fi
summary
if [ ${#FAILED[@]} -gt 0 ] || [ ${#PASSED[@]} -eq 0 ]; then
    exit 1
fi
exit 0
