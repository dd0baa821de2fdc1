/*
 * pyinternal.c — the one value the glue reads from CPython's internal
 * structures, kept in a file of its own because reading it needs
 * Py_BUILD_CORE (which changes what Python.h declares) and the internal
 * headers.
 *
 * sys.monitoring's version (3.12+): CPython bumps it whenever the set of
 * enabled events changes (sys.settrace, sys.setprofile and
 * sys.monitoring.set_events all go through it) and instruments the code of
 * the frames running at that moment; pystate.h compares it across a switch
 * to find stacks that were suspended meanwhile.
 */
#define Py_BUILD_CORE 1
#include "pystate.h"

#if GL_PY_SUPPORTED && !defined(GL_PY311)

#include "internal/pycore_interp.h"

uint64_t
gl_monitoring_version(PyThreadState *ts)
{
#ifdef GL_PY313
    return (uint64_t)ts->interp->ceval.instrumentation_version;
#else
    return ts->interp->monitoring_version;
#endif
}

#endif
