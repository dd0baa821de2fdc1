/*
 * stream.c — the read and write paths of goloop's socket transport.
 *
 * SocketTransportCore stands in front of asyncio's _SelectorSocketTransport
 * (transport.c says how, and what the two halves share) and replaces the
 * four methods that run on every read and write: _read_ready,
 * _read_ready__data_received, _read_ready__get_buffer and write.  Everything
 * else — connecting, closing, flow control, the write queue, write_eof,
 * sendfile, start_tls, repr, the server's bookkeeping — stays asyncio's
 * code, which differs between versions in ways a copy would have to follow.
 *
 * Per request, asyncio's Python read path makes two frames and a
 * socket.recv(max_size) that allocates 256 KiB (mmap, mremap, munmap) and
 * releases and retakes the GIL around a recv that cannot block.  Here a
 * read goes into the module's buffer and the protocol gets an exact-size
 * copy; BufferedProtocol reads straight into get_buffer().  A write with
 * nothing queued goes out by one send() at once.
 *
 * Semantics are asyncio's, path by path: the same checks in the same
 * order, the same messages to _fatal_error, KeyboardInterrupt and
 * SystemExit passed through, EAGAIN and EINTR ignored.  Whatever is not
 * the common case — a write while something is queued, after write_eof,
 * during sendfile, after the connection was lost, of something that is
 * not a contiguous buffer, or the part of one the kernel did not take —
 * goes to asyncio's own write(), which queues it as the running version
 * does.
 *
 * Sends pass MSG_NOSIGNAL: a peer that went away is an EPIPE error (as in
 * Python, which ignores SIGPIPE), not a signal, even in a program that
 * embeds Python and leaves SIGPIPE at its default.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <errno.h>
#include <sys/socket.h>

#define OFF(s) ((s)->off[GL_TR_STREAM])

/* A recv/send failed with errno: ignored (EAGAIN, EINTR: asyncio's
 * BlockingIOError and InterruptedError), or to _fatal_error. */
static PyObject *
io_failed(struct gl_transports *s, PyObject *self, int err, PyObject *message)
{
    if (gl_tr_would_block(err))
        Py_RETURN_NONE;
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return gl_tr_fatal(s, self, gl_err_take(), message);
}

/* ---- reading ----------------------------------------------------------- */

/* asyncio's self._read_ready__on_eof(), in C (stream_life.c) */
static PyObject *
read_eof(struct gl_transports *s, PyObject *self)
{
    return gl_stream_on_eof(s, self);
}

