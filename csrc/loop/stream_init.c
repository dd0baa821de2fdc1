/*
 * stream_init.c — a socket transport's construction, in C.
 *
 * SocketTransportCore's tp_init is what SocketTransport(loop, sock,
 * protocol, waiter, extra, server[, context]) runs: asyncio's
 * _SelectorSocketTransport.__init__, with the four __init__s it chains
 * (_SelectorTransport, _FlowControlMixin, BaseTransport and the write
 * buffer limits) done as one, statement by statement, in asyncio's order,
 * with the running version's differences:
 *
 *   3.11     the write buffer is _buffer_factory() (a bytearray);
 *            server._attach() takes no argument; no _write_ready to bind
 *   3.12     a deque, _write_ready bound to _write_sendmsg or _write_send
 *   3.13+    server._attach(transport)
 *   3.15     the transport's context (its callbacks run in it) and
 *            _buffer_size
 *
 * Why: a server makes one per accepted connection, and asyncio's chain
 * costs a dozen Python frames, two of them enum conversions of the
 * socket's family and type for _set_nodelay's test — more than a third of
 * what goloop spent on a short connection beyond uvloop.  Here the test
 * reads the socket's integers.
 *
 * What asyncio's __init__ looks up when it runs — base_events._set_nodelay,
 * trsock.TransportSocket, futures._set_result_unless_cancelled — is looked
 * up here when it runs too, so a patched one is honoured: when
 * _set_nodelay or TransportSocket is not the one seen at set-up, or the
 * socket is not a plain socket.socket (a subclass may define family or
 * fileno its own way), or the arguments are not the usual ones, asyncio's
 * own __init__ runs instead.  tests/transports test_transport_init.py
 * compares the two on every attribute and every callback scheduled.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define PY_3_12 (PY_VERSION_HEX >= 0x030C0000)
#define PY_3_13 (PY_VERSION_HEX >= 0x030D0000)
#define PY_3_15 (PY_VERSION_HEX >= 0x030F0000)

/* The attribute and method names the constructor uses. */
enum {
    N_SOCK, N_READ_READY_CB, N_EXTRA, N_LOOP, N_PROTOCOL_PAUSED, N_HIGH_WATER,
    N_LOW_WATER, N_SOCKET, N_SOCKNAME, N_PEERNAME, N_GETSOCKNAME, N_GETPEERNAME,
    N_SOCK_FD, N_FILENO, N_CONTEXT_ATTR, N_PROTOCOL_CONNECTED, N_PROTOCOL,
    N_READ_GET_BUFFER, N_READ_DATA, N_SERVER, N_BUFFER, N_BUFFER_SIZE, N_CONN_LOST,
    N_CLOSING, N_PAUSED, N_ATTACH, N_TRANSPORTS, N_EOF, N_EMPTY_WAITER, N_WRITE_READY,
    N_WRITE_METHOD, N_CALL_SOON, N_CONNECTION_MADE, N_ADD_READER, N_READ_READY,
    N_SET_RESULT, N_SET_NODELAY, N_TRANSPORT_SOCKET, N_CONTEXT, N_COUNT
};

static const char *const NAMES[N_COUNT] = {
    "_sock", "_read_ready_cb", "_extra", "_loop", "_protocol_paused", "_high_water",
    "_low_water", "socket", "sockname", "peername", "getsockname", "getpeername",
    "_sock_fd", "fileno", "_context", "_protocol_connected", "_protocol",
    "_read_ready__get_buffer", "_read_ready__data_received", "_server", "_buffer",
    "_buffer_size", "_conn_lost", "_closing", "_paused", "_attach", "_transports", "_eof",
    "_empty_waiter", "_write_ready", NULL /* N_WRITE_METHOD: set up */, "call_soon",
    "connection_made", "_add_reader", "_read_ready", "_set_result_unless_cancelled",
    "_set_nodelay", "TransportSocket", "context",
};

