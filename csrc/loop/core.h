/*
 * core.h — goloop's native loop core: what its files share.
 *
 * The core is the part of an asyncio event loop that runs on every
 * callback and every task step — scheduling, timers, the iteration — in C.
 * It is the C base class LoopCore of goloop.EventLoop, which puts it in
 * front of the standard library's selector loop:
 *
 *     class EventLoop(LoopCore, asyncio.SelectorEventLoop)
 *
 * so every method the core defines (call_soon, call_later, call_at, time,
 * _run_once, ...) replaces the Python one, and everything it does not
 * (sock_*, subprocesses, signals, DNS, executors) is asyncio's, running
 * over it unchanged.  Socket transports are asyncio's with their per-read
 * and per-write paths replaced the same way (transport.c).
 *
 *   handles.c  asyncio's own Handle and TimerHandle objects, made and run
 *              from C: the slots are written by offset, the callback runs
 *              in its context by vectorcall, an exception goes to the
 *              loop's exception handler as Handle._run sends it
 *   ready.c    the ready queue: a ring drained in snapshot batches
 *   timers.c   the timer heap: 4-ary, (when, sequence) keys, lazy
 *              cancellation and compaction
 *   steps.c    task steps on worker goroutines, the preempted-step queue
 *   await.c    goloop.await_(): a step waits from plain synchronous code
 *   loop.c     the LoopCore type: the scheduling methods, _run_once, the
 *              loop state asyncio's Python code reads and writes
 *   poller.c   epoll, with the selectors API asyncio's code reads
 *   transport.c  what the native transports share: asyncio's classes,
 *              slots, the read buffer, errors
 *   stream.c   SocketTransportCore: the socket transport's read and write
 *              paths, in front of asyncio's _SelectorSocketTransport
 *   accept.c   a plain server's accept loop: each connection's socket,
 *              protocol and transport at once
 *   stream_life.c  its construction and closing: asyncio's __init__
 *              chain, close and _call_connection_lost, in C
 *   datagram.c DatagramTransportCore: the same for UDP
 *   pipe.c     ReadPipeTransportCore: the same for pipes' reading ends
 *
 * The handles are asyncio's classes, not look-alikes: code that checks
 * isinstance(h, asyncio.TimerHandle), reads h.when(), or calls cancel()
 * sees asyncio's behaviour because it is asyncio's code (cancel() calls
 * back into the core's _timer_handle_cancelled).
 *
 * Layering: the core uses the CPython glue (glue.h: goroutines, preemption
 * marks) and asyncio's public classes; goloop/ (Python) sits above it.
 */
#ifndef GOLOOP_CORE_H
#define GOLOOP_CORE_H

#include "glue.h"
#include "schedtrace.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

/* ---- handles.c --------------------------------------------------------- */

#define GL_HANDLE_FREELIST 256

