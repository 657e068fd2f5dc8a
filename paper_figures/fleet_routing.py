"""Fleet routing (experiment 6): g identical replicas, arrivals at a fraction of g × one
replica's capacity, routed by the fleet LP's split, at random or to the least-loaded replica:
decode throughput / offered and mean latency against load, one column per g."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import ok_rows, ordered
from paper_figures.style import VARIANT_STYLES, legend_outside, plain_log_axis, pyplot, save

EXPERIMENTS = ("06-fleet-routing",)
ROUTER_COLOURS = {"split": "#1b9e77", "random": "#d95f02", "least-work": "#7570b3", "round-robin": "#e7298a"}


def draw(results: Path, out_png: Path) -> Path | None:
    rows = ok_rows(results)
    if not rows:
        return None
    replicas = sorted({int(r["knob_replicas"]) for r in rows})
    routers = ordered(r["knob_router"] for r in rows)
    policies = ordered(r["policy"] for r in rows)
    plt = pyplot()
    fig, axes = plt.subplots(2, len(replicas), figsize=(4.0 * len(replicas) + 2.0, 5.4), squeeze=False, sharex=True)
    for j, g in enumerate(replicas):
        for router in routers:
            for k, pol in enumerate(policies):
                pts = sorted((r for r in rows if int(r["knob_replicas"]) == g and r["knob_router"] == router and r["policy"] == pol),
                             key=lambda r: r["load"])
                style = dict(color=ROUTER_COLOURS.get(router, "#999999"), ls=VARIANT_STYLES[k % len(VARIANT_STYLES)], marker="o", ms=3, lw=1)
                axes[0][j].plot([r["load"] for r in pts], [r["throughput_over_offered"] for r in pts], label=f"{router}, {pol}", **style)
                axes[1][j].plot([r["load"] for r in pts], [r["mean_latency_s"] for r in pts], **style)
        axes[0][j].set_title(f"{g} replicas", fontsize=9)
        axes[0][j].set_ylabel("decode throughput / offered")
        axes[1][j].set_ylabel("mean latency (s)")
        plain_log_axis(axes[1][j])
        axes[1][j].set_xlabel("load (fraction of g × θ*)")
    legend_outside(axes[0][-1], title="router, policy")
    fig.tight_layout()
    return save(fig, out_png)
