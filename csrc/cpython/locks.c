/*
 * locks.c — which threading locks a task step holds: Go's m.locks.
 *
 * Go never preempts an M that holds a runtime lock (preempt.go,
 * canPreemptM: mp.locks == 0).  goloop needs the same rule for the locks
 * Python code takes with the `threading` module: they belong to the OS
 * thread, and every task step of a loop runs on that one thread, so a step
 * parked while it holds one either deadlocks the loop (the next step that
 * wants a Lock blocks the thread in acquire(), and nothing can resume the
 * holder) or lets another task into the section (an RLock is re-entered by
 * "the same thread").  Nothing in CPython records who holds a lock (a Lock
 * has a locked bit, an RLock an owner thread id), so goloop counts.
 *
 * How: the lock methods themselves are replaced, on their types, by a
 * LockTracker — a callable that calls the original method and then adds to
 * or takes from the count of the goroutine it runs on (GoroutineObject
 * .locks_held).  Methods are looked up on the type at every call (`with`
 * statements look up __enter__/__exit__ there too), so every lock is
 * counted, whichever module made it and whether it was made before goloop
 * was imported.  Which methods of which types is policy, in
 * goloop/_locks.py; what each does to the count is its kind:
 *
 *   ACQUIRE          +1, taken back unless the result is true
 *   ENTER            +1, taken back if the call raises (the __enter__ of a
 *                    context manager that swaps process-wide state)
 *   RELEASE          success: -1 (never below 0)
 *   RELEASE_SAVE     RLock._release_save: returns (count, owner): -count
 *   ACQUIRE_RESTORE  RLock._acquire_restore((count, owner)): +count
 *   PRESERVE         the count after is the count before (Condition.wait:
 *                    it releases the lock, takes a waiter lock that another
 *                    thread releases, and takes the lock back)
 *
 * preempt.c declines to park a step whose count is above 0, and marks the
 * request deferred; the release that brings the count back to 0 asks for
 * the preemption again at once (Go: releasem restores the preempt request
 * when m.locks drops to 0), so a long locked section delays preemption by
 * no more than the section.
 *
 * The count is per step: run_step() starts it at 0.  A lock released by
 * another thread or task than the one that took it leaves the taker's
 * count high, so that step runs unpreempted to its end (the safe side); a
 * lock held across an await is not counted in the next step, which is no
 * new hazard: on stock asyncio another task that wanted it would already
 * block the thread, or re-enter the RLock.
 *
 * The same count keeps a step from being parked inside a `with` block that
 * swaps process-wide state for its duration (redirect_stdout, warnings'
 * catch_warnings, contextlib.chdir): another task's step would print into
 * the redirected stream, have its warnings caught, or run in the other
 * directory — a with block whose __enter__ is ENTER and __exit__ RELEASE.
 *
 * Cost: only code that takes locks pays — one extra vectorcall and a TLS
 * read per lock operation; a step that takes no locks pays nothing.
 */
#include "glue.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *original;       /* the method it stands in for */
    int kind;                 /* GL_LOCK_* */
    gl_module_state *state;   /* borrowed: the type keeps the module */
    vectorcallfunc vectorcall;
} LockTrackerObject;

enum {
    GL_LOCK_ACQUIRE = 1,
    GL_LOCK_ENTER,
    GL_LOCK_RELEASE,
    GL_LOCK_RELEASE_SAVE,
    GL_LOCK_ACQUIRE_RESTORE,
    GL_LOCK_PRESERVE,
};

/* The count in a (count, owner) state tuple of RLock._release_save. */
static Py_ssize_t
saved_count(PyObject *state)
{
    if (state == NULL || !PyTuple_Check(state) || PyTuple_GET_SIZE(state) < 1)
        return 0;
    Py_ssize_t n = PyLong_AsSsize_t(PyTuple_GET_ITEM(state, 0));
    if (n < 0) {
        PyErr_Clear();   /* (the original call has already checked it) */
        return 0;
    }
    return n;
}

