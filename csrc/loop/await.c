/*
 * await.c — goloop.await_(awaitable): await from plain synchronous code.
 *
 * A task step runs on a worker goroutine (steps.c), so a plain function the
 * step calls — however deep, through any number of ordinary frames — sits
 * on that worker's stack, and the worker can park there.  await_() does
 * what the Task would have done had the function been a coroutine awaiting
 * the awaitable, without unwinding anything:
 *
 *     it  = awaitable.__await__()     (a coroutine is its own iterator)
 *     loop:
 *         y = it.send(value) / it.throw(exc)     on the worker, right here
 *         StopIteration(r)  -> return r to the synchronous caller
 *         y a future        -> wait for it: park the worker (below), then
 *                              value = None, or exc = what y.result() raises
 *         y None (bare yield) -> park until the next iteration of the loop
 *
 * The awaitable runs inside the calling task: current_task() is that task,
 * the contextvars are its context, and its frames sit directly on the
 * synchronous caller's (no frame of goloop's between them), so tracebacks
 * show both, and preemption treats its code as it would treat the same
 * code awaited (preempt.c: preemptible()).
 *
 * Waiting.  As a preempted step does (preempt.c), a waiting step leaves its
 * task (asyncio's _leave_task: other tasks become current meanwhile) and
 * parks its worker, with st->step_awaiting, which steps.c's run_stretch
 * leaves where it is: no queue holds the worker, the waker does.  The
 * waker is a done callback on the future (or, for a bare yield, a
 * call_soon callback) bound to (worker, loop); it runs on the loop's own
 * stack as any callback and continues the worker's step from there
 * (gl_step_continue), which is then timed, preempted and finished as any
 * stretch of a step.  Its context is a new, empty one: the task's own is
 * entered on the parked worker, and a Context cannot be entered twice.
 *
 * Cancellation.  While it waits, the task's _fut_waiter is the future, as
 * it would be had the task awaited it: Task.cancel() cancels that future,
 * whose waker then throws the CancelledError in where the awaitable waits,
 * and asyncio.timeout() around the synchronous call works unchanged.  A
 * cancel() that finds no future to cancel (a bare yield, or the future done
 * and its waker not yet run) sets _must_cancel, which is turned into a
 * CancelledError at the next send, as Task.__step does.  The C Task keeps
 * both in fields read-only from Python: their offsets are learnt once
 * (_learn_fut_waiter here, _learn_must_cancel in preempt.c).
 *
 * Where it refuses (RuntimeError): outside a task step on a goroutine (the
 * loop's own stack, a thread, a goroutine of the user's, goroutines=False);
 * inside goloop.atomic() (the point of atomic() is that nothing else runs);
 * inside a greenlet other than the thread's main one (greenlet keeps parts
 * of the C stack by address, as preempt.c explains).
 *
 * Limitation: a waiting worker is kept alive by its waker, and its C frame
 * here holds the task and the awaitable; a task waiting in await_() on a
 * future that nobody completes and nobody references is never collected
 * (stock asyncio collects such a task and logs "Task was destroyed but it
 * is pending").  Loop shutdown cancels it as any task.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

/* ---- the C Task's _fut_waiter ------------------------------------------- */

/* _learn_fut_waiter(task): find where the C Task keeps _fut_waiter, from a
 * Task of that type waiting on nothing (the field is NULL) that nothing
 * else uses: the NULL pointer field that, holding an object, makes the
 * _fut_waiter getter return that object — the getter reads that field and
 * nothing else — cleared again at once.  A pure-Python Task keeps it as an
 * attribute: nothing to learn. */
