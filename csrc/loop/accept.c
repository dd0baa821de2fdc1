/*
 * accept.c — a plain server's accept loop, in C.
 *
 * goloop's EventLoop._accept_connection (goloop/_transports.py) runs when a
 * listening socket is readable.  For a plain TCP or Unix server outside
 * debug mode it calls _accept_connections() here, which does for each
 * connection what asyncio's accept loop and its per-connection task would,
 * at once:
 *
 *   1. sock._accept(), up to backlog times (one more on 3.15, which goes on
 *      past a connection aborted before it was accepted);
 *   2. the accepted socket as socket.socket.accept() makes it — a
 *      socket.socket of the listening socket's family, type and protocol
 *      (socket.socket.__init__ done here: _socket.socket's, then its two
 *      attributes) — made non-blocking;
 *   3. in a context of its own (a copy of the current one, or on 3.15 of
 *      the server's when it has one), protocol_factory() and
 *      loop._make_socket_transport(conn, protocol, extra={"peername": addr},
 *      server=server[, context=...]); a failure closes the socket and is
 *      dropped, as asyncio drops it outside debug mode;
 *   4. no accept on a socket the protocol factory closed.
 *
 * accept()'s errors: an empty queue ends the loop; a connection aborted
 * early ends it too (before 3.15) or is skipped; running out of file
 * descriptors or memory returns True, for the caller to hand the
 * readiness to asyncio's own method, which reports it and retries later;
 * any other error is raised, for the loop to log as asyncio's does.
 *
 * A subclass of socket.socket accepts its own way: its accept() is called.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <errno.h>

/* What accept() raised: 0 to stop quietly, 1 to skip the connection, 2 for
 * asyncio's method to handle, -1 to raise. */
static int
accept_failed(void)
{
    if (gl_tr_raised_would_block())
        return 0;
    if (PyErr_ExceptionMatches(PyExc_ConnectionAbortedError)) {
        PyErr_Clear();
        return PY_VERSION_HEX >= 0x030F0000 ? 1 : 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_OSError))
        return -1;
    PyObject *exc = gl_err_take();
    PyObject *errno_obj = PyObject_GetAttrString(exc, "errno");
    long err = errno_obj == NULL || errno_obj == Py_None ? 0 : PyLong_AsLong(errno_obj);
    Py_XDECREF(errno_obj);
    PyErr_Clear();
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        Py_DECREF(exc);
        return 2;
    }
    gl_err_give(exc);
    return -1;
}

/* socket.socket(family, type, proto, fileno=fd) for the listening socket's
 * ints: a new reference, or NULL (the fd is then closed). */
static PyObject *
accepted_socket(struct gl_transports *t, PyObject *listener, PyObject *fd)
{
    long family, type, proto;
    PyTypeObject *cls = (PyTypeObject *)t->socket_type;
    PyObject *conn = NULL, *args = NULL;
    if (gl_tr_socket_ints(t, listener, &family, &type, &proto) == 0)
        args = Py_BuildValue("(lllO)", family, type, proto, fd);
    if (args != NULL)
        conn = cls->tp_new(cls, args, NULL);
    PyObject *zero = conn ? PyLong_FromLong(0) : NULL;
    if (conn != NULL && (zero == NULL || cls->tp_base->tp_init(conn, args, NULL) < 0
                         || PyObject_SetAttr(conn, t->str_io_refs, zero) < 0
                         || PyObject_SetAttr(conn, t->str_closed, Py_False) < 0))
        Py_CLEAR(conn);
    Py_XDECREF(zero);
    Py_XDECREF(args);
    if (conn == NULL) {
        /* nothing owns the fd yet */
        PyObject *exc = gl_err_take();
        long n = PyLong_AsLong(fd);
        if (n >= 0)
            close((int)n);
        PyErr_Clear();
        gl_err_give(exc);
    }
    return conn;
}

/* (conn, addr) for the next connection, as sock.accept() gives them, made
 * non-blocking; NULL with an exception (accept()'s or setblocking()'s). */