/* What the core knows of asyncio, set once by _setup_loop_core(). */
struct gl_core {
    PyTypeObject *handle_type;       /* asyncio.events.Handle */
    PyTypeObject *timer_type;        /* asyncio.events.TimerHandle */
    PyTypeObject *threadsafe_type;   /* 3.14+: events._ThreadSafeHandle, what
                                        call_soon_threadsafe makes; or NULL */
    PyObject *deque_type;            /* collections.deque */
    PyTypeObject *selector_key_type; /* selectors.SelectorKey */
    PyTypeObject *task_type;         /* asyncio.Task (the C one if built) */
    PyTypeObject *py_task_type;      /* asyncio.tasks._PyTask */
    PyTypeObject *step_wrapper_type; /* the C Task's TaskStepMethWrapper,
                                        learnt when first seen */
    PyMethodDef *task_wakeup_def;    /* the C Task's task_wakeup method, once
                                        seen (loop.c is_task_step): its bound
                                        methods are compared by pointer */
    PyObject *report_error;          /* f(handle, exc): Handle._run's report */
    PyObject *report_slow;           /* f(loop, handle, seconds): debug mode */
    PyObject *extract_stack;         /* asyncio.format_helpers.extract_stack */
    PyObject *futures_module;        /* asyncio.futures (its Future, at each
                                        create_future) */
    PyObject *tasks_module;          /* asyncio.tasks (its Task) */
    PyTypeObject *base_loop_type;    /* asyncio.BaseEventLoop (its Python
                                        methods, for what the core's leave) */
    PyObject *kw_loop;               /* ("loop",) */
    PyObject *kw_seen, *kw_task;     /* create_task's last kwnames, and
                                        ("loop",) + them */
    /* Byte offsets of the slots of Handle and TimerHandle. */
    Py_ssize_t off_callback, off_args, off_cancelled, off_loop,
               off_source_traceback, off_repr, off_context;
    Py_ssize_t off_scheduled, off_when;
    uint64_t callbacks;              /* plain callbacks run by every loop
                                        (stats(): the loops count their own) */
    PyObject *free_handles[GL_HANDLE_FREELIST];  /* Handles to reuse */
    int n_free_handles;
    PyObject *str_context;           /* interned names */
    PyObject *str_context_seen;      /* the "context" string callers pass
                                      * when it is not str_context (3.12's C
                                      * Task passes a static one) */
    PyObject *str_run, *str_selector, *str_select, *str_process_events,
             *str_write_to_self, *str_current_handle,
             *str_slow_callback_duration, *str_check_thread,
             *str_check_callback, *str_check_closed, *str_Future, *str_Task,
             *str_task_factory, *str_create_future, *str_create_task,
             *str_add_done_callback, *str_call_soon, *str_result,
             *str_preempted;
    PyObject *kw_context;            /* ("context",): kwnames of a vectorcall */
};

#define GL_SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))
/* The byte offset of slot `name` of `type` (a __slots__ member): 0, or -1
 * with a TypeError. */
int gl_slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset);

int gl_core_setup(gl_module_state *st, PyObject *args);
void gl_core_free(gl_module_state *st);
int gl_core_traverse(gl_module_state *st, visitproc visit, void *arg);
/* stats(): the Handles kept for reuse ("handles_reusable"). */
int gl_core_stats(gl_module_state *st, PyObject *d);

/* A new Handle (when is NULL) or TimerHandle of loop: asyncio's __init__,
 * done in C (or asyncio's own in debug mode, which records the stack).
 * args: a tuple (borrowed); context: borrowed, or NULL for a copy of the
 * current one.  hidden: NULL, or where to say that the handle (one reused
 * from the freelist) is still off the collector's lists, for a caller that
 * puts it straight into the ready queue (gl_ready_push_hidden). */
PyObject *gl_handle_new(struct gl_core *c, PyObject *loop, int debug,
                        PyObject *callback, PyObject *args,
                        PyObject *context, PyObject *when, int *hidden);
/* Debug mode: set handle's _source_traceback to the stack from the Python
 * frame that called into the core. */
int gl_handle_record_stack(struct gl_core *c, PyObject *handle);
/* Release a handle the loop is done with (steals the reference): a plain
 * Handle nobody else holds goes to the freelist for gl_handle_new.
 * hidden: the handle is still off the collector's lists (gl_ready_take). */
void gl_handle_release(struct gl_core *c, PyObject *handle, int hidden);
/* Is the handle cancelled? (its _cancelled slot; -1 on error) */
int gl_handle_cancelled(struct gl_core *c, PyObject *handle);
/* Run the handle's callback in its context, as Handle._run does: 0 when it
 * returned or its exception went to the loop's exception handler, -1 with
 * KeyboardInterrupt or SystemExit (or a failure to report) set.  A handle
 * of a subclass runs its own _run(), unless as_handle: a step worker runs
 * any Handle's callback itself (a Python loop class's GoroutineHandle._run
 * is what sent it there). */
int gl_handle_run(struct gl_core *c, PyObject *handle, int as_handle);

/* ---- ready.c ----------------------------------------------------------- */

/* An entry: a handle and whether it is a task step (runs on a worker). */
typedef struct {
    PyObject *handle;
    int step;
    int untracked;                   /* hidden from the collector meanwhile */
} gl_ready_entry;

/* A handle waiting in the loop's queues is hidden from the garbage
 * collector (gl_gc_hide; gl_gc_show when it leaves them): see handles.c. */
