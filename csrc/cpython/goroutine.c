/*
 * goroutine.c — the Goroutine type: a Python callable running on a goroutine.
 *
 *     g = Goroutine(func)          nothing runs yet; no stack is taken
 *     g.resume(v)                  runs func on a fresh stack until it calls
 *                                  park(x) (resume returns x) or returns r
 *                                  (resume returns r); an exception it raises
 *                                  comes out of resume with its traceback
 *     park(x)   (inside func)      suspends it; the next g.resume(v) makes
 *                                  this park return v, g.throw(e) raises e
 *
 * Every switch saves the interpreter's per-stack state of the stack being
 * left into a gl_pystate on that stack and restores the other one's
 * (pystate.h).  Values and exceptions travel in the object's `transfer` and
 * `exc` slots, each moved (not copied) across the switch, and taken out of
 * them before the restore (which may run Python code: pystate.h).
 *
 * Lifetime: a parked goroutine is referenced by nobody but its owners; its
 * own stack holds no strong reference to it.  When the last reference goes,
 * tp_finalize resumes it with GoroutineExit so its `finally` blocks run and
 * its stack and frame data are released.  One that catches GoroutineExit and
 * parks again, or is parked on another thread, cannot be unwound: it is
 * reported as unraisable and kept alive in the module's `unkillable` list
 * rather than freed under a live stack.
 *
 * Registry: started, unfinished goroutines are linked into the module state,
 * so that goroutines() can list them and their frames (for dumps).
 */
#include "glue.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <stddef.h>
#include <structmember.h>   /* T_PYSSIZET, READONLY on 3.11 */

/* The C recursion budget of a goroutine: the levels its stack holds at
 * gl_pystate_bytes_per_c_level() each, less GL_STACK_RESERVE and
 * GL_HEADROOM_LEVELS (glue.h).  gl_goroutine_stack_for_levels is its
 * inverse. */
size_t
gl_goroutine_stack_for_levels(int levels)
{
    return GL_STACK_RESERVE
           + (size_t)(levels + GL_HEADROOM_LEVELS) * gl_pystate_bytes_per_c_level();
}

size_t
gl_py_stack_min(void)
{
    size_t min = 64 * 1024;
#if GL_PY_MINOR >= 14
    size_t cpython = (gl_cstack_min_size() + 0xFFF) & ~(size_t)0xFFF;
    if (cpython > min)
        min = cpython;
#endif
    return min;
}

static int
c_budget(const GoroutineObject *self)
{
    size_t per = gl_pystate_bytes_per_c_level();
    size_t size = self->g.stack_size;
    long levels = size > GL_STACK_RESERVE ? (long)((size - GL_STACK_RESERVE) / per) : 0;
    levels -= GL_HEADROOM_LEVELS;
    if (levels < 20)
        levels = 20;
    if (levels > INT_MAX / 2)
        levels = INT_MAX / 2;
    return (int)levels;
}

/* ---- registry -------------------------------------------------------- */

static void
registry_add(GoroutineObject *self)
{
    gl_module_state *st = self->state;
    self->reg_prev = NULL;
    self->reg_next = st->registry;
    if (st->registry)
        st->registry->reg_prev = self;
    st->registry = self;
    st->registry_size++;
}

static void
registry_remove(GoroutineObject *self)
{
    gl_module_state *st = self->state;
    if (self->reg_prev == NULL && st->registry != self)
        return;   /* not linked */
    if (self->reg_prev)
        self->reg_prev->reg_next = self->reg_next;
    else
        st->registry = self->reg_next;
    if (self->reg_next)
        self->reg_next->reg_prev = self->reg_prev;
    self->reg_prev = self->reg_next = NULL;
    st->registry_size--;
}

