"""Decode throughput over time as the paper draws it (experiments 1 and 3): one panel per
workload at the highest load at or below 0.95 of θ*, one line per policy (seed 0), with the
fluid throughput* of that load (dashed)."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import first_seed, labels, ok_rows, series_of
from paper_figures.style import FLUID_COLOUR, legend_outside, line_style, pad_top, pyplot, save

EXPERIMENTS = ("01-fluid-vs-sim", "03-unknown-lengths")


def chosen_load(rows, limit: float = 0.95) -> float:
    loads = sorted({r["load"] for r in rows})
    below = [x for x in loads if x <= limit]
    return below[-1] if below else loads[0]


def draw(results: Path, out_png: Path) -> Path | None:
    rows = first_seed(ok_rows(results))
    if not rows:
        return None
    workloads, policies = labels(rows)
    cols = min(3, len(workloads))
    nrows = -(-len(workloads) // cols)
    plt = pyplot()
    fig, axes = plt.subplots(nrows, cols, figsize=(3.8 * cols + 1.6, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(workloads):]:
        ax.set_visible(False)
    for ax, wl in zip(axes.flat, workloads):
        mine = [r for r in rows if r["workload"] == wl]
        load = chosen_load(mine)
        for pol in policies:
            series = series_of(results, mine, pol, load)
            if not series:
                continue
            t = series["time"]
            centres = [(a + b) / 2 for a, b in zip(t["edges_s"][:-1], t["edges_s"][1:])]
            ax.plot(centres, t["decode_tokens_per_s"], lw=0.9, label=pol, **{**line_style(pol, variants=policies), "marker": None})
        star = next((r["fluid_throughput_star_tokens_per_s"] for r in mine if r["load"] == load), None)
        if star:
            ax.axhline(star, color=FLUID_COLOUR, ls="--", lw=1, label="fluid throughput*")
        pad_top(ax)
        ax.set_title(f"{wl} at load {load:g}", fontsize=8)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("decode tokens/s")
    legend_outside(axes.flat[cols - 1])
    fig.tight_layout()
    return save(fig, out_png)
