"""What the decode graphs' GEMM curve buys: k-fold held-out step error with and without it.

    python benchmarks/decode_curve_heldout.py docs/calibration-h200-run13.json docs/calibration-h200-run1[5-9]-fidelity.json \\
        --out docs/decode-curve-heldout-h200.json

For each calibration file the stepwise model is fitted twice to the same grid, once as before
(the decode graphs' GEMMs on the shared padded slope, knee and `small_decode_s` bump) and once with
the GEMM curve through the decode graph sizes the grid measured (`decode_curve=True`, the default
of `fluidsched calibrate` now), each scored by the same nested 5-fold held-out error: on each
point's median over the passes (how `calibrate` fits by default) and on every pass's row. Per file:
both figures overall and per region; over the files: the change of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def heldout(calibration: dict) -> dict:
    from fluid.batch_time_stepwise import fit_stepwise
    from runtime.gpu.calibrate import aggregate_passes, file_buckets
    from runtime.replay import shape_of

    st = calibration["batch_time_stepwise"]
    buckets = file_buckets(st)
    grid = [r for r in calibration["table"] if not r["label"].startswith("live-")]
    out = {}
    for name, rows in (("point_medians", aggregate_passes(grid)), ("every_row", grid)):
        data = [(shape_of(r), r["time_s"], r["label"]) for r in rows]
        for curve in (False, True):
            fit = fit_stepwise(data, **buckets, decode_curve=curve)
            out[f"{name}_{'curve' if curve else 'slope'}"] = {"heldout_mape": fit.heldout_mape, "by_region": fit.heldout_mape_by_region,
                                                                 "knots": list(fit.model.decode_knots)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("calibrations", type=Path, nargs="+")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    files = {}
    for path in args.calibrations:
        try:
            cal = json.loads(path.read_text())
            if "table" not in cal or "batch_time_stepwise" not in cal:
                raise ValueError("not a calibration file with a stepwise fit (no 'table' or 'batch_time_stepwise')")
            files[path.name] = heldout(cal)
        except (OSError, ValueError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
    for name, f in files.items():
        print(f"{name}: held-out on point medians {100 * f['point_medians_slope']['heldout_mape']:.2f} % -> "
              f"{100 * f['point_medians_curve']['heldout_mape']:.2f} % with the curve; on every row "
              f"{100 * f['every_row_slope']['heldout_mape']:.2f} % -> {100 * f['every_row_curve']['heldout_mape']:.2f} %; decode region "
              f"{100 * f['point_medians_slope']['by_region']['decode']:.2f} -> {100 * f['point_medians_curve']['by_region']['decode']:.2f} %")
    change = {k: [f[f"{k}_curve"]["heldout_mape"] - f[f"{k}_slope"]["heldout_mape"] for f in files.values()] for k in ("point_medians", "every_row")}
    summary = {k: {"min": min(v), "max": max(v), "median": statistics.median(v)} for k, v in change.items()}
    print("change with the curve (points): " + ", ".join(f"{k} {100 * s['min']:+.2f} to {100 * s['max']:+.2f}" for k, s in summary.items()))
    if args.out:
        args.out.write_text(json.dumps({"command": "python benchmarks/decode_curve_heldout.py " + " ".join(sys.argv[1:] if argv is None else argv),
                                        "files": files, "change_with_curve": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
