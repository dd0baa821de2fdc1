/*
 * steps.c — asyncio task steps run on pooled worker goroutines.
 *
 * The loop core (loop.c) recognises a task step when it is scheduled and,
 * when its turn comes, calls gl_step_run(handle, queue) here.  A step runs
 * on a worker: a goroutine looping on
 *
 *     handle = park(READY)
 *     while True: run handle (handles.c); handle = park(DONE)
 *
 * so a step costs one resume/park round trip and no Python frame of
 * goloop's own: the first frame on the worker is the task's coroutine (or
 * the pure-Python Task's __step).  Idle workers sit in a per-thread pool (a
 * threading.local made by goloop/_steps.py, attribute `idle`, a list): a
 * goroutine belongs to the thread that started it, and the pool dies with
 * its thread.  (The module functions run_step/resume_step do the same for
 * a Python loop class: goloop._steps.GoroutineSteps.)
 *
 * Preemption (csrc/cpython/preempt.c) parks a worker in the middle of its
 * step with PREEMPTED instead of DONE.  gl_step_run() then appends the
 * worker to the loop's queue of preempted steps (a deque the loop owns);
 * its turn calls gl_step_resume(queue), which takes the oldest, continues
 * its step where it stopped and, if it is preempted again, appends it
 * again.  The queue is changed here, in C, so that no Python signal handler
 * (a Ctrl-C's KeyboardInterrupt) can run between a worker leaving the queue
 * and coming back to it: a worker lost there would never be resumed.
 * gl_step_resume(queue, exc) throws exc into the step instead, where it
 * stopped (preempt.c).  The worker keeps the step's Handle (step_handle)
 * until the step is done, and only then goes back to the pool.
 * A step that waits in goloop.await_() (await.c) parks its worker with
 * AWAITING: no queue holds it then; the future's waker continues it
 * (gl_step_continue) as a callback of the loop's.
 * Every stretch a step runs — from a resume to the next park — is one
 * "step" for sysmon and for stats(): gl_preempt_step_begin/end bracket it.
 *
 * One step of a task at a time, as on stock asyncio.  A step can schedule
 * its task's next one before it ends — its wakeup, registered on a future
 * that is done at once or soon after, when the step goes on running code
 * of its own after registering (a Future subclass's add_done_callback in
 * Python) — and if the step is preempted there, that next step comes due
 * while this one is parked inside the task's context.  Run, it would find
 * the context entered ("cannot enter context") and the task never woken.
 * So gl_step_run() holds such a step back on the preempted worker
 * (steps_after) and the worker runs it as soon as its own step ends: a
 * little later than it came due, never beside it.
 *
 * Recursion: a parked worker keeps its Python depth across a change of
 * sys.setrecursionlimit() (pystate.h restores depths), so its budget follows
 * the limit.  On 3.11 Python and C levels share that counter, and a budget
 * above what the worker's stack holds would end in the guard page instead
 * of RecursionError; so on 3.11 workers get a stack sized for the current
 * limit, and a pooled worker whose stack is too small for it is dropped.
 *
 * greenlet: a task whose steps leave greenlets alive keeps its worker for
 * its next step instead of returning it to the pool (greenlets.c).
 *
 * Exceptions: running the handle reports an Exception to the loop's
 * exception handler (handles.c, as Handle._run does); a BaseException
 * (KeyboardInterrupt, SystemExit) ends the worker and comes out into the
 * loop, as on stock asyncio.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#define POOL_MAX 64

/* The body of every worker goroutine. */
static PyObject *
step_worker(PyObject *module, PyObject *unused)
{
    (void)unused;
    gl_module_state *st = PyModule_GetState(module);
    GoroutineObject *self = gl_goroutine_current();
    PyObject *handle = gl_goroutine_park(st, st->step_ready);
    while (handle != NULL) {
        int ok = gl_handle_run(st->core, handle, 1);
        Py_DECREF(handle);
        if (self->cancels_taken != NULL)
            gl_preempt_deliver_cancels(self);
        if (ok < 0)
            return NULL;
        /* A step preempted and then collected was unwound by GoroutineExit,
         * which the Task caught as its exception: end here, not park. */
        if (self->unwinding)
            Py_RETURN_NONE;
        handle = gl_goroutine_park(st, st->step_done);
    }
    return NULL;   /* thrown into (GoroutineExit when the pool is dropped) */
}

