"""What a run reports: markdown tables, JSON lines, the machine it ran on.

Every group gets a table of each workload's headline metric per loop (the
median over the repetitions) and each loop's ratio to uvloop, the loop
people pick for speed; goloop's ratio to stock asyncio, what it replaces,
too.  A ratio is a cost ratio, so that all of them read the same way
whatever the unit: x/uvloop is x's time, latency, memory or CPU over
uvloop's, and for a rate (requests/s, marked ↑) uvloop's rate over x's --
above 1 x is behind uvloop, below 1 ahead.  Under the table, every other
metric the workloads reported, per loop.  The JSON lines hold every metric
of every (workload, loop): the source of the tables, the chart and any
later comparison.
"""
import datetime
import json
import os
import platform

from benchmarks import loops

RATIO_LEGEND = ("x/y: x's cost over y's (time, latency, memory, CPU; for a rate, marked ↑, "
                "y's rate over x's): above 1 x is behind y, below 1 ahead")


def format_value(value):
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100 or float(value).is_integer():   # counts stay whole
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_ratio(ratio):
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def row(cells):
    return "| " + " | ".join(cells) + " |"


def table(header, rows):
    return "\n".join([row(header), row(["---"] * len(header))] + [row(r) for r in rows])


# -- ratios --------------------------------------------------------------------------

def headline_value(outcomes, loop_name, metric):
    outcome = outcomes.get(loop_name)
    return outcome.medians.get(metric.name) if outcome else None


def cost_ratio(outcomes, loop_name, reference, metric):
    """loop's cost over the reference's for this metric; None if either is missing or 0."""
    x, y = headline_value(outcomes, loop_name, metric), headline_value(outcomes, reference, metric)
    if not x or not y or x < 0 or y < 0:
        return None
    return y / x if metric.higher_is_better else x / y


def ratio_pairs(loop_names):
    """(loop, reference) of the ratio columns: every loop to uvloop (goloop
    first), goloop to asyncio."""
    pairs = [(name, loops.REFERENCE) for name in sorted(loop_names, key=lambda n: n != "goloop")
             if name != loops.REFERENCE and loops.REFERENCE in loop_names]
    if "goloop" in loop_names and "asyncio" in loop_names:
        pairs.append(("goloop", "asyncio"))
    return pairs


# -- the machine ---------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "CPU part")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    return {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load": os.getloadavg()[0],
        "date": datetime.date.today().isoformat(),
    }


def header(info, loop_names, reps, command):
    versions = ", ".join(f"{name} {loops.version(name)}" for name in loop_names)
    return "\n".join([
        f"Python {info['python']} on {info['cores']} cores ({info['cpu']}), {info['system']}, "
        f"load average {info['load']:.2f} at the start, {info['date']}",
        "",
        f"Loops: {versions}.  Each figure is the median of {reps} run(s), each in a fresh process, "
        f"loops alternating.  Command: `{command}`",
        "",
        RATIO_LEGEND + ".",
    ])


# -- the group tables ------------------------------------------------------------------

def unit_label(metric):
    return metric.unit + (" ↑" if metric.higher_is_better else "")


def headline_row(entry, outcomes, loop_names, pairs):
    metric = entry.workload.headline
    cells = [entry.workload.name, unit_label(metric)]
    for name in loop_names:
        outcome = outcomes.get(name)
        cells.append("error" if outcome and outcome.error else format_value(headline_value(outcomes, name, metric)))
    for name, reference in pairs:
        cells.append(format_ratio(cost_ratio(outcomes, name, reference, metric)))
    return cells


def headline_table(entries, results, loop_names):
    pairs = ratio_pairs(loop_names)
    head = ["workload", "unit", *loop_names, *(f"{name}/{reference}" for name, reference in pairs)]
    return table(head, [headline_row(e, results[e], loop_names, pairs) for e in entries])


def detail_rows(entry, outcomes, loop_names):
    for metric in entry.workload.metrics[1:]:
        values = [headline_value(outcomes, name, metric) for name in loop_names]
        if any(v is not None for v in values):
            yield [entry.workload.name, metric.name, unit_label(metric), *map(format_value, values)]


def details_table(entries, results, loop_names):
    rows = [r for e in entries for r in detail_rows(e, results[e], loop_names)]
    return table(["workload", "metric", "unit", *loop_names], rows) if rows else ""


def group_section(group, entries, results, loop_names):
    """The markdown of one group: headline table, notes, the other metrics."""
    parts = [f"## {group}", headline_table(entries, results, loop_names)]
    notes = list(dict.fromkeys(f"- {e.workload.note}" for e in entries if e.workload.note))   # once each
    if notes:
        parts.append("\n".join(notes))
    details = details_table(entries, results, loop_names)
    if details:
        parts += [f"Other metrics ({group}):", details]
    return "\n\n".join(parts)


def errors(results):
    """'workload on loop: why' for every failed (workload, loop)."""
    return [f"{entry.workload.name} on {name}: {outcome.error}"
            for entry, outcomes in results.items() for name, outcome in outcomes.items() if outcome.error]


# -- JSON lines ------------------------------------------------------------------------

def json_lines(results):
    for entry, outcomes in results.items():
        units = {m.name: m.unit for m in entry.workload.metrics}
        for name, outcome in outcomes.items():
            for metric, value in outcome.medians.items():
                yield json.dumps({"workload": entry.workload.name, "loop": name, "metric": metric,
                                  "value": float(f"{value:.4g}"), "unit": units.get(metric, ""),
                                  "reps": outcome.reps, "group": entry.workload.group},
                                 ensure_ascii=False)


def write_text(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
