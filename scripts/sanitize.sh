#!/usr/bin/env bash
# goloop's native code under clang's AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/sanitize.sh [PYTHON] [pytest args]
#
# Copies the working tree (tracked and untracked files that git does not
# ignore, so uncommitted work is included) to a temporary directory, builds it
# there with clang and GOLOOP_SANITIZE=address,undefined (setup.py) into a
# virtualenv of its own, and runs pytest from that copy on the suites of the
# native parts: tests/runtime (the C runtime through cffi), tests/test_*.py
# (the CPython glue) and tests/loop.  Pytest arguments replace that default
# list (scripts/sanitize.sh python3.12 tests/runtime -k ring).  The source
# tree, its build/ and its goloop/*.so are never touched.
#
# Why a preload: CPython itself is not instrumented, so the ASan runtime must
# be the first library in every process that loads the extension; LD_PRELOAD
# does that, and children of the tests (other interpreters, but also the
# compiler the runtime tests run) inherit it along with the options below.
# Every report, in any process, goes to a log file under the work directory
# (log_path), so a report in a child whose output a test captured is still
# seen: the run fails if any log holds an ASan or UBSan error.
#
# Tests that cannot run under the sanitizers, or measurements ASan distorts
# (resident memory, timing windows), check GOLOOP_SANITIZED=1 and skip
# themselves or that check, saying why.  Needs clang and its sanitizer
# runtime (installed with apt-get when missing; root).  SANITIZE_KEEP=1 keeps
# the work directory.  ~8 minutes on 2 cores: ~2.5 to build, ~5 for the
# suites (the summary line gives the time of each run).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
die() { echo "sanitize: $*" >&2; exit 2; }
. "$ROOT/scripts/native-check-common.sh" "$@"
shift "$PYTHON_GIVEN"

# ---- tools ----------------------------------------------------------------

asan_runtime() {   # prints the path of clang's shared ASan runtime, if any
    local p
    p="$(clang -print-file-name="libclang_rt.asan-$(uname -m).so" 2>/dev/null)"
    [ -n "$p" ] && [ "${p#/}" != "$p" ] && [ -f "$p" ] && echo "$p"
}

ensure_clang() {
    if command -v clang >/dev/null 2>&1 && [ -n "$(asan_runtime)" ]; then
        return 0
    fi
    echo "sanitize: installing clang and its sanitizer runtime (apt-get)"
    apt-get update -q >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang libclang-rt-dev >/dev/null \
        || die "apt-get install clang libclang-rt-dev failed"
    [ -n "$(asan_runtime)" ] || die "clang has no libclang_rt.asan-$(uname -m).so"
}

# ---- the copy and its build ---------------------------------------------------

# ---- the run ------------------------------------------------------------------

# ASan:
#   detect_leaks=0   CPython does not free everything at exit, by design, and
#                    the preload reaches every child (compilers, git): leak
#                    reports would be noise.  goloop's own leaks are checked
#                    by scripts/memcheck.sh (valgrind) and tests/test_leaks.py.
#   handle_segv=0    SIGSEGV keeps its ordinary path: the runtime's guard-page
#                    handler, then faulthandler or the default action, which
#                    is what the guard-page tests check.  A crash still fails
#                    the run (faulthandler prints the Python traceback).
#   detect_stack_use_after_return=1  fake stacks work across goroutine
#                    switches: the runtime hands them over (sanitizer.h).
sanitizer_env() {   # $1 log dir
    local logs="$1" symbolizer
    symbolizer="$(command -v llvm-symbolizer || true)"
    export LD_PRELOAD="$(asan_runtime)"
    export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:log_path=$logs/sanitizer"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$logs/sanitizer"
    [ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
    export GOLOOP_SANITIZED=1
    export PYTHONFAULTHANDLER=1
    unset CC   # the runtime tests compile their C selftest with the default cc
}

# Sanitizer logs: errors fail the run; anything else (warnings) is shown.
# One warning counts as an error: "ASan is ignoring requested
# __asan_handle_no_return" means that a noreturn call ran on a stack ASan was
# not told about -- a stack switch missing its announcement (sanitizer.h;
# rt_tests.c's bare switches are not instrumented for this reason) -- and
# that the frames it abandoned stay poisoned ("False positive error reports
# may follow").  ASan says it once per process, then stays silent.
check_logs() {   # $1 log dir; prints them; returns 1 when one holds an error
    local logs="$1" f bad=0
    for f in "$logs"/*; do
        [ -e "$f" ] || continue
        echo "=== sanitizer log $f"
        cat "$f"
        if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|ignoring requested __asan_handle_no_return" "$f"; then
            bad=1
        fi
    done
    return $bad
}

main() {
    ensure_clang
    local work
    work="$(new_work_tree sanitize)"
    if [ -z "${SANITIZE_KEEP:-}" ]; then
        trap "rm -rf '$work'" EXIT   # expanded now: work is local
    fi
    build_with "$work" CC=clang GOLOOP_SANITIZE=address,undefined
    mkdir -p "$work/logs"
    [ $# -gt 0 ] || set -- tests/runtime tests/test_*.py tests/loop
    echo "sanitize: pytest $* (in $work/src)"
    local rc
    (
        cd "$work/src" || exit 2
        sanitizer_env "$work/logs"
        # pytest's own executable, not `python -m pytest`: the copy's goloop/
        # (no compiled modules) must not shadow the installed one.
        exec "$work/venv/bin/pytest" -p no:cacheprovider --junitxml="$work/report.xml" "$@"
    )
    rc=$?
    local logs_ok=0
    check_logs "$work/logs" || logs_ok=1
    echo
    echo "=== sanitize summary ($(( $(date +%s) - START )) s, $("$PYTHON" -V 2>&1))"
    echo "tests: $(counts "$work/report.xml") (pytest exit $rc)"
    if [ $logs_ok -ne 0 ]; then
        echo "sanitizer: ERRORS reported (logs above)"
    else
        echo "sanitizer: no error reported"
    fi
    [ -n "${SANITIZE_KEEP:-}" ] && echo "work directory kept: $work"
    [ $rc -eq 0 ] && [ $logs_ok -eq 0 ]
}

main "$@"
