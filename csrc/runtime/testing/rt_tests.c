/*
 * rt_tests.c — C-level tests and switch benchmarks of the goroutine runtime.
 *
 * What the runtime promises (runtime.h) is checked here from plain C, so the
 * same code runs under pytest (through the cffi module goloop._runtime_cffi)
 * and in selftest.c (natively, and cross-compiled for AArch64 under
 * qemu-user).  Each test is `int fn(char *msg, size_t cap)`: 0 on success,
 * else the source line of the failed check, with the reason in msg (see
 * rt_tests.h).  Checks made inside a goroutine cannot return from the test,
 * so they record the first failure in a `gerr` the test reports afterwards.
 *
 * How each property is made observable:
 *   ring         values passed both ways by every resume/park are derived from
 *                (lap, goroutine) and checked on both sides; each goroutine
 *                also keeps a stack-local canary and checks gl_getg().
 *   registers    callee-saved GPRs / FP registers are loaded and read back by
 *                assembly around gl_gosave_gogo (regs_<arch>.S, rt_regs.h) so
 *                no compiler-generated save can mask a lost register; the
 *                floating-point control registers (MXCSR, x87 CW, FPCR) are
 *                read and written with inline asm by nested goroutines.
 *   alignment    gl_test_sp_at_call reads sp at a call site exactly; a
 *                16-aligned local and __builtin_frame_address back it up.
 *   stacks       gl_get_stats counters, and mincore() for residency.
 *   guard page   a forked child overflows; the parent reads its stderr
 *                through a pipe and checks the terminating signal.
 *   sysmon       a P whose preempt callback (on sysmon's thread) records
 *                the tick and time of each request in atomics; steps are
 *                busy loops on the test's thread; sleeping is read from
 *                gl_sysmon_get_stats.  Time bounds are wide (tens of ms)
 *                because the machine may be loaded or emulated.
 */
#define _GNU_SOURCE
#include "rt_tests.h"
#include "rt_regs.h"
#include "runtime.h"
#include "sanitizer.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- failure reporting ----------------------------------------------- */

