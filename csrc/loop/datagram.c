/*
 * datagram.c — the receive and send paths of goloop's UDP transport.
 *
 * DatagramTransportCore stands in front of asyncio's
 * _SelectorDatagramTransport (transport.c says how, and what the halves
 * share) and replaces the two methods that run per datagram:
 *
 *   _read_ready  asyncio reads one datagram per readiness with
 *                sock.recvfrom(max_size), which allocates 256 KiB (mmap,
 *                mremap, munmap) for every datagram.  Here the socket's
 *                recvfrom_into() fills the module's buffer (so the address
 *                comes out exactly as Python makes it), the protocol gets
 *                an exact-size copy, and up to DRAIN_BOUND datagrams are
 *                taken per readiness — until the socket is empty, or the
 *                transport is closed, lost or paused by a callback.
 *   sendto       tried at once when nothing is queued, by send() on a
 *                connected socket, else by the socket's sendto(); what
 *                would block, and every case but the common one (a queue,
 *                a lost connection, an address that must be checked
 *                against the connected one, empty data), is asyncio's own
 *                sendto(), which queues it as the running version does.
 *
 * Errors are asyncio's: an OSError goes to protocol.error_received(),
 * anything else but SystemExit and KeyboardInterrupt to _fatal_error with
 * asyncio's message; an exception from datagram_received() propagates to
 * the loop, as it does from asyncio's _read_ready.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <errno.h>
#include <sys/socket.h>

#define OFF(t) ((t)->off[GL_TR_DATAGRAM])

/* Datagrams taken per readiness: enough to empty a burst in one go,
 * few enough that one busy socket does not hold up the loop. */
#define DRAIN_BOUND 32

/* protocol.error_received(exc), stealing exc: None, or NULL. */
static PyObject *
error_received(struct gl_transports *t, PyObject *self, PyObject *exc)
{
    PyObject *protocol = gl_tr_slot(self, OFF(t).protocol, "_protocol");
    PyObject *r = protocol == NULL ? NULL
        : PyObject_CallMethodOneArg(protocol, t->str_error_received, exc);
    Py_XDECREF(protocol);
    Py_DECREF(exc);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* The socket call that raised failed as asyncio's sendto/_read_ready
 * handle it: an OSError to error_received(), anything else to
 * _fatal_error (SystemExit and KeyboardInterrupt go through). */
static PyObject *
socket_failed(struct gl_transports *t, PyObject *self, PyObject *message)
{
    if (PyErr_ExceptionMatches(PyExc_OSError))
        return error_received(t, self, gl_err_take());
    return gl_tr_failed(t, self, message);
}

/* ---- receiving --------------------------------------------------------- */

/* Should the drain stop before the next datagram?  The transport was
 * closed, lost or paused by what the last one ran.  1, 0, or -1. */
static int
stopped(struct gl_transports *t, PyObject *self)
{
    int r = gl_tr_slot_true(self, OFF(t).conn_lost, "_conn_lost");
    if (r == 0)
        r = gl_tr_slot_true(self, OFF(t).closing, NULL);
    if (r == 0)
        r = gl_tr_slot_true(self, OFF(t).paused, NULL);
    return r;
}

/* One datagram: 1 received and delivered, 0 none to take (or its error
 * went to the protocol), -1 with an exception. */
static int
receive_one(struct gl_transports *t, PyObject *self)
{
    Py_ssize_t size = gl_tr_max_size(t, self);
    char *buf = size < 0 ? NULL : gl_tr_buffer(t, (size_t)size);
    if (buf == NULL)
        return -1;
    PyObject *sock = gl_tr_slot(self, OFF(t).sock, "_sock");
    if (sock == NULL)
        return -1;
    PyObject *view = PyMemoryView_FromMemory(buf, size, PyBUF_WRITE);
    PyObject *got = view == NULL ? NULL
        : PyObject_CallMethodOneArg(sock, t->str_recvfrom_into, view);
    Py_XDECREF(view);
    Py_DECREF(sock);
    if (got == NULL) {
        if (gl_tr_raised_would_block())
            return 0;
        PyObject *r = socket_failed(t, self, t->msg_dgram_read_error);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    Py_ssize_t n;
    if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 2
            || (n = PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 0))) < 0 || n > size) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "recvfrom_into() returned %R", got);
        Py_DECREF(got);
        return -1;
    }
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    PyObject *protocol = data == NULL ? NULL
        : gl_tr_slot(self, OFF(t).protocol, "_protocol");
    PyObject *r = NULL;
    if (protocol != NULL) {
        PyObject *args[3] = {protocol, data, PyTuple_GET_ITEM(got, 1)};
        r = PyObject_VectorcallMethod(t->str_datagram_received, args, 3, NULL);
        Py_DECREF(protocol);
    }
    Py_XDECREF(data);
    Py_DECREF(got);
    if (r == NULL)
        return -1;                   /* propagates, as from asyncio's */
    Py_DECREF(r);
    return 1;
}

static PyObject *
datagram_read_ready(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    struct gl_transports *t = gl_tr_state(cls, self, GL_TR_DATAGRAM);
    if (t == NULL)
        return NULL;
    if (nargs != 0 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "_read_ready() takes no arguments");
        return NULL;
    }
    if (gl_tr_slot_true(self, OFF(t).conn_lost, "_conn_lost") != 0)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    for (int i = 0; i < DRAIN_BOUND; i++) {
        int r = receive_one(t, self);
        if (r <= 0)
            return r < 0 ? NULL : Py_NewRef(Py_None);
        if ((r = stopped(t, self)) != 0)
            return r < 0 ? NULL : Py_NewRef(Py_None);
    }
    Py_RETURN_NONE;
}