struct gl_tr_init {
    PyObject *stock_init;          /* _SelectorSocketTransport.__init__ */
    PyObject *base_events, *trsock, *futures;   /* asyncio's modules */
    PyObject *set_nodelay;         /* base_events._set_nodelay, at set-up */
    PyObject *transport_socket;    /* trsock.TransportSocket, at set-up */
    PyObject *buffered_protocol;   /* protocols.BufferedProtocol */
    PyObject *buffer_factory;      /* what makes the write buffer */
    PyObject *socket_type;         /* socket.socket */
    PyObject *family, *type, *proto;   /* _socket.socket's getters (ints) */
    PyObject *kw_context;          /* ("context",) */
    PyObject *name[N_COUNT];
};

/* ---- set-up ------------------------------------------------------------ */

static int
import_attr(PyObject **into, const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return -1;
    *into = name == NULL ? m : PyObject_GetAttrString(m, name);
    if (name != NULL)
        Py_DECREF(m);
    return *into == NULL ? -1 : 0;
}

/* The getter of _socket.socket's attribute `name`, which reads the int the
 * socket object holds (socket.socket's property makes it an enum). */
static int
socket_getter(PyObject **into, const char *name)
{
    PyObject *type = NULL;
    if (import_attr(&type, "_socket", "socket") < 0)
        return -1;
    PyObject *d = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, name);  /* borrowed */
    Py_DECREF(type);
    if (d == NULL || Py_TYPE(d)->tp_descr_get == NULL) {
        PyErr_Format(PyExc_TypeError, "_socket.socket.%s is not a descriptor", name);
        return -1;
    }
    *into = Py_NewRef(d);
    return 0;
}

static int
setup_fill(struct gl_tr_init *in, PyObject *stock_class)
{
    int has_sendmsg = 0;
#if PY_3_12
    PyObject *flag = NULL;
    if (import_attr(&flag, "asyncio.selector_events", "_HAS_SENDMSG") < 0)
        return -1;
    has_sendmsg = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    if (has_sendmsg < 0)
        return -1;
#endif
    for (int i = 0; i < N_COUNT; i++) {
        const char *s = i != N_WRITE_METHOD ? NAMES[i]
                        : has_sendmsg ? "_write_sendmsg" : "_write_send";
        if ((in->name[i] = PyUnicode_InternFromString(s)) == NULL)
            return -1;
    }
    if ((in->stock_init = PyObject_GetAttrString(stock_class, "__init__")) == NULL
            || import_attr(&in->base_events, "asyncio.base_events", NULL) < 0
            || import_attr(&in->trsock, "asyncio.trsock", NULL) < 0
            || import_attr(&in->futures, "asyncio.futures", NULL) < 0
            || (in->set_nodelay = PyObject_GetAttr(in->base_events, in->name[N_SET_NODELAY])) == NULL
            || (in->transport_socket = PyObject_GetAttr(in->trsock,
                                                        in->name[N_TRANSPORT_SOCKET])) == NULL
            || import_attr(&in->buffered_protocol, "asyncio.protocols", "BufferedProtocol") < 0
#if PY_3_12
            || import_attr(&in->buffer_factory, "collections", "deque") < 0
#else
            || (in->buffer_factory = PyObject_GetAttrString(stock_class, "_buffer_factory")) == NULL
#endif
            || import_attr(&in->socket_type, "socket", "socket") < 0
            || socket_getter(&in->family, "family") < 0
            || socket_getter(&in->type, "type") < 0
            || socket_getter(&in->proto, "proto") < 0
            || (in->kw_context = PyTuple_Pack(1, in->name[N_CONTEXT])) == NULL)
        return -1;
    return 0;
}

static void init_free(struct gl_tr_init *in);

int
gl_stream_init_setup(struct gl_transports *t, PyObject *stock_class)
{
    struct gl_tr_init *in = PyMem_Calloc(1, sizeof *in);
    if (in == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (setup_fill(in, stock_class) < 0) {
        init_free(in);
        return -1;
    }
    gl_stream_init_free(t);    /* set up again: the new classes' */
    t->init = in;
    return 0;
}

#define INIT_REFS(in) { \
    &(in)->stock_init, &(in)->base_events, &(in)->trsock, &(in)->futures, \
    &(in)->set_nodelay, &(in)->transport_socket, &(in)->buffered_protocol, \
    &(in)->buffer_factory, &(in)->socket_type, &(in)->family, &(in)->type, \
    &(in)->proto, &(in)->kw_context }