__attribute__((format(printf, 4, 5)))
static int fail_at(int line, char *msg, size_t cap, const char *fmt, ...)
{
    if (msg && cap) {
        int n = snprintf(msg, cap, "line %d: ", line);
        if (n >= 0 && (size_t)n < cap) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(msg + n, cap - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return line;
}

#define FAIL(...) return fail_at(__LINE__, msg, cap, __VA_ARGS__)
#define CHECK(cond, ...) do { if (!(cond)) FAIL(__VA_ARGS__); } while (0)

static void note(char *msg, size_t cap, const char *text)
{
    if (msg && cap)
        snprintf(msg, cap, "%s", text);
}

/* The first failure seen inside goroutines. */
typedef struct gerr {
    int line;
    char text[320];
} gerr;

__attribute__((format(printf, 3, 4)))
static void gerr_set(gerr *e, int line, const char *fmt, ...)
{
    if (e->line)
        return;
    e->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
}

#define GFAIL(e, ...) gerr_set((e), __LINE__, __VA_ARGS__)
#define GCHECK(e, cond, ...) do { if (!(cond)) GFAIL(e, __VA_ARGS__); } while (0)

static int gerr_report(const gerr *e, char *msg, size_t cap)
{
    return e->line ? fail_at(e->line, msg, cap, "%s", e->text) : 0;
}

static const char *errname(int err)
{
    static const char *const names[] = {
        "GL_OK", "GL_EDEAD", "GL_ERUNNING", "GL_ETHREAD", "GL_ENOTG",
        "GL_ENOMEM", "GL_EINVAL", "GL_EUNSUPPORTED",
    };
    return err >= 0 && err < (int)(sizeof names / sizeof names[0])
        ? names[err] : "GL_E?";
}

static void noop_fn(void *arg) { (void)arg; }

/* ---- ring ------------------------------------------------------------ */

typedef struct ring_g {
    gl_g g;
    int idx, n, laps;
    gerr *err;
} ring_g;

#define RING_FINAL ((uintptr_t)-7)

static uintptr_t ring_hello(int idx) { return 0x4000000u + (uintptr_t)idx; }
static uintptr_t ring_in(int lap, int idx, int n)
{
    return (uintptr_t)lap * (uintptr_t)n + (uintptr_t)idx + 1;
}
static uintptr_t ring_out(uintptr_t in) { return (in * 2654435761u) ^ 0x5bd1e995u; }

static void ring_fn(void *arg)
{
    ring_g *r = arg;
    volatile uintptr_t canary[4];
    for (int i = 0; i < 4; i++)
        canary[i] = ring_out((uintptr_t)r->idx * 4 + (uintptr_t)i);
    uintptr_t in = 0;
    int rc = gl_park(ring_hello(r->idx), &in);
    GCHECK(r->err, rc == GL_OK, "goroutine %d: gl_park: %s", r->idx, errname(rc));
    for (int lap = 0; lap < r->laps; lap++) {
        GCHECK(r->err, gl_getg() == &r->g,
               "goroutine %d lap %d: gl_getg() is not this goroutine", r->idx, lap);
        uintptr_t want = ring_in(lap, r->idx, r->n);
        GCHECK(r->err, in == want, "goroutine %d lap %d: resumed with %#lx, "
               "expected %#lx", r->idx, lap, (unsigned long)in, (unsigned long)want);
        gl_park(ring_out(in), &in);
    }
    GCHECK(r->err, in == RING_FINAL, "goroutine %d: final value %#lx",
           r->idx, (unsigned long)in);
    for (int i = 0; i < 4; i++)
        GCHECK(r->err, canary[i] == ring_out((uintptr_t)r->idx * 4 + (uintptr_t)i),
               "goroutine %d: its stack changed under it (canary %d)", r->idx, i);
}

int gl_test_ring(int n, int laps, char *msg, size_t cap)
{
    CHECK(n > 0 && laps >= 0, "bad arguments n=%d laps=%d", n, laps);
    ring_g *rs = calloc((size_t)n, sizeof *rs);
    CHECK(rs != NULL, "out of memory");
    gerr err = {0};
    gl_stats before, after;
    gl_get_stats(&before);
    int rc = 0, i = 0, lap = -1;
    uintptr_t out;

    for (i = 0; i < n; i++) {
        rs[i] = (ring_g){.idx = i, .n = n, .laps = laps, .err = &err};
        int e = gl_g_init(&rs[i].g, ring_fn, &rs[i], 0);
        if (e != GL_OK) { rc = fail_at(__LINE__, msg, cap, "gl_g_init: %s", errname(e)); goto out; }
    }
    for (i = 0; i < n; i++) {     /* start them all: each parks with hello */
        int e = gl_resume(&rs[i].g, 0, &out);
        if (e != GL_OK || out != ring_hello(i) || rs[i].g.status != GL_G_PARKED) {
            rc = fail_at(__LINE__, msg, cap, "start of goroutine %d: %s, out %#lx, "
                         "status %d", i, errname(e), (unsigned long)out, rs[i].g.status);
            goto out;
        }
    }
    for (lap = 0; lap < laps; lap++) {
        for (i = 0; i < n; i++) {
            uintptr_t in = ring_in(lap, i, n);
            int e = gl_resume(&rs[i].g, in, &out);
            if (e != GL_OK || out != ring_out(in) || rs[i].g.status != GL_G_PARKED) {
                rc = fail_at(__LINE__, msg, cap, "lap %d goroutine %d: %s, parked "
                             "with %#lx, expected %#lx (status %d)", lap, i, errname(e),
                             (unsigned long)out, (unsigned long)ring_out(in),
                             rs[i].g.status);
                goto out;
            }
        }
    }
    for (i = 0; i < n; i++) {
        out = 1;
        int e = gl_resume(&rs[i].g, RING_FINAL, &out);
        if (e != GL_OK || out != 0 || rs[i].g.status != GL_G_DEAD || rs[i].g.stack) {
            rc = fail_at(__LINE__, msg, cap, "end of goroutine %d: %s, out %#lx, "
                         "status %d", i, errname(e), (unsigned long)out, rs[i].g.status);
            goto out;
        }
    }
    if ((rc = gerr_report(&err, msg, cap)) != 0)
        goto out;
    gl_get_stats(&after);
    if (after.stacks_in_use != before.stacks_in_use) {
        rc = fail_at(__LINE__, msg, cap, "stacks in use %lu before, %lu after",
                     (unsigned long)before.stacks_in_use,
                     (unsigned long)after.stacks_in_use);
        goto out;
    }
    if (after.goroutines_started - before.goroutines_started != (uint64_t)n ||
        after.goroutines_finished - before.goroutines_finished != (uint64_t)n) {
        rc = fail_at(__LINE__, msg, cap, "started %lu, finished %lu, expected %d",
                     (unsigned long)(after.goroutines_started - before.goroutines_started),
                     (unsigned long)(after.goroutines_finished - before.goroutines_finished),
                     n);
        goto out;
    }
out:
    for (i = 0; i < n; i++)         /* one left parked still uses its ring_g */
        if (rs[i].g.status == GL_G_PARKED)
            return rc;
    free(rs);
    return rc;
}

/* ---- callee-saved registers: GPR and FP/SIMD ---------------------------- */

#define RT_ROUNDS 3

#if defined(__x86_64__)
static const char *const reg_names[RT_NREGS] = {
    "rbx", "rbp", "r12", "r13", "r14", "r15",
};
#elif defined(__aarch64__)
static const char *const reg_names[RT_NREGS] = {
    "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28",
    "x29 (fp)", "d8", "d9", "d10", "d11", "d12", "d13", "d14", "d15",
};
#endif

#if GL_ARCH_SUPPORTED
typedef struct regs_ctx {
    gl_test_entry entry;            /* for gl_test_ctx_entry */
    gl_gobuf main, peer;
    /* main switches once more than the peer: to let the peer finish */
    uint64_t main_in[RT_ROUNDS + 1][RT_NREGS], main_out[RT_ROUNDS + 1][RT_NREGS];
    uint64_t peer_in[RT_ROUNDS][RT_NREGS], peer_out[RT_ROUNDS][RT_NREGS];
    int peer_rounds;
} regs_ctx;

/* Distinct per side, round and register; not a plausible address. */
static uint64_t reg_pattern(int side, int round, int reg)
{
    return 0xC0DE000000000000ull | (uint64_t)(side + 1) << 40 |
           (uint64_t)(round + 1) << 32 | (uint64_t)(reg + 1) << 16 | 0x5A5Au;
}

/* regs_peer and align_raw_peer run on a stack switched to with the bare
 * assembly, without the runtime's announcements to ASan (proc.c,
 * sanitizer.h): testing that assembly alone is their point.  ASan then
 * believes they run on the thread's own stack, and if they were
 * instrumented, their end in the noreturn gl_gogo would go wrong:
 *   - ASan calls __asan_handle_no_return before gl_gogo, to unpoison the
 *     stack from sp up to the thread's stack top: with sp on another
 *     mapping that range is absurd, so ASan warns ("ignoring requested
 *     __asan_handle_no_return ... False positive error reports may follow")
 *     and does nothing -- or, were the mapping less than 64 MB below the
 *     thread's stack, would unpoison all the memory in between;
 *   - the frame is abandoned with its redzones poisoned: on the peer's
 *     stack, which goes back to the runtime's cache for the next goroutine
 *     (and stack_went_deep, which reads dead stack), or, under
 *     detect_stack_use_after_return, as a fake frame on the thread's fake
 *     stack that is never freed.
 * Not instrumenting the two functions removes all of it: no redzones, no
 * fake frame, no __asan_handle_no_return.  They leave the stack only from
 * inside the assembly (gl_regs_switch, gl_gosave_gogo, gl_gogo), so every
 * instrumented function they call has returned by then and none of its
 * frames is abandoned.  Only their own accesses go unchecked.  Annotating
 * these switches instead (fiber calls on both sides, the main stack's
 * bounds learned on the first entry, as proc.c does) would copy the
 * runtime's bookkeeping into test code whose subject is the switch without
 * it, and would move ALIGN_CHECK's aligned local off the peer's stack onto
 * the fake stack.  GL_NO_ASAN is empty in other builds. */
GL_NO_ASAN static void regs_peer(void *arg)
{
    regs_ctx *c = arg;
    for (int r = 0; r < RT_ROUNDS; r++) {
        gl_regs_switch(&c->peer, &c->main, c->peer_in[r], c->peer_out[r]);
        c->peer_rounds = r + 1;
    }
    gl_gogo(&c->main);              /* never resumed again */
}

/* main (the test's own stack) and peer (a fresh stack) take turns, each
 * switching only through gl_regs_switch with its own patterns: a plain C call
 * of gl_gosave_gogo here would itself break when the assembly loses a
 * register, crashing instead of failing the check. */
static int regs_run(regs_ctx *c, char *msg, size_t cap)
{
    memset(c, 0, sizeof *c);
    for (int r = 0; r <= RT_ROUNDS; r++)
        for (int k = 0; k < RT_NREGS; k++) {
            c->main_in[r][k] = reg_pattern(0, r, k);
            if (r < RT_ROUNDS)
                c->peer_in[r][k] = reg_pattern(1, r, k);
        }
    gl_stack *s = gl_stack_get(gl_default_stack_size());
    CHECK(s != NULL, "gl_stack_get failed");
    c->entry = (gl_test_entry){regs_peer, c};
    c->peer.sp = s->hi;
    c->peer.pc = (uintptr_t)gl_test_ctx_entry;
    c->peer.ctxt = (uintptr_t)&c->entry;
    for (int r = 0; r <= RT_ROUNDS; r++)  /* the last lets the peer finish */
        gl_regs_switch(&c->main, &c->peer, c->main_in[r], c->main_out[r]);
    gl_stack_put(s);
    CHECK(c->peer_rounds == RT_ROUNDS, "peer ran %d rounds of %d",
          c->peer_rounds, RT_ROUNDS);
    return 0;
}

static int regs_check(const regs_ctx *c, int first, int last, char *msg, size_t cap)
{
    for (int r = 0; r <= RT_ROUNDS; r++)
        for (int k = first; k < last; k++)
            CHECK(c->main_out[r][k] == c->main_in[r][k],
                  "%s lost across a switch on the test's own stack (round %d): "
                  "expected %#llx, got %#llx", reg_names[k], r,
                  (unsigned long long)c->main_in[r][k],
                  (unsigned long long)c->main_out[r][k]);
    for (int r = 0; r < RT_ROUNDS; r++)
        for (int k = first; k < last; k++)
            CHECK(c->peer_out[r][k] == c->peer_in[r][k],
                  "%s lost across a switch on a fresh stack (round %d): "
                  "expected %#llx, got %#llx", reg_names[k], r,
                  (unsigned long long)c->peer_in[r][k],
                  (unsigned long long)c->peer_out[r][k]);
    return 0;
}
#endif

int gl_test_regs_gpr(char *msg, size_t cap)
{
#if GL_ARCH_SUPPORTED
    regs_ctx c;
    int rc = regs_run(&c, msg, cap);
    return rc ? rc : regs_check(&c, 0, RT_NGPR, msg, cap);
#else
    note(msg, cap, "no switch assembly on this architecture");
    return GL_TEST_SKIP;
#endif
}

int gl_test_regs_fp(char *msg, size_t cap)
{
#if defined(__aarch64__) && GL_ARCH_SUPPORTED
    regs_ctx c;
    int rc = regs_run(&c, msg, cap);
    return rc ? rc : regs_check(&c, RT_FP_FIRST, RT_NREGS, msg, cap);
#else
    note(msg, cap, "AArch64 only: x86-64 SysV has no callee-saved FP registers");
    return GL_TEST_SKIP;
#endif
}

/* ---- floating-point control registers ---------------------------------- */

typedef struct fpctl {
    const char *name;
    uint64_t (*get)(void);
    void (*set)(uint64_t);
    uint64_t mask;                  /* the control bits compared */
    uint64_t v0, v0b, va, vb, vb2;  /* g0, g0 later, A, B, B later */
} fpctl;

#if defined(__x86_64__)
static uint64_t mxcsr_get(void)
{
    uint32_t v;
    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}
static void mxcsr_set(uint64_t v)
{
    uint32_t x = (uint32_t)v;
    __asm__ volatile("ldmxcsr %0" : : "m"(x));
}
static uint64_t x87cw_get(void)
{
    uint16_t v;
    __asm__ volatile("fnstcw %0" : "=m"(v));
    return v;
}
static void x87cw_set(uint64_t v)
{
    uint16_t x = (uint16_t)v;
    __asm__ volatile("fldcw %0" : : "m"(x));
}
/* MXCSR: 0x1F80 default (all masked, round to nearest); RC is bits 13-14,
 * FZ bit 15.  No exception is ever unmasked. */
static const fpctl mxcsr_ctl = {
    "MXCSR", mxcsr_get, mxcsr_set, 0xFFC0,
    0x1F80, 0x9F80 /* FZ */, 0x3F80 /* down */, 0xDF80 /* up+FZ */,
    0x7F80 /* toward zero */,
};
/* x87 CW: 0x037F default (extended precision, nearest); PC is bits 8-9,
 * RC bits 10-11. */
static const fpctl x87cw_ctl = {
    "x87 control word", x87cw_get, x87cw_set, 0x0F3F,
    0x037F, 0x027F /* double */, 0x067F /* double, down */,
    0x087F /* single, up */, 0x0C7F /* single, toward zero */,
};
#elif defined(__aarch64__)
static uint64_t fpcr_get(void)
{
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    return v;
}
static void fpcr_set(uint64_t v)
{
    __asm__ volatile("msr fpcr, %0" : : "r"(v));
}
/* FPCR: RMode bits 22-23, FZ 24, DN 25, AHP 26; trap enables stay off. */
static const fpctl fpcr_ctl = {
    "FPCR", fpcr_get, fpcr_set, 0x07C00000,
    0x00000000, 0x02000000 /* DN */, 0x00400000 /* +inf */,
    0x01800000 /* -inf, FZ */, 0x04C00000 /* zero, AHP */,
};
#endif

#if GL_ARCH_SUPPORTED
typedef struct fp_ctx {
    const fpctl *ctl;
    gl_g a, b;
    gerr err;
} fp_ctx;

static void fp_expect(fp_ctx *c, uint64_t want, const char *where, int line)
{
    uint64_t got = c->ctl->get() & c->ctl->mask;
    want &= c->ctl->mask;
    if (got != want)
        gerr_set(&c->err, line, "%s %s: expected %#llx, got %#llx", c->ctl->name,
                 where, (unsigned long long)want, (unsigned long long)got);
}
#define FP_EXPECT(c, v, where) fp_expect((c), (v), (where), __LINE__)

static void fp_b(void *arg)
{
    fp_ctx *c = arg;
    c->ctl->set(c->ctl->vb);
    gl_park(1, NULL);
    FP_EXPECT(c, c->ctl->vb, "of goroutine B after A ran and resumed it");
    c->ctl->set(c->ctl->vb2);
    gl_park(2, NULL);
    FP_EXPECT(c, c->ctl->vb2, "of goroutine B after A and g0 ran");
    c->ctl->set(c->ctl->vb);        /* and exit with it set */
}

static void fp_a(void *arg)
{
    fp_ctx *c = arg;
    c->ctl->set(c->ctl->va);
    gl_resume(&c->b, 0, NULL);      /* B starts, sets vb, parks */
    FP_EXPECT(c, c->ctl->va, "of goroutine A after B parked");
    gl_resume(&c->b, 0, NULL);      /* B checks vb, sets vb2, parks */
    FP_EXPECT(c, c->ctl->va, "of goroutine A after B parked again");
    gl_park(10, NULL);              /* g0 sets v0b meanwhile */
    FP_EXPECT(c, c->ctl->va, "of goroutine A after g0 changed its own");
    gl_resume(&c->b, 0, NULL);      /* B checks vb2, sets vb, exits */
    FP_EXPECT(c, c->ctl->va, "of goroutine A after B exited");
}

static int fp_test(const fpctl *ctl, char *msg, size_t cap)
{
    uint64_t orig = ctl->get();
    const uint64_t vals[] = {ctl->v0, ctl->v0b, ctl->va, ctl->vb, ctl->vb2};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        ctl->set((orig & ~ctl->mask) | vals[i]);
        uint64_t got = ctl->get() & ctl->mask;
        ctl->set(orig);
        CHECK(got == (vals[i] & ctl->mask), "this CPU does not keep %s = %#llx "
              "(reads %#llx); the test needs other values", ctl->name,
              (unsigned long long)vals[i], (unsigned long long)got);
    }
    static fp_ctx c;                /* static: goroutines outlive no frame */
    memset(&c, 0, sizeof c);
    c.ctl = ctl;
    int e1 = gl_g_init(&c.a, fp_a, &c, 0);
    int e2 = gl_g_init(&c.b, fp_b, &c, 0);
    CHECK(e1 == GL_OK && e2 == GL_OK, "gl_g_init failed");
    uint64_t base = orig & ~ctl->mask;
    uintptr_t out = 0;
    ctl->set(base | ctl->v0);
    int r1 = gl_resume(&c.a, 0, &out);
    uint64_t after_a = ctl->get() & ctl->mask;
    ctl->set(base | ctl->v0b);
    int r2 = gl_resume(&c.a, 0, NULL);
    uint64_t after_a2 = ctl->get() & ctl->mask;
    ctl->set(orig);                 /* before any check can return */
    CHECK(r1 == GL_OK && r2 == GL_OK && out == 10 && c.a.status == GL_G_DEAD &&
          c.b.status == GL_G_DEAD, "goroutines did not run as planned (%s %s, "
          "status %d %d)", errname(r1), errname(r2), c.a.status, c.b.status);
    int rc = gerr_report(&c.err, msg, cap);
    if (rc)
        return rc;
    CHECK(after_a == (ctl->v0 & ctl->mask), "%s of g0 after A parked: expected "
          "%#llx, got %#llx", ctl->name, (unsigned long long)ctl->v0,
          (unsigned long long)after_a);
    CHECK(after_a2 == (ctl->v0b & ctl->mask), "%s of g0 after A exited: expected "
          "%#llx, got %#llx", ctl->name, (unsigned long long)ctl->v0b,
          (unsigned long long)after_a2);
    return 0;
}
#endif

int gl_test_regs_mxcsr(char *msg, size_t cap)
{
#if defined(__x86_64__) && GL_ARCH_SUPPORTED
    return fp_test(&mxcsr_ctl, msg, cap);
#else
    note(msg, cap, "x86-64 only");
    return GL_TEST_SKIP;
#endif
}

int gl_test_regs_x87cw(char *msg, size_t cap)
{
#if defined(__x86_64__) && GL_ARCH_SUPPORTED
    return fp_test(&x87cw_ctl, msg, cap);
#else
    note(msg, cap, "x86-64 only");
    return GL_TEST_SKIP;
#endif
}

int gl_test_regs_fpcr(char *msg, size_t cap)
{
#if defined(__aarch64__) && GL_ARCH_SUPPORTED
    return fp_test(&fpcr_ctl, msg, cap);
#else
    note(msg, cap, "AArch64 only");
    return GL_TEST_SKIP;
#endif
}

/* ---- alignment ------------------------------------------------------- */

#if GL_ARCH_SUPPORTED
typedef struct align_ctx {
    gerr err;
    int checks;
    const char *misaligned;    /* where sp was first found misaligned */
    uintptr_t misaligned_sp;
} align_ctx;

/* Checks made in the function that calls it (inlined into each caller, so
 * __builtin_frame_address and the local are the caller's).  A misaligned sp
 * is only noted, without calling libc (compiled for the ABI's alignment,
 * printf may use aligned SSE stores and crash first), and the rest of the
 * checks are skipped; align_report() formats it back on an aligned stack. */
#define ALIGN_CHECK(c, where) do {                                           \
        uintptr_t sp_ = gl_test_sp_at_call();                                \
        (c)->checks++;                                                       \
        if (sp_ % 16 != 0) {                                                 \
            if ((c)->misaligned == NULL) {                                   \
                (c)->misaligned = (where);                                   \
                (c)->misaligned_sp = sp_;                                    \
            }                                                                \
            break;                                                           \
        }                                                                    \
        uintptr_t fa_ = (uintptr_t)__builtin_frame_address(0);               \
        __attribute__((aligned(16))) volatile unsigned char local_[16];      \
        local_[0] = 1;                                                       \
        gl_g *g_ = gl_getg();                                                \
        GCHECK(&(c)->err, fa_ % 16 == 0, "%s: frame address %#lx is not "    \
               "16-byte aligned", (where), (unsigned long)fa_);              \
        GCHECK(&(c)->err, (uintptr_t)local_ % 16 == 0, "%s: an aligned(16) " \
               "local sits at %#lx", (where), (unsigned long)(uintptr_t)local_); \
        if (g_ && g_->stack)                                                 \
            GCHECK(&(c)->err, fa_ >= sp_ && fa_ < g_->stack->hi &&            \
                   sp_ > g_->stack->lo, "%s: sp %#lx / frame %#lx outside "  \
                   "the goroutine's stack [%#lx, %#lx)", (where),            \
                   (unsigned long)sp_, (unsigned long)fa_,                   \
                   (unsigned long)g_->stack->lo, (unsigned long)g_->stack->hi); \
    } while (0)

