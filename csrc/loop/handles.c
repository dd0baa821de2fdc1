/*
 * handles.c — asyncio's Handle and TimerHandle, made and run from C.
 *
 * call_soon() returns an asyncio.Handle; making one in Python costs a class
 * call and an __init__ frame, and running it costs Handle._run's frame and
 * Context.run's argument tuple.  The core makes the same objects without
 * either: asyncio's classes keep their state in __slots__, whose member
 * descriptors give each slot's byte offset, so a handle is allocated with
 * the class's tp_alloc and its slots are written directly, as __init__
 * would write them.  Running one enters its context (PyContext_Enter), calls
 * the callback by vectorcall straight from the args tuple, and leaves it.
 *
 * What stays Python: the handles' own methods (cancel, repr, when, ...),
 * which are asyncio's; the report of a callback's exception (Handle._run's
 * exception-handler call, goloop/loop.py) — only on that error path; and a
 * handle of any other class (a subclass, e.g. 3.14's _ThreadSafeHandle),
 * which runs its own _run().
 *
 * Debug mode: a handle records where it was scheduled, as asyncio's do —
 * the stack from the Python frame that called into the core.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <structmember.h>

int
gl_slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);
    if (d == NULL)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type)
             && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok)
        *offset = ((PyMemberDescrObject *)d)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member",
                     type->tp_name, name);
    Py_DECREF(d);
    return ok ? 0 : -1;
}

/* Keep obj in *into if it is what `ok` says it is (`what`: "a class"...). */
static int
take_checked(PyObject *obj, PyObject **into, int ok, const char *what)
{
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "expected %s, got %R", what, obj);
        return -1;
    }
    Py_XSETREF(*into, Py_NewRef(obj));
    return 0;
}

static int
take_type(PyObject *obj, PyTypeObject **into)
{
    return take_checked(obj, (PyObject **)into, PyType_Check(obj), "a class");
}

static int
take_callable(PyObject *obj, PyObject **into)
{
    return take_checked(obj, into, PyCallable_Check(obj), "a callable");
}

static int
take_module(PyObject *obj, PyObject **into)
{
    return take_checked(obj, into, PyModule_Check(obj), "a module");
}

static int
intern_into(PyObject **into, const char *s)
{
    if (*into == NULL)
        *into = PyUnicode_InternFromString(s);
    return *into ? 0 : -1;
}

/* _setup_loop_core(Handle, TimerHandle, ThreadSafeHandle or None, Task,
 *                  PyTask, deque, SelectorKey, report_error, report_slow,
 *                  extract_stack, futures module, tasks module,
 *                  BaseEventLoop) */