static void
count_release(gl_module_state *st, GoroutineObject *g, Py_ssize_t n)
{
    g->locks_held = g->locks_held > n ? g->locks_held - n : 0;
    if (g->locks_held == 0 && g->preempt_deferred) {
        g->preempt_deferred = 0;
        gl_preempt_request_again(st);
    }
}

static PyObject *
tracker_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    LockTrackerObject *self = (LockTrackerObject *)callable;
    GoroutineObject *g = gl_goroutine_current();
    if (g == NULL)   /* the thread's own stack: never preempted */
        return PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    Py_ssize_t before = g->locks_held;
    /* Counted before the call: a Python acquire (Semaphore's) has taken
     * the lock a few bytecodes before it returns, and may be interrupted
     * there.  Held too early is the safe side; not taken, it is undone. */
    int counts_first = self->kind == GL_LOCK_ACQUIRE || self->kind == GL_LOCK_ENTER;
    if (counts_first)
        g->locks_held++;
    PyObject *r = PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    /* The same goroutine: a call returns on the stack it was made on. */
    assert(gl_goroutine_current() == g);
    if (r == NULL) {
        if (counts_first)
            count_release(self->state, g, 1);
        return NULL;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    switch (self->kind) {
    case GL_LOCK_ACQUIRE: {
        int took = PyObject_IsTrue(r);
        if (took <= 0)
            count_release(self->state, g, 1);
        if (took < 0) {
            Py_DECREF(r);
            return NULL;
        }
        break;
    }
    case GL_LOCK_ENTER:
        break;
    case GL_LOCK_RELEASE:
        count_release(self->state, g, 1);
        break;
    case GL_LOCK_RELEASE_SAVE:
        count_release(self->state, g, saved_count(r));
        break;
    case GL_LOCK_ACQUIRE_RESTORE:
        g->locks_held += nargs >= 2 ? saved_count(args[1]) : 0;
        break;
    case GL_LOCK_PRESERVE:
        g->locks_held = before;
        break;
    }
    return r;
}

static PyObject *
tracker_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

/* Bound like a function: lock.acquire is a method of the lock. */
static PyObject *
tracker_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    (void)type;
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *
tracker_getattro(PyObject *self, PyObject *name)
{
    /* __name__, __qualname__, __doc__, __text_signature__...: the
     * original's, so help() and inspect see the method they know. */
    PyObject *original = ((LockTrackerObject *)self)->original;
    if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "__doc__") == 0)
        return PyObject_GetAttr(original, name);
    PyObject *r = PyObject_GenericGetAttr(self, name);
    if (r == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        r = PyObject_GetAttr(original, name);
    }
    return r;
}

static PyObject *
tracker_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<goloop lock tracker of %R>",
                                ((LockTrackerObject *)self)->original);
}

static int
tracker_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((LockTrackerObject *)self)->original);
    return 0;
}

static int
tracker_clear(PyObject *self)
{
    Py_CLEAR(((LockTrackerObject *)self)->original);
    return 0;
}