static int align_report(align_ctx *c, char *msg, size_t cap)
{
    GCHECK(&c->err, c->misaligned == NULL, "%s: sp at a call is %#lx, not "
           "16-byte aligned", c->misaligned, (unsigned long)c->misaligned_sp);
    return gerr_report(&c->err, msg, cap);
}

static void align_inner(void *arg)
{
    align_ctx *c = arg;
    ALIGN_CHECK(c, "entry of a goroutine started by a goroutine");
}

static void align_entry(void *arg)
{
    align_ctx *c = arg;
    ALIGN_CHECK(c, "entry of a goroutine");
    if (c->misaligned)
        return;   /* the code below may crash on such a stack */
    gl_g inner;
    gl_g_init(&inner, align_inner, c, 0);
    int e = gl_resume(&inner, 0, NULL);
    GCHECK(&c->err, e == GL_OK && inner.status == GL_G_DEAD,
           "nested goroutine: %s", errname(e));
}
#endif

int gl_test_alignment_entry(char *msg, size_t cap)
{
#if GL_ARCH_SUPPORTED
    align_ctx c = {0};
    /* Several stack sizes: the top of the stack depends on the mapping. */
    const size_t sizes[] = {0, GL_STACK_MIN, GL_STACK_MIN + 1, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        gl_g g;
        CHECK(gl_g_init(&g, align_entry, &c, sizes[i]) == GL_OK, "gl_g_init");
        int e = gl_resume(&g, 0, NULL);
        CHECK(e == GL_OK && g.status == GL_G_DEAD, "resume: %s", errname(e));
    }
    CHECK(c.checks == 8 || c.misaligned, "%d alignment checks ran, expected 8", c.checks);
    return align_report(&c, msg, cap);
#else
    note(msg, cap, "no switch assembly on this architecture");
    return GL_TEST_SKIP;
#endif
}

