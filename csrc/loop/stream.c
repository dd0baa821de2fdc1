/*
 * stream.c — the read and write paths of goloop's socket transport, in C.
 *
 * goloop's stream transport (goloop/_transports.py, SocketTransport) is
 * asyncio's own _SelectorSocketTransport of the running Python version,
 * with SocketTransportCore, this file's type, in front of it in the method
 * order:
 *
 *     class SocketTransport(SocketTransportCore, _SelectorSocketTransport)
 *
 * The core replaces the four methods that run on every read and every
 * write — _read_ready, _read_ready__data_received, _read_ready__get_buffer
 * and write — and leaves everything else (connecting, closing, flow
 * control, the write queue, write_eof, sendfile, repr, the server's
 * bookkeeping) to asyncio's code, which differs between versions in ways
 * a copy would have to follow.  The state is asyncio's too, shared by the
 * two halves: SocketTransport declares the attributes both read on every
 * call (_sock, _sock_fd, _protocol, _conn_lost, _buffer, _eof,
 * _empty_waiter, _read_ready_cb) as __slots__, so asyncio's Python code
 * reads and writes them as before and this file loads them at fixed
 * offsets — an instance dict lookup costs ~120 instructions, and there
 * were ten per request.
 *
 * Why these four: per request, asyncio's Python read path makes two frames
 * and a socket.recv(max_size) that allocates a 256 KiB bytes object —
 * glibc serves that with mmap, shrinks it with mremap and frees it with
 * munmap, three system calls and page faults on every read — and releases
 * and retakes the GIL around a recv that cannot block (the socket is
 * non-blocking and ready).  Here a read goes into one buffer the module
 * keeps (grown to the largest max_size seen), and the protocol gets an
 * exact-size copy; BufferedProtocol reads straight into get_buffer().  A
 * write with nothing queued goes out by one send() at once.
 *
 * Semantics are asyncio's, path by path: the same checks in the same
 * order, the same messages to _fatal_error, KeyboardInterrupt and
 * SystemExit passed through, EAGAIN and EINTR ignored.  Whatever is not
 * the common case — a write while something is queued, after write_eof,
 * during sendfile, after the connection was lost, of something that is
 * not a contiguous buffer, or the part of one the kernel did not take —
 * goes to asyncio's own write(), which queues it as the running version
 * does.  Holding the GIL across recv() and send() is safe because neither
 * can block on a non-blocking socket, and it is what makes the shared
 * buffer safe: nothing else runs between the read and the copy.
 *
 * Sends pass MSG_NOSIGNAL: a peer that went away is an EPIPE error (as in
 * Python, which ignores SIGPIPE), not a signal, even in a program that
 * embeds Python and leaves SIGPIPE at its default.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <errno.h>
#include <sys/socket.h>

/* What the transport core takes from asyncio (set by _setup_transports),
 * and the read buffer. */
struct gl_streams {
    PyTypeObject *transport_type;    /* goloop._transports.SocketTransport */
    PyObject *stock_write;           /* _SelectorSocketTransport.write */
    /* Byte offsets of SocketTransport's slots. */
    Py_ssize_t off_sock, off_sock_fd, off_protocol, off_conn_lost, off_buffer,
               off_eof, off_empty_waiter, off_read_ready_cb;
    PyObject *str_max_size, *str_fatal_error, *str_on_eof, *str_data_received,
             *str_get_buffer, *str_buffer_updated, *str_recv_into;
    PyObject *msg_read_error, *msg_write_error, *msg_data_received,
             *msg_get_buffer, *msg_buffer_updated;
    PyTypeObject *size_type;         /* max_size(): the class it was read */
    unsigned int size_tag;           /*   from, at that version, and the */
    Py_ssize_t size;                 /*   value */
    char *buf;                       /* the read buffer */
    size_t cap;
};

/* The module's transport state, for a method of SocketTransportCore called
 * on self: NULL with an exception unless self is a SocketTransport (whose
 * slots the methods read). */
