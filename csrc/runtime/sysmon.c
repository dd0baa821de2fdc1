/*
 * sysmon.c — the monitor thread that asks for long steps to be preempted.
 *
 * As in Go's runtime (proc.go, sysmon), one background thread per process
 * watches the schedulers ("P"s) attached to it.  Each P's owner thread marks
 * the start and end of every step by bumping p->tick (odd while a step runs)
 * and stamping p->since; sysmon never takes part in the step itself.  When
 * the running step — same tick — has run for p->slice_ns, sysmon calls
 * p->preempt(p, tick), and again every p->retry_ns while that step goes on
 * (the owner may decline: the step is in code that must not be interrupted).
 *
 * Sleeping.  sysmon's rhythm is Go's: 20 µs between looks, doubling after
 * 50 looks that found nothing to do, capped at 10 ms (and at the smallest
 * slice, so that a step starting during a sleep is never looked at after
 * its deadline).  Unlike Go's sysmon, which stamps a tick with its own clock
 * when it first notices it, the owner stamps `since` itself (one clock read
 * per step), so sysmon also never sleeps past the deadline of the step it
 * saw running: requests land on time whatever the back-off.
 *
 * While every attached P is blocked waiting for I/O — it was polling at two
 * looks in a row and has not polled again in between — there is nothing a
 * step could be doing, and sysmon sleeps until woken: by gl_p_poll_exit of a
 * P it saw polling (the only place the owner side pays a syscall, at most
 * once per sysmon sleep), or by an attach.  An idle process therefore costs
 * no wake-ups at all.  The wake-up handshake is Dekker's: sysmon stores
 * `sleeping` then re-reads `polling`; the owner stores `polling` then reads
 * `sleeping` (all sequentially consistent), so one of them sees the other.
 *
 * Everything sysmon owns (the P list, the fields below the line in gl_p,
 * the counters) is under `mu`, which it releases only while sleeping; the
 * preempt callback runs with `mu` held, so gl_sysmon_detach, which takes
 * it, returns only once no callback for that P can be running or come.
 *
 * The thread lives while some P is attached: the detach of the last one
 * stops it (and waits for it), so a process whose loops have all finished
 * has no thread of goloop's left.  gl_sysmon_pause and gl_sysmon_resume
 * stop it and start it again around a fork (the glue calls them from
 * Python's os.register_at_fork hooks): a thread running at os.fork() makes
 * CPython (3.12+) warn that forking a multi-threaded process may deadlock
 * the child, which sysmon, holding no lock the child needs, would make a
 * false alarm on every fork from a running loop.  (pthread_atfork's parent
 * handler runs before CPython counts the threads, too early to restart.)
 * In the child only the forking thread exists: the atfork handler forgets
 * the list, and a P attached in the parent is not watched there (its
 * owner's next attach starts a new sysmon).
 */
#include "runtime.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#define NS_PER_US 1000LL
#define NS_PER_MS (1000LL * NS_PER_US)
#define DELAY_MIN (20 * NS_PER_US)     /* Go: usleep(20) */
#define DELAY_MAX (10 * NS_PER_MS)     /* Go: 10 ms */
#define IDLE_LOOKS_BEFORE_BACKOFF 50   /* Go: idle > 50 */
#define NEVER INT64_MAX
#define RETRY_FIRST (50 * NS_PER_US)   /* first repeat of a declined request */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;              /* CLOCK_MONOTONIC; made by init_once() */
static bool running;                   /* the thread exists */
static bool stopping;                  /* asked to end (stop()) */
static pthread_t thread;               /* valid while running */
static gl_p *ps;                       /* attached Ps */
static _Atomic int sleeping;           /* in the sleep-until-woken */
static gl_sysmon_stats counters;

int64_t gl_nanotime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t gl_thread_cputime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int gl_p_use_cpu_time(gl_p *p)
{
    if (pthread_getcpuclockid(pthread_self(), &p->cpu_clock) != 0)
        return GL_EINVAL;
    p->cpu_slice = 1;
    return GL_OK;
}

