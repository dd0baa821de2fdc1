/*
 * pystate.h — the interpreter state that belongs to a stack, saved and
 * restored on every goroutine switch (CPython 3.11, 3.12, 3.13).
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
 *   role            3.11                       3.12                  3.13
 *   current frame   cframe (+ use_tracing)     cframe                current_frame
 *   recursion       recursion_remaining        py_/c_recursion_remaining
 *   data stack      datastack_chunk/top/limit  same                  same
 *   exceptions      exc_info                   same                  same
 *   contextvars     context (+ context_ver)    same                  same
 *   trashcan        trash_delete_nesting/later trash.*               delete_later
 *
 * A new goroutine starts with fresh state (gl_pystate_enter_fresh): no frame,
 * an empty exception stack of its own, a recursion budget derived from its C
 * stack size, its own contextvars Context, and a frame data stack taken from
 * a small cache of root chunks (allocating one costs an mmap otherwise).
 * When it finishes, gl_pystate_exit frees what it allocated.
 *
 * Only this header and pystate.c know the layout of PyThreadState (and
 * pyinternal.c the one interpreter field it reads); the rest of the glue
 * sees gl_pystate as an opaque value to save and restore.
 */
#ifndef GOLOOP_PYSTATE_H
#define GOLOOP_PYSTATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#  define GL_PY_SUPPORTED 1
#else
#  define GL_PY_SUPPORTED 0
#endif

#if GL_PY_SUPPORTED

#if PY_VERSION_HEX >= 0x030D0000
#  define GL_PY313 1
#elif PY_VERSION_HEX >= 0x030C0000
#  define GL_PY312 1
#else
#  define GL_PY311 1
#endif

typedef struct gl_pystate {
#ifdef GL_PY313
    struct _PyInterpreterFrame *current_frame;
#else
    _PyCFrame *cframe;
#endif
#ifdef GL_PY311
    int recursion_depth;             /* limit - remaining (see restore) */
#else
    int py_recursion_depth;          /* limit - remaining (see restore) */
    int c_recursion_remaining;
#endif
    int recursion_headroom;
    int tracing;
    _PyStackChunk *datastack_chunk;
    PyObject **datastack_top;
    PyObject **datastack_limit;
    _PyErr_StackItem *exc_info;
    PyObject *context;               /* owned while saved */
#if defined(GL_PY311)
    int trash_delete_nesting;
    PyObject *trash_delete_later;
#elif defined(GL_PY312)
    struct _py_trashcan trash;
#else
    PyObject *delete_later;
#endif
#ifndef GL_PY311
    uint64_t monitoring_version;     /* sys.monitoring's, when saved */
#endif
} gl_pystate;

/* Per-goroutine structures the thread state points into while the goroutine
 * runs; they live in the goroutine's entry frame, on its own stack. */
typedef struct gl_pystate_root {
#ifndef GL_PY313
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

#ifndef GL_PY311
/* sys.monitoring's version (pyinternal.c): changes whenever the events
 * enabled by sys.settrace, sys.setprofile or sys.monitoring change. */
uint64_t gl_monitoring_version(PyThreadState *ts);
/* Bring the code of the running stack's frames up to date with the
 * events enabled now (pystate.c). */
void gl_pystate_instrument_stack(PyThreadState *ts);
#endif

static inline void
gl_pystate_save(PyThreadState *ts, gl_pystate *st)
{
#ifdef GL_PY313
    st->current_frame = ts->current_frame;
#else
    st->cframe = ts->cframe;
#endif
#ifdef GL_PY311
    st->recursion_depth = ts->recursion_limit - ts->recursion_remaining;
#else
    st->py_recursion_depth = ts->py_recursion_limit - ts->py_recursion_remaining;
    st->c_recursion_remaining = ts->c_recursion_remaining;
#endif
    st->recursion_headroom = ts->recursion_headroom;
    st->tracing = ts->tracing;
    st->datastack_chunk = ts->datastack_chunk;
    st->datastack_top = ts->datastack_top;
    st->datastack_limit = ts->datastack_limit;
    st->exc_info = ts->exc_info;
    st->context = ts->context;       /* the reference moves into st */
    ts->context = NULL;
#if defined(GL_PY311)
    st->trash_delete_nesting = ts->trash_delete_nesting;
    st->trash_delete_later = ts->trash_delete_later;
#elif defined(GL_PY312)
    st->trash = ts->trash;
#else
    st->delete_later = ts->delete_later;
#endif
#ifndef GL_PY311
    st->monitoring_version = gl_monitoring_version(ts);
#endif
}

/* Restore st into ts.  Whatever ts->context held must have been moved out
 * (by gl_pystate_save or gl_pystate_exit) before. */
static inline void
gl_pystate_restore(PyThreadState *ts, const gl_pystate *st)
{
#if defined(GL_PY313)
    ts->current_frame = st->current_frame;
#elif defined(GL_PY312)
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
#ifdef GL_PY311
    ts->recursion_remaining = ts->recursion_limit - st->recursion_depth;
#else
    ts->py_recursion_remaining = ts->py_recursion_limit - st->py_recursion_depth;
    ts->c_recursion_remaining = st->c_recursion_remaining;
#endif
    ts->recursion_headroom = st->recursion_headroom;
    ts->tracing = st->tracing;
    ts->datastack_chunk = st->datastack_chunk;
    ts->datastack_top = st->datastack_top;
    ts->datastack_limit = st->datastack_limit;
    ts->exc_info = st->exc_info;
    ts->context = st->context;       /* the reference moves back */
    ts->context_ver++;
#if defined(GL_PY311)
    ts->trash_delete_nesting = st->trash_delete_nesting;
    ts->trash_delete_later = st->trash_delete_later;
#elif defined(GL_PY312)
    ts->trash = st->trash;
#else
    ts->delete_later = st->delete_later;
#endif
#ifndef GL_PY311
    /* Events switched on while this stack was suspended instrumented only
     * the code of the stack running then (3.12+): catch up. */
    if (gl_monitoring_version(ts) != st->monitoring_version)
        gl_pystate_instrument_stack(ts);
#endif
}

/* The innermost Python frame saved in st (for listing a parked goroutine's
 * frames); NULL when the stack has none. */
static inline struct _PyInterpreterFrame *
gl_pystate_frame(const gl_pystate *st)
{
#ifdef GL_PY313
    return st->current_frame;
#else
    return st->cframe ? st->cframe->current_frame : NULL;
#endif
}

/* Set ts up for a goroutine's first run on a fresh stack: no frames, an empty
 * exception stack, `context` (new reference taken; NULL: a new empty Context
 * on first use), a C recursion budget of `c_budget` levels. */
void gl_pystate_enter_fresh(PyThreadState *ts, gl_pystate_root *root,
                            PyObject *context, int c_budget,
                            gl_chunk_cache *cache);

/* The goroutine's function has returned: release its data stack and its
 * context, leaving ts ready for gl_pystate_restore of the parent. */
void gl_pystate_exit(PyThreadState *ts, gl_pystate_root *root,
                     gl_chunk_cache *cache);

/* Free every cached chunk (module teardown). */
void gl_chunk_cache_clear(gl_chunk_cache *cache);

/* C stack bytes one C-mediated recursion level costs on this version; the
 * recursion budget of a goroutine is derived from it. */
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
#ifdef GL_PY313
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
