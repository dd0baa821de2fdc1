"""python -m goloop script.py [args...]   |   python -m goloop -m module [args...]

Runs an asyncio program on goloop without changing it: before the program
starts, asyncio is made to create goloop loops (_api.use_for_new_loops: the
event loop policy up to 3.13, asyncio.new_event_loop from 3.14, where
policies are deprecated), so its asyncio.run() gets a goloop loop.  The
program sees the same sys.argv and sys.path[0] as under `python script.py`
or `python -m module`.
"""
import os
import runpy
import sys

from ._api import use_for_new_loops

USAGE = "usage: python -m goloop script.py [args...] | python -m goloop -m module [args...]"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    use_for_new_loops()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = argv[1:]
        sys.path.insert(0, os.getcwd())
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        if not os.path.exists(script):
            print(f"python -m goloop: can't open file {script!r}: no such file", file=sys.stderr)
            return 2
        sys.argv = argv
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
