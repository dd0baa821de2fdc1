/*
 * poller.c — the loop's I/O poller: epoll, called directly.
 *
 * asyncio's selector loop keeps, for every fd it watches, a SelectorKey in
 * a Python selector whose data is the pair (reader Handle, writer Handle),
 * and each iteration turns epoll's answer into keys, then keys into ready
 * handles, in Python.  The Poller keeps the same registry in C — an array
 * indexed by fd of (file object, reader, writer, events) — and the loop
 * (loop.c) asks it to wait and to put the handles of ready fds straight in
 * its ready queue (gl_poller_wait).  One epoll_ctl per change of an fd's
 * interest, level-triggered as asyncio's readers and writers are.
 *
 * The Poller is also the loop's `_selector`, with the selectors module's
 * API (register, modify, unregister, select, get_key, get_map, close,
 * fileno), so that code reading the loop's selector — asyncio's transports'
 * reprs (_test_selector_event), libraries that look at get_map() — sees
 * what is registered.  Keys are made on demand: a key's data is the
 * (reader, writer) pair unless register()/modify() gave other data.
 *
 * Waking: an eventfd, registered in epoll beside the fds and never shown in
 * the registry, is how another thread wakes a loop asleep in the wait
 * (gl_poller_wake, from call_soon_threadsafe when the loop sleeps): one
 * 8-byte write, where asyncio sends a byte through its self-pipe by a
 * Python method call.  The self-pipe stays for what it also is: the
 * signal wakeup fd (signal.set_wakeup_fd) of asyncio's signal handling.
 *
 * Waiting: epoll_pwait2 with a nanosecond timeout where the kernel has it
 * (Linux 5.11+), so that a timer 300 µs away is not waited for a whole
 * millisecond; else epoll_wait, rounding up to the millisecond as asyncio's
 * EpollSelector does.  The GIL is released around the wait only.  A signal
 * interrupting the wait runs the Python handlers (PyErr_CheckSignals) and
 * ends the wait with no events, as the selector does.
 *
 * Error semantics follow the selectors module: an object without a valid
 * fileno() is a ValueError ("Invalid file object: ..."), a negative fd
 * "Invalid file descriptor: ...", registering an fd twice a KeyError, and
 * an fd epoll refuses (a regular file) the OSError epoll_ctl gives, with
 * nothing left registered.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EVENT_READ 1
#define EVENT_WRITE 2
#define MAX_EVENTS 256

typedef struct {
    PyObject *fileobj;               /* NULL: the fd is not registered */
    PyObject *reader, *writer;       /* Handles, or NULL */
    PyObject *data;                  /* register()'s data when not the pair */
    int events;                      /* EVENT_READ | EVENT_WRITE */
} gl_fd;

struct PollerObject {
    PyObject_HEAD
    int epfd;                        /* -1 once closed */
    int wakefd;                      /* the eventfd other threads write; -1 once closed */
    gl_fd *fds;                      /* indexed by fd */
    size_t cap;
    int no_pwait2;                   /* the kernel lacks epoll_pwait2 */
    Py_ssize_t n_registered;         /* fds with a file object (stats) */
    struct epoll_event events[MAX_EVENTS];
};

static PyTypeObject *
selector_key_type(gl_module_state *st)
{
    return st->core ? st->core->selector_key_type : NULL;
}

/* ---- file objects and fds ---------------------------------------------- */

/* The fd of fileobj, as selectors._fileobj_to_fd finds it; -1 on error. */
static int
fd_of(PyObject *fileobj)
{
    long fd;
    if (PyLong_Check(fileobj)) {
        fd = PyLong_AsLong(fileobj);
        if (fd == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return -1;
            PyErr_Clear();
            fd = INT_MAX + 1L;
        }
    }
    else {
        PyObject *n = PyObject_CallMethod(fileobj, "fileno", NULL);
        PyObject *i = n ? PyNumber_Long(n) : NULL;
        Py_XDECREF(n);
        fd = i ? PyLong_AsLong(i) : -1;
        Py_XDECREF(i);
        if (PyErr_Occurred()) {
            if (!(PyErr_ExceptionMatches(PyExc_AttributeError)
                  || PyErr_ExceptionMatches(PyExc_TypeError)
                  || PyErr_ExceptionMatches(PyExc_ValueError)))
                return -1;
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "Invalid file object: %R", fileobj);
            return -1;
        }
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return -1;
    }
    return (int)fd;
}

