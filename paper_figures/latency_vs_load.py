"""Mean latency against load, one panel per workload, with each policy's λ* marked (experiment 2).

x: load as a fraction of the fluid capacity scale θ* (1 = the fluid capacity, dashed); y: mean
latency (log scale: values span decades near capacity); triangles under the axis: λ* by bisection
(`bisection.json`), with its half-width as a bar.
"""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import labels, ok_rows, read_bisection
from paper_figures.style import FLUID_COLOUR, legend_outside, line_style, panel_row, plain_log_axis, pyplot, save

EXPERIMENTS = ("02-latency-vs-load", "08-gpu-h200-predictions")


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def draw(results: Path, out_png: Path, *, metric: str = "mean_latency_s") -> Path | None:
    rows = ok_rows(results)
    if not rows:
        return None
    bisection = read_bisection(results)
    workloads, policies = labels(rows)
    plt = pyplot()
    fig, axes = panel_row(plt, len(workloads), height=3.4)
    for ax, wl in zip(axes, workloads):
        for pol in policies:
            pts = [r for r in rows if r["workload"] == wl and r["policy"] == pol]
            loads = sorted({r["load"] for r in pts})
            ys = [_mean([r[metric] for r in pts if r["load"] == x]) for x in loads]
            style = line_style(pol, pts[0]["scheduler"] if pts else None, variants=policies)
            ax.plot(loads, ys, lw=1.1, ms=3.5, label=pol, **style)
            stars = [b for b in bisection if b["workload"] == wl and b["policy"] == pol and b["bound"] == "bracket"]
            if stars:
                x = _mean([b["lambda_star_load"] for b in stars])
                half = _mean([b["half_width"] for b in stars])
                ax.errorbar([x], [0.0], xerr=[half], transform=ax.get_xaxis_transform(), marker="^", ms=6,
                            color=style["color"], lw=1, clip_on=False, zorder=5)
        ax.axvline(1.0, color=FLUID_COLOUR, ls="--", lw=0.9, label="fluid capacity θ*")
        plain_log_axis(ax)
        ax.set_title(wl)
        ax.set_xlabel("load (fraction of fluid capacity θ*)")
    axes[0].set_ylabel(metric.replace("_s", "").replace("_", " ") + " (s)")
    legend_outside(axes[-1], title="policy (▲ = λ* by bisection)")
    fig.tight_layout()
    return save(fig, out_png)
