/*
 * schedtrace.c — GOLOOP_SCHEDTRACE=<ms>: one line per running loop per
 * period on stderr, as Go's GODEBUG=schedtrace=<ms> prints its scheduler.
 *
 *   goloop: 2003ms: loop=1 thread=4242 steps=1507 callbacks=12 preempt=9
 *       longest=10.214ms stuck=0ms ready=0 timers=2 fds=1 preempted=1
 *       stacks=3/5 rss=31.2MiB
 *
 * (one line; the README's "Scheduler trace" documents every field).
 *
 * Why a thread of its own, in C.  The trace is most useful when the loop is
 * stuck — a step that is not preemptible, a long callback — and then no
 * callback of the loop runs, and the GIL may be held for as long.  So a
 * small thread prints it: it wakes every period, takes its mutex, copies
 * the counters of the registered loops (gl_trace_loop, schedtrace.h: C11
 * atomics the loop's thread stores with relaxed order, so the copy needs no
 * GIL), lets go of the mutex, and formats with snprintf and write(2)s each
 * line to fd 2 — never a Python call, never the GIL.  A line is at most a
 * few hundred bytes, under PIPE_BUF, so lines of several loops, or of
 * another writer, do not mix.  Before writing it polls fd 2 for up to
 * WRITE_WAIT_MS: a stderr nobody reads (a full pipe) loses lines instead of
 * holding the thread, whose join at a loop's end or a fork would then wait.
 *
 * Which loops: those whose run_forever is running (loop.c registers a loop
 * when its run starts and unregisters it when it ends, on its own thread,
 * with the GIL).  The thread starts with the first of them when a period is
 * set (goloop/__init__.py parses GOLOOP_SCHEDTRACE at import) and ends with
 * the last, so a process with no loop running has no thread of goloop's; it
 * is stopped around os.fork() (the fork hooks in goloop/__init__.py; Python
 * 3.12+ warns when a multi-threaded process forks) and started again in the
 * parent.  The child traces none of the loops it inherits: the others'
 * threads are gone, and a child forked from a running loop's thread almost
 * always does something else (a ProcessPoolExecutor's worker, forked from
 * run_in_executor) — its trace would show a loop stuck for ever.  A loop
 * the child runs (run_forever) is traced from then on.
 *
 * What a line says: counters (steps, callbacks, preempt) are what the loop
 * did since the previous line; longest is the longest stretch of a task
 * step that ended in the period (loop.c measures it from the readings the
 * step's start and end already take); stuck is how long the loop has
 * been seen busy without finishing a step or a callback or coming back
 * from a wait for I/O — a lower bound, to a period: a loop stuck in one
 * step (not preemptible, or a long callback) shows it growing by a period
 * per line while steps stays at 0.  (The loop marks nothing per step for
 * it: the counters it keeps anyway, and a mark around each wait that may
 * block.)  The gauges (ready, timers, fds, preempted)
 * are as the loop published them at the start of its current iteration;
 * stacks and rss are the process's, now.
 *
 * The clock: CLOCK_MONOTONIC, the runtime's (gl_nanotime); the times in
 * the lines' heads count from the GOLOOP_SCHEDTRACE set-up (goloop's
 * import), the lines of one period sharing their time.
 */
#include "glue.h"
#include "schedtrace.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_LOOPS_SHOWN 64           /* lines per period; more loops: one
                                        line saying how many were left out */
#define WRITE_WAIT_MS 100
#define TRACE_LINE_MAX 512

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;            /* CLOCK_MONOTONIC (init_once) */
static pthread_once_t once = PTHREAD_ONCE_INIT;
/* Under mu: */
static gl_trace_loop *loops;         /* registered (running) loops */
static int64_t n_loops;
static int64_t period_ns;            /* 0: no trace */
static int64_t origin_ns;            /* the lines' times count from here */
static pthread_t thread;
static int running, stopping, paused;
static _Atomic uint64_t last_id;
_Atomic int gl_trace_on;             /* == running, for the loops to read */

static long
this_tid(void)
{
    return (long)syscall(SYS_gettid);
}

static void
init_once(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &ca);
    pthread_condattr_destroy(&ca);
}