static PyObject *
pool_list(gl_module_state *st)
{
    PyObject *idle = PyObject_GetAttr(st->step_pool, st->str_idle);
    if (idle != NULL && !PyList_CheckExact(idle)) {
        Py_DECREF(idle);
        PyErr_SetString(PyExc_TypeError, "step pool's idle must be a list");
        return NULL;
    }
    return idle;
}

/* Stack a worker needs for the current recursion limit; 0: the default. */
static size_t
worker_stack_size(void)
{
#if GL_PY_MINOR == 11
    size_t need = gl_goroutine_stack_for_levels(Py_GetRecursionLimit());
    if (need <= gl_default_stack_size())
        return 0;
    need = (need + 0xFFFF) & ~(size_t)0xFFFF;
    return need < GL_STACK_MAX ? need : GL_STACK_MAX;
#else
    return 0;
#endif
}

/* The pool is a stack: the last worker in is the first out (its stack is
 * the likeliest still in the caches).  Popping shrinks the list's size in
 * place (its storage stays for the next append), as list.pop() would
 * without giving memory back: this is on every step's path. */
static GoroutineObject *
pool_pop(PyObject *idle)
{
    Py_ssize_t n = PyList_GET_SIZE(idle);
    GoroutineObject *w = (GoroutineObject *)PyList_GET_ITEM(idle, n - 1);   /* owned now */
    Py_SET_SIZE(idle, n - 1);
    return w;
}

static int
pool_push(PyObject *idle, GoroutineObject *w)
{
    if (PyList_GET_SIZE(idle) >= POOL_MAX)
        return 0;   /* dropped: unwound and freed by the caller's reference */
    return PyList_Append(idle, (PyObject *)w);
}

static GoroutineObject *
worker_take(gl_module_state *st, PyObject *idle)
{
    size_t need = worker_stack_size();
    while (PyList_GET_SIZE(idle) > 0) {
        GoroutineObject *w = pool_pop(idle);
        if (w->g.stack_size >= need)
            return w;
        Py_DECREF(w);   /* too small for the limit now: unwound and freed */
    }
    GoroutineObject *w = gl_goroutine_create(st, st->step_worker, "goloop-step",
                                             need);
    if (w == NULL)
        return NULL;
    w->step_worker = 1;   /* see glue.h */
    PyObject *r = gl_goroutine_resume(w, Py_None);
    if (r != st->step_ready) {
        if (r != NULL)
            PyErr_SetString(st->goroutine_error, "step worker did not start");
        Py_XDECREF(r);
        Py_DECREF(w);
        return NULL;
    }
    Py_DECREF(r);
    return w;
}

/* Give w the step of `handle` (a new reference taken): its per-step marks
 * start afresh. */
static void
worker_begin_step(GoroutineObject *w, PyObject *handle)
{
    Py_XSETREF(w->step_handle, handle);
    w->locks_held = 0;
    w->preempt_deferred = 0;
    w->step_ran_ns = 0;
}

/* The next step held back on w for its task (see top), not cancelled
 * meanwhile: a new reference, or NULL when none is left. */
static PyObject *
next_step_after(gl_module_state *st, GoroutineObject *w)
{
    while (w->steps_after != NULL && PyList_GET_SIZE(w->steps_after) > 0) {
        PyObject *h = Py_NewRef(PyList_GET_ITEM(w->steps_after, 0));
        if (PyList_SetSlice(w->steps_after, 0, 1, NULL) < 0) {
            PyErr_Clear();   /* cannot fail for a list slice without items to add */
            Py_DECREF(h);
            break;
        }
        int cancelled = gl_handle_cancelled(st->core, h);
        if (cancelled == 0)
            return h;
        if (cancelled < 0)
            PyErr_WriteUnraisable(h);
        Py_DECREF(h);
    }
    Py_CLEAR(w->steps_after);
    return NULL;
}

/* Switch to worker w for one stretch of its step (giving it `value`, or
 * throwing `exc` into it when not NULL), and settle where it ended: DONE
 * runs the task's steps held back on w, if any, then puts w back in the
 * pool (`idle`, this thread's list if the caller has it, else NULL: looked
 * up then); PREEMPTED appends it to `queue`.  Returns None, or NULL with
 * the exception the step raised. */