/* When p's running step, begun at wall time `since`, has used its slice:
 * in wall time, or — cpu_slice — once its thread has had the slice's CPU
 * time since the step began (never sooner than that in wall time). */
static int64_t step_due(gl_p *p, int64_t since, int64_t now)
{
    if (!p->cpu_slice)
        return since + p->slice_ns;
    struct timespec ts;
    if (clock_gettime(p->cpu_clock, &ts) != 0)
        return since + p->slice_ns;
    int64_t used = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec
                   - atomic_load_explicit(&p->since_cpu, memory_order_relaxed);
    return used >= p->slice_ns ? now : now + (p->slice_ns - used);
}

void gl_p_init(gl_p *p, int64_t slice_ns, int64_t retry_ns,
               void (*preempt)(gl_p *p, uint64_t tick), void *ctx)
{
    *p = (gl_p){0};
    p->slice_ns = slice_ns;
    if (retry_ns <= 0)
        retry_ns = RETRY_FIRST;
    p->retry_ns = retry_ns < slice_ns ? retry_ns : slice_ns;
    p->preempt = preempt;
    p->ctx = ctx;
}

/* Ask for p's running step to stop if its time is up; returns when sysmon
 * should look at p again (NEVER: not before something else wakes it). */
static int64_t look_at_step(gl_p *p, int64_t now)
{
    uint64_t tick = atomic_load_explicit(&p->tick, memory_order_acquire);
    if ((tick & 1) == 0)
        return now + p->slice_ns;   /* between steps: none can be due sooner */
    int64_t due = step_due(p, atomic_load_explicit(&p->since, memory_order_relaxed), now);
    if (p->requested_tick == tick && p->retry_at > due)
        due = p->retry_at;
    if (now < due)
        return due;
    if (p->requested_tick == tick) {
        p->backoff *= 2;
        if (p->backoff > p->slice_ns)
            p->backoff = p->slice_ns;
    }
    else {
        p->requested_tick = tick;
        p->backoff = p->retry_ns;
    }
    p->retry_at = now + p->backoff;
    counters.requests++;
    p->preempt(p, tick);
    return p->retry_at;
}

/* Has p been blocked in one poll since the last look?  Updates the look. */
static bool blocked_in_poll(gl_p *p)
{
    int polling = atomic_load(&p->polling);
    uint64_t polls = atomic_load(&p->polls);
    bool blocked = polling && p->seen_polling && polls == p->seen_polls;
    p->seen_polling = polling;
    p->seen_polls = polls;
    return blocked;
}

static bool any_p_stopped_polling(void)
{
    for (gl_p *p = ps; p != NULL; p = p->next)
        if (!atomic_load(&p->polling) || atomic_load(&p->polls) != p->seen_polls)
            return true;
    return false;
}

static void sleep_until(int64_t deadline)
{
    struct timespec ts = {
        .tv_sec = deadline / 1000000000LL,
        .tv_nsec = deadline % 1000000000LL,
    };
    pthread_cond_timedwait(&cv, &mu, &ts);
}

/* Sleep until an attach or a gl_p_poll_exit wakes us, unless a P stopped
 * polling meanwhile.  Returns whether it slept. */
static bool sleep_until_woken(void)
{
    atomic_store(&sleeping, 1);
    bool slept = !any_p_stopped_polling();
    if (slept) {
        counters.deep_sleeps++;
        while (atomic_load(&sleeping))
            pthread_cond_wait(&cv, &mu);
    }
    atomic_store(&sleeping, 0);
    return slept;
}