static PyObject *
accept_one(struct gl_transports *t, PyObject *sock, PyObject **addr)
{
    PyObject *conn = NULL;
    if (!Py_IS_TYPE(sock, (PyTypeObject *)t->socket_type)) {
        PyObject *pair = PyObject_CallMethodNoArgs(sock, t->str_accept);
        if (pair != NULL && PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
            conn = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
            *addr = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
        }
        else if (pair != NULL)
            PyErr_SetString(PyExc_TypeError, "accept() did not return (socket, address)");
        Py_XDECREF(pair);
    }
    else {
        PyObject *pair = PyObject_CallMethodNoArgs(sock, t->str_accept_fd);
        if (pair != NULL && PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
            conn = accepted_socket(t, sock, PyTuple_GET_ITEM(pair, 0));
            if (conn != NULL)
                *addr = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
        }
        else if (pair != NULL)
            PyErr_SetString(PyExc_TypeError, "_accept() did not return (fd, address)");
        Py_XDECREF(pair);
    }
    if (conn == NULL)
        return NULL;
    PyObject *ok = PyObject_CallMethodOneArg(conn, t->str_setblocking, Py_False);
    if (ok == NULL) {
        Py_CLEAR(*addr);
        Py_CLEAR(conn);
        return NULL;
    }
    Py_DECREF(ok);
    return conn;
}

/* The connection's protocol and transport, in its context. */
static int
serve(struct gl_transports *t, PyObject *loop, PyObject *factory, PyObject *conn, PyObject *addr, PyObject *server,
      PyObject *context)
{
    PyObject *ctx = context == Py_None ? PyContext_CopyCurrent() : PyContext_Copy(context);
    if (ctx == NULL || PyContext_Enter(ctx) < 0) {
        Py_XDECREF(ctx);
        return -1;
    }
    PyObject *protocol = PyObject_CallNoArgs(factory);
    PyObject *extra = protocol ? Py_BuildValue("{sO}", "peername", addr) : NULL;
    PyObject *r = NULL;
    if (extra != NULL) {
        PyObject *argv[6] = {loop, conn, protocol, extra, server, ctx};
        r = PyObject_VectorcallMethod(t->str_make_socket_transport, argv,
                                      3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                      context == Py_None ? t->kw_serve : t->kw_serve_context);
    }
    Py_XDECREF(extra);
    Py_XDECREF(protocol);
    PyObject *exc = r == NULL ? gl_err_take() : NULL;
    Py_XDECREF(r);
    if (PyContext_Exit(ctx) < 0)
        PyErr_Clear();
    Py_DECREF(ctx);
    if (exc == NULL)
        return 0;
    /* asyncio's task drops the failure outside debug mode and leaves the
     * socket to the garbage collector: closed here, without the warning. */
    PyObject *closed = PyObject_CallMethodNoArgs(conn, t->str_close);
    Py_XDECREF(closed);
    PyErr_Clear();
    if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)
            || PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
        gl_err_give(exc);
        return -1;
    }
    Py_DECREF(exc);
    return 0;
}

/* _accept_connections(loop, protocol_factory, sock, server, backlog, context) */
static PyObject *
mod_accept_connections(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gl_module_state *st = PyModule_GetState(module);
    struct gl_transports *t = st->transports;
    if (t == NULL || t->socket_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "goloop's transports are not set up");
        return NULL;
    }
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "_accept_connections() takes loop, protocol_factory, "
                        "sock, server, backlog and context");
        return NULL;
    }
    PyObject *loop = args[0], *factory = args[1], *sock = args[2], *server = args[3];
    PyObject *context = args[5];
    Py_ssize_t accepts = PyNumber_AsSsize_t(args[4], PyExc_OverflowError);
    if (accepts == -1 && PyErr_Occurred())
        return NULL;
    if (PY_VERSION_HEX >= 0x030F0000)
        accepts++;
    for (; accepts > 0; accepts--) {
        PyObject *addr = NULL;
        PyObject *conn = accept_one(t, sock, &addr);
        if (conn == NULL) {
            int what = accept_failed();
            if (what == 1)
                continue;
            if (what < 0)
                return NULL;
            return Py_NewRef(what == 2 ? Py_True : Py_None);
        }
        int r = serve(t, loop, factory, conn, addr, server, context);
        Py_DECREF(conn);
        Py_DECREF(addr);
        if (r < 0)
            return NULL;
        /* The factory closed the server (asyncio's tasks would run it after
         * this loop): no accept() on the closed socket. */
        PyObject *fd = PyObject_CallMethodNoArgs(sock, t->str_fileno);
        if (fd == NULL)
            return NULL;
        long n = PyLong_AsLong(fd);
        Py_DECREF(fd);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 0)
            break;
    }
    Py_RETURN_NONE;
}

PyMethodDef gl_accept_methods[] = {
    {"_accept_connections", (PyCFunction)(void (*)(void))mod_accept_connections, METH_FASTCALL,
     "_accept_connections(loop, protocol_factory, sock, server, backlog, context, /)\n--\n\n"
     "Accept what the listening socket has and make each connection's protocol\n"
     "and transport (csrc/loop/accept.c).  True: running out of resources,\n"
     "for asyncio's own method to handle."},
    {NULL, NULL, 0, NULL}
};

#endif
