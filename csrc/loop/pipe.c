/*
 * pipe.c — the read path of goloop's pipe transport.
 *
 * ReadPipeTransportCore stands in front of asyncio's _UnixReadPipeTransport
 * (transport.c says how) — the transport of connect_read_pipe() and of a
 * subprocess's stdout and stderr — and replaces _read_ready, which asyncio
 * runs per readiness as os.read(fd, max_size): a 256 KiB allocation (mmap,
 * mremap, munmap) for every read.  Here read() fills the module's buffer
 * and the protocol gets an exact-size copy.
 *
 * The rest is asyncio's, as it does it: an exception from data_received()
 * propagates to the loop; an OSError goes to _fatal_error with asyncio's
 * message; the end of the pipe runs the transport's _read_eof() (a method
 * of goloop's class, goloop/_transports.py, doing what asyncio's
 * _read_ready does then).  A transport whose fileno is no longer an int
 * (closed) runs asyncio's own _read_ready, to fail as it fails.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <errno.h>
#include <unistd.h>

static PyObject *
pipe_read_ready(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    struct gl_transports *t = gl_tr_state(cls, self, GL_TR_PIPE);
    if (t == NULL)
        return NULL;
    if (nargs != 0 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "_read_ready() takes no arguments");
        return NULL;
    }
    PyObject *fileno = GL_SLOT(self, t->off_fileno);
    if (fileno == NULL || !PyLong_CheckExact(fileno)) {
        return gl_tr_call_stock(t->stock_pipe_read, self, NULL, 0, NULL);
    }
    int fd = gl_tr_fd(self, t->off_fileno);
    if (fd < 0)
        return NULL;
    Py_ssize_t size = gl_tr_max_size(t, self);
    char *buf = size < 0 ? NULL : gl_tr_buffer(t, (size_t)size);
    if (buf == NULL)
        return NULL;
    ssize_t n = read(fd, buf, (size_t)size);
    if (n < 0) {
        if (gl_tr_would_block(errno))
            Py_RETURN_NONE;
        PyErr_SetFromErrno(PyExc_OSError);
        return gl_tr_fatal(t, self, gl_err_take(), t->msg_pipe_read_error);
    }
    if (n == 0)
        return PyObject_CallMethodNoArgs(self, t->str_read_eof);
    PyObject *data = PyBytes_FromStringAndSize(buf, n);
    if (data == NULL)
        return NULL;
    PyObject *protocol = gl_tr_slot(self, t->off_pipe_protocol, "_protocol");
    PyObject *r = protocol == NULL ? NULL
        : PyObject_CallMethodOneArg(protocol, t->str_data_received, data);
    Py_XDECREF(protocol);
    Py_DECREF(data);
    if (r == NULL)
        return NULL;                 /* propagates, as from asyncio's */
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef pipe_methods[] = {
    {"_read_ready", (PyCFunction)(void (*)(void))pipe_read_ready,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
     "The pipe is readable: give what is there to protocol.data_received()."},
    {NULL, NULL, 0, NULL}
};

static PyType_Slot pipe_slots[] = {
    {Py_tp_doc, "The read path of goloop's pipe transport "
                "(goloop._transports.ReadPipeTransport), in front of asyncio's "
                "_UnixReadPipeTransport."},
    {Py_tp_methods, pipe_methods},
    {0, NULL}
};

/* No fields of its own: it sits beside asyncio's Python class as a base. */
PyType_Spec gl_read_pipe_transport_spec = {
    .name = "goloop._goloop.ReadPipeTransportCore",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = pipe_slots,
};

#endif
