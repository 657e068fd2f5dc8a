"""Nested WAIT memory against the number of segments L (experiment 6): the memory the solved
policy reserves (M^π plus its overflow buffer) and the peak KV the simulation used, one line per
load, with the capacity C. Missing points: no Nested WAIT policy with that L fits in C."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import ok_rows
from paper_figures.style import FLUID_COLOUR, MARKERS, legend_outside, plain_log_axis, pyplot, save

EXPERIMENTS = ("06-nested-segments",)


def draw(results: Path, out_png: Path) -> Path | None:
    rows = [r for r in ok_rows(results) if r.get("policy_segments")]
    if not rows:
        return None
    loads = sorted({r["load"] for r in rows})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    cmap = plt.get_cmap("viridis")
    for k, load in enumerate(loads):
        pts = sorted((r for r in rows if r["load"] == load), key=lambda r: r["policy_segments"])
        c = cmap(k / max(1, len(loads) - 1) * 0.85)
        xs = [r["policy_segments"] for r in pts]
        ax.plot(xs, [r["policy_memory_required_tokens"] for r in pts], color=c, marker=MARKERS[k % len(MARKERS)], lw=1.2,
                label=f"load {load:g}: reserved ($M^\\pi$ + buffer)")
        ax.plot(xs, [r["peak_kv_tokens"] for r in pts], color=c, marker=MARKERS[k % len(MARKERS)], ls=":", lw=1,
                label=f"load {load:g}: peak KV simulated")
    ax.axhline(rows[0]["fluid_kv_capacity_tokens"], color=FLUID_COLOUR, ls="--", lw=1, label="capacity C")
    plain_log_axis(ax, "x")
    ax.set_xticks(sorted({r["policy_segments"] for r in rows}), [str(x) for x in sorted({r["policy_segments"] for r in rows})])
    ax.set_ylim(0, rows[0]["fluid_kv_capacity_tokens"] * 1.15)
    ax.set_xlabel("number of segments L")
    ax.set_ylabel("KV tokens")
    ax.set_title(f"{rows[0]['workload']}: Nested WAIT memory against L", fontsize=9)
    legend_outside(ax)
    fig.tight_layout()
    return save(fig, out_png)
