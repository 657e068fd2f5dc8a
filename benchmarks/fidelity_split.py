"""Where a live step's error and a machine's speed come from: device part against host part (offline).

    PYTHONPATH=. python benchmarks/fidelity_split.py --out docs/fidelity-h200-split.json

1. `live`: every point of a `gpu_fidelity.py` run (default: the H200 run of `docs/fidelity-h200-run14.md`,
   its calibration, live steps and host-term runs' steps) split into the step's device part
   (measured − recorded host time: the forward, sampling, sync) scored against the engine-step
   model, and its host part (turn − device part: scheduler call, preparation, bookkeeping gap)
   scored against the host terms; the host part's median in each quarter of the run shows how
   much it moves within one run on one machine.
2. `machines`: the calibration grids of several H200 machines (default: every committed
   `docs/calibration-h200-*.json` with a grid), each point's median time over the first file's,
   per region and for the largest steps (prefill 2048/4096: compute-bound graphs whose host work
   is negligible), beside each machine's host descriptors: how much of the spread between machines
   is the GPU itself.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import statistics
import sys
from pathlib import Path

MACHINES = ("docs/calibration-h200-run6.json", "docs/calibration-h200-drift.json", "docs/calibration-h200-run5.json",
            "docs/calibration-h200-run4.json", "docs/calibration-h200-run3.json", "docs/calibration-h200-run8.json",
            "docs/calibration-h200-run9.json", "docs/calibration-h200-run10.json", "docs/calibration-h200-run11.json",
            "docs/calibration-h200-run12.json", "docs/calibration-h200-run13.json", "docs/calibration-h200-run14-fidelity.json")
COMPUTE_BOUND = ("prefill 2048", "prefill 4096")


def _grid_medians(cal: dict) -> dict[str, float]:
    by = collections.defaultdict(list)
    for r in cal["table"]:
        if not r["label"].startswith("live-"):
            by[r["label"]].append(r["time_s"])
    return {k: statistics.median(v) for k, v in by.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibration", type=Path, default=Path("docs/calibration-h200-run14-fidelity.json"))
    ap.add_argument("--steps", type=Path, default=Path("docs/fidelity-h200-run14-steps.json.gz"))
    ap.add_argument("--host-steps", type=Path, default=Path("docs/fidelity-h200-run14-host-steps.json.gz"))
    ap.add_argument("--machines", nargs="+", type=Path, default=[Path(m) for m in MACHINES])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    for p in [args.calibration, args.steps, args.host_steps, *args.machines]:
        if not p.is_file():
            print(f"error: {p}: no such file", file=sys.stderr)
            return 2
    from fluid.batch_time import batch_time_from_dict
    from runtime.gpu.calibrate import turn_s
    from runtime.replay import shape_of

    cal = json.loads(args.calibration.read_text())
    engine = batch_time_from_dict(cal["engine_step_model"], source=str(args.calibration))
    full = batch_time_from_dict(cal["batch_time_stepwise"], source=str(args.calibration))
    out = {"command": "PYTHONPATH=. python benchmarks/fidelity_split.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "calibration": str(args.calibration), "device": cal["device"], "versions": cal["versions"], "host": cal["host"], "live": []}
    print(f"1. {args.calibration}: {cal['device']}, host Python {cal['host'].get('python_loop_1e6_s', float('nan')):.3f} s a 10⁶ loop")
    print("   run                 steps  device/engine  host part/host terms  host part by quarter (µs)")
    for source, path in (("host-term run", args.host_steps), ("point", args.steps)):
        for key, rows in json.loads(gzip.open(path, "rt").read()).items():
            dev, host, parts = [], [], []
            for i, r in enumerate(rows):
                shape = shape_of(r)
                device_s = r["measured_s"] - r["host_s"]
                e, f = engine.step_time_s(shape), full.step_time_s(shape)
                part = turn_s(rows, i) - device_s
                dev.append(device_s / e)
                parts.append(part)
                if f > e:
                    host.append(part / (f - e))
            n = len(rows)
            quarters = [1e6 * statistics.median(parts[q * n // 4:(q + 1) * n // 4]) for q in range(4)] if n >= 4 else []
            row = {"source": source, "run": key, "steps": n, "median_device_over_engine": statistics.median(dev),
                   "median_host_part_over_host_terms": statistics.median(host) if host else None,
                   "host_part_median_us_by_quarter": quarters}
            out["live"].append(row)
            print(f"   {source:13s} {key:14s} {n:5d}  {row['median_device_over_engine']:.3f}          "
                  f"{row['median_host_part_over_host_terms'] or float('nan'):.2f}                  " + " ".join(f"{q:5.0f}" for q in quarters))
    base_path, *others = args.machines
    base_cal = json.loads(base_path.read_text())
    base = _grid_medians(base_cal)
    out["machines"] = {"base": str(base_path), "base_host": base_cal.get("host"), "others": []}
    print(f"2. grid time over {base_path}'s (host Python {base_cal.get('host', {}).get('python_loop_1e6_s', float('nan')):.3f} s), median per region")
    for path in others:
        other_cal = json.loads(path.read_text())
        other = _grid_medians(other_cal)
        common = sorted(set(base) & set(other))
        by_region = collections.defaultdict(list)
        for k in common:
            by_region[k.split()[0]].append(other[k] / base[k])
        row = {"calibration": str(path), "host": other_cal.get("host"), "common_points": len(common),
               "median_over_base": statistics.median(other[k] / base[k] for k in common),
               "by_region": {g: statistics.median(v) for g, v in sorted(by_region.items())},
               "compute_bound": {k: other[k] / base[k] for k in COMPUTE_BOUND if k in common}}
        out["machines"]["others"].append(row)
        print(f"   {str(path):40s} Python {(row['host'] or {}).get('python_loop_1e6_s', float('nan')):.3f} s  {len(common):3d} points  "
              f"×{row['median_over_base']:.3f}  " + " ".join(f"{g} ×{v:.3f}" for g, v in row["by_region"].items())
              + "  | " + " ".join(f"{k} ×{v:.3f}" for k, v in row["compute_bound"].items()))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
