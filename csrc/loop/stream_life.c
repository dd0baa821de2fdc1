/*
 * stream_life.c — a socket transport's construction and closing, in C.
 *
 * SocketTransportCore's tp_init is what SocketTransport(loop, sock,
 * protocol, waiter, extra, server[, context]) runs: asyncio's
 * _SelectorSocketTransport.__init__, with the four __init__s it chains
 * (_SelectorTransport, _FlowControlMixin, BaseTransport and the write
 * buffer limits) done as one, statement by statement, in asyncio's order.
 * Its close() and _call_connection_lost() are asyncio's pairs of methods
 * (_SelectorSocketTransport's around _SelectorTransport's) done the same
 * way, try/finally blocks included, and a read that finds EOF ends in
 * asyncio's _read_ready__on_eof done here.  The running version's
 * differences:
 *
 *   3.11     the write buffer is _buffer_factory() (a bytearray);
 *            server._attach() and _detach() take no argument; no
 *            _write_ready to bind; close() is _SelectorTransport's alone
 *   3.12     a deque, _write_ready bound to _write_sendmsg or _write_send;
 *            close() drops _read_ready_cb and _write_ready
 *   3.13     server._attach(transport), _detach(transport)
 *   3.14     close() drops _read_ready_cb only; _call_connection_lost
 *            drops both, in a finally block with the empty waiter's error
 *   3.15     the transport's context (its callbacks run in it) and
 *            _buffer_size
 *
 * Why: a server makes and closes one per connection, and asyncio's chains
 * cost a dozen and a half Python frames, two of them enum conversions of
 * the socket's family and type for _set_nodelay's test — the largest part
 * of what goloop spent on a short connection beyond uvloop.  Here the test
 * reads the socket's integers.
 *
 * What asyncio's __init__ looks up when it runs — base_events._set_nodelay,
 * trsock.TransportSocket, futures._set_result_unless_cancelled — is looked
 * up here when it runs too, so a patched one is honoured: when
 * _set_nodelay or TransportSocket is not the one seen at set-up, or the
 * socket is not a plain socket.socket (a subclass may define family or
 * fileno its own way), or the arguments are not the usual ones, asyncio's
 * own __init__ runs instead (and its close or _call_connection_lost for
 * arguments they would refuse).  Attributes are read and written by name,
 * as asyncio's code does, slots or not.  tests/transports/
 * test_transport_life.py compares both ways on every attribute, callback
 * scheduled, exception and its context.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define PY_3_12 (PY_VERSION_HEX >= 0x030C0000)
#define PY_3_13 (PY_VERSION_HEX >= 0x030D0000)
#define PY_3_15 (PY_VERSION_HEX >= 0x030F0000)

#if PY_3_13
#define get_optional_attr PyObject_GetOptionalAttr
#else
#define get_optional_attr _PyObject_LookupAttr
#endif

/* The attribute and method names construction and closing use (N_ADD_READER
 * names both the transport's method and the loop's). */
enum {
    N_SOCK, N_READ_READY_CB, N_EXTRA, N_LOOP, N_PROTOCOL_PAUSED, N_HIGH_WATER,
    N_LOW_WATER, N_SOCKET, N_SOCKNAME, N_PEERNAME, N_GETSOCKNAME, N_GETPEERNAME,
    N_SOCK_FD, N_FILENO, N_CONTEXT_ATTR, N_PROTOCOL_CONNECTED, N_PROTOCOL,
    N_READ_GET_BUFFER, N_READ_DATA, N_SERVER, N_BUFFER, N_BUFFER_SIZE, N_CONN_LOST,
    N_CLOSING, N_PAUSED, N_ATTACH, N_TRANSPORTS, N_EOF, N_EMPTY_WAITER, N_WRITE_READY,
    N_WRITE_METHOD, N_CALL_SOON, N_CONNECTION_MADE, N_ADD_READER, N_READ_READY,
    N_SET_RESULT, N_SET_NODELAY, N_TRANSPORT_SOCKET, N_CONTEXT,
    N_REMOVE_READER, N_REMOVE_WRITER, N_CALL_CONNECTION_LOST, N_CONNECTION_LOST, N_CLOSE,
    N_DETACH, N_EOF_RECEIVED, N_GET_DEBUG, N_SET_EXCEPTION, N_PENDING_REMOVALS,
    N_COMMIT_REMOVALS, N_DATA, N_REMOVE, N_KEY, N_COUNT
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
    "_remove_reader", "_remove_writer", "_call_connection_lost", "connection_lost", "close",
    "_detach", "eof_received", "get_debug", "set_exception", "_pending_removals",
    "_commit_removals", "data", "_remove", "key",
};