/* self._sock.recv_into(buf) */
static PyObject *
recv_into_by_socket(struct gl_transports *s, PyObject *self, PyObject *buf)
{
    PyObject *sock = gl_tr_slot(self, OFF(s).sock, "_sock");
    if (sock == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethodOneArg(sock, s->str_recv_into, buf);
    Py_DECREF(sock);
    return r;
}

/* asyncio's _read_ready__data_received: recv into the module's buffer,
 * then protocol.data_received(bytes).  *filled: the read took all the
 * buffer had room for (more may be waiting). */
static PyObject *
read_data_filling(struct gl_transports *s, PyObject *self, int *filled)
{
    int lost = gl_tr_slot_true(self, OFF(s).conn_lost, "_conn_lost");
    if (lost != 0)
        return lost < 0 ? NULL : Py_NewRef(Py_None);
    int fd = gl_tr_fd(self, OFF(s).sock_fd);
    if (fd < 0)
        return NULL;
    Py_ssize_t size = gl_tr_max_size(s, self);
    char *buf = size < 0 ? NULL : gl_tr_buffer(s, (size_t)size);
    if (buf == NULL)
        return NULL;
    ssize_t n = recv(fd, buf, (size_t)size, 0);
    if (n < 0)
        return io_failed(s, self, errno, s->msg_read_error);
    if (n == 0)
        return read_eof(s, self);
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    if (data == NULL)
        return NULL;
    PyObject *protocol = gl_tr_slot(self, OFF(s).protocol, "_protocol");
    if (protocol == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *r = PyObject_CallMethodOneArg(protocol, s->str_data_received, data);
    Py_DECREF(protocol);
    Py_DECREF(data);
    if (r == NULL)
        return gl_tr_failed(s, self, s->msg_data_received);
    Py_DECREF(r);
    *filled = n == size;
    Py_RETURN_NONE;
}

static PyObject *
read_data(struct gl_transports *s, PyObject *self)
{
    int filled;
    return read_data_filling(s, self, &filled);
}

/* asyncio's _read_ready__get_buffer: recv straight into
 * protocol.get_buffer(-1), then protocol.buffer_updated(n).  *filled: as
 * read_data_filling's. */
static PyObject *
read_buffered_filling(struct gl_transports *s, PyObject *self, int *filled)
{
    int lost = gl_tr_slot_true(self, OFF(s).conn_lost, "_conn_lost");
    if (lost != 0)
        return lost < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *protocol = gl_tr_slot(self, OFF(s).protocol, "_protocol");
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
        return gl_tr_failed(s, self, s->msg_get_buffer);
    }
    Py_buffer view = {0};
    PyObject *r = NULL, *nbytes = NULL;
    int filled_now = 0;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        /* Not a writable buffer: the socket's recv_into() raises what it
         * raises for asyncio. */
        PyErr_Clear();
        nbytes = recv_into_by_socket(s, self, buf);
        if (nbytes == NULL) {
            PyObject *exc = gl_tr_catchable();
            r = exc == NULL ? NULL : gl_tr_fatal(s, self, exc, s->msg_read_error);
            goto done;
        }
    }
    else {
        int fd = gl_tr_fd(self, OFF(s).sock_fd);
        if (fd < 0)
            goto done;
        ssize_t n = recv(fd, view.buf, (size_t)view.len, 0);
        int err = errno;
        Py_ssize_t room = view.len;
        PyBuffer_Release(&view);
        if (n < 0) {
            r = io_failed(s, self, err, s->msg_read_error);
            goto done;
        }
        if ((nbytes = PyLong_FromSsize_t(n)) == NULL)
            goto done;
        filled_now = n == room;
    }
    int empty = PyObject_Not(nbytes);
    if (empty != 0) {
        r = empty < 0 ? NULL : read_eof(s, self);
        goto done;
    }
    r = PyObject_CallMethodOneArg(protocol, s->str_buffer_updated, nbytes);
    if (r == NULL)
        r = gl_tr_failed(s, self, s->msg_buffer_updated);
    else {
        Py_SETREF(r, Py_NewRef(Py_None));
        *filled = filled_now;
    }
done:
    if (view.obj != NULL)
        PyBuffer_Release(&view);
    Py_XDECREF(nbytes);
    Py_DECREF(buf);
    Py_DECREF(protocol);
    return r;
}

static PyObject *
read_buffered(struct gl_transports *s, PyObject *self)
{
    int filled;
    return read_buffered_filling(s, self, &filled);
}

typedef PyObject *(*read_path)(struct gl_transports *, PyObject *);

/* A read method's wrapper: no arguments; the path gets the module's
 * transport state. */
