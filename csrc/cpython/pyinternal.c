/*
 * pyinternal.c — the values the glue reads from CPython's internal
 * structures, kept in a file of their own because reading them needs
 * Py_BUILD_CORE (which changes what Python.h declares) and the internal
 * headers.
 *
 * sys.monitoring's version (3.12+): CPython bumps it whenever the set of
 * enabled events changes (sys.settrace, sys.setprofile and
 * sys.monitoring.set_events all go through it) and instruments the code of
 * the frames running at that moment; pystate.h compares it across a switch
 * to find stacks that were suspended meanwhile.
 *
 * The C-stack limits (3.14+): c_stack_top, c_stack_soft_limit and
 * c_stack_hard_limit of _PyThreadStateImpl, which describe the stack the
 * thread runs on (pystate.h).  Internal fields move between patch releases
 * (3.14.1 added some), so the extension must be built against the headers
 * of the interpreter it runs on, as pip does.
 *
 * The references a parked goroutine's frames hold (all versions), for the
 * Goroutine's tp_traverse.  A stack's Python frames are
 * _PyInterpreterFrames in its frame data stack; a thread's running frames
 * are roots the collector never traverses, but a parked goroutine's are
 * owned by the Goroutine object, as a suspended generator's frame is owned
 * by the generator.  Without visiting them, a cycle through a parked
 * goroutine's locals (an object whose method parked, holding the goroutine
 * in an attribute) is never found unreachable.  The visit must never count
 * a reference the frame does not own (the collector would free an object
 * still in use), and may leave some out (the object is then only kept):
 *   - only frames the thread owns: a generator's or coroutine's frame is
 *     its object's to visit; an entry frame on the C stack, or 3.15's
 *     sentinel, holds nothing;
 *   - the frame object, f_locals, the function and the code (owned);
 *   - the fast locals, cells and free variables (co_nlocalsplus of them),
 *     but not the value stack above them, whose top is not kept up to date
 *     for a frame suspended inside a call (3.11 to 3.13);
 *   - the stack's contextvars Context, which its saved state owns;
 *   - on 3.14+, only stack references that carry a reference count: a
 *     tagged one is borrowed or immortal, and CPython's own frame visit
 *     leaves those out when it counts references.
 */
#define Py_BUILD_CORE 1
#include "pystate.h"

#if GL_PY_SUPPORTED
#  if GL_PY_MINOR >= 14
#    include "internal/pycore_interpframe.h"
#  else
#    include "internal/pycore_frame.h"
#  endif

#if GL_PY_MINOR >= 14
static int
visit_stackref(_PyStackRef ref, visitproc visit, void *arg)
{
    if (PyStackRef_IsNull(ref) || !PyStackRef_RefcountOnObject(ref))
        return 0;
    Py_VISIT(PyStackRef_AsPyObjectBorrow(ref));
    return 0;
}
#  define VISIT_SLOT(slot) \
      do { int r_ = visit_stackref((slot), visit, arg); if (r_) return r_; } while (0)
#else
#  define VISIT_SLOT(slot) Py_VISIT(slot)
#endif

static _PyInterpreterFrame *
innermost_frame(const gl_pystate *st)
{
#if GL_PY_MINOR >= 13
    return st->current_frame;
#else
    return st->cframe != NULL ? st->cframe->current_frame : NULL;
#endif
}

static int
traverse_frame(_PyInterpreterFrame *f, visitproc visit, void *arg)
{
    Py_VISIT(f->frame_obj);
    Py_VISIT(f->f_locals);
#if GL_PY_MINOR == 11
    PyObject *code = (PyObject *)f->f_code;
    Py_VISIT(f->f_func);
    Py_VISIT(code);
#elif GL_PY_MINOR == 12
    PyObject *code = (PyObject *)f->f_code;
    Py_VISIT(f->f_funcobj);
    Py_VISIT(code);
#elif GL_PY_MINOR == 13
    PyObject *code = f->f_executable;
    Py_VISIT(f->f_funcobj);
    Py_VISIT(code);
#else
    PyObject *code = PyStackRef_AsPyObjectBorrow(f->f_executable);
    VISIT_SLOT(f->f_funcobj);
    VISIT_SLOT(f->f_executable);
#endif
    if (code == NULL || !PyCode_Check(code))
        return 0;
    int n = ((PyCodeObject *)code)->co_nlocalsplus;
    for (int i = 0; i < n; i++)
        VISIT_SLOT(f->localsplus[i]);
    return 0;
}

int
gl_pystate_traverse(const gl_pystate *st, visitproc visit, void *arg)
{
    Py_VISIT(st->context);   /* the stack's contextvars Context, owned while saved */
#if GL_PY_MINOR >= 15
    /* Stop short of the thread's sentinel frame, which lives in its thread
     * state: a daemon thread's is freed at exit while the parked stack's
     * Goroutine may still be traversed by the last collection (3.15d's
     * debug allocator made that a segfault). */
    _PyInterpreterFrame *end = st->base_frame;
#else
    _PyInterpreterFrame *end = NULL;
#endif
    for (_PyInterpreterFrame *f = innermost_frame(st); f != NULL && f != end; f = f->previous) {
        if (f->owner != FRAME_OWNED_BY_THREAD)
            continue;
        int r = traverse_frame(f, visit, arg);
        if (r)
            return r;
    }
    return 0;
}
#endif

