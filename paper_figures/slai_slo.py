"""SLO-aware scheduling (experiment 4): the TTFT distribution (percentiles) per policy at the
highest load at or below 0.85 of θ*, p99 TBT per tier against each tier's SLO, and SLO capacity
(highest load with median TTFT < 0.5 s and every tier's p99 TBT within its SLO) by bisection."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import first_seed, labels, ok_rows, read_bisection, series_of
from paper_figures.style import FLUID_COLOUR, legend_outside, line_style, plain_log_axis, pyplot, save
from paper_figures.throughput_over_time import chosen_load

EXPERIMENTS = ("04-slo-aware",)


def draw(results: Path, out_png: Path) -> Path | None:
    rows = first_seed(ok_rows(results))
    if not rows:
        return None
    load = chosen_load(rows, 0.85)
    _, policies = labels(rows)
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.4))
    tiers_seen = {}
    for k, pol in enumerate(policies):
        series = series_of(results, rows, pol, load)
        if not series:
            continue
        style = line_style(pol, variants=policies)
        q = series["quantiles"]
        xy = [(v, p) for v, p in zip(q["ttft_s"], q["q"]) if v is not None]
        axes[0].plot([v for v, _ in xy], [p for _, p in xy], lw=1.1, ms=3, label=pol, **style)
        for t in series["tiers"]:
            tiers_seen[t["tier"]] = t["tbt_slo_s"]
            width = 0.8 / len(policies)
            axes[1].bar(t["tier"] + (k - (len(policies) - 1) / 2) * width, t["p99_tbt_s"] or 0.0, width,
                        color=style["color"], hatch=None if style["ls"] == "-" else "//", edgecolor="white", label=pol if t["tier"] == 0 else None)
    plain_log_axis(axes[0], "x")
    axes[0].set_xlabel("TTFT (s)")
    axes[0].set_ylabel("percentile of requests")
    axes[0].set_title(f"TTFT distribution at load {load:g}", fontsize=9)
    for tier, slo in tiers_seen.items():
        if slo is not None:
            axes[1].hlines(slo, tier - 0.45, tier + 0.45, color=FLUID_COLOUR, ls="--", lw=1)
    axes[1].set_xticks(sorted(tiers_seen), [f"tier {t}\n(SLO {tiers_seen[t]:g} s)" for t in sorted(tiers_seen)])
    axes[1].set_ylabel("p99 TBT (s)")
    axes[1].set_title("p99 TBT per tier (dashed: SLO)", fontsize=9)
    bis = read_bisection(results)
    for k, pol in enumerate(policies):
        mine = [b for b in bis if b["policy"] == pol]
        if not mine:
            continue
        x = sum(b["lambda_star_load"] for b in mine) / len(mine)
        half = sum(b["half_width"] for b in mine) / len(mine)
        axes[2].barh(k, x, xerr=half, color=line_style(pol, variants=policies)["color"], capsize=3)
    axes[2].set_yticks(range(len(policies)), policies)
    axes[2].axvline(1.0, color=FLUID_COLOUR, ls="--", lw=0.9)
    axes[2].set_xlabel("SLO capacity (fraction of fluid capacity θ*)")
    axes[2].set_title("SLO capacity by bisection (dashed: θ*)", fontsize=9)
    legend_outside(axes[0])
    fig.tight_layout()
    return save(fig, out_png)