int
gl_core_setup(gl_module_state *st, PyObject *args)
{
    PyObject *h, *th, *tsh, *task, *pytask, *deque, *skey, *report, *slow, *extract;
    PyObject *futures, *tasks, *base_loop;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOO:_setup_loop_core", &h, &th, &tsh, &task,
                          &pytask, &deque, &skey, &report, &slow, &extract,
                          &futures, &tasks, &base_loop))
        return -1;
    struct gl_core *c = st->core;
    if (c == NULL) {
        c = PyMem_Calloc(1, sizeof *c);
        if (c == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->core = c;
    }
    if (take_type(h, &c->handle_type) < 0 || take_type(th, &c->timer_type) < 0
            || take_type(task, &c->task_type) < 0
            || take_type(pytask, &c->py_task_type) < 0
            || (tsh != Py_None && take_type(tsh, &c->threadsafe_type) < 0)
            || take_callable(deque, &c->deque_type) < 0
            || take_type(skey, &c->selector_key_type) < 0
            || take_callable(report, &c->report_error) < 0
            || take_callable(slow, &c->report_slow) < 0
            || take_callable(extract, &c->extract_stack) < 0
            || take_module(futures, &c->futures_module) < 0
            || take_module(tasks, &c->tasks_module) < 0
            || take_type(base_loop, &c->base_loop_type) < 0)
        return -1;
    if (c->kw_loop == NULL && (c->kw_loop = Py_BuildValue("(s)", "loop")) == NULL)
        return -1;
    if (!PyType_IsSubtype(c->timer_type, c->handle_type)) {
        PyErr_SetString(PyExc_TypeError, "TimerHandle must subclass Handle");
        return -1;
    }
    PyTypeObject *ht = c->handle_type;
    if (gl_slot_offset(ht, "_callback", &c->off_callback) < 0
            || gl_slot_offset(ht, "_args", &c->off_args) < 0
            || gl_slot_offset(ht, "_cancelled", &c->off_cancelled) < 0
            || gl_slot_offset(ht, "_loop", &c->off_loop) < 0
            || gl_slot_offset(ht, "_source_traceback", &c->off_source_traceback) < 0
            || gl_slot_offset(ht, "_repr", &c->off_repr) < 0
            || gl_slot_offset(ht, "_context", &c->off_context) < 0
            || gl_slot_offset(c->timer_type, "_scheduled", &c->off_scheduled) < 0
            || gl_slot_offset(c->timer_type, "_when", &c->off_when) < 0)
        return -1;
    if (intern_into(&c->str_run, "_run") < 0
            || intern_into(&c->str_selector, "_selector") < 0
            || intern_into(&c->str_select, "select") < 0
            || intern_into(&c->str_process_events, "_process_events") < 0
            || intern_into(&c->str_write_to_self, "_write_to_self") < 0
            || intern_into(&c->str_current_handle, "_current_handle") < 0
            || intern_into(&c->str_slow_callback_duration, "slow_callback_duration") < 0
            || intern_into(&c->str_check_thread, "_check_thread") < 0
            || intern_into(&c->str_check_callback, "_check_callback") < 0
            || intern_into(&c->str_check_closed, "_check_closed") < 0
            || intern_into(&c->str_context, "context") < 0
            || intern_into(&c->str_Future, "Future") < 0
            || intern_into(&c->str_Task, "Task") < 0
            || intern_into(&c->str_task_factory, "_task_factory") < 0
            || intern_into(&c->str_create_future, "create_future") < 0
            || intern_into(&c->str_create_task, "create_task") < 0
            || intern_into(&c->str_add_done_callback, "add_done_callback") < 0
            || intern_into(&c->str_call_soon, "call_soon") < 0
            || intern_into(&c->str_result, "result") < 0
            || intern_into(&c->str_preempted, "_preempted") < 0)
        return -1;
    c->kw_context = PyTuple_Pack(1, c->str_context);
    return c->kw_context ? 0 : -1;
}

int
gl_core_traverse(gl_module_state *st, visitproc visit, void *arg)
{
    struct gl_core *c = st->core;
    if (c == NULL)
        return 0;
    Py_VISIT(c->handle_type);
    Py_VISIT(c->timer_type);
    Py_VISIT(c->threadsafe_type);
    Py_VISIT(c->deque_type);
    Py_VISIT(c->selector_key_type);
    Py_VISIT(c->task_type);
    Py_VISIT(c->py_task_type);
    Py_VISIT(c->step_wrapper_type);
    Py_VISIT(c->report_error);
    Py_VISIT(c->report_slow);
    Py_VISIT(c->extract_stack);
    Py_VISIT(c->futures_module);
    Py_VISIT(c->tasks_module);
    Py_VISIT(c->base_loop_type);
    return 0;
}

