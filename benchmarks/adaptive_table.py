"""Render docs/adaptive-results.md from the `fluidsched drift` result files (docs/adaptive-*.json).

    python benchmarks/adaptive_table.py            # every docs/adaptive-*.json
The live GPU file of `benchmarks/gpu_drift.py` (docs/adaptive-<name>-live.json) is rendered with its
device and its simulated twin runs.
Each row is one run: the minimum over time of completed decode tokens against the fluid ODE's
(from the time the ODE has completed 2 % of its tokens on), mean latency and TTFT, peak KV, KV in
use (time mean), the capped schedulers' total cap (time mean: the admission limit they held), and
the static policies' mean latency on the same arrivals. The target (docs/adaptive.md): adaptive
WAIT within 2 % of the ODE at every time, with mean latency no worse than static-peak's on the same
arrivals (same seed).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fluid.tables import format_table  # noqa: E402


def main() -> int:
    files = sorted((ROOT / "docs").glob("adaptive-*.json"))
    lines = ["# Adaptive WAIT under drifting load: results", "",
             "Regenerate: `fluidsched drift validation/experiments/adaptive/NAME.yaml` for each experiment, then",
             "`python benchmarks/adaptive_table.py`. Simulated clock (the workload's batch-time model);",
             f"tables rendered on {platform.processor() or platform.machine()}, Python {platform.python_version()}.", ""]
    for path in files:
        data = json.loads(path.read_text())
        lines += [f"## {data['experiment']} ({data['workload']}, {data['policy']}, profile {json.dumps(data['profile'])})", "",
                  f"Mean rate {data['mean_rate_per_s']:.3g} req/s, peak {data['peak_rate_per_s']:.3g} req/s "
                  f"(static-peak solved at {data['static_peak_solved_at_rate_per_s']:.3g}). Figure: `docs/{path.stem}.png`.", "", "```"]
        if "device" in data:  # benchmarks/gpu_drift.py: live runs, then the same arrivals simulated (no figure)
            lines[-3] = (f"Live on {data['device']} ({data['model']}, torch {data['versions'].get('torch')}), seed "
                         f"{data['seed']}, {data['requests']} requests, `{data['command']}`; rows `sim:` are the same "
                         f"arrivals simulated with the workload's batch time. Mean rate {data['mean_rate_per_s']:.3g} req/s, "
                         f"peak {data['peak_rate_per_s']:.3g} req/s (static-peak solved at "
                         f"{data['static_peak_solved_at_rate_per_s']:.3g}).{' SMOKE TEST, not a result.' if data['smoke_test'] else ''}")
        rows = []
        runs = data["runs"] + [{**r, "policy": "sim:" + r["policy"]} for r in data.get("simulated_runs", [])]
        # the target compares a seed's adaptive run with static-peak on the same arrivals (the files'
        # static_peak_mean_latency_s is the mean over seeds)
        peak = {(r["policy"], r["seed"]): r["mean_latency_s"] for r in runs}
        for r in runs:
            same = peak.get((r["policy"].replace("adaptive", "static-peak"), r["seed"]))
            ok = r["policy"].endswith("adaptive") and r["cumulative_throughput_vs_fluid_min"] >= 0.98 and \
                same is not None and r["mean_latency_s"] <= same
            rows.append([r["policy"], str(r["seed"]), str(r["requests"]), f"{r['cumulative_throughput_vs_fluid_min']:.4f}",
                         f"{r['mean_latency_s']:.3f}", f"{r['p99_latency_s']:.3f}", f"{r['mean_ttft_s']:.3f}",
                         str(r["restarts"]), str(r["peak_kv_tokens"]),
                         f"{r['mean_kv_tokens']:.0f}" if r.get("mean_kv_tokens") is not None else "",
                         f"{r['mean_caps_total']:.1f}" if r.get("mean_caps_total") is not None else "",
                         "met" if ok else ("missed" if r["policy"].endswith("adaptive") else "")])
        lines.append(format_table(["policy", "seed", "requests", "cum tok / fluid (min)", "lat mean s", "lat p99 s",
                                   "TTFT mean s", "restarts", "peak KV", "mean KV", "mean caps", "target"], rows))
        lines += ["```", ""]
    out = ROOT / "docs" / "adaptive-results.md"
    out.write_text("\n".join(lines))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