static PyObject *
run_read_path(read_path path, const char *name, PyObject *self, PyTypeObject *cls,
              Py_ssize_t nargs, PyObject *kwnames)
{
    struct gl_transports *s = gl_tr_state(cls, self, GL_TR_STREAM);
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

/* Does the transport still read (not paused, closing or lost)?  1, 0, -1. */
static int
still_reading(struct gl_transports *s, PyObject *self)
{
    int r = gl_tr_slot_true(self, OFF(s).paused, "_paused");
    if (r == 0)
        r = gl_tr_slot_true(self, OFF(s).closing, "_closing");
    if (r == 0)
        r = gl_tr_slot_true(self, OFF(s).conn_lost, "_conn_lost");
    return r < 0 ? -1 : !r;
}

/* _read_ready: self._read_ready_cb(), which set_protocol() chose — one of
 * the two paths above, bound to this transport, run without the call.
 * A read that filled the room it had is followed by another, up to
 * READS_PER_READY in all, while the transport still reads (libuv's
 * rule, and uvloop's): a message larger than a BufferedProtocol's buffer
 * then costs one readiness, not one per buffer-full; asyncio would make
 * the same reads, each after a poll.  The callback is fetched again
 * before each, as set_protocol() may have changed it. */
#define READS_PER_READY 8

static PyObject *
read_chosen(struct gl_transports *s, PyObject *self)
{
    for (int round = 1;; round++) {
        PyObject *cb = gl_tr_slot(self, s->off_read_ready_cb, "_read_ready_cb");
        if (cb == NULL)
            return NULL;
        int filled = 0;
        PyObject *r;
        if (PyCFunction_Check(cb) && PyCFunction_GET_SELF(cb) == self
                && PyCFunction_GET_FUNCTION(cb) == (PyCFunction)(void (*)(void))transport_read_data)
            r = read_data_filling(s, self, &filled);
        else if (PyCFunction_Check(cb) && PyCFunction_GET_SELF(cb) == self
                && PyCFunction_GET_FUNCTION(cb) == (PyCFunction)(void (*)(void))transport_read_buffered)
            r = read_buffered_filling(s, self, &filled);
        else
            r = PyObject_CallNoArgs(cb);
        Py_DECREF(cb);
        if (r == NULL || !filled || round == READS_PER_READY)
            return r;
        Py_DECREF(r);
        int more = still_reading(s, self);
        if (more <= 0)
            return more < 0 ? NULL : Py_NewRef(Py_None);
    }
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
stock_write(struct gl_transports *s, PyObject *self, PyObject *data)
{
    return gl_tr_call_stock(s->stock_write, self, &data, 1, NULL);
}

/* Can write() send data at once?  1 when nothing is queued and nothing
 * asyncio checks for (write_eof, sendfile, a lost connection) stands in
 * the way; 0 to leave it to asyncio; -1 on error. */
static int
may_send_now(struct gl_transports *s, PyObject *self)
{
    int r = gl_tr_slot_true(self, s->off_eof, "_eof");
    if (r != 0)
        return r < 0 ? -1 : 0;
    PyObject *waiter = gl_tr_slot(self, s->off_empty_waiter, "_empty_waiter");
    if (waiter == NULL)
        return -1;
    r = waiter == Py_None;
    Py_DECREF(waiter);
    if (!r)
        return 0;
    r = gl_tr_slot_true(self, OFF(s).conn_lost, "_conn_lost");
    if (r != 0)
        return r < 0 ? -1 : 0;
    r = gl_tr_slot_true(self, OFF(s).buffer, "_buffer");
    return r < 0 ? -1 : !r;
}

/* write(data): send() at once when nothing is queued; asyncio's write()
 * queues the rest (and raises for what it refuses). */
static PyObject *
transport_write(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames)
{
    struct gl_transports *s = gl_tr_state(cls, self, GL_TR_STREAM);
    if (s == NULL)
        return NULL;
    if (nargs != 1 || kwnames != NULL)
        /* write(data=...), or a wrong call: asyncio's method takes it, or
         * raises its TypeError */
        return gl_tr_call_stock(s->stock_write, self, args, nargs, kwnames);
    PyObject *data = args[0];
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data))
        return stock_write(s, self, data);
    int now = may_send_now(s, self);
    if (now <= 0)
        return now < 0 ? NULL : stock_write(s, self, data);
    int fd = gl_tr_fd(self, OFF(s).sock_fd);
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
        if (!gl_tr_would_block(err))
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
    {"close", (PyCFunction)(void (*)(void))gl_stream_close,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "close()\n--\n\nClose the transport: buffered data is sent first, then "
     "protocol.connection_lost(None) is called."},
    {"_add_reader", (PyCFunction)(void (*)(void))gl_stream_add_reader,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "Watch fd for reading with callback(*args), unless closing or paused."},
    {"_call_connection_lost", (PyCFunction)(void (*)(void))gl_stream_call_connection_lost,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "Call protocol.connection_lost(exc) and release the socket."},
    {NULL, NULL, 0, NULL}
};

static PyType_Slot transport_slots[] = {
    {Py_tp_doc, "The read and write paths of goloop's socket transport "
                "(goloop._transports.SocketTransport), in front of asyncio's "
                "_SelectorSocketTransport."},
    {Py_tp_methods, transport_methods},
    {Py_tp_init, gl_socket_transport_init},
    {0, NULL}
};

/* No fields of its own: it sits beside asyncio's Python class as a base. */
PyType_Spec gl_socket_transport_spec = {
    .name = "goloop._goloop.SocketTransportCore",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = transport_slots,
};

#endif