void
gl_core_free(gl_module_state *st)
{
    struct gl_core *c = st->core;
    if (c == NULL)
        return;
    st->core = NULL;
    Py_CLEAR(c->handle_type);
    Py_CLEAR(c->timer_type);
    Py_CLEAR(c->threadsafe_type);
    Py_CLEAR(c->deque_type);
    Py_CLEAR(c->selector_key_type);
    Py_CLEAR(c->task_type);
    Py_CLEAR(c->py_task_type);
    Py_CLEAR(c->step_wrapper_type);
    Py_CLEAR(c->report_error);
    Py_CLEAR(c->report_slow);
    Py_CLEAR(c->extract_stack);
    Py_CLEAR(c->futures_module);
    Py_CLEAR(c->tasks_module);
    Py_CLEAR(c->base_loop_type);
    Py_CLEAR(c->kw_loop);
    Py_CLEAR(c->kw_seen);
    Py_CLEAR(c->kw_task);
    Py_CLEAR(c->str_Future);
    Py_CLEAR(c->str_Task);
    Py_CLEAR(c->str_task_factory);
    Py_CLEAR(c->str_create_future);
    Py_CLEAR(c->str_create_task);
    Py_CLEAR(c->str_run);
    Py_CLEAR(c->str_selector);
    Py_CLEAR(c->str_select);
    Py_CLEAR(c->str_process_events);
    Py_CLEAR(c->str_write_to_self);
    Py_CLEAR(c->str_current_handle);
    Py_CLEAR(c->str_slow_callback_duration);
    Py_CLEAR(c->str_check_thread);
    Py_CLEAR(c->str_check_callback);
    Py_CLEAR(c->str_check_closed);
    Py_CLEAR(c->str_context);
    Py_CLEAR(c->str_context_seen);
    Py_CLEAR(c->str_add_done_callback);
    Py_CLEAR(c->str_call_soon);
    Py_CLEAR(c->str_result);
    Py_CLEAR(c->str_preempted);
    Py_CLEAR(c->kw_context);
    while (c->n_free_handles > 0) {
        PyObject *h = c->free_handles[--c->n_free_handles];
        PyObject_GC_Track(h);
        Py_DECREF(h);
    }
    PyMem_Free(c);
}

/* ---- making handles ---------------------------------------------------- */

static void
slot_set(PyObject *obj, Py_ssize_t off, PyObject *value)   /* steals value */
{
    PyObject **p = &GL_SLOT(obj, off);
    PyObject *old = *p;
    *p = value;
    Py_XDECREF(old);
}

int
gl_handle_record_stack(struct gl_core *c, PyObject *handle)
{
    /* The stack from the Python frame that called into the core: what
     * asyncio's handle keeps after call_soon()/call_at() dropped their own
     * frames from it. */
    PyObject *frame = (PyObject *)PyEval_GetFrame();
    PyObject *tb = PyObject_CallOneArg(c->extract_stack, frame ? frame : Py_None);
    if (tb == NULL)
        return -1;
    slot_set(handle, c->off_source_traceback, tb);
    return 0;
}

/* Set a slot that a reused handle may already hold with the same value
 * (False, None): written only when it differs. */
static void
slot_put(PyObject *obj, Py_ssize_t off, PyObject *value)   /* borrowed */
{
    if (GL_SLOT(obj, off) != value)
        slot_set(obj, off, Py_NewRef(value));
}

