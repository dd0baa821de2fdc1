/*
 * pystate.c — fresh interpreter state for a new goroutine, and its release.
 * See pystate.h for which fields belong to a stack and why.
 */
#include "pystate.h"

#if GL_PY_SUPPORTED

/* CPython's first data-stack chunk is 16 KiB (DATA_STACK_CHUNK_SIZE in
 * Python/pystate.c); CPython allocates chunks with the arena allocator and
 * frees them with it, so cached chunks must come from it too. */
#define ROOT_CHUNK_SIZE (16 * 1024)

static void
chunk_free(_PyStackChunk *c)
{
    PyObjectArenaAllocator arena;
    PyObject_GetArenaAllocator(&arena);
    arena.free(arena.ctx, c, c->size);
}

void
gl_chunk_cache_clear(gl_chunk_cache *cache)
{
    while (cache->count > 0)
        chunk_free(cache->chunks[--cache->count]);
}

/* Install a root chunk the way CPython's push_chunk() does for the first
 * chunk of a thread: its data[0] is skipped, so popping the goroutine's
 * bottom frame never frees the chunk.  Without a cached chunk, leave the
 * data stack empty and CPython allocates the root chunk on the first push. */
static void
datastack_enter(PyThreadState *ts, gl_chunk_cache *cache)
{
    if (cache->count == 0) {
        ts->datastack_chunk = NULL;
        ts->datastack_top = NULL;
        ts->datastack_limit = NULL;
        return;
    }
    _PyStackChunk *c = cache->chunks[--cache->count];
    c->previous = NULL;
    c->top = 0;
    ts->datastack_chunk = c;
    ts->datastack_top = &c->data[1];
    ts->datastack_limit = (PyObject **)((char *)c + c->size);
}

static void
datastack_exit(PyThreadState *ts, gl_chunk_cache *cache)
{
    _PyStackChunk *c = ts->datastack_chunk;
    while (c) {
        _PyStackChunk *prev = c->previous;
        if (prev == NULL && c->size == ROOT_CHUNK_SIZE
                && cache->count < GL_CHUNK_CACHE_MAX)
            cache->chunks[cache->count++] = c;
        else
            chunk_free(c);
        c = prev;
    }
    ts->datastack_chunk = NULL;
    ts->datastack_top = NULL;
    ts->datastack_limit = NULL;
}

int
gl_pystate_enter_fresh(PyThreadState *ts, gl_pystate_root *root,
                       PyObject *context, void *stack_lo, size_t stack_size,
                       int c_budget, gl_chunk_cache *cache)
{
#if GL_PY_MINOR >= 15
    ts->current_frame = ts->base_frame;   /* chains end at the sentinel */
#elif GL_PY_MINOR >= 13
    ts->current_frame = NULL;
#else
    root->cframe.current_frame = NULL;
    root->cframe.previous = NULL;
#  if GL_PY_MINOR == 11
    root->cframe.use_tracing = ts->cframe->use_tracing;
#  endif
    ts->cframe = &root->cframe;
#endif
#if GL_PY_MINOR == 11
    /* Python and C levels share one counter on 3.11. */
    ts->recursion_remaining = c_budget < ts->recursion_limit
                              ? c_budget : ts->recursion_limit;
#else
    ts->py_recursion_remaining = ts->py_recursion_limit;
#endif
#if GL_PY_MINOR == 12 || GL_PY_MINOR == 13
    ts->c_recursion_remaining = c_budget;
#endif
#if GL_PY_MINOR >= 14
    (void)c_budget;
    ts->current_executor = NULL;
    ts->critical_section = 0;
#else
    (void)stack_lo;
    (void)stack_size;
#endif
#if GL_PY_MINOR >= 15
    ts->jit_exit = NULL;
#endif
    ts->recursion_headroom = 0;
    ts->tracing = 0;
    datastack_enter(ts, cache);
    root->exc_item.exc_value = NULL;
    root->exc_item.previous_item = NULL;
    ts->exc_info = &root->exc_item;
    Py_XINCREF(context);
    ts->context = context;
    ts->context_ver++;
#if GL_PY_MINOR == 11
    ts->trash_delete_nesting = 0;
    ts->trash_delete_later = NULL;
#elif GL_PY_MINOR == 12
    ts->trash.delete_nesting = 0;
    ts->trash.delete_later = NULL;
#else
    ts->delete_later = NULL;
#endif
#if GL_PY_MINOR >= 14
    /* Last, so that no other C-API call comes between this and running on
     * the stack (we are on it already): CPython's own condition. */
    return PyUnstable_ThreadState_SetStackProtection(ts, stack_lo, stack_size);
#else
    return 0;
#endif
}