struct gl_tr_life {
    PyObject *stock_init;          /* _SelectorSocketTransport.__init__, */
    PyObject *stock_close;         /* .close, */
    PyObject *stock_lost;          /* ._call_connection_lost, */
    PyObject *stock_on_eof;        /* ._read_ready__on_eof */
    PyObject *base_events, *trsock, *futures;   /* asyncio's modules */
    PyObject *set_nodelay;         /* base_events._set_nodelay, at set-up */
    PyObject *transport_socket;    /* trsock.TransportSocket, at set-up */
    PyObject *buffered_protocol;   /* protocols.BufferedProtocol */
    PyObject *buffer_factory;      /* what makes the write buffer */
    PyObject *kw_context;          /* ("context",) */
    PyObject *weak_value_dict;     /* weakref.WeakValueDictionary */
    PyObject *keyed_ref;           /* weakref.KeyedRef */
    PyObject *name[N_COUNT];
    Py_ssize_t off[N_COUNT];       /* the byte offset of the SocketTransport
                                      slot of that name, or -1 (no slot) */
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

static void
find_slots(struct gl_tr_life *in, PyTypeObject *type)
{
    for (int i = 0; i < N_COUNT; i++) {
        const char *name = PyUnicode_AsUTF8(in->name[i]);
        if (name == NULL || gl_slot_offset(type, name, &in->off[i]) < 0) {
            PyErr_Clear();      /* a method, or an attribute in the dict */
            in->off[i] = -1;
        }
    }
}

static int
setup_fill(struct gl_tr_life *in, PyObject *stock_class, PyTypeObject *type)
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
            || (in->stock_close = PyObject_GetAttrString(stock_class, "close")) == NULL
            || (in->stock_lost = PyObject_GetAttrString(stock_class, "_call_connection_lost")) == NULL
            || (in->stock_on_eof = PyObject_GetAttrString(stock_class, "_read_ready__on_eof")) == NULL
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
            || (in->kw_context = PyTuple_Pack(1, in->name[N_CONTEXT])) == NULL
            || import_attr(&in->weak_value_dict, "weakref", "WeakValueDictionary") < 0
            || import_attr(&in->keyed_ref, "weakref", "KeyedRef") < 0)
        return -1;
    if (!PyType_Check(in->keyed_ref)
            || !PyType_IsSubtype((PyTypeObject *)in->keyed_ref, &_PyWeakref_RefType)) {
        PyErr_SetString(PyExc_TypeError, "weakref.KeyedRef is not a weakref.ref type");
        return -1;
    }
    find_slots(in, type);
    return 0;
}

static void init_free(struct gl_tr_life *in);

int
gl_stream_life_setup(struct gl_transports *t, PyObject *stock_class)
{
    struct gl_tr_life *in = PyMem_Calloc(1, sizeof *in);
    if (in == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (setup_fill(in, stock_class, t->type[GL_TR_STREAM]) < 0) {
        init_free(in);
        return -1;
    }
    gl_stream_life_free(t);    /* set up again: the new classes' */
    t->life = in;
    return 0;
}

#define LIFE_REFS(in) { \
    &(in)->stock_init, &(in)->stock_close, &(in)->stock_lost, &(in)->stock_on_eof, \
    &(in)->base_events, &(in)->trsock, &(in)->futures, \
    &(in)->set_nodelay, &(in)->transport_socket, &(in)->buffered_protocol, \
    &(in)->buffer_factory, &(in)->kw_context, &(in)->weak_value_dict, &(in)->keyed_ref }

int
gl_stream_life_traverse(struct gl_transports *t, visitproc visit, void *arg)
{
    struct gl_tr_life *in = t->life;
    if (in == NULL)
        return 0;
    PyObject **refs[] = LIFE_REFS(in);
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        Py_VISIT(*refs[i]);
    return 0;
}

static void
init_free(struct gl_tr_life *in)
{
    PyObject **refs[] = LIFE_REFS(in);
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        Py_CLEAR(*refs[i]);
    for (int i = 0; i < N_COUNT; i++)
        Py_CLEAR(in->name[i]);
    PyMem_Free(in);
}

