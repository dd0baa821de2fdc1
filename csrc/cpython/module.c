/*
 * module.c — goloop._goloop, the C-API module over the goroutine runtime.
 *
 * Module-level functions: park(), current(), goroutines(), stack-size
 * settings, stats(); the task-step runner's functions come from steps.c,
 * preemption's from preempt.c, lock counting's from locks.c.
 * The Goroutine type is in goroutine.c.  State lives in
 * the module (gl_module_state), not in C globals; the runtime below keeps
 * process-wide state of its own (the stack cache), so the module refuses to
 * load into a subinterpreter with its own GIL.
 *
 * On a platform or Python version the runtime does not support, the module
 * still builds, and importing it raises ImportError saying what is supported.
 */
#include "glue.h"
#include "core.h"   /* the loop core (csrc/loop): its type and setup */

#define SUPPORTED_TEXT \
    "goloop supports CPython 3.11 to 3.15 (not free-threaded builds) on Linux " \
    "x86-64 and AArch64"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

static gl_module_state *
get_state(PyObject *module)
{
    return (gl_module_state *)PyModule_GetState(module);
}

static PyObject *
mod_park(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "park() takes at most 1 argument (%zd given)", nargs);
        return NULL;
    }
    gl_module_state *st = get_state(module);
    GoroutineObject *cur = gl_goroutine_current();
    if (cur != NULL && cur->step_worker) {
        PyErr_SetString(st->goroutine_error,
                        "park() cannot be called inside an asyncio task step: "
                        "the step runs on the event loop's worker goroutine; "
                        "suspend a task with await");
        return NULL;
    }
    return gl_goroutine_park(st, nargs ? args[0] : Py_None);
}

static PyObject *
mod_current(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    GoroutineObject *g = gl_goroutine_current();
    return Py_NewRef(g ? (PyObject *)g : Py_None);
}

static PyObject *
mod_goroutines(PyObject *module, PyObject *unused)
{
    (void)unused;
    return gl_goroutine_registry_list(get_state(module));
}

static PyObject *
mod_set_default_stack_size(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "stack size must be an int, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    long long v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (v < (long long)gl_py_stack_min() || v > (long long)GL_STACK_MAX
            || gl_set_default_stack_size((size_t)v) != GL_OK) {
        PyErr_Format(PyExc_ValueError,
                     "stack size must be between %zu and %lld bytes, got %R",
                     gl_py_stack_min(), (long long)GL_STACK_MAX, arg);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
mod_get_default_stack_size(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromSize_t(gl_default_stack_size());
}

int
gl_dict_set_u64(PyObject *d, const char *key, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (o == NULL)
        return -1;
    int r = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return r;
}

/* stats(reset=True) without a loop: the process-wide counters count again
 * from 0.  The counters themselves only grow (the runtime's, sysmon's and
 * the glue's are read by other code, and the scheduler trace takes
 * differences), so what is reset is this baseline, subtracted from them;
 * process-wide, as the runtime's counters are. */
static const char *const COUNTERS[] = {
    "stacks_mapped", "stacks_reused", "stacks_trimmed", "goroutines_started",
    "goroutines_finished", "steps", "preemptions", "preempt_declined", "preempt_deferred",
    "preempt_withheld", "steps_held_back", "preempt_requests", "sysmon_wakeups", "callbacks",
};
#define N_COUNTERS (sizeof COUNTERS / sizeof COUNTERS[0])
static uint64_t baseline[N_COUNTERS];

/* d's counters less the baseline; reset: the baseline becomes them. */
static int
apply_baseline(PyObject *d, int reset)
{
    for (size_t i = 0; i < N_COUNTERS; i++) {
        PyObject *v = PyDict_GetItemString(d, COUNTERS[i]);   /* borrowed */
        if (v == NULL)
            continue;
        uint64_t raw = PyLong_AsUnsignedLongLong(v);
        if (raw == (uint64_t)-1 && PyErr_Occurred())
            return -1;
        if (gl_dict_set_u64(d, COUNTERS[i], raw >= baseline[i] ? raw - baseline[i] : raw) < 0)
            return -1;
        if (reset)
            baseline[i] = raw;
    }
    return 0;
}

int
gl_dict_set_i64(PyObject *d, const char *key, int64_t v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL)
        return -1;
    int r = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return r;
}

