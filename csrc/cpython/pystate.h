/*
 * pystate.h — the interpreter state that belongs to a stack, saved and
 * restored on every goroutine switch (CPython 3.11 to 3.15).
 *
 * CPython keeps in its PyThreadState a few fields that describe "the stack
 * the thread is running on": the innermost Python frame, the recursion
 * counters, the frame data stack (where _PyInterpreterFrames live), the
 * exception-handling stack behind sys.exc_info(), the current contextvars
 * Context, and the trashcan nesting.  A thread running several goroutines has
 * several such stacks, so each switch saves these fields from the thread
 * state into the stack being left (a gl_pystate that lives on that very
 * stack, in the frame of the function that switches) and restores the ones
 * of the stack being entered.  Everything else in the thread state (trace
 * functions, the current exception being raised, thread id, dict) belongs to
 * the thread and is shared.
 *
 * Tracing is the thread's, but on 3.12+ switching it on (sys.settrace,
 * sys.setprofile, sys.monitoring.set_events) also instruments the bytecode
 * of the frames executing at that moment -- found by walking the running
 * stack only.  A suspended stack's frames miss that, and would run on
 * uninstrumented for the rest of their call (no line events after park()
 * returns, say).  So each saved state records sys.monitoring's version, and
 * a restore that finds it changed instruments the code of the stack's
 * frames then (gl_pystate_instrument_stack).  3.11 has one flag instead,
 * cframe->use_tracing, carried across switches.
 *
 *   role            3.11                  3.12           3.13     3.14, 3.15
 *   current frame   cframe (+use_tracing) cframe         current_frame
 *   Python depth    recursion_remaining   py_recursion_remaining
 *   C stack         (shared counter)      c_recursion_remaining   c_stack_*
 *   data stack      datastack_chunk/top/limit
 *   exceptions      exc_info
 *   contextvars     context (+ context_ver)
 *   trashcan        trash_delete_*        trash.*        delete_later
 *   JIT             -                     -              -        current_executor
 *                                                          (3.15: + jit_exit)
 *   free-threading  -                     -              critical_section
 *
 * C stack on 3.14+: CPython checks it by address — c_stack_top, _soft_limit
 * and _hard_limit in the internal _PyThreadStateImpl, set for the thread's
 * own stack — and a goroutine's stack lies elsewhere in memory, where those
 * checks would either never fire (a guard-page SIGSEGV instead of a
 * RecursionError) or always fire (a fatal "stack overflow").  So each
 * goroutine gets limits for its own stack (PyUnstable_ThreadState_-
 * SetStackProtection, which knows CPython's margins), and the three fields
 * are saved and restored with the rest (pyinternal.c reads them: they are
 * internal).  Before 3.14 a C-level depth counter did that job, given a
 * budget from the goroutine's stack size.
 *
 * 3.15 ends every thread's chain of frames at a sentinel, ts->base_frame
 * (profilers check that a chain is complete), so a goroutine's chain starts
 * from it too; and the remote profilers' cache of the last frame they saw
 * (last_profiled_frame) is dropped at each switch, since the frame it names
 * may belong to another stack.
 *
 * A new goroutine starts with fresh state (gl_pystate_enter_fresh): no frame,
 * an empty exception stack of its own, C-stack limits or a recursion budget
 * for its own stack, its own contextvars Context, and a frame data stack
 * taken from a small cache of root chunks (allocating one costs an mmap
 * otherwise).  When it finishes, gl_pystate_exit frees what it allocated.
 *
 * Only this header, pystate.c and pyinternal.c know the layout of
 * PyThreadState; the rest of the glue sees gl_pystate as an opaque value to
 * save and restore.
 */
#ifndef GOLOOP_PYSTATE_H
#define GOLOOP_PYSTATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Free-threaded builds keep more per-stack state (c_stack_refs, deferred
 * references in suspended frames that the GC must see) than goloop saves. */
