"""Are a fidelity run's latency misses its steps' speed or the simulated loop? Each point simulated
again with the engine-step model scaled by how much slower (or faster) that point's live steps ran.

    python benchmarks/fidelity_step_scaled.py docs/calibration-h200-run20-fidelity.json docs/fidelity-h200-run20.json \\
        --out docs/fidelity-h200-run20-step-scaled.json

From the committed files alone: each load's workload and WAIT policy are rebuilt from the
calibration and the run's sizing (`gpu_fidelity.point_workload`, the same solve), and each point
is simulated with the loop the run used (synchronous, or `--loop overlapped`'s
`simulate_overlapped`) twice: with the model as calibrated, which must give the run's recorded
simulated figures (checked, and printed), and with the engine-step model times k, k the median
live / model ratio of that point's mixed steps (the host terms unchanged). k comes from the point
itself, so this is an attribution, not a prediction: where the scaled simulation meets the live
latency, the miss was how fast the machine ran the steps during that run, not how the simulator
runs the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def scaled(engine, full, k: float):
    """(engine-step model × k, the full model with the same host terms on top)."""
    e = dataclasses.replace(engine, coefficients=tuple(c * k for c in engine.coefficients),
                            decode_knot_s=tuple(c * k for c in engine.decode_knot_s), linear=None)
    host = [f - c for f, c in zip(full.coefficients, engine.coefficients)]
    return e, dataclasses.replace(full, coefficients=tuple(c + h for c, h in zip(e.coefficients, host)), decode_knot_s=e.decode_knot_s, linear=None)


def simulate(config, workload, engine, full, loop: str) -> dict:
    from gpu_fidelity import _summary_keys, simulate_overlapped_summary

    from runtime.simrun import run_simulation

    if loop == "overlapped":
        return simulate_overlapped_summary(config, engine, full)
    return _summary_keys(run_simulation(dataclasses.replace(config, workload=dataclasses.replace(workload, batch_time=full),
                                                            accept_policy_mismatch=True)).summary)


def report(calibration: dict, fidelity: dict, workdir: Path) -> dict:
    from gpu_fidelity import point_config, point_workload

    from fluid.batch_time import batch_time_from_dict

    loop = fidelity.get("loop", "synchronous")
    full = batch_time_from_dict(calibration["batch_time_stepwise"], source="calibration")
    engine = batch_time_from_dict(calibration.get("engine_step_model", calibration["batch_time_stepwise"]), source="calibration")
    built, out = {}, []
    for p in fidelity["points"]:
        if p["load"] not in built:
            with contextlib.redirect_stdout(io.StringIO()):  # the solve's report: the run's log has it
                built[p["load"]] = point_workload(calibration, p["load"], fidelity["sizing"]["capacity_tok_s"], workdir, "", fidelity["slack"])
        workload, policy, document = built[p["load"]]
        config = point_config(workload, p["scheduler"], policy, document, fidelity["requests"], 0)
        as_run = simulate(config, workload, engine, full, loop)
        k = p["live_turn_vs_stepwise_by_region"]["mixed"]["median_measured_over_predicted"]
        sim = simulate(config, workload, *scaled(engine, full, k), loop)
        out.append({"scheduler": p["scheduler"], "load": p["load"], "mixed_live_over_model": k,
                    "measured_mean_latency_s": p["measured_mean_latency_s"], "recorded_simulated_mean_latency_s": p["simulated_mean_latency_s"],
                    "rebuilt_simulated_mean_latency_s": as_run["mean_latency_s"], "scaled_simulated_mean_latency_s": sim["mean_latency_s"],
                    "measured_tok_s": p["measured_tok_s"], "scaled_simulated_tok_s": sim["tok_s"]})
    return {"loop": loop, "points": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("calibration", type=Path)
    ap.add_argument("fidelity", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    try:
        calibration, fidelity = json.loads(args.calibration.read_text()), json.loads(args.fidelity.read_text())
        if "batch_time_stepwise" not in calibration or "points" not in fidelity or "sizing" not in fidelity:
            raise ValueError("needs a calibration with a stepwise model and a fidelity file with points and sizing (gpu_fidelity.py)")
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        r = report(calibration, fidelity, Path(tmp))
    r["command"] = "python benchmarks/fidelity_step_scaled.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for p in r["points"]:
        m = p["measured_mean_latency_s"]
        print(f"{p['scheduler']:8s} {p['load']}: live {m:.3f} s; simulated {p['recorded_simulated_mean_latency_s']:.3f} "
              f"(rebuilt {p['rebuilt_simulated_mean_latency_s']:.3f}, {100 * (p['recorded_simulated_mean_latency_s'] / m - 1):+.1f} %); "
              f"steps × {p['mixed_live_over_model']:.3f}: {p['scaled_simulated_mean_latency_s']:.3f} ({100 * (p['scaled_simulated_mean_latency_s'] / m - 1):+.1f} %)")
    if args.out:
        args.out.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