/* The process-wide gauges stats(loop) shows beside the loop's own. */
static int
process_gauges(gl_module_state *st, PyObject *d, const gl_stats *s)
{
    return gl_dict_set_u64(d, "stacks_in_use", s->stacks_in_use) < 0
           || gl_dict_set_u64(d, "stacks_cached", s->stacks_cached) < 0
           || gl_dict_set_u64(d, "goroutines_live", (uint64_t)st->registry_size) < 0
           || gl_dict_set_i64(d, "rss", gl_trace_rss()) < 0 ? -1 : 0;
}

static PyObject *
mod_stats(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"loop", "reset", NULL};
    PyObject *loop = Py_None;
    int reset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$p:stats", kwlist, &loop, &reset))
        return NULL;
    gl_module_state *st = get_state(module);
    gl_stats s;
    gl_get_stats(&s);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (loop != Py_None) {
        if (gl_loop_stats(st, loop, d, reset) < 0 || process_gauges(st, d, &s) < 0) {
            Py_DECREF(d);
            return NULL;
        }
        return d;
    }
    if (gl_dict_set_u64(d, "stacks_in_use", s.stacks_in_use) < 0
            || gl_dict_set_u64(d, "stacks_cached", s.stacks_cached) < 0
            || gl_dict_set_u64(d, "stacks_mapped", s.stacks_mapped) < 0
            || gl_dict_set_u64(d, "stacks_reused", s.stacks_reused) < 0
            || gl_dict_set_u64(d, "stacks_trimmed", s.stacks_trimmed) < 0
            || gl_dict_set_u64(d, "goroutines_started", s.goroutines_started) < 0
            || gl_dict_set_u64(d, "goroutines_finished", s.goroutines_finished) < 0
            || gl_dict_set_u64(d, "goroutines_live", (uint64_t)st->registry_size) < 0
            || gl_dict_set_u64(d, "data_chunks_cached", (uint64_t)st->chunks.count) < 0
            || gl_steps_stats(st, d) < 0
            || gl_core_stats(st, d) < 0
            || gl_preempt_stats(st, d) < 0
            || gl_dict_set_u64(d, "callbacks", st->core ? st->core->callbacks : 0) < 0
            || gl_loops_running_stats(d) < 0
            || gl_dict_set_i64(d, "rss", gl_trace_rss()) < 0
            || apply_baseline(d, reset) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    if (reset)
        st->longest_step_ns = 0;   /* a maximum: reset itself (under the GIL,
                                      as preempt.c updates it) */
    return d;
}

static PyObject *
mod_stack_depth(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromSize_t(gl_stack_depth());
}

/* For tests: what a C extension recursing without CPython's stack checks
 * does, `depth` frames of about 1 KiB each. */
__attribute__((noinline)) static size_t
recurse_unchecked(size_t depth)
{
    volatile char frame[1024];
    frame[0] = (char)depth;
    if (depth == 0)
        return 0;
    return recurse_unchecked(depth - 1) + (size_t)frame[0];
}

