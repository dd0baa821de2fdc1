"""The environment of a child interpreter started by a test: it must import
the very goloop this process imported (the source tree with PYTHONPATH set,
or a pip-installed package).  Shared by tests/conftest.py's run_python and by
the application tests' server processes (tests/apps)."""
import os
import site


def _goloop_parent():
    import goloop

    return os.path.dirname(os.path.dirname(os.path.abspath(goloop.__file__)))


def subprocess_env(extra=None, drop=("GOLOOP_STACK_SIZE",)):
    """Environment for a child interpreter that imports this goloop."""
    env = dict(os.environ)
    for name in drop:
        env.pop(name, None)
    parent = _goloop_parent()
    site_dirs = set(site.getsitepackages() + [site.getusersitepackages()])
    if parent not in site_dirs:
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = parent + (os.pathsep + old if old else "")
    env.setdefault("PYTHONFAULTHANDLER", "1")   # a crash shows a traceback
    if extra:
        env.update(extra)
    return env
