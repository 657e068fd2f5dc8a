"""Throughput and requests in the system over time under drifting load, against the fluid ODE.

Reads a `fluidsched drift` result (`docs/adaptive-<name>.json`) only. Top: decode throughput
(decode tokens generated per second over 30 s windows) of each policy and of the ODE benchmark;
bottom: requests in the system (log scale, since a policy that falls behind grows by decades).
One seed is drawn (the first).
"""

from __future__ import annotations

import json
from pathlib import Path

from paper_figures.style import FLUID_COLOUR, colour, pyplot, save

WINDOW_S = 30.0
LABEL_STYLE = {"adaptive": "-", "static-mean": ":", "static-peak": "--"}


def _rate(times, cumulative, window_s: float):
    import numpy as np

    t = np.asarray(times, float)
    c = np.asarray(cumulative, float)
    step = max(1, int(round(window_s / (t[1] - t[0])))) if len(t) > 1 else 1
    return t[step:], (c[step:] - c[:-step]) / (t[step:] - t[:-step])


def draw(result_path: str | Path, out_path: str | Path) -> Path:
    data = json.loads(Path(result_path).read_text())
    runs = [r for r in data["runs"] if r["seed"] == data["runs"][0]["seed"]]
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.2, 5.6), sharex=True)
    fluid = runs[0]["curves"]
    t, rate = _rate(fluid["time_s"], fluid["fluid_generated_decode_tokens"], WINDOW_S)
    top.plot(t, rate, color=FLUID_COLOUR, lw=2.2, alpha=0.35, label="fluid ODE benchmark")
    bottom.plot(fluid["time_s"], [max(v, 0.5) for v in fluid["fluid_in_system"]], color=FLUID_COLOUR, lw=2.2,
                alpha=0.35, label="fluid ODE benchmark")
    for r in runs:
        label = r["policy"]
        style = dict(color=colour(r["scheduler"]), ls=LABEL_STYLE.get(label, "-"), lw=1.4)
        name = f"{label} ({r['cumulative_throughput_vs_fluid_min']:.3f} of fluid's tokens, min)"
        t, rate = _rate(r["curves"]["time_s"], r["curves"]["generated_decode_tokens"], WINDOW_S)
        top.plot(t, rate, label=name, **style)
        bottom.plot(r["curves"]["time_s"], [max(v, 0.5) for v in r["curves"]["in_system"]], **style)
    top.set_ylabel(f"decode tokens generated per s ({WINDOW_S:.0f} s windows)")
    top.set_title(f"{data['experiment']}: {data['workload']}, {data['policy']}, profile {data['profile']['kind']}")
    bottom.set_yscale("log")
    bottom.set_ylabel("requests in the system")
    bottom.set_xlabel("time (s)")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, out_path)
