/*
 * schedtrace.h — the scheduler trace (schedtrace.c) and the per-loop
 * counters it prints, which goloop.stats(loop) reports too.
 *
 * A loop (csrc/loop/loop.c) owns one gl_trace_loop.  Its thread updates the
 * counters and publishes the gauges with relaxed atomic stores (a plain
 * store on x86-64 and AArch64: one writer, the loop's thread, holding the
 * GIL); the trace thread reads them without the GIL while the loop is
 * registered (while run_forever runs).  Counters only grow: what
 * goloop.stats(loop, reset=True) resets is a baseline the loop keeps (its
 * `base_*`, under the GIL), so the trace's per-period differences never go
 * backwards.
 */
#ifndef GOLOOP_SCHEDTRACE_H
#define GOLOOP_SCHEDTRACE_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct gl_trace_loop {
    /* Written by the loop's thread; read by the trace thread. */
    _Atomic uint64_t steps;          /* task steps run, each stretch of a
                                        preempted one counted */
    _Atomic uint64_t callbacks;      /* plain callbacks run */
    _Atomic uint64_t preemptions;    /* stretches of its steps that ended
                                        preempted */
    _Atomic uint64_t polls;          /* waits for I/O that may block, ended */
    _Atomic int polling;             /* in such a wait now */
    _Atomic int64_t period_longest_ns;  /* longest stretch since the trace's
                                        last line (the trace swaps in 0) */
    _Atomic int64_t ready, timers, fds, preempted;   /* gauges, published
                                        while the trace runs (gl_trace_on) */
    /* Set when registered. */
    uint64_t id;                     /* the loop's number, from 1 */
    long tid;                        /* its thread's id (gettid) */
    /* The trace thread's own (under its mutex). */
    uint64_t seen_steps, seen_callbacks, seen_preemptions, seen_polls;
    int64_t progress_seen_at;        /* when it last saw the loop finish a
                                        step, a callback or a wait, or wait */
    struct gl_trace_loop *next;
} gl_trace_loop;

/* The next loop number (under the GIL). */
uint64_t gl_trace_next_id(void);
/* A loop starts / stops running (its run_forever), on its thread: the trace
 * thread starts with the first loop if a period is set, and ends with the
 * last.  Unregistering a loop that is not registered does nothing. */
void gl_trace_register(gl_trace_loop *l);
void gl_trace_unregister(gl_trace_loop *l);
/* Is the trace thread running (the loops then publish their gauges)? */
extern _Atomic int gl_trace_on;
/* Call fn(l, arg) for each running loop (under the trace's mutex: fn must
 * not register or unregister); returns how many. */
int64_t gl_trace_foreach(void (*fn)(gl_trace_loop *l, void *arg), void *arg);
/* Resident set size in bytes (/proc/self/statm), or -1. */
int64_t gl_trace_rss(void);
/* _schedtrace_configure, _schedtrace_pause/_resume/_forget (fork hooks):
 * needs Python.h included first. */
extern PyMethodDef gl_schedtrace_methods[];

#endif /* GOLOOP_SCHEDTRACE_H */