void
gl_pystate_exit(PyThreadState *ts, gl_pystate_root *root,
                gl_chunk_cache *cache)
{
    Py_CLEAR(root->exc_item.exc_value);
    Py_CLEAR(ts->context);
    datastack_exit(ts, cache);
#if GL_PY_MINOR == 11
    /* The parent's restore reads use_tracing from ts->cframe, which must not
     * point into this stack once it is released. */
    ts->root_cframe.use_tracing = root->cframe.use_tracing;
    ts->cframe = &ts->root_cframe;
#elif GL_PY_MINOR == 12
    ts->cframe = &ts->root_cframe;
#elif GL_PY_MINOR >= 15
    ts->current_frame = ts->base_frame;
#else
    ts->current_frame = NULL;
#endif
    ts->exc_info = &ts->exc_state;
}

#if GL_PY_MINOR >= 12
/* CPython exports no function that instruments one code object; the one
 * public way is sys.monitoring.set_local_events(), which re-instruments the
 * code for the events of every tool whenever a tool's local events change.
 * So: collect the stale code objects of the running stack's frames, borrow
 * a free tool id, set and clear one local event on each, and give the id
 * back.  No code of theirs runs in between, and the id has no callbacks, so
 * no tool sees the borrowed id.  Best effort: with all six tool ids in use,
 * or on any error, the frames stay uninstrumented, as they were. */
static void
instrument_codes(PyObject *codes, uint64_t version)
{
    PyObject *mon = PySys_GetObject("monitoring");      /* borrowed */
    PyObject *events = mon ? PyObject_GetAttrString(mon, "events") : NULL;
    PyObject *event = events ? PyObject_GetAttrString(events, "PY_RETURN")
                             : NULL;
    Py_XDECREF(events);
    if (event == NULL)
        return;
    int tool = -1;
    for (int id = 0; id < 6 && tool < 0; id++) {
        PyObject *r = PyObject_CallMethod(mon, "use_tool_id", "is", id,
                                          "goloop");
        if (r != NULL) {
            Py_DECREF(r);
            tool = id;
        }
        else if (PyErr_ExceptionMatches(PyExc_ValueError))
            PyErr_Clear();          /* in use: try the next one */
        else
            break;
    }
    for (Py_ssize_t i = 0; tool >= 0 && i < PyList_GET_SIZE(codes); i++) {
        PyObject *code = PyList_GET_ITEM(codes, i);
        if ((uint64_t)((PyCodeObject *)code)->_co_instrumentation_version
                == version)
            continue;               /* done already (recursion) */
        PyObject *r = PyObject_CallMethod(mon, "set_local_events", "iOO",
                                          tool, code, event);
        if (r != NULL) {
            Py_DECREF(r);
            r = PyObject_CallMethod(mon, "set_local_events", "iOi",
                                    tool, code, 0);
        }
        Py_XDECREF(r);
        PyErr_Clear();              /* this code object stays as it was */
    }
    if (tool >= 0) {
        PyObject *r = PyObject_CallMethod(mon, "free_tool_id", "i", tool);
        Py_XDECREF(r);
    }
    PyErr_Clear();
    Py_DECREF(event);
}

void
gl_pystate_instrument_stack(PyThreadState *ts)
{
    uint64_t version = gl_monitoring_version(ts);
    PyObject *pending = gl_err_take();
    PyObject *codes = PyList_New(0);
    PyFrameObject *f = PyEval_GetFrame();
    Py_XINCREF(f);
    while (f != NULL && codes != NULL) {
        PyCodeObject *code = PyFrame_GetCode(f);
        if ((uint64_t)code->_co_instrumentation_version != version
                && PyList_Append(codes, (PyObject *)code) < 0)
            Py_CLEAR(codes);
        Py_DECREF(code);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    if (codes != NULL && PyList_GET_SIZE(codes) > 0)
        instrument_codes(codes, version);
    Py_XDECREF(codes);
    PyErr_Clear();
    gl_err_give(pending);
}
#endif

size_t
gl_pystate_bytes_per_c_level(void)
{
    /* C stack per Python-visible recursion level, measured with
     * _goloop._stack_depth() (tests/test_recursion.py prints it):
     * __repr__ recursion ~500-580 bytes, map() ~620-740, sorted(key=...)
     * ~5,000-5,200 on 3.11-3.13 (list.sort keeps a merge buffer on the
     * stack).  The budget must hold for the worst common path, so use
     * 6 KiB on every version; the default 8 MiB stack then allows ~1,300
     * levels, above 3.11's default recursion limit of 1,000. */
    return 6 * 1024;
}

#endif /* GL_PY_SUPPORTED */
