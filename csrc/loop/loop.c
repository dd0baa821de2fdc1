/*
 * loop.c — LoopCore: the scheduling half of goloop's event loop, in C.
 *
 * goloop.EventLoop is `class EventLoop(LoopCore, asyncio.SelectorEventLoop)`
 * (core.h).  LoopCore defines the methods every callback and every task step
 * goes through — call_soon, call_soon_threadsafe, call_later, call_at,
 * time, _run_once, _add_callback, _timer_handle_cancelled, and the
 * factories create_future and create_task — and keeps the
 * loop state those methods and asyncio's Python code share as C fields
 * behind attributes of asyncio's names (_closed, _stopping, _debug,
 * _clock_resolution, _timer_cancelled_count, _ready, _scheduled), so
 * BaseEventLoop's own code (run_forever, stop, close, set_debug) reads and
 * writes the core's state without knowing it.  _ready and _scheduled read
 * as snapshots (a deque, a heap-ordered list) and assigning one replaces
 * the queue: BaseEventLoop.__init__ assigns empty ones, and code that
 * inspects them (len(loop._ready)) sees the truth; mutating a snapshot in
 * place changes nothing.
 *
 * One iteration (_run_once), as asyncio's, with two differences:
 *
 *   1. drop cancelled timers (timers.c);
 *   2. poll for I/O — the selector's select() and asyncio's
 *      _process_events() — unless work is ready and the last poll was
 *      under POLL_SKIP_NS ago.  asyncio polls on every iteration, with a
 *      zero timeout when work is ready: a system call (and on this stage a
 *      Python selector call) per iteration that, while callbacks keep
 *      coming, almost always finds nothing.  Skipping it while the last
 *      poll is recent bounds how late ready I/O is seen: by POLL_SKIP_NS
 *      plus one batch;
 *   3. move due timers to the ready queue;
 *   4. run the batch that was ready when the iteration began; a task step
 *      runs on a worker goroutine (steps.c), anything else here, on the
 *      loop's own stack;
 *   5. resume the oldest preempted step — unless other work is ready and
 *      the preempted steps have waited less than a time slice for it: as
 *      in Go, where a preempted goroutine goes to the global run queue and
 *      newly ready ones run first, work that became ready meanwhile runs
 *      first, for at most one slice, so that hogs still progress.
 *
 * POLL_SKIP_NS is 100 µs: the longest I/O waits behind ready work (well
 * under a time slice, and under a LAN round trip); a poll costs a few µs,
 * so at most a few percent of a loop that never runs dry goes to polls.
 *
 * Signals.  A Python signal handler runs wherever the main thread is when
 * the signal lands; on stock asyncio, during a long step, that is the step,
 * and a Ctrl-C's KeyboardInterrupt ends the computation.  With steps
 * preempted it may land in the loop's own code instead; a KeyboardInterrupt
 * or SystemExit raised there goes into the oldest preempted step, where it
 * stopped, so that it ends a computation as on stock asyncio — left parked,
 * that step would run on to its next await when the program shuts down
 * (asyncio.Runner cancels the remaining tasks and runs the loop until they
 * finish), for as long as the computation takes.
 *
 * call_soon_threadsafe wakes the loop only when it may be sleeping in its
 * poll: the flag is set, under the GIL, before the loop looks at its queue
 * for the last time, so a callback added after that look always finds it
 * set.  It wakes the Poller's eventfd (poller.c), or, with a selector of
 * the user's, writes asyncio's self-pipe (_write_to_self).
 *
 * The GIL.  A thread waiting for the GIL asks the holder to drop it only
 * when the GIL has not changed hands for a switch interval; the loop drops
 * and retakes it in every select(), before the waiting thread has woken, so
 * with steps preempted every fraction of a millisecond a thread that needs
 * the GIL (an executor's) could wait for seconds.  So once per switch
 * interval, before resuming a preempted step while other threads exist,
 * the loop stays out of the GIL for GIL_PAUSE_NS.
 *
 * Statistics (goloop.stats(loop), and the scheduler trace: schedtrace.h,
 * csrc/cpython/schedtrace.c).  The loop counts the task steps it runs
 * (each stretch of a preempted one too), its plain callbacks, and the
 * stretches that ended preempted — a stretch that ended with the
 * preempted queue longer than before (a first stretch) or as long (a
 * resumed one, popped and appended again) — and keeps the longest
 * stretch: its time is the one steps.c measured from the readings of the
 * clock the stretch's start and end take anyway (gl_step_end.ran_ns, over
 * the whole step: a resumed stretch's own is the difference from the
 * worker's time before it).  No clock read, no Python call per step: a few
 * relaxed atomic stores (plain stores), which the trace thread reads.
 * Callbacks are counted, not timed (their start reads no clock).  The
 * trace tells a loop stuck in one step from these counters and from a mark
 * around each wait for I/O that may block (`polling`, `polls`): nothing
 * else per step.  The gauges (ready queue, timers, preempted steps
 * waiting) are published for it, while it runs, at the start of each batch
 * and before a poll that may block; the fds watched when a reader or
 * writer comes or goes (one registered through the Poller's own
 * register() shows at the next of those).
 * stats(loop) reads them all live.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <math.h>
#include <time.h>

#define POLL_SKIP_NS 100000
#define GIL_PAUSE_NS 100000
#define MAXIMUM_SELECT_TIMEOUT (24.0 * 3600)   /* asyncio's */

typedef struct {
    PyObject_HEAD
    gl_module_state *st;
    gl_ready ready;
    gl_timers timers;
    PyObject *preempted;             /* deque of preempted step workers */
    PyObject *selector;              /* _selector */
    PyObject *pool;                  /* while run_forever runs: its thread's
                                        pool of step workers (steps.c) */
    PollerObject *poller;            /* _selector, when it is goloop's Poller
                                        (else NULL: a Python selector) */
    int64_t preempted_since;         /* when other work first went ahead of
                                        them (ns), or -1 */
    int64_t last_poll;               /* ns */
    int64_t gil_handed;              /* ns */
    double clock_resolution;
    PyObject *debug;                 /* _debug, as set */
    PyObject *time_slice;            /* _time_slice: seconds, or None */
    int64_t slice_ns;
    char is_debug, closed, stopping, goroutines, preempt, sleeping;
    char registered;                 /* with the trace, while run_forever runs */
    /* statistics (see top) */
    gl_trace_loop trace;             /* what the trace thread reads too */
    uint64_t base_steps, base_callbacks, base_preemptions;   /* stats(reset=True) */
    int64_t longest_ns;              /* longest stretch since then */
} CoreObject;

/* ---- statistics (see top) ---------------------------------------------- */

/* Counters have one writer, the loop's thread (with the GIL): a relaxed
 * load and store, not an atomic read-modify-write. */