static PyObject *
run_stretch(gl_module_state *st, GoroutineObject *w, PyObject *value,
            PyObject *exc, PyObject *idle, PyObject *queue, gl_step_end *end)
{
    PyObject *r;
    int pinned;
    for (;;) {
        int64_t began = gl_preempt_step_begin(st);
        w->stretch_began = began;
        r = exc ? gl_goroutine_throw(w, exc) : gl_goroutine_resume(w, value);
        w->step_ran_ns += gl_preempt_step_end(st, began);
        if (end != NULL) {
            end->finished = r != st->step_preempted && r != st->step_awaiting;
            end->ran_ns = w->step_ran_ns;
            Py_XSETREF(end->handle, end->finished ? Py_XNewRef(w->step_handle) : NULL);
        }
        if (r == st->step_preempted) {
            Py_DECREF(r);
            r = PyObject_CallMethodOneArg(queue, st->str_append, (PyObject *)w);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
            Py_RETURN_NONE;
        }
        if (r == st->step_awaiting) {
            Py_DECREF(r);   /* waiting in await_(): its waker holds it */
            Py_RETURN_NONE;
        }
        pinned = r == st->step_done && gl_greenlets_keep(st, w, w->step_handle);
        Py_CLEAR(w->step_handle);
        PyObject *next = r == st->step_done ? next_step_after(st, w) : NULL;
        if (next == NULL)
            break;
        /* The task's next step, on the worker its greenlets may live on. */
        if (pinned)
            Py_XDECREF(gl_greenlets_pinned_worker(next));
        Py_DECREF(r);
        worker_begin_step(w, next);
        value = next;
        exc = NULL;
    }
    if (r == NULL) {
        /* Which exception came out of a step, for raised_by_a_step(): only
         * its address, compared while the caller still holds it.  The steps
         * held back belonged to its task, which that exception ended. */
        Py_CLEAR(w->steps_after);
        PyObject *exc = gl_err_take();
        st->step_raised = (uintptr_t)exc;
        gl_err_give(exc);
        return NULL;
    }
    int ok = 1;
    if (r == st->step_done && !pinned) {
        PyObject *pool = idle ? Py_NewRef(idle) : pool_list(st);
        ok = pool != NULL && pool_push(pool, w) == 0;
        Py_XDECREF(pool);
    }
    Py_DECREF(r);
    return ok ? Py_NewRef(Py_None) : NULL;
}

PyObject *
gl_step_continue(gl_module_state *st, GoroutineObject *w, PyObject *value, PyObject *queue)
{
    assert(w->step_worker && w->step_handle != NULL && w->g.status == GL_G_PARKED);
    return run_stretch(st, w, value, NULL, NULL, queue, NULL);
}

/* The loop's own queue is an exact deque, whose length is its ob_size (as
 * deque's __len__ reads it): asked on every step, without a len() call. */
Py_ssize_t
gl_steps_waiting(gl_module_state *st, PyObject *queue)
{
    if ((PyObject *)Py_TYPE(queue) == st->core->deque_type)
        return Py_SIZE(queue);
    return PyObject_Size(queue);
}

/* Is handle a step of a task whose previous step is preempted (a worker in
 * queue)?  Then it is held back on that worker (see top): 1.  0: it may
 * run now; -1: an error. */
static int
hold_back_behind_preempted(gl_module_state *st, PyObject *queue, PyObject *handle)
{
    Py_ssize_t waiting = gl_steps_waiting(st, queue);
    if (waiting <= 0)
        return waiting < 0 ? -1 : 0;
    PyObject *task = gl_step_task(handle);
    if (task == NULL) {
        PyErr_Clear();   /* not a task's: nothing to wait for */
        return 0;
    }
    PyObject *it = PyObject_GetIter(queue);
    int found = it ? 0 : -1;
    PyObject *item;
    while (found == 0 && it != NULL && (item = PyIter_Next(it)) != NULL) {
        GoroutineObject *w = (GoroutineObject *)item;
        if (PyObject_TypeCheck(item, st->goroutine_type) && w->step_handle != NULL) {
            PyObject *t = gl_step_task(w->step_handle);
            if (t == NULL)
                PyErr_Clear();
            else if (t == task) {
                if (w->steps_after == NULL)
                    w->steps_after = PyList_New(0);
                found = w->steps_after != NULL
                        && PyList_Append(w->steps_after, handle) == 0 ? 1 : -1;
            }
            Py_XDECREF(t);
        }
        Py_DECREF(item);
    }
    if (found == 0 && PyErr_Occurred())
        found = -1;
    Py_XDECREF(it);
    Py_DECREF(task);
    if (found == 1)
        st->held_back++;
    return found;
}

PyObject *
gl_step_task(PyObject *handle)
{
    PyObject *cb = PyObject_GetAttrString(handle, "_callback");
    PyObject *task = cb ? PyObject_GetAttrString(cb, "__self__") : NULL;
    Py_XDECREF(cb);
    return task;
}