static PyObject *
mod_recurse_in_c(PyObject *module, PyObject *arg)
{
    if (gl_goroutine_current() == NULL) {
        /* The thread's own stack has no guard message of goloop's. */
        PyErr_SetString(get_state(module)->goroutine_error,
                        "_recurse_in_c() runs only on a goroutine");
        return NULL;
    }
    size_t depth = PyLong_AsSize_t(arg);
    if (depth == (size_t)-1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSize_t(recurse_unchecked(depth));
}

static PyMethodDef module_methods[] = {
    {"park", (PyCFunction)(void (*)(void))mod_park, METH_FASTCALL,
     "park(value=None, /)\n--\n\nSuspend the running goroutine; the "
     "resume() that started or last resumed it returns value.  Returns the "
     "value of the next resume()."},
    {"current", mod_current, METH_NOARGS,
     "current()\n--\n\nThe running Goroutine, or None on the thread's own "
     "stack."},
    {"goroutines", mod_goroutines, METH_NOARGS,
     "goroutines()\n--\n\nStarted, unfinished goroutines (all threads)."},
    {"set_default_stack_size", mod_set_default_stack_size, METH_O,
     "set_default_stack_size(nbytes, /)\n--\n\nStack size of goroutines "
     "created from now on."},
    {"get_default_stack_size", mod_get_default_stack_size, METH_NOARGS,
     "get_default_stack_size()\n--\n\n"},
    {"stats", (PyCFunction)(void (*)(void))mod_stats, METH_VARARGS | METH_KEYWORDS,
     "stats(loop=None, *, reset=False)\n--\n\nRuntime counters and gauges: stacks, "
     "goroutines, task steps, callbacks, preemptions, sysmon, the running loops' "
     "queues, RSS.  With a goloop loop: that loop's counters and gauges, and the "
     "process's stacks and RSS.  reset=True: the counters (not the gauges) count "
     "from 0 again after this reading (the loop's, or with no loop the process's)."},
    {"_stack_depth", mod_stack_depth, METH_NOARGS,
     "_stack_depth()\n--\n\nBytes of the running goroutine's stack in use "
     "(0 outside one); for tests."},
    {"_recurse_in_c", mod_recurse_in_c, METH_O,
     "_recurse_in_c(depth, /)\n--\n\nRecurse depth C frames of ~1 KiB "
     "with no stack check, as a careless C extension would, on a goroutine "
     "only; for tests."},
    {NULL, NULL, 0, NULL}
};

static const char overflow_hint[] =
    "The stack size of goroutines is set by the GOLOOP_STACK_SIZE environment "
    "variable or goloop._goloop.set_default_stack_size(); deep recursion "
    "normally raises RecursionError first, so a C extension recursing "
    "without checks is the likely cause.";

static int
module_exec(PyObject *module)
{
    gl_module_state *st = get_state(module);
    gl_set_overflow_hint(overflow_hint);
    st->goroutine_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &gl_goroutine_spec, NULL);
    if (st->goroutine_type == NULL)
        return -1;
    if (PyModule_AddType(module, st->goroutine_type) < 0)
        return -1;
    st->goroutine_error = PyErr_NewExceptionWithDoc(
        "goloop._goloop.GoroutineError",
        "A goroutine was misused: resumed when finished, running, or owned "
        "by another thread, or park() called outside one.",
        PyExc_RuntimeError, NULL);
    if (st->goroutine_error == NULL
            || PyModule_AddObjectRef(module, "GoroutineError",
                                     st->goroutine_error) < 0)
        return -1;
    st->goroutine_exit = PyErr_NewExceptionWithDoc(
        "goloop._goloop.GoroutineExit",
        "Raised inside a parked goroutine that is being collected, so that "
        "its finally blocks run.",
        PyExc_BaseException, NULL);
    if (st->goroutine_exit == NULL
            || PyModule_AddObjectRef(module, "GoroutineExit",
                                     st->goroutine_exit) < 0)
        return -1;
    if (PyModule_AddFunctions(module, gl_steps_methods) < 0
            || gl_steps_init(module, st) < 0
            || PyModule_AddFunctions(module, gl_await_methods) < 0
            || PyModule_AddFunctions(module, gl_preempt_methods) < 0
            || PyModule_AddFunctions(module, gl_schedtrace_methods) < 0
            || gl_preempt_init(module, st) < 0
            || PyModule_AddFunctions(module, gl_locks_methods) < 0
            || gl_locks_init(module, st) < 0
            || PyModule_AddFunctions(module, gl_core_methods) < 0
            || PyModule_AddFunctions(module, gl_transport_methods) < 0
            || PyModule_AddFunctions(module, gl_accept_methods) < 0)
        return -1;
    st->loop_core_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &gl_loop_core_spec, NULL);
    if (st->loop_core_type == NULL
            || PyModule_AddType(module, st->loop_core_type) < 0)
        return -1;
    st->poller_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &gl_poller_spec, NULL);
    if (st->poller_type == NULL || PyModule_AddType(module, st->poller_type) < 0)
        return -1;
    st->socket_transport_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &gl_socket_transport_spec, NULL);
    if (st->socket_transport_type == NULL
            || PyModule_AddType(module, st->socket_transport_type) < 0)
        return -1;
    st->datagram_transport_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &gl_datagram_transport_spec, NULL);
    if (st->datagram_transport_type == NULL
            || PyModule_AddType(module, st->datagram_transport_type) < 0)
        return -1;
    st->read_pipe_transport_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &gl_read_pipe_transport_spec, NULL);
    if (st->read_pipe_transport_type == NULL
            || PyModule_AddType(module, st->read_pipe_transport_type) < 0)
        return -1;
    st->str_qualname = PyUnicode_InternFromString("__qualname__");
    if (st->str_qualname == NULL)
        return -1;
    st->unkillable = PyList_New(0);
    if (st->unkillable == NULL
            || PyModule_AddObjectRef(module, "_unkillable", st->unkillable) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "MIN_STACK_SIZE", (long)gl_py_stack_min()) < 0
            || PyModule_AddIntConstant(module, "MAX_STACK_SIZE", GL_STACK_MAX) < 0
            || PyModule_AddStringConstant(module, "ARCH", GL_ARCH_NAME) < 0)
        return -1;
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    gl_module_state *st = get_state(module);
    Py_VISIT(st->goroutine_type);
    Py_VISIT(st->goroutine_error);
    Py_VISIT(st->goroutine_exit);
    Py_VISIT(st->unkillable);
    Py_VISIT(st->loop_core_type);
    Py_VISIT(st->poller_type);
    Py_VISIT(st->socket_transport_type);
    Py_VISIT(st->datagram_transport_type);
    Py_VISIT(st->read_pipe_transport_type);
    if (gl_core_traverse(st, visit, arg) < 0
            || gl_transports_traverse(st, visit, arg) < 0
            || gl_preempt_traverse(st, visit, arg) < 0
            || gl_locks_traverse(st, visit, arg) < 0)
        return -1;
    return gl_steps_traverse(st, visit, arg);
}

