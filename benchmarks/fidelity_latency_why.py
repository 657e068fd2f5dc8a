"""Why a live-vs-simulated latency point misses, offline from a fidelity run's committed files.

    PYTHONPATH=. python benchmarks/fidelity_latency_why.py --out docs/fidelity-h200-latency.json

Reads `docs/calibration-h200-run5.json` (engine-step model, the model with host terms, the
grid), `docs/fidelity-h200-run5.json` (the points, their sizing) and `docs/fidelity-h200-run5-steps.json.gz`
(every live step). Rebuilds each point's workload and WAIT policy as `gpu_fidelity.py` does
(`gpu_loop_workload.build` at the run's simulated capacity, `fluidsched solve --slack 0`, seed 0,
the run's request count) and prints / writes:

1. `reproduced`: each point simulated again (must equal the stored figure);
2. `elasticity`: d ln(mean latency) / d ln(step time), the model scaled by 0.98 and 1.02;
3. `turn_over_model`: Σ live turn / Σ model per point (turn = step + bookkeeping gap), and the
   uniform scale of the model that reproduces the live latency (found on the point itself: a
   diagnostic of whether mean step time explains the miss, never a fit used elsewhere);
4. `host_fits`: host terms (`fit_host_terms`) fitted on some loads' live steps and scored on the
   other loads' points by simulating them (never on the point scored): pooled over the three
   schedulers or each scheduler alone, on one load or on two;
5. `host_level`: the median recorded host time (scheduler call + preparation) of one step shape
   (1 prefill beside 40-80 decodes) per run: what one scheduler's host work costs run to run;
6. `decode_buckets`: live decode-only steps' device part over the grid model by decode graph.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import gzip
import itertools
import json
import statistics
from pathlib import Path

import numpy as np

SCHEDULERS = ("wait", "vllm-v1", "sarathi")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", type=Path, default=Path("docs/calibration-h200-run5.json"))
    ap.add_argument("--fidelity", type=Path, default=Path("docs/fidelity-h200-run5.json"))
    ap.add_argument("--steps", type=Path, default=Path("docs/fidelity-h200-run5-steps.json.gz"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for p in (args.calibration, args.fidelity, args.steps):
        if not p.is_file():
            raise SystemExit(f"error: {p}: no such file; give a gpu_fidelity run's calibration, fidelity.json and live steps")

    from fidelity_points import rebuild_workloads, simulate_point

    from fluid.batch_time import batch_time_from_dict
    from fluid.batch_time_stepwise import fit_host_terms
    from runtime.gpu.calibrate import turn_s
    from runtime.replay import shape_of

    cal, fid = json.loads(args.calibration.read_text()), json.loads(args.fidelity.read_text())
    with gzip.open(args.steps, "rt") as f:
        live_steps = json.load(f)
    model = batch_time_from_dict(cal["batch_time_stepwise"], source=str(args.calibration))
    engine = batch_time_from_dict(cal["engine_step_model"], source=str(args.calibration))
    points = {(p["scheduler"], p["load"]): p for p in fid["points"]}
    loads = sorted({p["load"] for p in fid["points"]})
    workloads = rebuild_workloads(cal, args.calibration.name, fid)

    def simulate(name, load, bt):
        return simulate_point(workloads, fid, name, load, bt)

    def scaled(bt, f):
        return dataclasses.replace(bt, coefficients=tuple(f * c for c in bt.coefficients), linear=None)

    def key(name, load):
        return f"{name}-L{load:.2f}"

    turns = {k: [(shape_of(r), turn_s(rows, i)) for i, r in enumerate(rows)] for k, rows in live_steps.items()}
    result = {"inputs": [str(args.calibration), str(args.fidelity), str(args.steps)], "points": []}
    print("point              live lat  sim lat (stored)  err     elasticity  Σturn/Σmodel  scale for live lat")
    for (name, load), p in points.items():
        live = p["measured_mean_latency_s"]
        lat = simulate(name, load, model).mean_latency_s
        lo, hi = simulate(name, load, scaled(model, 0.98)).mean_latency_s, simulate(name, load, scaled(model, 1.02)).mean_latency_s
        elasticity = float(np.log(hi / lo) / np.log(1.02 / 0.98))
        st = turns[key(name, load)]
        ratio = sum(t for _, t in st) / sum(model.step_time_s(s) for s, _ in st)
        a, b = 0.85, 1.05  # bisection on the point itself: diagnostic only
        for _ in range(20):
            mid = (a + b) / 2
            a, b = (mid, b) if simulate(name, load, scaled(model, mid)).mean_latency_s < live else (a, mid)
        row = {"scheduler": name, "load": load, "live_mean_latency_s": live, "simulated_mean_latency_s": lat,
               "stored_simulated_mean_latency_s": p["simulated_mean_latency_s"], "latency_error": lat / live - 1, "elasticity": elasticity,
               "turn_over_model": ratio, "scale_for_live_latency": (a + b) / 2,
               "live_mean_ttft_s": p["measured_mean_ttft_s"], "simulated_mean_ttft_s": p["simulated_mean_ttft_s"]}
        result["points"].append(row)
        print(f"{name:8s} L{load}  {live:.3f}     {lat:.3f} ({p['simulated_mean_latency_s']:.3f})    {100 * (lat / live - 1):+5.1f} %   "
              f"{elasticity:5.2f}       {ratio:.3f}         {(a + b) / 2:.3f}")

    def score(fitter, train_sets):
        out = []
        for train in train_sets:
            test_loads = [x for x in loads if x not in train]
            fitted = fitter(train)
            for name in SCHEDULERS:
                for load in test_loads:
                    bt = fitted[name]
                    lat = simulate(name, load, bt).mean_latency_s
                    out.append({"train_loads": list(train), "scheduler": name, "load": load,
                                "latency_error": lat / points[(name, load)]["measured_mean_latency_s"] - 1})
        errs = [abs(r["latency_error"]) for r in out]
        return {"scored": out, "mean_abs_latency_error": float(np.mean(errs)), "max_abs_latency_error": float(np.max(errs))}

    def pooled(train):
        m, _ = fit_host_terms(engine, [x for n in SCHEDULERS for ld in train for x in turns[key(n, ld)]])
        return {n: m for n in SCHEDULERS}

    def own(train):
        return {n: fit_host_terms(engine, [x for ld in train for x in turns[key(n, ld)]])[0] for n in SCHEDULERS}

    ones, twos = [(x,) for x in loads], list(itertools.combinations(loads, 2))
    fits = {"committed (pooled, host runs at load 0.7)": score(lambda train: {n: model for n in SCHEDULERS}, [()]),
            "pooled, one load": score(pooled, ones), "own scheduler, one load": score(own, ones),
            "pooled, two loads": score(pooled, twos), "own scheduler, two loads": score(own, twos)}
    result["host_fits"] = fits
    print("\nhost terms fitted on some loads, every point of the other loads simulated (|latency error|):")
    for lab, f in fits.items():
        print(f"  {lab:42s} mean {100 * f['mean_abs_latency_error']:.1f} %  max {100 * f['max_abs_latency_error']:.1f} %  ({len(f['scored'])} points)")
    print("  pooled, two loads, per point: " + ", ".join(f"{r['scheduler']} {r['load']} {100 * r['latency_error']:+.1f} %" for r in fits["pooled, two loads"]["scored"]))

    level = {}
    for k, rows in live_steps.items():
        sel = [1e6 * r["host_s"] for r in rows if r["num_prefills"] == 1 and 40 <= r["num_decodes"] <= 80]
        level[k] = {"steps": len(sel), "median_host_us": statistics.median(sel)} if sel else None
    result["host_level"] = level
    print("\nmedian host time of steps with 1 prefill beside 40-80 decodes: "
          + ", ".join(f"{k} {v['median_host_us']:.0f} µs ({v['steps']})" for k, v in level.items() if v))

    buckets = engine.decode_buckets
    grid_batches = sorted({r["num_decodes"] for r in cal["table"] if r["label"].startswith("decode")})
    by = {}
    for rows in live_steps.values():
        for r in rows:
            if r["num_prefills"] == 0 and r["num_decodes"] > 0:
                b = buckets[bisect.bisect_left(buckets, r["num_decodes"])] if r["num_decodes"] <= buckets[-1] else None
                by.setdefault(b, []).append((r["measured_s"] - r["host_s"]) / engine.step_time_s(shape_of(r)))
    result["decode_buckets"] = {str(b): {"steps": len(v), "median_device_over_model": statistics.median(v), "in_grid": b in grid_batches}
                                for b, v in sorted(by.items(), key=lambda x: x[0] or 0) if len(v) >= 10}
    print("\nlive decode-only steps, device part (measured − host) over the engine model, by decode graph (grid batches "
          f"{grid_batches}): " + ", ".join(f"{b}: {v['median_device_over_model']:.3f} ({v['steps']}{'' if v['in_grid'] else ', not in grid'})"
                                            for b, v in result["decode_buckets"].items()))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