static void
tracker_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tracker_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef tracker_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(LockTrackerObject, original), READONLY,
     "The method this one counts calls of."},
    {"__vectorcalloffset__", T_PYSSIZET,
     offsetof(LockTrackerObject, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyType_Slot tracker_slots[] = {
    {Py_tp_call, tracker_call},
    {Py_tp_descr_get, tracker_descr_get},
    {Py_tp_getattro, tracker_getattro},
    {Py_tp_repr, tracker_repr},
    {Py_tp_traverse, tracker_traverse},
    {Py_tp_clear, tracker_clear},
    {Py_tp_dealloc, tracker_dealloc},
    {Py_tp_members, tracker_members},
    {0, NULL}
};

static PyType_Spec tracker_spec = {
    .name = "goloop._goloop.LockTracker",
    .basicsize = sizeof(LockTrackerObject),
    /* METHOD_DESCRIPTOR: lock.acquire() calls it with the lock first, as
     * it does a method descriptor, without making a bound method. */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
             | Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tracker_slots,
};

/* ---- _track_locks(cls, {name: kind}) ------------------------------------ */

static PyObject *
new_tracker(gl_module_state *st, PyObject *original, int kind)
{
    LockTrackerObject *t = PyObject_GC_New(LockTrackerObject, st->lock_tracker_type);
    if (t == NULL)
        return NULL;
    t->original = Py_NewRef(original);
    t->kind = kind;
    t->state = st;
    t->vectorcall = tracker_vectorcall;
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

/* Replace cls's own methods named in `methods` by trackers of the given
 * kinds, in the type's dict: for immutable extension types (_thread.lock)
 * as for classes.  Already-tracked methods are left alone. */
static PyObject *
mod_track_locks(PyObject *module, PyObject *args)
{
    gl_module_state *st = PyModule_GetState(module);
    PyTypeObject *cls;
    PyObject *methods;
    if (!PyArg_ParseTuple(args, "O!O!:_track_locks", &PyType_Type, &cls,
                          &PyDict_Type, &methods))
        return NULL;
    /* (3.12+ keeps the dicts of the interpreter's own static types
     * elsewhere, and leaves tp_dict NULL: those are refused.) */
    PyObject *dict = cls->tp_dict;
    if (dict == NULL) {
        PyErr_Format(PyExc_TypeError, "cannot track the methods of %R", cls);
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *kind_obj;
    while (PyDict_Next(methods, &pos, &name, &kind_obj)) {
        int kind = PyLong_Check(kind_obj) ? (int)PyLong_AsLong(kind_obj) : -1;
        if (!PyUnicode_Check(name) || kind < GL_LOCK_ACQUIRE || kind > GL_LOCK_PRESERVE) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "bad lock method %R: %R", name, kind_obj);
            return NULL;
        }
        PyObject *original = PyDict_GetItemWithError(dict, name);
        if (original == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_AttributeError, "%R has no method %R", cls, name);
            return NULL;
        }
        if (Py_IS_TYPE(original, st->lock_tracker_type))
            continue;
        PyObject *tracker = new_tracker(st, original, kind);
        int r = tracker ? PyDict_SetItem(dict, name, tracker) : -1;
        Py_XDECREF(tracker);
        if (r < 0)
            return NULL;
    }
    PyType_Modified(cls);   /* drop cached lookups, here and in subclasses */
    Py_RETURN_NONE;
}

static PyObject *
mod_locks_held(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    GoroutineObject *g = gl_goroutine_current();
    return PyLong_FromSsize_t(g ? g->locks_held : 0);
}

PyMethodDef gl_locks_methods[] = {
    {"_track_locks", mod_track_locks, METH_VARARGS,
     "_track_locks(cls, methods, /)\n--\n\nCount, per goroutine, the locks "
     "taken and released through cls's methods ({name: LOCK_* kind})."},
    {"_locks_held", mod_locks_held, METH_NOARGS,
     "_locks_held()\n--\n\nThe running goroutine's count of threading "
     "locks held (0 outside one); for tests."},
    {NULL, NULL, 0, NULL}
};

int
gl_locks_init(PyObject *module, gl_module_state *st)
{
    st->lock_tracker_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &tracker_spec, NULL);
    if (st->lock_tracker_type == NULL)
        return -1;
    if (PyModule_AddIntConstant(module, "LOCK_ACQUIRE", GL_LOCK_ACQUIRE) < 0
            || PyModule_AddIntConstant(module, "LOCK_ENTER", GL_LOCK_ENTER) < 0
            || PyModule_AddIntConstant(module, "LOCK_RELEASE", GL_LOCK_RELEASE) < 0
            || PyModule_AddIntConstant(module, "LOCK_RELEASE_SAVE", GL_LOCK_RELEASE_SAVE) < 0
            || PyModule_AddIntConstant(module, "LOCK_ACQUIRE_RESTORE",
                                       GL_LOCK_ACQUIRE_RESTORE) < 0
            || PyModule_AddIntConstant(module, "LOCK_PRESERVE", GL_LOCK_PRESERVE) < 0)
        return -1;
    return 0;
}

int
gl_locks_traverse(gl_module_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->lock_tracker_type);
    return 0;
}

void
gl_locks_clear(gl_module_state *st)
{
    Py_CLEAR(st->lock_tracker_type);
}

#endif
