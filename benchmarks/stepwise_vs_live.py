"""Offline: how well does a calibration's step-time model predict recorded live steps, and could
any fit on its features? (No GPU: it reads a calibration file and live step logs.)

    PYTHONPATH=. python benchmarks/stepwise_vs_live.py --calibration docs/calibration-h200-run3.json \
        --steps docs/fidelity-h200-run3-steps.json.gz --out docs/stepwise-vs-live-h200-run3.json

Per region of the live steps (`runtime.recorded_steps.region`), each target being the step's turn
(time + bookkeeping gap, `runtime.gpu.calibrate.turn_s`), mean absolute relative error and median
measured / predicted of:
- `stored`: the calibration's own stepwise model (as the simulator ran it);
- `grid_refit`: today's stepwise terms refitted on the calibration's grid rows only;
- `live_fit_heldout_by_run`: today's terms fitted on the live steps of every other run (each run
  predicted by a fit that never saw it): if this misses, the features are missing;
- `grid_plus_live_heldout_by_run`: the grid rows plus the other runs' live steps (what
  `calibrate --from-steps` fits, with the live times standing in for the replayed ones).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibration", required=True, type=Path)
    ap.add_argument("--steps", required=True, nargs="+")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from fluid.batch_time import batch_time_from_dict
    from fluid.batch_time_stepwise import fit_coefficients
    from runtime.gpu.calibrate import _errors, load_recorded, turn_s
    from runtime.recorded_steps import ReplayInputError, region
    from runtime.replay import shape_of

    try:
        cal = json.loads(args.calibration.read_text())
        recorded = load_recorded(args.steps)
    except (OSError, json.JSONDecodeError, ReplayInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stored = batch_time_from_dict(cal["batch_time_stepwise"], source=str(args.calibration))
    buckets = {k: stored.to_dict()[k] for k in ("decode_buckets", "token_buckets", "max_prefills", "max_decodes")}
    grid = [(shape_of(r), r["time_s"]) for r in cal["table"] if not r["label"].startswith("live-")]
    live = {run: [(shape_of(s), turn_s(steps, i), region(s)) for i, s in enumerate(steps)] for run, steps in recorded.items()}

    def score(predict_for_run) -> dict:
        by_region: dict[str, list] = {}
        for run, steps in live.items():
            model = predict_for_run(run)
            for shape, t, g in steps:
                by_region.setdefault(g, []).append((model.step_time_s(shape), t))
        return {"by_region": {g: _errors(v) for g, v in sorted(by_region.items())}, "all": _errors([x for v in by_region.values() for x in v])}

    refit = fit_coefficients(grid, **buckets)
    others = lambda run: [(s, t) for r, steps in live.items() if r != run for s, t, _ in steps]  # noqa: E731
    res = {
        "calibration": str(args.calibration), "steps": args.steps, "device": cal.get("device"), "versions": cal.get("versions"),
        "command": "PYTHONPATH=. python benchmarks/stepwise_vs_live.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "stored": score(lambda run: stored),
        "grid_refit": score(lambda run: refit),
        "live_fit_heldout_by_run": score(lambda run: fit_coefficients(others(run), **buckets)),
        "grid_plus_live_heldout_by_run": score(lambda run: fit_coefficients(grid + others(run), **buckets)),
        "grid_refit_coefficients": refit.to_dict()["coefficients"],
    }
    for key in ("stored", "grid_refit", "live_fit_heldout_by_run", "grid_plus_live_heldout_by_run"):
        regions = "  ".join(f"{g} {100 * e['mape']:.1f} % (×{e['median_measured_over_predicted']:.3f})" for g, e in res[key]["by_region"].items())
        print(f"{key:30s} all {100 * res[key]['all']['mape']:.1f} %  {regions}")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