#if GL_ARCH_SUPPORTED
/* Park from `depth` nested frames of different sizes, then check. */
__attribute__((noinline))
static void align_park_at(align_ctx *c, int depth)
{
    volatile char pad[24 + 8 * (depth % 3)];
    pad[0] = (char)depth;
    if (depth > 0) {
        align_park_at(c, depth - 1);
    } else {
        gl_park(0, NULL);
        ALIGN_CHECK(c, "a goroutine resumed after gl_park");
    }
    pad[1] = pad[0];
}

static void align_parker(void *arg)
{
    align_ctx *c = arg;
    for (int d = 0; d < 5; d++)
        align_park_at(c, d);
}

typedef struct align_raw {
    gl_test_entry entry;
    gl_gobuf main, peer;
    align_ctx *c;
} align_raw;

/* Not instrumented by ASan: see regs_peer. */
GL_NO_ASAN static void align_raw_peer(void *arg)
{
    align_raw *r = arg;
    for (int i = 0; i < 3; i++) {
        gl_gosave_gogo(&r->peer, &r->main);
        ALIGN_CHECK(r->c, "a bare context resumed by gl_gosave_gogo");
    }
    gl_gogo(&r->main);
}
#endif

int gl_test_alignment_resume(char *msg, size_t cap)
{
#if GL_ARCH_SUPPORTED
    align_ctx c = {0};
    gl_g g;
    CHECK(gl_g_init(&g, align_parker, &c, 0) == GL_OK, "gl_g_init");
    int n = 0;
    while (g.status != GL_G_DEAD) {
        int e = gl_resume(&g, 0, NULL);
        CHECK(e == GL_OK, "resume: %s", errname(e));
        ALIGN_CHECK(&c, "g0 after gl_resume returned");
        CHECK(++n < 100, "the goroutine does not finish");
    }
    /* The raw switch: a bare context on a runtime stack. */
    align_raw r = {.c = &c};
    gl_stack *s = gl_stack_get(gl_default_stack_size());
    CHECK(s != NULL, "gl_stack_get failed");
    r.entry = (gl_test_entry){align_raw_peer, &r};
    r.peer.sp = s->hi;
    r.peer.pc = (uintptr_t)gl_test_ctx_entry;
    r.peer.ctxt = (uintptr_t)&r.entry;
    for (int i = 0; i < 4; i++) {
        gl_gosave_gogo(&r.main, &r.peer);
        ALIGN_CHECK(&c, "the test's stack resumed by gl_gosave_gogo");
    }
    gl_stack_put(s);
    CHECK(c.checks == 5 + n + 3 + 4, "%d alignment checks ran, expected %d",
          c.checks, 5 + n + 3 + 4);
    return align_report(&c, msg, cap);
#else
    note(msg, cap, "no switch assembly on this architecture");
    return GL_TEST_SKIP;
#endif
}

