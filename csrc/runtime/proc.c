/*
 * proc.c — goroutine lifecycle: start, resume, park, exit.
 *
 * Each thread that uses goroutines has an M (per-thread state): its g0 — a
 * gl_g standing for the thread's own stack, never started or finished — and
 * curg, the goroutine running now (&m->g0 when none is).  Control moves only
 * by these transfers, each one gl_gosave_gogo or gl_mcall + gl_gogo:
 *
 *   gl_resume(g)   parent saves itself in parent->sched and continues g
 *                  (a new g starts at gl_gostart on a fresh stack).
 *   gl_park()      g saves itself in g->sched and continues its parent.
 *   goroutine exit g's function returned: gl_mcall moves onto the parent's
 *                  stack (just below where the parent was saved, which is
 *                  free), and goexit0 gives g's stack back to the cache
 *                  there — it cannot while still running on it — then
 *                  continues the parent.  This is what Go's mcall is for.
 *
 * Each transfer is also announced to AddressSanitizer (sanitizer.h) in an
 * ASan build: san_leave right before the assembly switches, san_arrive as
 * the first thing on the stack switched to — after gl_gosave_gogo returns,
 * or at gl_goentry for a new goroutine.  The fake stack a suspended context
 * must get back lives in a local of the function it is suspended in, on its
 * own stack.  The thread's own stack (g0's) is not the runtime's, so its
 * bounds are learned from ASan the first time a goroutine is entered from it.
 * In a valgrind build, the spot below the parent where goexit0 runs is made
 * addressable to memcheck first (it holds that memory for dead).
 *
 * The value passed by each transfer travels in gl_gobuf.ret.  The runtime
 * never allocates a gl_g; it only takes a stack at the first resume and
 * returns it at exit.
 */
#include "runtime.h"
#include "sanitizer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <unistd.h>

_Static_assert(offsetof(gl_gobuf, sp) == GOBUF_SP, "Gobuf.sp offset");
_Static_assert(offsetof(gl_gobuf, pc) == GOBUF_PC, "Gobuf.pc offset");
_Static_assert(offsetof(gl_gobuf, g) == GOBUF_G, "Gobuf.g offset");
_Static_assert(offsetof(gl_gobuf, ctxt) == GOBUF_CTXT, "Gobuf.ctxt offset");
_Static_assert(offsetof(gl_gobuf, ret) == GOBUF_RET, "Gobuf.ret offset");
_Static_assert(offsetof(gl_gobuf, lr) == GOBUF_LR, "Gobuf.lr offset");
_Static_assert(offsetof(gl_gobuf, bp) == GOBUF_BP, "Gobuf.bp offset");
_Static_assert(sizeof(gl_gobuf) == GOBUF_SIZE, "Gobuf size");
_Static_assert(sizeof(uintptr_t) == 8, "64-bit platforms only");

/* Gap left below a suspended parent's saved sp before goexit0 runs there:
 * more than any red zone, and keeps 16-byte alignment. */
#define MCALL_GAP 256

typedef struct gl_m {
    gl_g g0;
    gl_g *curg;
    uint64_t id;
#if GL_ASAN
    uintptr_t g0_lo, g0_hi;   /* the thread's own stack, as ASan knows it */
#endif
} gl_m;

static _Thread_local gl_m m_tls;
static _Atomic uint64_t next_goid = 1;
static _Atomic uint64_t next_mid = 1;
static _Atomic uint64_t n_started, n_finished;

void gl_stack_stats(gl_stats *out);   /* stack.c */

/* This thread's M.  The extension is a shared object, so each use of a
 * thread-local costs a __tls_get_addr call, and the compiler recomputes the
 * address after every call it makes rather than keep it in a register
 * (three per gl_resume and gl_park).  Hiding where the pointer came from
 * makes it an ordinary value that stays put: a goroutine never changes
 * threads, so the M is the same after any switch. */
static inline gl_m *m_self(void)
{
    gl_m *m = &m_tls;
    __asm__("" : "+r"(m));
    return m;
}

static gl_m *getm(void)
{
    gl_m *m = m_self();
    if (__builtin_expect(m->id == 0, 0)) {
        m->id = atomic_fetch_add(&next_mid, 1);
        m->g0.status = GL_G_RUNNING;
        m->g0.owner = m->id;
        m->curg = &m->g0;
        gl_overflow_arm_thread();
    }
    return m;
}

gl_g *gl_getg(void)
{
    gl_m *m = m_self();
    return (m->curg == NULL || m->curg == &m->g0) ? NULL : m->curg;
}

uint64_t gl_thread_id(void) { return getm()->id; }

/* ---- ASan's view of the transfers (no code in other builds) ------------- */

/* The current stack is about to be left for `to`'s; *fake_save as for
 * gl_san_switch_begin (NULL: the current goroutine is finishing). */
static inline void san_leave(gl_m *m, void **fake_save, const gl_g *to)
{
#if GL_ASAN
    if (to == &m->g0)
        gl_san_switch_begin(fake_save, m->g0_lo, m->g0_hi);
    else
        gl_san_switch_begin(fake_save, to->stack->lo, to->stack->hi);
#else
    (void)m; (void)fake_save; (void)to;
#endif
}

/* Arrived on a stack, coming from `from`'s; `fake` is what this stack's
 * san_leave saved (NULL on a goroutine's first entry).  Coming from g0 is
 * when its bounds are learned. */
static inline void san_arrive(gl_m *m, void *fake, const gl_g *from)
{
#if GL_ASAN
    uintptr_t lo, hi;
    gl_san_switch_end(fake, &lo, &hi);
    if (from == &m->g0) {
        m->g0_lo = lo;
        m->g0_hi = hi;
    }
#else
    (void)m; (void)fake; (void)from;
#endif
}

