"""The demo's comparison figure, from `demo.json` only (written by `fluidsched demo`).

Four panels, one per metric and one colour per scheduler: decode throughput (bars) against the
fluid throughput* (arXiv 2504.11320), mean and p99 latency and mean TTFT (dots on log axes: they
span decades across schedulers), and peak KV use (bars) against the capacity C and the fluid M*.
Reference lines have headroom above them and the legend sits below the panels, off the data.
"""

from __future__ import annotations

import json
from pathlib import Path

from paper_figures.style import FLUID_COLOUR, colour, plain_log_axis, pyplot, save
from runtime.summary import RunSummary


def draw_demo_comparison(demo_json: str | Path, out_png: str | Path) -> Path:
    from paper_figures.results import read_json

    data = read_json(Path(demo_json))
    # a summary that lacks a field is an error here (InputError naming it), never a zero bar
    summaries = [RunSummary.from_dict(s, source=str(demo_json)) for s in data["summaries"]]
    names = [s.scheduler for s in summaries]
    colours = [colour(n) for n in names]
    x = list(range(len(names)))
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))

    def bars(ax, key, title, unit):
        values = [getattr(s, key) or 0.0 for s in summaries]
        ax.bar(x, values, color=colours)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xticks(x, names, rotation=40, ha="right")
        return values

    bars(axes[0], "decode_throughput_tokens_per_s", "decode throughput", "tokens/s")
    star = data["fluid"]["throughput_star_tokens_per_s"]
    axes[0].axhline(star, color=FLUID_COLOUR, ls="--", lw=1, label=f"fluid throughput* = {star:.0f} tokens/s")
    axes[0].set_ylim(0, star * 1.15)
    # latency and TTFT span decades across schedulers: dots on log axes (bars on a log axis
    # would make their lengths depend on where the axis happens to start)
    def dots(ax, key, title, p99_key=None):
        ax.scatter(x, [getattr(s, key) for s in summaries], color=colours, s=40, zorder=3, label="mean" if p99_key else None)
        if p99_key:
            ax.scatter(x, [getattr(s, p99_key) for s in summaries], color=colours, marker="D", facecolors="none", s=30,
                       zorder=3, label="p99")
        ax.set_title(title)
        ax.set_ylabel("s (log scale)")
        ax.set_xticks(x, names, rotation=40, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)
        plain_log_axis(ax)
        shown = [getattr(s, k) for s in summaries for k in (key, p99_key) if k and getattr(s, k)]
        ax.set_ylim(min(shown) / 1.4, max(shown) * 1.4)  # headroom both ways, so no dot sits on the frame

    dots(axes[1], "mean_latency_s", "latency (dot: mean, diamond: p99)", "p99_latency_s")
    dots(axes[2], "mean_ttft_s", "mean time to first token")
    bars(axes[3], "peak_kv_tokens", "peak KV in use", "tokens")
    cap = data["fluid"]["kv_capacity_tokens"]
    axes[3].axhline(cap, color=FLUID_COLOUR, ls=":", lw=1, label=f"capacity C = {cap} tokens")
    axes[3].axhline(data["fluid"]["memory_star_tokens"], color=FLUID_COLOUR, ls="--", lw=1,
                    label=f"fluid M* = {data['fluid']['memory_star_tokens']:.0f} tokens")
    axes[3].set_ylim(0, cap * 1.15)
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    fig.suptitle(f"workload {data['workload']}: schedulers on identical arrivals", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    return save(fig, out_png)