static PyObject *
mod_learn_fut_waiter(PyObject *module, PyObject *task)
{
    gl_module_state *st = PyModule_GetState(module);
    PyObject *v = PyObject_GetAttrString(task, "_fut_waiter");
    if (v == NULL)
        return NULL;
    Py_DECREF(v);
    if (v != Py_None) {
        PyErr_SetString(PyExc_ValueError, "_learn_fut_waiter() needs a Task waiting on nothing");
        return NULL;
    }
    if (PyObject_SetAttrString(task, "_fut_waiter", Py_None) == 0)
        Py_RETURN_NONE;   /* the pure-Python Task: an attribute */
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return NULL;
    PyErr_Clear();
    PyObject *probe = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (probe == NULL)
        return NULL;
    Py_ssize_t size = Py_TYPE(task)->tp_basicsize;
    for (Py_ssize_t off = sizeof(PyObject); off + (Py_ssize_t)sizeof(PyObject *) <= size;
         off += sizeof(PyObject *)) {
        PyObject **field = (PyObject **)((char *)task + off);
        if (*field != NULL)
            continue;
        *field = probe;
        v = PyObject_GetAttrString(task, "_fut_waiter");
        *field = NULL;
        Py_XDECREF(v);
        if (v == probe) {
            Py_DECREF(probe);
            Py_XSETREF(st->fut_waiter_type, Py_NewRef((PyObject *)Py_TYPE(task)));
            st->fut_waiter_offset = off;
            Py_RETURN_NONE;
        }
        PyErr_Clear();
    }
    Py_DECREF(probe);
    PyErr_Format(PyExc_RuntimeError, "%.100s keeps _fut_waiter in no object field",
                 Py_TYPE(task)->tp_name);
    return NULL;
}

/* task._fut_waiter = fut (a borrowed reference, or NULL for None). */
static int
set_fut_waiter(gl_module_state *st, PyObject *task, PyObject *fut)
{
    if (st->fut_waiter_type != NULL
            && PyObject_TypeCheck(task, (PyTypeObject *)st->fut_waiter_type)) {
        PyObject **field = (PyObject **)((char *)task + st->fut_waiter_offset);
        Py_XSETREF(*field, Py_XNewRef(fut));
        return 0;
    }
    return PyObject_SetAttrString(task, "_fut_waiter", fut ? fut : Py_None);
}

/* ---- waking a waiting step ----------------------------------------------- */

/* The waker: bound to (worker, loop); called with the future it waited on
 * (a done callback) or None (a bare yield), on the loop's own stack.  A
 * future's repr shows it as cb=[tuple.await_()]. */
static PyObject *
await_wake(PyObject *pair, PyObject *fut)
{
    GoroutineObject *w = (GoroutineObject *)PyTuple_GET_ITEM(pair, 0);
    PyObject *loop = PyTuple_GET_ITEM(pair, 1);
    gl_module_state *st = w->state;
    if (!w->awaiting || w->g.status != GL_G_PARKED)
        Py_RETURN_NONE;   /* unwound meanwhile (the loop closed) */
    PyObject *queue = PyObject_GetAttr(loop, st->core->str_preempted);
    if (queue == NULL)
        return NULL;
    PyObject *r = gl_step_continue(st, w, fut, queue);
    Py_DECREF(queue);
    return r;
}

static PyMethodDef await_wake_def = {
    "await_", await_wake, METH_O,
    "Continue a task step waiting in goloop.await_()."
};

/* A cancel() that reached the task while it ran, before this wait: as
 * Task.__step does when the coroutine yields a future while _must_cancel is
 * set, cancel that future now (and the request is spent) — else the task
 * would wait for it to finish first.  Before 3.13 a cancel() that came
 * while the step was preempted was taken back (preempt.c) and is given back
 * here, at this await, not when the step ends (after the whole synchronous
 * call): with _fut_waiter set, giving it back cancels fut.  A bare yield
 * (fut NULL) leaves _must_cancel to after_wait(), as Task.__step would. */
static int
cancel_if_asked(gl_module_state *st, GoroutineObject *w, PyObject *task, PyObject *fut)
{
    if (w->cancels_taken != NULL)
        gl_preempt_deliver_cancels(w);
    if (fut == NULL)
        return 0;
    int must = gl_preempt_task_must_cancel(st, task);
    if (must <= 0)
        return must;
    PyObject *msg = PyObject_GetAttrString(task, "_cancel_message");
    if (msg == NULL)
        return -1;
    PyObject *cancel = PyObject_GetAttrString(fut, "cancel");
    PyObject *args = PyTuple_New(0);
    PyObject *kwargs = Py_BuildValue("{sO}", "msg", msg);
    PyObject *r = cancel && args && kwargs ? PyObject_Call(cancel, args, kwargs) : NULL;
    Py_XDECREF(cancel);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_DECREF(msg);
    int cancelled = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (cancelled <= 0)
        return cancelled;
    return gl_preempt_set_task_must_cancel(st, task, 0);
}

