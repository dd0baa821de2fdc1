/*
 * selftest.c — a plain C main that runs the runtime's C-level tests.
 *
 * The same tests pytest runs through cffi (rt_tests.c), with no Python at
 * all, so they can be cross-compiled (aarch64-linux-gnu-gcc -static) and run
 * under qemu-user, where no CPython build is at hand.  Build:
 *
 *   gcc -O2 -Wall -Wextra -Werror -Icsrc/runtime -Icsrc/runtime/testing \
 *       csrc/runtime/{stack,proc,overflow}.c csrc/runtime/asm_*.S \
 *       csrc/runtime/testing/{rt_tests,selftest}.c \
 *       csrc/runtime/testing/regs_*.S -lpthread -o selftest
 *
 * Usage:
 *   selftest [NAME...]        run all tests of this architecture (or those
 *                             named); one line each, "PASS name [(note)]" or
 *                             "FAIL name: reason", then two benchmark lines
 *                             "BENCH ...", then exactly "N passed, M failed".
 *                             Exit status 0 only if nothing failed.
 *   selftest --list           the test names of this architecture
 *   selftest --no-bench ...   skip the benchmark lines
 *   selftest overflow-child [BYTES]
 *                             overflow a goroutine's stack (default 64 KiB)
 *                             in this process: it must die by SIGSEGV after
 *                             the runtime's fatal message (for pytest).
 *
 * The guard-page test itself forks (gl_test_guard_page), so one crash does
 * not end the run.
 */
#include "rt_tests.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int run_one(const gl_rt_test *t)
{
    char msg[1024] = "";
    int rc = t->fn(msg, sizeof msg);
    if (rc == 0) {
        if (msg[0])
            printf("PASS %s (%s)\n", t->name, msg);
        else
            printf("PASS %s\n", t->name);
        return 1;
    }
    if (rc == GL_TEST_SKIP) {       /* not in the table, but be exact */
        printf("SKIP %s: %s\n", t->name, msg);
        return -1;
    }
    printf("FAIL %s: %s\n", t->name, msg[0] ? msg : "(no reason given)");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "overflow-child") == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        size_t bytes = argc >= 3 ? (size_t)strtoull(argv[2], NULL, 0) : 0;
        int rc = gl_test_overflow_child(bytes);
        fprintf(stderr, "selftest: the overflow came back (%d)\n", rc);
        return 3;
    }
    int bench = 1, first = 1;
    if (argc >= 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < gl_rt_test_count(); i++)
            printf("%s\n", gl_rt_test_get(i)->name);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--no-bench") == 0) {
        bench = 0;
        first = 2;
    }
    for (int a = first; a < argc; a++) {
        size_t i;
        for (i = 0; i < gl_rt_test_count(); i++)
            if (strcmp(argv[a], gl_rt_test_get(i)->name) == 0)
                break;
        if (i == gl_rt_test_count()) {
            fprintf(stderr, "selftest: no test named %s on %s (see --list)\n",
                    argv[a], gl_rt_arch());
            return 2;
        }
    }

    printf("# goloop runtime selftest on %s\n", gl_rt_arch());
    int passed = 0, failed = 0;
    for (size_t i = 0; i < gl_rt_test_count(); i++) {
        const gl_rt_test *t = gl_rt_test_get(i);
        int wanted = first >= argc;
        for (int a = first; a < argc && !wanted; a++)
            wanted = strcmp(argv[a], t->name) == 0;
        if (!wanted)
            continue;
        int r = run_one(t);
        if (r > 0)
            passed++;
        else if (r == 0)
            failed++;
    }
    if (bench && failed == 0) {
        printf("BENCH raw_switch %.1f ns per switch (gl_gosave_gogo)\n",
               gl_bench_raw_switch_ns(200000));
        printf("BENCH resume_park %.1f ns per gl_resume+gl_park round trip\n",
               gl_bench_resume_park_ns(200000));
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