static struct gl_streams *
streams_of(PyTypeObject *defining_class, PyObject *self)
{
    gl_module_state *st = PyType_GetModuleState(defining_class);
    if (st == NULL)
        return NULL;
    struct gl_streams *s = st->streams;
    if (s == NULL || s->transport_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "goloop's transports are not set up");
        return NULL;
    }
    if (!PyObject_TypeCheck(self, s->transport_type)) {
        PyErr_Format(PyExc_TypeError, "%s methods need a %s, not %T",
                     defining_class->tp_name, s->transport_type->tp_name, self);
        return NULL;
    }
    return s;
}

/* ---- the transport's attributes ---------------------------------------- */

/* A slot of the transport: a new reference, or NULL with asyncio's
 * AttributeError if it was never set (or was deleted). */
static PyObject *
slot(PyObject *self, Py_ssize_t off, const char *name)
{
    PyObject *v = GL_SLOT(self, off);
    if (v == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'",
                     Py_TYPE(self)->tp_name, name);
        return NULL;
    }
    return Py_NewRef(v);
}

/* bool(slot): 1, 0, or -1 with an exception. */
static int
slot_true(PyObject *self, Py_ssize_t off, const char *name)
{
    PyObject *v = GL_SLOT(self, off);
    if (v == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'",
                     Py_TYPE(self)->tp_name, name);
        return -1;
    }
    if (v == Py_False || v == Py_None)
        return 0;
    if (v == Py_True)
        return 1;
    Py_INCREF(v);
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* self._sock_fd as an int (-1 with an exception). */
static int
sock_fd(struct gl_streams *s, PyObject *self)
{
    PyObject *v = slot(self, s->off_sock_fd, "_sock_fd");
    if (v == NULL)
        return -1;
    long fd = PyLong_AsLong(v);
    Py_DECREF(v);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "invalid transport file descriptor: %ld", fd);
        return -1;
    }
    return (int)fd;
}

/* self.max_size.  asyncio's is a class attribute: its value is kept with
 * the type's version tag, which CPython changes whenever the class or one
 * of its bases is modified.  A transport's own max_size (in its __dict__)
 * wins, as for any attribute. */
static Py_ssize_t
max_size(struct gl_streams *s, PyObject *self)
{
    PyObject *dict = PyObject_GenericGetDict(self, NULL);
    if (dict == NULL)
        return -1;
    PyObject *own = PyDict_GetItemWithError(dict, s->str_max_size);
    Py_DECREF(dict);
    if (own == NULL && PyErr_Occurred())
        return -1;
    PyTypeObject *type = Py_TYPE(self);
    if (own == NULL && type == s->size_type && type->tp_version_tag != 0
            && type->tp_version_tag == s->size_tag)
        return s->size;
    PyObject *v = PyObject_GetAttr(self, s->str_max_size);
    if (v == NULL)
        return -1;
    Py_ssize_t n = PyNumber_AsSsize_t(v, PyExc_OverflowError);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n <= 0) {
        PyErr_SetString(PyExc_ValueError, "transport max_size must be positive");
        return -1;
    }
    if (own == NULL && type->tp_version_tag != 0) {
        s->size_type = type;         /* compared, never dereferenced */
        s->size_tag = type->tp_version_tag;
        s->size = n;
    }
    return n;
}

/* ---- errors ------------------------------------------------------------ */

/* The exception just raised, if it may go to _fatal_error: asyncio lets
 * only SystemExit and KeyboardInterrupt through.  NULL (the exception left
 * set) for those. */
static PyObject *
take_catchable(void)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
            || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return NULL;
    return gl_err_take();
}

/* self._fatal_error(exc, message), stealing exc; None, or NULL. */
static PyObject *
fatal_error(struct gl_streams *s, PyObject *self, PyObject *exc, PyObject *message)
{
    PyObject *args[3] = {self, exc, message};
    PyObject *r = PyObject_VectorcallMethod(s->str_fatal_error, args, 3, NULL);
    Py_DECREF(exc);
    return r;
}

/* The protocol callback failed: to _fatal_error as asyncio sends it. */
static PyObject *
callback_failed(struct gl_streams *s, PyObject *self, PyObject *message)
{
    PyObject *exc = take_catchable();
    if (exc == NULL)
        return NULL;
    return fatal_error(s, self, exc, message);
}