void
gl_stream_life_free(struct gl_transports *t)
{
    if (t->life != NULL) {
        init_free(t->life);
        t->life = NULL;
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
set(struct gl_tr_life *in, PyObject *self, int name, PyObject *value)
{
    Py_ssize_t off = in->off[name];
    if (off < 0)
        return PyObject_SetAttr(self, in->name[name], value);
    Py_XSETREF(GL_SLOT(self, off), Py_NewRef(value));
    return 0;
}

/* self.<name>: a new reference, or NULL with an exception. */
static PyObject *
get(struct gl_tr_life *in, PyObject *self, int name)
{
    Py_ssize_t off = in->off[name];
    if (off < 0)
        return PyObject_GetAttr(self, in->name[name]);
    PyObject *v = GL_SLOT(self, off);
    if (v == NULL)
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%U'",
                     Py_TYPE(self)->tp_name, in->name[name]);
    return Py_XNewRef(v);
}

/* set(), stealing value (NULL: an error already raised). */
static int
set_new(struct gl_tr_life *in, PyObject *self, int name, PyObject *value)
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
set_address(struct gl_tr_life *in, PyObject *extra, int key, PyObject *sock, int method)
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

/* base_events._set_nodelay(sock) for a plain socket.socket: TCP_NODELAY on
 * a TCP socket of family AF_INET or AF_INET6 with protocol IPPROTO_TCP. */
static int
set_nodelay(struct gl_transports *t, PyObject *sock, int fd)
{
    long family, type, proto;
    if (gl_tr_socket_ints(t, sock, &family, &type, &proto) < 0)
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
call_soon(struct gl_tr_life *in, PyObject *loop, PyObject *context,
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
set_protocol(struct gl_tr_life *in, PyObject *self, PyObject *protocol)
{
    int buffered = PyObject_IsInstance(protocol, in->buffered_protocol);
    if (buffered < 0)
        return -1;
    if (set_new(in, self, N_READ_READY_CB,
                get(in, self, buffered ? N_READ_GET_BUFFER : N_READ_DATA)) < 0
            || set(in, self, N_PROTOCOL, protocol) < 0)
        return -1;
    return set(in, self, N_PROTOCOL_CONNECTED, Py_True);
}

/* loop._transports[fd] = self.  The table is a WeakValueDictionary, whose
 * __setitem__ makes a KeyedRef (three Python frames per connection);
 * here the same entry is made in C: pending removals committed first
 * (before 3.14), then data[fd] = a KeyedRef to self with the table's
 * _remove callback and key fd (KeyedRef.__init__ only checks its
 * arguments).  Another kind of table gets its own __setitem__. */
static int
register_transport(struct gl_tr_life *in, PyObject *table, PyObject *fd, PyObject *self)
{
    if (!Py_IS_TYPE(table, (PyTypeObject *)in->weak_value_dict))
        return PyObject_SetItem(table, fd, self);
    PyObject *pending;
    if (get_optional_attr(table, in->name[N_PENDING_REMOVALS], &pending) < 0)
        return -1;
    int commit = pending == NULL ? 0 : PyObject_IsTrue(pending);
    Py_XDECREF(pending);
    if (commit < 0)
        return -1;
    if (commit) {
        PyObject *ok = PyObject_CallMethodNoArgs(table, in->name[N_COMMIT_REMOVALS]);
        if (ok == NULL)
            return -1;
        Py_DECREF(ok);
    }
    PyObject *remove = PyObject_GetAttr(table, in->name[N_REMOVE]);
    PyObject *args = remove ? PyTuple_Pack(2, self, remove) : NULL;
    Py_XDECREF(remove);
    if (args == NULL)
        return -1;
    PyTypeObject *keyed = (PyTypeObject *)in->keyed_ref;
    PyObject *ref = _PyWeakref_RefType.tp_new(keyed, args, NULL);
    Py_DECREF(args);
    PyObject *data = ref ? PyObject_GetAttr(table, in->name[N_DATA]) : NULL;
    int r = data == NULL || PyObject_SetAttr(ref, in->name[N_KEY], fd) < 0 ? -1
            : PyObject_SetItem(data, fd, ref);
    Py_XDECREF(data);
    Py_XDECREF(ref);
    return r;
}

/* The four __init__s of asyncio's _SelectorTransport chain, in order. */
static int
init_selector_transport(struct gl_tr_life *in, PyObject *self, struct init_args *a)
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
    PyObject *fd = table ? get(in, self, N_SOCK_FD) : NULL;
    r = fd ? register_transport(in, table, fd, self) : -1;
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
init_socket_transport(struct gl_transports *t, PyObject *self, struct init_args *a)
{
    struct gl_tr_life *in = t->life;
    if (set(in, self, N_EOF, Py_False) < 0 || set(in, self, N_EMPTY_WAITER, Py_None) < 0)
        return -1;
#if PY_3_12
    if (set_new(in, self, N_WRITE_READY, get(in, self, N_WRITE_METHOD)) < 0)
        return -1;
#endif
    PyObject *fd_obj = get(in, self, N_SOCK_FD);
    if (fd_obj == NULL)
        return -1;
    long fd = PyLong_AsLong(fd_obj);
    int rc = -1;
    if (fd == -1 && PyErr_Occurred())
        goto done;
    /* a closed socket's -1: setsockopt() fails as the socket's would */
    if (set_nodelay(t, a->sock, fd < 0 || fd > INT_MAX ? -1 : (int)fd) < 0)
        goto done;
    PyObject *protocol = get(in, self, N_PROTOCOL);
    if (protocol == NULL)
        goto done;
    int r = call_soon(in, a->loop, a->context,
                      PyObject_GetAttr(protocol, in->name[N_CONNECTION_MADE]), self, NULL);
    Py_DECREF(protocol);
    if (r < 0)
        goto done;
    PyObject *read_ready = get(in, self, N_READ_READY);
    if (read_ready == NULL)
        goto done;
    r = call_soon(in, a->loop, a->context, get(in, self, N_ADD_READER),
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
native_fits(struct gl_transports *t, struct gl_tr_life *in, struct init_args *a)
{
    if (!Py_IS_TYPE(a->sock, (PyTypeObject *)t->socket_type))
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
    struct gl_tr_life *in = t->life;
    /* asyncio's class attribute _sock = None, which the slot hides, is what
     * its __del__ reads of a transport whose __init__ failed early. */
    if (set(in, self, N_SOCK, Py_None) < 0)
        return -1;
    struct init_args a;
    int fits = parse_args(args, kwds, &a);
    if (fits)
        fits = native_fits(t, in, &a);
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
    return init_socket_transport(t, self, &a);
}

/* ---- closing ---------------------------------------------------------- */

/* self.<name>.<method>(arg): 0, or -1. */
static int
call_on_attr(struct gl_tr_life *in, PyObject *self, int name, int method, PyObject *arg)
{
    PyObject *obj = get(in, self, name);
    if (obj == NULL)
        return -1;
    PyObject *r = arg == NULL ? PyObject_CallMethodNoArgs(obj, in->name[method])
                              : PyObject_CallMethodOneArg(obj, in->name[method], arg);
    Py_DECREF(obj);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* self._loop.<method>(self._sock_fd) */
static int
loop_fd_call(struct gl_tr_life *in, PyObject *self, int method)
{
    PyObject *fd = get(in, self, N_SOCK_FD);
    if (fd == NULL)
        return -1;
    int r = call_on_attr(in, self, N_LOOP, method, fd);
    Py_DECREF(fd);
    return r;
}

/* bool(self.<name>): 1, 0, or -1 */
static int
attr_true(struct gl_tr_life *in, PyObject *self, int name)
{
    PyObject *v = get(in, self, name);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* The state for a closing method of SocketTransportCore called on self
 * (NULL with a TypeError unless self is a SocketTransport); *stock: the
 * arguments are not the `want` positional ones asyncio's method takes, so
 * asyncio's method takes the call (and raises its TypeError). */
static struct gl_tr_life *
life_state(PyTypeObject *cls, PyObject *self, Py_ssize_t nargs, PyObject *kwnames,
           Py_ssize_t want, int *stock)
{
    struct gl_transports *t = gl_tr_state(cls, self, GL_TR_STREAM);
    if (t == NULL)
        return NULL;
    *stock = nargs != want || kwnames != NULL;
    return t->life;
}

/* close(): asyncio's (_SelectorSocketTransport.close, then
 * _SelectorTransport.close) — stop reading; with nothing left to write,
 * connection_lost at the next iteration, else when the buffer drains. */
PyObject *
gl_stream_close(PyObject *self, PyTypeObject *cls, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    int stock;
    struct gl_tr_life *in = life_state(cls, self, nargs, kwnames, 0, &stock);
    if (in == NULL)
        return NULL;
    if (stock)
        return gl_tr_call_stock(in->stock_close, self, args, nargs, kwnames);
#if PY_3_12
    if (set(in, self, N_READ_READY_CB, Py_None) < 0)
        return NULL;
#endif
#if PY_3_12 && PY_VERSION_HEX < 0x030E0000
    if (set(in, self, N_WRITE_READY, Py_None) < 0)
        return NULL;
#endif
    int closing = attr_true(in, self, N_CLOSING);
    if (closing != 0)
        return closing < 0 ? NULL : Py_NewRef(Py_None);
    if (set(in, self, N_CLOSING, Py_True) < 0 || loop_fd_call(in, self, N_REMOVE_READER) < 0)
        return NULL;
    int pending = attr_true(in, self, N_BUFFER);
    if (pending != 0)
        return pending < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *lost = get(in, self, N_CONN_LOST);
    PyObject *one = lost ? PyLong_FromLong(1) : NULL;
    PyObject *more = one ? PyNumber_Add(lost, one) : NULL;
    Py_XDECREF(lost);
    Py_XDECREF(one);
    if (set_new(in, self, N_CONN_LOST, more) < 0 || loop_fd_call(in, self, N_REMOVE_WRITER) < 0)
        return NULL;
    PyObject *loop = get(in, self, N_LOOP);
    if (loop == NULL)
        return NULL;
#if PY_3_15
    PyObject *context = get(in, self, N_CONTEXT_ATTR);
#else
    PyObject *context = Py_NewRef(Py_None);
#endif
    int r = context == NULL ? -1
            : call_soon(in, loop, context,
                        get(in, self, N_CALL_CONNECTION_LOST), Py_None, NULL);
    Py_XDECREF(context);
    Py_DECREF(loop);
    return r < 0 ? NULL : Py_NewRef(Py_None);
}

/* An exception raised in a finally block while *pending propagates: it
 * replaces it, with the pending one as its __context__, as in Python. */
static void
raised_in_finally(PyObject **pending)
{
    PyObject *exc = gl_err_take();
    if (*pending != NULL)
        PyException_SetContext(exc, *pending);   /* steals */
    *pending = exc;
}

/* The finally block of _SelectorTransport._call_connection_lost: close
 * the socket, drop the references, leave the server. */
static int
release_connection(struct gl_tr_life *in, PyObject *self)
{
    if (call_on_attr(in, self, N_SOCK, N_CLOSE, NULL) < 0
            || set(in, self, N_SOCK, Py_None) < 0
            || set(in, self, N_PROTOCOL, Py_None) < 0
            || set(in, self, N_LOOP, Py_None) < 0)
        return -1;
    PyObject *server = get(in, self, N_SERVER);
    if (server == NULL)
        return -1;
    int r = 0;
    if (server != Py_None) {
#if PY_3_13
        PyObject *ok = PyObject_CallMethodOneArg(server, in->name[N_DETACH], self);
#else
        PyObject *ok = PyObject_CallMethodNoArgs(server, in->name[N_DETACH]);
#endif
        Py_XDECREF(ok);
        r = ok == NULL ? -1 : set(in, self, N_SERVER, Py_None);
    }
    Py_DECREF(server);
    return r;
}

/* _SelectorSocketTransport's part: a sendfile waiting for the buffer to
 * drain learns that it never will. */
static int
fail_empty_waiter(struct gl_tr_life *in, PyObject *self)
{
    PyObject *waiter = get(in, self, N_EMPTY_WAITER);
    if (waiter == NULL)
        return -1;
    int r = 0;
    if (waiter != Py_None) {
        PyObject *exc = PyObject_CallFunction(PyExc_ConnectionError, "s",
                                              "Connection is closed by peer");
        PyObject *ok = exc ? PyObject_CallMethodOneArg(waiter, in->name[N_SET_EXCEPTION], exc)
                           : NULL;
        Py_XDECREF(exc);
        Py_XDECREF(ok);
        r = ok == NULL ? -1 : 0;
    }
    Py_DECREF(waiter);
    return r;
}

/* _call_connection_lost(exc): asyncio's, _SelectorSocketTransport's around
 * _SelectorTransport's, with their try/finally blocks. */
PyObject *
gl_stream_call_connection_lost(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames)
{
    int stock;
    struct gl_tr_life *in = life_state(cls, self, nargs, kwnames, 1, &stock);
    if (in == NULL)
        return NULL;
    if (stock)
        return gl_tr_call_stock(in->stock_lost, self, args, nargs, kwnames);
    PyObject *pending = NULL;    /* the exception propagating, if any */
    int connected = attr_true(in, self, N_PROTOCOL_CONNECTED);
    if (connected < 0 || (connected && call_on_attr(in, self, N_PROTOCOL, N_CONNECTION_LOST,
                                                    args[0]) < 0))
        raised_in_finally(&pending);
    if (release_connection(in, self) < 0)
        raised_in_finally(&pending);
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14+: in a finally block of its own */
    if (set(in, self, N_WRITE_READY, Py_None) < 0 || set(in, self, N_READ_READY_CB, Py_None) < 0
            || fail_empty_waiter(in, self) < 0)
        raised_in_finally(&pending);
#else
    if (pending == NULL && fail_empty_waiter(in, self) < 0)
        raised_in_finally(&pending);
#endif
    if (pending != NULL) {
        gl_err_give(pending);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _read_ready__on_eof(): the peer closed its end — eof_received() says
 * whether to keep the transport open for writing (stop reading) or to
 * close it.  In debug mode asyncio's own method, which logs the EOF. */
PyObject *
gl_stream_on_eof(struct gl_transports *t, PyObject *self)
{
    struct gl_tr_life *in = t->life;
    PyObject *loop = get(in, self, N_LOOP);
    PyObject *debug = loop ? PyObject_CallMethodNoArgs(loop, in->name[N_GET_DEBUG]) : NULL;
    Py_XDECREF(loop);
    int on = debug ? PyObject_IsTrue(debug) : -1;
    Py_XDECREF(debug);
    if (on != 0)
        return on < 0 ? NULL : gl_tr_call_stock(in->stock_on_eof, self, NULL, 0, NULL);
    PyObject *protocol = get(in, self, N_PROTOCOL);
    PyObject *keep_open = protocol ? PyObject_CallMethodNoArgs(protocol, in->name[N_EOF_RECEIVED])
                                   : NULL;
    Py_XDECREF(protocol);
    if (keep_open == NULL)
        return gl_tr_failed(t, self, t->msg_eof_received);
    int keep = PyObject_IsTrue(keep_open);
    Py_DECREF(keep_open);
    if (keep < 0)
        return NULL;
    if (keep)
        return loop_fd_call(in, self, N_REMOVE_READER) < 0 ? NULL : Py_NewRef(Py_None);
    return PyObject_CallMethodNoArgs(self, in->name[N_CLOSE]);
}

/* _add_reader(fd, callback, *args): asyncio's _SelectorTransport._add_reader
 * — the loop watches fd for the transport unless it is closing or paused
 * (its is_reading(), which SocketTransport does not override); 3.15: in
 * the transport's context.  What the constructor schedules to start
 * reading, and what resume_reading() calls. */
PyObject *
gl_stream_add_reader(PyObject *self, PyTypeObject *cls, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    struct gl_transports *t = gl_tr_state(cls, self, GL_TR_STREAM);
    if (t == NULL)
        return NULL;
    struct gl_tr_life *in = t->life;
    if (nargs < 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "_add_reader() takes fd, callback and its arguments");
        return NULL;
    }
    int closing = attr_true(in, self, N_CLOSING);
    int paused = closing != 0 ? closing : attr_true(in, self, N_PAUSED);
    if (paused != 0)
        return paused < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *loop = get(in, self, N_LOOP);
    if (loop == NULL)
        return NULL;
    /* loop._add_reader(*args[, context=self._context]) */
    PyObject *small[8];
    size_t n = (size_t)nargs + 1;
    PyObject **argv = n + 1 <= 8 ? small : PyMem_Malloc((n + 1) * sizeof *argv);
    if (argv == NULL) {
        Py_DECREF(loop);
        return PyErr_NoMemory();
    }
    argv[0] = loop;
    for (Py_ssize_t i = 0; i < nargs; i++)
        argv[1 + i] = args[i];
    PyObject *r = NULL;
#if PY_3_15
    PyObject *context = get(in, self, N_CONTEXT_ATTR);
    if (context != NULL) {
        argv[n] = context;
        r = PyObject_VectorcallMethod(in->name[N_ADD_READER], argv, n, in->kw_context);
        Py_DECREF(context);
    }
#else
    r = PyObject_VectorcallMethod(in->name[N_ADD_READER], argv, n, NULL);
#endif
    if (argv != small)
        PyMem_Free(argv);
    Py_DECREF(loop);
    return r;
}

#endif