/* ---- sending ----------------------------------------------------------- */

/* asyncio's sendto(self, *args, **kwargs). */
static PyObject *
stock_sendto(struct gl_transports *t, PyObject *self, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames)
{
    return gl_tr_call_stock(t->stock_sendto, self, args, nargs, kwnames);
}

/* Is the socket connected, as asyncio decides: self._extra['peername'].
 * 1, 0, or -1 (a missing key is a KeyError, as in asyncio). */
static int
connected(struct gl_transports *t, PyObject *self)
{
    PyObject *extra = GL_SLOT(self, OFF(t).extra);
    if (extra == NULL || !PyDict_Check(extra))
        return -2;                   /* not the dict asyncio made */
    PyObject *peer = PyDict_GetItemWithError(extra, t->str_peername);
    if (peer == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, t->str_peername);
        return -1;
    }
    Py_INCREF(peer);
    int r = PyObject_IsTrue(peer);
    Py_DECREF(peer);
    return r;
}

/* Can sendto() send now?  1 when nothing is queued, the connection is not
 * lost and the address needs no check; 0 to leave it to asyncio. */
static int
may_send_now(struct gl_transports *t, PyObject *self, PyObject *addr)
{
    int r = gl_tr_slot_true(self, OFF(t).buffer, "_buffer");
    if (r != 0)
        return r < 0 ? -1 : 0;
    r = gl_tr_slot_true(self, OFF(t).conn_lost, "_conn_lost");
    if (r != 0)
        return r < 0 ? -1 : 0;
    r = gl_tr_slot_true(self, t->off_address, "_address");
    if (r != 0)
        return r < 0 ? -1 : addr == Py_None;
    return 1;
}

/* send() on the connected socket; 1 sent, 0 would block, -1 raised. */
static int
send_connected(struct gl_transports *t, PyObject *self, PyObject *data)
{
    int fd = gl_tr_fd(self, OFF(t).sock_fd);
    if (fd < 0)
        return -1;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return -1;
    ssize_t n = send(fd, view.buf, (size_t)view.len, MSG_NOSIGNAL);
    int err = errno;
    PyBuffer_Release(&view);
    if (n >= 0)
        return 1;
    if (gl_tr_would_block(err))
        return 0;
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* The socket's sendto(data, addr); 1 sent, 0 would block, -1 raised. */
static int
send_unconnected(struct gl_transports *t, PyObject *self, PyObject *data, PyObject *addr)
{
    PyObject *sock = gl_tr_slot(self, OFF(t).sock, "_sock");
    if (sock == NULL)
        return -1;
    PyObject *args[3] = {sock, data, addr};
    PyObject *r = PyObject_VectorcallMethod(t->str_sendto, args, 3, NULL);
    Py_DECREF(sock);
    if (r != NULL) {
        Py_DECREF(r);
        return 1;
    }
    return gl_tr_raised_would_block() ? 0 : -1;
}

static PyObject *
datagram_sendto(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames)
{
    struct gl_transports *t = gl_tr_state(cls, self, GL_TR_DATAGRAM);
    if (t == NULL)
        return NULL;
    if (nargs < 1 || nargs > 2 || kwnames != NULL)
        return stock_sendto(t, self, args, nargs, kwnames);
    PyObject *data = args[0], *addr = nargs == 2 ? args[1] : Py_None;
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data))
        return stock_sendto(t, self, args, nargs, kwnames);
    Py_ssize_t len = PyObject_Length(data);
    if (len <= 0)                    /* empty: versions differ; or an error */
        return len < 0 ? NULL : stock_sendto(t, self, args, nargs, kwnames);
    int now = may_send_now(t, self, addr);
    if (now <= 0)
        return now < 0 ? NULL : stock_sendto(t, self, args, nargs, kwnames);
    int conn = connected(t, self);
    if (conn == -2)
        return stock_sendto(t, self, args, nargs, kwnames);
    int sent;
    if (conn < 0)
        sent = -1;
    else if (conn)
        sent = send_connected(t, self, data);
    else
        sent = send_unconnected(t, self, data, addr);
    if (sent > 0)
        Py_RETURN_NONE;
    if (sent == 0)                   /* asyncio's tries again, then queues */
        return stock_sendto(t, self, args, nargs, kwnames);
    return socket_failed(t, self, t->msg_dgram_write_error);
}

static PyMethodDef datagram_methods[] = {
    {"_read_ready", (PyCFunction)(void (*)(void))datagram_read_ready,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "The socket is readable: deliver what datagrams are there."},
    {"sendto", (PyCFunction)(void (*)(void))datagram_sendto,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "sendto(data, addr=None)\n--\n\nSend data to addr (or the connected "
     "peer): at once when nothing is queued, else queued."},
    {NULL, NULL, 0, NULL}
};

static PyType_Slot datagram_slots[] = {
    {Py_tp_doc, "The receive and send paths of goloop's UDP transport "
                "(goloop._transports.DatagramTransport), in front of asyncio's "
                "_SelectorDatagramTransport."},
    {Py_tp_methods, datagram_methods},
    {0, NULL}
};

/* No fields of its own: it sits beside asyncio's Python class as a base. */
PyType_Spec gl_datagram_transport_spec = {
    .name = "goloop._goloop.DatagramTransportCore",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = datagram_slots,
};

#endif
