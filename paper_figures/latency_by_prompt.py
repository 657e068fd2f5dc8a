"""Latency against prompt number as the paper draws it (experiments 1 and 2): mean latency of the
requests in each bin of arrival order, one panel per workload at the highest load at or below
0.95 of θ*, seed 0; log scale (a queue that builds shows as a rising line)."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import ok_rows, ordered, read_series
from paper_figures.style import legend_outside, line_style, plain_log_axis, pyplot, save
from paper_figures.throughput_over_time import chosen_load

EXPERIMENTS = ("01-fluid-vs-sim", "02-latency-vs-load")


def draw(results: Path, out_png: Path) -> Path | None:
    rows = ok_rows(results)
    if not rows:
        return None
    seed = min(r["seed"] for r in rows)
    rows = [r for r in rows if r["seed"] == seed]
    workloads = ordered(r["workload"] for r in rows)
    policies = ordered(r["policy"] for r in rows)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(workloads), figsize=(3.6 * len(workloads) + 1.6, 3.2), squeeze=False)
    for ax, wl in zip(axes[0], workloads):
        mine = [r for r in rows if r["workload"] == wl]
        load = chosen_load(mine)
        for pol in policies:
            pts = [r for r in mine if r["policy"] == pol and r["load"] == load]
            series = read_series(results, pts[0]["point_id"]) if pts else None
            if not series:
                continue
            b = series["by_index"]
            xy = [(x, y) for x, y in zip(b["index"], b["mean_latency_s"]) if y is not None]
            ax.plot([x for x, _ in xy], [y for _, y in xy], lw=0.9, label=pol, **{**line_style(pol, variants=policies), "marker": None})
        plain_log_axis(ax)
        ax.set_title(f"{wl} at load {load:g}", fontsize=8)
        ax.set_xlabel("prompt number (arrival order)")
        ax.set_ylabel("mean latency (s)")
    legend_outside(axes[0][-1])
    fig.tight_layout()
    return save(fig, out_png)