static inline void
bump(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Around a wait for I/O that may block: the trace tells a loop waiting
 * from one stuck (schedtrace.c). */
static inline void
wait_begin(CoreObject *self)
{
    atomic_store_explicit(&self->trace.polling, 1, memory_order_relaxed);
}

static inline void
wait_end(CoreObject *self)
{
    atomic_store_explicit(&self->trace.polling, 0, memory_order_relaxed);
    bump(&self->trace.polls, 1);
}

/* A stretch of a task step ran for ns (preempted: it ended so). */
static inline void
count_stretch(CoreObject *self, int64_t ns, int preempted)
{
    bump(&self->trace.steps, 1);
    if (preempted)
        bump(&self->trace.preemptions, 1);
    if (ns > self->longest_ns)
        self->longest_ns = ns;
    /* The trace thread swaps in 0 each period: a stretch ending at that
     * instant may count in either period. */
    if (ns > atomic_load_explicit(&self->trace.period_longest_ns, memory_order_relaxed))
        atomic_store_explicit(&self->trace.period_longest_ns, ns, memory_order_relaxed);
}

/* The loop's own queue of preempted steps is an exact deque (core_new):
 * its length is its size, read without a call. */
static inline Py_ssize_t
queue_len(CoreObject *self)
{
    return self->preempted ? Py_SIZE(self->preempted) : 0;
}

static inline int64_t
live_timers(CoreObject *self)
{
    return self->timers.n > self->timers.zombies ? (int64_t)(self->timers.n - self->timers.zombies)
                                                 : 0;
}

/* The gauges, for the trace thread while it runs: at the start of each
 * batch, and before a poll that may block. */
static inline void
publish_gauges(CoreObject *self)
{
    if (!atomic_load_explicit(&gl_trace_on, memory_order_relaxed))
        return;
    gl_trace_loop *t = &self->trace;
    atomic_store_explicit(&t->ready, (int64_t)self->ready.n, memory_order_relaxed);
    atomic_store_explicit(&t->timers, live_timers(self), memory_order_relaxed);
    atomic_store_explicit(&t->preempted, (int64_t)queue_len(self), memory_order_relaxed);
}

/* The fds watched, when they change (-1 with a selector that is not
 * goloop's Poller, whose registrations only Python code can count). */
static void
publish_fds(CoreObject *self)
{
    atomic_store_explicit(&self->trace.fds,
                          self->poller ? (int64_t)gl_poller_count(self->poller) : -1,
                          memory_order_relaxed);
}

static inline double
seconds(int64_t ns)
{
    /* As time.monotonic() turns nanoseconds into a float, so that
     * loop.time() and time.monotonic() agree to the last bit. */
    if (ns % 1000000000 == 0)
        return (double)(ns / 1000000000);
    return (double)ns / 1e9;
}

static struct gl_core *
core_of(CoreObject *self)
{
    assert(self->st->core != NULL);   /* set up before any loop exists */
    return self->st->core;
}

/* ---- task steps -------------------------------------------------------- */

static int
is_task(struct gl_core *c, PyObject *obj)
{
    return PyObject_TypeCheck(obj, c->task_type) || PyObject_TypeCheck(obj, c->py_task_type);
}

/* Is the function of a bound method of a pure-Python Task its step or its
 * wakeup (__step, __wakeup), not another method — task.cancel scheduled
 * with call_soon is a plain callback, which must run while the task's step
 * is preempted? */
static int
is_py_task_step_function(PyObject *func)
{
    if (!PyFunction_Check(func))
        return 0;
    PyObject *name = ((PyFunctionObject *)func)->func_name;
    return PyUnicode_Check(name)
           && (PyUnicode_CompareWithASCIIString(name, "__step") == 0
               || PyUnicode_CompareWithASCIIString(name, "__wakeup") == 0);
}

/* Is callback a Task's step or wakeup, as the Task schedules them?  The C
 * Task's are a TaskStepMethWrapper and the builtin method task_wakeup bound
 * to the task; the pure-Python Task's, the bound methods __step and
 * __wakeup.  Any other method of a task (its cancel, say) is a plain
 * callback. */
static int
is_task_step(struct gl_core *c, PyObject *cb)
{
    PyTypeObject *tp = Py_TYPE(cb);
    if (tp == c->step_wrapper_type)
        return 1;
    if (PyFunction_Check(cb))
        return 0;   /* the common plain callback: decided at once */
    if (PyCFunction_Check(cb)) {
        /* Every C Task's wakeup, on every future it waits for: the method
         * definition is learnt by name once, then compared by pointer. */
        PyMethodDef *ml = ((PyCFunctionObject *)cb)->m_ml;
        if (ml == c->task_wakeup_def)
            return 1;
        PyObject *owner = PyCFunction_GET_SELF(cb);
        if (c->task_wakeup_def != NULL || owner == NULL || !is_task(c, owner)
                || strcmp(ml->ml_name, "task_wakeup") != 0)
            return 0;
        c->task_wakeup_def = ml;
        return 1;
    }
    if (PyMethod_Check(cb))
        return is_task(c, PyMethod_GET_SELF(cb))
               && is_py_task_step_function(PyMethod_GET_FUNCTION(cb));
    if (c->step_wrapper_type != NULL)
        return 0;
    const char *name = strrchr(tp->tp_name, '.');   /* "_asyncio.TaskStepMethWrapper" */
    if (strcmp(name ? name + 1 : tp->tp_name, "TaskStepMethWrapper") == 0) {
        PyObject *owner = PyObject_GetAttrString(cb, "__self__");
        if (owner == NULL) {
            PyErr_Clear();
            return 0;
        }
        int yes = is_task(c, owner);
        Py_DECREF(owner);
        if (yes)
            c->step_wrapper_type = (PyTypeObject *)Py_NewRef(tp);
        return yes;
    }
    return 0;
}

/* ---- scheduling -------------------------------------------------------- */

static int
check_open(CoreObject *self)
{
    if (self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

/* Debug mode's checks, as asyncio's call_soon/call_at make them. */
static int
debug_checks(CoreObject *self, PyObject *callback, const char *method, int thread)
{
    struct gl_core *c = core_of(self);
    PyObject *r;
    if (thread) {
        r = PyObject_CallMethodNoArgs((PyObject *)self, c->str_check_thread);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    PyObject *name = PyUnicode_FromString(method);
    if (name == NULL)
        return -1;
    r = PyObject_CallMethodObjArgs((PyObject *)self, c->str_check_callback, callback, name, NULL);
    Py_DECREF(name);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* The keyword arguments of call_soon & co.: only context=. */
static int
parse_context(struct gl_core *c, const char *method, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames, PyObject **context)
{
    *context = NULL;
    if (kwnames == NULL)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (key != c->str_context && key != c->str_context_seen) {
            if (!PyUnicode_Check(key) || PyUnicode_CompareWithASCIIString(key, "context") != 0) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%S'",
                             method, key);
                return -1;
            }
            /* The C Task passes the same string object on every step:
             * compared by pointer from now on. */
            Py_XSETREF(c->str_context_seen, Py_NewRef(key));
        }
        *context = args[nargs + i];
    }
    return 0;
}

static PyObject *
tuple_of(PyObject *const *items, Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t != NULL && i < n; i++)
        PyTuple_SET_ITEM(t, i, Py_NewRef(items[i]));
    return t;
}

/* Fewer positional arguments than `need` (names: the first `need`
 * parameters' names): the TypeError Python raises for asyncio's methods. */
static int
missing(const char *method, Py_ssize_t nargs, Py_ssize_t need, const char *const *names)
{
    if (nargs >= need)
        return 0;
    Py_ssize_t n = need - nargs;
    if (n == 1)
        PyErr_Format(PyExc_TypeError,
                     "%s() missing 1 required positional argument: '%s'",
                     method, names[need - 1]);
    else
        PyErr_Format(PyExc_TypeError,
                     "%s() missing 2 required positional arguments: '%s' and '%s'",
                     method, names[need - 2], names[need - 1]);
    return -1;
}

static const char *const CALLBACK[] = {"callback"};
static const char *const WHEN_CALLBACK[] = {"when", "callback"};
static const char *const DELAY_CALLBACK[] = {"delay", "callback"};
static const char *const FD_CALLBACK[] = {"fd", "callback"};

/* Put a new Handle for callback(*args) in the ready queue. */
static PyObject *
schedule_soon(CoreObject *self, PyObject *callback, PyObject *args, PyObject *context)
{
    struct gl_core *c = core_of(self);
    int hidden;
    PyObject *h = gl_handle_new(c, (PyObject *)self, self->is_debug, callback, args,
                                context, NULL, &hidden);
    if (h == NULL)
        return NULL;
    if (gl_ready_push_hidden(&self->ready, Py_NewRef(h), is_task_step(c, callback),
                             hidden) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

static PyObject *
core_call_soon(CoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *context;
    if (parse_context(core_of(self), "BaseEventLoop.call_soon", args, nargs, kwnames, &context) < 0
            || missing("BaseEventLoop.call_soon", nargs, 1, CALLBACK) < 0 || check_open(self) < 0)
        return NULL;
    if (self->is_debug && debug_checks(self, args[0], "call_soon", 1) < 0)
        return NULL;
    PyObject *cbargs = tuple_of(args + 1, nargs - 1);
    if (cbargs == NULL)
        return NULL;
    PyObject *h = schedule_soon(self, args[0], cbargs, context);
    Py_DECREF(cbargs);
    return h;
}

/* _call_soon(callback, args, context): asyncio's internal entry. */
static PyObject *
core__call_soon(CoreObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "BaseEventLoop._call_soon() takes 3 positional arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *cbargs = PySequence_Tuple(args[1]);
    if (cbargs == NULL)
        return NULL;
    PyObject *h = schedule_soon(self, args[0], cbargs, args[2]);
    Py_DECREF(cbargs);
    return h;
}

static PyObject *
core_call_soon_threadsafe(CoreObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    struct gl_core *c = core_of(self);
    PyObject *context;
    if (parse_context(core_of(self), "BaseEventLoop.call_soon_threadsafe", args, nargs, kwnames, &context) < 0
            || missing("BaseEventLoop.call_soon_threadsafe", nargs, 1, CALLBACK) < 0
            || check_open(self) < 0)
        return NULL;
    if (self->is_debug && debug_checks(self, args[0], "call_soon_threadsafe", 0) < 0)
        return NULL;
    PyObject *cbargs = tuple_of(args + 1, nargs - 1);
    if (cbargs == NULL)
        return NULL;
    PyObject *h;
    if (c->threadsafe_type != NULL) {
        /* 3.14+: a handle whose cancel() and run take a lock. */
        h = PyObject_CallFunctionObjArgs((PyObject *)c->threadsafe_type, args[0], cbargs,
                                         (PyObject *)self, context ? context : Py_None, NULL);
        if (h != NULL && self->is_debug && gl_handle_record_stack(c, h) < 0)
            Py_CLEAR(h);
        if (h != NULL && gl_ready_push(&self->ready, Py_NewRef(h), 0) < 0)
            Py_CLEAR(h);
    }
    else
        h = schedule_soon(self, args[0], cbargs, context);
    Py_DECREF(cbargs);
    if (h != NULL && self->sleeping) {
        if (self->poller != NULL)
            gl_poller_wake(self->poller);
        else {   /* a selector of the user's: asyncio's self-pipe */
            PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self, c->str_write_to_self);
            if (r == NULL)
                Py_CLEAR(h);
            Py_XDECREF(r);
        }
    }
    return h;
}

/* A TimerHandle for callback(*args) at `when` (the object asyncio keeps as
 * _when; `due`, the same as a float). */
static PyObject *
schedule_at(CoreObject *self, PyObject *when, double due, PyObject *const *args,
            Py_ssize_t nargs, PyObject *context)
{
    struct gl_core *c = core_of(self);
    if (check_open(self) < 0)
        return NULL;
    if (isnan(due))
        due = -INFINITY;   /* asyncio's heap finds a NaN due at once */
    if (self->is_debug && debug_checks(self, args[0], "call_at", 1) < 0)
        return NULL;
    PyObject *cbargs = tuple_of(args + 1, nargs - 1);
    if (cbargs == NULL)
        return NULL;
    PyObject *h = gl_handle_new(c, (PyObject *)self, self->is_debug, args[0], cbargs,
                                context, when, NULL);
    Py_DECREF(cbargs);
    if (h == NULL)
        return NULL;
    if (gl_timers_push(&self->timers, due, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    Py_XSETREF(GL_SLOT(h, c->off_scheduled), Py_NewRef(Py_True));
    return h;
}

static PyObject *
core_call_at(CoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *context;
    if (parse_context(core_of(self), "BaseEventLoop.call_at", args, nargs, kwnames, &context) < 0
            || missing("BaseEventLoop.call_at", nargs, 2, WHEN_CALLBACK) < 0)
        return NULL;
    if (args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "when cannot be None");
        return NULL;
    }
    double due = PyFloat_AsDouble(args[0]);
    if (due == -1.0 && PyErr_Occurred()) {
        /* Not a number.  asyncio takes it into an empty heap (comparing it
         * with another timer fails) and fails at the next iteration, which
         * subtracts the time from it (run_once): so does the core, with
         * the timer at the head. */
        if (self->timers.n > 0 || !PyErr_ExceptionMatches(PyExc_TypeError))
            return NULL;
        PyErr_Clear();
        due = -INFINITY;
    }
    return schedule_at(self, args[0], due, args + 1, nargs - 1, context);
}

static PyObject *
core_call_later(CoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *context;
    if (parse_context(core_of(self), "BaseEventLoop.call_later", args, nargs, kwnames, &context) < 0
            || missing("BaseEventLoop.call_later", nargs, 2, DELAY_CALLBACK) < 0)
        return NULL;
    PyObject *delay = args[0];
    if (delay == Py_None) {
        PyErr_SetString(PyExc_TypeError, "delay must not be None");
        return NULL;
    }
    PyObject *now = PyFloat_FromDouble(seconds(gl_nanotime()));
    if (now == NULL)
        return NULL;
    /* time() + delay, as asyncio computes it (the same errors for a delay
     * that is not a number). */
    PyObject *when = PyNumber_Add(now, delay);
    Py_DECREF(now);
    if (when == NULL)
        return NULL;
    double due = PyFloat_AsDouble(when);
    PyObject *h = due == -1.0 && PyErr_Occurred()
                  ? NULL : schedule_at(self, when, due, args + 1, nargs - 1, context);
    Py_DECREF(when);
    return h;
}

static PyObject *
core_time(CoreObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyFloat_FromDouble(seconds(gl_nanotime()));
}

/* _add_callback(handle): asyncio's entry for handles it made itself
 * (readers and writers ready after a poll, signal handlers). */
static PyObject *
core_add_callback(CoreObject *self, PyObject *handle)
{
    struct gl_core *c = core_of(self);
    if (!PyObject_TypeCheck(handle, c->handle_type)) {
        PyErr_Format(PyExc_TypeError, "A Handle is required, not %.100s",
                     Py_TYPE(handle)->tp_name);
        return NULL;
    }
    int cancelled = gl_handle_cancelled(c, handle);
    if (cancelled < 0)
        return NULL;
    if (!cancelled && gl_ready_push(&self->ready, Py_NewRef(handle), 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
core_timer_handle_cancelled(CoreObject *self, PyObject *handle)
{
    struct gl_core *c = core_of(self);
    if (PyObject_TypeCheck(handle, c->timer_type)) {
        PyObject *scheduled = GL_SLOT(handle, c->off_scheduled);
        int yes = scheduled ? PyObject_IsTrue(scheduled) : 0;
        if (yes < 0)
            return NULL;
        if (yes)
            self->timers.zombies++;
    }
    Py_RETURN_NONE;
}

/* ---- futures and tasks ------------------------------------------------- */

/* BaseEventLoop's create_future, create_task and get_debug, in C: every
 * Future and Task asks its loop's get_debug() when it is made, and
 * create_task() adds two Python frames (itself and _check_closed) to each
 * task's start — a tenth of what a trivial task costs.  They do what the
 * running version's Python does, looking up futures.Future and tasks.Task
 * at each call as it does (tests and tools replace them).  They take the
 * common case — not in debug mode, whose creation tracebacks show
 * asyncio's own frames; for create_task, no task factory, the loop open,
 * the keywords the version accepts — and leave anything else, errors
 * included, to BaseEventLoop's method, which then does exactly what it
 * would. */

static PyObject *
core_get_debug(CoreObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self->debug ? self->debug : Py_False);
}

/* BaseEventLoop's method `name` called on self. */
static PyObject *
call_base_method(CoreObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    PyObject *func = PyObject_GetAttr((PyObject *)core_of(self)->base_loop_type, name);
    PyObject *bound = func ? PyMethod_New(func, (PyObject *)self) : NULL;
    Py_XDECREF(func);
    PyObject *r = bound ? PyObject_Vectorcall(bound, args, (size_t)nargs, kwnames) : NULL;
    Py_XDECREF(bound);
    return r;
}

static PyObject *
core_create_future(CoreObject *self, PyObject *unused)
{
    (void)unused;
    struct gl_core *c = core_of(self);
    if (self->is_debug)
        return call_base_method(self, c->str_create_future, NULL, 0, NULL);
    PyObject *future = PyObject_GetAttr(c->futures_module, c->str_Future);
    if (future == NULL)
        return NULL;
    PyObject *stack[1] = {(PyObject *)self};
    PyObject *r = PyObject_Vectorcall(future, stack, 0, c->kw_loop);
    Py_DECREF(future);
    return r;
}

/* The keywords Task(coro, loop=self, **kwargs) gets: ("loop",) + kwnames,
 * remembered for the last kwnames seen (callers pass the same constant
 * tuple each time); NULL (no exception) when the fast path cannot take
 * them. */
static PyObject *
task_kwnames(struct gl_core *c, PyObject *kwnames)
{
    if (kwnames == NULL)
        return c->kw_loop;
    if (kwnames == c->kw_seen)
        return c->kw_task;
    Py_ssize_t n = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
#if GL_PY_MINOR <= 13
        /* create_task(coro, *, name=None, context=None) */
        if (PyUnicode_CompareWithASCIIString(k, "name") != 0
                && PyUnicode_CompareWithASCIIString(k, "context") != 0)
            return NULL;
#else
        /* create_task(coro, **kwargs), passed on after loop=self */
        if (PyUnicode_CompareWithASCIIString(k, "loop") == 0)
            return NULL;
#endif
    }
    PyObject *t = PyTuple_New(n + 1);
    if (t == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, Py_NewRef(PyTuple_GET_ITEM(c->kw_loop, 0)));
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i + 1, Py_NewRef(PyTuple_GET_ITEM(kwnames, i)));
    Py_XSETREF(c->kw_seen, Py_NewRef(kwnames));
    Py_XSETREF(c->kw_task, t);
    return t;
}

#define TASK_MAX_KWARGS 8

static PyObject *
core_create_task(CoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    struct gl_core *c = core_of(self);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *names = NULL;
    if (nargs == 1 && nkw <= TASK_MAX_KWARGS && !self->closed && !self->is_debug)
        names = task_kwnames(c, kwnames);
    PyObject *factory = names ? PyObject_GetAttr((PyObject *)self, c->str_task_factory) : NULL;
    if (factory == NULL && PyErr_Occurred())
        return NULL;
    Py_XDECREF(factory);
    if (factory != Py_None)
        return call_base_method(self, c->str_create_task, args, nargs, kwnames);
    PyObject *task = PyObject_GetAttr(c->tasks_module, c->str_Task);
    if (task == NULL)
        return NULL;
    /* Task(coro, loop=self, **kwargs): loop=self is the first keyword. */
    PyObject *stack[2 + TASK_MAX_KWARGS];
    stack[0] = args[0];
    stack[1] = (PyObject *)self;
    for (Py_ssize_t i = 0; i < nkw; i++)
        stack[2 + i] = args[1 + i];
    PyObject *r = PyObject_Vectorcall(task, stack, 1, names);
    Py_DECREF(task);
    return r;
}

/* ---- readers and writers ---------------------------------------------- */

/* The loop's Poller, or NULL with an exception (another selector: the
 * Python EventLoop routes these calls to asyncio's own code instead). */
static PollerObject *
poller_of(CoreObject *self)
{
    if (self->poller == NULL)
        PyErr_SetString(PyExc_RuntimeError,
                        "this loop's selector is not goloop's Poller");
    return self->poller;
}

/* _add_reader(fd, callback, *args) — and, as from 3.15, context=: the
 * transports pass theirs. */
static PyObject *
add_watch(CoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
          int event, const char *method)
{
    PyObject *context;
    if (parse_context(core_of(self), method, args, nargs, kwnames, &context) < 0
            || missing(method, nargs, 2, FD_CALLBACK) < 0 || check_open(self) < 0)
        return NULL;
    PollerObject *p = poller_of(self);
    PyObject *cbargs = p ? tuple_of(args + 2, nargs - 2) : NULL;
    if (cbargs == NULL)
        return NULL;
    PyObject *h = gl_handle_new(core_of(self), (PyObject *)self, self->is_debug, args[1],
                                cbargs, context, NULL, NULL);
    Py_DECREF(cbargs);
    if (h != NULL && gl_poller_add(p, args[0], event, h) < 0)
        Py_CLEAR(h);
    publish_fds(self);
    return h;
}

static PyObject *
remove_watch(CoreObject *self, PyObject *fd, int event)
{
    if (self->closed)
        Py_RETURN_FALSE;
    PollerObject *p = poller_of(self);
    int r = p ? gl_poller_remove(p, fd, event) : -1;
    publish_fds(self);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *
core_add_reader(CoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return add_watch(self, args, nargs, kwnames, 1, "BaseSelectorEventLoop._add_reader");
}

static PyObject *
core_add_writer(CoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return add_watch(self, args, nargs, kwnames, 2, "BaseSelectorEventLoop._add_writer");
}

static PyObject *
core_remove_reader(CoreObject *self, PyObject *fd)
{
    return remove_watch(self, fd, 1);
}

static PyObject *
core_remove_writer(CoreObject *self, PyObject *fd)
{
    return remove_watch(self, fd, 2);
}

/* ---- one iteration ----------------------------------------------------- */

static Py_ssize_t
preempted_count(CoreObject *self)
{
    return self->preempted ? gl_steps_waiting(self->st, self->preempted) : 0;
}

/* A timer whose `when` was not a number (call_at): fail as asyncio's
 * iteration does — computing the poll's timeout (when - time(); op Py_LT
 * here) or checking whether it is due (when >= end; Py_GE). */
static int
check_bad_when(CoreObject *self, PyObject *handle, int op)
{
    PyObject *when = GL_SLOT(handle, core_of(self)->off_when);
    if (when == NULL || PyFloat_Check(when) || PyLong_Check(when))
        return 0;
    PyObject *now = PyFloat_FromDouble(seconds(gl_nanotime()));
    PyObject *r = now == NULL ? NULL
                  : op == Py_LT ? PyNumber_Subtract(when, now)
                  : PyObject_RichCompare(when, now, op);
    Py_XDECREF(now);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* A ready fd's reader or writer: to the ready queue, or — cancelled — its
 * registration removed, as asyncio's _process_events does. */
static int
on_fd_ready(void *arg, PyObject *handle, int fd, int event)
{
    CoreObject *self = arg;
    if (handle == NULL)
        return 0;
    int cancelled = gl_handle_cancelled(core_of(self), handle);
    if (cancelled < 0)
        return -1;
    if (!cancelled)
        return gl_ready_push(&self->ready, Py_NewRef(handle), 0);
    PyObject *fileobj = Py_XNewRef(gl_poller_fileobj(self->poller, fd));
    int r = fileobj ? gl_poller_remove(self->poller, fileobj, event) : 0;
    Py_XDECREF(fileobj);
    publish_fds(self);
    return r < 0 ? -1 : 0;
}

/* Poll with goloop's Poller: epoll, straight into the ready queue. */
static int
poll_native(CoreObject *self, int busy)
{
    int64_t timeout = -1;
    if (busy)
        timeout = 0;
    else if (self->timers.n > 0) {
        if (check_bad_when(self, self->timers.heap[0].handle, Py_LT) < 0)
            return -1;
        double t = self->timers.heap[0].when - seconds(gl_nanotime());
        timeout = t > MAXIMUM_SELECT_TIMEOUT ? (int64_t)(MAXIMUM_SELECT_TIMEOUT * 1e9)
                  : t <= 0 ? 0 : (int64_t)(t * 1e9) + 1;
    }
    self->sleeping = timeout != 0;
    if (timeout != 0) {
        gl_preempt_poll_enter(self->st);
        wait_begin(self);
    }
    int n = gl_poller_wait(self->poller, timeout, on_fd_ready, self);
    if (timeout != 0) {
        wait_end(self);
        gl_preempt_poll_exit(self->st);
    }
    self->sleeping = 0;
    self->last_poll = gl_nanotime();
    gl_preempt_clock_note(self->st, self->last_poll);
    return n < 0 ? -1 : 0;
}

static int
poll(CoreObject *self, int busy)
{
    struct gl_core *c = core_of(self);
    if (self->poller != NULL)
        return poll_native(self, busy);
    PyObject *timeout;
    if (busy)
        timeout = PyFloat_FromDouble(0.0);
    else if (self->timers.n > 0) {
        if (check_bad_when(self, self->timers.heap[0].handle, Py_LT) < 0)
            return -1;
        double t = self->timers.heap[0].when - seconds(gl_nanotime());
        timeout = PyFloat_FromDouble(t > MAXIMUM_SELECT_TIMEOUT ? MAXIMUM_SELECT_TIMEOUT
                                     : t < 0 ? 0.0 : t);
    }
    else
        timeout = Py_NewRef(Py_None);
    if (timeout == NULL)
        return -1;
    PyObject *selector = PyObject_GetAttr((PyObject *)self, c->str_selector);
    if (selector == NULL) {
        Py_DECREF(timeout);
        return -1;
    }
    /* From here a thread's call_soon_threadsafe must wake us (see top). */
    self->sleeping = !busy;
    if (!busy)
        wait_begin(self);
    PyObject *events = PyObject_CallMethodOneArg(selector, c->str_select, timeout);
    if (!busy)
        wait_end(self);
    self->sleeping = 0;
    self->last_poll = gl_nanotime();
    Py_DECREF(selector);
    Py_DECREF(timeout);
    if (events == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, c->str_process_events, events);
    Py_DECREF(events);
    Py_XDECREF(r);
    gl_preempt_clock_note(self->st, 0);   /* after Python code */
    return r ? 0 : -1;
}

static int
run_entry(CoreObject *self, gl_ready_entry e, gl_step_end *end)
{
    int rc;
    if (e.step && self->goroutines) {
        /* How the stretch ended, for the statistics (see top). */
        gl_step_end own = {0, 0, NULL};
        gl_step_end *how = end ? end : &own;
        Py_ssize_t before = queue_len(self);
        PyObject *r = gl_step_run(self->st, e.handle, self->preempted, self->pool, how);
        int preempted = queue_len(self) > before;
        /* Not run at all: held back behind its task's preempted step. */
        int held_back = r != NULL && !preempted && !how->finished && how->ran_ns == 0;
        if (!held_back)
            count_stretch(self, how->ran_ns, preempted);
        Py_CLEAR(own.handle);   /* before the handle's release (freelist) */
        Py_XDECREF(r);
        rc = r ? 0 : -1;
    }
    else {
        gl_preempt_clock_note(self->st, 0);   /* it may run for a while */
        if (e.step)
            bump(&self->trace.steps, 1);   /* goroutines=False: inline, untimed */
        else {
            bump(&self->trace.callbacks, 1);
            core_of(self)->callbacks++;
        }
        rc = gl_handle_run(core_of(self), e.handle, 0);
    }
    return rc;
}

/* Debug mode: warn, as asyncio does, of a callback or a whole task step
 * that ran slow_callback_duration or more. */
static int
report_if_slow(CoreObject *self, PyObject *handle, double seconds_ran)
{
    struct gl_core *c = core_of(self);
    PyObject *slow = PyObject_GetAttr((PyObject *)self, c->str_slow_callback_duration);
    double limit = slow ? PyFloat_AsDouble(slow) : -1.0;
    Py_XDECREF(slow);
    if (PyErr_Occurred())
        return -1;
    if (seconds_ran < limit)
        return 0;
    PyObject *d = PyFloat_FromDouble(seconds_ran);
    PyObject *r = d ? PyObject_CallFunctionObjArgs(c->report_slow, (PyObject *)self,
                                                   handle, d, NULL) : NULL;
    Py_XDECREF(d);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Debug mode: asyncio's _current_handle and slow-callback warning.  A task
 * step is timed over all its stretches (steps.c): one preempted along the
 * way is reported, with its whole time, when it finishes. */
static int
run_entry_debug(CoreObject *self, gl_ready_entry e)
{
    struct gl_core *c = core_of(self);
    if (PyObject_SetAttr((PyObject *)self, c->str_current_handle, e.handle) < 0)
        return -1;
    gl_step_end end = {1, -1, NULL};
    int64_t t0 = gl_nanotime();
    int rc = run_entry(self, e, &end);
    double dt = end.ran_ns >= 0 ? end.ran_ns / 1e9 : seconds(gl_nanotime()) - seconds(t0);
    PyObject *exc = rc < 0 ? gl_err_take() : NULL;
    if (PyObject_SetAttr((PyObject *)self, c->str_current_handle, Py_None) < 0) {
        if (exc == NULL)
            rc = -1;
        else
            PyErr_Clear();
    }
    if (exc != NULL)
        gl_err_give(exc);
    else if (rc == 0 && end.finished)
        rc = report_if_slow(self, e.handle, dt);
    Py_XDECREF(end.handle);
    return rc;
}

/* Stay out of the GIL for a moment once per switch interval (see top). */
static void
hand_over_gil(CoreObject *self, int64_t now)
{
    double interval = 0.005;
    PyObject *getter = PySys_GetObject("getswitchinterval");   /* borrowed */
    PyObject *v = getter ? PyObject_CallNoArgs(getter) : NULL;
    if (v != NULL) {
        interval = PyFloat_AsDouble(v);
        Py_DECREF(v);
    }
    PyErr_Clear();
    if (now - self->gil_handed < (int64_t)(interval * 1e9))
        return;
    PyThreadState *head = PyInterpreterState_ThreadHead(PyInterpreterState_Get());
    if (head == NULL || PyThreadState_Next(head) == NULL)
        return;   /* no other thread */
    struct timespec pause = {0, GIL_PAUSE_NS};
    Py_BEGIN_ALLOW_THREADS
    nanosleep(&pause, NULL);
    Py_END_ALLOW_THREADS
    self->gil_handed = gl_nanotime();
    gl_preempt_clock_note(self->st, self->gil_handed);
}

static int
resume_preempted(CoreObject *self)
{
    Py_ssize_t waiting = preempted_count(self);
    if (waiting <= 0)
        return (int)waiting;
    int64_t now = gl_preempt_clock(self->st);
    if (self->ready.n > 0) {
        if (self->preempted_since < 0)
            self->preempted_since = now;
        if (now - self->preempted_since < self->slice_ns)
            return 0;
    }
    self->preempted_since = -1;
    hand_over_gil(self, now);
    /* The time its step has run so far, to tell this stretch's (see top). */
    int64_t ran_before = 0;
    PyObject *head = PySequence_GetItem(self->preempted, 0);
    if (head == NULL)
        PyErr_Clear();   /* gl_step_resume reports what is wrong */
    else if (PyObject_TypeCheck(head, self->st->goroutine_type))
        ran_before = ((GoroutineObject *)head)->step_ran_ns;
    Py_XDECREF(head);
    gl_step_end end = {0, 0, NULL};
    PyObject *r = gl_step_resume(self->st, self->preempted, NULL, &end);
    if (queue_len(self) >= waiting)   /* popped, and appended again */
        count_stretch(self, end.ran_ns - ran_before, 1);
    else if (r != NULL || end.ran_ns > 0)   /* finished (or raised) */
        count_stretch(self, end.ran_ns >= ran_before ? end.ran_ns - ran_before : end.ran_ns, 0);
    Py_XDECREF(r);
    int rc = r ? 0 : -1;
    if (rc == 0 && self->is_debug && end.finished && end.handle != NULL)
        rc = report_if_slow(self, end.handle, end.ran_ns / 1e9);
    Py_XDECREF(end.handle);
    return rc;
}

static int
run_once(CoreObject *self)
{
    struct gl_core *c = core_of(self);
    if (gl_timers_drop_cancelled(c, &self->timers) < 0)
        return -1;
    Py_ssize_t waiting = preempted_count(self);
    if (waiting < 0)
        return -1;
    int busy = self->ready.n > 0 || self->stopping || waiting > 0;
    if (!busy)
        publish_gauges(self);   /* what it holds while it sleeps */
    int64_t now = gl_preempt_clock(self->st);   /* the last step's end, if any */
    if (!busy || now - self->last_poll >= POLL_SKIP_NS) {
        if (poll(self, busy) < 0)
            return -1;
        now = self->last_poll;
    }
    double end = seconds(now) + self->clock_resolution;
    while (self->timers.n > 0 && self->timers.heap[0].when < end) {
        if (check_bad_when(self, self->timers.heap[0].handle, Py_GE) < 0)
            return -1;
        int hidden;
        PyObject *h = gl_timers_pop(&self->timers, &hidden);
        Py_XSETREF(GL_SLOT(h, c->off_scheduled), Py_NewRef(Py_False));
        if (gl_ready_push_hidden(&self->ready, h, 0, hidden) < 0)
            return -1;
    }
    publish_gauges(self);
    /* The batch: what is ready now, not what it schedules. */
    for (size_t todo = self->ready.n; todo > 0 && self->ready.n > 0; todo--) {
        /* Run off the collector's lists, as it waited (handles.c). */
        gl_ready_entry e = gl_ready_take(&self->ready);
        int cancelled = gl_handle_cancelled(c, e.handle);
        int rc = cancelled < 0 ? -1
                 : cancelled ? 0
                 : self->is_debug ? run_entry_debug(self, e) : run_entry(self, e, NULL);
        gl_handle_release(c, e.handle, e.untracked);
        if (rc < 0)
            return -1;
    }
    return resume_preempted(self);
}

/* One iteration, with a Ctrl-C that the loop's own code took sent on. */
static PyObject *
iterate(CoreObject *self)
{
    if (run_once(self) == 0)
        Py_RETURN_NONE;
    if (!(PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
          || PyErr_ExceptionMatches(PyExc_SystemExit)))
        return NULL;
    PyObject *exc = gl_err_take();
    Py_ssize_t waiting = preempted_count(self);
    if (waiting <= 0 || gl_step_raised(self->st, exc)) {
        if (waiting < 0)
            PyErr_Clear();
        gl_err_give(exc);
        return NULL;
    }
    /* The loop's own code took it (a signal handler ran here): it goes
     * where stock asyncio would have raised it, into the computation. */
    if (PyException_SetTraceback(exc, Py_None) < 0)
        PyErr_Clear();
    PyObject *r = gl_step_resume(self->st, self->preempted, exc, NULL);
    Py_DECREF(exc);
    return r;
}

/* _run_once(), called from Python: whatever ran since the last step may
 * have taken any time (the clock hint, preempt.c). */
static PyObject *
core_run_once(CoreObject *self, PyObject *unused)
{
    (void)unused;
    gl_preempt_clock_note(self->st, 0);
    return iterate(self);
}

/* _run_until_stopped(): run_forever's loop — iterations until stop().  An
 * iteration is the core's own unless something replaced _run_once (a
 * subclass, or an attribute of the loop): then that is called, each time,
 * as BaseEventLoop.run_forever would.  Signals are checked once per
 * iteration, for the iterations that run no Python code at all. */
static PyObject *
core_run_until_stopped(CoreObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *name = PyUnicode_InternFromString("_run_once");
    if (name == NULL)
        return NULL;
    PyObject *method = PyObject_GetAttr((PyObject *)self, name);
    Py_DECREF(name);
    if (method == NULL)
        return NULL;
    int own = PyCFunction_Check(method)
              && PyCFunction_GET_FUNCTION(method) == (PyCFunction)core_run_once
              && PyCFunction_GET_SELF(method) == (PyObject *)self;
    /* This thread's step workers, looked up once per run, not per step. */
    PyObject *pool = gl_steps_pool(self->st);
    if (pool == NULL) {
        Py_DECREF(method);
        return NULL;
    }
    Py_XSETREF(self->pool, pool);
    PyObject *result = Py_None;
    /* Traced while it runs (schedtrace.c), from this thread. */
    int traced = !self->registered;
    if (traced) {
        self->registered = 1;
        gl_trace_register(&self->trace);
        publish_fds(self);
        publish_gauges(self);
    }
    gl_preempt_clock_note(self->st, 0);   /* what ran before this run */
    for (;;) {
        /* (a subclass's _run_once reaches the core by core_run_once,
         * which drops the clock hint) */
        PyObject *r = own ? iterate(self) : PyObject_CallNoArgs(method);
        if (r == NULL) {
            result = NULL;
            break;
        }
        Py_DECREF(r);
        if (self->stopping)
            break;
        if (PyErr_CheckSignals() < 0) {
            result = NULL;
            break;
        }
    }
    gl_preempt_clock_note(self->st, 0);   /* what runs after it */
    if (traced) {
        gl_trace_unregister(&self->trace);
        self->registered = 0;
    }
    Py_CLEAR(self->pool);
    Py_DECREF(method);
    return Py_XNewRef(result);
}

/* _drop_pending(): what close() leaves behind — ready callbacks, timers,
 * preempted steps (their workers unwind them, as stock asyncio drops the
 * pending tasks of a closed loop). */
static PyObject *
core_drop_pending(CoreObject *self, PyObject *unused)
{
    (void)unused;
    gl_ready_clear(&self->ready);
    gl_timers_clear(&self->timers);
    if (self->preempted != NULL) {
        PyObject *r = PyObject_CallMethod(self->preempted, "clear", NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

/* ---- the state asyncio's Python code shares ---------------------------- */

static PyObject *
get_ready(CoreObject *self, void *unused)
{
    (void)unused;
    PyObject *list = gl_ready_list(&self->ready);
    PyObject *d = list ? PyObject_CallOneArg(core_of(self)->deque_type, list) : NULL;
    Py_XDECREF(list);
    return d;
}

static int
set_ready(CoreObject *self, PyObject *value, void *unused)
{
    (void)unused;
    struct gl_core *c = core_of(self);
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_ready cannot be deleted");
        return -1;
    }
    PyObject *items = PySequence_List(value);
    if (items == NULL)
        return -1;
    gl_ready_clear(&self->ready);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *h = PyList_GET_ITEM(items, i);
        PyObject *cb = PyObject_TypeCheck(h, c->handle_type) ? GL_SLOT(h, c->off_callback) : NULL;
        if (gl_ready_push(&self->ready, Py_NewRef(h), cb && is_task_step(c, cb)) < 0) {
            Py_DECREF(items);
            return -1;
        }
    }
    Py_DECREF(items);
    return 0;
}

static PyObject *
get_scheduled(CoreObject *self, void *unused)
{
    (void)unused;
    return gl_timers_list(&self->timers);
}

static int
set_scheduled(CoreObject *self, PyObject *value, void *unused)
{
    (void)unused;
    struct gl_core *c = core_of(self);
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_scheduled cannot be deleted");
        return -1;
    }
    PyObject *items = PySequence_List(value);
    if (items == NULL)
        return -1;
    gl_timers_clear(&self->timers);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *h = PyList_GET_ITEM(items, i);
        double due = -1.0;
        if (!PyObject_TypeCheck(h, c->timer_type))
            PyErr_Format(PyExc_TypeError, "_scheduled holds TimerHandles, not %.100s",
                         Py_TYPE(h)->tp_name);
        else
            due = PyFloat_AsDouble(GL_SLOT(h, c->off_when) ? GL_SLOT(h, c->off_when) : Py_None);
        if ((due == -1.0 && PyErr_Occurred()) || gl_timers_push(&self->timers, due, h) < 0) {
            Py_DECREF(items);
            return -1;
        }
    }
    Py_DECREF(items);
    return 0;
}

static PyObject *
get_flag(CoreObject *self, void *which)
{
    return PyBool_FromLong(*((char *)self + (Py_ssize_t)which));
}

static int
set_flag(CoreObject *self, PyObject *value, void *which)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete a loop flag");
        return -1;
    }
    int yes = PyObject_IsTrue(value);
    if (yes < 0)
        return -1;
    *((char *)self + (Py_ssize_t)which) = (char)yes;
    return 0;
}

static PyObject *
get_debug(CoreObject *self, void *unused)
{
    (void)unused;
    return Py_NewRef(self->debug ? self->debug : Py_False);
}

static int
set_debug(CoreObject *self, PyObject *value, void *unused)
{
    (void)unused;
    int yes = value ? PyObject_IsTrue(value) : 0;
    if (yes < 0)
        return -1;
    Py_XSETREF(self->debug, Py_XNewRef(value));
    self->is_debug = (char)yes;
    return 0;
}

static PyObject *
get_time_slice(CoreObject *self, void *unused)
{
    (void)unused;
    return Py_NewRef(self->time_slice ? self->time_slice : Py_None);
}

static int
set_time_slice(CoreObject *self, PyObject *value, void *unused)
{
    (void)unused;
    double s = 0.01;   /* goloop's default; _preempt.py sets the real one */
    if (value != NULL && value != Py_None) {
        s = PyFloat_AsDouble(value);
        if (s == -1.0 && PyErr_Occurred())
            return -1;
    }
    Py_XSETREF(self->time_slice, Py_XNewRef(value));
    self->slice_ns = (int64_t)(s * 1e9);
    return 0;
}

static PyObject *
get_clock_resolution(CoreObject *self, void *unused)
{
    (void)unused;
    return PyFloat_FromDouble(self->clock_resolution);
}

static int
set_clock_resolution(CoreObject *self, PyObject *value, void *unused)
{
    (void)unused;
    double r = value ? PyFloat_AsDouble(value) : -1.0;
    if (r == -1.0 && (value == NULL || PyErr_Occurred())) {
        if (value == NULL)
            PyErr_SetString(PyExc_AttributeError, "cannot delete _clock_resolution");
        return -1;
    }
    self->clock_resolution = r;
    return 0;
}

static PyObject *
get_cancelled_count(CoreObject *self, void *unused)
{
    (void)unused;
    return PyLong_FromSize_t(self->timers.zombies);
}

static int
set_cancelled_count(CoreObject *self, PyObject *value, void *unused)
{
    (void)unused;
    Py_ssize_t n = value ? PyLong_AsSsize_t(value) : -1;
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "_timer_cancelled_count must be >= 0");
        return -1;
    }
    self->timers.zombies = (size_t)n;
    return 0;
}

/* _selector: kept in the instance's __dict__ as asyncio keeps it; the core
 * notes whether it is goloop's Poller, whose calls it makes in C. */
static PyObject *
get_selector(CoreObject *self, void *unused)
{
    (void)unused;
    PyObject *v = self->selector ? self->selector : Py_None;
    return Py_NewRef(v);
}

static int
set_selector(CoreObject *self, PyObject *value, void *unused)
{
    (void)unused;
    Py_XSETREF(self->selector, Py_XNewRef(value));
    Py_CLEAR(self->poller);
    if (value != NULL && Py_IS_TYPE(value, self->st->poller_type))
        self->poller = (PollerObject *)Py_NewRef(value);
    publish_fds(self);
    return 0;
}

static PyObject *
get_preempted(CoreObject *self, void *unused)
{
    (void)unused;
    return Py_NewRef(self->preempted ? self->preempted : Py_None);
}

#define FLAG(name, field, doc) \
    {name, (getter)get_flag, (setter)set_flag, doc, (void *)offsetof(CoreObject, field)}

static PyGetSetDef core_getset[] = {
    {"_ready", (getter)get_ready, (setter)set_ready,
     "The ready queue, as a snapshot deque; assigning replaces it.", NULL},
    {"_scheduled", (getter)get_scheduled, (setter)set_scheduled,
     "The timers, as a snapshot list in heap order; assigning replaces them.", NULL},
    {"_timer_cancelled_count", (getter)get_cancelled_count, (setter)set_cancelled_count,
     "Cancelled timers still in the heap.", NULL},
    {"_debug", (getter)get_debug, (setter)set_debug, NULL, NULL},
    {"_clock_resolution", (getter)get_clock_resolution, (setter)set_clock_resolution, NULL, NULL},
    {"_time_slice", (getter)get_time_slice, (setter)set_time_slice,
     "Seconds a task step runs before it is preempted (None: the default).", NULL},
    {"_selector", (getter)get_selector, (setter)set_selector,
     "The loop's selector: goloop's Poller unless another was given.", NULL},
    {"_preempted", (getter)get_preempted, NULL,
     "The deque of preempted step workers, oldest first.", NULL},
    FLAG("_closed", closed, NULL),
    FLAG("_stopping", stopping, NULL),
    FLAG("_goroutines", goroutines, "Task steps run on goroutines."),
    FLAG("_preempt", preempt, "Task steps are preempted."),
    {NULL}
};

#define FASTCALL_KW(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS

static PyMethodDef core_methods[] = {
    {"call_soon", FASTCALL_KW(core_call_soon),
     "call_soon(callback, *args, context=None)\n--\n\n"
     "Arrange for callback(*args) to be called soon; returns a Handle."},
    {"call_soon_threadsafe", FASTCALL_KW(core_call_soon_threadsafe),
     "call_soon_threadsafe(callback, *args, context=None)\n--\n\n"
     "call_soon() from any thread; wakes the loop if it sleeps."},
    {"call_later", FASTCALL_KW(core_call_later),
     "call_later(delay, callback, *args, context=None)\n--\n\n"
     "Call callback(*args) in delay seconds; returns a TimerHandle."},
    {"call_at", FASTCALL_KW(core_call_at),
     "call_at(when, callback, *args, context=None)\n--\n\n"
     "Call callback(*args) at loop time when; returns a TimerHandle."},
    {"_call_soon", (PyCFunction)(void (*)(void))core__call_soon, METH_FASTCALL, NULL},
    {"create_future", (PyCFunction)core_create_future, METH_NOARGS,
     "create_future()\n--\n\nCreate a Future object attached to the loop."},
    {"create_task", FASTCALL_KW(core_create_task),
     "create_task(coro, **kwargs)\n--\n\nSchedule the execution of a coroutine "
     "object in a Task; return the Task."},
    {"get_debug", (PyCFunction)core_get_debug, METH_NOARGS,
     "get_debug()\n--\n\nIs the loop in debug mode?"},
    {"time", (PyCFunction)core_time, METH_NOARGS,
     "time()\n--\n\nThe loop's clock: time.monotonic()."},
    {"_add_callback", (PyCFunction)core_add_callback, METH_O, NULL},
    {"_timer_handle_cancelled", (PyCFunction)core_timer_handle_cancelled, METH_O, NULL},
    {"_add_reader", FASTCALL_KW(core_add_reader),
     "_add_reader(fd, callback, *args, context=None)\n--\n\nCall callback(*args) "
     "when fd is readable; returns the Handle."},
    {"_add_writer", FASTCALL_KW(core_add_writer),
     "_add_writer(fd, callback, *args, context=None)\n--\n\nCall callback(*args) "
     "when fd is writable; returns the Handle."},
    {"_remove_reader", (PyCFunction)core_remove_reader, METH_O,
     "_remove_reader(fd)\n--\n\nStop watching fd for reading: was a reader removed?"},
    {"_remove_writer", (PyCFunction)core_remove_writer, METH_O,
     "_remove_writer(fd)\n--\n\nStop watching fd for writing: was a writer removed?"},
    {"_run_once", (PyCFunction)core_run_once, METH_NOARGS,
     "_run_once()\n--\n\nOne iteration: poll, due timers, the ready batch, "
     "one preempted step."},
    {"_run_until_stopped", (PyCFunction)core_run_until_stopped, METH_NOARGS,
     "_run_until_stopped()\n--\n\nIterations until stop(): run_forever's "
     "loop."},
    {"_drop_pending", (PyCFunction)core_drop_pending, METH_NOARGS,
     "_drop_pending()\n--\n\nDrop ready callbacks, timers and preempted "
     "steps (close())."},
    {NULL, NULL, 0, NULL}
};

/* ---- the type ---------------------------------------------------------- */

static PyObject *
core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    PyObject *module = PyType_GetModuleByDef(type, gl_module_def());
    if (module == NULL)
        return NULL;
    gl_module_state *st = PyModule_GetState(module);
    if (st->core == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the loop core is not set up: import goloop first");
        return NULL;
    }
    CoreObject *self = (CoreObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->st = st;
    self->preempted_since = -1;
    self->trace.id = gl_trace_next_id();
    self->slice_ns = 10000000;
    self->goroutines = 1;
    self->preempt = 1;
    self->clock_resolution = 1e-9;
    self->preempted = PyObject_CallNoArgs(st->core->deque_type);
    if (self->preempted == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
core_traverse(CoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->preempted);
    Py_VISIT(self->debug);
    Py_VISIT(self->time_slice);
    Py_VISIT(self->selector);
    Py_VISIT(self->pool);
    Py_VISIT(self->poller);
    /* pool is set while run_forever runs: see gl_gc_visit. */
    int owned = self->pool == NULL;
    int r = gl_ready_traverse(&self->ready, owned, visit, arg);
    return r ? r : gl_timers_traverse(&self->timers, owned, visit, arg);
}

static int
core_clear(CoreObject *self)
{
    gl_ready_clear(&self->ready);
    gl_timers_clear(&self->timers);
    Py_CLEAR(self->preempted);
    Py_CLEAR(self->debug);
    Py_CLEAR(self->time_slice);
    Py_CLEAR(self->selector);
    Py_CLEAR(self->pool);
    Py_CLEAR(self->poller);
    return 0;
}

static void
core_dealloc(CoreObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->registered)   /* cannot be: run_forever holds the loop */
        gl_trace_unregister(&self->trace);
    core_clear(self);
    gl_ready_free(&self->ready);
    gl_timers_free(&self->timers);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot core_slots[] = {
    {Py_tp_doc, "The native core of goloop's event loop: scheduling, timers and "
                "the loop's iteration (the base of goloop.EventLoop)."},
    {Py_tp_new, core_new},
    {Py_tp_dealloc, core_dealloc},
    {Py_tp_traverse, core_traverse},
    {Py_tp_clear, core_clear},
    {Py_tp_methods, core_methods},
    {Py_tp_getset, core_getset},
    {0, NULL}
};

PyType_Spec gl_loop_core_spec = {
    .name = "goloop._goloop.LoopCore",
    .basicsize = sizeof(CoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = core_slots,
};

/* ---- statistics: goloop.stats(loop) ----------------------------------- */

/* Registrations of a selector that is not goloop's Poller:
 * len(selector.get_map()), or -1. */
static int64_t
python_selector_fds(CoreObject *self)
{
    if (self->selector == NULL || self->selector == Py_None)
        return -1;
    PyObject *map = PyObject_CallMethod(self->selector, "get_map", NULL);
    Py_ssize_t n = map ? PyObject_Size(map) : -1;
    Py_XDECREF(map);
    if (n < 0)
        PyErr_Clear();
    return n;
}

/* stats(): the gauges summed over the running loops, read live (with the
 * GIL, under which the loops change them). */
static void
add_gauges(gl_trace_loop *l, void *arg)
{
    CoreObject *self = (CoreObject *)((char *)l - offsetof(CoreObject, trace));
    int64_t *sum = arg;
    sum[0] += (int64_t)self->ready.n;
    sum[1] += live_timers(self);
    sum[2] += self->poller ? (int64_t)gl_poller_count(self->poller) : 0;
    sum[3] += (int64_t)queue_len(self);
}

int
gl_loops_running_stats(PyObject *d)
{
    int64_t sum[4] = {0, 0, 0, 0};
    int64_t n = gl_trace_foreach(add_gauges, sum);
    return gl_dict_set_i64(d, "loops_running", n) < 0 || gl_dict_set_i64(d, "ready", sum[0]) < 0
           || gl_dict_set_i64(d, "timers", sum[1]) < 0 || gl_dict_set_i64(d, "fds", sum[2]) < 0
           || gl_dict_set_i64(d, "steps_preempted", sum[3]) < 0 ? -1 : 0;
}

int
gl_loop_stats(gl_module_state *st, PyObject *loop, PyObject *d, int reset)
{
    if (!PyObject_TypeCheck(loop, st->loop_core_type)) {
        PyErr_Format(PyExc_TypeError,
                     "stats() argument 'loop' must be a goloop event loop, not %.200s",
                     Py_TYPE(loop)->tp_name);
        return -1;
    }
    CoreObject *self = (CoreObject *)loop;
    gl_trace_loop *t = &self->trace;
    uint64_t steps = atomic_load_explicit(&t->steps, memory_order_relaxed);
    uint64_t callbacks = atomic_load_explicit(&t->callbacks, memory_order_relaxed);
    uint64_t preemptions = atomic_load_explicit(&t->preemptions, memory_order_relaxed);
    PyObject *longest = PyFloat_FromDouble((double)self->longest_ns / 1e9);
    if (longest == NULL)
        return -1;
    int r = PyDict_SetItemString(d, "longest_step", longest);
    Py_DECREF(longest);
    int64_t fds = self->poller ? (int64_t)gl_poller_count(self->poller)
                  : self->closed ? 0 : python_selector_fds(self);
    if (r < 0
            || gl_dict_set_i64(d, "loop_id", (int64_t)t->id) < 0
            || gl_dict_set_i64(d, "steps", (int64_t)(steps - self->base_steps)) < 0
            || gl_dict_set_i64(d, "callbacks", (int64_t)(callbacks - self->base_callbacks)) < 0
            || gl_dict_set_i64(d, "preemptions", (int64_t)(preemptions - self->base_preemptions)) < 0
            || gl_dict_set_i64(d, "ready", (int64_t)self->ready.n) < 0
            || gl_dict_set_i64(d, "timers", live_timers(self)) < 0
            || gl_dict_set_i64(d, "fds", fds) < 0
            || gl_dict_set_i64(d, "steps_preempted", (int64_t)queue_len(self)) < 0)
        return -1;
    if (reset) {
        self->base_steps = steps;
        self->base_callbacks = callbacks;
        self->base_preemptions = preemptions;
        self->longest_ns = 0;
    }
    return 0;
}

/* ---- module functions -------------------------------------------------- */

static PyObject *
mod_setup_loop_core(PyObject *module, PyObject *args)
{
    if (gl_core_setup(PyModule_GetState(module), args) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyMethodDef gl_core_methods[] = {
    {"_setup_loop_core", mod_setup_loop_core, METH_VARARGS,
     "_setup_loop_core(Handle, TimerHandle, ThreadSafeHandle, Task, PyTask, deque, "
     "report_error, report_slow, extract_stack, /)\n--\n\n"
     "What the loop core takes from asyncio (goloop/loop.py)."},
    {NULL, NULL, 0, NULL}
};

#endif