static int
module_clear(PyObject *module)
{
    gl_module_state *st = get_state(module);
    Py_CLEAR(st->goroutine_type);
    Py_CLEAR(st->goroutine_error);
    Py_CLEAR(st->goroutine_exit);
    Py_CLEAR(st->unkillable);
    Py_CLEAR(st->str_qualname);
    Py_CLEAR(st->loop_core_type);
    Py_CLEAR(st->poller_type);
    Py_CLEAR(st->socket_transport_type);
    Py_CLEAR(st->datagram_transport_type);
    Py_CLEAR(st->read_pipe_transport_type);
    gl_core_free(st);
    gl_transports_free(st);
    gl_steps_clear(st);
    gl_preempt_clear(st);
    gl_locks_clear(st);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
    gl_chunk_cache_clear(&get_state((PyObject *)module)->chunks);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL}
};

static struct PyModuleDef goloop_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "goloop._goloop",
    .m_doc = "goloop's goroutine runtime for CPython: Goroutine, park().",
    .m_size = sizeof(gl_module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyModuleDef *
gl_module_def(void)
{
    return &goloop_module;
}

PyMODINIT_FUNC
PyInit__goloop(void)
{
    return PyModuleDef_Init(&goloop_module);
}

#else  /* unsupported platform or Python version */

PyMODINIT_FUNC
PyInit__goloop(void)
{
#ifdef Py_GIL_DISABLED
#  define GL_BUILD_KIND " (free-threaded)"
#else
#  define GL_BUILD_KIND ""
#endif
    PyErr_SetString(PyExc_ImportError, SUPPORTED_TEXT
                    "; this build is for " GL_ARCH_NAME " and Python "
                    PY_VERSION GL_BUILD_KIND);
    return NULL;
}

#endif