/* The registered fd of fileobj: its fd, or — for a file object closed
 * since — the fd it was registered with (as selectors' _fileobj_lookup
 * searches).  -1 with ValueError when it has no fd; -2 when it has one but
 * is not registered (no exception). */
static int
lookup(PollerObject *p, PyObject *fileobj)
{
    int fd = fd_of(fileobj);
    if (fd < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        for (size_t i = 0; i < p->cap; i++)
            if (p->fds[i].fileobj == fileobj) {
                PyErr_Clear();
                return (int)i;
            }
        return -1;
    }
    return (size_t)fd < p->cap && p->fds[fd].fileobj ? fd : -2;
}

static int
reserve(PollerObject *p, int fd)
{
    if ((size_t)fd < p->cap)
        return 0;
    size_t cap = p->cap ? p->cap : 64;
    while (cap <= (size_t)fd)
        cap *= 2;
    gl_fd *fds = PyMem_Realloc(p->fds, cap * sizeof *fds);
    if (fds == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(fds + p->cap, 0, (cap - p->cap) * sizeof *fds);
    p->fds = fds;
    p->cap = cap;
    return 0;
}

static uint32_t
epoll_mask(int events)
{
    return (events & EVENT_READ ? EPOLLIN : 0) | (events & EVENT_WRITE ? EPOLLOUT : 0);
}

static int
check_open(PollerObject *p)
{
    if (p->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed epoll object");
        return -1;
    }
    return 0;
}

/* Forget fd (its references are released after the entry is clear). */
static void
forget(PollerObject *p, int fd)
{
    gl_fd e = p->fds[fd];
    if (e.fileobj != NULL)
        p->n_registered--;
    assert(p->n_registered >= 0);
    memset(&p->fds[fd], 0, sizeof p->fds[fd]);
    Py_XDECREF(e.fileobj);
    Py_XDECREF(e.reader);
    Py_XDECREF(e.writer);
    Py_XDECREF(e.data);
}

/* Watch fd for `events` (a change of interest, or the first): -1 with
 * OSError, the fd forgotten, when epoll refuses it. */
static int
set_interest(PollerObject *p, int fd, int old_events, int events)
{
    struct epoll_event ev = {.events = epoll_mask(events), .data.fd = fd};
    int op = old_events == 0 ? EPOLL_CTL_ADD : events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (op != EPOLL_CTL_ADD && old_events == events)
        return 0;
    if (epoll_ctl(p->epfd, op, fd, &ev) == 0)
        return 0;
    if (op == EPOLL_CTL_DEL)
        return 0;   /* closed already: the kernel forgot it (selectors ignore this) */
    PyErr_SetFromErrno(PyExc_OSError);
    if (op == EPOLL_CTL_MOD)
        forget(p, fd);
    return -1;
}

/* ---- the loop's side --------------------------------------------------- */

int
gl_poller_add(PollerObject *p, PyObject *fileobj, int event, PyObject *handle)
{
    if (check_open(p) < 0)
        return -1;
    int fd = lookup(p, fileobj);
    if (fd == -1)
        return -1;
    if (fd == -2) {
        fd = fd_of(fileobj);
        if (reserve(p, fd) < 0)
            return -1;
        if (set_interest(p, fd, 0, event) < 0)
            return -1;
        gl_fd *e = &p->fds[fd];
        e->fileobj = Py_NewRef(fileobj);
        p->n_registered++;
        e->events = event;
        if (event == EVENT_READ)
            e->reader = Py_NewRef(handle);
        else
            e->writer = Py_NewRef(handle);
        return 0;
    }
    gl_fd *e = &p->fds[fd];
    if (set_interest(p, fd, e->events, e->events | event) < 0)
        return -1;
    e->events |= event;
    PyObject **slot = event == EVENT_READ ? &e->reader : &e->writer;
    PyObject *old = *slot;
    *slot = Py_NewRef(handle);
    Py_CLEAR(e->data);
    if (old != NULL) {
        /* The handle replaced is cancelled, as asyncio's _add_reader does. */
        PyObject *r = PyObject_CallMethod(old, "cancel", NULL);
        Py_DECREF(old);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

int
gl_poller_remove(PollerObject *p, PyObject *fileobj, int event)
{
    if (p->epfd < 0)
        return 0;
    int fd = lookup(p, fileobj);
    if (fd == -1)
        return -1;
    if (fd == -2)
        return 0;
    gl_fd *e = &p->fds[fd];
    int events = e->events & ~event;
    PyObject **slot = event == EVENT_READ ? &e->reader : &e->writer;
    PyObject *old = *slot;
    *slot = NULL;
    Py_CLEAR(e->data);
    if (events == 0) {
        set_interest(p, fd, e->events, 0);
        forget(p, fd);
    }
    else if (set_interest(p, fd, e->events, events) < 0) {
        Py_XDECREF(old);
        return -1;
    }
    else
        e->events = events;
    if (old == NULL)
        return 0;
    PyObject *r = PyObject_CallMethod(old, "cancel", NULL);
    Py_DECREF(old);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 1;
}

/* Wait up to timeout_ns (<0: forever, 0: not at all) and call ready() for
 * each fd and direction that is ready (handle: its reader or writer, or
 * NULL if it has none).  Number of events, or -1. */
int
gl_poller_wait(PollerObject *p, int64_t timeout_ns, int (*ready)(void *ctx, PyObject *handle,
                                                                 int fd, int event),
               void *ctx)
{
    if (check_open(p) < 0)
        return -1;
    int n;
    /* A poll that does not wait keeps the GIL: releasing and taking it back
     * costs more than the syscall, and other threads get the GIL through
     * the interpreter's switch interval as always. */
    PyThreadState *released = timeout_ns != 0 ? PyEval_SaveThread() : NULL;
#ifdef SYS_epoll_pwait2
    if (!p->no_pwait2 && timeout_ns != 0) {
        struct timespec ts = {timeout_ns / 1000000000, timeout_ns % 1000000000};
        n = (int)syscall(SYS_epoll_pwait2, p->epfd, p->events, MAX_EVENTS,
                         timeout_ns < 0 ? NULL : &ts, NULL, 0);
        if (n < 0 && errno == ENOSYS)
            p->no_pwait2 = 1;
    }
    else
        n = -2;
    if (n == -2 || (n < 0 && errno == ENOSYS))
#endif
    {
        int ms = timeout_ns < 0 ? -1
                 : timeout_ns > (int64_t)INT_MAX * 1000000 ? INT_MAX
                 : (int)((timeout_ns + 999999) / 1000000);
        n = epoll_wait(p->epfd, p->events, MAX_EVENTS, ms);
    }
    int wait_errno = errno;
    if (released != NULL)
        PyEval_RestoreThread(released);
    errno = wait_errno;
    if (n < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        return PyErr_CheckSignals() < 0 ? -1 : 0;
    }
    for (int i = 0; i < n; i++) {
        int fd = p->events[i].data.fd;
        uint32_t ev = p->events[i].events;
        if (fd == p->wakefd) {
            uint64_t count;
            ssize_t r = read(fd, &count, sizeof count);   /* reset it */
            (void)r;
            continue;
        }
        if ((size_t)fd >= p->cap || p->fds[fd].fileobj == NULL)
            continue;   /* removed by an earlier event's handling */
        /* As selectors: an error or hang-up makes both directions ready. */
        int mask = (ev & ~EPOLLOUT ? EVENT_READ : 0) | (ev & ~EPOLLIN ? EVENT_WRITE : 0);
        mask &= p->fds[fd].events;
        if (mask & EVENT_READ && ready(ctx, p->fds[fd].reader, fd, EVENT_READ) < 0)
            return -1;
        /* (the reader's handling may have removed the fd) */
        if (mask & EVENT_WRITE && (size_t)fd < p->cap && p->fds[fd].fileobj != NULL
                && p->fds[fd].events & EVENT_WRITE
                && ready(ctx, p->fds[fd].writer, fd, EVENT_WRITE) < 0)
            return -1;
    }
    return n;
}

/* Wake the thread waiting in gl_poller_wait (any thread may call it). */
void
gl_poller_wake(PollerObject *p)
{
    uint64_t one = 1;
    if (p->wakefd >= 0) {
        /* EAGAIN only if the counter were near 2**64: awake anyway. */
        ssize_t r = write(p->wakefd, &one, sizeof one);
        (void)r;
    }
}

/* How many fds are registered, for stats() and the scheduler trace. */
Py_ssize_t
gl_poller_count(PollerObject *p)
{
    return p->n_registered;
}

/* The file object registered for fd (borrowed), for the loop's removals. */
PyObject *
gl_poller_fileobj(PollerObject *p, int fd)
{
    return (size_t)fd < p->cap ? p->fds[fd].fileobj : NULL;
}

/* ---- the selectors API ------------------------------------------------- */

static PyObject *
make_key(PollerObject *p, int fd)
{
    gl_module_state *st = PyType_GetModuleState(Py_TYPE(p));
    gl_fd *e = &p->fds[fd];
    PyObject *data = e->data ? Py_NewRef(e->data)
                     : PyTuple_Pack(2, e->reader ? e->reader : Py_None,
                                    e->writer ? e->writer : Py_None);
    if (data == NULL)
        return NULL;
    PyObject *key = PyObject_CallFunction((PyObject *)selector_key_type(st), "OiiO",
                                          e->fileobj, fd, e->events, data);
    Py_DECREF(data);
    return key;
}

static int
check_events(PyObject *arg, int *events)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v == 0 || (v & ~(EVENT_READ | EVENT_WRITE))) {
        PyErr_Format(PyExc_ValueError, "Invalid events: %R", arg);
        return -1;
    }
    *events = (int)v;
    return 0;
}

/* The pair (reader, writer) from data, when it is one (else the data is
 * kept as it is). */
static void
set_data(gl_fd *e, PyObject *data)
{
    Py_CLEAR(e->reader);
    Py_CLEAR(e->writer);
    Py_CLEAR(e->data);
    if (data && PyTuple_CheckExact(data) && PyTuple_GET_SIZE(data) == 2) {
        PyObject *r = PyTuple_GET_ITEM(data, 0), *w = PyTuple_GET_ITEM(data, 1);
        e->reader = r == Py_None ? NULL : Py_NewRef(r);
        e->writer = w == Py_None ? NULL : Py_NewRef(w);
    }
    else
        e->data = Py_XNewRef(data);
}

static PyObject *
poller_register(PollerObject *p, PyObject *args, PyObject *kw)
{
    static char *names[] = {"fileobj", "events", "data", NULL};
    PyObject *fileobj, *evarg, *data = Py_None;
    int events;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:register", names, &fileobj, &evarg, &data)
            || check_events(evarg, &events) < 0 || check_open(p) < 0)
        return NULL;
    int fd = lookup(p, fileobj);
    if (fd == -1)
        return NULL;
    if (fd >= 0) {
        PyErr_Format(PyExc_KeyError, "%R (FD %d) is already registered", fileobj, fd);
        return NULL;
    }
    fd = fd_of(fileobj);
    if (reserve(p, fd) < 0 || set_interest(p, fd, 0, events) < 0)
        return NULL;
    gl_fd *e = &p->fds[fd];
    e->fileobj = Py_NewRef(fileobj);
    p->n_registered++;
    e->events = events;
    set_data(e, data);
    return make_key(p, fd);
}

