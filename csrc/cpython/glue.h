/*
 * glue.h — what the files of goloop._goloop share: the module state and the
 * Goroutine object.
 *
 *   module.c     module definition, state, module-level functions
 *   goroutine.c  the Goroutine type: run a Python callable on a goroutine,
 *                resume/park/throw, unwinding when collected, the registry
 *   preempt.c    preemption of a step that ran past its time slice
 *   locks.c      counting the threading locks a step holds (never parked
 *                while it holds one)
 *   greenlets.c  a task whose steps use greenlets keeps its worker's stack
 *   pystate.[ch] the per-stack interpreter state saved on each switch
 *   pyinternal.c what is read from CPython's internal structures
 *
 * The glue knows CPython and the runtime; the event loop's core, which
 * knows asyncio, sits above it in csrc/loop (core.h).
 */
#ifndef GOLOOP_GLUE_H
#define GOLOOP_GLUE_H

#include "pystate.h"
#include "runtime.h"

#include <pthread.h>

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

/* Smallest stack a Python goroutine may have: room for the entry frames,
 * the reserve and a useful recursion budget; 64 KiB, or from 3.14 what
 * CPython asks of a stack if that is more (96 KiB on a debug build, whose
 * stack margins are twice a release build's).  goroutine.c. */
size_t gl_py_stack_min(void);

/* C stack kept out of a goroutine's recursion budget: its entry frames, the
 * C calls between recursion checks, signal frames (an xsave area alone can
 * take 3 KiB) — plus the levels of headroom CPython allows for handling a
 * RecursionError.  See c_budget() in goroutine.c. */
#define GL_STACK_RESERVE (32 * 1024)
#define GL_HEADROOM_LEVELS 60

typedef struct GoroutineObject GoroutineObject;

typedef struct {
    PyTypeObject *goroutine_type;
    PyTypeObject *loop_core_type;    /* LoopCore (csrc/loop/loop.c) */
    PyTypeObject *poller_type;       /* Poller (csrc/loop/poller.c) */
    PyTypeObject *socket_transport_type;    /* SocketTransportCore (csrc/loop/stream.c) */
    PyTypeObject *datagram_transport_type;  /* DatagramTransportCore (datagram.c) */
    PyTypeObject *read_pipe_transport_type; /* ReadPipeTransportCore (pipe.c) */
    PyObject *goroutine_error;       /* GoroutineError(RuntimeError) */
    PyObject *goroutine_exit;        /* GoroutineExit(BaseException) */
    PyObject *unkillable;            /* list: parked goroutines that could
                                        not be unwound; kept alive forever */
    PyObject *str_qualname;          /* interned "__qualname__" */
    PyObject *str_idle;              /* interned "idle" */
    PyObject *str_append;            /* interned "append", "popleft" */
    PyObject *str_popleft;
    PyObject *step_ready;            /* sentinels a step worker parks with */
    PyObject *step_done;
    PyObject *step_worker;           /* the worker function (builtin) */
    PyObject *step_pool;             /* threading.local with .idle: list */
    PyObject *step_preempted;        /* what a preempted worker parks with */
    PyObject *step_awaiting;         /*   one waiting in await_() (await.c) */
    PyObject *fut_waiter_type;       /* the C Task type, whose _fut_waiter */
    Py_ssize_t fut_waiter_offset;    /*   is at this offset (await.c) */
    uint64_t awaits;                 /* waits in await_() */
    uintptr_t step_raised;           /* address of the last exception a step
                                        raised (steps.c raised_by_a_step) */
    /* preemption (preempt.c) */
    struct gl_preempting *preempting;  /* the threads whose loops sysmon
                                        watches (a list, under the GIL);
                                        each finds its own through a
                                        thread-local (preempt.c) */
    _Atomic uint64_t withheld;       /* requests held back for a wakeup fd */
    PyObject *urg_previous;          /* SIGURG handler we stand in front of */
    PyObject *atomic_var;            /* ContextVar: inside goloop.atomic() */
    PyObject *base_codes;            /* code objects steps start from */
    PyObject *base_only;             /* module-name prefixes (tuples of str) */
    PyObject *never_preempt;         /*   see preemptible() in preempt.c */
    PyObject *library_files;         /* dict: co_filename -> bool, what
                                        is_library_file() answered */
    PyObject *is_library_file;       /* _preempt.is_library_file */
    PyObject *awaits_at;             /* _preempt.awaits_at */
    PyObject *must_cancel_type;      /* the C Task type, whose _must_cancel */
    Py_ssize_t must_cancel_offset;   /*   is this bit of the unsigned int */
    unsigned must_cancel_mask;       /*   at this offset (preempt.c) */
    int take_back_cancels;           /* preempt.c: cancel() while parked */
    PyObject *enter_task, *leave_task;   /* asyncio.tasks._enter/_leave_task */
    PyObject *current_task;          /* asyncio.current_task */
    PyObject *str_greenlet;          /* interned "greenlet" */
    Py_ssize_t modules_seen;         /* len(sys.modules) at greenlets.c's last look */
    int greenlet_found;              /* greenlet is (or was) in sys.modules */
    PyTypeObject *lock_tracker_type; /* locks.c */
    int unsafe_locks, unsafe_greenlets;  /* tests' controls: preempt while
                                            holding locks / do not pin / */
    int unsafe_libraries;                /*   preempt libraries anywhere */
    uint64_t steps, preemptions, declined, deferred;
    uint64_t held_back;              /* steps that waited for their task's
                                        preempted step (steps.c) */
    int64_t longest_step_ns;
    GoroutineObject *registry;       /* started, unfinished goroutines */
    Py_ssize_t registry_size;
    gl_chunk_cache chunks;
    struct gl_core *core;            /* the loop core's view of asyncio
                                        (csrc/loop/core.h), once set up */
    struct gl_transports *transports; /* the transports' (csrc/loop/transport.c) */
} gl_module_state;

