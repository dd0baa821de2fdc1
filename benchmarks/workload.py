"""What a benchmark workload is, for the runner (python -m benchmarks).

A workload module (benchmarks/workloads/<group>.py) lists its workloads in a
module-level WORKLOADS list of Workload objects, and may list more in
FULL_WORKLOADS (left out of --quick runs) and EXTRA_WORKLOADS (run only when
a -k pattern selects them: figures kept for an issue of their own, too long
or too narrow for every run).  The runner runs each (workload, loop) pair in
a fresh interpreter:

    python -m benchmarks --child <module>:<workload name> <loop name> [--quick]

which calls workload.run(loop_name, quick) and prints the dict it returns
as one JSON line: {metric: value}.  run() may start processes of its own
(a server, load generators); it must bound everything it starts in count
and time, use loopback only, and kill what it started before returning.

Loop names are those of benchmarks.loops.LOOPS ("asyncio", "uvloop",
"goloop", "rloop"); benchmarks.loops.new_event_loop(name) makes one, and
benchmarks.loops.run(name, main) runs a coroutine on a new one as
asyncio.run() does.  size() picks a workload's count or duration for the
run: the full or the --quick one, times the runner's hidden --scale (which
tests use to run workloads tiny).
"""
import os
from dataclasses import dataclass, field
from typing import Callable

SCALE_ENV = "BENCHMARKS_SCALE"    # the runner passes --scale to the child here


def size(full, quick_size, quick):
    """full or quick_size (by `quick`) times the run's scale; an int stays
    an int of at least 1."""
    value = (quick_size if quick else full) * float(os.environ.get(SCALE_ENV, "1"))
    return max(1, round(value)) if isinstance(full, int) else value


@dataclass(frozen=True)
class Metric:
    name: str                 # key in run()'s result: "seconds", "requests_per_s"
    unit: str                 # "s", "µs", "req/s", "MB", "ms", "%"
    higher_is_better: bool = False


@dataclass(frozen=True)
class Workload:
    name: str                 # unique in the whole suite: "call_soon 1M"
    group: str                # table it is printed in: "scheduling", "network", ...
    run: Callable[[str, bool], dict]   # run(loop_name, quick) -> {metric name: value}
    metrics: tuple            # Metric objects; the first is the headline (table, chart, ratios)
    loops: tuple = ("asyncio", "uvloop", "goloop", "rloop")
    note: str = ""            # one line shown under the group's table
    max_reps: int = 0         # at most this many repetitions (0: the runner's --reps), for
                              # workloads too many to repeat 5 times within the run's budget
    extra: dict = field(default_factory=dict)   # free for the module's own use

    @property
    def headline(self):
        return self.metrics[0]
