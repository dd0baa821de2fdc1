#!/usr/bin/env bash
# valgrind memcheck on the goroutine runtime's C-level tests.
#
#   scripts/memcheck.sh [PYTHON] [pytest args]
#
# Copies the working tree (tracked and untracked files that git does not
# ignore) to a temporary directory, builds it there with GOLOOP_VALGRIND=1
# (setup.py: the runtime registers each goroutine stack with valgrind, so
# that a switch to it is not taken for a wild stack-pointer jump) into a
# virtualenv of its own, and runs pytest on the runtime's C tests
# (tests/runtime/test_runtime.py: rt_tests.c through cffi) under
# valgrind --tool=memcheck.  Pytest arguments replace that default.
# tests/runtime's other files test the runtime in native executables of
# their own (the selftest, the AArch64 build), which valgrind does not
# follow; under it they would only be slow.
#
# CPython runs with PYTHONMALLOC=malloc: its small-object allocator reads
# memory it does not own, by design, which memcheck would report everywhere;
# with plain malloc memcheck sees every allocation and needs no CPython
# suppressions.  The run fails on any memcheck error (invalid access, use of
# uninitialised memory, bad free: valgrind exits 99) and on memory that is
# definitely lost with a goloop frame in its allocation stack; definitely-lost
# blocks of CPython's own (it does not free everything at exit) are counted
# but do not fail.  Tests that cannot run under valgrind check
# GOLOOP_MEMCHECK=1 and skip themselves, saying why.  SANITIZE_KEEP=1 keeps
# the work directory.  ~4-7 minutes on 2 cores (~1.5 to build).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
die() { echo "memcheck: $*" >&2; exit 2; }
. "$ROOT/scripts/native-check-common.sh" "$@"
shift "$PYTHON_GIVEN"

ensure_valgrind() {   # valgrind and its client-request header (package valgrind)
    if command -v valgrind >/dev/null 2>&1 && [ -f /usr/include/valgrind/valgrind.h ]; then
        return 0
    fi
    echo "memcheck: installing valgrind (apt-get)"
    apt-get update -q >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null \
        || die "apt-get install valgrind failed"
}

# What valgrind's XML holds: each memcheck error (with its stack) and each
# definitely-lost block allocated by goloop itself -- the first frame above
# the allocator (malloc, PyMem_*, PyObject_Malloc...) is goloop's -- is
# printed; blocks CPython allocated (its objects, even those made for goloop,
# such as module-init strings CPython keeps for the process's life) are only
# counted.  Exit 1 when there is an error or a goloop leak.
report() {   # $1 xml file
    "$PYTHON" - "$1" <<'PY'
import re, sys, xml.etree.ElementTree as ET

ALLOCATOR = re.compile(r"(malloc|calloc|realloc|reallocarray|memalign|posix_memalign"
                       r"|aligned_alloc|valloc|strn?dup|_?Py(Mem|Object)_\w+|_PyMem_\w+)$")

def frames(err):
    for fr in err.find("stack").findall("frame"):
        yield {k: (fr.findtext(k) or "") for k in ("fn", "obj", "dir", "file", "line")}

def is_goloop(fr):
    return "/goloop/_" in fr["obj"] or "/csrc/" in fr["dir"] + "/"

def show(title, fs, n=16):
    print(title)
    for f in fs[:n]:
        where = f"{f['file']}:{f['line']}" if f["file"] else f["obj"]
        print(f"    {f['fn'] or '?'} ({where})")

root = ET.parse(sys.argv[1]).getroot()
errors = ours = other = 0
for err in root.iter("error"):
    kind = err.findtext("kind")
    fs = list(frames(err))
    if not kind.startswith("Leak_"):
        errors += 1
        what = err.findtext("what") or err.find("xwhat").findtext("text")
        aux = "; ".join(a.text for a in err.findall("auxwhat"))
        show(f"memcheck error: {what}" + (f" ({aux})" if aux else ""), fs)
        continue
    if kind != "Leak_DefinitelyLost":
        continue
    caller = next((f for f in fs if not ALLOCATOR.match(f["fn"])), None)
    if caller is not None and is_goloop(caller):
        ours += 1
        show("goloop leak: " + err.find("xwhat").findtext("text"), fs)
    else:
        other += 1
counts = root.find("suppcounts")
for pair in (counts if counts is not None else []):
    print(f"suppressed: {pair.findtext('count')} x {pair.findtext('name')}")
print(f"memcheck errors: {errors}")
print(f"definitely lost: {ours} block(s) allocated by goloop, {other} by CPython "
      f"or other libraries")
sys.exit(1 if errors or ours else 0)
PY
}

main() {
    ensure_valgrind
    local work
    work="$(new_work_tree memcheck)"
    if [ -z "${SANITIZE_KEEP:-}" ]; then
        trap "rm -rf '$work'" EXIT   # expanded now: work is local
    fi
    build_with "$work" GOLOOP_VALGRIND=1
    [ $# -gt 0 ] || set -- tests/runtime/test_runtime.py
    echo "memcheck: valgrind pytest $* (in $work/src)"
    local rc
    (
        cd "$work/src" || exit 2
        export PYTHONMALLOC=malloc GOLOOP_MEMCHECK=1
        # The interpreter runs pytest's script (not `python -m pytest`, which
        # would let the copy's goloop/, without compiled modules, shadow the
        # installed one).  --error-exitcode: memory errors only; leaks are
        # judged from the XML below, by who allocated them.  The text log
        # has valgrind's own messages; the errors are in the XML.
        # --fair-sched=yes: valgrind runs one thread at a time, and with its
        # default lock a thread that spins (the sysmon tests' busy steps)
        # takes the lock straight back at the end of each time slice, so
        # sysmon's thread, woken from its sleep, may not run for the whole
        # 500 ms step (test_sysmon failed about 1 run in 3 on 2 loaded
        # cores); the fair lock hands it over in turn.
        exec valgrind --tool=memcheck --error-exitcode=99 --fair-sched=yes \
            --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none \
            --num-callers=40 --log-file="$work/memcheck.log" \
            --suppressions="$ROOT/scripts/sanitizer-suppressions/valgrind.supp" \
            --xml=yes --xml-file="$work/memcheck.xml" \
            "$work/venv/bin/python" "$work/venv/bin/pytest" -p no:cacheprovider \
            --junitxml="$work/report.xml" "$@"
    )
    rc=$?
    echo
    local bad=0
    report "$work/memcheck.xml" || bad=1
    echo
    echo "=== memcheck summary ($(( $(date +%s) - START )) s, $("$PYTHON" -V 2>&1))"
    echo "tests: $(counts "$work/report.xml") (exit $rc)"
    if [ $bad -ne 0 ] || [ $rc -eq 99 ]; then
        echo "memcheck: ERRORS or goloop leaks reported (above)"
    else
        echo "memcheck: no error, no goloop leak"
    fi
    [ -n "${SANITIZE_KEEP:-}" ] && echo "work directory kept: $work"
    [ $rc -eq 0 ] && [ $bad -eq 0 ]
}

main "$@"