size_t gl_stack_depth(void)
{
    gl_g *g = gl_getg();
    char here;
    return g ? (size_t)(g->stack->hi - (uintptr_t)&here) : 0;
}

const char *gl_strerror(int err)
{
    switch (err) {
    case GL_OK: return "success";
    case GL_EDEAD: return "the goroutine has finished";
    case GL_ERUNNING: return "the goroutine is already running";
    case GL_ETHREAD: return "the goroutine belongs to another thread";
    case GL_ENOTG: return "not inside a goroutine";
    case GL_ENOMEM: return "cannot map a goroutine stack";
    case GL_EINVAL: return "invalid argument";
    case GL_EUNSUPPORTED: return "goroutines are not supported on this platform";
    }
    return "unknown error";
}

int gl_g_init(gl_g *g, void (*fn)(void *), void *arg, size_t stack_size)
{
    size_t size = gl_default_stack_size();
    if (stack_size != 0 && gl_stack_size_normalize(stack_size, &size) != GL_OK)
        return GL_EINVAL;
    *g = (gl_g){0};
    g->fn = fn;
    g->arg = arg;
    g->stack_size = size;
    g->status = GL_G_IDLE;
    g->goid = atomic_fetch_add(&next_goid, 1);
    g->sched.g = g;
    return GL_OK;
}

/* Give g a stack and a first context that enters gl_gostart. */
static int g_start(gl_g *g, gl_m *m)
{
#if GL_ARCH_SUPPORTED
    gl_stack *s = gl_stack_get(g->stack_size);
    if (s == NULL)
        return GL_ENOMEM;
    g->stack = s;
    g->owner = m->id;
    g->sched.sp = s->hi;                 /* 16-byte aligned (64, in fact) */
    g->sched.pc = (uintptr_t)gl_gostart;
    g->sched.ctxt = (uintptr_t)g;
    g->sched.bp = 0;
    g->sched.lr = 0;
    atomic_fetch_add(&n_started, 1);
    return GL_OK;
#else
    (void)g; (void)m;
    return GL_EUNSUPPORTED;
#endif
}

int gl_resume(gl_g *g, uintptr_t in, uintptr_t *out)
{
    gl_m *m = getm();
    switch (g->status) {
    case GL_G_DEAD: return GL_EDEAD;
    case GL_G_RUNNING: return GL_ERUNNING;
    case GL_G_PARKED:
        if (g->owner != m->id)
            return GL_ETHREAD;
        break;
    case GL_G_IDLE: {
        int err = g_start(g, m);
        if (err != GL_OK)
            return err;
        break;
    }
    }
    gl_g *self = m->curg;
    g->parent = self;
    g->status = GL_G_RUNNING;
    g->sched.ret = in;
    m->curg = g;
    void *fake = NULL;
    san_leave(m, &fake, g);
    uintptr_t r = gl_gosave_gogo(&self->sched, &g->sched);
    /* Back on self's stack: g parked or finished, and set curg to self. */
    san_arrive(m, fake, g);
    if (out)
        *out = r;
    return GL_OK;
}

int gl_park(uintptr_t out, uintptr_t *in)
{
    gl_m *m = getm();
    gl_g *g = m->curg;
    if (g == &m->g0)
        return GL_ENOTG;
    gl_g *parent = g->parent;
    char here;
    if ((uintptr_t)&here < g->stack->low_water)
        g->stack->low_water = (uintptr_t)&here;
    g->status = GL_G_PARKED;
    g->parent = NULL;
    parent->sched.ret = out;
    m->curg = parent;
    void *fake = NULL;
    san_leave(m, &fake, parent);
    uintptr_t r = gl_gosave_gogo(&g->sched, &parent->sched);
    san_arrive(m, fake, g->parent);   /* whoever resumed g */
    if (in)
        *in = r;
    return GL_OK;
}

/* Runs on the parent's stack (via gl_mcall) once g's function returned.
 * For ASan the switch to the parent is under way until the parent's
 * gl_resume arrives.  Not instrumented: before a noreturn call (gl_gogo)
 * ASan unpoisons the whole stack above, the parent's live frames included,
 * and would lose their redzones at every goroutine exit. */
GL_NO_ASAN static void goexit0(void *arg)
{
    gl_g *g = arg;
    gl_g *parent = g->parent;
    gl_m *m = m_self();
    gl_stack_put(g->stack);
    g->stack = NULL;
    g->status = GL_G_DEAD;
    g->parent = NULL;
    parent->sched.ret = 0;
    m->curg = parent;
    atomic_fetch_add(&n_finished, 1);
    gl_gogo(&parent->sched);
}

void gl_goentry(gl_g *g)
{
    san_arrive(m_self(), NULL, g->parent);
    g->fn(g->arg);
    gl_g *parent = g->parent;
    gl_san_frames_abandoned();           /* before its stack is given back */
    san_leave(m_self(), NULL, parent);   /* g's stack is left for good */
    uintptr_t sp = (parent->sched.sp - MCALL_GAP) & ~(uintptr_t)15;
    gl_vg_stack_enter(sp);               /* where goexit0 runs */
    gl_mcall(&g->sched, goexit0, g, sp);
    gl_fatal("goexit0 returned");
}

void gl_goentry_returned(void) { gl_fatal("gl_goentry returned"); }
void gl_mcall_returned(void) { gl_fatal("a gl_mcall function returned"); }

void gl_fatal(const char *msg)
{
    fprintf(stderr, "goloop: fatal error: %s\n", msg);
    fflush(stderr);
    abort();
}

void gl_get_stats(gl_stats *out)
{
    gl_stack_stats(out);
    out->goroutines_started = atomic_load(&n_started);
    out->goroutines_finished = atomic_load(&n_finished);
}