PyObject *
gl_goroutine_registry_list(gl_module_state *st)
{
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (GoroutineObject *g = st->registry; g; g = g->reg_next) {
        if (PyList_Append(list, (PyObject *)g) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

/* ---- running on the goroutine ----------------------------------------- */

GoroutineObject *
gl_goroutine_current(void)
{
    gl_g *g = gl_getg();
    return g ? (GoroutineObject *)((char *)g - offsetof(GoroutineObject, g))
             : NULL;
}

/* The goroutine's whole life, on its own stack. */
static void
goroutine_main(void *arg)
{
    GoroutineObject *self = arg;
    gl_module_state *st = self->state;
    PyThreadState *ts = PyThreadState_Get();
    gl_pystate_root root;
    /* func stays in self->func, borrowed here, until it returns: the
     * collector then sees it through tp_traverse, so a cycle through it (a
     * bound method of an object that holds the goroutine) can be collected.
     * Nothing clears it meanwhile: tp_clear reaches only a goroutine found
     * unreachable, and a running one is referenced from its resumer's
     * stack; a parked one is unwound by tp_finalize first. */
    PyObject *func = self->func;
    PyObject *context = self->context;
    self->context = NULL;

    _PyErr_StackItem *outer = ts->exc_info;   /* the resumer's */
    int fresh = gl_pystate_enter_fresh(ts, &root, context, (void *)self->g.stack->lo,
                                       self->g.stack->size, c_budget(self), &st->chunks);
    Py_XDECREF(context);
    self->root_exc = &root.exc_item;
    if (self->step_worker)
        root.exc_item.previous_item = outer;
    Py_CLEAR(self->transfer);    /* the first resume's value is not used */

    PyObject *result = fresh < 0 ? NULL : PyObject_CallNoArgs(func);
    Py_CLEAR(self->func);
    if (result != NULL)
        self->transfer = result;
    else
        self->exc = gl_err_take();
    registry_remove(self);
    self->root_exc = NULL;
    gl_pystate_exit(ts, &root, &st->chunks);
    /* Returning ends the goroutine: the runtime releases this stack from
     * the parent's stack and continues the parent. */
}

/* Switch into self with `value` or the exception `exc` (stolen; NULL for
 * none), and come back when it parks or finishes. */
static PyObject *
goroutine_switch(GoroutineObject *self, PyObject *value, PyObject *exc)
{
    gl_module_state *st = self->state;
    const char *refusal = NULL;

    switch (self->g.status) {
    case GL_G_DEAD:
        refusal = "cannot resume a goroutine that has finished";
        break;
    case GL_G_RUNNING:
        refusal = "cannot resume a goroutine that is already running";
        break;
    case GL_G_PARKED:
        if (self->g.owner != gl_thread_id())
            refusal = "cannot resume a goroutine that belongs to another thread";
        break;
    case GL_G_IDLE:
        if (self->func == NULL) {
            /* Made by Goroutine.__new__ alone: nothing to run. */
            refusal = "cannot resume a goroutine that was never initialized "
                      "(Goroutine.__init__ was not called)";
            break;
        }
        if (exc != NULL) {
            /* Thrown into before it started: it dies without running. */
            self->g.status = GL_G_DEAD;
            Py_CLEAR(self->func);
            Py_CLEAR(self->context);
            if (PyErr_GivenExceptionMatches(exc, st->goroutine_exit)) {
                Py_DECREF(exc);
                Py_RETURN_NONE;
            }
            gl_err_give(exc);
            return NULL;
        }
        registry_add(self);
        break;
    }
    if (refusal != NULL) {
        Py_XDECREF(exc);
        PyErr_SetString(st->goroutine_error, refusal);
        return NULL;
    }

    PyThreadState *ts = PyThreadState_Get();
    gl_pystate saved;
    Py_XSETREF(self->transfer, Py_NewRef(value));
    Py_XSETREF(self->exc, exc);
    Py_CLEAR(self->top_frame);

    if (self->step_worker && self->root_exc != NULL)
        self->root_exc->previous_item = ts->exc_info;   /* see glue.h */
    gl_pystate_save(ts, &saved);
    int err = gl_resume(&self->g, 0, NULL);
    /* Take what travelled back before the restore, which may run Python
     * code (pystate.h) that could switch to self again. */
    PyObject *out_exc = self->exc, *out = self->transfer;
    self->exc = self->transfer = NULL;
    gl_pystate_restore(ts, &saved);

    if (err != GL_OK) {
        Py_XDECREF(out_exc);
        Py_XDECREF(out);
        if (self->g.status == GL_G_IDLE)
            registry_remove(self);
        if (err == GL_ENOMEM)
            return PyErr_NoMemory();
        PyErr_SetString(st->goroutine_error, gl_strerror(err));
        return NULL;
    }
    if (out_exc != NULL) {
        Py_XDECREF(out);
        if (self->g.status == GL_G_DEAD
                && PyErr_GivenExceptionMatches(out_exc, st->goroutine_exit)) {
            Py_DECREF(out_exc);   /* it was told to exit, and did */
            Py_RETURN_NONE;
        }
        gl_err_give(out_exc);
        return NULL;
    }
    return out ? out : Py_NewRef(Py_None);
}

PyObject *
gl_goroutine_resume(GoroutineObject *self, PyObject *value)
{
    return goroutine_switch(self, value, NULL);
}

PyObject *
gl_goroutine_throw(GoroutineObject *self, PyObject *exc)
{
    assert(PyExceptionInstance_Check(exc));
    return goroutine_switch(self, Py_None, Py_NewRef(exc));
}

PyObject *
gl_goroutine_park(gl_module_state *st, PyObject *value)
{
    GoroutineObject *self = gl_goroutine_current();
    if (self == NULL) {
        PyErr_SetString(st->goroutine_error,
                        "park() called outside a goroutine");
        return NULL;
    }
    PyThreadState *ts = PyThreadState_Get();
    gl_pystate saved;
    Py_XSETREF(self->transfer, Py_NewRef(value));

    gl_pystate_save(ts, &saved);
    self->saved = &saved;
    int err = gl_park(0, NULL);
    self->saved = NULL;
    /* Taken before the restore, as in goroutine_switch. */
    PyObject *exc = self->exc, *in = self->transfer;
    self->exc = self->transfer = NULL;
    gl_pystate_restore(ts, &saved);

    if (err != GL_OK) {   /* unreachable: self is running */
        Py_XDECREF(exc);
        Py_XDECREF(in);
        PyErr_SetString(st->goroutine_error, gl_strerror(err));
        return NULL;
    }
    if (exc != NULL) {
        Py_XDECREF(in);
        gl_err_give(exc);
        return NULL;
    }
    return in ? in : Py_NewRef(Py_None);
}

/* ---- the type --------------------------------------------------------- */

static int
goroutine_init(GoroutineObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"func", "name", "stack_size", "context", NULL};
    PyObject *func, *name = Py_None, *stack_size = Py_None, *context = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$OOO:Goroutine", kwlist,
                                     &func, &name, &stack_size, &context))
        return -1;
    if (self->g.status != GL_G_IDLE || self->func != NULL) {
        PyErr_SetString(self->state->goroutine_error,
                        "Goroutine.__init__ called twice");
        return -1;
    }
    if (!PyCallable_Check(func)) {
        PyErr_Format(PyExc_TypeError, "Goroutine() needs a callable, not %.100s",
                     Py_TYPE(func)->tp_name);
        return -1;
    }
    size_t size = 0;
    if (stack_size != Py_None) {
        if (!PyLong_Check(stack_size)) {
            PyErr_Format(PyExc_TypeError,
                         "stack_size must be an int, not %.100s",
                         Py_TYPE(stack_size)->tp_name);
            return -1;
        }
        long long v = PyLong_AsLongLong(stack_size);
        if (v == -1 && PyErr_Occurred())
            PyErr_Clear();
        if (v < (long long)gl_py_stack_min() || v > (long long)GL_STACK_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "stack_size must be between %zu and %lld bytes, got %R",
                         gl_py_stack_min(), (long long)GL_STACK_MAX, stack_size);
            return -1;
        }
        size = (size_t)v;
    }
    if (context != Py_None && !PyContext_CheckExact(context)) {
        PyErr_Format(PyExc_TypeError,
                     "context must be a contextvars.Context, not %.100s",
                     Py_TYPE(context)->tp_name);
        return -1;
    }
    if (name == Py_None) {
        /* An interned name: a fresh string per call would also take a new
         * slot of CPython's type attribute cache each time. */
        name = PyObject_GetAttr(func, self->state->str_qualname);
        if (name == NULL || !PyUnicode_Check(name)) {
            PyErr_Clear();
            Py_XDECREF(name);
            name = PyObject_Repr(func);
            if (name == NULL)
                return -1;
        }
    }
    else if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return -1;
    }
    else {
        Py_INCREF(name);
    }
    if (gl_g_init(&self->g, goroutine_main, self, size) != GL_OK) {
        Py_DECREF(name);
        PyErr_SetString(PyExc_ValueError, "invalid stack_size");
        return -1;
    }
    Py_XSETREF(self->name, name);
    self->g.label = PyUnicode_AsUTF8(name);
    if (self->g.label == NULL)
        PyErr_Clear();
    self->func = Py_NewRef(func);
    self->context = context == Py_None ? NULL : Py_NewRef(context);
    return 0;
}