int gl_gc_hide(PyObject *handle);
void gl_gc_show(PyObject *handle, int hidden);
/* The loop's tp_traverse of a waiting handle (see handles.c). */
int gl_gc_visit(PyObject *handle, int hidden, int owned, visitproc visit, void *arg);

typedef struct {
    gl_ready_entry *ring;
    size_t cap;                      /* a power of two, or 0 */
    size_t head, n;
} gl_ready;

int gl_ready_push(gl_ready *q, PyObject *handle, int step);   /* steals */
/* The same for a handle already off the collector's lists when hidden is
 * 1 (from gl_handle_new); the queue puts it back when it leaves. */
int gl_ready_push_hidden(gl_ready *q, PyObject *handle, int step, int hidden);
/* The oldest entry (its reference passes to the caller); q->n > 0. */
gl_ready_entry gl_ready_pop(gl_ready *q);
/* The same, left off the collector's lists if it was (e.untracked): for
 * the loop, which runs it and then gives it to gl_handle_release. */
gl_ready_entry gl_ready_take(gl_ready *q);
void gl_ready_clear(gl_ready *q);
void gl_ready_free(gl_ready *q);
int gl_ready_traverse(gl_ready *q, int owned, visitproc visit, void *arg);
/* A collections.deque-like list of the handles, oldest first. */
PyObject *gl_ready_list(gl_ready *q);

/* ---- timers.c ---------------------------------------------------------- */

typedef struct {
    double when;
    uint64_t seq;                    /* ties run in the order scheduled */
    PyObject *handle;
    int untracked;                   /* gl_gc_hide */
} gl_timer;

typedef struct {
    gl_timer *heap;                  /* 4-ary min-heap on (when, seq) */
    size_t n, cap;
    size_t zombies;                  /* cancelled, still in the heap */
    uint64_t seq;
} gl_timers;

int gl_timers_push(gl_timers *t, double when, PyObject *handle);   /* new ref */
/* Pop the earliest (its reference passes to the caller); t->n > 0.
 * hidden: NULL, or where to say that it is still off the collector's lists
 * (for gl_ready_push_hidden). */
PyObject *gl_timers_pop(gl_timers *t, int *hidden);
/* Drop cancelled timers: all of them when they are many, else those at
 * the head; each gets _scheduled = False.  -1 on error. */
int gl_timers_drop_cancelled(struct gl_core *c, gl_timers *t);
void gl_timers_clear(gl_timers *t);
void gl_timers_free(gl_timers *t);
int gl_timers_traverse(gl_timers *t, int owned, visitproc visit, void *arg);
/* The handles in the order they will run (a valid heapq list). */
PyObject *gl_timers_list(gl_timers *t);

/* ---- steps.c ----------------------------------------------------------- */

/* How a stretch of a step ended, for debug mode's slow-callback warning:
 * finished (not preempted), with the time the whole step ran, over all its
 * stretches, and its handle (a new reference, when finished). */
typedef struct {
    int finished;
    int64_t ran_ns;
    PyObject *handle;
} gl_step_end;

/* This thread's pool of idle workers (a list; new reference), or NULL. */
PyObject *gl_steps_pool(gl_module_state *st);
/* Run handle's task step on a worker goroutine; if it is preempted, the
 * worker goes to the end of `queue` (a deque).  None, or NULL.  `pool`:
 * this thread's (gl_steps_pool), or NULL to look it up.  `end`, if not
 * NULL, tells how the stretch ended. */
PyObject *gl_step_run(gl_module_state *st, PyObject *handle, PyObject *queue,
                      PyObject *pool, gl_step_end *end);
/* Continue the oldest preempted step in queue (throwing exc into it if not
 * NULL).  None, or NULL; `end` as for gl_step_run. */
PyObject *gl_step_resume(gl_module_state *st, PyObject *queue, PyObject *exc,
                         gl_step_end *end);
/* How many preempted steps wait in queue (-1 with an exception). */
Py_ssize_t gl_steps_waiting(gl_module_state *st, PyObject *queue);
/* Did exc come out of a task step (the last one that raised)? */
int gl_step_raised(gl_module_state *st, PyObject *exc);