#if GL_PY_SUPPORTED && GL_PY_MINOR >= 12

#include "internal/pycore_interp.h"
#if GL_PY_MINOR >= 14
#  include "internal/pycore_tstate.h"
#  include "internal/pycore_pythonrun.h"
#endif

uint64_t
gl_monitoring_version(PyThreadState *ts)
{
#if GL_PY_MINOR >= 13
    return (uint64_t)ts->interp->ceval.instrumentation_version;
#else
    return ts->interp->monitoring_version;
#endif
}

#if GL_PY_MINOR >= 14
void
gl_cstack_save(PyThreadState *ts, gl_cstack *c)
{
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    c->top = impl->c_stack_top;
    c->soft_limit = impl->c_stack_soft_limit;
    c->hard_limit = impl->c_stack_hard_limit;
}

void
gl_cstack_restore(PyThreadState *ts, const gl_cstack *c)
{
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    impl->c_stack_top = c->top;
    impl->c_stack_soft_limit = c->soft_limit;
    impl->c_stack_hard_limit = c->hard_limit;
}

size_t
gl_cstack_min_size(void)
{
    return _PyOS_MIN_STACK_SIZE;
}
#endif

#endif

#if GL_PY_SUPPORTED && GL_PY_MINOR >= 12
/* ---- a call on one thread at its next bytecode boundary (preempt.c) ----
 *
 * Pending calls, as CPython runs them (Python/ceval_gil.c):
 *   3.12      _PyEval_AddPendingCall(interp, func, arg, mainthreadonly=0)
 *             queues the call (32 slots, interp->ceval.pending) under
 *             pending->lock and trips the interpreter's eval breaker; the
 *             first thread to check it (_Py_HandlePending, at a bytecode
 *             boundary, with the GIL) runs the queue, marking pending->busy
 *             meanwhile so that no other thread runs it too.
 *   3.13+     the same call, flags 0, queues it (pending->mutex) and sets
 *             _PY_CALLS_TO_DO_BIT in the eval breaker of the thread that
 *             holds the GIL (signal_active_thread); the breaker is per
 *             thread, so setting the bit on a given thread state as well
 *             (_Py_set_eval_breaker_bit: an atomic or) makes that thread
 *             run the queue at its next check even if another thread held
 *             the GIL when the call was queued.  pending->handling_thread
 *             plays busy's part.
 * Whichever thread runs the queue runs the call: the callback itself finds
 * out whether it is on a thread it has business on.  3.11 runs pending
 * calls on the main thread only (make_pending_calls returns at once
 * elsewhere), so none of this is built there. */
#include "internal/pycore_ceval.h"

int
gl_py_post_call(PyInterpreterState *interp, PyThreadState *target, int (*func)(void *))
{
#if GL_PY_MINOR >= 13
    if (_PyEval_AddPendingCall(interp, func, NULL, 0) != _Py_ADD_PENDING_SUCCESS)
        return -1;
    _Py_set_eval_breaker_bit(target, _PY_CALLS_TO_DO_BIT);
    return 0;
#else
    (void)target;
    return _PyEval_AddPendingCall(interp, func, NULL, 0);
#endif
}

/* Called by a pending call about to park its goroutine, on the thread that
 * runs the queue (the GIL held): give up that thread's claim on the queue
 * (3.12's busy, 3.13+'s handling_thread), which the make_pending_calls
 * frame below would otherwise keep for as long as the goroutine is parked
 * -- so that no pending call (no later preemption of this thread's next
 * step, say) ran meanwhile.  Once the goroutine resumes, that frame runs
 * the calls still queued and drops the claim again, harmlessly: only the
 * thread holding the GIL ever holds it. */
void
gl_py_release_pending_claim(PyThreadState *ts)
{
    struct _pending_calls *pending = &ts->interp->ceval.pending;
#if GL_PY_MINOR >= 13
    PyMutex_Lock(&pending->mutex);
    assert(pending->handling_thread == ts);
    if (pending->handling_thread == ts)
        pending->handling_thread = NULL;
    PyMutex_Unlock(&pending->mutex);
#else
    PyThread_acquire_lock(pending->lock, WAIT_LOCK);
    assert(pending->busy);
    pending->busy = 0;
    PyThread_release_lock(pending->lock);
#endif
}
#endif

#if GL_PY_SUPPORTED && GL_PY_MINOR == 11
#include "internal/pycore_interp.h"
#include "internal/pycore_atomic.h"

/* 3.11's ceval_gil.h: what take_gil does when it has waited a switch
 * interval for the GIL (SET_GIL_DROP_REQUEST): the holder drops it at its
 * next eval-breaker check, and take_gil resets both once a waiter has it.
 * Called by the tracer thread (preempt.c) just before it waits for the GIL,
 * so that it gets it at once rather than after 5 ms. */
void
gl_py_ask_for_gil(PyInterpreterState *interp)
{
    _Py_atomic_store_relaxed(&interp->ceval.gil_drop_request, 1);
    _Py_atomic_store_relaxed(&interp->ceval.eval_breaker, 1);
}
#endif