GoroutineObject *
gl_goroutine_create(gl_module_state *st, PyObject *func, const char *name,
                    size_t stack_size)
{
    PyObject *kw = stack_size
        ? Py_BuildValue("{s:s,s:n}", "name", name, "stack_size", (Py_ssize_t)stack_size)
        : Py_BuildValue("{s:s}", "name", name);
    if (kw == NULL)
        return NULL;
    PyObject *args = PyTuple_Pack(1, func);
    PyObject *g = args ? PyObject_Call((PyObject *)st->goroutine_type, args, kw)
                       : NULL;
    Py_XDECREF(args);
    Py_DECREF(kw);
    return (GoroutineObject *)g;
}

static PyObject *
goroutine_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    GoroutineObject *self = (GoroutineObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->state = PyType_GetModuleState(type);
    if (self->state == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->g.status = GL_G_IDLE;
    return (PyObject *)self;
}

static void
goroutine_keep_forever(GoroutineObject *self, const char *why)
{
    PyErr_SetString(self->state->goroutine_error, why);
    PyErr_WriteUnraisable((PyObject *)self);
    if (PyList_Append(self->state->unkillable, (PyObject *)self) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
}

static void
goroutine_finalize(PyObject *op)
{
    GoroutineObject *self = (GoroutineObject *)op;
    if (self->g.status != GL_G_PARKED)
        return;
    if (self->state->goroutine_exit == NULL) {
        /* The module was torn down (interpreter exit): there is nothing
         * left to unwind it with.  Keep it, and its stack, until the
         * process ends rather than free memory a live stack points to. */
        Py_INCREF(op);
        return;
    }
    PyObject *pending = gl_err_take();
    if (self->g.owner != gl_thread_id()) {
        goroutine_keep_forever(self,
            "a goroutine parked on another thread was collected; its stack "
            "cannot be unwound here and is kept alive");
    }
    else {
        PyObject *exc = PyObject_CallNoArgs(self->state->goroutine_exit);
        self->unwinding = 1;
        PyObject *r = exc ? goroutine_switch(self, Py_None, exc) : NULL;
        if (r == NULL)
            PyErr_WriteUnraisable(op);
        Py_XDECREF(r);
        if (self->g.status == GL_G_PARKED)
            goroutine_keep_forever(self,
                "a collected goroutine caught GoroutineExit and parked again; "
                "it is kept alive");
    }
    gl_err_give(pending);
}

static int
goroutine_traverse(GoroutineObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->func);
    Py_VISIT(self->context);
    Py_VISIT(self->transfer);
    Py_VISIT(self->exc);
    Py_VISIT(self->top_frame);
    Py_VISIT(self->step_handle);
    Py_VISIT(self->steps_after);
    Py_VISIT(self->cancels_taken);
    Py_VISIT(self->greenlets);
    /* A parked goroutine's frames are its own, as a suspended generator's
     * frame is the generator's (pyinternal.c). */
    if (self->g.status == GL_G_PARKED && self->saved != NULL)
        return gl_pystate_traverse(self->saved, visit, arg);
    return 0;
}

static int
goroutine_clear(GoroutineObject *self)
{
    assert(self->g.status != GL_G_RUNNING);   /* see goroutine_main */
    Py_CLEAR(self->func);
    Py_CLEAR(self->context);
    Py_CLEAR(self->transfer);
    Py_CLEAR(self->exc);
    Py_CLEAR(self->top_frame);
    Py_CLEAR(self->step_handle);
    Py_CLEAR(self->steps_after);
    Py_CLEAR(self->cancels_taken);
    Py_CLEAR(self->greenlets);
    return 0;
}

static void
goroutine_dealloc(GoroutineObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    /* Still tracked while the finalizer runs: an object it resurrects must
     * be (PyObject_CallFinalizerFromDealloc asserts so). */
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return;   /* resurrected (kept forever) */
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    registry_remove(self);
    goroutine_clear(self);
    Py_CLEAR(self->name);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
goroutine_resume(GoroutineObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "resume() takes at most 1 argument (%zd given)", nargs);
        return NULL;
    }
    return goroutine_switch(self, nargs ? args[0] : Py_None, NULL);
}