/* Park the running worker w, whose task is `task`, waiting in the
 * awaitable's iterator `it`, until `fut` is done (or, fut NULL, until the
 * loop's next iteration).  Returns 0 once resumed, -1
 * with an exception (thrown into the worker: GoroutineExit when it is
 * collected; or a failure to set up the wait). */
static int
wait_for(gl_module_state *st, GoroutineObject *w, PyObject *loop, PyObject *task,
         PyObject *it, PyObject *fut)
{
    struct gl_core *c = st->core;
    PyObject *pair = PyTuple_Pack(2, (PyObject *)w, loop);
    PyObject *waker = pair ? PyCFunction_NewEx(&await_wake_def, pair, NULL) : NULL;
    Py_XDECREF(pair);
    PyObject *ctx = waker ? PyContext_New() : NULL;
    PyObject *r = NULL;
    if (ctx != NULL) {
        /* fut.add_done_callback(waker, context=ctx), or
         * loop.call_soon(waker, None, context=ctx) */
        PyObject *args[4] = {fut ? fut : loop, waker, fut ? ctx : Py_None, ctx};
        r = PyObject_VectorcallMethod(fut ? c->str_add_done_callback : c->str_call_soon, args,
                                      (fut ? 2 : 3) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                      c->kw_context);
    }
    Py_XDECREF(ctx);
    Py_XDECREF(waker);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    if (fut != NULL && set_fut_waiter(st, task, fut) < 0)
        return -1;
    if (cancel_if_asked(st, w, task, fut) < 0) {
        (void)set_fut_waiter(st, task, NULL);
        return -1;
    }
    r = PyObject_CallFunctionObjArgs(st->leave_task, loop, task, NULL);
    if (r == NULL) {
        (void)set_fut_waiter(st, task, NULL);
        return -1;
    }
    Py_DECREF(r);
    st->awaits++;
    w->awaiting = 1;
    w->awaited = it;
    PyObject *in = gl_goroutine_park(st, st->step_awaiting);
    w->awaiting = 0;
    w->awaited = NULL;
    PyObject *thrown = in ? NULL : gl_err_take();
    Py_XDECREF(in);
    int rc = set_fut_waiter(st, task, NULL);
    r = PyObject_CallFunctionObjArgs(st->enter_task, loop, task, NULL);
    if (thrown != NULL) {
        /* Unwinding (GoroutineExit): what is thrown is what matters. */
        Py_XDECREF(r);
        PyErr_Clear();
        gl_err_give(thrown);
        return -1;
    }
    Py_XDECREF(r);
    return r == NULL || rc < 0 ? -1 : 0;
}

/* ---- driving the awaitable ----------------------------------------------- */

/* The iterator `await aw` would drive (a new reference), or NULL with
 * CPython's TypeError for something that cannot be awaited. */
static PyObject *
awaitable_iter(PyObject *aw)
{
    if (PyCoro_CheckExact(aw))
        return Py_NewRef(aw);
    PyAsyncMethods *am = Py_TYPE(aw)->tp_as_async;
    if (am == NULL || am->am_await == NULL) {
        PyErr_Format(PyExc_TypeError, "'%.100s' object can't be awaited", Py_TYPE(aw)->tp_name);
        return NULL;
    }
    PyObject *it = am->am_await(aw);
    if (it == NULL)
        return NULL;
    if (PyCoro_CheckExact(it) || !PyIter_Check(it)) {
        PyErr_Format(PyExc_TypeError, "__await__() returned %s (type %.100s)",
                     PyCoro_CheckExact(it) ? "a coroutine" : "non-iterator",
                     Py_TYPE(it)->tp_name);
        Py_DECREF(it);
        return NULL;
    }
    return it;
}

/* One send (or throw, exc not NULL: stolen) into `it`.  Returns 1 with the
 * value it yielded, 0 with the value it returned, -1 with its exception. */