/* ---- stacks: reuse and trimming ----------------------------------------- */

int gl_test_stack_reuse(int n, char *msg, size_t cap)
{
    CHECK(n > 1, "n must be > 1");
    gl_set_stack_cache_limit(64);   /* the default; a test may have changed it */
    gl_stats before, after;
    gl_get_stats(&before);
    for (int i = 0; i < n; i++) {
        gl_g g;
        CHECK(gl_g_init(&g, noop_fn, NULL, 0) == GL_OK, "gl_g_init");
        int e = gl_resume(&g, 0, NULL);
        CHECK(e == GL_OK && g.status == GL_G_DEAD, "goroutine %d: %s", i, errname(e));
    }
    gl_get_stats(&after);
    uint64_t mapped = after.stacks_mapped - before.stacks_mapped;
    uint64_t reused = after.stacks_reused - before.stacks_reused;
    CHECK(mapped <= 1, "%d goroutines one after another mapped %lu stacks",
          n, (unsigned long)mapped);
    CHECK(reused >= (uint64_t)n - 1 && reused <= (uint64_t)n,
          "%d goroutines one after another reused %lu cached stacks", n,
          (unsigned long)reused);
    CHECK(after.stacks_in_use == before.stacks_in_use, "stacks in use %lu -> %lu",
          (unsigned long)before.stacks_in_use, (unsigned long)after.stacks_in_use);
    CHECK(after.stacks_cached >= 1, "no stack cached after the run");
    return 0;
}

/* Pages of [lo, hi) resident, or -1 (errno set) when mincore fails. */
static long resident_pages(uintptr_t lo, uintptr_t hi)
{
    size_t page = gl_page_size();
    lo &= ~(uintptr_t)(page - 1);
    if (hi <= lo)
        return 0;
    size_t npages = (hi - lo + page - 1) / page;
    unsigned char *vec = malloc(npages);
    if (!vec) {
        errno = ENOMEM;
        return -1;
    }
    long n = 0;
    if (mincore((void *)lo, hi - lo, vec) != 0) {
        n = -1;
    } else {
        for (size_t i = 0; i < npages; i++)
            n += vec[i] & 1;
    }
    free(vec);
    return n;
}

/* Does MADV_DONTNEED drop pages here?  qemu-user before 8.1 ignores it. */
static int madvise_dontneed_works(void)
{
    size_t page = gl_page_size();
    char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return 0;
    p[0] = 1;
    int works = madvise(p, page, MADV_DONTNEED) == 0 && ((volatile char *)p)[0] == 0;
    munmap(p, page);
    return works;
}

typedef struct trim_ctx {
    size_t depth;
    uintptr_t lo, hi, deepest;
    long resident_deep;             /* resident pages below the kept top */
    gerr err;
} trim_ctx;

#define TRIM_KEEP (64u * 1024u)      /* the runtime's default */

/* Write `left` bytes of stack in 1 KiB frames; not a tail call. */
__attribute__((noinline))
static int dig(size_t left, uintptr_t *deepest)
{
    volatile unsigned char buf[1024];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i | 1);
    if ((uintptr_t)buf < *deepest)
        *deepest = (uintptr_t)buf;
    if (left <= sizeof buf)
        return buf[0];
    return dig(left - sizeof buf, deepest) + buf[1];
}

static void trim_fn(void *arg)
{
    trim_ctx *c = arg;
    gl_g *g = gl_getg();
    c->lo = g->stack->lo;
    c->hi = g->stack->hi;
    c->deepest = c->hi;
    dig(c->depth, &c->deepest);
    uintptr_t limit = (c->hi - TRIM_KEEP) & ~(uintptr_t)(gl_page_size() - 1);
    /* Pages strictly between the deepest frame and the kept top. */
    c->resident_deep = resident_pages(c->deepest + gl_page_size(), limit);
    GCHECK(&c->err, c->resident_deep > 0, "the deep pages the goroutine wrote "
           "are not resident (%ld)", c->resident_deep);
}

int gl_test_trim_deep(size_t depth, char *msg, size_t cap)
{
    size_t size = gl_default_stack_size();
    CHECK(depth >= 2 * TRIM_KEEP && depth + 64 * 1024 < size, "depth %zu does not fit "
          "between the kept %u bytes and the stack size %zu", depth, TRIM_KEEP, size);
    gl_set_stack_trim_keep(TRIM_KEEP);
    gl_set_stack_cache_limit(64);
    static trim_ctx c;
    memset(&c, 0, sizeof c);
    c.depth = depth;
    gl_stats before, after;
    gl_get_stats(&before);
    gl_g g;
    CHECK(gl_g_init(&g, trim_fn, &c, 0) == GL_OK, "gl_g_init");
    int e = gl_resume(&g, 0, NULL);
    CHECK(e == GL_OK && g.status == GL_G_DEAD, "resume: %s", errname(e));
    int rc = gerr_report(&c.err, msg, cap);
    if (rc)
        return rc;
    gl_get_stats(&after);
    CHECK(after.stacks_trimmed - before.stacks_trimmed == 1, "stacks_trimmed grew "
          "by %lu after a goroutine used %zu bytes of stack, expected 1",
          (unsigned long)(after.stacks_trimmed - before.stacks_trimmed), depth);
    CHECK(c.hi - c.deepest >= depth - 2048, "the goroutine went only %lu bytes deep",
          (unsigned long)(c.hi - c.deepest));
    uintptr_t limit = (c.hi - TRIM_KEEP) & ~(uintptr_t)(gl_page_size() - 1);
    long left = resident_pages(c.lo, limit);
    CHECK(left >= 0, "mincore on the finished stack: %s (was it unmapped instead "
          "of cached?)", strerror(errno));
    if (!madvise_dontneed_works()) {
        note(msg, cap, "MADV_DONTNEED is a no-op on this platform (qemu-user?): "
             "residency after the trim not checked");
        return 0;
    }
    CHECK(left == 0, "%ld pages below the kept top are still resident after the "
          "stack was put back (%ld were before)", left, c.resident_deep);
    return 0;
}

