/*
 * preempt.c — preemption of a task step that ran past its time slice.
 *
 * Who does what:
 *   sysmon (csrc/runtime/sysmon.c)  a C thread that watches the P of every
 *        preempting loop — one per thread that runs one (gl_preempting
 *        below, found by its thread through a thread-local); when one step
 *        has run for the slice it calls request_preemption() here, on its
 *        own thread.
 *   request_preemption()  records which step (the P's tick) should stop and,
 *        for the main thread's loop, sends SIGURG to the main thread
 *        (pthread_kill), as Go's sysmon does; for another thread's, queues a
 *        pending call (below: "Other threads").
 *        CPython's C-level handler, running on that thread, marks SIGURG
 *        tripped and sets the eval breaker, so the interpreter calls the
 *        Python-level SIGURG handler at its next bytecode boundary — a safe
 *        point.  (PyErr_SetInterruptEx from sysmon's thread would mark the
 *        signal but not set the breaker: CPython sets it only when the
 *        thread that takes the signal can handle it, i.e. the main thread.)
 *        The handler is installed with SA_RESTART (siginterrupt), so most
 *        system calls the loop thread is in resume instead of failing with
 *        EINTR; those that always report EINTR (sleeps, polls) are retried
 *        by CPython after running handlers, as for any signal.
 *   on_sigurg()  that handler, installed by goloop/_preempt.py while the loop
 *        runs.  If the request is stale (that step already ended) it does
 *        nothing; if there was no request the SIGURG came from elsewhere and
 *        goes to the handler installed before ours.  (Signals carry no
 *        sender here, so this is a guess that can go wrong both ways, as in
 *        Go: a handler run that took sysmon's request just before sysmon's
 *        signal for it landed leaves that signal looking foreign, and an
 *        application's SIGURG landing with sysmon's folds into it.)
 *        Otherwise, if the step
 *        may be preempted here, it leaves the task (asyncio's _leave_task,
 *        so current_task() stays true for what runs meanwhile), parks the
 *        worker with PREEMPTED — run_step()/resume_step() in steps.c return
 *        the worker to the loop, which requeues it — and, once resumed,
 *        enters the task again and returns into the step's bytecode.
 *
 * What may be preempted: only a step worker's own code (not g0 — the loop's
 * stack, where plain callbacks run — and not a Goroutine the step resumed);
 * only while every frame of the step — down to the worker's first, or to
 * one of base_codes (asyncio's Handle._run, for a Python loop class that
 * runs steps through it; the pure-Python Task's __step) — is the task's own
 * code — an asyncio or goloop frame there (base_only) means asyncio is
 * mid-operation; not while any of those frames belongs to a module in
 * never_preempt (the import system, which holds a module's lock while its
 * body runs, and stdlib modules that hold threading locks while calling
 * out: another task on the same thread would re-enter or deadlock on them);
 * a library's frame (the standard library's or an installed package's
 * file: _preempt.is_library_file) only where it waits at an await, for a
 * coroutine above it: never the innermost frame, never a library frame in
 * the middle of a plain call.  A library is written for a loop that runs
 * nothing else between two of its awaits — aiohttp's StreamReader checks
 * its buffer, then sets the waiter its protocol's data_received wakes;
 * asyncpg writes its startup message, then swaps protocols before the
 * reply; a pool requeues a connection, then arms its timer; aiohttp calls
 * create_task(), whose eager first step runs the application's handler,
 * and then records the task — and an interleaving there loses wake-ups and
 * data.  At an await it expects others to run: preempting the application's
 * code above it looks, to the library, like that code having awaited.  Not
 * inside goloop.atomic() (a ContextVar); not while the step runs in a
 * greenlet other than its thread's main one (greenlet keeps parts of the C
 * stack by address).  sysmon repeats a declined request while the step
 * runs, 50 µs later, then backing off up to the slice (asyncio's own code
 * is usually left within microseconds, an atomic section maybe not for
 * long).  A request is not repeated from here (PyErr_SetInterruptEx would
 * do it at the next boundary): each one writes a byte to the signal wakeup
 * fd asyncio sets for its signal handlers, which would fill up.
 *
 * Other threads.  CPython runs Python-level signal handlers on the main
 * thread only (of the main interpreter), and its C handler sets the eval
 * breaker only there, so a SIGURG cannot reach a loop on another thread.
 * What reaches a given thread at its next bytecode boundary, with the GIL,
 * per version (read in CPython's Python/ceval_gil.c, ceval.c and
 * Include/internal/pycore_ceval*.h at v3.11.7, v3.12.1, v3.13.0, 3.14 and
 * 3.15):
 *   3.12      _PyEval_AddPendingCall(interp, func, arg, mainthreadonly=0)
 *             (exported, internal) queues a call any thread may run: the
 *             interpreter's eval breaker trips and the first thread to
 *             check it — _Py_HandlePending, at the same boundaries as
 *             signal handlers — runs the queue.  The eval breaker is the
 *             interpreter's, but only a thread holding the GIL checks it,
 *             and a loop thread running a long step holds the GIL (another
 *             Python thread gets it for a switch interval at a time).
 *   3.13+     the eval breaker is per thread: the same call sets the
 *             pending-calls bit of the thread holding the GIL, and
 *             gl_py_post_call also sets it on the loop's thread state
 *             (_Py_set_eval_breaker_bit, an atomic or), so that thread runs
 *             the queue at its next check even if another held the GIL.
 *   3.11      pending calls run on the main thread only (make_pending_calls
 *             returns at once elsewhere), the eval breaker is the
 *             interpreter's, and what it does per thread (the async
 *             exception) raises.  What 3.11 does call on a given thread at
 *             a safe point is its trace function: with tstate->c_tracefunc
 *             set and that thread's cframe->use_tracing 255, every
 *             instruction dispatches to DO_TRACING, which calls the
 *             function at a line start or a backward jump
 *             (maybe_call_line_trace; also at calls, returns and
 *             exceptions, which trace_request lets pass), with the GIL,
 *             between two instructions.  Those two fields
 *             may be written by another thread only while it holds the GIL
 *             and the target does not run Python code (its cframe is then
 *             its running stack's, which only it changes, with the GIL).
 *             So request_preemption wakes goloop's tracer thread (a daemon
 *             threading.Thread, _preempt.py, waiting in C without the GIL:
 *             mod_tracer_run); the tracer asks the GIL's holder to drop it
 *             (gl_py_ask_for_gil: what take_gil does after a switch
 *             interval, 5 ms, of waiting), takes it and, for each loop
 *             thread whose request is still for the step running there,
 *             installs trace_request as its trace function, as
 *             _PyEval_SetTrace would (without its "sys.settrace" audit
 *             event, which would reach the application's audit hooks on
 *             the tracer thread at every preemption).  A thread with a
 *             trace function of its own (a debugger, coverage) keeps it:
 *             the request counts as declined and that loop runs
 *             cooperatively.  trace_request, on the loop's thread, removes
 *             itself first, then takes the request as run_request does (a
 *             request while the loop's thread runs C code without the GIL
 *             is installed all the same and fires when Python code runs
 *             again; a stale one does nothing).  Latency: the tracer's
 *             wake-up and two GIL hand-offs on top of 3.12's path
 *             (benchmarks/thread_preempt.py on 3.11, two runs: overrun
 *             p50 55 and 88 us against 46 and 88 us for the main thread's
 *             SIGURG, p99 2.5 and 0.5 ms against 1.0 and 3.0 ms: within
 *             this VM's noise).  The tracer starts with the first such loop,
 *             is stopped and joined before a fork (restarted after it in
 *             the parent; the child starts its own with its first loop)
 *             and at exit.
 * The call, run_request(), runs on whichever thread ran the queue; it takes
 * the request of the loop of the thread it runs on (another thread's waits
 * for sysmon to ask again: 50 µs later, doubling), and parks the step as
 * on_sigurg does, with PyEval_GetFrame() for the frame a handler is given.
 * Only our C function runs there: no Python handler of the application
 * ever runs on a thread it was not meant for.  Two things differ from a
 * signal handler: the thread running the queue keeps a claim on it while
 * a call runs (3.12's pending->busy, 3.13+'s handling_thread), so a call
 * that parks drops that claim first (gl_py_release_pending_claim) — else no
 * pending call, not even the next preemption of that thread's next step,
 * would run while the step stays parked; and the queue is small and shared
 * (32 calls on 3.12), so at most MAX_POSTED of ours wait in it at once.  No
 * signal means no byte in the loop's wakeup fd (no withholding there) and
 * no EINTR in the loop thread's system calls.
 *
 * Signals: CPython calls handlers in ascending signal number, clearing each
 * flag first.  While a preempted step is parked inside on_sigurg, signals
 * above SIGURG tripped in the same batch wait until it resumes (the end of
 * the loop's next iteration at most) or until another signal arrives.
 */
