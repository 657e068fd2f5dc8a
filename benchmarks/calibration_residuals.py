"""Which grid points the stepwise model misses, and whether they are the same on every machine.

    python benchmarks/calibration_residuals.py docs/calibration-h200-run13.json docs/calibration-h200-run1[5-7]-fidelity.json \\
        --out docs/calibration-residuals-h200.json

For each calibration file: every grid point as its median over the passes (`aggregate_passes`),
then each point predicted by the stepwise model fitted on all the other points (leave one point
out, the file's knee kept). A residual (predicted / measured − 1) that has one sign and size on
every machine is the model's (a shape it cannot follow); one that changes from machine to machine
is the machine's (drift, noise). Prints the points by their mean absolute residual and writes
every residual, the leave-one-out MAPE per file and per region, and the share of each file's
error that the points with a consistent sign carry.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def leave_one_out(calibration: dict) -> dict[str, float]:
    """{label: predicted / measured − 1} for every grid point of the file (recorded live steps left out)."""
    from fluid.batch_time_stepwise import fit_coefficients
    from runtime.gpu.calibrate import aggregate_passes, file_buckets
    from runtime.replay import shape_of

    st = calibration["batch_time_stepwise"]
    buckets = file_buckets(st)
    points = [r for r in aggregate_passes(calibration["table"]) if not r["label"].startswith("live-")]
    rows = [(shape_of(r), r["time_s"]) for r in points]
    out = {}
    for i, r in enumerate(points):
        model = fit_coefficients(rows[:i] + rows[i + 1:], **buckets, knee_tokens=st.get("knee_tokens", 256))
        out[r["label"]] = model.step_time_s(rows[i][0]) / rows[i][1] - 1
    return out


def report(files: dict[str, dict]) -> dict:
    per_file = {name: leave_one_out(cal) for name, cal in files.items()}
    labels = [lab for lab in next(iter(per_file.values())) if all(lab in r for r in per_file.values())]
    points = []
    for lab in labels:
        res = [per_file[name][lab] for name in per_file]
        points.append({"label": lab, "region": lab.split()[0], "residuals": dict(zip(per_file, res)),
                       "mean": statistics.fmean(res), "mean_abs": statistics.fmean(abs(x) for x in res),
                       "same_sign_everywhere": all(x > 0 for x in res) or all(x < 0 for x in res)})
    points.sort(key=lambda p: -p["mean_abs"])
    mape = {name: statistics.fmean(abs(x) for x in r.values()) for name, r in per_file.items()}
    consistent = [p for p in points if p["same_sign_everywhere"] and p["mean_abs"] >= 0.03]
    regions = sorted({p["region"] for p in points})
    return {
        "files": list(files),
        "leave_one_out_mape": mape,
        "leave_one_out_mape_by_region": {name: {g: statistics.fmean(abs(per_file[name][p["label"]]) for p in points if p["region"] == g)
                                                for g in regions} for name in per_file},
        # the points off by ≥ 3 % with one sign on every machine: the model's, not the machine's
        "consistent_points_3pct": [p["label"] for p in consistent],
        "share_of_error_in_consistent_points": {name: sum(abs(per_file[name][p["label"]]) for p in consistent) / sum(abs(x) for x in per_file[name].values())
                                                for name in per_file},
        "points": points,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("calibrations", type=Path, nargs="+")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--top", type=int, default=20, help="points to print (default 20)")
    args = ap.parse_args(argv)
    files = {}
    for path in args.calibrations:
        try:
            cal = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
        if "table" not in cal or "batch_time_stepwise" not in cal:
            print(f"error: {path}: not a calibration file with a stepwise fit (no 'table' or 'batch_time_stepwise')", file=sys.stderr)
            return 2
        files[path.name] = cal
    r = report(files)
    r["command"] = "python benchmarks/calibration_residuals.py " + " ".join(sys.argv[1:] if argv is None else argv)
    names = list(files)
    short = {n: n.removeprefix("calibration-").removesuffix(".json").removesuffix("-fidelity") for n in names}
    print("leave-one-point-out MAPE: " + ", ".join(f"{short[n]} {100 * m:.2f} %" for n, m in r["leave_one_out_mape"].items()))
    print(f"{'point':42s} " + " ".join(f"{short[n][-12:]:>12s}" for n in names) + "   mean")
    for p in r["points"][:args.top]:
        print(f"{p['label']:42s} " + " ".join(f"{100 * p['residuals'][n]:+11.1f}%" for n in names) + f"  {100 * p['mean']:+.1f} %")
    print(f"{len(r['consistent_points_3pct'])} points off by ≥ 3 % with one sign on every machine; they carry "
          + ", ".join(f"{100 * s:.0f} %" for s in r["share_of_error_in_consistent_points"].values()) + " of each file's error")
    if args.out:
        args.out.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
