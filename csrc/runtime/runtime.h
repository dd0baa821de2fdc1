/*
 * runtime.h — goloop's goroutine runtime: the whole public interface.
 *
 * Python-agnostic C (no Python.h).  A goroutine (gl_g) is a function running
 * on a native stack of its own.  A thread ("M", in Go's words) starts out on
 * its own stack, g0, and may resume goroutines; a goroutine runs until it
 * parks or returns, and control goes back to whoever resumed it (its parent):
 *
 *     g0 --gl_resume(g)--> g runs ... gl_park() --> back in g0's gl_resume
 *     g0 --gl_resume(g)--> g continues after gl_park ... returns --> g0
 *
 * A goroutine holds a stack only while it is started and not finished: the
 * stack is taken from a cache (stack.c) on first resume and given back when
 * its function returns.  The embedder owns the gl_g memory; the runtime never
 * allocates or frees it.  A goroutine belongs to the thread that first
 * resumed it; resuming it from another thread is refused.
 *
 * Files: gobuf.h + asm_*.S (the switch), stack.c (stacks and their cache),
 * proc.c (goroutine lifecycle), overflow.c (the guard-page fatal message),
 * sysmon.c (the monitor thread that asks for long steps to be preempted).
 */
#ifndef GOLOOP_RUNTIME_H
#define GOLOOP_RUNTIME_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include "gobuf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors --------------------------------------------------------- */
enum {
    GL_OK = 0,
    GL_EDEAD = 1,      /* the goroutine has finished */
    GL_ERUNNING = 2,   /* it is running (it, or a goroutine it resumed) */
    GL_ETHREAD = 3,    /* it belongs to another thread */
    GL_ENOTG = 4,      /* gl_park called on g0, outside any goroutine */
    GL_ENOMEM = 5,     /* no stack could be mapped */
    GL_EINVAL = 6,     /* bad argument (stack size out of range) */
    GL_EUNSUPPORTED = 7/* this platform has no switch assembly */
};
const char *gl_strerror(int err);

/* ---- stacks (stack.c) ------------------------------------------------ */
#define GL_STACK_MIN   (16u * 1024u)          /* usable bytes */
#define GL_STACK_MAX   (1024u * 1024u * 1024u)
#define GL_STACK_DEFAULT (8u * 1024u * 1024u)  /* what a thread gets */

typedef struct gl_stack {
    uintptr_t lo;              /* lowest usable address (guard page below) */
    uintptr_t hi;              /* one past the highest usable address */
    size_t size;               /* usable bytes, page multiple */
    uintptr_t low_water;       /* deepest sp seen at a switch (trim hint) */
    struct gl_stack *next;     /* link in the cache */
} gl_stack;

/* Take a stack of `size` usable bytes (a page multiple) from the cache, or
 * map one.  NULL when mmap fails. */
gl_stack *gl_stack_get(size_t size);
/* Give a stack back; it is trimmed if it was used deeply, then cached or
 * unmapped.  The caller must no longer be running on it. */
void gl_stack_put(gl_stack *s);
/* Round `size` up to pages and check its range: GL_OK or GL_EINVAL. */
int gl_stack_size_normalize(size_t size, size_t *out);
int gl_set_default_stack_size(size_t size);
size_t gl_default_stack_size(void);
/* How many stacks the cache keeps (default 64); 0 disables it.  Stacks over
 * the new limit are unmapped. */
void gl_set_stack_cache_limit(size_t n);
/* Bytes at the top of a cached stack left resident; deeper use is returned
 * to the OS with MADV_DONTNEED when the stack is put back (default 64 KiB). */
void gl_set_stack_trim_keep(size_t bytes);
size_t gl_page_size(void);

/* ---- goroutines (proc.c) --------------------------------------------- */
typedef enum {
    GL_G_IDLE = 0,     /* initialized, never resumed */
    GL_G_RUNNING,      /* running, or suspended while a goroutine it
                          resumed runs */
    GL_G_PARKED,       /* suspended in gl_park */
    GL_G_DEAD          /* its function returned; stack released */
} gl_gstatus;

typedef struct gl_g {
    gl_gobuf sched;            /* saved context while not running */
    gl_stack *stack;           /* NULL unless started and not finished */
    size_t stack_size;         /* usable bytes it will get */
    void (*fn)(void *);
    void *arg;
    struct gl_g *parent;       /* who resumed it; control returns there */
    gl_gstatus status;
    uint64_t goid;             /* unique, increasing */
    uint64_t owner;            /* id of the thread (M) it belongs to; 0: none */
    const char *label;         /* embedder's name for it in fatal messages */
} gl_g;

/* Prepare g to run fn(arg) on a stack of stack_size bytes (0: the default).
 * GL_OK or GL_EINVAL. */
int gl_g_init(gl_g *g, void (*fn)(void *), void *arg, size_t stack_size);
/* Run g until it parks or returns.  `in` is what its gl_park returns; *out
 * gets what it passed to gl_park (0 when it returned). */
int gl_resume(gl_g *g, uintptr_t in, uintptr_t *out);
/* Suspend the current goroutine and return to its parent, whose gl_resume
 * yields `out`.  *in gets the value of the gl_resume that continues it. */
int gl_park(uintptr_t out, uintptr_t *in);
/* The running goroutine, or NULL on g0. */
gl_g *gl_getg(void);
/* The id of the calling thread, as stored in gl_g.owner. */
uint64_t gl_thread_id(void);
/* Bytes of the current goroutine's stack in use below its top (0 on g0). */
size_t gl_stack_depth(void);