static int
registered(PollerObject *p, PyObject *fileobj)
{
    int fd = lookup(p, fileobj);
    if (fd == -2 || (fd == -1 && PyErr_ExceptionMatches(PyExc_ValueError))) {
        PyErr_Clear();
        PyErr_Format(PyExc_KeyError, "%R is not registered", fileobj);
        return -1;
    }
    return fd;
}

static PyObject *
poller_unregister(PollerObject *p, PyObject *fileobj)
{
    int fd = registered(p, fileobj);
    if (fd < 0)
        return NULL;
    PyObject *key = make_key(p, fd);
    if (key == NULL)
        return NULL;
    set_interest(p, fd, p->fds[fd].events, 0);
    forget(p, fd);
    return key;
}

static PyObject *
poller_modify(PollerObject *p, PyObject *args, PyObject *kw)
{
    static char *names[] = {"fileobj", "events", "data", NULL};
    PyObject *fileobj, *evarg, *data = Py_None;
    int events;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:modify", names, &fileobj, &evarg, &data)
            || check_events(evarg, &events) < 0)
        return NULL;
    int fd = registered(p, fileobj);
    if (fd < 0 || set_interest(p, fd, p->fds[fd].events, events) < 0)
        return NULL;
    p->fds[fd].events = events;
    set_data(&p->fds[fd], data);
    return make_key(p, fd);
}

