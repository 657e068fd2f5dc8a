"""The fluid benchmark over time on the Azure conversation replay: the preset's eight binned types
at fixed shares (what `fluidsched drift` compares against) before, and the replayed requests'
own lengths and per-type arrival rates (`fluid/over_time.py:benchmark_for_requests`) after.

Reads the simulated runs of `docs/adaptive-azure-x10.json` and `-x12.json` (written by
`fluidsched drift validation/experiments/adaptive/azure-x1{0,2}.yaml`), rebuilds the same replayed
requests from the experiment files, integrates the benchmark for them on the runs' time grid and
prints, per policy, the run's decode tokens counted at completion over the benchmark's (the count
drift compared when this was written; it now compares tokens generated): lowest from the time the
benchmark has 2 % of its tokens on (drift's rule), lowest after the first 5 minutes, and at the end.
Writes docs/fluid-over-time-azure.json.

    PYTHONPATH=. python benchmarks/fluid_over_time_azure.py
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LATE_S = 300.0


def ratios(grid, run, bench) -> dict:
    from fluid.over_time import compare_cumulative

    early = compare_cumulative(grid, run, bench)
    late = compare_cumulative(grid, run, bench, from_s=LATE_S)
    return {"min": early["min"], "min_at_s": early["min_at_s"], "min_after_5_min": late["min"], "end": early["end"]}


def main() -> int:
    import scipy

    from fluid.over_time import DEFAULT_TYPE_BINS, benchmark_for_requests
    from fluid.workload_io import load_workload
    from validation.drift import build_profile, load_experiment

    out = {"machine": {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                       "cpu": platform.processor() or platform.machine()}, "experiments": []}
    for name in ("azure-x10", "azure-x12"):
        exp = load_experiment(str(ROOT / "validation" / "experiments" / "adaptive" / f"{name}.yaml"))
        data = json.loads((ROOT / "docs" / f"adaptive-{name}.json").read_text())
        workload = load_workload(exp.workload)
        _, rows = build_profile(exp, workload)
        rows = np.asarray(rows)
        grid = np.asarray(data["runs"][0]["curves"]["time_s"])
        before = np.asarray(data["runs"][0]["curves"]["fluid_completed_decode_tokens"])
        t0 = time.perf_counter()
        span = float(rows[:, 0].max())
        bench = benchmark_for_requests(workload, rows[:, 0], rows[:, 1].astype(int), rows[:, 2].astype(int), grid,
                                       bin_s=span / 60, type_bins=DEFAULT_TYPE_BINS)
        seconds = time.perf_counter() - t0
        after = bench.completed_decode_tokens
        record = {"experiment": name, "requests": len(rows), "decode_tokens_replayed": int(rows[:, 2].sum()),
                  "benchmark_total_before": float(before[-1]), "benchmark_total_after": float(after[-1]),
                  "types_after": len(bench.types), "arrival_bin_s": span / 60, "ode_seconds": seconds, "runs": []}
        for run in data["runs"]:
            cum = np.asarray(run["curves"]["completed_decode_tokens"])
            record["runs"].append({"policy": run["policy"], "seed": run["seed"],
                                   "before": ratios(grid, cum, before), "after": ratios(grid, cum, after)})
        out["experiments"].append(record)
        print(f"{name}: {len(rows)} requests, {int(rows[:, 2].sum())} decode tokens replayed; benchmark total "
              f"{before[-1]:.0f} (preset types, fixed shares) -> {after[-1]:.0f} ({len(bench.types)} types of the "
              f"requests' own lengths, {span / 60:.1f} s arrival bins; ODE {seconds:.1f} s)")
        print("  policy        min (2 % on) before/after   min after 5 min before/after   end before/after")
        for r in record["runs"]:
            b, a = r["before"], r["after"]
            print(f"  {r['policy']:<12}  {b['min']:.3f} / {a['min']:.3f} (at {a['min_at_s']:.0f} s)"
                  f"        {b['min_after_5_min']:.3f} / {a['min_after_5_min']:.3f}"
                  f"                 {b['end']:.3f} / {a['end']:.3f}")
    target = ROOT / "docs" / "fluid-over-time-azure.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
