/*
 * ready.c — the ready queue: a ring of handles, drained in snapshot batches.
 *
 * asyncio runs, in one iteration, the callbacks that were ready when the
 * iteration began; those they schedule run in the next (after a poll for
 * I/O).  The loop takes the count first and pops that many (loop.c), so the
 * ring needs only push at the back and pop at the front.  It doubles when
 * full and never shrinks below its high-water mark: a loop that once had
 * 100k ready callbacks keeps the few hundred KiB for the next burst.
 *
 * Each entry says whether it is a task step, decided once when it is
 * scheduled (loop.c), so that running it needs no second look.
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#define MIN_CAP 64

static int
grow(gl_ready *q)
{
    size_t cap = q->cap ? q->cap * 2 : MIN_CAP;
    gl_ready_entry *ring = PyMem_Malloc(cap * sizeof *ring);
    if (ring == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Unroll the old ring to the front of the new one. */
    for (size_t i = 0; i < q->n; i++)
        ring[i] = q->ring[(q->head + i) & (q->cap - 1)];
    PyMem_Free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
    return 0;
}

int
gl_ready_push_hidden(gl_ready *q, PyObject *handle, int step, int hidden)
{
    if (q->n == q->cap && grow(q) < 0) {
        gl_gc_show(handle, hidden);
        Py_DECREF(handle);
        return -1;
    }
    gl_ready_entry *e = &q->ring[(q->head + q->n) & (q->cap - 1)];
    e->handle = handle;
    e->step = step;
    e->untracked = hidden ? 1 : gl_gc_hide(handle);
    q->n++;
    return 0;
}

int
gl_ready_push(gl_ready *q, PyObject *handle, int step)
{
    return gl_ready_push_hidden(q, handle, step, 0);
}

gl_ready_entry
gl_ready_take(gl_ready *q)
{
    assert(q->n > 0);
    gl_ready_entry e = q->ring[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->n--;
    return e;
}

gl_ready_entry
gl_ready_pop(gl_ready *q)
{
    gl_ready_entry e = gl_ready_take(q);
    gl_gc_show(e.handle, e.untracked);
    return e;
}

void
gl_ready_clear(gl_ready *q)
{
    /* Pop first, then release: a handle's finalizer may schedule more. */
    while (q->n > 0) {
        gl_ready_entry e = gl_ready_pop(q);
        Py_DECREF(e.handle);
    }
}

void
gl_ready_free(gl_ready *q)
{
    gl_ready_clear(q);
    PyMem_Free(q->ring);
    q->ring = NULL;
    q->cap = 0;
    q->head = 0;
}

int
gl_ready_traverse(gl_ready *q, int owned, visitproc visit, void *arg)
{
    for (size_t i = 0; i < q->n; i++) {
        gl_ready_entry *e = &q->ring[(q->head + i) & (q->cap - 1)];
        int r = gl_gc_visit(e->handle, e->untracked, owned, visit, arg);
        if (r)
            return r;
    }
    return 0;
}

PyObject *
gl_ready_list(gl_ready *q)
{
    PyObject *list = PyList_New((Py_ssize_t)q->n);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < q->n; i++)
        PyList_SET_ITEM(list, (Py_ssize_t)i,
                        Py_NewRef(q->ring[(q->head + i) & (q->cap - 1)].handle));
    return list;
}

#endif