static int
send_into(PyObject *it, PyObject *exc, PyObject **out)
{
    if (exc == NULL) {
        PySendResult res = PyIter_Send(it, Py_None, out);
        return res == PYGEN_NEXT ? 1 : res == PYGEN_RETURN ? 0 : -1;
    }
    PyObject *throw = PyObject_GetAttrString(it, "throw");
    if (throw == NULL) {
        /* No throw(): the exception comes out here, as CPython's await
         * would raise it. */
        PyErr_Clear();
        gl_err_give(exc);
        return -1;
    }
    *out = PyObject_CallOneArg(throw, exc);
    Py_DECREF(throw);
    Py_DECREF(exc);
    if (*out != NULL)
        return 1;
    if (!PyErr_ExceptionMatches(PyExc_StopIteration))
        return -1;
    PyObject *stop = gl_err_take();
    *out = PyObject_GetAttrString(stop, "value");
    Py_DECREF(stop);
    return *out ? 0 : -1;
}

/* A RuntimeError to throw in, worded as Task.__step words it (format
 * takes one or two objects, %R). */
static PyObject *
bad_yield(const char *format, PyObject *a, PyObject *b)
{
    PyObject *msg = b ? PyUnicode_FromFormat(format, a, b) : PyUnicode_FromFormat(format, a);
    PyObject *exc = msg ? PyObject_CallOneArg(PyExc_RuntimeError, msg) : NULL;
    Py_XDECREF(msg);
    return exc;
}

/* What the task does with a value the awaitable yielded (Task.__step's
 * rules): 1 with *fut set (a new reference) to wait for a future, 1 with
 * *fut NULL for a bare yield, 0 with *exc set to throw in, -1 on error. */
static int
judge_yield(PyObject *loop, PyObject *task, PyObject *y, PyObject **fut, PyObject **exc)
{
    *fut = NULL;
    *exc = NULL;
    if (y == Py_None)
        return 1;
    PyObject *blocking = PyObject_GetAttrString(y, "_asyncio_future_blocking");
    if (blocking == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
    }
    if (blocking == NULL || blocking == Py_None) {
        Py_XDECREF(blocking);
        *exc = PyGen_Check(y)
               ? bad_yield("yield was used instead of yield from for generator in task %R with %R",
                           task, y)
               : bad_yield("Task got bad yield: %R", y, NULL);
        return *exc ? 0 : -1;
    }
    int is_blocking = PyObject_IsTrue(blocking);
    Py_DECREF(blocking);
    if (is_blocking < 0)
        return -1;
    PyObject *get_loop = PyObject_GetAttrString(y, "get_loop");
    PyObject *its_loop = get_loop ? PyObject_CallNoArgs(get_loop) : NULL;
    Py_XDECREF(get_loop);
    if (its_loop == NULL) {
        PyErr_Clear();
        its_loop = PyObject_GetAttrString(y, "_loop");
        if (its_loop == NULL)
            return -1;
    }
    Py_DECREF(its_loop);
    if (its_loop != loop)
        *exc = bad_yield("Task %R got Future %R attached to a different loop", task, y);
    else if (!is_blocking)
        *exc = bad_yield("yield was used instead of yield from in task %R with %R", task, y);
    else if (y == task)
        *exc = bad_yield("Task cannot await on itself: %R", task, NULL);
    else {
        if (PyObject_SetAttrString(y, "_asyncio_future_blocking", Py_False) < 0)
            return -1;
        *fut = Py_NewRef(y);
        return 1;
    }
    return *exc ? 0 : -1;
}

/* After a wait: what to send in next — NULL (None), or an exception: the
 * future's, or, when a cancel() set _must_cancel meanwhile, the task's
 * CancelledError (Task.__wakeup, then Task.__step). */