#include "glue.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

/* Loops on threads other than the main one are preempted through pending
 * calls (see the top of this file): 3.12+. */
#define GL_THREAD_PREEMPTION (GL_PY_MINOR >= 12)
/* ... and on 3.11 through a trace function that goloop's tracer thread
 * installs on the loop's thread (see the top of this file: "3.11"). */
#define GL_THREAD_TRACING (GL_PY_MINOR == 11)

/* ---- the preempting threads ------------------------------------------- */

/* One thread whose loop sysmon watches: its P, and how a request reaches
 * it.  Made by _preempt_attach on that thread, freed by _preempt_detach
 * there (once sysmon can no longer be using it); the thread finds its own
 * through this_thread, sysmon through p.ctx. */
typedef struct gl_preempting {
    gl_p p;
    gl_module_state *st;
    pthread_t owner;
    PyThreadState *tstate;           /* the owner's (pending calls, 3.13+) */
    PyInterpreterState *interp;
    int main;                        /* the main thread: SIGURG */
    _Atomic uint64_t request;        /* tick sysmon asked to stop; 0: none */
    int wakeup_fd;                   /* the loop's self-pipe socket, or -1 */
    int wakeup_room;                 /*   bytes queued there that hold
                                        requests back (see below) */
    int64_t clock_hint;              /* the clock at the last step's end, or
                                        0 (the clock hint, below) */
    struct gl_preempting *next;      /* st->preempting */
} gl_preempting;

static _Thread_local gl_preempting *this_thread;

/* The calling thread's preempting loop's, if st's; else NULL. */
static inline gl_preempting *
preempting(gl_module_state *st)
{
    gl_preempting *t = this_thread;
    return t != NULL && t->st == st ? t : NULL;
}

/* ---- the marks around each stretch of a step (called by steps.c) ------- */

/* The clock hint.  A clock read costs 40-45 ns on this project's VMs
 * (vDSO), and a task step made three: the loop's iteration, the step's
 * start and its end — a tenth of a sleep(0) step.  What the loop does
 * between the end of one step and the start of the next (release a handle,
 * pop the next, look at the timers) takes well under a microsecond, so the
 * end's reading serves for both (the thread's clock_hint).  Anything that
 * may take longer drops the hint — a callback run on the loop's own stack,
 * a poll (which leaves its own reading instead), a pause for the GIL, the
 * start and end of run_forever — so a stale time is at most that
 * sub-microsecond gap, or, rarely, a finalizer run by a released handle: at
 * worst a step stamped early by that much, preempted that much sooner.
 * Only on a preempting thread, in its own record (one loop runs there at a
 * time); other threads read the clock. */
static int64_t
clock_now(gl_preempting *t)
{
    return t != NULL && t->clock_hint != 0 ? t->clock_hint : gl_nanotime();
}

int64_t
gl_preempt_clock(gl_module_state *st)
{
    return clock_now(preempting(st));
}

void
gl_preempt_clock_note(gl_module_state *st, int64_t now)
{
    gl_preempting *t = preempting(st);
    if (t != NULL)
        t->clock_hint = now;
}

int64_t
gl_preempt_step_begin(gl_module_state *st)
{
    gl_preempting *t = preempting(st);
    int64_t now = clock_now(t);
    if (t != NULL) {
        t->clock_hint = 0;   /* the step runs from here: stale at once */
        gl_p_step_begin(&t->p, now);
    }
    return now;
}

int64_t
gl_preempt_step_end(gl_module_state *st, int64_t began)
{
    gl_preempting *t = preempting(st);
    if (t != NULL)
        gl_p_step_end(&t->p);
    int64_t now = gl_nanotime();
    if (t != NULL)
        t->clock_hint = now;
    int64_t ran = now - began;
    st->steps++;
    if (ran > st->longest_step_ns)
        st->longest_step_ns = ran;
    return ran;
}

/* ---- sysmon's side ----------------------------------------------------- */

/* Is the loop's self-pipe socket — the signal wakeup fd asyncio gives
 * CPython once it handles a signal — half full?  Every SIGURG makes
 * CPython's C handler write a byte to it, and while a step runs long
 * without being preemptible (goloop.atomic(), a library's code, a long C
 * call) sysmon asks again and again and nothing reads the socket: once it
 * is full, the byte of a signal the application handles (SIGTERM for
 * gunicorn or uvicorn) cannot be written and asyncio never runs its
 * handler.  So sysmon holds its requests back while the socket is half
 * full, leaving the rest for such signals; the loop empties it at its
 * next poll.  (SIOCOUTQ on a Unix socket counts the buffer space its
 * unread bytes take, which is what fills SO_SNDBUF.)  Only the main
 * thread's requests are signals: another thread's write nothing there. */
static int
wakeup_fd_crowded(gl_preempting *t)
{
#ifdef SIOCOUTQ
    int queued = 0;
    return t->wakeup_fd >= 0 && ioctl(t->wakeup_fd, SIOCOUTQ, &queued) == 0
           && queued >= t->wakeup_room;
#else
    (void)t;
    return 0;
#endif
}

#if GL_THREAD_PREEMPTION
/* Pending calls queued by post_request and not yet run: kept few, so that
 * a step that sysmon asks again and again while it runs C code without the
 * GIL (or while another thread holds it) never fills the interpreter's
 * queue (32 calls on 3.12) that other users of pending calls share. */
#define MAX_POSTED 4
static _Atomic int posted;

static int run_request(void *unused);