/* ---- poller.c ---------------------------------------------------------- */

typedef struct PollerObject PollerObject;
extern PyType_Spec gl_poller_spec;
/* Watch fileobj for event (1 read, 2 write) with handle (the one it
 * replaces is cancelled).  0, or -1. */
int gl_poller_add(PollerObject *p, PyObject *fileobj, int event, PyObject *handle);
/* Stop watching for event: 1 if a handle was removed (and cancelled), 0 if
 * there was none, -1 on error. */
int gl_poller_remove(PollerObject *p, PyObject *fileobj, int event);
int gl_poller_wait(PollerObject *p, int64_t timeout_ns,
                   int (*ready)(void *ctx, PyObject *handle, int fd, int event), void *ctx);
/* Wake a gl_poller_wait in progress (or the next one): from any thread. */
void gl_poller_wake(PollerObject *p);
/* The file object registered for fd (borrowed), or NULL. */
PyObject *gl_poller_fileobj(PollerObject *p, int fd);
/* How many fds are registered (not counting its own eventfd). */
Py_ssize_t gl_poller_count(PollerObject *p);

/* ---- transport.c, stream.c, datagram.c --------------------------------- */

enum { GL_TR_STREAM, GL_TR_DATAGRAM, GL_TR_PIPE, GL_TR_KINDS };

/* Byte offsets of the slots both transport classes have. */
struct gl_tr_slots {
    Py_ssize_t sock, sock_fd, protocol, conn_lost, buffer, closing, paused, extra;
};

/* What the transport cores take from asyncio (_setup_transports), and
 * the read buffer. */
struct gl_transports {
    PyTypeObject *type[GL_TR_KINDS]; /* goloop's SocketTransport,
                                        DatagramTransport, ReadPipeTransport */
    PyObject *stock_write;           /* _SelectorSocketTransport.write */
    PyObject *stock_sendto;          /* _SelectorDatagramTransport.sendto */
    PyObject *stock_pipe_read;       /* _UnixReadPipeTransport._read_ready */
    struct gl_tr_slots off[GL_TR_KINDS];
    Py_ssize_t off_eof, off_empty_waiter, off_read_ready_cb;   /* streams' */
    Py_ssize_t off_address;                                     /* datagrams' */
    Py_ssize_t off_fileno, off_pipe_protocol;                   /* pipes' */
    PyObject *str_max_size, *str_fatal_error, *str_data_received,
             *str_get_buffer, *str_buffer_updated, *str_recv_into,
             *str_recvfrom_into, *str_sendto, *str_datagram_received,
             *str_error_received, *str_peername, *str_read_eof, *str_accept,
             *str_accept_fd, *str_setblocking, *str_close, *str_fileno, *str_io_refs,
             *str_closed, *str_make_socket_transport;
    PyObject *kw_serve, *kw_serve_context;   /* ("extra", "server"[, "context"]) */
    PyObject *msg_read_error, *msg_write_error, *msg_data_received,
             *msg_get_buffer, *msg_buffer_updated, *msg_eof_received, *msg_dgram_read_error,
             *msg_dgram_write_error, *msg_pipe_read_error;
    char *buf;                       /* the read buffer */
    size_t cap;
    PyObject *socket_type;           /* socket.socket */
    PyObject *sock_family, *sock_type, *sock_proto;  /* _socket.socket's
                                        getters of the socket's ints */
    struct gl_tr_life *life;         /* the socket transport's construction
                                        and closing (stream_life.c) */
};

/* The state, for a method of a core of `kind` called on self (NULL with a
 * TypeError unless self is goloop's transport class of that kind). */
struct gl_transports *gl_tr_state(PyTypeObject *defining_class, PyObject *self, int kind);
/* A slot: a new reference, or NULL with the AttributeError Python raises
 * for an unset one. */