/* The state, if steps are set up (an exception if not). */
static gl_module_state *
steps_ready(gl_module_state *st)
{
    if (st->step_pool == NULL || st->core == NULL) {
        PyErr_SetString(st->goroutine_error,
                        "task steps are not set up: import goloop first");
        return NULL;
    }
    return st;
}

PyObject *
gl_steps_pool(gl_module_state *st)
{
    return steps_ready(st) ? pool_list(st) : NULL;
}

PyObject *
gl_step_run(gl_module_state *st, PyObject *handle, PyObject *queue, PyObject *pool,
            gl_step_end *end)
{
    int held = hold_back_behind_preempted(st, queue, handle);
    if (held != 0) {
        if (end != NULL) {
            end->finished = 0;
            end->ran_ns = 0;
        }
        return held < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *idle = pool ? Py_NewRef(pool) : gl_steps_pool(st);
    if (idle == NULL)
        return NULL;
    if (gl_greenlets_watch(st) < 0) {
        Py_DECREF(idle);
        return NULL;
    }
    GoroutineObject *w = gl_greenlets_pinned_worker(handle);
    if (w == NULL)
        w = worker_take(st, idle);
    PyObject *r = NULL;
    if (w != NULL) {
        worker_begin_step(w, Py_NewRef(handle));
        r = run_stretch(st, w, handle, NULL, idle, queue, end);
        Py_DECREF(w);
    }
    Py_DECREF(idle);
    return r;
}

PyObject *
gl_step_resume(gl_module_state *st, PyObject *queue, PyObject *exc, gl_step_end *end)
{
    if (steps_ready(st) == NULL)
        return NULL;
    if (exc != NULL && !PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_TypeError,
                     "resume_step() can throw an exception instance, not %.100s",
                     Py_TYPE(exc)->tp_name);
        return NULL;
    }
    Py_ssize_t waiting = gl_steps_waiting(st, queue);
    if (waiting < 0)
        return NULL;
    if (waiting == 0)
        Py_RETURN_NONE;   /* a second resumer in the ready queue: nothing left */
    PyObject *arg = PyObject_CallMethodNoArgs(queue, st->str_popleft);
    if (arg == NULL)
        return NULL;
    GoroutineObject *w = (GoroutineObject *)arg;
    PyObject *r;
    if (!PyObject_TypeCheck(arg, st->goroutine_type) || !w->step_worker
            || w->step_handle == NULL || w->g.status != GL_G_PARKED) {
        PyErr_Format(st->goroutine_error,
                     "resume_step() found %R in the queue, not a preempted step worker", arg);
        r = NULL;
    }
    else
        r = run_stretch(st, w, Py_None, exc, NULL, queue, end);
    Py_DECREF(arg);
    return r;
}

int
gl_step_raised(gl_module_state *st, PyObject *exc)
{
    return st->step_raised == (uintptr_t)exc;
}

static PyObject *
mod_run_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "run_step() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    return gl_step_run(PyModule_GetState(module), args[0], args[1], NULL, NULL);
}

static PyObject *
mod_resume_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "resume_step() takes 1 or 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *exc = nargs > 1 && args[1] != Py_None ? args[1] : NULL;
    return gl_step_resume(PyModule_GetState(module), args[0], exc, NULL);
}

static PyObject *
mod_raised_by_a_step(PyObject *module, PyObject *exc)
{
    return PyBool_FromLong(gl_step_raised(PyModule_GetState(module), exc));
}

/* _step_state(goroutine): for goloop.dump() — None, unless it is a step
 * worker with a step in flight: (handle, state, seconds run, awaited),
 * state 'running', 'preempted' or 'await_' (waiting in await_()), seconds
 * over all the step's stretches, the running one up to now, and what an
 * await_() drives (else None). */
