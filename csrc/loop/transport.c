/*
 * transport.c — what goloop's native transport halves share.
 *
 * goloop's transports (goloop/_transports.py) are asyncio's own classes of
 * the running Python version — _SelectorSocketTransport for streams,
 * _SelectorDatagramTransport for UDP, _UnixReadPipeTransport for pipes
 * (subprocesses' too) — with a native type of no layout in
 * front of each in the method order, which takes over the methods that
 * run on every read and every write:
 *
 *     class SocketTransport(SocketTransportCore, _SelectorSocketTransport)
 *     class DatagramTransport(DatagramTransportCore, _SelectorDatagramTransport)
 *     class ReadPipeTransport(ReadPipeTransportCore, _UnixReadPipeTransport)
 *
 * stream.c, datagram.c and pipe.c hold those methods (stream_life.c the
 * socket transport's construction and closing, accept.c a server's accept
 * loop); this file holds what they share: the state set up once from
 * asyncio's classes (_setup_transports), the read buffer, socket.socket and
 * the getters of a socket's ints, and access to a transport's attributes
 * and errors.
 *
 * The state of a transport is asyncio's, shared by both halves: the Python
 * classes declare the attributes the native methods read on every call as
 * __slots__, so asyncio's code reads and writes them as before and the C
 * half loads them at fixed offsets — an instance dict lookup costs ~120
 * instructions, and a request made ten.
 *
 * The read buffer: asyncio reads max_size (256 KiB) at once into a new
 * bytes object, which glibc serves with mmap, shrinks with mremap and frees
 * with munmap — three system calls and page faults per read.  The native
 * reads go into one buffer the module keeps (grown to the largest
 * max_size seen) and hand the protocol an exact-size copy.  The GIL is
 * held from the read to the copy, so nothing else can use the buffer
 * meanwhile; recv() on a ready non-blocking socket does not block.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <errno.h>

/* The module's transport state for a method of a transport core called on
 * self: NULL with an exception unless self is the transport class of that
 * kind (whose slots the methods read). */
struct gl_transports *
gl_tr_state(PyTypeObject *defining_class, PyObject *self, int kind)
{
    gl_module_state *st = PyType_GetModuleState(defining_class);
    if (st == NULL)
        return NULL;
    struct gl_transports *t = st->transports;
    if (t == NULL || t->type[kind] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "goloop's transports are not set up");
        return NULL;
    }
    if (!PyObject_TypeCheck(self, t->type[kind])) {
        PyErr_Format(PyExc_TypeError, "%s methods need a %s, not %.200s",
                     defining_class->tp_name, t->type[kind]->tp_name, Py_TYPE(self)->tp_name);
        return NULL;
    }
    return t;
}

/* ---- the transport's attributes ---------------------------------------- */

static void
no_attribute(PyObject *self, const char *name)
{
    PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'",
                 Py_TYPE(self)->tp_name, name);
}

PyObject *
gl_tr_slot(PyObject *self, Py_ssize_t off, const char *name)
{
    PyObject *v = GL_SLOT(self, off);
    if (v == NULL) {
        no_attribute(self, name);
        return NULL;
    }
    return Py_NewRef(v);
}