PyObject *gl_tr_slot(PyObject *self, Py_ssize_t off, const char *name);
/* bool(slot): 1, 0, or -1 with an exception; name NULL: unset is false. */
int gl_tr_slot_true(PyObject *self, Py_ssize_t off, const char *name);
/* The _sock_fd slot (at off) as an fd, or -1 with an exception. */
int gl_tr_fd(PyObject *self, Py_ssize_t off);
/* self.max_size (-1 with an exception). */
Py_ssize_t gl_tr_max_size(struct gl_transports *t, PyObject *self);
/* The read buffer, at least size bytes (NULL with MemoryError). */
char *gl_tr_buffer(struct gl_transports *t, size_t size);
/* asyncio's own method func (a function of its class) called on self with
 * the arguments a native method received, whatever they are: for every
 * case the native methods leave to asyncio. */
PyObject *gl_tr_call_stock(PyObject *func, PyObject *self, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames);
/* The exception just raised, taken, unless it is SystemExit or
 * KeyboardInterrupt, which asyncio lets through (NULL, left raised). */
PyObject *gl_tr_catchable(void);
/* self._fatal_error(exc, message), stealing exc: None, or NULL. */
PyObject *gl_tr_fatal(struct gl_transports *t, PyObject *self, PyObject *exc, PyObject *message);
/* A protocol callback raised: to _fatal_error as asyncio sends it. */
PyObject *gl_tr_failed(struct gl_transports *t, PyObject *self, PyObject *message);
/* A socket object's family, type and protocol as the ints it holds
 * (socket.socket's properties make enums of them): 0, or -1. */
int gl_tr_socket_ints(struct gl_transports *t, PyObject *sock, long *family, long *type,
                      long *proto);
/* A socket call raised: 1 for what asyncio ignores (BlockingIOError,
 * InterruptedError; cleared), else 0 with the exception left raised. */
int gl_tr_raised_would_block(void);
/* errno values asyncio ignores (BlockingIOError, InterruptedError). */
int gl_tr_would_block(int err);

/* stream_life.c: SocketTransportCore's tp_init (asyncio's
 * _SelectorSocketTransport.__init__ in C), its closing methods, the end of
 * a read that found EOF (asyncio's _read_ready__on_eof), the set-up from
 * asyncio's class, and its references. */
int gl_socket_transport_init(PyObject *self, PyObject *args, PyObject *kwds);
PyObject *gl_stream_on_eof(struct gl_transports *t, PyObject *self);
/* SocketTransportCore's close(), _call_connection_lost(exc) and
 * _add_reader(fd, callback, *args) */
PyObject *gl_stream_add_reader(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames);
PyObject *gl_stream_close(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames);
PyObject *gl_stream_call_connection_lost(PyObject *self, PyTypeObject *cls,
                                         PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames);
int gl_stream_life_setup(struct gl_transports *t, PyObject *stock_class);
int gl_stream_life_traverse(struct gl_transports *t, visitproc visit, void *arg);
void gl_stream_life_free(struct gl_transports *t);

extern PyMethodDef gl_transport_methods[];   /* _setup_transports */
extern PyMethodDef gl_accept_methods[];      /* _accept_connections (accept.c) */
int gl_transports_traverse(gl_module_state *st, visitproc visit, void *arg);
void gl_transports_free(gl_module_state *st);
/* SocketTransportCore (stream.c), DatagramTransportCore (datagram.c),
 * ReadPipeTransportCore (pipe.c) */
extern PyType_Spec gl_socket_transport_spec;
extern PyType_Spec gl_datagram_transport_spec;
extern PyType_Spec gl_read_pipe_transport_spec;

/* ---- loop.c ------------------------------------------------------------ */

extern PyType_Spec gl_loop_core_spec;
/* stats(loop): the loop's counters and gauges into d; reset: its counters
 * start again from 0 after.  -1 with TypeError if loop is not a LoopCore. */
int gl_loop_stats(gl_module_state *st, PyObject *loop, PyObject *d, int reset);
/* stats(): loops_running, and ready, timers, fds, steps_preempted summed
 * over the running loops. */
int gl_loops_running_stats(PyObject *d);
/* The module's definition (module.c), to find its state from a type. */
PyModuleDef *gl_module_def(void);
extern PyMethodDef gl_core_methods[];

#endif
#endif /* GOLOOP_CORE_H */
