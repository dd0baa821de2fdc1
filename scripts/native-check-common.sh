# native-check-common.sh — what scripts/sanitize.sh and scripts/memcheck.sh
# share: a private copy of the tree, a build of it into a virtualenv of its
# own with some environment (GOLOOP_SANITIZE=..., GOLOOP_VALGRIND=1), and
# the pass/fail counts of a junit report.  Sourced with the caller's
# arguments (. native-check-common.sh "$@"); expects ROOT and a die() that
# names the caller; sets PYTHON (the first argument if it names an
# interpreter, which the caller then shifts away: shift $PYTHON_GIVEN) and
# START.

PYTHON=python3
PYTHON_GIVEN=0
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ] && [ ! -d "$1" ] && command -v "$1" >/dev/null 2>&1; then
    PYTHON="$1"
    PYTHON_GIVEN=1
fi
START=$(date +%s)

new_work_tree() {   # $1 name: prints a new work directory holding a copy of the tree in src/
    local work
    work="$(mktemp -d "/tmp/goloop-$1.XXXXXX")"
    copy_tree "$work/src"
    echo "$work"
}

copy_tree() {   # $1: destination; the files git would commit or could add
    local dest="$1"
    mkdir -p "$dest"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do
              [ -e "$f" ] && printf '%s\0' "$f"   # skip deleted tracked files
          done | xargs -0 cp --parents -t "$dest")
}

build_with() {   # $1 work dir, then VAR=value...: venv at $1/venv with goloop[test] built so
    local work="$1"
    shift
    "$PYTHON" -m venv "$work/venv" || die "cannot make a venv with $PYTHON"
    echo "building with $* ($PYTHON)"
    (cd "$work/src" && env "$@" "$work/venv/bin/python" -m pip install -q --no-cache-dir \
        --disable-pip-version-check ".[test]") >"$work/build.log" 2>&1 \
        || { tail -40 "$work/build.log"; die "build failed (log: $work/build.log)"; }
}

counts() {   # $1 junit xml: "N passed, N failed, N skipped"
    "$PYTHON" - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
t = f = s = 0
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("no test report"); sys.exit()
for suite in root.iter("testsuite"):
    n = int(suite.get("tests", 0)); e = int(suite.get("errors", 0))
    fl = int(suite.get("failures", 0)); sk = int(suite.get("skipped", 0))
    t += n - fl - e - sk; f += fl + e; s += sk
print(f"{t} passed, {f} failed, {s} skipped")
PY
}
