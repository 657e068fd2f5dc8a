"""The simulated overlapped loop against a recorded overlap run (CPU; seconds).

    PYTHONPATH=. python benchmarks/overlap_sim.py --calibration docs/calibration-h200-run15-fidelity.json \\
        --fidelity docs/fidelity-h200-run15.json --overlap docs/overlap-h200.json --out docs/overlap-h200-sim.json

`gpu_fidelity.py --overlap-loads` ran each scheduler live twice on one machine, synchronous and
overlapped (OUT/overlap.json), beside the synchronous simulator. This rebuilds each point's
workload and WAIT policy from that run's calibration and sizing (as `gpu_fidelity.py` built them:
the offered rate is checked against the recorded one), simulates the same arrivals through the
overlapped loop (`runtime.sim.simulate_overlapped`: the engine-step model on the device, the host
terms hidden behind the step before, arrivals during a step one step later) and writes, per point,
the live overlapped figures against that prediction and against the synchronous simulator's.
Newer overlap files hold the prediction already (`simulated_overlapped`); this recomputes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _rel(sim: float, live: float) -> float | None:
    """sim against live; None where the live figure is 0 (a point that carried nothing in its window)."""
    return sim / live - 1 if live else None


def _pct(rel: float | None) -> str:
    return "n/a" if rel is None else f"{100 * rel:+.1f} %"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", type=Path, required=True, help="the run's calibration (engine_step_model and host terms)")
    ap.add_argument("--fidelity", type=Path, required=True, help="the run's fidelity.json (its sizing and slack)")
    ap.add_argument("--overlap", type=Path, required=True, help="the run's overlap.json")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for path in (args.calibration, args.fidelity, args.overlap):
        if not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return 2
    from gpu_fidelity import point_config, point_workload, simulate_overlapped_summary

    from fluid.batch_time import batch_time_from_dict

    calibration = json.loads(args.calibration.read_text())
    fidelity = json.loads(args.fidelity.read_text())
    overlap = json.loads(args.overlap.read_text())
    if "engine_step_model" not in calibration:
        print(f"error: {args.calibration} has no engine_step_model (a calibration without host terms)", file=sys.stderr)
        return 2
    full = batch_time_from_dict(calibration["batch_time_stepwise"], source="calibration")
    engine = batch_time_from_dict(calibration["engine_step_model"], source="calibration")
    capacity = fidelity["sizing"]["capacity_tok_s"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for p in overlap["points"]:
            load = p["load"]
            if load not in built:
                built[load] = point_workload(calibration, load, capacity, Path(tmp), "", fidelity.get("slack", 0.0))
            workload, policy, document = built[load]
            offered = sum(t.rate_per_s * t.decode for t in workload.types)
            if abs(offered / p["offered_decode_tok_s"] - 1) > 1e-9:
                print(f"error: load {load}: rebuilt offered rate {offered:.3f} tok/s, recorded {p['offered_decode_tok_s']:.3f}", file=sys.stderr)
                return 2
            config = point_config(workload, p["scheduler"], policy, document, overlap["requests"], 0)
            sim = simulate_overlapped_summary(config, engine, full)
            live, sync, sync_sim = p["overlapped"], p["synchronous"], p["simulated_with_host_terms"]
            row = {"scheduler": p["scheduler"], "load": load, "live_overlapped": live, "simulated_overlapped": sim,
                   "live_synchronous": sync, "simulated_synchronous": sync_sim,
                   "overlapped_error": {k: _rel(sim[k], live[k]) for k in ("tok_s", "mean_ttft_s", "mean_latency_s")},
                   "synchronous_error": {k: _rel(sync_sim[k], sync[k]) for k in ("tok_s", "mean_ttft_s", "mean_latency_s")}}
            rows.append(row)
            e, f = ({k: _pct(v) for k, v in row[name].items()} for name in ("overlapped_error", "synchronous_error"))
            print(f"{p['scheduler']:8s} L={load}: overlapped live {live['tok_s']:.0f} tok/s, TTFT {1e3 * live['mean_ttft_s']:.1f} ms, "
                  f"latency {live['mean_latency_s']:.3f} s; simulated {sim['tok_s']:.0f}, {1e3 * sim['mean_ttft_s']:.1f} ms, "
                  f"{sim['mean_latency_s']:.3f} s ({e['tok_s']}, {e['mean_ttft_s']}, {e['mean_latency_s']}); "
                  f"synchronous sim vs live {f['tok_s']}, {f['mean_ttft_s']}, {f['mean_latency_s']}")
    doc = {"command": "PYTHONPATH=. python benchmarks/overlap_sim.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "device": overlap.get("device"), "versions": overlap.get("versions"), "calibration": str(args.calibration),
           "overlap": str(args.overlap), "points": rows}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
