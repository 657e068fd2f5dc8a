"""How much of the machine-to-machine spread in the loop's capacity is the host's.

    python benchmarks/capacity_spread.py docs/calibration-h200-run1[7-9]-fidelity.json --out docs/capacity-spread-h200.json

The fidelity runs size their loads as fractions of the capacity the simulator finds with the
machine's own model (`gpu_loop_workload.simulated_capacity_tok_s`): the engine-step model from the
calibration grid plus the host terms fitted on that machine's live steps (scheduler call and step
bookkeeping). Below saturation a run carries what it is offered, so the tok/s of two machines
differ by as much as their capacities do. For each calibration file this computes the capacity
twice, with the host terms (what the run used) and with the engine-step model alone (what a loop
that hides its host work behind the GPU step, `Engine.run(overlap_host=True)`, approaches), and
the spread max / min − 1 of each over the files. It also sets the engine steps of the files side
by side: the median ratio, region by region, of every grid point's time (median over its passes)
to the first file's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def capacities(calibration: dict) -> dict:
    import gpu_loop_workload

    from fluid.batch_time import batch_time_from_dict

    if "engine_step_model" not in calibration or "host_terms" not in calibration:
        raise ValueError("no host terms in the file (a calibration written by benchmarks/gpu_fidelity.py has them)")
    with_host = batch_time_from_dict(calibration["batch_time_stepwise"], source="calibration")
    engine = batch_time_from_dict(calibration["engine_step_model"], source="calibration")
    return {"with_host_terms_tok_s": gpu_loop_workload.simulated_capacity_tok_s(calibration, with_host)["capacity_tok_s"],
            "engine_step_only_tok_s": gpu_loop_workload.simulated_capacity_tok_s(calibration, engine)["capacity_tok_s"],
            "host_terms": calibration["host_terms"]["coefficients"],
            "python_loop_1e6_s": calibration.get("host", {}).get("python_loop_1e6_s")}


def engine_steps_against(first: dict, other: dict) -> dict[str, float]:
    from runtime.gpu.calibrate import aggregate_passes

    a = {r["label"]: r["time_s"] for r in aggregate_passes(first["table"]) if not r["label"].startswith("live-")}
    ratios: dict[str, list[float]] = {}
    for r in aggregate_passes(other["table"]):
        if r["label"] in a:
            ratios.setdefault(r["label"].split()[0], []).append(r["time_s"] / a[r["label"]])
    return {g: statistics.median(v) for g, v in ratios.items()}


def spread(values) -> float:
    return max(values) / min(values) - 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("calibrations", type=Path, nargs="+")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    files, per_file = {}, {}
    for path in args.calibrations:
        try:
            files[path.name] = json.loads(path.read_text())
            per_file[path.name] = capacities(files[path.name])
        except (OSError, ValueError, KeyError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
    first = next(iter(files.values()))
    for name, cal in files.items():
        per_file[name]["engine_steps_over_first_by_region"] = engine_steps_against(first, cal)
    out = {"command": "python benchmarks/capacity_spread.py " + " ".join(sys.argv[1:] if argv is None else argv), "files": per_file}
    if len(files) > 1:
        out["spread_with_host_terms"] = spread([f["with_host_terms_tok_s"] for f in per_file.values()])
        out["spread_engine_step_only"] = spread([f["engine_step_only_tok_s"] for f in per_file.values()])
    for name, f in per_file.items():
        print(f"{name}: capacity {f['with_host_terms_tok_s']:,.0f} tok/s with host terms (c0 {1e6 * f['host_terms']['c0_s']:.0f} µs, "
              f"{1e6 * f['host_terms']['decode_s_per_seq']:.2f} µs a decode), {f['engine_step_only_tok_s']:,.0f} engine step only; engine steps / first: "
              + ", ".join(f"{g} {v:.3f}" for g, v in f["engine_steps_over_first_by_region"].items()))
    if len(files) > 1:
        print(f"spread between machines: {100 * out['spread_with_host_terms']:.1f} % with host terms, {100 * out['spread_engine_step_only']:.1f} % engine step only")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
