"""Cumulative decode throughput over time against the fluid ODE's benchmark over time (experiment 3).

Per workload, at the highest load at or below 0.95 of θ*: on top, decode tokens of the requests
completed by time t, one line per policy (seed 0), and the benchmark's (`fluid/over_time.py`,
stored in each point's series as `fluid_over_time`, black dashed); below, each policy's ratio to
the benchmark from the point's warm-up cut on (the ratio whose minimum and end the report's table
gives). Points without a stored benchmark (sweeps run before it was stored) are left out.
"""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import first_seed, labels, ok_rows, series_of
from paper_figures.style import FLUID_COLOUR, legend_outside, line_style, pad_top, pyplot, save
from paper_figures.throughput_over_time import chosen_load

EXPERIMENTS = ("03-unknown-lengths",)
COLUMNS = 3


def _panels(results: Path, rows: list[dict]):
    """[(workload, load, {policy: series})] of the workloads whose series hold the benchmark."""
    workloads, policies = labels(rows)
    out = []
    for wl in workloads:
        mine = [r for r in rows if r["workload"] == wl]
        load = chosen_load(mine)
        found = {}
        for pol in policies:
            series = series_of(results, mine, pol, load)
            if series and series.get("fluid_over_time") and "completed_decode_tokens" in series["time"]:
                found[pol] = (series, next(r for r in mine if r["policy"] == pol and r["load"] == load))
        if found:
            out.append((wl, load, found))
    return out, policies


def draw(results: Path, out_png: Path) -> Path | None:
    rows = first_seed(ok_rows(results))
    panels, policies = _panels(results, rows) if rows else ([], [])
    if not panels:
        return None
    cols = min(COLUMNS, len(panels))
    blocks = -(-len(panels) // cols)
    plt = pyplot()
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(3.8 * cols + 1.8, 4.6 * blocks), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1] * blocks})
    for i in range(blocks * cols):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        if i >= len(panels):
            top.set_visible(False), bottom.set_visible(False)
            continue
        wl, load, found = panels[i]
        bench = None
        for pol, (series, row) in found.items():
            edges = series["time"]["edges_s"]
            run = series["time"]["completed_decode_tokens"]
            bench = series["fluid_over_time"]["cumulative_decode_tokens"]
            style = {**line_style(pol, variants=policies), "marker": None}
            top.plot(edges, [v / 1e3 for v in run], lw=0.9, label=pol, **style)
            start = row.get("warmup_s") or 0.0
            share = 0.02 * bench[-1]
            pts = [(t, a / b) for t, a, b in zip(edges, run, bench) if t >= start and b >= share and b > 0]
            if pts:
                bottom.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.9, **style)
        edges = next(iter(found.values()))[0]["time"]["edges_s"]
        top.plot(edges, [v / 1e3 for v in bench], color=FLUID_COLOUR, ls="--", lw=1.3, label="fluid ODE benchmark")
        bottom.axhline(1.0, color=FLUID_COLOUR, ls="--", lw=1.0)
        pad_top(top)
        top.set_title(f"{wl} at load {load:g}", fontsize=8)
        top.set_ylabel("completed decode tokens (thousands)")
        bottom.set_ylabel("run / benchmark")
        bottom.set_xlabel("time (s)")
        bottom.set_xlim(top.get_xlim())
        pad_top(bottom)
    handles, names = {}, []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in handles:
                handles[n] = h
                names.append(n)
    legend_outside(axes[0, cols - 1], handles=[handles[n] for n in names], labels=names)
    fig.tight_layout()
    return save(fig, out_png)