static PyObject *
goroutine_throw(GoroutineObject *self, PyObject *exc)
{
    if (PyExceptionClass_Check(exc))
        exc = PyObject_CallNoArgs(exc);
    else if (PyExceptionInstance_Check(exc))
        Py_INCREF(exc);
    else {
        PyErr_Format(PyExc_TypeError,
                     "exceptions must be classes or instances deriving from "
                     "BaseException, not %.100s", Py_TYPE(exc)->tp_name);
        return NULL;
    }
    if (exc == NULL)
        return NULL;
    PyObject *r = gl_goroutine_throw(self, exc);
    Py_DECREF(exc);
    return r;
}

static const char *
status_name(gl_gstatus s)
{
    switch (s) {
    case GL_G_IDLE: return "idle";
    case GL_G_RUNNING: return "running";
    case GL_G_PARKED: return "parked";
    case GL_G_DEAD: return "finished";
    }
    return "?";
}

static PyObject *
goroutine_repr(GoroutineObject *self)
{
    return PyUnicode_FromFormat("<Goroutine %llu %R %s>",
                                (unsigned long long)self->g.goid,
                                self->name ? self->name : Py_None,
                                status_name(self->g.status));
}

static PyObject *
get_status(GoroutineObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(status_name(self->g.status));
}

