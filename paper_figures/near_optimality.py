"""Fluid against simulation (experiment 1): decode throughput / throughput*, peak KV / M* and
mean step / ΔT* against load, one row per workload. Above the fluid capacity the references are
those of the capacity boundary (the most any policy can carry); 1 is the fluid benchmark."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import labels, ok_rows
from paper_figures.style import FLUID_COLOUR, legend_outside, line_style, pyplot, save

EXPERIMENTS = ("01-fluid-vs-sim", "08-gpu-h200-predictions")
PANELS = (
    ("throughput_over_star", "decode throughput / throughput*"),
    ("peak_kv_over_memory_star", "peak KV in use / M*"),
    ("mean_step_over_dt_star", "mean step time / ΔT*"),
)


def draw(results: Path, out_png: Path) -> Path | None:
    rows = ok_rows(results)
    if not rows:
        return None
    workloads, policies = labels(rows)
    plt = pyplot()
    fig, axes = plt.subplots(len(workloads), 3, figsize=(11.5, 2.6 * len(workloads)), squeeze=False, sharex=True)
    for i, wl in enumerate(workloads):
        for j, (key, title) in enumerate(PANELS):
            ax = axes[i][j]
            for pol in policies:
                pts = [r for r in rows if r["workload"] == wl and r["policy"] == pol and r.get(key) is not None]
                loads = sorted({r["load"] for r in pts})
                ys = [sum(r[key] for r in pts if r["load"] == x) / sum(1 for r in pts if r["load"] == x) for x in loads]
                ax.plot(loads, ys, lw=1.1, ms=3.5, label=pol, **line_style(pol, variants=policies))
            ax.axhline(1.0, color=FLUID_COLOUR, ls="--", lw=0.8, label="fluid benchmark")
            ax.axvline(1.0, color="#888888", ls=":", lw=0.8)
            ax.set_title(f"{wl}: {title}", fontsize=8)
            if i == len(workloads) - 1:
                ax.set_xlabel("load (fraction of fluid capacity θ*)")
            ax.set_ylabel("ratio (1 = fluid)")
    legend_outside(axes[0][-1], title="policy")
    fig.tight_layout()
    return save(fig, out_png)
