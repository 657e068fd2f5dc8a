"""Do a calibration's two passes over its grid agree? Pass-to-pass drift against held-out error.

    python benchmarks/calibration_passes.py docs/calibration-h200-run1[3-7]*.json --out docs/calibration-passes-h200.json

`fluidsched calibrate` times every grid point once per pass (two passes by default, after a few
seconds of untimed warm-up steps), and the stepwise model's held-out error keeps both repeats of a
point in one fold: where the machine itself ran a point at different speeds in the two passes, no
model of step shape can predict both, and the held-out error carries that drift. For each
calibration file this reports the median ratio pass 1 / pass 0 over all points and per region
(the grid's order: the first word of the label), and the stepwise model's k-fold held-out MAPE
refitted on both passes (the recorded figure), on pass 0 alone and on pass 1 alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def passes_report(calibration: dict) -> dict:
    from runtime.gpu.calibrate import file_buckets, fit_rows, pass_drift

    rows = calibration["table"]
    drift = pass_drift(rows)
    if drift is None:
        raise ValueError("the calibration has no point timed in both pass 0 and pass 1 (was it made with --passes 1?)")
    stepwise = calibration["batch_time_stepwise"]
    buckets = file_buckets(stepwise)
    curve = bool(stepwise.get("decode_knots"))  # refit as the file was fitted
    heldout = {name: fit_rows(sel, buckets=buckets, decode_curve=curve)["stepwise"]["heldout_mape"] for name, sel in (
        ("both_passes", rows), ("pass_0", [r for r in rows if r["pass"] == 0]), ("pass_1", [r for r in rows if r["pass"] == 1]))}
    return {
        **drift,
        "recorded_heldout_step_mape": calibration.get("heldout_step_mape"),
        "heldout_step_mape_refitted": heldout,
        "warmup": calibration.get("warmup"),
        "host_python_loop_1e6_s": calibration.get("host", {}).get("python_loop_1e6_s"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("calibrations", type=Path, nargs="+", help="calibration JSON files (fluidsched calibrate / gpu_fidelity.py)")
    ap.add_argument("--out", type=Path, help="write the report as JSON here")
    args = ap.parse_args(argv)
    report = {"command": "python benchmarks/calibration_passes.py " + " ".join(sys.argv[1:] if argv is None else argv), "calibrations": {}}
    for path in args.calibrations:
        try:
            calibration = json.loads(path.read_text())
            if "table" not in calibration or "batch_time_stepwise" not in calibration:
                raise ValueError("not a calibration file with a stepwise fit (no 'table' or 'batch_time_stepwise')")
            r = passes_report(calibration)
        except (OSError, ValueError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
        report["calibrations"][str(path)] = r
        regions = " ".join(f"{k} {v:.3f}" for k, v in r["pass1_over_pass0_median_by_region"].items())
        h = r["heldout_step_mape_refitted"]
        print(f"{path.name}: pass 1 / pass 0 median {r['pass1_over_pass0_median']:.3f} (mean |dev| {100 * r['pass1_over_pass0_mean_abs_deviation']:.1f} %; {regions}); "
              f"held-out MAPE both passes {100 * h['both_passes']:.2f} %, pass 0 alone {100 * h['pass_0']:.2f} %, pass 1 alone {100 * h['pass_1']:.2f} %")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