static PyObject *
mod_step_state(PyObject *module, PyObject *arg)
{
    gl_module_state *st = PyModule_GetState(module);
    if (!PyObject_TypeCheck(arg, st->goroutine_type)) {
        PyErr_Format(PyExc_TypeError, "_step_state() takes a Goroutine, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    GoroutineObject *w = (GoroutineObject *)arg;
    if (!w->step_worker || w->step_handle == NULL)
        Py_RETURN_NONE;
    int64_t ran = w->step_ran_ns;
    const char *state;
    if (w->g.status == GL_G_RUNNING) {
        state = "running";
        ran += gl_nanotime() - w->stretch_began;
    }
    else if (w->g.status != GL_G_PARKED)
        Py_RETURN_NONE;
    else
        state = w->awaiting ? "await_" : "preempted";
    PyObject *awaited = w->awaiting && w->awaited ? w->awaited : Py_None;
    return Py_BuildValue("(OsdO)", w->step_handle, state, ran / 1e9, awaited);
}

static PyObject *
mod_setup_steps(PyObject *module, PyObject *pool)
{
    gl_module_state *st = PyModule_GetState(module);
    Py_XSETREF(st->step_pool, Py_NewRef(pool));
    Py_RETURN_NONE;
}

static PyMethodDef step_worker_def = {
    "step_worker", step_worker, METH_NOARGS,
    "The loop every step worker goroutine runs."
};

PyMethodDef gl_steps_methods[] = {
    {"run_step", (PyCFunction)(void (*)(void))mod_run_step, METH_FASTCALL,
     "run_step(handle, queue, /)\n--\n\nRun handle (a task step) on a worker "
     "goroutine from this thread's pool.  If the step is preempted, its "
     "worker is appended to queue (the loop's deque of preempted steps)."},
    {"resume_step", (PyCFunction)(void (*)(void))mod_resume_step, METH_FASTCALL,
     "resume_step(queue, exc=None, /)\n--\n\nContinue the oldest preempted "
     "step in queue (or throw exc into it where it stopped); if it is "
     "preempted again, it goes back at the end of queue."},
    {"raised_by_a_step", mod_raised_by_a_step, METH_O,
     "raised_by_a_step(exc, /)\n--\n\nDid exc come out of a task step, "
     "the last time run_step() or resume_step() raised?"},
    {"_step_state", mod_step_state, METH_O,
     "_step_state(goroutine, /)\n--\n\nFor goloop.dump(): (handle, state, "
     "seconds run, awaited) of a step worker's step in flight, else None."},
    {"_setup_steps", mod_setup_steps, METH_O,
     "_setup_steps(pool, /)\n--\n\nThe per-thread pool of step workers "
     "(a threading.local whose `idle` is a list)."},
    {NULL, NULL, 0, NULL}
};

/* stats(): this thread's pooled step workers (each holds a stack), and
 * those kept by tasks for their greenlets. */
int
gl_steps_stats(gl_module_state *st, PyObject *d)
{
    Py_ssize_t n = 0;
    if (st->step_pool != NULL) {
        PyObject *idle = pool_list(st);
        if (idle == NULL)
            return -1;
        n = PyList_GET_SIZE(idle);
        Py_DECREF(idle);
    }
    PyObject *v = PyLong_FromSsize_t(n);
    int r = v ? PyDict_SetItemString(d, "step_workers_pooled", v) : -1;
    Py_XDECREF(v);
    v = r < 0 ? NULL : PyLong_FromSsize_t(gl_greenlets_pinned());
    r = v ? PyDict_SetItemString(d, "step_workers_pinned", v) : -1;
    Py_XDECREF(v);
    return r;
}

int
gl_steps_init(PyObject *module, gl_module_state *st)
{
    st->str_idle = PyUnicode_InternFromString("idle");
    st->str_append = PyUnicode_InternFromString("append");
    st->str_popleft = PyUnicode_InternFromString("popleft");
    st->step_ready = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    st->step_done = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    st->step_preempted = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    st->step_awaiting = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    st->step_worker = PyCFunction_NewEx(&step_worker_def, module, NULL);
    if (st->str_idle == NULL || st->str_append == NULL || st->str_popleft == NULL
            || st->step_ready == NULL
            || st->step_done == NULL || st->step_preempted == NULL
            || st->step_awaiting == NULL
            || st->step_worker == NULL)
        return -1;
    return 0;
}

int
gl_steps_traverse(gl_module_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->step_ready);
    Py_VISIT(st->step_done);
    Py_VISIT(st->step_preempted);
    Py_VISIT(st->step_awaiting);
    Py_VISIT(st->fut_waiter_type);
    Py_VISIT(st->step_worker);
    Py_VISIT(st->step_pool);
    return 0;
}

void
gl_steps_clear(gl_module_state *st)
{
    Py_CLEAR(st->str_idle);
    Py_CLEAR(st->str_append);
    Py_CLEAR(st->str_popleft);
    Py_CLEAR(st->step_ready);
    Py_CLEAR(st->step_done);
    Py_CLEAR(st->step_preempted);
    Py_CLEAR(st->step_awaiting);
    Py_CLEAR(st->fut_waiter_type);
    Py_CLEAR(st->step_worker);
    Py_CLEAR(st->step_pool);
}

#endif