/* ---- statistics ------------------------------------------------------ */
typedef struct gl_stats {
    uint64_t stacks_in_use;
    uint64_t stacks_cached;
    uint64_t stacks_mapped;     /* mmaps done, ever */
    uint64_t stacks_reused;     /* gets served from the cache, ever */
    uint64_t stacks_trimmed;    /* MADV_DONTNEED done on put, ever */
    uint64_t goroutines_started;
    uint64_t goroutines_finished;
} gl_stats;
void gl_get_stats(gl_stats *out);

/* ---- stack overflow (overflow.c) ------------------------------------- */
/* Text appended to the fatal message of a guard-page hit, telling the user
 * how the stack size is set (the embedder knows; the default names
 * gl_set_default_stack_size).  The string must stay valid forever. */
void gl_set_overflow_hint(const char *hint);
/* Install the SIGSEGV/SIGBUS handler (once per process) and an alternate
 * signal stack for the calling thread (once per thread). */
void gl_overflow_arm_thread(void);

/* ---- sysmon (sysmon.c) ---------------------------------------------- */
/* A P is one thread's scheduler as sysmon sees it (Go's p).  Its owner
 * thread marks where each step begins and ends (gl_p_step_begin/end) and
 * when it blocks waiting for I/O (gl_p_poll_enter/exit).  sysmon, one
 * background thread per process, calls p->preempt(p, tick) on its own thread
 * when the step numbered `tick` has run for slice_ns, and again while that
 * same step goes on (after retry_ns, then doubling up to slice_ns); what
 * "preempt" means is the
 * owner's business (the CPython glue makes the interpreter call a handler at
 * its next bytecode boundary).  The fields below the line are sysmon's. */
typedef struct gl_p {
    _Atomic uint64_t tick;         /* steps begun + ended: odd while one runs */
    _Atomic int64_t since;         /* gl_nanotime() when the running step began */
    _Atomic int64_t since_cpu;     /* cpu_clock mode: the owner thread's CPU
                                      time when it began */
    _Atomic int polling;           /* the owner blocks waiting for I/O */
    _Atomic uint64_t polls;        /* gl_p_poll_enter calls */
    int64_t slice_ns;              /* set before gl_sysmon_attach */
    int cpu_slice;                 /* the slice counts the owner thread's CPU
                                      time (cpu_clock), not wall time */
    clockid_t cpu_clock;           /* the owner's CPU clock, for sysmon */
    int64_t retry_ns;
    void (*preempt)(struct gl_p *p, uint64_t tick);
    void *ctx;                     /* the owner's, for preempt */
    /* ---- sysmon's own, under its lock ---- */
    uint64_t requested_tick;       /* the step last asked to stop ... */
    int64_t retry_at;              /* ... and when to ask again */
    int64_t backoff;
    uint64_t seen_polls;           /* polls and polling at the last look */
    int seen_polling;
    int attached;
    struct gl_p *next;
} gl_p;

typedef struct gl_sysmon_stats {
    uint64_t wakeups;              /* sysmon woke up (timer or signal) */
    uint64_t requests;             /* p->preempt calls */
    uint64_t deep_sleeps;          /* times it slept until woken: no P busy */
} gl_sysmon_stats;

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t gl_nanotime(void);
/* The calling thread's CPU time in nanoseconds. */
int64_t gl_thread_cputime(void);
/* Make p's slice count its owner's CPU time instead of wall time (call on
 * the owner's thread, before gl_sysmon_attach): GL_OK or GL_EINVAL. */
int gl_p_use_cpu_time(gl_p *p);
/* Fill in p for gl_sysmon_attach: slice and first retry in ns (retry 0:
 * 50 µs), and the preempt callback. */
void gl_p_init(gl_p *p, int64_t slice_ns, int64_t retry_ns,
               void (*preempt)(gl_p *p, uint64_t tick), void *ctx);
/* Start watching p (starting sysmon on first use): GL_OK, GL_EINVAL (slice
 * not positive, or p already attached) or GL_ENOMEM (no thread). */
int gl_sysmon_attach(gl_p *p);
/* Stop watching p; once this returns sysmon no longer touches p. */
void gl_sysmon_detach(gl_p *p);
/* End sysmon's thread, keeping the attached Ps (their steps go unwatched),
 * and start it again: around a fork, so that no thread of ours runs at it.
 * Resume returns GL_OK or GL_ENOMEM (no thread). */
void gl_sysmon_pause(void);
int gl_sysmon_resume(void);
void gl_sysmon_get_stats(gl_sysmon_stats *out);

/* Owner-side marks: a few relaxed/release stores, no lock, no syscall —
 * except gl_p_poll_exit, which wakes sysmon if it sleeps until woken. */
static inline void gl_p_step_begin(gl_p *p, int64_t now)
{
    /* One writer: a load and a store, not a locked read-modify-write. */
    uint64_t t = atomic_load_explicit(&p->tick, memory_order_relaxed);
    atomic_store_explicit(&p->since, now, memory_order_relaxed);
    if (p->cpu_slice)   /* a system call: only in that mode */
        atomic_store_explicit(&p->since_cpu, gl_thread_cputime(), memory_order_relaxed);
    atomic_store_explicit(&p->tick, t + 1, memory_order_release);
}
static inline void gl_p_step_end(gl_p *p)
{
    uint64_t t = atomic_load_explicit(&p->tick, memory_order_relaxed);
    atomic_store_explicit(&p->tick, t + 1, memory_order_release);
}
void gl_p_poll_enter(gl_p *p);
void gl_p_poll_exit(gl_p *p);

/* ---- internal, called from assembly ---------------------------------- */
__attribute__((noreturn)) void gl_goentry(gl_g *g);
__attribute__((noreturn)) void gl_goentry_returned(void);
__attribute__((noreturn)) void gl_mcall_returned(void);
__attribute__((noreturn)) void gl_fatal(const char *msg);

#ifdef __cplusplus
}
#endif
#endif /* GOLOOP_RUNTIME_H */