static void shallow_fn(void *arg)
{
    volatile char buf[512];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)(i | 1);
    (void)arg;
}

int gl_test_trim_shallow(char *msg, size_t cap)
{
    gl_set_stack_trim_keep(TRIM_KEEP);
    gl_set_stack_cache_limit(64);
    gl_stats before, after;
    gl_get_stats(&before);
    for (int i = 0; i < 3; i++) {
        gl_g g;
        CHECK(gl_g_init(&g, shallow_fn, NULL, 0) == GL_OK, "gl_g_init");
        int e = gl_resume(&g, 0, NULL);
        CHECK(e == GL_OK && g.status == GL_G_DEAD, "resume: %s", errname(e));
    }
    gl_get_stats(&after);
    CHECK(after.stacks_trimmed == before.stacks_trimmed, "shallow goroutines "
          "trimmed their stacks %lu times",
          (unsigned long)(after.stacks_trimmed - before.stacks_trimmed));
    CHECK(after.stacks_cached >= 1, "no stack cached");
    return 0;
}

/* ---- guard page ---------------------------------------------------------- */

static volatile int overflow_stop;

__attribute__((noinline))
static int overflow_recurse(int n)
{
    volatile char pad[200];
    pad[0] = (char)n;
    if (overflow_stop)
        return pad[0];
    return overflow_recurse(n + 1) + pad[0];
}

static void overflow_fn(void *arg)
{
    (void)arg;
    overflow_recurse(0);
}

int gl_test_overflow_child(size_t stack_size)
{
    static gl_g g;
    if (stack_size == 0)
        stack_size = 64 * 1024;
    if (gl_g_init(&g, overflow_fn, NULL, stack_size) != GL_OK)
        return 1;
    g.label = "overflow-test";
    int e = gl_resume(&g, 0, NULL);
    return e == GL_OK ? 2 : 3;
}

int gl_test_guard_page(char *msg, size_t cap)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        close(fds[1]);
        /* No core file for an expected crash. */
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        int rc = gl_test_overflow_child(0);
        _exit(100 + rc);
    }
    close(fds[1]);
    char out[4096];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fds[0], out + len, sizeof out - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof out - 1)
            break;
    }
    out[len] = 0;
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        CHECK(errno == EINTR, "waitpid: %s", strerror(errno));
    }
    for (char *p = out; *p; p++)        /* keep msg on one line */
        if (*p == '\n')
            *p = '|';
    CHECK(WIFSIGNALED(status), "the child exited with status %d instead of "
          "dying by a signal; its stderr: %.600s",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
    int sig = WTERMSIG(status);
    CHECK(sig == SIGSEGV || sig == SIGBUS, "the child died by signal %d, not "
          "SIGSEGV/SIGBUS; its stderr: %.600s", sig, out);
    const char *p = strstr(out, "goloop: fatal error: goroutine ");
    CHECK(p != NULL, "no overflow message on the child's stderr (a bare fault?): "
          "%.600s", out);
    p += strlen("goloop: fatal error: goroutine ");
    const char *digits = p;
    while (*p >= '0' && *p <= '9')
        p++;
    CHECK(p > digits, "the message names no goroutine id: %.600s", out);
    CHECK(strncmp(p, " (overflow-test) overflowed its stack of 65536 bytes",
                  strlen(" (overflow-test) overflowed its stack of 65536 bytes")) == 0,
          "the message does not name the label and stack size: %.600s", out);
    CHECK(strstr(out, "guard page hit at 0x") != NULL, "no fault address: %.600s", out);
    CHECK(strstr(out, "gl_set_default_stack_size") != NULL,
          "the message does not say how to set the stack size: %.600s", out);
    return 0;
}

/* ---- error paths ---------------------------------------------------------- */

int gl_test_err_dead(char *msg, size_t cap)
{
    gl_g g;
    CHECK(gl_g_init(&g, noop_fn, NULL, 0) == GL_OK, "gl_g_init");
    CHECK(g.status == GL_G_IDLE, "a new goroutine has status %d", g.status);
    uintptr_t out = 5;
    int e = gl_resume(&g, 0, &out);
    CHECK(e == GL_OK && g.status == GL_G_DEAD && out == 0,
          "first resume: %s, status %d, out %lu", errname(e), g.status,
          (unsigned long)out);
    out = 5;
    e = gl_resume(&g, 0, &out);
    CHECK(e == GL_EDEAD, "resuming a finished goroutine gave %s, not GL_EDEAD",
          errname(e));
    CHECK(out == 5, "a refused resume wrote *out");
    CHECK(g.status == GL_G_DEAD && g.stack == NULL, "a refused resume changed "
          "the goroutine");
    return 0;
}

int gl_test_err_notg(char *msg, size_t cap)
{
    uintptr_t in = 5;
    int e = gl_park(1, &in);
    CHECK(e == GL_ENOTG, "gl_park on g0 gave %s, not GL_ENOTG", errname(e));
    CHECK(in == 5, "a refused park wrote *in");
    CHECK(gl_getg() == NULL, "gl_getg() on g0 is not NULL");
    CHECK(gl_stack_depth() == 0, "gl_stack_depth() on g0 is not 0");
    return 0;
}

typedef struct thread_ctx {
    gl_g *g;
    int rc;
    uint64_t tid;
} thread_ctx;

static void *other_thread(void *arg)
{
    thread_ctx *t = arg;
    t->tid = gl_thread_id();
    t->rc = gl_resume(t->g, 0, NULL);
    return NULL;
}

static void park_once(void *arg)
{
    (void)arg;
    gl_park(0, NULL);
}

int gl_test_err_thread(char *msg, size_t cap)
{
    gl_g g;
    CHECK(gl_g_init(&g, park_once, NULL, 0) == GL_OK, "gl_g_init");
    int e = gl_resume(&g, 0, NULL);
    CHECK(e == GL_OK && g.status == GL_G_PARKED, "start: %s", errname(e));
    CHECK(g.owner == gl_thread_id(), "the goroutine is not owned by the thread "
          "that started it");
    thread_ctx t = {.g = &g, .rc = -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, other_thread, &t) == 0, "pthread_create");
    pthread_join(th, NULL);
    int rc_other = t.rc;
    e = gl_resume(&g, 0, NULL);     /* finish it on its own thread */
    CHECK(rc_other == GL_ETHREAD, "resuming from another thread gave %s, not "
          "GL_ETHREAD", errname(rc_other));
    CHECK(t.tid != gl_thread_id(), "two threads share a thread id");
    CHECK(e == GL_OK && g.status == GL_G_DEAD, "resume on the owner thread "
          "afterwards: %s, status %d", errname(e), g.status);
    return 0;
}

