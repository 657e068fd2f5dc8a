"""Offline (no GPU): where the stepwise model's step-time error comes from, on committed H200 data.

    PYTHONPATH=. python benchmarks/batch_time_heldout.py [--out docs/batch-time-heldout-h200.json]

Reads `docs/calibration-h200-run4.json` (its grid rows: each point timed as the engine executes a
step, 2 passes; and its `live-*` rows: run 3's steps replayed on run 4's machine) and the live
steps of two runs (`docs/fidelity-h200-run4-steps.json.gz`, `docs/fidelity-h200-run3-steps.json.gz`).
Prints and writes:

1. `grid_kfold`: k-fold held-out MAPE over the grid rows (engine step time), per region, for the
   terms before the knee / small-decode terms and after (nested: each fold picks its knee alone);
2. `live_engine`: each run's live steps, their engine part (measured − host time: the forward,
   sampling, sync) against the grid-fitted model, per load and region (median live / model, MAPE);
3. `host`: what a live step pays beyond the engine step (the scheduler call before it, the
   bookkeeping gap after it): host terms fitted on run 4's load-0.8 steps, scored on its loads 0.5
   and 0.9 and on run 3 (another machine), as the turn (step + gap) the simulator must predict;
   (and over the second pass alone: what a warmed-up grid gives);
4. `pass_drift`: pass 1 over pass 0 of each grid point (the first pass is the warm-up).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

CAL = "docs/calibration-h200-run4.json"
RUNS = {"run4": "docs/fidelity-h200-run4-steps.json.gz", "run3": "docs/fidelity-h200-run3-steps.json.gz"}
HOST_TRAIN_LOAD = "0.80"


def _errs(pairs) -> dict:
    return {"steps": len(pairs), "mape": statistics.fmean(abs(p - m) / m for p, m in pairs),
            "median_live_over_model": statistics.median(m / p for p, m in pairs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibration", default=CAL, type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import numpy as np

    from fluid.batch_time_stepwise import TERMS, StepwiseBatchTime, _folds, _solve, fit_host_terms, fit_stepwise
    from runtime.gpu.calibrate import file_buckets, turn_s
    from runtime.recorded_steps import region
    from runtime.replay import shape_of

    cal = json.loads(args.calibration.read_text())
    bt = cal["batch_time_stepwise"]
    buckets = file_buckets(bt)
    grid = [r for r in cal["table"] if not r["label"].startswith("live-")]
    live = {name: json.loads(gzip.open(path, "rt").read()) for name, path in RUNS.items()}
    out: dict = {"calibration": str(args.calibration), "steps": RUNS, "device": cal["device"], "versions": cal["versions"],
                 "command": "PYTHONPATH=. python benchmarks/batch_time_heldout.py " + " ".join(sys.argv[1:] if argv is None else argv)}

    # 1. k-fold over grid rows: the eleven earlier terms, then all terms (knee by nested k-fold)
    rows = [(shape_of(r), r["time_s"], r["label"]) for r in grid]
    old_terms = TERMS.index("knee_s_per_token")
    probe = StepwiseBatchTime((0.0,) * len(TERMS), **buckets)
    a = np.array([probe.features(s)[:old_terms] for s, _, _ in rows])
    y = np.array([t for _, t, _ in rows])
    fold, pred = _folds([lab for *_, lab in rows], 5, 0), np.empty_like(y)
    for k in range(5):
        pred[fold == k] = a[fold == k] @ _solve(a[fold != k], y[fold != k])
    err = np.abs(pred - y) / y
    regions = [lab.split()[0] for *_, lab in rows]
    before = {"all": float(err.mean()), **{g: float(np.mean(err[[x == g for x in regions]])) for g in sorted(set(regions))}}
    fit = fit_stepwise(rows, **buckets)
    after = {"all": fit.heldout_mape, **fit.heldout_mape_by_region}
    out["grid_kfold"] = {"rows": len(rows), "earlier_terms": before, "with_knee_and_small_decode": after, "knee_tokens": fit.model.knee_tokens}
    all_rows = [(shape_of(r), r["time_s"], r["label"]) for r in cal["table"]]
    warm = [(shape_of(r), r["time_s"], r["label"]) for r in grid if r["pass"] == 1]  # what a warmed-up grid measures
    out["grid_kfold"]["second_pass_only"] = fit_stepwise(warm, **buckets).heldout_mape
    out["all_rows_kfold_with_new_terms"] = fit_stepwise(all_rows, **buckets).heldout_mape  # the stored file's 548 rows, same target as before
    engine = fit.model

    # 2. live engine part against the grid model
    out["live_engine"] = {}
    for name, runs in live.items():
        cells: dict[str, list] = {}
        for run, steps in runs.items():
            load = run.split("-L")[1]
            for s in steps:
                pair = (engine.step_time_s(shape_of(s)), s["measured_s"] - s["host_s"])
                cells.setdefault(f"{load} {region(s)}", []).append(pair)
                cells.setdefault("all", []).append(pair)
        out["live_engine"][name] = {g: _errs(v) for g, v in sorted(cells.items())}
    refit_old = _solve(a, y)
    old_model = StepwiseBatchTime(tuple(refit_old) + (0.0,) * (len(TERMS) - old_terms), **buckets)
    cells = {}
    for run, steps in live["run4"].items():
        for s in steps:
            cells.setdefault(f"{run.split('-L')[1]} {region(s)}", []).append((old_model.step_time_s(shape_of(s)), s["measured_s"] - s["host_s"]))
    out["live_engine_earlier_terms_run4"] = {g: _errs(v) for g, v in sorted(cells.items())}

    # 3. host terms: fitted on run 4 at one load, scored elsewhere (turn = step + bookkeeping gap)
    train = [(shape_of(s), turn_s(steps, i)) for run, steps in live["run4"].items() if run.endswith(HOST_TRAIN_LOAD) for i, s in enumerate(steps)]
    full, host = fit_host_terms(engine, train)
    out["host"] = {"trained_on": f"run4 load {HOST_TRAIN_LOAD} (all schedulers)", "host_coefficients": host, "scored": {}}
    for name, runs in live.items():
        for label, model in (("engine only", engine), ("engine + host", full)):
            cells = {}
            for run, steps in runs.items():
                load = run.split("-L")[1]
                if name == "run4" and load == HOST_TRAIN_LOAD:
                    continue
                for i, s in enumerate(steps):
                    pair = (model.step_time_s(shape_of(s)), turn_s(steps, i))
                    cells.setdefault(f"{load} {region(s)}", []).append(pair)
                    cells.setdefault("all", []).append(pair)
            out["host"]["scored"][f"{name}: {label}"] = {g: _errs(v) for g, v in sorted(cells.items())}

    # 4. warm-up: pass 1 over pass 0 per grid point
    by_label: dict[str, dict] = {}
    for r in grid:
        by_label.setdefault(r["label"], {})[r["pass"]] = r["time_s"]
    ratios = [p[1] / p[0] for p in by_label.values() if 0 in p and 1 in p]
    small = [by_label[lab][1] / by_label[lab][0] for lab in by_label if 0 in by_label[lab] and 1 in by_label[lab] and by_label[lab][0] < 8e-3]
    out["pass_drift"] = {"median_pass1_over_pass0": statistics.median(ratios), "median_steps_under_8ms": statistics.median(small), "points": len(ratios)}

    g = out["grid_kfold"]
    print(f"{cal['device']}, {', '.join(f'{k} {v}' for k, v in sorted(cal['versions'].items()))}")
    print(f"1. grid k-fold held-out MAPE ({g['rows']} rows; knee {g['knee_tokens']} tokens)")
    print("   region      earlier terms   + knee, small decode")
    for k in g["earlier_terms"]:
        print(f"   {k:10s}  {100 * g['earlier_terms'][k]:6.1f} %        {100 * g['with_knee_and_small_decode'][k]:6.1f} %")
    print(f"   second pass only (after the first warmed the GPU), {len(warm)} rows: {100 * g['second_pass_only']:.1f} %")
    print(f"   all {len(all_rows)} rows of the file (grid + replayed run-3 steps): {100 * out['all_rows_kfold_with_new_terms']:.1f} % (stored fit: {100 * cal['heldout_step_mape']:.1f} %)")
    for title, table in (("2. live engine part (measured - host) / grid model, run 4, earlier terms", out["live_engine_earlier_terms_run4"]),
                         ("   same, with knee and small decode, run 4", out["live_engine"]["run4"]),
                         ("   same, run 3 (another machine)", out["live_engine"]["run3"])):
        print(title)
        print("   " + "  ".join(f"{k}: ×{v['median_live_over_model']:.3f} ({100 * v['mape']:.1f} %)" for k, v in table.items()))
    print(f"3. turn (step + gap) against the model, host terms fitted on {out['host']['trained_on']}: "
          + ", ".join(f"{k} {1e6 * v:.2f} µs" for k, v in host.items()))
    for k, table in out["host"]["scored"].items():
        print(f"   {k:22s} all {100 * table['all']['mape']:.1f} %  " + "  ".join(f"{g}: ×{v['median_live_over_model']:.3f}" for g, v in table.items() if g != "all"))
    d = out["pass_drift"]
    print(f"4. grid pass 1 / pass 0: median {d['median_pass1_over_pass0']:.3f} over {d['points']} points, {d['median_steps_under_8ms']:.3f} for steps under 8 ms")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
