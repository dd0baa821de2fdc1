"""What every probe here shares: its deadline and the control switch."""
import faulthandler
import os
import sys
import time


def burn(seconds):
    """Pure Python for `seconds`, no await: a step only preemption stops."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def start(default_timeout, **unsafe):
    """Arm faulthandler to dump every thread and exit on a hang (after
    PROBE_TIMEOUT seconds, else default_timeout); with --unsafe on the
    command line, turn off the protections named in `unsafe` (see
    goloop._goloop._unsafe_preempt): the probe's control run.  The controls
    also name libraries=True: the probes' locks and greenlets sit in
    library code (logging, greenlet, SQLAlchemy), which goloop would not
    interrupt anyway, and the control must show the protection under test
    is what keeps them safe."""
    faulthandler.dump_traceback_later(float(os.environ.get("PROBE_TIMEOUT", default_timeout)), exit=True)
    import goloop   # (here: lock_probe makes a lock before goloop is imported)

    if "--unsafe" in sys.argv:
        goloop._goloop._unsafe_preempt(**unsafe)
