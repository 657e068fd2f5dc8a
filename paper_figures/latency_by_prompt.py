"""Latency against prompt number as the paper draws it (experiments 1 and 2): mean latency of the
requests in each bin of arrival order, one panel per workload at the highest load at or below
0.95 of θ*, seed 0; log scale (a queue that builds shows as a rising line)."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import first_seed, labels, ok_rows, series_of
from paper_figures.style import legend_outside, line_style, panel_row, plain_log_axis, pyplot, save
from paper_figures.throughput_over_time import chosen_load

EXPERIMENTS = ("01-fluid-vs-sim", "02-latency-vs-load")


def draw(results: Path, out_png: Path) -> Path | None:
    rows = first_seed(ok_rows(results))
    if not rows:
        return None
    workloads, policies = labels(rows)
    plt = pyplot()
    fig, axes = panel_row(plt, len(workloads))
    for ax, wl in zip(axes, workloads):
        mine = [r for r in rows if r["workload"] == wl]
        load = chosen_load(mine)
        for pol in policies:
            series = series_of(results, mine, pol, load)
            if not series:
                continue
            b = series["by_index"]
            xy = [(x, y) for x, y in zip(b["index"], b["mean_latency_s"]) if y is not None]
            ax.plot([x for x, _ in xy], [y for _, y in xy], lw=0.9, label=pol, **{**line_style(pol, variants=policies), "marker": None})
        plain_log_axis(ax)
        ax.set_title(f"{wl} at load {load:g}", fontsize=8)
        ax.set_xlabel("prompt number (arrival order)")
        ax.set_ylabel("mean latency (s)")
    legend_outside(axes[-1])
    fig.tight_layout()
    return save(fig, out_png)