static PyObject *
poller_get_key(PollerObject *p, PyObject *fileobj)
{
    int fd = registered(p, fileobj);
    return fd < 0 ? NULL : make_key(p, fd);
}

static PyObject *
poller_get_map(PollerObject *p, PyObject *unused)
{
    (void)unused;
    PyObject *map = PyDict_New();
    for (size_t fd = 0; map != NULL && fd < p->cap; fd++) {
        if (p->fds[fd].fileobj == NULL)
            continue;
        PyObject *key = make_key(p, (int)fd);
        if (key == NULL || PyDict_SetItem(map, p->fds[fd].fileobj, key) < 0)
            Py_CLEAR(map);
        Py_XDECREF(key);
    }
    return map;
}

typedef struct {
    PollerObject *p;
    PyObject *list;
} select_ctx;

static int
collect(void *arg, PyObject *handle, int fd, int event)
{
    (void)handle;
    select_ctx *ctx = arg;
    Py_ssize_t n = PyList_GET_SIZE(ctx->list);
    /* Both directions of one fd make one (key, events) entry. */
    if (n > 0) {
        PyObject *last = PyList_GET_ITEM(ctx->list, n - 1);
        PyObject *key = PyTuple_GET_ITEM(last, 0);
        PyObject *kfd = PyTuple_GET_ITEM(key, 1);
        if (PyLong_AsLong(kfd) == fd) {
            long prev = PyLong_AsLong(PyTuple_GET_ITEM(last, 1));
            PyObject *both = Py_BuildValue("(Ol)", key, prev | event);
            if (both == NULL)
                return -1;
            return PyList_SetItem(ctx->list, n - 1, both);
        }
    }
    PyObject *key = make_key(ctx->p, fd);
    PyObject *item = key ? Py_BuildValue("(Oi)", key, event) : NULL;
    Py_XDECREF(key);
    int r = item ? PyList_Append(ctx->list, item) : -1;
    Py_XDECREF(item);
    return r;
}