/* On sysmon's thread (or the owner's), without the GIL: queue run_request
 * as a pending call that the owner runs at its next bytecode boundary. */
static void
post_request(gl_preempting *t)
{
    if (atomic_fetch_add(&posted, 1) >= MAX_POSTED
            || gl_py_post_call(t->interp, t->tstate, run_request) != 0)
        atomic_fetch_sub(&posted, 1);   /* sysmon asks again later */
}
#endif

#if GL_THREAD_TRACING
/* The tracer thread (3.11; see the top of this file): a Python thread of
 * goloop's (_preempt.py starts it) that waits, without the GIL, for sysmon
 * to ask (tracer_wanted), then takes the GIL and installs trace_request as
 * the trace function of each loop thread asked for. */
static pthread_mutex_t tracer_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tracer_cv = PTHREAD_COND_INITIALIZER;
static int tracer_wanted;            /* under tracer_mu */
static int tracer_stop;              /* under tracer_mu */

/* On sysmon's thread (or a loop's), with or without the GIL. */
static void
wake_tracer(void)
{
    pthread_mutex_lock(&tracer_mu);
    tracer_wanted = 1;
    pthread_cond_signal(&tracer_cv);
    pthread_mutex_unlock(&tracer_mu);
}
#endif

/* On sysmon's thread, without the GIL: only atomics, an ioctl and a signal
 * or a pending call (which takes a lock CPython holds only briefly). */
static void
request_preemption(gl_p *p, uint64_t tick)
{
    gl_preempting *t = p->ctx;
    if (wakeup_fd_crowded(t)) {
        atomic_fetch_add(&t->st->withheld, 1);
        return;   /* sysmon asks again later (a declined request's back-off) */
    }
    atomic_store(&t->request, tick);
    if (t->main)
        pthread_kill(t->owner, SIGURG);
#if GL_THREAD_PREEMPTION
    else
        post_request(t);
#elif GL_THREAD_TRACING
    else
        wake_tracer();
#endif
}

void
gl_preempt_request_again(gl_module_state *st)
{
    gl_preempting *t = preempting(st);
    if (t != NULL) {
        uint64_t tick = atomic_load(&t->p.tick);
        if (tick & 1)   /* a step is running: this one */
            request_preemption(&t->p, tick);
    }
}

/* ---- may this step be preempted here? ---------------------------------- */

static int
module_in(PyObject *frame, PyObject *prefixes)
{
    PyObject *globals = PyFrame_GetGlobals((PyFrameObject *)frame);
    PyObject *name = globals ? PyDict_GetItemString(globals, "__name__") : NULL;
    int found = 0;
    if (name != NULL && PyUnicode_Check(name)) {
        Py_ssize_t n = PyTuple_GET_SIZE(prefixes);
        for (Py_ssize_t i = 0; i < n && !found; i++) {
            PyObject *pre = PyTuple_GET_ITEM(prefixes, i);
            Py_ssize_t len = PyUnicode_GET_LENGTH(pre);
            if (PyUnicode_Tailmatch(name, pre, 0, len, -1) == 1) {
                Py_ssize_t nlen = PyUnicode_GET_LENGTH(name);
                found = nlen == len || PyUnicode_READ_CHAR(name, len) == '.';
            }
        }
    }
    Py_XDECREF(globals);
    return found;
}

static int
inside_atomic(gl_module_state *st)
{
    PyObject *v = NULL;
    if (PyContextVar_Get(st->atomic_var, NULL, &v) < 0) {
        PyErr_Clear();
        return 1;
    }
    int inside = v != NULL && PyObject_IsTrue(v) == 1;
    Py_XDECREF(v);
    return inside;
}

/* Is the step running in a greenlet other than its thread's main one?
 * (Errors count as yes: when in doubt, do not preempt.) */
static int
in_child_greenlet(gl_module_state *st)
{
    PyObject *mod = PyImport_GetModule(st->str_greenlet);
    if (mod == NULL)
        return PyErr_Occurred() ? (PyErr_Clear(), 1) : 0;
    PyObject *cur = PyObject_CallMethod(mod, "getcurrent", NULL);
    Py_DECREF(mod);
    PyObject *parent = cur ? PyObject_GetAttrString(cur, "parent") : NULL;
    Py_XDECREF(cur);
    if (parent == NULL) {
        PyErr_Clear();
        return 1;
    }
    int child = parent != Py_None;
    Py_DECREF(parent);
    return child;
}

/* Is frame one of the frames a step starts from (asyncio's Handle._run,
 * the pure-Python Task's __step)? */
static int
is_step_base(gl_module_state *st, PyObject *frame)
{
    PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)frame);
    int found = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(st->base_codes) && !found; i++)
        found = PyTuple_GET_ITEM(st->base_codes, i) == (PyObject *)code;
    Py_DECREF(code);
    return found;
}

/* Is code a library's — the standard library's or an installed package's
 * (1) — rather than the application's (0)?  Asked of Python once per file
 * (_preempt.is_library_file), remembered in st->library_files; an error
 * counts as a library: when in doubt, do not preempt. */
static int
is_library_code(gl_module_state *st, PyCodeObject *code)
{
    if (st->library_files == NULL)
        return 1;
    PyObject *filename = code->co_filename;
    PyObject *known = PyDict_GetItemWithError(st->library_files, filename);
    if (known != NULL)
        return known == Py_True;
    if (PyErr_Occurred() || st->is_library_file == NULL)
        goto failed;
    PyObject *answer = PyObject_CallOneArg(st->is_library_file, filename);
    if (answer == NULL)
        goto failed;
    int library = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    if (library < 0 || PyDict_SetItem(st->library_files, filename,
                                      library ? Py_True : Py_False) < 0)
        goto failed;
    return library;
failed:
    PyErr_Clear();
    return 1;
}

#define GL_ASYNC_CODE (CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR)

/* May the step stop while this library frame is on its stack?  Only if the
 * frame is a coroutine's (or an async generator's) waiting at an await for
 * the frame above it — where the library expects other tasks to run anyway
 * — not the innermost frame and not a call: a library in the middle of a
 * plain call (to create_task(), whose eager first step runs above it, or
 * to an application callback) relies on the call returning before anything
 * else of the loop runs.  (_preempt.awaits_at decides from the code's
 * instructions; an error counts as no.) */
static int
library_frame_awaits(gl_module_state *st, PyObject *frame, PyCodeObject *code, int innermost)
{
    if (innermost || !(code->co_flags & GL_ASYNC_CODE) || st->awaits_at == NULL)
        return 0;
    PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti((PyFrameObject *)frame));
    PyObject *answer = lasti ? PyObject_CallFunctionObjArgs(st->awaits_at, (PyObject *)code,
                                                            lasti, NULL)
                             : NULL;
    Py_XDECREF(lasti);
    int awaits = answer != NULL && PyObject_IsTrue(answer) == 1;
    Py_XDECREF(answer);
    PyErr_Clear();
    return awaits;
}

/* Every frame above the step's base must be the task's own code: an asyncio
 * or goloop frame there means asyncio is in the middle of something
 * (scheduling a callback, notifying waiters, calling an exception handler,
 * starting an eager task) and its state is consistent only once it returns;
 * a frame of a module in `never_preempt` holds a lock; a library's frame
 * must be waiting at an await (see the top of this file). */