static int
after_wait(gl_module_state *st, PyObject *task, PyObject *fut, PyObject **exc)
{
    *exc = NULL;
    if (fut != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(fut, st->core->str_result);
        if (r == NULL)
            *exc = gl_err_take();
        Py_XDECREF(r);
    }
    int must = gl_preempt_task_must_cancel(st, task);
    if (must < 0)
        return -1;
    if (!must)
        return 0;
    if (gl_preempt_set_task_must_cancel(st, task, 0) < 0)
        return -1;
    if (*exc != NULL) {
        PyObject *mod = PyImport_ImportModule("asyncio.exceptions");
        PyObject *cancelled = mod ? PyObject_GetAttrString(mod, "CancelledError") : NULL;
        Py_XDECREF(mod);
        if (cancelled == NULL)
            return -1;
        int is = PyErr_GivenExceptionMatches(*exc, cancelled);
        Py_DECREF(cancelled);
        if (is)
            return 0;
    }
    Py_XSETREF(*exc, PyObject_CallMethod(task, "_make_cancelled_error", NULL));
    return *exc ? 0 : -1;
}

static PyObject *
drive(gl_module_state *st, GoroutineObject *w, PyObject *loop, PyObject *task, PyObject *it)
{
    PyObject *exc = NULL;
    for (;;) {
        PyObject *out = NULL, *fut = NULL;
        int sent = send_into(it, exc, &out);
        exc = NULL;
        if (sent <= 0)
            return sent == 0 ? out : NULL;
        int judged = judge_yield(loop, task, out, &fut, &exc);
        Py_DECREF(out);
        if (judged < 0)
            return NULL;
        if (judged == 0)
            continue;   /* throw exc in */
        int waited = wait_for(st, w, loop, task, it, fut);
        if (waited == 0)
            waited = after_wait(st, task, fut, &exc);
        Py_XDECREF(fut);
        if (waited < 0) {
            Py_XDECREF(exc);
            return NULL;
        }
    }
}

/* The step worker running this code, or NULL with the RuntimeError saying
 * why await_() cannot suspend here. */
static GoroutineObject *
awaiting_worker(gl_module_state *st)
{
    GoroutineObject *w = gl_goroutine_current();
    if (w == NULL || !w->step_worker || w->step_handle == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "goloop.await_() must be called from synchronous code running "
                        "in a task on a goloop event loop (with goroutines=True)");
        return NULL;
    }
    if (gl_preempt_inside_atomic(st)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "goloop.await_() cannot suspend the task inside goloop.atomic()");
        return NULL;
    }
    if (gl_preempt_in_child_greenlet(st)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "goloop.await_() cannot suspend the task from inside a greenlet");
        return NULL;
    }
    return w;
}

static PyObject *
mod_await(PyObject *module, PyObject *aw)
{
    gl_module_state *st = PyModule_GetState(module);
    GoroutineObject *w = awaiting_worker(st);
    if (w == NULL) {
        /* A coroutine refused here will never run: close it, so that the
         * RuntimeError is not followed by "was never awaited". */
        if (PyCoro_CheckExact(aw)) {
            PyObject *exc = gl_err_take();
            PyObject *r = PyObject_CallMethod(aw, "close", NULL);
            Py_XDECREF(r);
            PyErr_Clear();
            gl_err_give(exc);
        }
        return NULL;
    }
    PyObject *it = awaitable_iter(aw);
    if (it == NULL)
        return NULL;
    PyObject *loop = PyObject_GetAttrString(w->step_handle, "_loop");
    PyObject *task = loop ? gl_preempt_running_task(st, loop, w->step_handle) : NULL;
    PyObject *r = task ? drive(st, w, loop, task, it) : NULL;
    Py_XDECREF(task);
    Py_XDECREF(loop);
    Py_DECREF(it);
    return r;
}

PyMethodDef gl_await_methods[] = {
    {"await_", mod_await, METH_O,
     "await_(awaitable, /)\n--\n\nFrom synchronous code running in a task "
     "step on a goloop loop: suspend the task until awaitable completes and "
     "return its result (or raise its exception), as `await awaitable` "
     "would in a coroutine.  The rest of the loop runs meanwhile."},
    {"_learn_fut_waiter", mod_learn_fut_waiter, METH_O,
     "_learn_fut_waiter(task, /)\n--\n\nLearn where the C Task keeps "
     "_fut_waiter, from a Task waiting on nothing."},
    {NULL, NULL, 0, NULL}
};

#endif
