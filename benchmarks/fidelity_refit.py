"""A committed fidelity run scored again with the current batch-time model code, offline (no GPU).

    PYTHONPATH=. python benchmarks/fidelity_refit.py --out docs/fidelity-h200-run6-refit.json

Reads a `gpu_fidelity.py` run's files (default: H200 run 6, `docs/fidelity-h200-run6.md`, the
last made before the `prefill_run_s_per_token` term: `docs/calibration-h200-run6.json` with its grid rows, `docs/fidelity-h200-run6.json` with its
points, `docs/fidelity-h200-run6-host-steps.json.gz` with the host-term runs' steps and
`docs/fidelity-h200-run6-steps.json.gz` with every point's live steps) and does what the run did
after its measurements, with today's model code:
1. fits the stepwise engine-step model to the grid rows (`fit_stepwise`: k-fold held-out MAPE per
   region, the knee picked by nested k-fold), where the run stored the fit its code made;
2. fits the host terms on the host runs' steps (`fit_host_terms`, all three schedulers pooled, as
   the run did; those runs used other arrivals, seed 1, than the points, seed 0);
3. simulates every point on its own arrivals (`fidelity_points`) with the stored model and with
   the refitted one, against the live figures: throughput, mean latency, TTFT, evictions;
4. scores both models on the points' live steps (never in either fit): median live turn over the
   model and MAPE, per region.
The live run is the same data either way; only the model differs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

SCHEDULERS = ("wait", "vllm-v1", "sarathi")
DEFAULTS = {"calibration": "docs/calibration-h200-run6.json", "fidelity": "docs/fidelity-h200-run6.json",
            "host_steps": "docs/fidelity-h200-run6-host-steps.json.gz", "steps": "docs/fidelity-h200-run6-steps.json.gz"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for key, default in DEFAULTS.items():
        ap.add_argument("--" + key.replace("_", "-"), type=Path, default=Path(default))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    for key in DEFAULTS:
        if not getattr(args, key).is_file():
            print(f"error: --{key.replace('_', '-')} {getattr(args, key)}: no such file; give the files of one gpu_fidelity.py run", file=sys.stderr)
            return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fidelity_points import rebuild_workloads, simulate_point

    from fluid.batch_time import batch_time_from_dict
    from fluid.batch_time_stepwise import fit_host_terms, fit_stepwise
    from runtime.gpu.calibrate import file_buckets, turn_s
    from runtime.recorded_steps import region
    from runtime.replay import shape_of

    cal, fid = json.loads(args.calibration.read_text()), json.loads(args.fidelity.read_text())
    host_runs = json.loads(gzip.open(args.host_steps, "rt").read())
    live_runs = json.loads(gzip.open(args.steps, "rt").read())
    stored = batch_time_from_dict(cal["batch_time_stepwise"], source=str(args.calibration))
    bt = cal["batch_time_stepwise"]
    buckets = file_buckets(bt)
    grid = [(shape_of(r), r["time_s"], r["label"]) for r in cal["table"] if not r["label"].startswith("live-")]
    fit = fit_stepwise(grid, **buckets)
    host_turns = [(shape_of(r), turn_s(rows, i)) for rows in host_runs.values() for i, r in enumerate(rows)]
    refit, host = fit_host_terms(fit.model, host_turns)
    out = {"inputs": {k: str(getattr(args, k)) for k in DEFAULTS}, "device": cal["device"], "versions": cal["versions"],
           "command": "PYTHONPATH=. python benchmarks/fidelity_refit.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "grid_rows": len(grid), "stored_heldout_step_mape": cal.get("heldout_step_mape"),
           "stored_heldout_mape_by_region": cal.get("fits", {}).get("stepwise", {}).get("heldout_mape_by_region"),
           "refit_heldout_step_mape": fit.heldout_mape, "refit_heldout_mape_by_region": fit.heldout_mape_by_region,
           "refit_knee_tokens": fit.model.knee_tokens, "refit_model": refit.to_dict(), "refit_host_terms": host,
           "host_steps": len(host_turns), "points": []}
    print(f"{cal['device']}; {len(grid)} grid rows: held-out step MAPE stored {100 * out['stored_heldout_step_mape']:.2f} %, "
          f"refitted {100 * fit.heldout_mape:.2f} % (" + ", ".join(f"{k} {100 * v:.1f} %" for k, v in fit.heldout_mape_by_region.items()) + ")")
    print("host terms (pooled, " + str(len(host_turns)) + " steps): " + ", ".join(f"{k} {1e6 * v:.2f} µs" for k, v in host.items()))
    workloads = rebuild_workloads(cal, args.calibration.name, fid)
    print("point            live tok/s   stored model    refitted     | live lat   stored model     refitted        | evictions live/stored/refit")
    for p in fid["points"]:
        name, load = p["scheduler"], p["load"]
        s_old, s_new = (simulate_point(workloads, fid, name, load, m) for m in (stored, refit))
        row = {"scheduler": name, "load": load, "below_saturation": p["below_saturation"],
               "measured_tok_s": p["measured_tok_s"], "measured_mean_latency_s": p["measured_mean_latency_s"],
               "measured_mean_ttft_s": p["measured_mean_ttft_s"], "measured_evictions": p["measured_evictions"],
               "stored_reproduced_tok_s": s_old.decode_throughput_tokens_per_s, "stored_recorded_tok_s": p["simulated_tok_s"]}
        for tag, s in (("stored", s_old), ("refit", s_new)):
            row |= {f"{tag}_tok_s": s.decode_throughput_tokens_per_s, f"{tag}_mean_latency_s": s.mean_latency_s,
                    f"{tag}_mean_ttft_s": s.mean_ttft_s, f"{tag}_evictions": s.evictions,
                    f"{tag}_tok_s_error": s.decode_throughput_tokens_per_s / p["measured_tok_s"] - 1,
                    f"{tag}_latency_error": s.mean_latency_s / p["measured_mean_latency_s"] - 1}
        steps = live_runs[f"{name}-L{load:.2f}"]
        cells: dict[str, list] = {}
        for i, r in enumerate(steps):
            cells.setdefault(region(r), []).append((shape_of(r), turn_s(steps, i)))
        row["live_turn_by_region"] = {
            g: {"steps": len(v), **{f"{tag}_median_live_over_model": statistics.median(t / m.step_time_s(s) for s, t in v) for tag, m in (("stored", stored), ("refit", refit))},
                **{f"{tag}_mape": statistics.fmean(abs(m.step_time_s(s) - t) / t for s, t in v) for tag, m in (("stored", stored), ("refit", refit))}}
            for g, v in sorted(cells.items())}
        out["points"].append(row)
        print(f"{name:8s} L{load:.1f}  {p['measured_tok_s']:7.0f}   {row['stored_tok_s']:7.0f} ({100 * row['stored_tok_s_error']:+5.1f} %)  "
              f"{row['refit_tok_s']:7.0f} ({100 * row['refit_tok_s_error']:+5.1f} %) | {p['measured_mean_latency_s']:.3f} s  "
              f"{row['stored_mean_latency_s']:.3f} ({100 * row['stored_latency_error']:+5.1f} %)  {row['refit_mean_latency_s']:.3f} ({100 * row['refit_latency_error']:+5.1f} %) | "
              f"{p['measured_evictions']}/{row['stored_evictions']}/{row['refit_evictions']}")
    below = [r for r in out["points"] if r["below_saturation"]]
    for tag in ("stored", "refit"):
        out[f"{tag}_latency_within_5pct"] = sum(abs(r[f"{tag}_latency_error"]) <= 0.05 for r in below)
        out[f"{tag}_tok_s_within_2pct"] = sum(abs(r[f"{tag}_tok_s_error"]) <= 0.02 for r in below)
    out["points_below_saturation"] = len(below)
    print(f"below saturation ({len(below)} points): latency within 5 %: stored model {out['stored_latency_within_5pct']}, "
          f"refitted {out['refit_latency_within_5pct']}; throughput within 2 %: {out['stored_tok_s_within_2pct']}, {out['refit_tok_s_within_2pct']}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