int
gl_stream_init_traverse(struct gl_transports *t, visitproc visit, void *arg)
{
    struct gl_tr_init *in = t->init;
    if (in == NULL)
        return 0;
    PyObject **refs[] = INIT_REFS(in);
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        Py_VISIT(*refs[i]);
    return 0;
}

static void
init_free(struct gl_tr_init *in)
{
    PyObject **refs[] = INIT_REFS(in);
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        Py_CLEAR(*refs[i]);
    for (int i = 0; i < N_COUNT; i++)
        Py_CLEAR(in->name[i]);
    PyMem_Free(in);
}

void
gl_stream_init_free(struct gl_transports *t)
{
    if (t->init != NULL) {
        init_free(t->init);
        t->init = NULL;
    }
}

/* ---- the constructor --------------------------------------------------- */

/* The constructor's arguments, asyncio's names and defaults. */
struct init_args {
    PyObject *loop, *sock, *protocol, *waiter, *extra, *server, *context;
};

static int
parse_args(PyObject *args, PyObject *kwds, struct init_args *a)
{
    static char *kwlist[] = {"loop", "sock", "protocol", "waiter", "extra", "server",
#if PY_3_15
                             "context",
#endif
                             NULL};
    a->waiter = a->extra = a->server = a->context = Py_None;
    return PyArg_ParseTupleAndKeywords(args, kwds,
#if PY_3_15
                                       "OOO|OOOO:SocketTransport",
#else
                                       "OOO|OOO:SocketTransport",
#endif
                                       kwlist, &a->loop, &a->sock, &a->protocol, &a->waiter,
                                       &a->extra, &a->server, &a->context);
}

static int
set(struct gl_tr_init *in, PyObject *self, int name, PyObject *value)
{
    return PyObject_SetAttr(self, in->name[name], value);
}

/* set(), stealing value (NULL: an error already raised). */
static int
set_new(struct gl_tr_init *in, PyObject *self, int name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int r = set(in, self, name, value);
    Py_DECREF(value);
    return r;
}

/* Is module.name still what it was at set-up? 1, 0, or -1. */
static int
unpatched(PyObject *module, PyObject *name, PyObject *seen)
{
    PyObject *now = PyObject_GetAttr(module, name);
    if (now == NULL)
        return -1;
    Py_DECREF(now);
    return now == seen;
}

/* extra[key] = sock.method(), or None when it raises OSError. */
static int
set_address(struct gl_tr_init *in, PyObject *extra, int key, PyObject *sock, int method)
{
    PyObject *addr = PyObject_CallMethodNoArgs(sock, in->name[method]);
    if (addr == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_OSError))
            return -1;
        PyErr_Clear();
        addr = Py_NewRef(Py_None);
    }
    int r = PyObject_SetItem(extra, in->name[key], addr);
    Py_DECREF(addr);
    return r;
}

/* An int attribute of the socket object, read by _socket.socket's getter. */
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

/* base_events._set_nodelay(sock) for a plain socket.socket: TCP_NODELAY on
 * a TCP socket of family AF_INET or AF_INET6 with protocol IPPROTO_TCP. */