int gl_test_err_einval(char *msg, size_t cap)
{
    gl_g g;
    size_t page = gl_page_size();
    const struct { size_t size; int want; } cases[] = {
        {1, GL_EINVAL},
        {GL_STACK_MIN - 1, GL_EINVAL},
        {GL_STACK_MAX + 1, GL_EINVAL},
        {(size_t)GL_STACK_MAX + page, GL_EINVAL},
        {(size_t)-1, GL_EINVAL},
        {0, GL_OK},
        {GL_STACK_MIN, GL_OK},
        {GL_STACK_MIN + 1, GL_OK},
        {GL_STACK_MAX, GL_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int e = gl_g_init(&g, noop_fn, NULL, cases[i].size);
        CHECK(e == cases[i].want, "gl_g_init with a stack of %zu bytes gave %s, "
              "expected %s", cases[i].size, errname(e), errname(cases[i].want));
        if (e == GL_OK)
            CHECK(g.stack_size % page == 0 && g.stack_size >= cases[i].size,
                  "stack size %zu normalized to %zu", cases[i].size, g.stack_size);
    }
    size_t def = gl_default_stack_size();
    int e = gl_set_default_stack_size(GL_STACK_MIN - 1);
    CHECK(e == GL_EINVAL, "gl_set_default_stack_size(too small) gave %s", errname(e));
    e = gl_set_default_stack_size(GL_STACK_MAX + 1);
    CHECK(e == GL_EINVAL, "gl_set_default_stack_size(too big) gave %s", errname(e));
    CHECK(gl_default_stack_size() == def, "a refused size changed the default");
    return 0;
}

typedef struct running_ctx {
    gl_g a, b;
    int self_rc, parent_rc, inner_self_rc;
} running_ctx;

static void running_b(void *arg)
{
    running_ctx *c = arg;
    c->parent_rc = gl_resume(&c->a, 0, NULL);   /* A resumed us: running */
    c->inner_self_rc = gl_resume(&c->b, 0, NULL);
}

static void running_a(void *arg)
{
    running_ctx *c = arg;
    c->self_rc = gl_resume(gl_getg(), 0, NULL);
    gl_resume(&c->b, 0, NULL);
}

int gl_test_err_running(char *msg, size_t cap)
{
    running_ctx c;
    memset(&c, 0, sizeof c);
    c.self_rc = c.parent_rc = c.inner_self_rc = -1;
    CHECK(gl_g_init(&c.a, running_a, &c, 0) == GL_OK, "gl_g_init");
    CHECK(gl_g_init(&c.b, running_b, &c, 0) == GL_OK, "gl_g_init");
    int e = gl_resume(&c.a, 0, NULL);
    CHECK(e == GL_OK && c.a.status == GL_G_DEAD && c.b.status == GL_G_DEAD,
          "the goroutines did not finish: %s", errname(e));
    CHECK(c.self_rc == GL_ERUNNING, "a goroutine resuming itself got %s, not "
          "GL_ERUNNING", errname(c.self_rc));
    CHECK(c.inner_self_rc == GL_ERUNNING, "a nested goroutine resuming itself "
          "got %s, not GL_ERUNNING", errname(c.inner_self_rc));
    CHECK(c.parent_rc == GL_ERUNNING, "a goroutine resuming its parent got %s, "
          "not GL_ERUNNING", errname(c.parent_rc));
    return 0;
}

/* ---- sysmon -------------------------------------------------------------- */

#define PROBE_KEEP 64

typedef struct sysmon_probe {
    gl_p p;
    _Atomic uint64_t requests;
    _Atomic uint64_t first_tick;
    _Atomic int64_t first_at;
    uint64_t ticks[PROBE_KEEP];      /* the first requests' ticks and times */
    int64_t at[PROBE_KEEP];
} sysmon_probe;

static void probe_preempt(gl_p *p, uint64_t tick)
{
    sysmon_probe *pr = p->ctx;
    uint64_t n = atomic_fetch_add(&pr->requests, 1);
    int64_t now = gl_nanotime();
    if (n == 0) {
        atomic_store(&pr->first_tick, tick);
        atomic_store(&pr->first_at, now);
    }
    if (n < PROBE_KEEP) {
        pr->ticks[n] = tick;
        pr->at[n] = now;
    }
}

static void probe_init(sysmon_probe *pr, int64_t slice_ns)
{
    memset(pr, 0, sizeof *pr);
    gl_p_init(&pr->p, slice_ns, 0, probe_preempt, pr);
}

/* Busy until `ns` passed or the probe has `enough` requests; returns the
 * time spent. */
static int64_t spin(sysmon_probe *pr, int64_t ns, uint64_t enough)
{
    int64_t t0 = gl_nanotime(), t;
    while ((t = gl_nanotime()) - t0 < ns && atomic_load(&pr->requests) < enough)
        ;   /* gl_nanotime() is a call the compiler cannot drop */
    return t - t0;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

#define MS 1000000LL

/* A step that runs past its slice gets a request, never before the slice is
 * up, then again every retry while it goes on. */
int gl_test_sysmon_long_step(char *msg, size_t cap)
{
    sysmon_probe pr;
    probe_init(&pr, 5 * MS);
    CHECK(gl_sysmon_attach(&pr.p) == GL_OK, "gl_sysmon_attach failed");
    int64_t t0 = gl_nanotime();
    gl_p_step_begin(&pr.p, t0);
    uint64_t tick = atomic_load(&pr.p.tick);
    spin(&pr, 500 * MS, 3);
    gl_p_step_end(&pr.p);
    gl_sysmon_detach(&pr.p);
    uint64_t n = atomic_load(&pr.requests);
    int64_t late = atomic_load(&pr.first_at) - t0;
    CHECK(n >= 3, "%llu requests in 500 ms for a step with a 5 ms slice",
          (unsigned long long)n);
    CHECK(atomic_load(&pr.first_tick) == tick, "the request named tick %llu, "
          "not the running step's %llu",
          (unsigned long long)atomic_load(&pr.first_tick), (unsigned long long)tick);
    CHECK(late >= 5 * MS, "asked to preempt after %.2f ms, before the 5 ms slice",
          (double)late / MS);
    CHECK(late < 100 * MS, "asked to preempt only after %.2f ms (slice 5 ms)",
          (double)late / MS);
    return 0;
}

/* A step is never asked to stop before its slice is up: each request names
 * a step that had begun at least a slice earlier.  (Short steps may still
 * get requests when the machine is loaded: a step descheduled mid-way does
 * run past its slice in wall time.) */
int gl_test_sysmon_short_steps(char *msg, size_t cap)
{
    enum { STEPS = 400 };
    static int64_t began[STEPS];
    sysmon_probe pr;
    probe_init(&pr, 20 * MS);
    CHECK(gl_sysmon_attach(&pr.p) == GL_OK, "gl_sysmon_attach failed");
    uint64_t first_tick = atomic_load(&pr.p.tick) + 1;
    int long_steps = 0;
    for (int i = 0; i < STEPS; i++) {
        began[i] = gl_nanotime();
        gl_p_step_begin(&pr.p, began[i]);
        spin(&pr, MS / 4, (uint64_t)-1);
        gl_p_step_end(&pr.p);
        long_steps += gl_nanotime() - began[i] >= 20 * MS;
    }
    gl_sysmon_detach(&pr.p);
    uint64_t n = atomic_load(&pr.requests);
    for (uint64_t k = 0; k < n && k < PROBE_KEEP; k++) {
        uint64_t i = (pr.ticks[k] - first_tick) / 2;
        CHECK(i < STEPS, "a request named tick %llu, no step of this test",
              (unsigned long long)pr.ticks[k]);
        CHECK(pr.at[k] - began[i] >= 20 * MS, "step %llu was asked to stop "
              "%.2f ms after it began, before its 20 ms slice",
              (unsigned long long)i, (double)(pr.at[k] - began[i]) / MS);
    }
    CHECK(n <= (uint64_t)long_steps * 16, "%llu requests for %d steps that "
          "outlasted their slice", (unsigned long long)n, long_steps);
    return 0;
}

/* While the owner blocks in a poll sysmon sleeps until woken (no wake-ups),
 * and the poll's end wakes it in time to catch a long step. */
int gl_test_sysmon_sleeps_while_polling(char *msg, size_t cap)
{
    sysmon_probe pr;
    probe_init(&pr, 5 * MS);
    CHECK(gl_sysmon_attach(&pr.p) == GL_OK, "gl_sysmon_attach failed");
    gl_p_poll_enter(&pr.p);
    nap_ms(100);   /* long enough for sysmon to look twice and go to sleep */
    gl_sysmon_stats a, b;
    gl_sysmon_get_stats(&a);
    nap_ms(200);
    gl_sysmon_get_stats(&b);
    gl_p_poll_exit(&pr.p);
    int64_t t0 = gl_nanotime();
    gl_p_step_begin(&pr.p, t0);
    spin(&pr, 500 * MS, 1);
    gl_p_step_end(&pr.p);
    gl_sysmon_detach(&pr.p);
    CHECK(b.wakeups - a.wakeups <= 2, "sysmon woke %llu times in 200 ms while "
          "the only P was blocked in a poll",
          (unsigned long long)(b.wakeups - a.wakeups));
    CHECK(b.deep_sleeps > 0, "sysmon never slept until woken");
    CHECK(atomic_load(&pr.requests) >= 1, "no request for a 500 ms step after "
          "the poll ended");
    int64_t late = atomic_load(&pr.first_at) - t0;
    CHECK(late < 100 * MS, "the request came %.2f ms into the step (slice 5 ms)",
          (double)late / MS);
    return 0;
}

/* Once detached, a P gets no more requests. */
int gl_test_sysmon_detach(char *msg, size_t cap)
{
    sysmon_probe pr;
    probe_init(&pr, 2 * MS);
    CHECK(gl_sysmon_attach(&pr.p) == GL_OK, "gl_sysmon_attach failed");
    CHECK(gl_sysmon_attach(&pr.p) == GL_EINVAL, "attaching twice was accepted");
    gl_p_step_begin(&pr.p, gl_nanotime());
    gl_sysmon_detach(&pr.p);
    uint64_t before = atomic_load(&pr.requests);
    nap_ms(30);
    gl_p_step_end(&pr.p);
    CHECK(atomic_load(&pr.requests) == before, "requests after detach");
    gl_p bad;
    gl_p_init(&bad, 0, 0, probe_preempt, &pr);
    CHECK(gl_sysmon_attach(&bad) == GL_EINVAL, "a zero slice was accepted");
    return 0;
}

/* ---- benchmarks ---------------------------------------------------------- */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

#if GL_ARCH_SUPPORTED
typedef struct bench_raw {
    gl_test_entry entry;
    gl_gobuf main, peer;
} bench_raw;

static void bench_raw_peer(void *arg)
{
    bench_raw *b = arg;
    for (;;)
        gl_gosave_gogo(&b->peer, &b->main);
}
#endif

double gl_bench_raw_switch_ns(long n)
{
#if GL_ARCH_SUPPORTED
    if (n <= 0)
        return -1;
    gl_stack *s = gl_stack_get(gl_default_stack_size());
    if (!s)
        return -1;
    bench_raw b;
    memset(&b, 0, sizeof b);
    b.entry = (gl_test_entry){bench_raw_peer, &b};
    b.peer.sp = s->hi;
    b.peer.pc = (uintptr_t)gl_test_ctx_entry;
    b.peer.ctxt = (uintptr_t)&b.entry;
    gl_gosave_gogo(&b.main, &b.peer);       /* warm up: the peer starts */
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        gl_gosave_gogo(&b.main, &b.peer);
    double t1 = now_ns();
    gl_stack_put(s);                        /* the peer is abandoned parked */
    return (t1 - t0) / (2.0 * (double)n);
#else
    (void)n;
    return -1;
#endif
}

static void bench_parker(void *arg)
{
    (void)arg;
    uintptr_t in = 0;
    while (in == 0)
        gl_park(0, &in);
}

double gl_bench_resume_park_ns(long n)
{
    if (n <= 0)
        return -1;
    gl_g g;
    if (gl_g_init(&g, bench_parker, NULL, 0) != GL_OK ||
        gl_resume(&g, 0, NULL) != GL_OK)
        return -1;
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        gl_resume(&g, 0, NULL);
    double t1 = now_ns();
    if (gl_resume(&g, 1, NULL) != GL_OK || g.status != GL_G_DEAD)
        return -1;
    return (t1 - t0) / (double)n;
}

/* ---- the table ----------------------------------------------------------- */

static int t_ring(char *msg, size_t cap) { return gl_test_ring(10000, 5, msg, cap); }
static int t_reuse(char *msg, size_t cap) { return gl_test_stack_reuse(1000, msg, cap); }
static int t_trim(char *msg, size_t cap) { return gl_test_trim_deep(512 * 1024, msg, cap); }

static const gl_rt_test tests[] = {
    {"ring", t_ring},
#if defined(__x86_64__)
    {"regs_gpr_rbx_rbp_r12_r15", gl_test_regs_gpr},
    {"regs_mxcsr", gl_test_regs_mxcsr},
    {"regs_x87cw", gl_test_regs_x87cw},
#elif defined(__aarch64__)
    {"regs_gpr_x19_x29", gl_test_regs_gpr},
    {"regs_fp_d8_d15", gl_test_regs_fp},
    {"regs_fpcr", gl_test_regs_fpcr},
#endif
    {"alignment_entry", gl_test_alignment_entry},
    {"alignment_resume", gl_test_alignment_resume},
    {"stack_reuse", t_reuse},
    {"trim_deep", t_trim},
    {"trim_shallow", gl_test_trim_shallow},
    {"guard_page", gl_test_guard_page},
    {"err_dead", gl_test_err_dead},
    {"err_notg", gl_test_err_notg},
    {"err_thread", gl_test_err_thread},
    {"err_einval", gl_test_err_einval},
    {"err_running", gl_test_err_running},
    {"sysmon_long_step", gl_test_sysmon_long_step},
    {"sysmon_short_steps", gl_test_sysmon_short_steps},
    {"sysmon_sleeps_while_polling", gl_test_sysmon_sleeps_while_polling},
    {"sysmon_detach", gl_test_sysmon_detach},
};

size_t gl_rt_test_count(void) { return sizeof tests / sizeof tests[0]; }

const gl_rt_test *gl_rt_test_get(size_t i)
{
    return i < gl_rt_test_count() ? &tests[i] : NULL;
}

const char *gl_rt_arch(void) { return GL_ARCH_NAME; }