int
gl_tr_slot_true(PyObject *self, Py_ssize_t off, const char *name)
{
    PyObject *v = GL_SLOT(self, off);
    if (v == NULL) {
        if (name == NULL)
            return 0;
        no_attribute(self, name);
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

int
gl_tr_fd(PyObject *self, Py_ssize_t off)
{
    PyObject *v = gl_tr_slot(self, off, "_sock_fd");
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

/* self.max_size, read as Python reads it: the transport's own if it has
 * one, else its class's.  (Not through the instance's __dict__: asking for
 * it would make CPython keep the instance's attributes in a dict from then
 * on, which slows down every attribute asyncio's Python code reads.) */
Py_ssize_t
gl_tr_max_size(struct gl_transports *t, PyObject *self)
{
    PyObject *v = PyObject_GetAttr(self, t->str_max_size);
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
    return n;
}

char *
gl_tr_buffer(struct gl_transports *t, size_t size)
{
    if (size > t->cap) {
        char *buf = PyMem_RawRealloc(t->buf, size);
        if (buf == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        t->buf = buf;
        t->cap = size;
    }
    return t->buf;
}

PyObject *
gl_tr_call_stock(PyObject *func, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    PyObject *bound = PyMethod_New(func, self);
    if (bound == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(bound, args, nargs, kwnames);
    Py_DECREF(bound);
    return r;
}

/* One int attribute of a socket object, by _socket.socket's getter. */
static long
socket_int(PyObject *getter, PyObject *sock)
{
    PyObject *v = Py_TYPE(getter)->tp_descr_get(getter, sock, NULL);
    if (v == NULL)
        return -1;
    long n = PyLong_AsLong(v);
    Py_DECREF(v);
    return n;
}

int
gl_tr_socket_ints(struct gl_transports *t, PyObject *sock, long *family, long *type, long *proto)
{
    *family = socket_int(t->sock_family, sock);
    *type = *family < 0 ? -1 : socket_int(t->sock_type, sock);
    *proto = *type < 0 ? -1 : socket_int(t->sock_proto, sock);
    return PyErr_Occurred() ? -1 : 0;
}

/* ---- errors ------------------------------------------------------------ */

PyObject *
gl_tr_catchable(void)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
            || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return NULL;
    return gl_err_take();
}

PyObject *
gl_tr_fatal(struct gl_transports *t, PyObject *self, PyObject *exc, PyObject *message)
{
    PyObject *args[3] = {self, exc, message};
    PyObject *r = PyObject_VectorcallMethod(t->str_fatal_error, args, 3, NULL);
    Py_DECREF(exc);
    return r;
}

PyObject *
gl_tr_failed(struct gl_transports *t, PyObject *self, PyObject *message)
{
    PyObject *exc = gl_tr_catchable();
    if (exc == NULL)
        return NULL;
    return gl_tr_fatal(t, self, exc, message);
}

int
gl_tr_raised_would_block(void)
{
    if (PyErr_ExceptionMatches(PyExc_BlockingIOError)
            || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

int
gl_tr_would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* ---- set-up ------------------------------------------------------------ */

static int
intern(PyObject **slot, const char *s)
{
    if (*slot == NULL)
        *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

static int
transports_names(struct gl_transports *t)
{
    return intern(&t->str_max_size, "max_size")
        | intern(&t->str_fatal_error, "_fatal_error")
        | intern(&t->str_data_received, "data_received")
        | intern(&t->str_get_buffer, "get_buffer")
        | intern(&t->str_buffer_updated, "buffer_updated")
        | intern(&t->str_recv_into, "recv_into")
        | intern(&t->str_recvfrom_into, "recvfrom_into")
        | intern(&t->str_sendto, "sendto")
        | intern(&t->str_datagram_received, "datagram_received")
        | intern(&t->str_error_received, "error_received")
        | intern(&t->str_peername, "peername")
        | intern(&t->str_read_eof, "_read_eof")
        | intern(&t->str_accept, "accept")
        | intern(&t->str_accept_fd, "_accept")
        | intern(&t->str_setblocking, "setblocking")
        | intern(&t->str_close, "close")
        | intern(&t->str_fileno, "fileno")
        | intern(&t->str_io_refs, "_io_refs")
        | intern(&t->str_closed, "_closed")
        | intern(&t->str_make_socket_transport, "_make_socket_transport")
        | intern(&t->msg_pipe_read_error, "Fatal read error on pipe transport")
        | intern(&t->msg_read_error, "Fatal read error on socket transport")
        | intern(&t->msg_write_error, "Fatal write error on socket transport")
        | intern(&t->msg_data_received, "Fatal error: protocol.data_received() call failed.")
        | intern(&t->msg_get_buffer, "Fatal error: protocol.get_buffer() call failed.")
        | intern(&t->msg_buffer_updated, "Fatal error: protocol.buffer_updated() call failed.")
        | intern(&t->msg_eof_received, "Fatal error: protocol.eof_received() call failed.")
        | intern(&t->msg_dgram_read_error, "Fatal read error on datagram transport")
        | intern(&t->msg_dgram_write_error, "Fatal write error on datagram transport");
}

static int
transports_kwnames(struct gl_transports *t)
{
    if (t->kw_serve == NULL
            && (t->kw_serve = Py_BuildValue("(ss)", "extra", "server")) == NULL)
        return -1;
    if (t->kw_serve_context == NULL
            && (t->kw_serve_context = Py_BuildValue("(sss)", "extra", "server", "context")) == NULL)
        return -1;
    return 0;
}

static int
common_slots(PyTypeObject *type, struct gl_tr_slots *o)
{
    return gl_slot_offset(type, "_sock", &o->sock) | gl_slot_offset(type, "_sock_fd", &o->sock_fd)
        | gl_slot_offset(type, "_protocol", &o->protocol)
        | gl_slot_offset(type, "_conn_lost", &o->conn_lost)
        | gl_slot_offset(type, "_buffer", &o->buffer)
        | gl_slot_offset(type, "_closing", &o->closing)
        | gl_slot_offset(type, "_paused", &o->paused)
        | gl_slot_offset(type, "_extra", &o->extra);
}

static int
transports_slots(struct gl_transports *t)
{
    PyTypeObject *s = t->type[GL_TR_STREAM], *d = t->type[GL_TR_DATAGRAM];
    if (common_slots(s, &t->off[GL_TR_STREAM]) < 0 || common_slots(d, &t->off[GL_TR_DATAGRAM]) < 0
            || gl_slot_offset(s, "_eof", &t->off_eof) < 0
            || gl_slot_offset(s, "_empty_waiter", &t->off_empty_waiter) < 0
            || gl_slot_offset(s, "_read_ready_cb", &t->off_read_ready_cb) < 0
            || gl_slot_offset(d, "_address", &t->off_address) < 0
            || gl_slot_offset(t->type[GL_TR_PIPE], "_fileno", &t->off_fileno) < 0
            || gl_slot_offset(t->type[GL_TR_PIPE], "_protocol", &t->off_pipe_protocol) < 0)
        return -1;
    return 0;
}

/* The getter of _socket.socket's attribute `name`, which reads the int the
 * socket object holds. */
static int
socket_getter(PyObject *base, PyObject **into, const char *name)
{
    PyObject *d = PyDict_GetItemString(((PyTypeObject *)base)->tp_dict, name);  /* borrowed */
    if (d == NULL || Py_TYPE(d)->tp_descr_get == NULL) {
        PyErr_Format(PyExc_TypeError, "_socket.socket.%s is not a descriptor", name);
        return -1;
    }
    Py_XSETREF(*into, Py_NewRef(d));
    return 0;
}

/* socket.socket, and _socket.socket's getters of family, type and proto. */
static int
transports_socket(struct gl_transports *t)
{
    PyObject *module = PyImport_ImportModule("socket");
    PyObject *type = module ? PyObject_GetAttrString(module, "socket") : NULL;
    Py_XDECREF(module);
    if (type == NULL)
        return -1;
    if (!PyType_Check(type) || ((PyTypeObject *)type)->tp_base == NULL) {
        PyErr_SetString(PyExc_TypeError, "socket.socket is not a subclass of _socket.socket");
        Py_DECREF(type);
        return -1;
    }
    Py_XSETREF(t->socket_type, type);
    PyObject *base = (PyObject *)((PyTypeObject *)type)->tp_base;
    return socket_getter(base, &t->sock_family, "family") | socket_getter(base, &t->sock_type, "type")
        | socket_getter(base, &t->sock_proto, "proto");
}

/* A (stock class, goloop class) pair: the goloop class subclasses both the
 * stock one and the native core. */
static int
check_pair(PyObject *stock, PyObject *ours, PyTypeObject *core)
{
    return PyType_Check(stock) && PyType_Check(ours)
        && PyType_IsSubtype((PyTypeObject *)ours, (PyTypeObject *)stock)
        && PyType_IsSubtype((PyTypeObject *)ours, core);
}

static PyObject *
mod_setup_transports(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gl_module_state *st = PyModule_GetState(module);
    if (nargs != 6 || !check_pair(args[0], args[1], st->socket_transport_type)
            || !check_pair(args[2], args[3], st->datagram_transport_type)
            || !check_pair(args[4], args[5], st->read_pipe_transport_type)) {
        PyErr_SetString(PyExc_TypeError, "_setup_transports() takes asyncio's "
                        "_SelectorSocketTransport, goloop's SocketTransport, asyncio's "
                        "_SelectorDatagramTransport, goloop's DatagramTransport, "
                        "asyncio's _UnixReadPipeTransport and goloop's ReadPipeTransport");
        return NULL;
    }
    if (st->transports == NULL
            && (st->transports = PyMem_Calloc(1, sizeof *st->transports)) == NULL)
        return PyErr_NoMemory();
    struct gl_transports *t = st->transports;
    PyObject *write = PyObject_GetAttrString(args[0], "write");
    if (write == NULL)
        return NULL;
    Py_XSETREF(t->stock_write, write);
    PyObject *sendto = PyObject_GetAttrString(args[2], "sendto");
    if (sendto == NULL)
        return NULL;
    Py_XSETREF(t->stock_sendto, sendto);
    PyObject *pipe_read = PyObject_GetAttrString(args[4], "_read_ready");
    if (pipe_read == NULL)
        return NULL;
    Py_XSETREF(t->stock_pipe_read, pipe_read);
    Py_XSETREF(t->type[GL_TR_STREAM], (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(t->type[GL_TR_DATAGRAM], (PyTypeObject *)Py_NewRef(args[3]));
    Py_XSETREF(t->type[GL_TR_PIPE], (PyTypeObject *)Py_NewRef(args[5]));
    if (transports_names(t) < 0 || transports_kwnames(t) < 0 || transports_slots(t) < 0
            || transports_socket(t) < 0
            || gl_stream_life_setup(t, args[0]) < 0) {
        for (int k = 0; k < GL_TR_KINDS; k++)
            Py_CLEAR(t->type[k]);   /* not set up, then */
        return NULL;
    }
    Py_RETURN_NONE;
}

PyMethodDef gl_transport_methods[] = {
    {"_setup_transports", (PyCFunction)(void (*)(void))mod_setup_transports, METH_FASTCALL,
     "_setup_transports(SelectorSocketTransport, SocketTransport,\n"
     "                  SelectorDatagramTransport, DatagramTransport,\n"
     "                  UnixReadPipeTransport, ReadPipeTransport, /)\n--\n\n"
     "asyncio's transport classes and goloop's, which the native cores serve\n"
     "(goloop/_transports.py)."},
    {NULL, NULL, 0, NULL}
};

int
gl_transports_traverse(gl_module_state *st, visitproc visit, void *arg)
{
    struct gl_transports *t = st->transports;
    if (t != NULL) {
        Py_VISIT(t->stock_write);
        Py_VISIT(t->stock_sendto);
        Py_VISIT(t->stock_pipe_read);
        Py_VISIT(t->socket_type);
        Py_VISIT(t->sock_family);
        Py_VISIT(t->sock_type);
        Py_VISIT(t->sock_proto);
        for (int k = 0; k < GL_TR_KINDS; k++)
            Py_VISIT(t->type[k]);
        return gl_stream_life_traverse(t, visit, arg);
    }
    return 0;
}

void
gl_transports_free(gl_module_state *st)
{
    struct gl_transports *t = st->transports;
    if (t == NULL)
        return;
    st->transports = NULL;
    gl_stream_life_free(t);
    PyObject **refs[] = {
        &t->stock_write, &t->stock_sendto, &t->stock_pipe_read, &t->socket_type,
        &t->sock_family, &t->sock_type, &t->sock_proto, &t->str_accept, &t->str_accept_fd,
        &t->str_setblocking, &t->str_close, &t->str_fileno, &t->str_io_refs, &t->str_closed,
        &t->str_make_socket_transport, &t->kw_serve, &t->kw_serve_context, (PyObject **)&t->type[GL_TR_STREAM],
        (PyObject **)&t->type[GL_TR_DATAGRAM], (PyObject **)&t->type[GL_TR_PIPE],
        &t->str_max_size, &t->str_fatal_error, &t->str_read_eof, &t->msg_pipe_read_error,
        &t->str_data_received, &t->str_get_buffer, &t->str_buffer_updated,
        &t->str_recv_into, &t->str_recvfrom_into, &t->str_sendto, &t->str_datagram_received,
        &t->str_error_received, &t->str_peername, &t->msg_read_error, &t->msg_write_error,
        &t->msg_data_received, &t->msg_get_buffer, &t->msg_buffer_updated, &t->msg_eof_received,
        &t->msg_dgram_read_error, &t->msg_dgram_write_error,
    };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        Py_CLEAR(*refs[i]);
    PyMem_RawFree(t->buf);
    PyMem_Free(t);
}

#endif