static PyObject *
poller_select(PollerObject *p, PyObject *args, PyObject *kw)
{
    static char *names[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:select", names, &timeout))
        return NULL;
    int64_t ns = -1;
    if (timeout != Py_None) {
        double t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        ns = t <= 0 ? 0 : t > 1e9 ? (int64_t)1e18 : (int64_t)(t * 1e9);
    }
    select_ctx ctx = {p, PyList_New(0)};
    if (ctx.list == NULL)
        return NULL;
    if (gl_poller_wait(p, ns, collect, &ctx) < 0)
        Py_CLEAR(ctx.list);
    return ctx.list;
}

static PyObject *
poller_close(PollerObject *p, PyObject *unused)
{
    (void)unused;
    for (size_t fd = 0; fd < p->cap; fd++)
        if (p->fds[fd].fileobj != NULL)
            forget(p, (int)fd);
    if (p->epfd >= 0) {
        close(p->epfd);
        p->epfd = -1;
    }
    if (p->wakefd >= 0) {
        close(p->wakefd);
        p->wakefd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *
poller_fileno(PollerObject *p, PyObject *unused)
{
    (void)unused;
    if (check_open(p) < 0)
        return NULL;
    return PyLong_FromLong(p->epfd);
}

static PyObject *
poller_enter(PollerObject *p, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(p);
}

static PyObject *
poller_exit(PollerObject *p, PyObject *args)
{
    (void)args;
    return poller_close(p, NULL);
}

static PyObject *
poller_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) > 0 || (kw != NULL && PyDict_GET_SIZE(kw) > 0)) {
        PyErr_SetString(PyExc_TypeError, "Poller() takes no arguments");
        return NULL;
    }
    gl_module_state *st = PyType_GetModuleState(type);
    if (st == NULL || selector_key_type(st) == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the loop core is not set up: import goloop first");
        return NULL;
    }
    PollerObject *p = (PollerObject *)type->tp_alloc(type, 0);
    if (p == NULL)
        return NULL;
    p->wakefd = -1;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(p);
        return NULL;
    }
    p->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p->wakefd};
    if (p->wakefd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wakefd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(p);
        return NULL;
    }
    return (PyObject *)p;
}

