/*
 * greenlets.c — a task whose steps use greenlets keeps its worker's stack.
 *
 * greenlet (SQLAlchemy's asyncio bridge, greenback) runs several Python
 * stacks on one C stack by copying: a greenlet is a range of C stack
 * addresses, recorded when it starts; switching into it copies its saved
 * bytes back to those addresses and jumps there.  It assumes one C stack per
 * thread.  goloop runs each task step on a worker goroutine, so a greenlet
 * started in one step lives at addresses on that step's worker.  If a later
 * step switches into it from another worker — which happens as soon as the
 * first worker is busy with a preempted step of another task — greenlet
 * writes its saved bytes over that other step's live frames.
 *
 * The rule: the steps of a task that has live greenlets started on a
 * worker run on that worker, and nothing else runs there meanwhile.
 *
 *   Noticing: greenlet calls a per-thread trace function on every switch
 *   (greenlet.settrace).  goloop's, installed on each thread that runs
 *   steps once greenlet has been imported (watch_greenlet), marks the step
 *   worker it runs on and records, by weak reference, the greenlets it
 *   switches between, other than the thread's main one; then it calls the
 *   trace function it replaced.  A step that switches no greenlets pays
 *   nothing; a step of a program that never imports greenlet pays a
 *   comparison of sys.modules' size.
 *
 *   Pinning: when a step ends on a worker that saw switches, the greenlets
 *   recorded there that are still active keep the worker: it is stored on
 *   the task (attribute _goloop_step_worker) instead of going back to the
 *   pool, and run_step() takes it from there for the task's next step.
 *   When none is active any more (SQLAlchemy's child greenlet ends with
 *   each greenlet_spawn) the worker is free again.  A step that ran while
 *   greenlet was being imported — before the trace function was in place —
 *   pins its worker until the task ends: what it switched is unknown.
 *
 *   Preemption: a step running inside a greenlet other than the main one
 *   is never preempted (preempt.c): greenlet's notion of the current
 *   greenlet is per thread, and another task's step would see it.  A step
 *   on the main greenlet with children suspended may be: their bytes are
 *   saved off the stack, and only that task's steps switch into them.
 *
 * Not covered: a greenlet started in an eager task's first step (it runs
 * on its creator's stack, and so do its greenlets); a greenlet collected
 * from another stack after its task ended (greenlet kills it by switching
 * into it there); a program that replaces the trace function.
 */
#include "glue.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#define PIN_ATTR "_goloop_step_worker"

/* Per thread, as greenlet's trace function and the worker pool are. */
static _Thread_local int traced;             /* our trace function is in */
static _Thread_local Py_ssize_t pinned;      /* workers stored on tasks */
/* pinned summed over threads (changed under the GIL): every step asks
 * whether its task has a worker pinned, and a plain global answers the
 * usual "none anywhere" without a thread-local lookup (__tls_get_addr). */
static Py_ssize_t pinned_anywhere;

/* ---- the trace function ------------------------------------------------ */

/* The object ref refers to (new reference), or NULL once it is dead. */
static PyObject *
referent(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj;
    if (PyWeakref_GetRef(ref, &obj) < 0)
        PyErr_Clear();
    return obj;
#else
    PyObject *obj = PyWeakref_GET_OBJECT(ref);
    return obj == Py_None ? NULL : Py_NewRef(obj);
#endif
}

static int
is_main_greenlet(PyObject *g)
{
    PyObject *parent = PyObject_GetAttrString(g, "parent");
    if (parent == NULL) {
        PyErr_Clear();
        return 1;
    }
    int main = parent == Py_None;
    Py_DECREF(parent);
    return main;
}

/* Record g (by weak reference) among the greenlets w switched. */
static int
record(GoroutineObject *w, PyObject *g)
{
    if (is_main_greenlet(g))
        return 0;
    if (w->greenlets == NULL && (w->greenlets = PyList_New(0)) == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(w->greenlets); i++) {
        PyObject *seen = referent(PyList_GET_ITEM(w->greenlets, i));
        Py_XDECREF(seen);
        if (seen == g)
            return 0;
    }
    PyObject *ref = PyWeakref_NewRef(g, NULL);
    int r = ref ? PyList_Append(w->greenlets, ref) : -1;
    Py_XDECREF(ref);
    return r;
}

/* greenlet's trace function: (event, (origin, target)); `self` is the
 * trace function it replaced, or None. */
static PyObject *
greenlet_trace(PyObject *previous, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "trace function takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    GoroutineObject *w = gl_goroutine_current();
    if (w != NULL && w->step_worker) {
        if (w->greenlet_used == 0)
            w->greenlet_used = 1;
        PyObject *pair = args[1];
        if (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2
                && (record(w, PyTuple_GET_ITEM(pair, 0)) < 0
                    || record(w, PyTuple_GET_ITEM(pair, 1)) < 0)) {
            /* Cannot record: keep the worker for the task's life. */
            PyErr_Clear();
            w->greenlet_used = 2;
        }
    }
    if (previous != Py_None)
        return PyObject_Vectorcall(previous, args, nargs, NULL);
    Py_RETURN_NONE;
}

