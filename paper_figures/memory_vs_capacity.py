"""M*(λ) against C (experiment 1): the fluid benchmark's KV memory at each load, the peak KV each
policy used in simulation, and the capacity C, one panel per workload."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import labels, ok_rows
from paper_figures.style import FLUID_COLOUR, legend_outside, line_style, panel_row, pyplot, save

EXPERIMENTS = ("01-fluid-vs-sim",)


def draw(results: Path, out_png: Path) -> Path | None:
    rows = ok_rows(results)
    if not rows:
        return None
    workloads, policies = labels(rows)
    plt = pyplot()
    fig, axes = panel_row(plt, len(workloads))
    for ax, wl in zip(axes, workloads):
        mine = [r for r in rows if r["workload"] == wl]
        stable = sorted({(r["load"], r["fluid_memory_star_tokens"]) for r in mine if r["fluid_stable"]})
        ax.plot([x for x, _ in stable], [m for _, m in stable], color=FLUID_COLOUR, lw=1.4, label="fluid M*(λ)")
        ax.axhline(mine[0]["fluid_kv_capacity_tokens"], color=FLUID_COLOUR, ls=":", lw=1, label="capacity C")
        for k, pol in enumerate(policies):
            pts = [r for r in mine if r["policy"] == pol]
            style = line_style(pol, variants=policies)
            ax.scatter([r["load"] + (k - 0.5) * 0.006 for r in pts], [r["peak_kv_tokens"] for r in pts], s=10,
                       color=style["color"], marker=style["marker"], label=f"{pol}: peak KV", zorder=3)
        ax.set_title(wl)
        ax.set_xlabel("load (fraction of fluid capacity θ*)")
        ax.set_ylabel("KV tokens")
        ax.set_ylim(0, mine[0]["fluid_kv_capacity_tokens"] * 1.15)
    legend_outside(axes[-1])
    fig.tight_layout()
    return save(fig, out_png)