static int
poller_traverse(PollerObject *p, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(p));
    for (size_t fd = 0; fd < p->cap; fd++) {
        Py_VISIT(p->fds[fd].fileobj);
        Py_VISIT(p->fds[fd].reader);
        Py_VISIT(p->fds[fd].writer);
        Py_VISIT(p->fds[fd].data);
    }
    return 0;
}

static int
poller_clear(PollerObject *p)
{
    for (size_t fd = 0; fd < p->cap; fd++)
        if (p->fds[fd].fileobj != NULL)
            forget(p, (int)fd);
    return 0;
}

static void
poller_dealloc(PollerObject *p)
{
    PyTypeObject *tp = Py_TYPE(p);
    PyObject_GC_UnTrack(p);
    poller_clear(p);
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->wakefd >= 0)
        close(p->wakefd);
    PyMem_Free(p->fds);
    tp->tp_free(p);
    Py_DECREF(tp);
}

static PyMethodDef poller_methods[] = {
    {"register", (PyCFunction)(void (*)(void))poller_register, METH_VARARGS | METH_KEYWORDS,
     "register(fileobj, events, data=None)\n--\n\nWatch fileobj; returns its SelectorKey."},
    {"unregister", (PyCFunction)poller_unregister, METH_O,
     "unregister(fileobj)\n--\n\nStop watching fileobj; returns its SelectorKey."},
    {"modify", (PyCFunction)(void (*)(void))poller_modify, METH_VARARGS | METH_KEYWORDS,
     "modify(fileobj, events, data=None)\n--\n\nChange what fileobj is watched for."},
    {"select", (PyCFunction)(void (*)(void))poller_select, METH_VARARGS | METH_KEYWORDS,
     "select(timeout=None)\n--\n\nWait for registered fds: a list of (key, events)."},
    {"get_key", (PyCFunction)poller_get_key, METH_O,
     "get_key(fileobj)\n--\n\nThe SelectorKey of fileobj (KeyError if not registered)."},
    {"get_map", (PyCFunction)poller_get_map, METH_NOARGS,
     "get_map()\n--\n\nA dict of file object to SelectorKey (a snapshot)."},
    {"close", (PyCFunction)poller_close, METH_NOARGS,
     "close()\n--\n\nForget every fd and close the epoll fd."},
    {"fileno", (PyCFunction)poller_fileno, METH_NOARGS,
     "fileno()\n--\n\nThe epoll fd."},
    {"__enter__", (PyCFunction)poller_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)poller_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}
};

static PyType_Slot poller_slots[] = {
    {Py_tp_doc, "goloop's epoll poller: the loop's _selector, with the selectors "
                "module's API, its registry kept in C."},
    {Py_tp_new, poller_new},
    {Py_tp_dealloc, poller_dealloc},
    {Py_tp_traverse, poller_traverse},
    {Py_tp_clear, poller_clear},
    {Py_tp_methods, poller_methods},
    {0, NULL}
};

PyType_Spec gl_poller_spec = {
    .name = "goloop._goloop.Poller",
    .basicsize = sizeof(PollerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = poller_slots,
};

#endif