static int
set_nodelay(struct gl_tr_init *in, PyObject *sock, int fd)
{
    long family = socket_int(in->family, sock);
    long type = family < 0 ? -1 : socket_int(in->type, sock);
    long proto = type < 0 ? -1 : socket_int(in->proto, sock);
    if (PyErr_Occurred())
        return -1;
    if (!((family == AF_INET || family == AF_INET6) && type == SOCK_STREAM
          && proto == IPPROTO_TCP))
        return 0;
    int on = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* self.<method> bound, passed to loop.call_soon with args (3.15: in the
 * transport's context, as its _call_soon does). */
static int
call_soon(struct gl_tr_init *in, PyObject *loop, PyObject *context,
          PyObject *callback, PyObject *arg1, PyObject *arg2)
{
    if (callback == NULL)
        return -1;
    PyObject *argv[5] = {loop, callback, arg1, arg2, context};
    size_t n = 2 + (arg1 != NULL) + (arg2 != NULL);
#if PY_3_15
    argv[n] = context;
    PyObject *r = PyObject_VectorcallMethod(in->name[N_CALL_SOON], argv,
                                            n | PY_VECTORCALL_ARGUMENTS_OFFSET, in->kw_context);
#else
    (void)context;
    PyObject *r = PyObject_VectorcallMethod(in->name[N_CALL_SOON], argv,
                                            n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
#endif
    Py_DECREF(callback);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* _SelectorSocketTransport.set_protocol(protocol), for SocketTransport,
 * which does not override it. */
static int
set_protocol(struct gl_tr_init *in, PyObject *self, PyObject *protocol)
{
    int buffered = PyObject_IsInstance(protocol, in->buffered_protocol);
    if (buffered < 0)
        return -1;
    if (set_new(in, self, N_READ_READY_CB,
                PyObject_GetAttr(self, in->name[buffered ? N_READ_GET_BUFFER : N_READ_DATA])) < 0
            || set(in, self, N_PROTOCOL, protocol) < 0)
        return -1;
    return set(in, self, N_PROTOCOL_CONNECTED, Py_True);
}

/* The four __init__s of asyncio's _SelectorTransport chain, in order. */
static int
init_selector_transport(struct gl_tr_init *in, PyObject *self, struct init_args *a)
{
    /* BaseTransport: extra, or a new dict */
    PyObject *extra = a->extra == Py_None ? PyDict_New() : Py_NewRef(a->extra);
    if (extra == NULL)
        return -1;
    int rc = -1;
    PyObject *zero = NULL;
    if (set(in, self, N_EXTRA, extra) < 0
            /* _FlowControlMixin, with _set_write_buffer_limits()'s defaults */
            || set(in, self, N_LOOP, a->loop) < 0
            || set(in, self, N_PROTOCOL_PAUSED, Py_False) < 0
            || set_new(in, self, N_HIGH_WATER, PyLong_FromLong(64 * 1024)) < 0
            || set_new(in, self, N_LOW_WATER, PyLong_FromLong(16 * 1024)) < 0)
        goto done;
    /* _SelectorTransport */
    PyObject *trsock = PyObject_CallOneArg(in->transport_socket, a->sock);
    if (trsock == NULL)
        goto done;
    int r = PyObject_SetItem(extra, in->name[N_SOCKET], trsock);
    Py_DECREF(trsock);
    if (r < 0 || set_address(in, extra, N_SOCKNAME, a->sock, N_GETSOCKNAME) < 0)
        goto done;
    int has_peer = PySequence_Contains(extra, in->name[N_PEERNAME]);
    if (has_peer < 0
            || (!has_peer && set_address(in, extra, N_PEERNAME, a->sock, N_GETPEERNAME) < 0)
            || set(in, self, N_SOCK, a->sock) < 0
            || set_new(in, self, N_SOCK_FD, PyObject_CallMethodNoArgs(a->sock,
                                                                     in->name[N_FILENO])) < 0
#if PY_3_15
            || set(in, self, N_CONTEXT_ATTR, a->context) < 0
#endif
            || set(in, self, N_PROTOCOL_CONNECTED, Py_False) < 0
            || set_protocol(in, self, a->protocol) < 0
            || set(in, self, N_SERVER, a->server) < 0
            || set_new(in, self, N_BUFFER, PyObject_CallNoArgs(in->buffer_factory)) < 0
            || (zero = PyLong_FromLong(0)) == NULL
#if PY_3_15
            || set(in, self, N_BUFFER_SIZE, zero) < 0
#endif
            || set(in, self, N_CONN_LOST, zero) < 0
            || set(in, self, N_CLOSING, Py_False) < 0
            || set(in, self, N_PAUSED, Py_False) < 0)
        goto done;
    if (a->server != Py_None) {
#if PY_3_13
        PyObject *ok = PyObject_CallMethodOneArg(a->server, in->name[N_ATTACH], self);
#else
        PyObject *ok = PyObject_CallMethodNoArgs(a->server, in->name[N_ATTACH]);
#endif
        if (ok == NULL)
            goto done;
        Py_DECREF(ok);
    }
    PyObject *table = PyObject_GetAttr(a->loop, in->name[N_TRANSPORTS]);
    PyObject *fd = table ? PyObject_GetAttr(self, in->name[N_SOCK_FD]) : NULL;
    r = fd ? PyObject_SetItem(table, fd, self) : -1;
    Py_XDECREF(fd);
    Py_XDECREF(table);
    rc = r;
done:
    Py_XDECREF(zero);
    Py_DECREF(extra);
    return rc;
}

/* The rest of _SelectorSocketTransport.__init__: state, TCP_NODELAY, and
 * the callbacks that make the connection and start reading. */
static int
init_socket_transport(struct gl_tr_init *in, PyObject *self, struct init_args *a)
{
    if (set(in, self, N_EOF, Py_False) < 0 || set(in, self, N_EMPTY_WAITER, Py_None) < 0)
        return -1;
#if PY_3_12
    if (set_new(in, self, N_WRITE_READY, PyObject_GetAttr(self, in->name[N_WRITE_METHOD])) < 0)
        return -1;
#endif
    PyObject *fd_obj = PyObject_GetAttr(self, in->name[N_SOCK_FD]);
    if (fd_obj == NULL)
        return -1;
    long fd = PyLong_AsLong(fd_obj);
    int rc = -1;
    if (fd == -1 && PyErr_Occurred())
        goto done;
    /* a closed socket's -1: setsockopt() fails as the socket's would */
    if (set_nodelay(in, a->sock, fd < 0 || fd > INT_MAX ? -1 : (int)fd) < 0)
        goto done;
    PyObject *protocol = PyObject_GetAttr(self, in->name[N_PROTOCOL]);
    if (protocol == NULL)
        goto done;
    int r = call_soon(in, a->loop, a->context,
                      PyObject_GetAttr(protocol, in->name[N_CONNECTION_MADE]), self, NULL);
    Py_DECREF(protocol);
    if (r < 0)
        goto done;
    PyObject *read_ready = PyObject_GetAttr(self, in->name[N_READ_READY]);
    if (read_ready == NULL)
        goto done;
    r = call_soon(in, a->loop, a->context, PyObject_GetAttr(self, in->name[N_ADD_READER]),
                  fd_obj, read_ready);
    Py_DECREF(read_ready);
    if (r < 0)
        goto done;
    if (a->waiter != Py_None
            && call_soon(in, a->loop, a->context,
                         PyObject_GetAttr(in->futures, in->name[N_SET_RESULT]),
                         a->waiter, Py_None) < 0)
        goto done;
    rc = 0;
done:
    Py_DECREF(fd_obj);
    return rc;
}

/* Can the native constructor stand in for asyncio's?  1, 0, or -1. */
static int
native_fits(struct gl_tr_init *in, struct init_args *a)
{
    if (!Py_IS_TYPE(a->sock, (PyTypeObject *)in->socket_type))
        return 0;
    int r = unpatched(in->base_events, in->name[N_SET_NODELAY], in->set_nodelay);
    if (r <= 0)
        return r;
    return unpatched(in->trsock, in->name[N_TRANSPORT_SOCKET], in->transport_socket);
}

int
gl_socket_transport_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(self), gl_module_def());  /* borrowed */
    if (module == NULL)
        return -1;
    gl_module_state *st = PyModule_GetState(module);
    /* (a TypeError unless self is goloop's SocketTransport) */
    struct gl_transports *t = gl_tr_state(st->socket_transport_type, self, GL_TR_STREAM);
    if (t == NULL)
        return -1;
    struct gl_tr_init *in = t->init;
    /* asyncio's class attribute _sock = None, which the slot hides, is what
     * its __del__ reads of a transport whose __init__ failed early. */
    if (set(in, self, N_SOCK, Py_None) < 0)
        return -1;
    struct init_args a;
    int fits = parse_args(args, kwds, &a);
    if (fits)
        fits = native_fits(in, &a);
    else
        PyErr_Clear();    /* asyncio's __init__ raises its own TypeError */
    if (fits < 0)
        return -1;
    if (!fits) {
        PyObject *bound = PyMethod_New(in->stock_init, self);
        PyObject *r = bound ? PyObject_Call(bound, args, kwds) : NULL;
        Py_XDECREF(bound);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    if (set(in, self, N_READ_READY_CB, Py_None) < 0
            || init_selector_transport(in, self, &a) < 0)
        return -1;
    return init_socket_transport(in, self, &a);
}

#endif