struct GoroutineObject {
    PyObject_HEAD
    gl_g g;
    gl_module_state *state;          /* borrowed: the type keeps the module */
    PyObject *func;                  /* until started */
    PyObject *context;               /* its initial Context, until started */
    PyObject *transfer;              /* value travelling with a switch */
    PyObject *exc;                   /* exception travelling with a switch */
    PyObject *top_frame;             /* innermost frame while parked, made
                                        on demand from `saved` */
    gl_pystate *saved;               /* its saved state while parked (on
                                        its own stack) */
    PyObject *name;                  /* str, for repr and fatal messages */
    _PyErr_StackItem *root_exc;      /* bottom of its exception stack (on
                                        its own stack) while started */
    int step_worker;                 /* an event-loop step worker (steps.c):
                                        (1) on every resume its exception
                                        stack is chained below the
                                        resumer's, so sys.exc_info() and
                                        __context__ in a task step see what
                                        the loop's runner is handling, as on
                                        stock asyncio (plain goroutines stay
                                        isolated; the link is stale while
                                        parked, when nothing walks it);
                                        (2) user code in a step may not
                                        park() it: steps suspend by await */
    PyObject *step_handle;           /* step worker: the Handle of the step
                                        in flight (running or preempted) */
    PyObject *steps_after;           /* step worker: list of the same task's
                                        later steps, which came due while
                                        this one was preempted (steps.c) */
    PyObject *cancels_taken;         /* step worker: list of tasks whose
                                        cancel() came while the step was
                                        parked, given back when it has
                                        yielded (preempt.c), or NULL */
    int64_t step_ran_ns;             /* step worker: time its step in flight
                                        has run, over all its stretches */
    int64_t stretch_began;           /*   when its current stretch began (ns) */
    Py_ssize_t locks_held;           /* threading locks taken and not yet
                                        released in this step (locks.c) */
    int preempt_deferred;            /* a preemption was declined for
                                        locks_held: ask again at 0 */
    int greenlet_used;               /* step worker: greenlets switched in
                                        this step (1), or perhaps, untraced
                                        (2): see greenlets.c */
    PyObject *greenlets;             /* list of weakrefs: the greenlets it
                                        switched, while it may be pinned */
    int awaiting;                    /* step worker: parked in await_() */
    PyObject *awaited;               /*   on this iterator (borrowed: await.c
                                        holds it meanwhile), for dumps */
    int unwinding;                   /* being resumed with GoroutineExit
                                        by tp_finalize: do not park again */
    PyObject *weakreflist;
    GoroutineObject *reg_prev, *reg_next;
};

extern PyType_Spec gl_goroutine_spec;

/* Stack bytes that give a goroutine a C recursion budget of `levels`. */
size_t gl_goroutine_stack_for_levels(int levels);
/* g.resume(value): new reference, or NULL with an exception set. */
PyObject *gl_goroutine_resume(GoroutineObject *self, PyObject *value);
/* g.throw(exc) for an exception instance (borrowed): as resume(). */
PyObject *gl_goroutine_throw(GoroutineObject *self, PyObject *exc);
/* Goroutine(func, name=name) (new reference). */
GoroutineObject *gl_goroutine_create(gl_module_state *st, PyObject *func,
                                     const char *name, size_t stack_size);