#if PY_MAJOR_VERSION == 3 && PY_MINOR_VERSION >= 11 && PY_MINOR_VERSION <= 15 \
        && !defined(Py_GIL_DISABLED)
#  define GL_PY_SUPPORTED 1
#else
#  define GL_PY_SUPPORTED 0
#endif

#if GL_PY_SUPPORTED

#define GL_PY_MINOR PY_MINOR_VERSION

#if GL_PY_MINOR >= 14
/* The thread state's C-stack limits (3.14+), saved per stack. */
typedef struct gl_cstack {
    uintptr_t top, soft_limit, hard_limit;
} gl_cstack;
/* pyinternal.c: read and write them in ts. */
void gl_cstack_save(PyThreadState *ts, gl_cstack *c);
void gl_cstack_restore(PyThreadState *ts, const gl_cstack *c);
/* The smallest stack CPython gives limits to (three margins). */
size_t gl_cstack_min_size(void);
#endif

typedef struct gl_pystate {
#if GL_PY_MINOR >= 13
    struct _PyInterpreterFrame *current_frame;
#else
    _PyCFrame *cframe;
#endif
#if GL_PY_MINOR == 11
    int recursion_depth;             /* limit - remaining (see restore) */
#else
    int py_recursion_depth;          /* limit - remaining (see restore) */
#endif
#if GL_PY_MINOR == 12 || GL_PY_MINOR == 13
    int c_recursion_remaining;
#elif GL_PY_MINOR >= 14
    gl_cstack cstack;
    PyObject *current_executor;
    uintptr_t critical_section;
#endif
#if GL_PY_MINOR >= 15
    struct _PyExitData *jit_exit;
    struct _PyInterpreterFrame *base_frame;  /* the thread's sentinel, which
                                        ends the chain: its address only, for
                                        gl_pystate_traverse (pyinternal.c) */
#endif
    int recursion_headroom;
    int tracing;
    _PyStackChunk *datastack_chunk;
    PyObject **datastack_top;
    PyObject **datastack_limit;
    _PyErr_StackItem *exc_info;
    PyObject *context;               /* owned while saved */
#if GL_PY_MINOR == 11
    int trash_delete_nesting;
    PyObject *trash_delete_later;
#elif GL_PY_MINOR == 12
    struct _py_trashcan trash;
#else
    PyObject *delete_later;
#endif
#if GL_PY_MINOR >= 12
    uint64_t monitoring_version;     /* sys.monitoring's, when saved */
#endif
} gl_pystate;

/* Per-goroutine structures the thread state points into while the goroutine
 * runs; they live in the goroutine's entry frame, on its own stack. */
typedef struct gl_pystate_root {
#if GL_PY_MINOR <= 12
    _PyCFrame cframe;                /* bottom of its chain of C frames */
#endif
    _PyErr_StackItem exc_item;       /* bottom of its exception stack */
} gl_pystate_root;

/* Root data-stack chunks kept for reuse by new goroutines. */
#define GL_CHUNK_CACHE_MAX 64
typedef struct gl_chunk_cache {
    _PyStackChunk *chunks[GL_CHUNK_CACHE_MAX];
    int count;
} gl_chunk_cache;

/* Visit the references held by the Python frames saved in st, a parked
 * stack's state (pyinternal.c says which): for its owner's tp_traverse. */
int gl_pystate_traverse(const gl_pystate *st, visitproc visit, void *arg);

#if GL_PY_MINOR >= 12
/* sys.monitoring's version (pyinternal.c): changes whenever the events
 * enabled by sys.settrace, sys.setprofile or sys.monitoring change. */
uint64_t gl_monitoring_version(PyThreadState *ts);
/* pyinternal.c: queue func as a pending call of interp's, which the
 * thread of `target` runs at its next bytecode boundary if it holds the
 * GIL then (or, 3.13+, whenever it next checks its eval breaker) -- or
 * another thread does, if it checks first (0, or -1: the queue is full);
 * and, from such a call about to park, give up the thread's claim on the
 * queue (preempt.c). */
