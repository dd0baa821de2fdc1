/*
 * pyinternal.c — the values the glue reads from CPython's internal
 * structures, kept in a file of their own because reading them needs
 * Py_BUILD_CORE (which changes what Python.h declares) and the internal
 * headers.
 *
 * sys.monitoring's version (3.12+): CPython bumps it whenever the set of
 * enabled events changes (sys.settrace, sys.setprofile and
 * sys.monitoring.set_events all go through it) and instruments the code of
 * the frames running at that moment; pystate.h compares it across a switch
 * to find stacks that were suspended meanwhile.
 *
 * The C-stack limits (3.14+): c_stack_top, c_stack_soft_limit and
 * c_stack_hard_limit of _PyThreadStateImpl, which describe the stack the
 * thread runs on (pystate.h).  Internal fields move between patch releases
 * (3.14.1 added some), so the extension must be built against the headers
 * of the interpreter it runs on, as pip does.
 */
#define Py_BUILD_CORE 1
#include "pystate.h"

#if GL_PY_SUPPORTED && GL_PY_MINOR >= 12

#include "internal/pycore_interp.h"
#if GL_PY_MINOR >= 14
#  include "internal/pycore_tstate.h"
#  include "internal/pycore_pythonrun.h"
#endif

uint64_t
gl_monitoring_version(PyThreadState *ts)
{
#if GL_PY_MINOR >= 13
    return (uint64_t)ts->interp->ceval.instrumentation_version;
#else
    return ts->interp->monitoring_version;
#endif
}

#if GL_PY_MINOR >= 14
void
gl_cstack_save(PyThreadState *ts, gl_cstack *c)
{
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    c->top = impl->c_stack_top;
    c->soft_limit = impl->c_stack_soft_limit;
    c->hard_limit = impl->c_stack_hard_limit;
}

void
gl_cstack_restore(PyThreadState *ts, const gl_cstack *c)
{
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    impl->c_stack_top = c->top;
    impl->c_stack_soft_limit = c->soft_limit;
    impl->c_stack_hard_limit = c->hard_limit;
}

size_t
gl_cstack_min_size(void)
{
    return _PyOS_MIN_STACK_SIZE;
}
#endif

#endif