/* csrc/loop/steps.c: module functions and state; the task whose step `handle` runs
 * (its callback's __self__; new reference, or NULL with an exception). */
PyObject *gl_step_task(PyObject *handle);
extern PyMethodDef gl_steps_methods[];
int gl_steps_init(PyObject *module, gl_module_state *st);
int gl_steps_traverse(gl_module_state *st, visitproc visit, void *arg);
void gl_steps_clear(gl_module_state *st);
int gl_steps_stats(gl_module_state *st, PyObject *dict);
/* Continue worker w's step, parked in await_(), giving it `value`; `queue`
 * is its loop's queue of preempted steps.  As run_step(). */
PyObject *gl_step_continue(gl_module_state *st, GoroutineObject *w, PyObject *value,
                           PyObject *queue);
/* csrc/loop/await.c: goloop.await_() */
extern PyMethodDef gl_await_methods[];

/* preempt.c: module functions, state, and the marks steps.c makes around
 * each step (a clock read; the sysmon marks on the preempting thread). */
extern PyMethodDef gl_preempt_methods[];
int gl_preempt_init(PyObject *module, gl_module_state *st);
int gl_preempt_traverse(gl_module_state *st, visitproc visit, void *arg);
void gl_preempt_clear(gl_module_state *st);
int gl_preempt_stats(gl_module_state *st, PyObject *dict);
int64_t gl_preempt_step_begin(gl_module_state *st);
/* Ask again, at the next bytecode boundary, for the preemption of the
 * running step that was declined (locks.c: its last lock released). */
void gl_preempt_request_again(gl_module_state *st);
/* A step worker's step has yielded: give back the cancellations that came
 * while it was parked (w->cancels_taken, not NULL). */
void gl_preempt_deliver_cancels(GoroutineObject *w);
/* For await.c: is the running code inside goloop.atomic() / in a child
 * greenlet (errors count as yes)?; the task a step worker's step runs (new
 * reference); a Task's _must_cancel (-1 on error), and setting it. */
int gl_preempt_inside_atomic(gl_module_state *st);
int gl_preempt_in_child_greenlet(gl_module_state *st);
PyObject *gl_preempt_running_task(gl_module_state *st, PyObject *loop, PyObject *handle);
int gl_preempt_task_must_cancel(gl_module_state *st, PyObject *task);
int gl_preempt_set_task_must_cancel(gl_module_state *st, PyObject *task, int value);
/* ... and returns how long the stretch ran (ns). */
int64_t gl_preempt_step_end(gl_module_state *st, int64_t began);
/* The monotonic clock (ns), or the hint the last step's end left (see
 * preempt.c); gl_preempt_clock_note(st, now) leaves `now` as the hint, and
 * 0 drops it: before anything that may take a while. */
int64_t gl_preempt_clock(gl_module_state *st);
void gl_preempt_clock_note(gl_module_state *st, int64_t now);
/* The loop on the preempting thread blocks waiting for I/O / is back:
 * sysmon sleeps meanwhile. */
void gl_preempt_poll_enter(gl_module_state *st);
void gl_preempt_poll_exit(gl_module_state *st);

/* locks.c: module functions and state. */
extern PyMethodDef gl_locks_methods[];
int gl_locks_init(PyObject *module, gl_module_state *st);
int gl_locks_traverse(gl_module_state *st, visitproc visit, void *arg);
void gl_locks_clear(gl_module_state *st);

/* greenlets.c: start tracing greenlet switches on this thread once greenlet
 * is imported (cheap when nothing changed); should worker w, whose step of
 * `handle` is done, stay with its task (then it is stored there)?; the
 * worker stored on handle's task, if any (new reference; errors cleared). */
int gl_greenlets_watch(gl_module_state *st);
int gl_greenlets_keep(gl_module_state *st, GoroutineObject *w, PyObject *handle);
GoroutineObject *gl_greenlets_pinned_worker(PyObject *handle);
/* Workers of this thread kept by their tasks. */
Py_ssize_t gl_greenlets_pinned(void);

/* module.c: d[key] = an int, for stats(); 0, or -1 with an exception. */
int gl_dict_set_u64(PyObject *d, const char *key, uint64_t v);
int gl_dict_set_i64(PyObject *d, const char *key, int64_t v);

/* park(value=None): the module-level function. */
PyObject *gl_goroutine_park(gl_module_state *st, PyObject *value);
/* The running Goroutine (borrowed) or NULL on the thread's own stack. */
GoroutineObject *gl_goroutine_current(void);
/* list of started, unfinished goroutines. */
PyObject *gl_goroutine_registry_list(gl_module_state *st);

#endif
#endif /* GOLOOP_GLUE_H */
