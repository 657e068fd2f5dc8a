"""The main job's picture (`fluidsched demo`): decode throughput and mean latency against load
for WAIT and the main baselines on identical arrivals, with the fluid capacity θ* marked and the
fluid throughput* (what arrives, up to the capacity; the most any policy can carry above it).

Load is a fraction of θ* (bottom axis) and the arrival rate in requests per second (top axis);
latency is on a log scale because near capacity it spans decades.
"""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import ok_rows, ordered
from paper_figures.style import FLUID_COLOUR, legend_outside, line_style, pad_top, plain_log_axis, pyplot, save

EXPERIMENTS = ("demo",)


def draw(results: Path, out_png: Path) -> Path | None:
    rows = ok_rows(results)
    if not rows:
        return None
    policies = ordered(r["policy"] for r in rows)
    wl = rows[0]["workload"]
    # arrival rate per unit of load (the same for every row of one workload)
    rate_per_load = rows[0].get("arrival_rate_per_s", 0.0) / rows[0]["load"]
    plt = pyplot()
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    for pol in policies:
        pts = sorted((r for r in rows if r["policy"] == pol), key=lambda r: r["load"])
        style = line_style(pol, pts[0]["scheduler"], variants=policies)
        ax_t.plot([r["load"] for r in pts], [r["decode_throughput_tokens_per_s"] for r in pts], lw=1.2, ms=3.5, label=pol, **style)
        ax_l.plot([r["load"] for r in pts], [r["mean_latency_s"] for r in pts], lw=1.2, ms=3.5, label=pol, **style)
    loads = sorted({r["load"] for r in rows})
    star = {r["load"]: r["fluid_throughput_star_tokens_per_s"] for r in rows}
    ax_t.plot(loads, [star[x] for x in loads], color=FLUID_COLOUR, lw=1.6, ls="--", label="fluid throughput*")
    for ax in (ax_t, ax_l):
        ax.axvline(1.0, color=FLUID_COLOUR, ls=":", lw=1, label="fluid capacity θ*")
        ax.set_xlabel("load (fraction of the fluid capacity θ*)")
        if rate_per_load > 0:
            top = ax.secondary_xaxis("top", functions=(lambda x: x * rate_per_load, lambda r: r / rate_per_load))
            top.set_xlabel("arrival rate (requests/s)", fontsize=8)
    ax_t.set_ylabel("decode throughput (tokens/s)")
    ax_t.set_ylim(0, None)
    pad_top(ax_t)
    ax_l.set_ylabel("mean latency (s)")
    plain_log_axis(ax_l)
    pad_top(ax_l, log=True)
    ax_t.set_title(f"{wl}: throughput against load", fontsize=9)
    ax_l.set_title(f"{wl}: latency against load", fontsize=9)
    handles, labels = ax_l.get_legend_handles_labels()
    h_t, l_t = ax_t.get_legend_handles_labels()
    extra = [(h, lab) for h, lab in zip(h_t, l_t) if lab == "fluid throughput*"]
    legend_outside(ax_l, handles=handles + [h for h, _ in extra], labels=labels + [lab for _, lab in extra])
    fig.tight_layout()
    return save(fig, out_png)