/* A recv/send failed with errno: ignored (EAGAIN, EINTR: asyncio's
 * BlockingIOError and InterruptedError), or to _fatal_error. */
static PyObject *
io_failed(struct gl_streams *s, PyObject *self, int err, PyObject *message)
{
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
        Py_RETURN_NONE;
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return fatal_error(s, self, gl_err_take(), message);
}

/* ---- reading ----------------------------------------------------------- */

static int
reserve_buffer(struct gl_streams *s, size_t size)
{
    if (size <= s->cap)
        return 0;
    char *buf = PyMem_RawRealloc(s->buf, size);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->buf = buf;
    s->cap = size;
    return 0;
}

/* self._read_ready__on_eof() */
static PyObject *
read_eof(struct gl_streams *s, PyObject *self)
{
    return PyObject_CallMethodNoArgs(self, s->str_on_eof);
}

/* self._sock.recv_into(buf) */
static PyObject *
recv_into_by_socket(struct gl_streams *s, PyObject *self, PyObject *buf)
{
    PyObject *sock = slot(self, s->off_sock, "_sock");
    if (sock == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethodOneArg(sock, s->str_recv_into, buf);
    Py_DECREF(sock);
    return r;
}

/* asyncio's _read_ready__data_received: recv into the module's buffer,
 * then protocol.data_received(bytes). */
static PyObject *
read_data(struct gl_streams *s, PyObject *self)
{
    int lost = slot_true(self, s->off_conn_lost, "_conn_lost");
    if (lost != 0)
        return lost < 0 ? NULL : Py_NewRef(Py_None);
    int fd = sock_fd(s, self);
    if (fd < 0)
        return NULL;
    Py_ssize_t size = max_size(s, self);
    if (size < 0 || reserve_buffer(s, (size_t)size) < 0)
        return NULL;
    ssize_t n = recv(fd, s->buf, (size_t)size, 0);
    if (n < 0)
        return io_failed(s, self, errno, s->msg_read_error);
    if (n == 0)
        return read_eof(s, self);
    PyObject *data = PyBytes_FromStringAndSize(s->buf, n);
    if (data == NULL)
        return NULL;
    PyObject *protocol = slot(self, s->off_protocol, "_protocol");
    if (protocol == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *r = PyObject_CallMethodOneArg(protocol, s->str_data_received, data);
    Py_DECREF(protocol);
    Py_DECREF(data);
    if (r == NULL)
        return callback_failed(s, self, s->msg_data_received);
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* asyncio's _read_ready__get_buffer: recv straight into
 * protocol.get_buffer(-1), then protocol.buffer_updated(n). */
static PyObject *
read_buffered(struct gl_streams *s, PyObject *self)
{
    int lost = slot_true(self, s->off_conn_lost, "_conn_lost");
    if (lost != 0)
        return lost < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *protocol = slot(self, s->off_protocol, "_protocol");
    if (protocol == NULL)
        return NULL;
    PyObject *minus_one = PyLong_FromLong(-1);
    PyObject *buf = minus_one == NULL ? NULL
        : PyObject_CallMethodOneArg(protocol, s->str_get_buffer, minus_one);
    Py_XDECREF(minus_one);
    if (buf != NULL) {
        /* asyncio asks len(buf) first; recv_into() then wants it writable */
        Py_ssize_t len = PyObject_Length(buf);
        if (len == 0)
            PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        if (len <= 0)
            Py_CLEAR(buf);
    }
    if (buf == NULL) {
        Py_DECREF(protocol);
        return callback_failed(s, self, s->msg_get_buffer);
    }
    Py_buffer view = {0};
    PyObject *r = NULL, *nbytes = NULL;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        /* Not a writable buffer: the socket's recv_into() raises what it
         * raises for asyncio. */
        PyErr_Clear();
        nbytes = recv_into_by_socket(s, self, buf);
        if (nbytes == NULL) {
            PyObject *exc = take_catchable();
            r = exc == NULL ? NULL : fatal_error(s, self, exc, s->msg_read_error);
            goto done;
        }
    }
    else {
        int fd = sock_fd(s, self);
        if (fd < 0)
            goto done;
        ssize_t n = recv(fd, view.buf, (size_t)view.len, 0);
        int err = errno;
        PyBuffer_Release(&view);
        if (n < 0) {
            r = io_failed(s, self, err, s->msg_read_error);
            goto done;
        }
        if ((nbytes = PyLong_FromSsize_t(n)) == NULL)
            goto done;
    }
    int empty = PyObject_Not(nbytes);
    if (empty != 0) {
        r = empty < 0 ? NULL : read_eof(s, self);
        goto done;
    }
    r = PyObject_CallMethodOneArg(protocol, s->str_buffer_updated, nbytes);
    if (r == NULL)
        r = callback_failed(s, self, s->msg_buffer_updated);
    else
        Py_SETREF(r, Py_NewRef(Py_None));
done:
    if (view.obj != NULL)
        PyBuffer_Release(&view);
    Py_XDECREF(nbytes);
    Py_DECREF(buf);
    Py_DECREF(protocol);
    return r;
}

typedef PyObject *(*read_path)(struct gl_streams *, PyObject *);

/* A read method's wrapper: no arguments; the path gets the module's
 * transport state. */
static PyObject *
run_read_path(read_path path, const char *name, PyObject *self, PyTypeObject *cls,
              Py_ssize_t nargs, PyObject *kwnames)
{
    struct gl_streams *s = streams_of(cls, self);
    if (s == NULL)
        return NULL;
    if (nargs != 0 || kwnames != NULL) {
        PyErr_Format(PyExc_TypeError, "%s() takes no arguments", name);
        return NULL;
    }
    return path(s, self);
}

static PyObject *
transport_read_data(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    return run_read_path(read_data, "_read_ready__data_received", self, cls, nargs, kwnames);
}

static PyObject *
transport_read_buffered(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    return run_read_path(read_buffered, "_read_ready__get_buffer", self, cls, nargs, kwnames);
}

/* _read_ready: self._read_ready_cb(), which set_protocol() chose — one of
 * the two paths above, bound to this transport, run without the call. */
static PyObject *
read_chosen(struct gl_streams *s, PyObject *self)
{
    PyObject *cb = slot(self, s->off_read_ready_cb, "_read_ready_cb");
    if (cb == NULL)
        return NULL;
    PyObject *r;
    if (PyCFunction_Check(cb) && PyCFunction_GET_SELF(cb) == self
            && PyCFunction_GET_FUNCTION(cb) == (PyCFunction)(void (*)(void))transport_read_data)
        r = read_data(s, self);
    else if (PyCFunction_Check(cb) && PyCFunction_GET_SELF(cb) == self
            && PyCFunction_GET_FUNCTION(cb) == (PyCFunction)(void (*)(void))transport_read_buffered)
        r = read_buffered(s, self);
    else
        r = PyObject_CallNoArgs(cb);
    Py_DECREF(cb);
    return r;
}

static PyObject *
transport_read_ready(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    return run_read_path(read_chosen, "_read_ready", self, cls, nargs, kwnames);
}

/* ---- writing ----------------------------------------------------------- */

/* asyncio's write(self, data), for every case but the common one. */
static PyObject *
stock_write(struct gl_streams *s, PyObject *self, PyObject *data)
{
    PyObject *args[2] = {self, data};
    return PyObject_Vectorcall(s->stock_write, args, 2, NULL);
}

/* Can write() send data at once?  1 when nothing is queued and nothing
 * asyncio checks for (write_eof, sendfile, a lost connection) stands in
 * the way; 0 to leave it to asyncio; -1 on error. */
static int
may_send_now(struct gl_streams *s, PyObject *self)
{
    int r = slot_true(self, s->off_eof, "_eof");
    if (r != 0)
        return r < 0 ? -1 : 0;
    PyObject *waiter = slot(self, s->off_empty_waiter, "_empty_waiter");
    if (waiter == NULL)
        return -1;
    r = waiter == Py_None;
    Py_DECREF(waiter);
    if (!r)
        return 0;
    r = slot_true(self, s->off_conn_lost, "_conn_lost");
    if (r != 0)
        return r < 0 ? -1 : 0;
    r = slot_true(self, s->off_buffer, "_buffer");
    return r < 0 ? -1 : !r;
}

/* write(data): send() at once when nothing is queued; asyncio's write()
 * queues the rest (and raises for what it refuses). */
static PyObject *
transport_write(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames)
{
    struct gl_streams *s = streams_of(cls, self);
    if (s == NULL)
        return NULL;
    if (nargs != 1 || kwnames != NULL) {
        /* write(data=...), or a wrong call: asyncio's method takes it, or
         * raises its TypeError */
        PyObject *full[8];
        Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
        if (total + 1 > 8) {
            PyErr_Format(PyExc_TypeError,
                         "write() takes 2 positional arguments but %zd were given", total + 1);
            return NULL;
        }
        full[0] = self;
        for (Py_ssize_t i = 0; i < total; i++)
            full[i + 1] = args[i];
        return PyObject_Vectorcall(s->stock_write, full, nargs + 1, kwnames);
    }
    PyObject *data = args[0];
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data))
        return stock_write(s, self, data);
    int now = may_send_now(s, self);
    if (now <= 0)
        return now < 0 ? NULL : stock_write(s, self, data);
    int fd = sock_fd(s, self);
    if (fd < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        /* a non-contiguous memoryview: asyncio's way */
        PyErr_Clear();
        return stock_write(s, self, data);
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        return stock_write(s, self, data);
    }
    ssize_t n = send(fd, view.buf, (size_t)view.len, MSG_NOSIGNAL);
    int err = errno;
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    if (n == len)
        Py_RETURN_NONE;
    if (n < 0) {
        if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR)
            return io_failed(s, self, err, s->msg_write_error);
        return stock_write(s, self, data);
    }
    /* The kernel took part: asyncio queues the rest as memoryview(data)[n:]
     * (and will try it once more first). */
    PyObject *mv = PyMemoryView_FromObject(data);
    if (mv == NULL)
        return NULL;
    PyObject *rest = PySequence_GetSlice(mv, n, len);
    Py_DECREF(mv);
    if (rest == NULL)
        return NULL;
    PyObject *r = stock_write(s, self, rest);
    Py_DECREF(rest);
    return r;
}

