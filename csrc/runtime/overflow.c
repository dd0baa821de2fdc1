/*
 * overflow.c — a goroutine that runs off its stack dies with a clear message.
 *
 * Below every goroutine stack lies a PROT_NONE guard page (stack.c).  Running
 * into it raises SIGSEGV on a stack that has no room left, so the handler runs
 * on an alternate signal stack, installed once per thread that runs
 * goroutines.  If the faulting address lies in the guard page of the running
 * goroutine, the handler writes, like Go's "goroutine stack exceeds limit":
 *
 *   goloop: fatal error: goroutine 7 (label) overflowed its stack of
 *   1048576 bytes (guard page hit at 0x...).  <hint on the setting>
 *
 * and then lets the fault take its course: the previous handler (Python's
 * faulthandler, say, which adds a traceback) or the default action.  Faults
 * that are not guard hits go to the previous handler untouched.  Only
 * async-signal-safe calls (write, sigaction) are made here.
 */
#define _GNU_SOURCE
#include "runtime.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALTSTACK_SIZE (64 * 1024)

static struct sigaction old_segv, old_bus;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static const char *volatile overflow_hint =
    "Set a larger stack size with gl_set_default_stack_size().";
static _Thread_local int thread_armed;

void gl_set_overflow_hint(const char *hint) { overflow_hint = hint; }

static size_t put_str(char *buf, size_t pos, size_t cap, const char *s)
{
    while (*s && pos + 1 < cap)
        buf[pos++] = *s++;
    return pos;
}

static size_t put_uint(char *buf, size_t pos, size_t cap, uint64_t v, int base)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % (uint64_t)base];
        v /= (uint64_t)base;
    } while (v);
    if (base == 16)
        pos = put_str(buf, pos, cap, "0x");
    while (n && pos + 1 < cap)
        buf[pos++] = tmp[--n];
    return pos;
}

static void report_overflow(const gl_g *g, uintptr_t addr)
{
    char buf[1024];
    size_t n = 0, cap = sizeof buf;
    n = put_str(buf, n, cap, "goloop: fatal error: goroutine ");
    n = put_uint(buf, n, cap, g->goid, 10);
    if (g->label) {
        n = put_str(buf, n, cap, " (");
        n = put_str(buf, n, cap, g->label);
        n = put_str(buf, n, cap, ")");
    }
    n = put_str(buf, n, cap, " overflowed its stack of ");
    n = put_uint(buf, n, cap, g->stack->size, 10);
    n = put_str(buf, n, cap, " bytes (guard page hit at ");
    n = put_uint(buf, n, cap, addr, 16);
    n = put_str(buf, n, cap, ").\n");
    n = put_str(buf, n, cap, overflow_hint);
    n = put_str(buf, n, cap, "\n");
    ssize_t unused = write(2, buf, n);
    (void)unused;
}

static void chain(int sig, siginfo_t *info, void *uctx, struct sigaction *old)
{
    if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction) {
        old->sa_sigaction(sig, info, uctx);
        return;
    }
    if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* Default action: restore it and return; the fault repeats and kills. */
    sigaction(sig, old, NULL);
}

static void on_fault(int sig, siginfo_t *info, void *uctx)
{
    gl_g *g = gl_getg();
    uintptr_t addr = (uintptr_t)info->si_addr;
    struct sigaction *old = sig == SIGSEGV ? &old_segv : &old_bus;
    if (g && g->stack && addr < g->stack->lo && addr >= g->stack->lo - gl_page_size()) {
        report_overflow(g, addr);
        /* No way to continue: fall back to the previous disposition for
         * good, so the repeated fault ends the process. */
        sigaction(sig, old, NULL);
        return;
    }
    chain(sig, info, uctx, old);
}

static void install_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
}

void gl_overflow_arm_thread(void)
{
    pthread_once(&install_once, install_handlers);
    if (thread_armed)
        return;
    thread_armed = 1;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return;   /* the thread has one already (faulthandler's, say) */
    void *mem = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return;   /* overflow then dies without the message; nothing worse */
    stack_t ss = {.ss_sp = mem, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        munmap(mem, ALTSTACK_SIZE);
    /* The alternate stack stays for the thread's life (64 KiB, uncommitted
     * until a signal uses it). */
}