uint64_t
gl_trace_next_id(void)
{
    return atomic_fetch_add(&last_id, 1) + 1;
}

int64_t
gl_trace_rss(void)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[128];
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    unsigned long long size, resident;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return -1;
    long page = sysconf(_SC_PAGESIZE);
    return (int64_t)resident * (page > 0 ? page : 4096);
}

/* ---- the thread -------------------------------------------------------- */

/* What one line shows, copied under mu. */
typedef struct {
    uint64_t id;
    long tid;
    uint64_t steps, callbacks, preemptions;
    int64_t longest_ns, stuck_ns, ready, timers, fds, preempted;
} line_data;

/* Copy l's counters for a line at `now` (mu held): the differences since
 * the last line, and how long it has been seen stuck. */
static void
take(gl_trace_loop *l, int64_t now, line_data *d)
{
    uint64_t steps = atomic_load_explicit(&l->steps, memory_order_relaxed);
    uint64_t callbacks = atomic_load_explicit(&l->callbacks, memory_order_relaxed);
    uint64_t preemptions = atomic_load_explicit(&l->preemptions, memory_order_relaxed);
    uint64_t polls = atomic_load_explicit(&l->polls, memory_order_relaxed);
    int polling = atomic_load_explicit(&l->polling, memory_order_relaxed);
    d->id = l->id;
    d->tid = l->tid;
    d->steps = steps - l->seen_steps;
    d->callbacks = callbacks - l->seen_callbacks;
    d->preemptions = preemptions - l->seen_preemptions;
    l->seen_steps = steps;
    l->seen_callbacks = callbacks;
    l->seen_preemptions = preemptions;
    d->longest_ns = atomic_exchange_explicit(&l->period_longest_ns, 0, memory_order_relaxed);
    /* Stuck: it has neither finished a step or a callback nor come back
     * from a wait for I/O since the last line, and does not wait now. */
    if (polling || d->steps != 0 || d->callbacks != 0 || polls != l->seen_polls) {
        l->progress_seen_at = now;
        d->stuck_ns = 0;
    }
    else
        d->stuck_ns = now - l->progress_seen_at;
    l->seen_polls = polls;
    d->ready = atomic_load_explicit(&l->ready, memory_order_relaxed);
    d->timers = atomic_load_explicit(&l->timers, memory_order_relaxed);
    d->fds = atomic_load_explicit(&l->fds, memory_order_relaxed);
    d->preempted = atomic_load_explicit(&l->preempted, memory_order_relaxed);
}

/* Write a line to fd 2 if it takes it within WRITE_WAIT_MS: 0, or -1 (the
 * rest of the period's lines are dropped). */