static PyMethodDef transport_methods[] = {
    {"_read_ready", (PyCFunction)(void (*)(void))transport_read_ready,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "The socket is readable: the read path set_protocol() chose."},
    {"_read_ready__data_received", (PyCFunction)(void (*)(void))transport_read_data,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "Read what is there and give it to protocol.data_received()."},
    {"_read_ready__get_buffer", (PyCFunction)(void (*)(void))transport_read_buffered,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "Read into protocol.get_buffer() and call protocol.buffer_updated()."},
    {"write", (PyCFunction)(void (*)(void))transport_write,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "write(data)\n--\n\nWrite the bytes-like data to the transport: sent at "
     "once when nothing is queued, else queued and sent when the socket "
     "can take it."},
    {NULL, NULL, 0, NULL}
};

static PyType_Slot transport_slots[] = {
    {Py_tp_doc, "The read and write paths of goloop's socket transport "
                "(goloop._transports.SocketTransport), in front of asyncio's "
                "_SelectorSocketTransport."},
    {Py_tp_methods, transport_methods},
    {0, NULL}
};

/* No fields of its own: it sits beside asyncio's Python class as a base. */
PyType_Spec gl_socket_transport_spec = {
    .name = "goloop._goloop.SocketTransportCore",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = transport_slots,
};