static int
preemptible(gl_module_state *st, PyObject *frame)
{
    if (frame == NULL || !PyFrame_Check(frame) || inside_atomic(st))
        return 0;
    int ok = 0, innermost = 1;
    Py_INCREF(frame);
    for (;;) {
        if (is_step_base(st, frame)) {
            ok = 1;
            break;
        }
        if (module_in(frame, st->base_only) || module_in(frame, st->never_preempt))
            break;
        PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)frame);
        int unsafe = !st->unsafe_libraries && is_library_code(st, code)
                     && !library_frame_awaits(st, frame, code, innermost);
        Py_DECREF(code);
        if (unsafe)
            break;
        innermost = 0;
        PyObject *back = (PyObject *)PyFrame_GetBack((PyFrameObject *)frame);
        Py_DECREF(frame);
        frame = back;
        if (frame == NULL) {
            /* The worker's first frame: the loop core started the step
             * from C (csrc/loop/steps.c), with no frame of its own. */
            ok = 1;
            break;
        }
    }
    Py_XDECREF(frame);
    return ok && !in_child_greenlet(st);
}

/* ---- the SIGURG handler ------------------------------------------------ */

/* The task the step runs: the one current_task() names — an eager task
 * (3.12+) started inside the step runs its first step there, and is the one
 * to leave — or, when current_task() does not know it (a pure-Python Task
 * on 3.14+, entered in the _py_ dict), the handle's own. */
static PyObject *
running_task(gl_module_state *st, PyObject *loop, PyObject *handle)
{
    PyObject *task = st->current_task
        ? PyObject_CallOneArg(st->current_task, loop) : NULL;
    if (task == NULL)
        PyErr_Clear();
    else if (task != Py_None)
        return task;
    Py_XDECREF(task);
    return gl_step_task(handle);
}

/* ---- a cancellation that came while the step was parked --------------- */

/* Task.cancel() on a task whose step is parked finds it running: with no
 * future to cancel, it sets _must_cancel, which the Task acts on when the
 * step next yields — even if the canceller took the request back meanwhile
 * (uncancel(): a TaskGroup or timeout whose block then ended without an
 * await), on CPython < 3.13, whose uncancel() leaves _must_cancel set; the
 * task then gets a CancelledError nobody asked for.  (3.13's uncancel()
 * clears _must_cancel at 0, so there the take-back is off:
 * st->take_back_cancels is set by _learn_must_cancel, which _preempt.py
 * calls on every version: await.c sets _must_cancel too, and the take-back
 * is on before 3.13 only.)  On stock asyncio
 * cancel() never finds a task running there: the task is waiting, and
 * cancel() cancels what it waits for.  So a cancellation that arrives while
 * the step is parked is taken off the task when it resumes
 * (take_cancel_back) and given back when the step has yielded
 * (gl_preempt_deliver_cancels, from the worker), as cancel() would have
 * given it then: the future the task waits for is cancelled, or, if there
 * is none or it is done, _must_cancel is set — unless by then cancelling()
 * is 0, every request taken back (as 3.13's uncancel() drops it), or the
 * task is done. */

#define TAKE_BACK_CANCELS (GL_PY_MINOR < 13)

static int
task_must_cancel(PyObject *task)
{
    PyObject *v = PyObject_GetAttrString(task, "_must_cancel");
    int r = v ? PyObject_IsTrue(v) : -1;
    Py_XDECREF(v);
    return r;
}

/* Set a Task's _must_cancel.  The pure-Python Task's is an attribute; the C
 * Task's (3.11, 3.12: an int field, read-only from Python) is written at the
 * offset learn_must_cancel() found. */
static int
set_task_must_cancel(gl_module_state *st, PyObject *task, int value)
{
    if (st->must_cancel_type != NULL
            && PyObject_TypeCheck(task, (PyTypeObject *)st->must_cancel_type)) {
        unsigned *field = (unsigned *)((char *)task + st->must_cancel_offset);
        if (value)
            *field |= st->must_cancel_mask;
        else
            *field &= ~st->must_cancel_mask;
        assert(task_must_cancel(task) == (value != 0));
        return 0;
    }
    return PyObject_SetAttrString(task, "_must_cancel", value ? Py_True : Py_False);
}

/* _learn_must_cancel(task): find where the C Task keeps _must_cancel, from
 * `task`, a Task of that type just cancel()ed (so the flag is set) that
 * nothing else uses: the bit that, cleared, makes the _must_cancel getter
 * say False — the getter reads that bit and nothing else — set back at
 * once.  An int field up to 3.12, one bit of a bit-field from 3.13.  The
 * collector is off meanwhile (nothing here allocates: the name is made
 * first, the getter returns a bool), so no traversal sees a field with a
 * bit cleared.  From then on set_task_must_cancel() writes it. */
static PyObject *
mod_learn_must_cancel(PyObject *module, PyObject *task)
{
    gl_module_state *st = PyModule_GetState(module);
    if (task_must_cancel(task) != 1) {
        PyErr_SetString(PyExc_ValueError, "_learn_must_cancel() needs a Task with _must_cancel set");
        return NULL;
    }
    if (PyObject_SetAttrString(task, "_must_cancel", Py_True) == 0) {
        st->take_back_cancels = TAKE_BACK_CANCELS;   /* the pure-Python Task: an attribute */
        Py_RETURN_NONE;
    }
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return NULL;
    PyErr_Clear();
    PyObject *name = PyUnicode_InternFromString("_must_cancel");
    if (name == NULL)
        return NULL;
    int gc_was_on = PyGC_Disable();
    Py_ssize_t size = Py_TYPE(task)->tp_basicsize, found = -1;
    unsigned mask = 0;
    for (Py_ssize_t off = sizeof(PyObject); found < 0 && off + (Py_ssize_t)sizeof(unsigned) <= size;
         off += sizeof(unsigned)) {
        unsigned *field = (unsigned *)((char *)task + off);
        unsigned saved = *field;
        for (unsigned bit = 1; bit != 0 && found < 0; bit <<= 1) {
            if (!(saved & bit))
                continue;
            *field = saved & ~bit;
            PyObject *v = PyObject_GetAttr(task, name);
            *field = saved;
            if (v == Py_False) {
                found = off;
                mask = bit;
            }
            Py_XDECREF(v);
            PyErr_Clear();
        }
    }
    if (gc_was_on)
        PyGC_Enable();
    Py_DECREF(name);
    if (found < 0 || task_must_cancel(task) != 1) {
        PyErr_Clear();
        PyErr_Format(PyExc_RuntimeError, "%.100s keeps _must_cancel in no bit of an int field",
                     Py_TYPE(task)->tp_name);
        return NULL;
    }
    Py_XSETREF(st->must_cancel_type, Py_NewRef((PyObject *)Py_TYPE(task)));
    st->must_cancel_offset = found;
    st->must_cancel_mask = mask;
    st->take_back_cancels = TAKE_BACK_CANCELS;
    Py_RETURN_NONE;
}

/* Back from a park: a cancel() that came meanwhile is taken off the task
 * and remembered on the worker (see above). */