static int
put(const char *s, size_t len)
{
    struct pollfd pfd = {.fd = 2, .events = POLLOUT};
    int r;
    do
        r = poll(&pfd, 1, WRITE_WAIT_MS);
    while (r < 0 && errno == EINTR);
    if (r <= 0 || !(pfd.revents & POLLOUT))
        return -1;
    while (len > 0) {
        ssize_t n = write(2, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static void
print_period(int64_t at, const line_data *lines, int n, int64_t left_out)
{
    gl_stats s;
    gl_get_stats(&s);
    int64_t rss = gl_trace_rss();
    double rss_mib = rss < 0 ? -1.0 : (double)rss / (1024.0 * 1024.0);
    long long ms = (long long)((at - origin_ns) / 1000000);
    char buf[TRACE_LINE_MAX];
    for (int i = 0; i < n; i++) {
        const line_data *d = &lines[i];
        int len = snprintf(buf, sizeof buf,
                           "goloop: %lldms: loop=%llu thread=%ld steps=%llu callbacks=%llu "
                           "preempt=%llu longest=%.3fms stuck=%lldms ready=%lld timers=%lld "
                           "fds=%lld preempted=%lld stacks=%llu/%llu rss=%.1fMiB\n",
                           ms, (unsigned long long)d->id, d->tid,
                           (unsigned long long)d->steps, (unsigned long long)d->callbacks,
                           (unsigned long long)d->preemptions, (double)d->longest_ns / 1e6,
                           (long long)(d->stuck_ns / 1000000), (long long)d->ready,
                           (long long)d->timers, (long long)d->fds, (long long)d->preempted,
                           (unsigned long long)s.stacks_in_use,
                           (unsigned long long)s.stacks_cached, rss_mib);
        assert(len > 0 && len < (int)sizeof buf);
        if (len <= 0 || len >= (int)sizeof buf || put(buf, (size_t)len) < 0)
            return;
    }
    if (left_out > 0) {
        int len = snprintf(buf, sizeof buf, "goloop: %lldms: loops_not_shown=%lld\n", ms,
                           (long long)left_out);
        if (len > 0 && len < (int)sizeof buf)
            (void)put(buf, (size_t)len);
    }
}

static void *
trace_main(void *unused)
{
    (void)unused;
    line_data lines[MAX_LOOPS_SHOWN];
    pthread_mutex_lock(&mu);
    int64_t next = gl_nanotime() + period_ns;
    for (;;) {
        while (!stopping) {
            struct timespec ts = {(time_t)(next / 1000000000), (long)(next % 1000000000)};
            int r = pthread_cond_timedwait(&cv, &mu, &ts);
            if (r == ETIMEDOUT || gl_nanotime() >= next)
                break;
        }
        if (stopping)
            break;
        int64_t now = gl_nanotime();
        int n = 0;
        int64_t left_out = 0;
        for (gl_trace_loop *l = loops; l != NULL; l = l->next) {
            if (n < MAX_LOOPS_SHOWN)
                take(l, now, &lines[n++]);
            else
                left_out++;
        }
        int64_t period = period_ns;
        pthread_mutex_unlock(&mu);
        print_period(now, lines, n, left_out);
        pthread_mutex_lock(&mu);
        next += period;
        if (next <= now)   /* fell behind (a stopped process): skip, not burst */
            next = now + period;
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Start the thread if it should run; mu held. */
static void
start(void)
{
    if (running || paused || period_ns <= 0 || n_loops == 0)
        return;
    pthread_once(&once, init_once);
    /* Signals go to the application's threads, never this one. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int err = pthread_create(&thread, &attr, trace_main, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err == 0) {
        running = 1;
        atomic_store(&gl_trace_on, 1);
        return;
    }
    static const char msg[] = "goloop: GOLOOP_SCHEDTRACE: cannot start the trace thread\n";
    (void)!write(2, msg, sizeof msg - 1);
}

/* End the thread; mu held (let go of while joining).  It holds mu only to
 * copy counters and never takes the GIL, so the join waits at most for a
 * line being written (WRITE_WAIT_MS a line). */
static void
stop(void)
{
    if (!running)
        return;
    atomic_store(&gl_trace_on, 0);
    stopping = 1;
    pthread_cond_signal(&cv);
    pthread_t t = thread;
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    pthread_mutex_lock(&mu);
    running = 0;
    stopping = 0;
}

/* ---- loops ------------------------------------------------------------- */

void
gl_trace_register(gl_trace_loop *l)
{
    pthread_mutex_lock(&mu);
    for (gl_trace_loop *x = loops; x != NULL; x = x->next)
        if (x == l) {
            pthread_mutex_unlock(&mu);
            return;
        }
    l->tid = this_tid();
    l->seen_steps = atomic_load_explicit(&l->steps, memory_order_relaxed);
    l->seen_callbacks = atomic_load_explicit(&l->callbacks, memory_order_relaxed);
    l->seen_preemptions = atomic_load_explicit(&l->preemptions, memory_order_relaxed);
    l->seen_polls = atomic_load_explicit(&l->polls, memory_order_relaxed);
    l->progress_seen_at = gl_nanotime();
    atomic_store_explicit(&l->period_longest_ns, 0, memory_order_relaxed);
    l->next = loops;
    loops = l;
    n_loops++;
    start();
    pthread_mutex_unlock(&mu);
}

void
gl_trace_unregister(gl_trace_loop *l)
{
    pthread_mutex_lock(&mu);
    for (gl_trace_loop **link = &loops; *link != NULL; link = &(*link)->next)
        if (*link == l) {
            *link = l->next;
            l->next = NULL;
            n_loops--;
            break;
        }
    if (n_loops == 0) {
        stop();
        start();   /* a loop registered while stop() waited */
    }
    pthread_mutex_unlock(&mu);
}

int64_t
gl_trace_foreach(void (*fn)(gl_trace_loop *l, void *arg), void *arg)
{
    pthread_mutex_lock(&mu);
    int64_t n = n_loops;
    for (gl_trace_loop *l = loops; l != NULL; l = l->next)
        fn(l, arg);
    pthread_mutex_unlock(&mu);
    return n;
}

/* ---- module functions -------------------------------------------------- */

static PyObject *
mod_schedtrace_configure(PyObject *module, PyObject *arg)
{
    (void)module;
    long long ms = PyLong_AsLongLong(arg);
    if (ms == -1 && PyErr_Occurred())
        return NULL;
    if (ms < 0 || ms > 86400000LL) {
        PyErr_Format(PyExc_ValueError,
                     "schedtrace period must be 0 (off) to 86400000 ms, not %lld", ms);
        return NULL;
    }
    pthread_mutex_lock(&mu);
    if (origin_ns == 0)
        origin_ns = gl_nanotime();
    period_ns = ms * 1000000;
    if (period_ns == 0)
        stop();
    else
        start();
    pthread_mutex_unlock(&mu);
    Py_RETURN_NONE;
}

static PyObject *
mod_schedtrace_period(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    pthread_mutex_lock(&mu);
    long long ms = period_ns / 1000000;
    int on = running;
    pthread_mutex_unlock(&mu);
    return Py_BuildValue("(LO)", ms, on ? Py_True : Py_False);
}

/* os.register_at_fork's hooks (goloop/__init__.py).  The thread never
 * takes the GIL, so joining it with the GIL held is safe. */
static PyObject *
mod_schedtrace_pause(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    pthread_mutex_lock(&mu);
    paused = 1;
    stop();
    pthread_mutex_unlock(&mu);
    Py_RETURN_NONE;
}

static PyObject *
mod_schedtrace_resume(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    pthread_mutex_lock(&mu);
    paused = 0;
    start();
    pthread_mutex_unlock(&mu);
    Py_RETURN_NONE;
}

/* In the child (see top): the thread is gone (joined before the fork),
 * and no loop is traced until one runs again.  A loop still registered
 * here, whose run_forever ends in the child, finds itself not registered:
 * unregistering it does nothing. */
static PyObject *
mod_schedtrace_forget(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    pthread_mutex_lock(&mu);
    running = 0;
    atomic_store(&gl_trace_on, 0);
    stopping = 0;
    paused = 0;
    for (gl_trace_loop *l = loops, *next; l != NULL; l = next) {
        next = l->next;
        l->next = NULL;
    }
    loops = NULL;
    n_loops = 0;
    pthread_mutex_unlock(&mu);
    Py_RETURN_NONE;
}

PyMethodDef gl_schedtrace_methods[] = {
    {"_schedtrace_configure", mod_schedtrace_configure, METH_O,
     "_schedtrace_configure(ms, /)\n--\n\nPrint the scheduler trace every ms "
     "milliseconds while a loop runs (0: never); GOLOOP_SCHEDTRACE, parsed by "
     "goloop/__init__.py."},
    {"_schedtrace_period", mod_schedtrace_period, METH_NOARGS,
     "_schedtrace_period()\n--\n\n(period in ms, whether the trace thread runs now)."},
    {"_schedtrace_pause", mod_schedtrace_pause, METH_NOARGS,
     "_schedtrace_pause()\n--\n\nEnd the trace thread until _schedtrace_resume() "
     "(before a fork)."},
    {"_schedtrace_resume", mod_schedtrace_resume, METH_NOARGS,
     "_schedtrace_resume()\n--\n\nStart it again if a loop runs (after a fork, in "
     "the parent)."},
    {"_schedtrace_forget", mod_schedtrace_forget, METH_NOARGS,
     "_schedtrace_forget()\n--\n\nAfter a fork, in the child: trace none of the "
     "loops inherited."},
    {NULL, NULL, 0, NULL}
};

#endif