int gl_py_post_call(PyInterpreterState *interp, PyThreadState *target, int (*func)(void *));
void gl_py_release_pending_claim(PyThreadState *ts);
/* Bring the code of the running stack's frames up to date with the
 * events enabled now (pystate.c). */
void gl_pystate_instrument_stack(PyThreadState *ts);
#endif

#if GL_PY_MINOR == 11
/* pyinternal.c: make the GIL's holder drop it soon, as take_gil does after
 * waiting a switch interval (the tracer thread, preempt.c). */
void gl_py_ask_for_gil(PyInterpreterState *interp);
#endif

static inline void
gl_pystate_save(PyThreadState *ts, gl_pystate *st)
{
#if GL_PY_MINOR >= 13
    st->current_frame = ts->current_frame;
#else
    st->cframe = ts->cframe;
#endif
#if GL_PY_MINOR == 11
    st->recursion_depth = ts->recursion_limit - ts->recursion_remaining;
#else
    st->py_recursion_depth = ts->py_recursion_limit - ts->py_recursion_remaining;
#endif
#if GL_PY_MINOR == 12 || GL_PY_MINOR == 13
    st->c_recursion_remaining = ts->c_recursion_remaining;
#elif GL_PY_MINOR >= 14
    gl_cstack_save(ts, &st->cstack);
    st->current_executor = ts->current_executor;
    st->critical_section = ts->critical_section;
#endif
#if GL_PY_MINOR >= 15
    st->jit_exit = ts->jit_exit;
    st->base_frame = ts->base_frame;
#endif
    st->recursion_headroom = ts->recursion_headroom;
    st->tracing = ts->tracing;
    st->datastack_chunk = ts->datastack_chunk;
    st->datastack_top = ts->datastack_top;
    st->datastack_limit = ts->datastack_limit;
    st->exc_info = ts->exc_info;
    st->context = ts->context;       /* the reference moves into st */
    ts->context = NULL;
#if GL_PY_MINOR == 11
    st->trash_delete_nesting = ts->trash_delete_nesting;
    st->trash_delete_later = ts->trash_delete_later;
#elif GL_PY_MINOR == 12
    st->trash = ts->trash;
#else
    st->delete_later = ts->delete_later;
#endif
#if GL_PY_MINOR >= 12
    st->monitoring_version = gl_monitoring_version(ts);
#endif
}

/* Restore st into ts.  Whatever ts->context held must have been moved out
 * (by gl_pystate_save or gl_pystate_exit) before. */