static void
take_cancel_back(gl_module_state *st, GoroutineObject *w, PyObject *task, int pending_before)
{
    if (!st->take_back_cancels || pending_before != 0 || task_must_cancel(task) != 1) {
        PyErr_Clear();
        return;
    }
    if (w->cancels_taken == NULL && (w->cancels_taken = PyList_New(0)) == NULL) {
        PyErr_Clear();
        return;
    }
    if (PyList_Append(w->cancels_taken, task) < 0 || set_task_must_cancel(st, task, 0) < 0)
        PyErr_WriteUnraisable(task);
}

static int
give_cancel_back(gl_module_state *st, PyObject *task)
{
    PyObject *r = PyObject_CallMethod(task, "done", NULL);
    int done = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (done != 0)
        return done < 0 ? -1 : 0;
    r = PyObject_CallMethod(task, "cancelling", NULL);
    long requests = r ? PyLong_AsLong(r) : -1;
    Py_XDECREF(r);
    if (requests <= 0)
        return requests < 0 && PyErr_Occurred() ? -1 : 0;
    int pending = task_must_cancel(task);
    if (pending != 0)
        return pending < 0 ? -1 : 0;   /* asked again since: the Task acts on that */
    PyObject *waiter = PyObject_GetAttrString(task, "_fut_waiter");
    if (waiter == NULL)
        return -1;
    int cancelled = 0;
    if (waiter != Py_None) {
        PyObject *msg = PyObject_GetAttrString(task, "_cancel_message");
        if (msg == NULL)
            PyErr_Clear();
        PyObject *kwargs = msg ? Py_BuildValue("{sO}", "msg", msg) : NULL;
        PyObject *cancel = PyObject_GetAttrString(waiter, "cancel");
        PyObject *noargs = PyTuple_New(0);
        r = cancel && noargs ? PyObject_Call(cancel, noargs, kwargs) : NULL;
        Py_XDECREF(noargs);
        Py_XDECREF(cancel);
        Py_XDECREF(kwargs);
        Py_XDECREF(msg);
        cancelled = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
    }
    Py_DECREF(waiter);
    if (cancelled != 0)
        return cancelled < 0 ? -1 : 0;
    return set_task_must_cancel(st, task, 1);
}

void
gl_preempt_deliver_cancels(GoroutineObject *w)
{
    gl_module_state *st = w->state;
    PyObject *tasks = w->cancels_taken;
    w->cancels_taken = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tasks); i++) {
        PyObject *task = PyList_GET_ITEM(tasks, i);
        if (give_cancel_back(st, task) < 0)
            PyErr_WriteUnraisable(task);
    }
    Py_DECREF(tasks);
}

/* Park the running step worker w until the loop resumes it; returns what
 * the handler returns (None, or NULL when thrown into). */
