"""Requests in the system over time (experiment 5, staircase batch time): one panel per load,
one line per policy. A policy that is not throughput-optimal lets the count grow without bound
below the boundary."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import ok_rows, ordered, read_series
from paper_figures.style import legend_outside, line_style, pyplot, save

EXPERIMENTS = ("05-throughput-optimality",)


def draw(results: Path, out_png: Path) -> Path | None:
    rows = ok_rows(results)
    if not rows:
        return None
    seed = min(r["seed"] for r in rows)
    rows = [r for r in rows if r["seed"] == seed]
    loads = sorted({r["load"] for r in rows})
    policies = ordered(r["policy"] for r in rows)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(loads), figsize=(4.2 * len(loads) + 1.4, 3.2), squeeze=False)
    for ax, load in zip(axes[0], loads):
        for pol in policies:
            pts = [r for r in rows if r["policy"] == pol and r["load"] == load]
            series = read_series(results, pts[0]["point_id"]) if pts else None
            if not series:
                continue
            t = series["time"]
            ax.plot(t["edges_s"], t["in_system"], lw=1, label=pol, **{**line_style(pol, variants=policies), "marker": None})
        ax.set_title(f"{rows[0]['workload']} at {load:g} of the boundary", fontsize=8)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("requests in the system")
        ax.set_yscale("symlog", linthresh=10)
    legend_outside(axes[0][-1])
    fig.tight_layout()
    return save(fig, out_png)