static PyObject *
get_goid(GoroutineObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->g.goid);
}

static PyObject *
get_stack_size(GoroutineObject *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(self->g.stack_size);
}

static PyObject *
get_name(GoroutineObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->name ? self->name : Py_None);
}

static PyObject *
get_frame(GoroutineObject *self, void *c)
{
    (void)c;
    if (self->g.status != GL_G_PARKED || self->saved == NULL)
        Py_RETURN_NONE;
    if (self->top_frame == NULL)
        self->top_frame = gl_pystate_frame_object(PyThreadState_Get(),
                                                  self->saved);
    return Py_NewRef(self->top_frame);
}

static PyMethodDef goroutine_methods[] = {
    {"resume", (PyCFunction)(void (*)(void))goroutine_resume, METH_FASTCALL,
     "resume(value=None, /)\n--\n\nRun the goroutine until it parks or "
     "finishes; return what it passed to park(), or its function's result."},
    {"throw", (PyCFunction)goroutine_throw, METH_O,
     "throw(exc, /)\n--\n\nResume the goroutine by raising exc where it "
     "parked."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef goroutine_getset[] = {
    {"status", (getter)get_status, NULL,
     "'idle', 'running', 'parked' or 'finished'", NULL},
    {"goid", (getter)get_goid, NULL, "unique id, increasing", NULL},
    {"stack_size", (getter)get_stack_size, NULL, "usable stack bytes", NULL},
    {"name", (getter)get_name, NULL, "name given, or the function's", NULL},
    {"frame", (getter)get_frame, NULL,
     "innermost Python frame while parked, else None", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyMemberDef goroutine_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(GoroutineObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyType_Slot goroutine_slots[] = {
    {Py_tp_new, goroutine_new},
    {Py_tp_init, goroutine_init},
    {Py_tp_dealloc, goroutine_dealloc},
    {Py_tp_finalize, goroutine_finalize},
    {Py_tp_traverse, goroutine_traverse},
    {Py_tp_clear, goroutine_clear},
    {Py_tp_repr, goroutine_repr},
    {Py_tp_methods, goroutine_methods},
    {Py_tp_getset, goroutine_getset},
    {Py_tp_members, goroutine_members},
    {Py_tp_doc, "Goroutine(func, /, *, name=None, stack_size=None, "
                "context=None)\n--\n\nfunc() run on a native stack of its "
                "own; see resume(), throw() and goloop._goloop.park()."},
    {0, NULL}
};

PyType_Spec gl_goroutine_spec = {
    .name = "goloop._goloop.Goroutine",
    .basicsize = sizeof(GoroutineObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = goroutine_slots,
};

#endif
