#!/usr/bin/env bash
# The whole test suite, from a fresh machine: for each supported CPython
# (3.11, 3.12, 3.13) build and install goloop into its own virtual environment
# under .venvs/, then run pytest against the installed package.  Interpreters
# are found through pyenv (any installed 3.X.Y) or as python3.X on PATH; one
# that cannot be found is reported in a loud line at the end, never skipped
# silently.  Under CI=true the AArch64 cross tools are installed when missing.
#
#   scripts/test.sh                 all versions, whole suite
#   scripts/test.sh -k recursion    extra arguments go to pytest
#   GOLOOP_PYTHONS="3.12" scripts/test.sh    a subset of versions
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VERSIONS="${GOLOOP_PYTHONS:-3.11 3.12 3.13}"
REPORTS="$ROOT/.venvs/reports"
mkdir -p "$REPORTS"
rm -f "$REPORTS"/*.xml

if [ "${CI:-}" = "true" ]; then
    bash "$ROOT/scripts/ensure-cross-tools.sh"
fi

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

declare -a MISSING=() FAILED=() PASSED=()
for ver in $VERSIONS; do
    py="$(find_python "$ver")"
    if [ -z "$py" ]; then
        MISSING+=("$ver")
        continue
    fi
    venv="$ROOT/.venvs/py$ver"
    echo "=== CPython $ver: $py -> $venv"
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv" || { FAILED+=("$ver (venv)"); continue; }
    fi
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check ".[test]"; then
        FAILED+=("$ver (build)")
        continue
    fi
    # pytest's own executable, not `python -m pytest`: the source tree's
    # goloop/ (without compiled modules) must not shadow the installed one.
    if "$venv/bin/pytest" -p no:cacheprovider --junitxml="$REPORTS/py$ver.xml" "$@"; then
        PASSED+=("$ver")
    else
        FAILED+=("$ver")
    fi
done

echo
echo "=== summary"
[ ${#PASSED[@]} -gt 0 ] && echo "passed on CPython: ${PASSED[*]}"
[ ${#FAILED[@]} -gt 0 ] && echo "FAILED on CPython: ${FAILED[*]}"
for ver in "${MISSING[@]}"; do
    echo "!!!!!!!! CPython $ver NOT FOUND: its tests did NOT run (install it with pyenv, or put python$ver on PATH) !!!!!!!!"
done
python3 - "$REPORTS" <<'PY' || true
import glob, sys, xml.etree.ElementTree as ET
t = f = s = 0
for path in glob.glob(sys.argv[1] + "/*.xml"):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        n = int(suite.get("tests", 0)); e = int(suite.get("errors", 0))
        fl = int(suite.get("failures", 0)); sk = int(suite.get("skipped", 0))
        t += n - fl - e - sk; f += fl + e; s += sk
print(f"all versions: {t} passed, {f} failed, {s} skipped")
PY
if [ ${#FAILED[@]} -gt 0 ] || [ ${#PASSED[@]} -eq 0 ]; then
    exit 1
fi
exit 0
