"""The runner: every workload on every loop, each run in a fresh interpreter.

Why a fresh interpreter per (workload, loop, repetition): a loop's first run
in a process pays for imports, code objects and allocator growth that later
ones do not, workloads leave memory and threads behind, and goloop's
preemption is process-wide -- no run may see another's leftovers.  Why
alternate the loops within each repetition (and rotate which goes first): a
shared machine's load drifts over minutes, and drift must hit every loop
alike, not whichever ran last.  Medians over the repetitions, because one
disturbed run must not move the figure.

A run that fails (a non-zero exit, no JSON line, a timeout) is recorded as
an error for its (workload, loop) and not repeated; the rest of the suite
goes on.  A run is killed with its whole process group (servers and load
generators a workload started) at the timeout, and that group is killed
after a normal exit too, so nothing outlives its run.
"""
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from benchmarks import ROOT, loops
from benchmarks.report import format_value
from benchmarks.workload import SCALE_ENV, Workload

WORKLOADS_DIR = os.path.join(ROOT, "benchmarks", "workloads")
# groups in this order first (tables, chart panels), then any other, by name
GROUP_ORDER = ("scheduling", "network", "http", "preemption", "memory")
STDERR_TAIL = 6          # lines of a failed run's stderr kept for the report


@dataclass(frozen=True, eq=False)       # hashed by identity: a Workload holds a dict
class Entry:
    """A workload and where it comes from."""
    module: str                  # its module's name in benchmarks/workloads
    workload: Workload
    extra: bool = False          # listed in EXTRA_WORKLOADS: run only when -k selects it
    full_only: bool = False      # listed in FULL_WORKLOADS: not in a --quick run unless -k selects it

    @property
    def id(self):
        return f"{self.module}:{self.workload.name}"


@dataclass
class Outcome:
    """One workload on one loop: medians of every metric over the good runs,
    or why it failed."""
    samples: list = field(default_factory=list)
    error: str = None

    @property
    def reps(self):
        return len(self.samples)

    @property
    def medians(self):
        if self.error or not self.samples:
            return {}
        names = dict.fromkeys(name for sample in self.samples for name in sample)
        values = {name: [s[name] for s in self.samples if s.get(name) is not None] for name in names}
        return {name: statistics.median(v) for name, v in values.items() if v}


class RunFailed(Exception):
    pass


# -- finding workloads -------------------------------------------------------------

def workload_modules():
    return sorted(name[:-3] for name in os.listdir(WORKLOADS_DIR)
                  if name.endswith(".py") and not name.startswith("_"))


def module_entries(module):
    mod = importlib.import_module(f"benchmarks.workloads.{module}")
    return ([Entry(module, w) for w in getattr(mod, "WORKLOADS", [])]
            + [Entry(module, w, full_only=True) for w in getattr(mod, "FULL_WORKLOADS", [])]
            + [Entry(module, w, extra=True) for w in getattr(mod, "EXTRA_WORKLOADS", [])])


def group_rank(group):
    return (GROUP_ORDER.index(group), "") if group in GROUP_ORDER else (len(GROUP_ORDER), group)


def discover():
    """(entries in group order, {module: why it could not be imported})."""
    entries, broken = [], {}
    for module in workload_modules():
        try:
            entries += module_entries(module)
        except Exception as e:           # one broken module must not stop the suite
            broken[module] = f"{type(e).__name__}: {e}"
    seen = set()
    for entry in entries:
        if entry.workload.name in seen:
            raise SystemExit(f"two workloads are named {entry.workload.name!r}")
        seen.add(entry.workload.name)
    return sorted(entries, key=lambda e: group_rank(e.workload.group)), broken


def matches(entry, pattern):
    text = f"{entry.id} {entry.workload.group}".lower()
    return pattern.lower() in text


def select(entries, patterns, quick=False):
    """Without patterns the regular workloads (and, unless quick, the
    full-run ones); with them, every workload (extra ones too) whose name,
    group or module contains one of them."""
    if not patterns:
        return [e for e in entries if not e.extra and not (quick and e.full_only)]
    return [e for e in entries if any(matches(e, p) for p in patterns)]


def find(entry_id):
    """The entry 'module:workload name' (imports only that module)."""
    module, _, name = entry_id.partition(":")
    for entry in module_entries(module):
        if entry.workload.name == name:
            return entry
    raise SystemExit(f"no workload {name!r} in benchmarks/workloads/{module}.py")


# -- one run ---------------------------------------------------------------------------

def child_main(entry_id, loop_name, quick):
    """In the child: run the workload once and print its metrics as one JSON line."""
    metrics = find(entry_id).workload.run(loop_name, quick)
    print(json.dumps(metrics), flush=True)


def child_command(entry, loop_name, quick):
    return ([sys.executable, "-m", "benchmarks", "--child", entry.id, loop_name]
            + (["--quick"] if quick else []))


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def last_lines(text, n=STDERR_TAIL):
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])


def run_once(entry, loop_name, quick, scale, timeout):
    """The metrics of one run in a fresh interpreter; RunFailed if it fails."""
    env = dict(os.environ, **{SCALE_ENV: str(scale)})
    proc = subprocess.Popen(child_command(entry, loop_name, quick), cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.communicate()
        raise RunFailed(f"timed out after {timeout:g} s") from None
    finally:
        kill_group(proc.pid)
    if proc.returncode:
        raise RunFailed(f"exit status {proc.returncode}: {last_lines(err)}")
    try:
        metrics = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RunFailed(f"no JSON line in its output: {last_lines(out + err)}") from None
    if not isinstance(metrics, dict):
        raise RunFailed(f"printed {metrics!r}, not an object of metrics")
    return metrics


# -- the suite ---------------------------------------------------------------------------

@dataclass
class Options:
    reps: int
    quick: bool = False
    scale: float = 1.0
    timeout: float = 180.0


def rotated(names, k):
    k %= len(names)
    return names[k:] + names[:k]


def loops_for(entry, wanted):
    return [name for name in loops.LOOPS if name in wanted and name in entry.workload.loops]


def measure(entry, loop_names, options):
    """{loop: Outcome} over options.reps repetitions (fewer if the workload
    caps them), loops alternating."""
    outcomes = {name: Outcome() for name in loop_names}
    reps = min(options.reps, entry.workload.max_reps or options.reps)
    for rep in range(reps):
        for name in rotated(loop_names, rep):
            outcome = outcomes[name]
            if outcome.error:
                continue
            try:
                outcome.samples.append(run_once(entry, name, options.quick, options.scale, options.timeout))
            except RunFailed as e:
                outcome.error = str(e)
    return outcomes


def progress(i, total, entry, outcomes, took):
    cells = "  ".join(f"{name} {'error' if o.error else format_value(o.medians.get(entry.workload.headline.name))}"
                      for name, o in outcomes.items())
    print(f"[{i}/{total}] {entry.workload.name} ({entry.workload.headline.unit}): {cells}  ({took:.1f} s)",
          file=sys.stderr, flush=True)


def run_suite(entries, loop_names, options, on_group_done):
    """{entry: {loop: Outcome}}; calls on_group_done(group, its results) as each group ends."""
    results, group = {}, None
    for i, entry in enumerate(entries, 1):
        if group is not None and entry.workload.group != group:
            on_group_done(group, results)
        group = entry.workload.group
        t0 = time.monotonic()
        results[entry] = measure(entry, loops_for(entry, loop_names), options)
        progress(i, len(entries), entry, results[entry], time.monotonic() - t0)
    if group is not None:
        on_group_done(group, results)
    return results