static void *sysmon_main(void *unused)
{
    (void)unused;
    int64_t delay = DELAY_MIN;
    int idle = 0;
    pthread_mutex_lock(&mu);
    while (!stopping) {
        int64_t now = gl_nanotime();
        int64_t next_look = NEVER, cap = DELAY_MAX;
        bool busy = false;
        for (gl_p *p = ps; p != NULL; p = p->next) {
            if (!blocked_in_poll(p))
                busy = true;
            if (!atomic_load(&p->polling)) {
                int64_t t = look_at_step(p, now);
                if (t < next_look)
                    next_look = t;
            }
            if (p->slice_ns < cap)
                cap = p->slice_ns;
        }
        if (!busy) {
            if (sleep_until_woken()) {
                counters.wakeups++;
                idle = 0;
            }
            continue;
        }
        /* Go's back-off: 20 µs, doubled once 50 looks found nothing. */
        idle++;
        if (idle == 1)
            delay = DELAY_MIN;
        else if (idle > IDLE_LOOKS_BEFORE_BACKOFF)
            delay *= 2;
        if (delay > cap)
            delay = cap;
        int64_t until = now + delay;
        sleep_until(until < next_look ? until : next_look);
        counters.wakeups++;
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* End the thread and wait for it; `mu` held (released meanwhile). */
static void stop(void)
{
    if (!running)
        return;
    stopping = true;
    atomic_store(&sleeping, 0);
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(thread, NULL);
    pthread_mutex_lock(&mu);
    running = false;
    stopping = false;
}

static int start(void);

void gl_sysmon_pause(void)
{
    pthread_mutex_lock(&mu);
    stop();
    pthread_mutex_unlock(&mu);
}

int gl_sysmon_resume(void)
{
    pthread_mutex_lock(&mu);
    int err = ps != NULL ? start() : GL_OK;
    pthread_mutex_unlock(&mu);
    return err;
}

static void forget_in_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    mu = fresh;
    running = false;
    stopping = false;
    for (gl_p *p = ps; p != NULL; p = p->next)
        p->attached = 0;
    ps = NULL;
    atomic_store(&sleeping, 0);
}

/* Once per process: the condition variable (on CLOCK_MONOTONIC, the
 * clock of gl_nanotime) and the atfork handler. */
static void init_once(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_atfork(NULL, NULL, forget_in_child);
}

/* Start the thread if it is not running; `mu` held. */
static int start(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (running)
        return GL_OK;
    pthread_once(&once, init_once);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int err = pthread_create(&thread, &attr, sysmon_main, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0)
        return GL_ENOMEM;
    running = true;
    return GL_OK;
}

int gl_sysmon_attach(gl_p *p)
{
    if (p->slice_ns <= 0 || p->retry_ns <= 0 || p->preempt == NULL)
        return GL_EINVAL;
    pthread_mutex_lock(&mu);
    int err = p->attached ? GL_EINVAL : start();
    if (err == GL_OK) {
        p->requested_tick = 0;
        p->retry_at = 0;
        p->seen_polling = 0;
        p->attached = 1;
        p->next = ps;
        ps = p;
        atomic_store(&sleeping, 0);
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    return err;
}

void gl_sysmon_detach(gl_p *p)
{
    pthread_mutex_lock(&mu);
    for (gl_p **link = &ps; *link != NULL; link = &(*link)->next) {
        if (*link == p) {
            *link = p->next;
            break;
        }
    }
    p->next = NULL;
    p->attached = 0;
    if (ps == NULL) {
        stop();
        /* A P attached while stop() waited found the thread still running:
         * it needs a new one.  (If none can be made, its long steps go
         * unpreempted until the next attach starts one.) */
        if (ps != NULL)
            (void)start();
    }
    pthread_mutex_unlock(&mu);
}

void gl_p_poll_enter(gl_p *p)
{
    atomic_fetch_add_explicit(&p->polls, 1, memory_order_relaxed);
    atomic_store(&p->polling, 1);
}

void gl_p_poll_exit(gl_p *p)
{
    atomic_store(&p->polling, 0);
    if (atomic_load(&sleeping)) {
        pthread_mutex_lock(&mu);
        if (atomic_load(&sleeping)) {
            atomic_store(&sleeping, 0);
            pthread_cond_signal(&cv);
        }
        pthread_mutex_unlock(&mu);
    }
}

void gl_sysmon_get_stats(gl_sysmon_stats *out)
{
    pthread_mutex_lock(&mu);
    *out = counters;
    pthread_mutex_unlock(&mu);
}
