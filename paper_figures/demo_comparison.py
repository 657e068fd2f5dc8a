"""The demo's comparison figure, from `demo.json` only (written by `fluidsched demo`).

Four panels, one bar per scheduler: decode throughput against the fluid throughput*
(arXiv 2504.11320), mean and p99 latency, mean TTFT, and peak KV use against the capacity C.
"""

from __future__ import annotations

import json
from pathlib import Path

from paper_figures.style import FLUID_COLOUR, colour, pyplot, save
from runtime.summary import RunSummary


def _value(summary: RunSummary, name: str) -> float:
    """A bar's height; a field the run leaves undefined (no completed request) is drawn as 0."""
    value = getattr(summary, name)
    return 0.0 if value is None else float(value)


def draw_demo_comparison(demo_json: str | Path, out_png: str | Path) -> Path:
    data = json.loads(Path(demo_json).read_text(encoding="utf-8"))
    # a summary that lacks a field is an error here (InputError naming it), never a zero bar
    summaries = [RunSummary.from_dict(s, source=str(demo_json)) for s in data["summaries"]]
    names = [s.scheduler for s in summaries]
    colours = [colour(n) for n in names]
    x = range(len(names))
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))

    def bars(ax, key, title, unit):
        values = [_value(s, key) for s in summaries]
        ax.bar(x, values, color=colours)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xticks(list(x), names, rotation=40, ha="right")
        return values

    bars(axes[0], "decode_throughput_tokens_per_s", "decode throughput", "tokens/s")
    star = data["fluid"]["throughput_star_tokens_per_s"]
    axes[0].axhline(star, color=FLUID_COLOUR, ls="--", lw=1, label=f"fluid throughput* = {star:.0f}")
    axes[0].legend(loc="lower right", fontsize=7)
    bars(axes[1], "mean_latency_s", "latency (bar: mean, dot: p99)", "s")
    axes[1].plot(list(x), [_value(s, "p99_latency_s") for s in summaries], "o", color=FLUID_COLOUR, ms=4)
    bars(axes[2], "mean_ttft_s", "mean time to first token", "s")
    bars(axes[3], "peak_kv_tokens", "peak KV in use", "tokens")
    cap = data["fluid"]["kv_capacity_tokens"]
    axes[3].axhline(cap, color=FLUID_COLOUR, ls=":", lw=1, label=f"C = {cap}")
    axes[3].axhline(data["fluid"]["memory_star_tokens"], color=FLUID_COLOUR, ls="--", lw=1, label="fluid M*")
    axes[3].legend(loc="lower right", fontsize=7)
    fig.suptitle(f"workload {data['workload']}: schedulers on identical arrivals", fontsize=10)
    fig.tight_layout()
    return save(fig, out_png)