static inline void
gl_pystate_restore(PyThreadState *ts, const gl_pystate *st)
{
#if GL_PY_MINOR >= 13
    ts->current_frame = st->current_frame;
#elif GL_PY_MINOR == 12
    ts->cframe = st->cframe;
#else
    /* sys.settrace() updates only the running stack's cframe->use_tracing;
     * carry it over so a suspended stack sees tracing switched on. */
    uint8_t use_tracing = ts->cframe->use_tracing;
    ts->cframe = st->cframe;
    ts->cframe->use_tracing = use_tracing;
#endif
    /* The Python recursion count is kept as a depth, as CPython's own
     * sys.setrecursionlimit() does for every thread: a limit changed while
     * this stack was suspended applies to it with its depth intact.  (The C
     * count is a budget from the stack size and needs no such care.) */
#if GL_PY_MINOR == 11
    ts->recursion_remaining = ts->recursion_limit - st->recursion_depth;
#else
    ts->py_recursion_remaining = ts->py_recursion_limit - st->py_recursion_depth;
#endif
#if GL_PY_MINOR == 12 || GL_PY_MINOR == 13
    ts->c_recursion_remaining = st->c_recursion_remaining;
#elif GL_PY_MINOR >= 14
    gl_cstack_restore(ts, &st->cstack);
    ts->current_executor = st->current_executor;
    ts->critical_section = st->critical_section;
#endif
#if GL_PY_MINOR >= 15
    ts->jit_exit = st->jit_exit;
    ts->last_profiled_frame = NULL;
    ts->last_profiled_frame_seq++;
#endif
    ts->recursion_headroom = st->recursion_headroom;
    ts->tracing = st->tracing;
    ts->datastack_chunk = st->datastack_chunk;
    ts->datastack_top = st->datastack_top;
    ts->datastack_limit = st->datastack_limit;
    ts->exc_info = st->exc_info;
    ts->context = st->context;       /* the reference moves back */
    ts->context_ver++;
#if GL_PY_MINOR == 11
    ts->trash_delete_nesting = st->trash_delete_nesting;
    ts->trash_delete_later = st->trash_delete_later;
#elif GL_PY_MINOR == 12
    ts->trash = st->trash;
#else
    ts->delete_later = st->delete_later;
#endif
#if GL_PY_MINOR >= 12
    /* Events switched on while this stack was suspended instrumented only
     * the code of the stack running then (3.12+): catch up. */
    if (gl_monitoring_version(ts) != st->monitoring_version)
        gl_pystate_instrument_stack(ts);
#endif
}

/* Set ts up for a goroutine's first run on a fresh stack, [stack_lo,
 * stack_lo + stack_size): no frames, an empty exception stack, `context`
 * (new reference taken; NULL: a new empty Context on first use), a C
 * recursion budget of `c_budget` levels (before 3.14) or C-stack limits for
 * that stack (3.14+).  -1 with an exception set if CPython refuses them. */
int gl_pystate_enter_fresh(PyThreadState *ts, gl_pystate_root *root,
                           PyObject *context, void *stack_lo, size_t stack_size,
                           int c_budget, gl_chunk_cache *cache);

/* The goroutine's function has returned: release its data stack and its
 * context, leaving ts ready for gl_pystate_restore of the parent. */
void gl_pystate_exit(PyThreadState *ts, gl_pystate_root *root,
                     gl_chunk_cache *cache);

/* Free every cached chunk (module teardown). */
void gl_chunk_cache_clear(gl_chunk_cache *cache);

/* C stack bytes one C-mediated recursion level costs on this version; the
 * recursion budget of a goroutine is derived from it (before 3.14). */
size_t gl_pystate_bytes_per_c_level(void);

#endif /* GL_PY_SUPPORTED */

#if GL_PY_SUPPORTED
/* ---- exceptions as single objects on every version ------------------- */

/* Take the exception being raised (new reference, NULL if none). */
static inline PyObject *
gl_err_take(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise exc (reference stolen; NULL clears). */
static inline void
gl_err_give(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *type = Py_NewRef((PyObject *)Py_TYPE(exc));
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(type, exc, tb);
#endif
}

/* A frame object for the innermost frame saved in st (new reference, or
 * None).  The public PyEval_GetFrame() materializes frame objects only for
 * the running stack, so point the thread state at st's frames for the
 * duration of that call. */
static inline PyObject *
gl_pystate_frame_object(PyThreadState *ts, const gl_pystate *st)
{
    PyObject *f;
#if GL_PY_MINOR >= 13
    struct _PyInterpreterFrame *cur = ts->current_frame;
    ts->current_frame = st->current_frame;
    f = (PyObject *)PyEval_GetFrame();
    ts->current_frame = cur;
#else
    _PyCFrame *cur = ts->cframe;
    if (st->cframe == NULL)
        return Py_NewRef(Py_None);
    ts->cframe = st->cframe;
    f = (PyObject *)PyEval_GetFrame();
    ts->cframe = cur;
#endif
    return Py_NewRef(f ? f : Py_None);
}
#endif

#endif /* GOLOOP_PYSTATE_H */
