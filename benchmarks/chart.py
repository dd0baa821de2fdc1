"""The chart: each loop's cost relative to uvloop, a panel per group.

Workloads have different units (seconds, µs, MB, requests/s, % of a core),
so the chart shows what the tables' ratio columns show, the cost ratio to
uvloop (report.cost_ratio: above 1 behind uvloop, below 1 ahead), on a log
scale so that 2x behind and 2x ahead are as tall.  Each bar starts at the
1.0 line.  Workloads with no uvloop figure (loop-independent ones) are left
out.  Panels are packed into rows, a column per workload, and a group of
more than MAX_COLUMNS workloads is split over several panels, so that the
labels stay legible.  matplotlib is an optional dependency (pip install
.[bench]).
"""
import math
import textwrap

from benchmarks import loops
from benchmarks.report import cost_ratio, format_ratio

COLORS = {"asyncio": "#9e9e9e", "goloop": "#1f77b4", "rloop": "#ff7f0e"}
MIN_SPAN = 2             # workload columns a panel takes at least (room for its labels)
MIN_COLUMNS = 8          # workload columns in a row of panels: at least,
MAX_COLUMNS = 12         # and at most (a larger group takes several panels)
MISSING = "matplotlib is not installed, so no chart (pip install matplotlib, or pip install .[bench])"


def panel_rows(entries, results):
    """(workload name, {loop: ratio to uvloop}) of the entries with any ratio."""
    rows = []
    for entry in entries:
        ratios = {name: cost_ratio(results[entry], name, loops.REFERENCE, entry.workload.headline)
                  for name in results[entry] if name != loops.REFERENCE}
        ratios = {name: r for name, r in ratios.items() if r}
        if ratios:
            rows.append((entry.workload.name, ratios))
    return rows


def draw_panel(ax, group, rows, loop_names):
    from matplotlib.ticker import FuncFormatter, LogLocator

    width = 0.8 / len(loop_names)
    for i, name in enumerate(loop_names):
        offset = (i - (len(loop_names) - 1) / 2) * width
        xs = [j + offset for j in range(len(rows))]
        values = [ratios.get(name, math.nan) for _, ratios in rows]
        bars = ax.bar(xs, [v - 1 for v in values], width, bottom=1, label=name, color=COLORS.get(name))
        ax.bar_label(bars, labels=["" if math.isnan(v) else format_ratio(v) for v in values], fontsize=6)
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ratios = [r for _, by_loop in rows for r in by_loop.values()]
    ax.set_ylim(min(0.5, min(ratios) / 1.4), max(2.0, max(ratios) * 1.4))   # 2x either way at least
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: ""))
    ax.set_xlim(-0.5, max(len(rows), MIN_SPAN) - 0.5)
    labels = [textwrap.fill(workload, 14, break_long_words=False) for workload, _ in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_title(group, loc="left", fontsize=10)


def split(group, rows):
    """The group's panels: one, or several of at most MAX_COLUMNS workloads, as even as can be."""
    size = math.ceil(len(rows) / math.ceil(len(rows) / MAX_COLUMNS)) if rows else 1
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    if len(chunks) == 1:
        return [(group, rows)]
    return [(f"{group} ({i}/{len(chunks)})", chunk) for i, chunk in enumerate(chunks, 1)]


def layout(panels, capacity):
    """Pack the panels, in order, into rows of at most `capacity` workload
    columns: [(row, first column, span, panel)]."""
    placed, row, column = [], 0, 0
    for group, rows in panels:
        span = max(len(rows), MIN_SPAN)
        if column and column + span > capacity:
            row, column = row + 1, 0
        placed.append((row, column, min(span, capacity), (group, rows)))
        column += span
    return placed


def render(path, groups, results, title):
    """Write the PNG; groups: [(group, entries)].  Returns a line saying what was done."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return MISSING
    panels = [panel for group, entries in groups for panel in split(group, panel_rows(entries, results))]
    if not panels:
        return "no chart: no workload has a uvloop figure to compare with"
    names = [n for n in loops.LOOPS if any(n in ratios for _, rows in panels for _, ratios in rows)]
    capacity = max(MIN_COLUMNS, *(len(rows) for _, rows in panels))   # <= MAX_COLUMNS
    placed = layout(panels, capacity)
    height = placed[-1][0] + 1
    fig = plt.figure(figsize=(1 + 1.0 * capacity, 0.8 + 3.0 * height), layout="constrained")
    grid = fig.add_gridspec(height, capacity)
    for row, column, span, (group, rows) in placed:
        ax = fig.add_subplot(grid[row, column:column + span])
        draw_panel(ax, group, rows, names)
        if column == 0:
            ax.set_ylabel("cost / uvloop's (log)", fontsize=8)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper right", ncols=len(names), fontsize=8)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"
