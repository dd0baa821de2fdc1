/*
 * timers.c — the timer heap: call_later/call_at handles by due time.
 *
 * A 4-ary min-heap of (when, seq, handle), as Go's runtime keeps its timers
 * (time.go, timerHeapN = 4): half the depth of a binary heap, and the four
 * children of a node share a cache line or two, so a sift-down touches
 * fewer lines for the same comparisons.  The key is inline — a double and a
 * sequence number — so ordering never calls TimerHandle.__lt__.
 *
 * Ties: timers due at the same time run in the order they were scheduled
 * (seq).  asyncio's heapq compares `when` only and leaves ties to the
 * heap's shape; FIFO is one of the orders it can produce, and the one a
 * reader of call_at() expects.
 *
 * Cancellation is lazy, as in asyncio and Go: TimerHandle.cancel() calls
 * the loop's _timer_handle_cancelled, which counts a zombie; the entry
 * stays until it reaches the head, or until zombies are more than a quarter
 * of a heap of over 100 timers (Go's threshold; asyncio waits for half),
 * when one pass drops them all and rebuilds the heap in O(n).
 */
#include "core.h"

#if GL_PY_SUPPORTED && GL_ARCH_SUPPORTED

#define ARITY 4
#define COMPACT_MIN 100

static inline int
earlier(const gl_timer *a, const gl_timer *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void
sift_up(gl_timer *h, size_t i)
{
    gl_timer t = h[i];
    while (i > 0) {
        size_t parent = (i - 1) / ARITY;
        if (!earlier(&t, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = t;
}

static void
sift_down(gl_timer *h, size_t n, size_t i)
{
    gl_timer t = h[i];
    for (;;) {
        size_t first = i * ARITY + 1;
        if (first >= n)
            break;
        size_t last = first + ARITY < n ? first + ARITY : n;
        size_t best = first;
        for (size_t k = first + 1; k < last; k++)
            if (earlier(&h[k], &h[best]))
                best = k;
        if (!earlier(&h[best], &t))
            break;
        h[i] = h[best];
        i = best;
    }
    h[i] = t;
}

int
gl_timers_push(gl_timers *t, double when, PyObject *handle)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        gl_timer *heap = PyMem_Realloc(t->heap, cap * sizeof *heap);
        if (heap == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->heap = heap;
        t->cap = cap;
    }
    t->heap[t->n] = (gl_timer){when, t->seq++, Py_NewRef(handle), gl_gc_hide(handle)};
    sift_up(t->heap, t->n++);
    return 0;
}

PyObject *
gl_timers_pop(gl_timers *t, int *hidden)
{
    assert(t->n > 0);
    PyObject *h = t->heap[0].handle;
    if (hidden != NULL)
        *hidden = t->heap[0].untracked;
    else
        gl_gc_show(h, t->heap[0].untracked);
    if (--t->n > 0) {
        t->heap[0] = t->heap[t->n];
        sift_down(t->heap, t->n, 0);
    }
    return h;
}

static void
unschedule(struct gl_core *c, PyObject *handle)   /* steals handle */
{
    PyObject **p = &GL_SLOT(handle, c->off_scheduled);
    if (Py_TYPE(handle) == c->timer_type || PyObject_TypeCheck(handle, c->timer_type))
        Py_XSETREF(*p, Py_NewRef(Py_False));
    Py_DECREF(handle);
}

int
gl_timers_drop_cancelled(struct gl_core *c, gl_timers *t)
{
    if (t->n > COMPACT_MIN && t->zombies > t->n / 4) {
        /* Keep the live ones in place, then heapify bottom-up. */
        size_t kept = 0, n = t->n;
        gl_timer *dropped = PyMem_Malloc((n ? n : 1) * sizeof *dropped);
        if (dropped == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        size_t ndropped = 0;
        for (size_t i = 0; i < n; i++) {
            int cancelled = gl_handle_cancelled(c, t->heap[i].handle);
            if (cancelled < 0)
                PyErr_Clear();   /* an odd _cancelled: keep it, run decides */
            if (cancelled > 0)
                dropped[ndropped++] = t->heap[i];
            else
                t->heap[kept++] = t->heap[i];
        }
        t->n = kept;
        t->zombies = 0;
        for (size_t i = kept / ARITY + 1; i-- > 0;)
            if (i < kept)
                sift_down(t->heap, kept, i);
        /* Released only now that the heap is whole: a finalizer may
         * schedule timers. */
        for (size_t i = 0; i < ndropped; i++) {
            gl_gc_show(dropped[i].handle, dropped[i].untracked);
            unschedule(c, dropped[i].handle);
        }
        PyMem_Free(dropped);
        return 0;
    }
    while (t->n > 0) {
        int cancelled = gl_handle_cancelled(c, t->heap[0].handle);
        if (cancelled <= 0) {
            if (cancelled < 0)
                PyErr_Clear();
            break;
        }
        if (t->zombies > 0)
            t->zombies--;
        unschedule(c, gl_timers_pop(t, NULL));
    }
    return 0;
}

void
gl_timers_clear(gl_timers *t)
{
    while (t->n > 0) {
        gl_timer e = t->heap[--t->n];
        gl_gc_show(e.handle, e.untracked);
        Py_DECREF(e.handle);
    }
    t->zombies = 0;
}

void
gl_timers_free(gl_timers *t)
{
    gl_timers_clear(t);
    PyMem_Free(t->heap);
    t->heap = NULL;
    t->cap = 0;
}

int
gl_timers_traverse(gl_timers *t, int owned, visitproc visit, void *arg)
{
    for (size_t i = 0; i < t->n; i++) {
        int r = gl_gc_visit(t->heap[i].handle, t->heap[i].untracked, owned, visit, arg);
        if (r)
            return r;
    }
    return 0;
}

static int
cmp_timers(const void *a, const void *b)
{
    const gl_timer *x = a, *y = b;
    return earlier(x, y) ? -1 : earlier(y, x) ? 1 : 0;
}

PyObject *
gl_timers_list(gl_timers *t)
{
    gl_timer *copy = PyMem_Malloc((t->n ? t->n : 1) * sizeof *copy);
    if (copy == NULL)
        return PyErr_NoMemory();
    if (t->n > 0) {   /* an empty heap may be NULL: memcpy/qsort need real pointers */
        memcpy(copy, t->heap, t->n * sizeof *copy);
        qsort(copy, t->n, sizeof *copy, cmp_timers);
    }
    PyObject *list = PyList_New((Py_ssize_t)t->n);
    for (size_t i = 0; list != NULL && i < t->n; i++)
        PyList_SET_ITEM(list, (Py_ssize_t)i, Py_NewRef(copy[i].handle));
    PyMem_Free(copy);
    return list;
}

#endif