/* ---- set-up ------------------------------------------------------------ */

static int
intern(PyObject **slot, const char *s)
{
    if (*slot == NULL)
        *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

static int
streams_names(struct gl_streams *s)
{
    return intern(&s->str_max_size, "max_size")
        | intern(&s->str_fatal_error, "_fatal_error")
        | intern(&s->str_on_eof, "_read_ready__on_eof")
        | intern(&s->str_data_received, "data_received")
        | intern(&s->str_get_buffer, "get_buffer")
        | intern(&s->str_buffer_updated, "buffer_updated")
        | intern(&s->str_recv_into, "recv_into")
        | intern(&s->msg_read_error, "Fatal read error on socket transport")
        | intern(&s->msg_write_error, "Fatal write error on socket transport")
        | intern(&s->msg_data_received, "Fatal error: protocol.data_received() call failed.")
        | intern(&s->msg_get_buffer, "Fatal error: protocol.get_buffer() call failed.")
        | intern(&s->msg_buffer_updated, "Fatal error: protocol.buffer_updated() call failed.");
}

static int
streams_slots(struct gl_streams *s, PyTypeObject *t)
{
    if (gl_slot_offset(t, "_sock", &s->off_sock) < 0
            || gl_slot_offset(t, "_sock_fd", &s->off_sock_fd) < 0
            || gl_slot_offset(t, "_protocol", &s->off_protocol) < 0
            || gl_slot_offset(t, "_conn_lost", &s->off_conn_lost) < 0
            || gl_slot_offset(t, "_buffer", &s->off_buffer) < 0
            || gl_slot_offset(t, "_eof", &s->off_eof) < 0
            || gl_slot_offset(t, "_empty_waiter", &s->off_empty_waiter) < 0
            || gl_slot_offset(t, "_read_ready_cb", &s->off_read_ready_cb) < 0)
        return -1;
    return 0;
}

static PyObject *
mod_setup_transports(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gl_module_state *st = PyModule_GetState(module);
    if (nargs != 2 || !PyType_Check(args[0]) || !PyType_Check(args[1])
            || !PyType_IsSubtype((PyTypeObject *)args[1], (PyTypeObject *)args[0])
            || !PyType_IsSubtype((PyTypeObject *)args[1], st->transport_type)) {
        PyErr_SetString(PyExc_TypeError, "_setup_transports() takes asyncio's "
                        "_SelectorSocketTransport and its subclass SocketTransport");
        return NULL;
    }
    if (st->streams == NULL && (st->streams = PyMem_Calloc(1, sizeof *st->streams)) == NULL)
        return PyErr_NoMemory();
    struct gl_streams *s = st->streams;
    PyObject *write = PyObject_GetAttrString(args[0], "write");
    if (write == NULL)
        return NULL;
    Py_XSETREF(s->stock_write, write);
    if (streams_names(s) < 0 || streams_slots(s, (PyTypeObject *)args[1]) < 0)
        return NULL;
    Py_XSETREF(s->transport_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

PyMethodDef gl_stream_methods[] = {
    {"_setup_transports", (PyCFunction)(void (*)(void))mod_setup_transports, METH_FASTCALL,
     "_setup_transports(SelectorSocketTransport, SocketTransport, /)\n--\n\n"
     "What the socket transport core takes from asyncio, and the class it\n"
     "serves (goloop/_transports.py)."},
    {NULL, NULL, 0, NULL}
};

int
gl_streams_traverse(gl_module_state *st, visitproc visit, void *arg)
{
    if (st->streams != NULL) {
        Py_VISIT(st->streams->stock_write);
        Py_VISIT(st->streams->transport_type);
    }
    return 0;
}

void
gl_streams_free(gl_module_state *st)
{
    struct gl_streams *s = st->streams;
    if (s == NULL)
        return;
    st->streams = NULL;
    PyObject **refs[] = {
        &s->stock_write, (PyObject **)&s->transport_type, &s->str_max_size,
        &s->str_fatal_error, &s->str_on_eof, &s->str_data_received, &s->str_get_buffer,
        &s->str_buffer_updated, &s->str_recv_into, &s->msg_read_error, &s->msg_write_error,
        &s->msg_data_received, &s->msg_get_buffer, &s->msg_buffer_updated,
    };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        Py_CLEAR(*refs[i]);
    PyMem_RawFree(s->buf);
    PyMem_Free(s);
}

#endif
