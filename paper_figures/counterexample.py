"""The FCFS counterexample (experiment 7): completed prompts per iteration against offered and
restarts per request, against the capacity C, per policy and arrival pattern."""

from __future__ import annotations

import json
from pathlib import Path

from paper_figures.results import ok_rows, ordered
from paper_figures.style import VARIANT_STYLES, legend_outside, line_style, pyplot, save

EXPERIMENTS = ("07-fcfs-counterexample",)


def _arrivals(row) -> str:
    spec = json.loads(row.get("knob_arrivals") or '{"kind": "poisson"}')
    return "paper (burst at t=0)" if spec["kind"] == "trace" else spec["kind"]


def draw(results: Path, out_png: Path) -> Path | None:
    rows = ok_rows(results)
    if not rows:
        return None
    policies = ordered(r["policy"] for r in rows)
    patterns = ordered(_arrivals(r) for r in rows)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.3))
    for pol in policies:
        for k, pattern in enumerate(patterns):
            pts = [r for r in rows if r["policy"] == pol and _arrivals(r) == pattern]
            caps = sorted({r["fluid_kv_capacity_tokens"] for r in pts})
            style = {**line_style(pol, variants=policies), "ls": VARIANT_STYLES[k % len(VARIANT_STYLES)]}

            def mean(key, c):
                vals = [r[key] for r in pts if r["fluid_kv_capacity_tokens"] == c and r[key] is not None]
                return sum(vals) / len(vals) if vals else None

            axes[0].plot(caps, [mean("throughput_over_offered", c) for c in caps], ms=4, lw=1, label=f"{pol}, {pattern}", **style)
            axes[1].plot(caps, [mean("restart_rate", c) for c in caps], ms=4, lw=1, **style)
    axes[0].set_ylabel("decode throughput / offered")
    axes[1].set_ylabel("restarts per request")
    for ax in axes:
        ax.set_xlabel("KV capacity C (tokens; M* = 12)")
        ax.set_xticks(sorted({r["fluid_kv_capacity_tokens"] for r in rows}))
    handles, labels = axes[0].get_legend_handles_labels()
    legend_outside(axes[1], title="policy, arrivals", handles=handles, labels=labels)
    fig.tight_layout()
    return save(fig, out_png)