static PyMethodDef trace_def = {
    "_greenlet_trace", (PyCFunction)(void (*)(void))greenlet_trace, METH_FASTCALL,
    "goloop's greenlet trace function: keeps a task whose steps switch "
    "greenlets on one worker's stack."
};

/* ---- installing it ----------------------------------------------------- */

static int
install_trace(gl_module_state *st, PyObject *greenlet)
{
    PyObject *previous = PyObject_CallMethod(greenlet, "gettrace", NULL);
    if (previous == NULL)
        return -1;
    PyObject *trace = PyCFunction_NewEx(&trace_def, previous, NULL);
    Py_DECREF(previous);
    PyObject *r = trace ? PyObject_CallMethod(greenlet, "settrace", "O", trace) : NULL;
    Py_XDECREF(trace);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    traced = 1;
    /* Steps in flight on this thread ran untraced until now. */
    for (GoroutineObject *g = st->registry; g != NULL; g = g->reg_next)
        if (g->step_worker && g->step_handle != NULL
                && g->g.owner == gl_thread_id())
            g->greenlet_used = 2;
    return 0;
}

/* On every step's path: until greenlet is imported, one look at the size
 * of sys.modules (shared by the interpreter's threads, hence in the module
 * state); then, per thread, whether the trace function is in. */
int
gl_greenlets_watch(gl_module_state *st)
{
    if (!st->greenlet_found) {
        PyObject *modules = PyImport_GetModuleDict();
        Py_ssize_t n = PyDict_GET_SIZE(modules);
        if (n == st->modules_seen)
            return 0;
        st->modules_seen = n;
        int found = PyDict_Contains(modules, st->str_greenlet);
        if (found <= 0)
            return found;
        st->greenlet_found = 1;
    }
    if (traced)
        return 0;
    PyObject *greenlet = PyImport_GetModule(st->str_greenlet);
    if (greenlet == NULL || greenlet == Py_None) {   /* gone, or blocked */
        Py_XDECREF(greenlet);
        return PyErr_Occurred() ? -1 : 0;
    }
    int r = install_trace(st, greenlet);
    Py_DECREF(greenlet);
    return r;
}

/* ---- pinning ----------------------------------------------------------- */

/* Are greenlets w recorded still active?  Forgets those that are not. */
static int
greenlets_alive(GoroutineObject *w)
{
    if (w->greenlets == NULL)
        return 0;
    for (Py_ssize_t i = PyList_GET_SIZE(w->greenlets) - 1; i >= 0; i--) {
        PyObject *g = referent(PyList_GET_ITEM(w->greenlets, i));
        int active = g != NULL ? PyObject_IsTrue(g) : 0;
        Py_XDECREF(g);
        if (active < 0) {
            PyErr_Clear();
            active = 1;
        }
        if (!active && PyList_SetSlice(w->greenlets, i, i + 1, NULL) < 0) {
            PyErr_Clear();
            return 1;
        }
    }
    return PyList_GET_SIZE(w->greenlets) > 0;
}

int
gl_greenlets_keep(gl_module_state *st, GoroutineObject *w, PyObject *handle)
{
    /* greenlet imported during this step: installing the trace function
     * now marks this step (still in flight) as untraced. */
    if (gl_greenlets_watch(st) < 0)
        PyErr_Clear();
    if (w->greenlet_used == 0)
        return 0;
    if (st->unsafe_greenlets) {
        w->greenlet_used = 0;
        Py_CLEAR(w->greenlets);
        return 0;
    }
    PyObject *task = gl_step_task(handle);
    if (task == NULL) {
        PyErr_Clear();
        return 0;
    }
    int done = 0;
    PyObject *r = PyObject_CallMethod(task, "done", NULL);
    if (r != NULL) {
        done = PyObject_IsTrue(r) == 1;
        Py_DECREF(r);
    }
    PyErr_Clear();
    int keep = !done && (w->greenlet_used == 2 || greenlets_alive(w));
    if (keep && PyObject_SetAttrString(task, PIN_ATTR, (PyObject *)w) < 0) {
        PyErr_Clear();
        keep = 0;
    }
    Py_DECREF(task);
    if (keep) {
        pinned++;
        pinned_anywhere++;
    }
    else {
        w->greenlet_used = 0;
        Py_CLEAR(w->greenlets);
    }
    return keep;
}

GoroutineObject *
gl_greenlets_pinned_worker(PyObject *handle)
{
    if (pinned_anywhere == 0 || pinned == 0)
        return NULL;
    PyObject *task = gl_step_task(handle);
    PyObject *dict = task ? PyObject_GenericGetDict(task, NULL) : NULL;
    PyObject *w = dict ? PyDict_GetItemString(dict, PIN_ATTR) : NULL;
    if (w != NULL) {
        Py_INCREF(w);
        if (PyDict_DelItemString(dict, PIN_ATTR) < 0)
            PyErr_Clear();
        pinned--;
        pinned_anywhere--;
    }
    PyErr_Clear();
    Py_XDECREF(dict);
    Py_XDECREF(task);
    return (GoroutineObject *)w;
}

Py_ssize_t
gl_greenlets_pinned(void)
{
    return pinned;
}

#endif