static PyObject *
preempt_step(gl_module_state *st, GoroutineObject *w)
{
    PyObject *loop = PyObject_GetAttrString(w->step_handle, "_loop");
    PyObject *task = loop ? running_task(st, loop, w->step_handle) : NULL;
    PyObject *r = task ? PyObject_CallFunctionObjArgs(st->leave_task, loop, task, NULL)
                       : NULL;
    if (r == NULL) {
        /* Not a task we can leave: run on, cooperatively. */
        PyErr_Clear();
        st->declined++;
        Py_XDECREF(task);
        Py_XDECREF(loop);
        Py_RETURN_NONE;
    }
    Py_DECREF(r);
    st->preemptions++;
    int pending_before = st->take_back_cancels ? task_must_cancel(task) : 0;
    PyErr_Clear();
    PyObject *in = gl_goroutine_park(st, st->step_preempted);
    PyObject *thrown = in ? NULL : gl_err_take();
    if (thrown == NULL)
        take_cancel_back(st, w, task, pending_before);
    r = PyObject_CallFunctionObjArgs(st->enter_task, loop, task, NULL);
    Py_DECREF(task);
    Py_DECREF(loop);
    if (thrown != NULL) {
        /* Unwinding (GoroutineExit): entering may fail if another task is
         * current; the exception being thrown is what matters. */
        Py_XDECREF(r);
        PyErr_Clear();
        gl_err_give(thrown);
        return NULL;
    }
    Py_DECREF(in);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* Sysmon's request `request` for t's thread has arrived there, at a bytecode
 * boundary (the GIL held), with `frame` the innermost frame: park the step
 * if it is still the one asked for and it may stop here.  in_pending_call:
 * from run_request, whose thread's claim on the pending calls is dropped
 * before parking. */
static PyObject *
take_request(gl_preempting *t, uint64_t request, PyObject *frame, int in_pending_call)
{
    gl_module_state *st = t->st;
    assert(pthread_equal(pthread_self(), t->owner));
    if (request != atomic_load(&t->p.tick))
        Py_RETURN_NONE;   /* that step already ended */
    GoroutineObject *w = gl_goroutine_current();
    int step = w != NULL && w->step_worker && w->step_handle != NULL;
    if (step && w->locks_held > 0 && !st->unsafe_locks) {
        /* It holds a threading lock: ask again once it has let go of the
         * last one (locks.c), as Go's releasem does. */
        w->preempt_deferred = 1;
        st->deferred++;
        Py_RETURN_NONE;
    }
    if (!step || !preemptible(st, frame)) {
        st->declined++;   /* sysmon asks again (sysmon.c: backing off) */
        Py_RETURN_NONE;
    }
#if GL_THREAD_PREEMPTION
    if (in_pending_call)
        gl_py_release_pending_claim(t->tstate);
#else
    assert(!in_pending_call);
    (void)in_pending_call;
#endif
    return preempt_step(st, w);
}

static PyObject *
mod_on_sigurg(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gl_module_state *st = PyModule_GetState(module);
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "_on_sigurg() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    /* Python runs signal handlers on the main thread only, where a
     * preempting loop's requests are SIGURGs. */
    gl_preempting *t = preempting(st);
    uint64_t request = t != NULL && t->main ? atomic_exchange(&t->request, 0) : 0;
    if (request == 0) {
        /* Not sysmon's: the application's own SIGURG. */
        if (st->urg_previous != NULL && PyCallable_Check(st->urg_previous))
            return PyObject_Vectorcall(st->urg_previous, args, nargs, NULL);
        Py_RETURN_NONE;
    }
    return take_request(t, request, args[1], 0);
}

#if GL_THREAD_PREEMPTION
/* A pending call post_request queued: CPython runs it at a bytecode
 * boundary of whichever thread checks its eval breaker first, with the GIL
 * — usually the thread it was meant for, busy running the step, which
 * holds the GIL.  It takes the request of the thread it runs on, if that
 * thread has a preempting loop (not the main thread's: SIGURG serves that
 * one); a request it does not reach is asked again by sysmon (its
 * back-off: 50 µs, doubling).  Returns 0, or -1 with an exception (one
 * thrown into the parked step: GoroutineExit), which the interrupted
 * bytecode then raises, as for a signal handler's. */
static int
run_request(void *unused)
{
    (void)unused;
    assert(PyGILState_Check());
    atomic_fetch_sub(&posted, 1);
    gl_preempting *t = this_thread;
    if (t == NULL || t->main || t->st == NULL)   /* st NULL: detach_all */
        return 0;
    uint64_t request = atomic_exchange(&t->request, 0);
    if (request == 0)
        return 0;
    PyObject *frame = (PyObject *)PyEval_GetFrame();   /* borrowed */
    if (frame == NULL)
        return 0;   /* not running Python code (a finalizer, say) */
    Py_INCREF(frame);
    PyObject *r = take_request(t, request, frame, 1);
    Py_DECREF(frame);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}
#endif

#if GL_THREAD_TRACING
/* The trace function the tracer thread installs on a loop thread (3.11):
 * CPython calls it on that thread, with the GIL, at the next line start or
 * backward jump of the Python code running there — a bytecode boundary,
 * as where 3.12+ runs a pending call.  It removes itself at once,
 * then takes the thread's request as run_request does.  CPython calls it
 * with ts->tracing raised and cframe->use_tracing 0 (PyThreadState_Enter-
 * Tracing); both are per stack here (pystate.h saves tracing, and carries
 * use_tracing over to the next stack): while this stack is parked the
 * others run with the use_tracing the thread's remaining functions call
 * for, and when it resumes it is 0 again until CPython's LeaveTracing
 * recomputes it. */
static int
trace_request(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    (void)arg;
    if (what != PyTrace_LINE)
        /* A call (also a coroutine's resumption, where 3.11 skips its eval
         * breaker after an await), a return or an exception: wait for a
         * line (a new frame's first comes next). */
        return 0;
    PyThreadState *ts = PyThreadState_Get();
    assert(ts->tracing > 0);
    if (ts->c_tracefunc == trace_request) {
        assert(ts->c_traceobj == NULL);
        ts->c_tracefunc = NULL;
    }
    gl_preempting *t = this_thread;
    if (t == NULL || t->main || t->st == NULL)
        return 0;
    uint64_t request = atomic_exchange(&t->request, 0);
    if (request == 0 || frame == NULL)
        return 0;
    /* What the stacks that run while this one is parked start with. */
    ts->cframe->use_tracing = ts->c_tracefunc != NULL || ts->c_profilefunc != NULL ? 255 : 0;
    Py_INCREF(frame);
    PyObject *r = take_request(t, request, (PyObject *)frame, 0);
    Py_DECREF(frame);
    ts = PyThreadState_Get();
    assert(ts->tracing > 0);
    ts->cframe->use_tracing = 0;   /* tracing: LeaveTracing sets it */
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* With the GIL, on the tracer thread: install trace_request on the thread
 * of each loop with a request for the step running now.  That thread does
 * not hold the GIL, so it runs no Python code: its cframe is its running
 * stack's, which nothing changes until it takes the GIL back. */
static void
install_traces(gl_module_state *st)
{
    for (gl_preempting *t = st->preempting; t != NULL; t = t->next) {
        if (t->main)
            continue;
        uint64_t request = atomic_load(&t->request);
        if (request == 0 || request != atomic_load(&t->p.tick))
            continue;   /* none, or that step already ended */
        PyThreadState *ts = t->tstate;
        if (ts->c_tracefunc == trace_request)
            continue;   /* installed, not run yet */
        if (ts->c_tracefunc != NULL || ts->c_traceobj != NULL) {
            /* A debugger's or coverage's: left alone; the loop runs
             * cooperatively while it is there. */
            atomic_store(&t->request, 0);
            st->declined++;
            continue;
        }
        ts->c_tracefunc = trace_request;
        /* CPython's _PyThreadState_UpdateTracingState: */
        ts->cframe->use_tracing = ts->tracing == 0 ? 255 : 0;
    }
}

/* _tracer_run(): the tracer thread's body (_preempt.py); returns once
 * _tracer_stop() is called. */
static PyObject *
mod_tracer_run(PyObject *module, PyObject *unused)
{
    (void)unused;
    gl_module_state *st = PyModule_GetState(module);
    PyInterpreterState *interp = PyThreadState_Get()->interp;
    for (;;) {
        int stop;
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&tracer_mu);
        while (!tracer_wanted && !tracer_stop)
            pthread_cond_wait(&tracer_cv, &tracer_mu);
        stop = tracer_stop;
        tracer_wanted = 0;
        pthread_mutex_unlock(&tracer_mu);
        /* Not while finalizing: a thread that drops the GIL on this
         * request waits until another takes it, and a daemon thread
         * taking it then exits instead (take_gil). */
        if (!stop && !_Py_IsFinalizing())
            gl_py_ask_for_gil(interp);
        Py_END_ALLOW_THREADS
        if (stop)
            break;
        install_traces(st);
    }
    Py_RETURN_NONE;
}

static PyObject *
mod_tracer_stop(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    pthread_mutex_lock(&tracer_mu);
    tracer_stop = 1;
    pthread_cond_signal(&tracer_cv);
    pthread_mutex_unlock(&tracer_mu);
    Py_RETURN_NONE;
}

/* Before a tracer thread starts (and in a fork child, where none runs). */
static PyObject *
mod_tracer_reset(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    pthread_mutex_lock(&tracer_mu);
    tracer_stop = 0;
    pthread_mutex_unlock(&tracer_mu);
    Py_RETURN_NONE;
}
#endif

/* ---- attaching a thread's loop ----------------------------------------- */

static void detach(gl_module_state *st);

static PyObject *
mod_preempt_attach(PyObject *module, PyObject *args)
{
    gl_module_state *st = PyModule_GetState(module);
    double slice;
    PyObject *previous;
    int cpu = 0, wakeup_fd = -1, main = 1;
    if (!PyArg_ParseTuple(args, "dO|pip:_preempt_attach", &slice, &previous, &cpu, &wakeup_fd,
                          &main))
        return NULL;
    if (!(slice > 0 && slice < 3600)) {
        PyErr_Format(PyExc_ValueError, "time slice out of range: %R", PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    if (preempting(st) != NULL && !this_thread->p.attached)
        /* A fork child of a running loop: sysmon forgot its P at the fork
         * (sysmon.c, forget_in_child); a new loop here takes its place. */
        detach(st);
    if (this_thread != NULL) {
        PyErr_SetString(st->goroutine_error, "a loop is already preempted on this thread");
        return NULL;
    }
    if (!main && !GL_THREAD_PREEMPTION && !GL_THREAD_TRACING) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Python preempts loops on the main thread only");
        return NULL;
    }
    gl_preempting *t = PyMem_RawCalloc(1, sizeof *t);
    if (t == NULL)
        return PyErr_NoMemory();
    gl_p_init(&t->p, (int64_t)(slice * 1e9), 0, request_preemption, t);
    if (cpu && gl_p_use_cpu_time(&t->p) != GL_OK) {
        PyMem_RawFree(t);
        PyErr_SetString(PyExc_OSError, "this thread's CPU clock cannot be read");
        return NULL;
    }
    t->st = st;
    t->owner = pthread_self();
    t->tstate = PyThreadState_Get();
    t->interp = t->tstate->interp;
    t->main = main;
    atomic_store(&t->request, 0);
    t->wakeup_fd = -1;
    int sndbuf = 0;
    socklen_t len = sizeof sndbuf;
    if (main && wakeup_fd >= 0
            && getsockopt(wakeup_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0 && sndbuf > 0) {
        t->wakeup_fd = wakeup_fd;
        t->wakeup_room = sndbuf / 2;
    }
    if (main)
        Py_XSETREF(st->urg_previous, Py_NewRef(previous));
    this_thread = t;
    t->next = st->preempting;
    st->preempting = t;
    if (gl_sysmon_attach(&t->p) != GL_OK) {
        detach(st);
        PyErr_SetString(PyExc_RuntimeError, "cannot start goloop's sysmon thread");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Detach the calling thread's loop, if st's. */
static void
detach(gl_module_state *st)
{
    gl_preempting *t = preempting(st);
    if (t == NULL)
        return;
    if (t->p.attached)
        gl_sysmon_detach(&t->p);   /* sysmon no longer calls request_preemption */
    /* A pending call queued for it finds this_thread NULL. */
    this_thread = NULL;
    for (gl_preempting **link = &st->preempting; *link != NULL; link = &(*link)->next)
        if (*link == t) {
            *link = t->next;
            break;
        }
    if (t->main)
        Py_CLEAR(st->urg_previous);
    PyMem_RawFree(t);
}

/* The module's state goes (the interpreter ends): stop sysmon's requests
 * for the loops of threads still running one (daemon threads), which can
 * never run again; their records are left to those threads (which find
 * them no longer st's) rather than freed under them. */
static void
detach_all(gl_module_state *st)
{
    detach(st);
    while (st->preempting != NULL) {
        gl_preempting *t = st->preempting;
        st->preempting = t->next;
        gl_sysmon_detach(&t->p);
        t->st = NULL;
        t->next = NULL;
    }
}

static PyObject *
mod_preempt_detach(PyObject *module, PyObject *unused)
{
    (void)unused;
    detach(PyModule_GetState(module));
    Py_RETURN_NONE;
}

/* _preempt_detach_all(): at exit (atexit, _preempt.py), before the
 * interpreter's pending-call queue goes: stop sysmon's requests for the
 * loops of daemon threads still running one. */
static PyObject *
mod_preempt_detach_all(PyObject *module, PyObject *unused)
{
    (void)unused;
    detach_all(PyModule_GetState(module));
    Py_RETURN_NONE;
}

/* _preempts_threads(): does this Python preempt a loop on a thread other
 * than the main one?  (3.12+ through pending calls, 3.11 through the
 * tracer thread.) */
static PyObject *
mod_preempts_threads(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyBool_FromLong(GL_THREAD_PREEMPTION || GL_THREAD_TRACING);
}

/* os.register_at_fork's before and after_in_parent hooks (_preempt.py). */
static PyObject *
mod_sysmon_pause(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    gl_sysmon_pause();   /* a join, with the GIL: sysmon never takes it */
    Py_RETURN_NONE;
}

static PyObject *
mod_sysmon_resume(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (gl_sysmon_resume() != GL_OK)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

void
gl_preempt_poll_enter(gl_module_state *st)
{
    gl_preempting *t = preempting(st);
    if (t != NULL)
        gl_p_poll_enter(&t->p);
}

void
gl_preempt_poll_exit(gl_module_state *st)
{
    gl_preempting *t = preempting(st);
    if (t != NULL)
        gl_p_poll_exit(&t->p);
}

static PyObject *
mod_poll_enter(PyObject *module, PyObject *unused)
{
    (void)unused;
    gl_preempt_poll_enter(PyModule_GetState(module));
    Py_RETURN_NONE;
}

static PyObject *
mod_poll_exit(PyObject *module, PyObject *unused)
{
    (void)unused;
    gl_preempt_poll_exit(PyModule_GetState(module));
    Py_RETURN_NONE;
}

/* Tests only: turn off a protection, to show that their tests catch what
 * it protects from. */
static PyObject *
mod_unsafe_preempt(PyObject *module, PyObject *args, PyObject *kwargs)
{
    gl_module_state *st = PyModule_GetState(module);
    static char *kwlist[] = {"locks", "greenlets", "libraries", NULL};
    int locks = 0, greenlets = 0, libraries = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$ppp:_unsafe_preempt", kwlist,
                                     &locks, &greenlets, &libraries))
        return NULL;
    st->unsafe_locks = locks;
    st->unsafe_greenlets = greenlets;
    st->unsafe_libraries = libraries;
    Py_RETURN_NONE;
}

static PyObject *
mod_setup_preempt(PyObject *module, PyObject *args)
{
    gl_module_state *st = PyModule_GetState(module);
    PyObject *var, *enter, *leave, *current, *codes, *top, *below, *files, *classify, *awaits;
    if (!PyArg_ParseTuple(args, "O!OOOO!O!O!O!OO:_setup_preempt", &PyContextVar_Type, &var,
                          &enter, &leave, &current, &PyTuple_Type, &codes, &PyTuple_Type,
                          &top, &PyTuple_Type, &below, &PyDict_Type, &files, &classify,
                          &awaits))
        return NULL;
    for (int k = 0; k < 2; k++) {
        PyObject *t = k ? below : top;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++)
            if (!PyUnicode_Check(PyTuple_GET_ITEM(t, i))) {
                PyErr_SetString(PyExc_TypeError, "module prefixes must be str");
                return NULL;
            }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(codes); i++)
        if (!PyCode_Check(PyTuple_GET_ITEM(codes, i))) {
            PyErr_SetString(PyExc_TypeError, "base_codes must be code objects");
            return NULL;
        }
    Py_XSETREF(st->base_codes, Py_NewRef(codes));
    Py_XSETREF(st->atomic_var, Py_NewRef(var));
    Py_XSETREF(st->enter_task, Py_NewRef(enter));
    Py_XSETREF(st->leave_task, Py_NewRef(leave));
    Py_XSETREF(st->current_task, Py_NewRef(current));
    Py_XSETREF(st->library_files, Py_NewRef(files));
    Py_XSETREF(st->is_library_file, Py_NewRef(classify));
    Py_XSETREF(st->awaits_at, Py_NewRef(awaits));
    Py_XSETREF(st->base_only, Py_NewRef(top));
    Py_XSETREF(st->never_preempt, Py_NewRef(below));
    Py_RETURN_NONE;
}

PyMethodDef gl_preempt_methods[] = {
    {"_on_sigurg", (PyCFunction)(void (*)(void))mod_on_sigurg, METH_FASTCALL,
     "_on_sigurg(signum, frame, /)\n--\n\nThe SIGURG handler while a loop "
     "preempts: parks the running step if sysmon asked and it may be."},
    {"_preempt_attach", mod_preempt_attach, METH_VARARGS,
     "_preempt_attach(time_slice, previous_handler, cpu_time=False, wakeup_fd=-1, "
     "main_thread=True, /)"
     "\n--\n\n(cpu_time: the slice counts this thread's CPU time, not wall time; "
     "wakeup_fd: the loop's self-pipe socket, see wakeup_fd_crowded.)  Let sysmon "
     "watch this thread's steps: by SIGURG on the main thread (previous_handler: "
     "the handler SIGURGs goloop did not send go to), by pending calls elsewhere."},
    {"_preempt_detach", mod_preempt_detach, METH_NOARGS,
     "_preempt_detach()\n--\n\nStop preempting this thread's loop."},
    {"_preempt_detach_all", mod_preempt_detach_all, METH_NOARGS,
     "_preempt_detach_all()\n--\n\nStop preempting every thread's loop (at exit: "
     "daemon threads' loops then run cooperatively)."},
    {"_preempts_threads", mod_preempts_threads, METH_NOARGS,
     "_preempts_threads()\n--\n\nWhether a loop on a thread other than the main one "
     "is preempted on this Python (3.12+)."},
#if GL_THREAD_TRACING
    {"_tracer_run", mod_tracer_run, METH_NOARGS,
     "_tracer_run()\n--\n\nThe tracer thread's body (3.11): install the trace function that "
     "preempts a step on a loop thread sysmon asks for, until _tracer_stop()."},
    {"_tracer_stop", mod_tracer_stop, METH_NOARGS,
     "_tracer_stop()\n--\n\nMake _tracer_run() return."},
    {"_tracer_reset", mod_tracer_reset, METH_NOARGS,
     "_tracer_reset()\n--\n\nBefore a tracer thread starts: forget an earlier _tracer_stop()."},
#endif
    {"_sysmon_pause", mod_sysmon_pause, METH_NOARGS,
     "_sysmon_pause()\n--\n\nEnd sysmon's thread until _sysmon_resume() (before a fork)."},
    {"_sysmon_resume", mod_sysmon_resume, METH_NOARGS,
     "_sysmon_resume()\n--\n\nStart sysmon's thread again if a loop is attached."},
    {"_poll_enter", mod_poll_enter, METH_NOARGS,
     "_poll_enter()\n--\n\nThe loop is about to block waiting for I/O."},
    {"_poll_exit", mod_poll_exit, METH_NOARGS,
     "_poll_exit()\n--\n\nThe loop is back from waiting for I/O."},
    {"_unsafe_preempt", (PyCFunction)(void (*)(void))mod_unsafe_preempt,
     METH_VARARGS | METH_KEYWORDS,
     "_unsafe_preempt(*, locks=False, greenlets=False, libraries=False)\n--\n\nFor "
     "tests' controls only: preempt steps that hold threading locks (locks=True), "
     "do not keep a task's greenlets on one worker (greenlets=True), preempt "
     "libraries' code anywhere (libraries=True)."},
    {"_learn_must_cancel", mod_learn_must_cancel, METH_O,
     "_learn_must_cancel(task, /)\n--\n\nFind the C Task's _must_cancel field from a "
     "cancelled Task nothing else uses (CPython < 3.13; see preempt.c)."},
    {"_setup_preempt", mod_setup_preempt, METH_VARARGS,
     "_setup_preempt(atomic_var, enter_task, leave_task, current_task, base_codes, "
     "base_only, never_preempt, library_files, is_library_file, awaits_at, /)\n--\n\n"
     "library_files: a dict is_library_file()'s answers are kept in, by file name; "
     "awaits_at(code, lasti): is that instruction an await."},
    {NULL, NULL, 0, NULL}
};

/* ---- statistics and module state --------------------------------------- */

int
gl_preempt_stats(gl_module_state *st, PyObject *d)
{
    gl_sysmon_stats s;
    gl_sysmon_get_stats(&s);
    uint64_t loops = 0;
    for (gl_preempting *t = st->preempting; t != NULL; t = t->next)
        loops++;
    PyObject *longest = PyFloat_FromDouble((double)st->longest_step_ns / 1e9);
    int r = longest ? PyDict_SetItemString(d, "longest_step", longest) : -1;
    Py_XDECREF(longest);
    if (r < 0 || gl_dict_set_u64(d, "steps", st->steps) < 0
            || gl_dict_set_u64(d, "preemptions", st->preemptions) < 0
            || gl_dict_set_u64(d, "awaits", st->awaits) < 0
            || gl_dict_set_u64(d, "preempt_declined", st->declined) < 0
            || gl_dict_set_u64(d, "preempt_deferred", st->deferred) < 0
            || gl_dict_set_u64(d, "preempt_withheld", atomic_load(&st->withheld)) < 0
            || gl_dict_set_u64(d, "steps_held_back", st->held_back) < 0
            || gl_dict_set_u64(d, "preempt_requests", s.requests) < 0
            || gl_dict_set_u64(d, "sysmon_wakeups", s.wakeups) < 0
            || gl_dict_set_u64(d, "preempting_loops", loops) < 0)
        return -1;
    return 0;
}

int
gl_preempt_init(PyObject *module, gl_module_state *st)
{
    (void)module;
    st->str_greenlet = PyUnicode_InternFromString("greenlet");
    return st->str_greenlet ? 0 : -1;
}

int
gl_preempt_traverse(gl_module_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->urg_previous);
    Py_VISIT(st->atomic_var);
    Py_VISIT(st->base_codes);
    Py_VISIT(st->base_only);
    Py_VISIT(st->never_preempt);
    Py_VISIT(st->enter_task);
    Py_VISIT(st->leave_task);
    Py_VISIT(st->current_task);
    Py_VISIT(st->library_files);
    Py_VISIT(st->is_library_file);
    Py_VISIT(st->awaits_at);
    Py_VISIT(st->must_cancel_type);
    return 0;
}

void
gl_preempt_clear(gl_module_state *st)
{
    detach_all(st);
    Py_CLEAR(st->urg_previous);
    Py_CLEAR(st->atomic_var);
    Py_CLEAR(st->base_codes);
    Py_CLEAR(st->base_only);
    Py_CLEAR(st->never_preempt);
    Py_CLEAR(st->enter_task);
    Py_CLEAR(st->leave_task);
    Py_CLEAR(st->current_task);
    Py_CLEAR(st->library_files);
    Py_CLEAR(st->is_library_file);
    Py_CLEAR(st->awaits_at);
    Py_CLEAR(st->must_cancel_type);
    Py_CLEAR(st->str_greenlet);
}

/* ---- for await.c ------------------------------------------------------- */

int
gl_preempt_inside_atomic(gl_module_state *st)
{
    return inside_atomic(st);
}

int
gl_preempt_in_child_greenlet(gl_module_state *st)
{
    return in_child_greenlet(st);
}

PyObject *
gl_preempt_running_task(gl_module_state *st, PyObject *loop, PyObject *handle)
{
    return running_task(st, loop, handle);
}

int
gl_preempt_task_must_cancel(gl_module_state *st, PyObject *task)
{
    /* The C Task's, read where _learn_must_cancel found it: no getter call
     * (await.c asks twice per wait). */
    if (st->must_cancel_type != NULL
            && PyObject_TypeCheck(task, (PyTypeObject *)st->must_cancel_type)) {
        unsigned *field = (unsigned *)((char *)task + st->must_cancel_offset);
        int set = (*field & st->must_cancel_mask) != 0;
        assert(set == task_must_cancel(task));
        return set;
    }
    return task_must_cancel(task);
}

int
gl_preempt_set_task_must_cancel(gl_module_state *st, PyObject *task, int value)
{
    return set_task_must_cancel(st, task, value);
}

#endif
