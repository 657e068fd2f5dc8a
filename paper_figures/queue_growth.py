"""Requests in the system over time (experiment 5, staircase batch time): one panel per load,
one line per policy. A policy that is not throughput-optimal lets the count grow without bound
below the boundary."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import first_seed, labels, ok_rows, series_of
from paper_figures.style import legend_outside, line_style, panel_row, pyplot, save

EXPERIMENTS = ("05-throughput-optimality",)


def draw(results: Path, out_png: Path) -> Path | None:
    rows = first_seed(ok_rows(results))
    if not rows:
        return None
    loads = sorted({r["load"] for r in rows})
    _, policies = labels(rows)
    plt = pyplot()
    fig, axes = panel_row(plt, len(loads), width=4.2, legend_width=1.4)
    for ax, load in zip(axes, loads):
        for pol in policies:
            series = series_of(results, rows, pol, load)
            if not series:
                continue
            t = series["time"]
            ax.plot(t["edges_s"], t["in_system"], lw=1, label=pol, **{**line_style(pol, variants=policies), "marker": None})
        ax.set_title(f"{rows[0]['workload']} at {load:g} of the boundary", fontsize=8)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("requests in the system")
        ax.set_yscale("symlog", linthresh=10)
    legend_outside(axes[-1])
    fig.tight_layout()
    return save(fig, out_png)