PyObject *
gl_handle_new(struct gl_core *c, PyObject *loop, int debug, PyObject *callback,
              PyObject *args, PyObject *context, PyObject *when, int *hidden)
{
    assert(PyTuple_Check(args));
    PyTypeObject *tp = when ? c->timer_type : c->handle_type;
    PyObject *ctx = context && context != Py_None ? Py_NewRef(context)
                                                 : PyContext_CopyCurrent();
    if (ctx == NULL)
        return NULL;
    PyObject *h;
    if (hidden != NULL)
        *hidden = 0;
    if (!when && c->n_free_handles > 0) {
        /* Off the collector's lists since it was released (see there). */
        h = c->free_handles[--c->n_free_handles];
        if (hidden != NULL)
            *hidden = 1;
        else
            PyObject_GC_Track(h);
    }
    else if ((h = tp->tp_alloc(tp, 0)) == NULL) {
        Py_DECREF(ctx);
        return NULL;
    }
    /* As Handle.__init__ (and TimerHandle's) write them. */
    slot_set(h, c->off_context, ctx);
    slot_set(h, c->off_loop, Py_NewRef(loop));
    slot_set(h, c->off_callback, Py_NewRef(callback));
    slot_set(h, c->off_args, Py_NewRef(args));
    slot_put(h, c->off_cancelled, Py_False);
    slot_put(h, c->off_repr, Py_None);
    slot_put(h, c->off_source_traceback, Py_None);
    if (when) {
        slot_set(h, c->off_when, Py_NewRef(when));
        slot_set(h, c->off_scheduled, Py_NewRef(Py_False));
    }
    if (debug && gl_handle_record_stack(c, h) < 0) {
        if (hidden != NULL)
            gl_gc_show(h, *hidden);
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

/* The freelist.  A task step's Handle, and most callbacks', is made by
 * call_soon, run once and dropped: reusing the object saves its allocation,
 * its garbage-collector links and its deallocation.  Only an exact Handle
 * that nothing else refers to (not even a weak reference) is kept, its
 * slots cleared and untracked by the collector until it is reused.  Its
 * weak-reference list is at tp_weaklistoffset from the object whatever the
 * offset's sign: from 3.12 asyncio's Handle has a managed one (__weakref__
 * in __slots__ gives a negative offset, into the pre-header), found there
 * as CPython's own _PyObject_GET_WEAKREFS_LISTPTR finds it (3.11–3.15).
 *
 * A kept handle keeps the constants it holds when they are the ones
 * gl_handle_new writes (False, None), and stays off the collector's lists
 * (it refers to nothing else): a handle that went from the freelist to the
 * ready queue and back is never tracked in between (gl_ready_take). */
static PyObject *
slot_take(PyObject *obj, Py_ssize_t off)
{
    PyObject *v = GL_SLOT(obj, off);
    GL_SLOT(obj, off) = NULL;
    return v;
}

static PyObject *
slot_take_unless(PyObject *obj, Py_ssize_t off, PyObject *keep)
{
    return GL_SLOT(obj, off) == keep ? NULL : slot_take(obj, off);
}

void
gl_handle_release(struct gl_core *c, PyObject *h, int hidden)
{
    PyTypeObject *tp = Py_TYPE(h);
    if (Py_REFCNT(h) != 1 || tp != c->handle_type || c->n_free_handles >= GL_HANDLE_FREELIST
            || (tp->tp_weaklistoffset != 0
                && *(PyObject **)((char *)h + tp->tp_weaklistoffset) != NULL)) {
        gl_gc_show(h, hidden);
        Py_DECREF(h);
        return;
    }
    PyObject *old[7] = {
        slot_take(h, c->off_callback), slot_take(h, c->off_args),
        slot_take(h, c->off_loop), slot_take(h, c->off_context),
        slot_take_unless(h, c->off_cancelled, Py_False),
        slot_take_unless(h, c->off_repr, Py_None),
        slot_take_unless(h, c->off_source_traceback, Py_None),
    };
    if (!hidden)
        gl_gc_hide(h);
    c->free_handles[c->n_free_handles++] = h;
    /* Released last: a finalizer run from here may make handles. */
    for (int i = 0; i < 7; i++)
        Py_XDECREF(old[i]);
}

int
gl_core_stats(gl_module_state *st, PyObject *d)
{
    PyObject *v = PyLong_FromLong(st->core != NULL ? st->core->n_free_handles : 0);
    int r = v ? PyDict_SetItemString(d, "handles_reusable", v) : -1;
    Py_XDECREF(v);
    return r;
}

int
gl_handle_cancelled(struct gl_core *c, PyObject *handle)
{
    PyObject *v = GL_SLOT(handle, c->off_cancelled);
    if (v == Py_False)
        return 0;
    if (v == Py_True)
        return 1;
    return v ? PyObject_IsTrue(v) : 0;
}

/* ---- the garbage collector ---------------------------------------------- */

/* A loop with 100k callbacks or timers waiting holds 100k Handles, and each
 * collection traverses every one of them (measured: 40% of the cost of a
 * burst of call_soon()s went to the collector walking pending handles).
 * While a handle waits in the ready ring or the timer heap it is reachable
 * from the loop anyway, so the core takes it off the collector's lists and
 * puts it back when it leaves them (run, dropped, or read out by close()).
 * An untracked object is treated by the collector as an external
 * reference: nothing it refers to can be freed while it waits; only a cycle
 * through a waiting handle is not collected until the handle leaves. */
int
gl_gc_hide(PyObject *h)
{
    if (!PyObject_IS_GC(h) || !PyObject_GC_IsTracked(h))
        return 0;
    PyObject_GC_UnTrack(h);
    return 1;
}

void
gl_gc_show(PyObject *h, int hidden)
{
    if (hidden && !PyObject_GC_IsTracked(h))
        PyObject_GC_Track(h);
}

/* The loop's traverse of a waiting handle.  A hidden handle that only the
 * loop refers to is the loop's own: its references are visited as the
 * loop's, so that a loop dropped unclosed with callbacks waiting (a cycle
 * loop -> handle -> loop) is still found unreachable and collected.  One
 * that something else refers to is visited as itself (a no-op while
 * hidden): its reference to the loop then counts as external, which keeps
 * the loop alive — never the reverse.
 *
 * The loop's own are visited only when `owned` (the loop says so): a loop
 * inside run_forever is referenced from the running call and cannot be
 * garbage, so visiting its waiting handles would find nothing to free, and
 * each full collection would pay a traverse per handle (gather() of 100k
 * tasks: a fifth of its time).  Not visiting them only makes what they
 * refer to look externally referenced, which is safe. */
int
gl_gc_visit(PyObject *h, int hidden, int owned, visitproc visit, void *arg)
{
    if (hidden && Py_REFCNT(h) == 1 && !PyObject_GC_IsTracked(h))
        return owned ? Py_TYPE(h)->tp_traverse(h, visit, arg) : 0;
    Py_VISIT(h);
    return 0;
}

/* ---- running handles --------------------------------------------------- */

static int
is_exit_exception(void)
{
    return PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
           || PyErr_ExceptionMatches(PyExc_SystemExit);
}

int
gl_handle_run(struct gl_core *c, PyObject *handle, int as_handle)
{
    PyTypeObject *tp = Py_TYPE(handle);
    PyObject *cb = NULL, *args = NULL, *ctx = NULL;
    if (tp == c->handle_type || tp == c->timer_type
            || (as_handle && PyObject_TypeCheck(handle, c->handle_type))) {
        cb = GL_SLOT(handle, c->off_callback);
        args = GL_SLOT(handle, c->off_args);
        ctx = GL_SLOT(handle, c->off_context);
    }
    if (cb == NULL || args == NULL || !PyTuple_Check(args) || ctx == NULL
            || !PyContext_CheckExact(ctx)) {
        /* Another class, or slots that are not what __init__ wrote. */
        PyObject *r = PyObject_CallMethodNoArgs(handle, c->str_run);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    /* The callback may cancel its own handle, which clears these slots. */
    Py_INCREF(cb);
    Py_INCREF(args);
    Py_INCREF(ctx);
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        r = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(args, 0),
                                (size_t)PyTuple_GET_SIZE(args), NULL);
        PyObject *exc = r ? NULL : gl_err_take();
        if (PyContext_Exit(ctx) < 0) {
            if (exc != NULL)
                PyErr_Clear();
            else
                Py_CLEAR(r);
        }
        if (exc != NULL)
            gl_err_give(exc);
    }
    Py_DECREF(cb);
    Py_DECREF(args);
    Py_DECREF(ctx);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (is_exit_exception())
        return -1;
    /* Handle._run's report: to the loop's exception handler. */
    PyObject *exc = gl_err_take();
    r = PyObject_CallFunctionObjArgs(c->report_error, handle, exc, NULL);
    Py_DECREF(exc);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

#endif
