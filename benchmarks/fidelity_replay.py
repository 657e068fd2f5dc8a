"""Is the live-vs-simulated eviction gap accounting or timing? Replay the live clock into the simulator.

    PYTHONPATH=. python benchmarks/fidelity_replay.py [--calibration docs/calibration-h200-run14-fidelity.json]
        [--steps docs/fidelity-h200-run14-steps.json.gz] [--requests 2000] [-o docs/fidelity-h200-replay.json]

For each live point of a `gpu_fidelity.py` run (its live step log and its calibration), rebuild
the same workload and arrivals, and run the same scheduler three ways through the shared executor
loop:
- `replayed`: on the live clock (`runtime.replay`: step k lasts what live step k lasted, the loop
  is asked at the live step starts). Same accounting ⇒ the same steps, KV held and evictions as
  live, step for step; the first difference is reported otherwise.
- `stepwise`: the simulator with the calibrated stepwise batch-time model (what the fidelity
  table reports);
- `stepwise_x_live_mean`: the same model scaled so its mean step equals the live mean step
  (how much of the gap a uniformly slower step explains).
Evictions are counted over the whole run (every step's `num_evicted`).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import sys
import tempfile
from pathlib import Path

SCHEDULERS = ("wait", "vllm-v1", "sarathi")


@dataclasses.dataclass(frozen=True)
class Scaled:
    """A batch-time model times a constant factor."""

    model: object
    factor: float
    kind: str = "scaled"

    def step_time_s(self, shape) -> float:
        return self.factor * self.model.step_time_s(shape)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", type=Path, default=Path("docs/calibration-h200-run14-fidelity.json"))
    ap.add_argument("--steps", type=Path, default=Path("docs/fidelity-h200-run14-steps.json.gz"))
    ap.add_argument("--requests", type=int, default=2000, help="the live run's request count")
    ap.add_argument("--slack", type=float, default=0.0)
    ap.add_argument("--points", help="comma-separated keys of the step log (default: all), e.g. vllm-v1-L0.50")
    ap.add_argument("--fidelity", type=Path, help="the run's fidelity.json: its live latency and TTFT are printed beside the replay's")
    ap.add_argument("--scheduler-code", help="which tree's schedulers ran the replay (recorded in the output; the live run's own tree reproduces it)")
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args(argv)
    for p in (args.calibration, args.steps):
        if not p.is_file():
            print(f"error: {p} is not a file (a gpu_fidelity.py output: calibration.json, live-steps.json.gz)", file=sys.stderr)
            return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_loop_workload

    from fluid.batch_time import batch_time_from_dict
    from fluid.workload_io import load_workload
    from runtime.arrivals import make_requests
    from runtime.cli_simulate import load_policy_arg
    from runtime.kv_blocks import KVBlockManager
    from runtime.metrics import summarize, warmup_cut_s
    from runtime.replay import replay
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate
    from validation.cli import main as cli

    calibration = json.loads(args.calibration.read_text())
    measured = {}
    if args.fidelity is not None:
        fid = json.loads(args.fidelity.read_text())
        for p in fid["runs"][-1]["points"] if "runs" in fid else fid["points"]:
            measured[f"{p['scheduler']}-L{p['load']:.2f}"] = p
    stepwise = batch_time_from_dict(calibration["batch_time_stepwise"], source=str(args.calibration))
    with gzip.open(args.steps, "rt") as f:
        live = json.load(f)
    keys = args.points.split(",") if args.points else list(live)
    out, workloads = [], {}
    tmp = Path(tempfile.mkdtemp())
    for key in keys:
        if key not in live:
            print(f"error: no point {key!r} in {args.steps} (it has {', '.join(live)})", file=sys.stderr)
            return 2
        name, _, load_text = key.rpartition("-L")
        load = float(load_text)
        if load not in workloads:  # the workload and WAIT policy exactly as gpu_fidelity.py built them
            wl, design = gpu_loop_workload.build(calibration, load=load, memory_use=0.75)
            wl_path = tmp / f"default-L{load:.2f}.yaml"
            wl_path.write_text(gpu_loop_workload.to_yaml(wl, design, "calibration.json"))
            policy_path = tmp / f"policy-wait-L{load:.2f}.json"
            if cli(["solve", str(wl_path), "--slack", str(args.slack), "--service-rule", "cohort", "-o", str(policy_path)]) != 0:
                return 2
            workloads[load] = (load_workload(str(wl_path)), load_policy_arg(str(policy_path))[0])
        workload, policy = workloads[load]
        rows = live[key]

        def scheduler():
            kv = KVBlockManager(workload.kv_capacity_tokens, 16)
            return make_scheduler(name, kv, **({"policy": policy} if name == "wait" else {}))

        def requests():
            return make_requests(workload, args.requests, 0)

        rep = replay(scheduler(), requests(), rows)
        live_mean = sum(r["measured_s"] for r in rows) / len(rows)
        sim = simulate(scheduler(), requests(), stepwise)
        sim_mean = (sum(sim.steps.end_s) - sum(sim.steps.start_s)) / sim.num_steps
        scaled = simulate(scheduler(), requests(), Scaled(stepwise, live_mean / sim_mean))
        cut = warmup_cut_s(requests(), 0.1)

        def metrics(res) -> dict:
            m = summarize(res, scheduler=name, warmup_s=cut)
            return {"tok_s": m.decode_throughput_tokens_per_s, "mean_latency_s": m.mean_latency_s, "mean_ttft_s": m.mean_ttft_s, "evictions": m.evictions}

        live_m = measured.get(key)
        point = {
            "point": key, "scheduler": name, "load": load, "live_steps": len(rows),
            "live_evictions": sum(r["num_evicted"] for r in rows), "live_mean_step_s": live_mean,
            "replayed_steps": rep.result.num_steps, "replayed_evictions": sum(rep.result.steps.num_evicted),
            "replay_identical": rep.identical, "replay_first_difference": rep.first_difference,
            "replay_difference": {k: list(v) for k, v in (rep.difference or {}).items()},
            "stepwise_evictions": sum(sim.steps.num_evicted), "stepwise_mean_step_s": sim_mean, "stepwise_steps": sim.num_steps,
            "scale_to_live_mean": live_mean / sim_mean,
            "stepwise_x_live_mean_evictions": sum(scaled.steps.num_evicted),
            "live": None if live_m is None else {"tok_s": live_m["measured_tok_s"], "mean_latency_s": live_m["measured_mean_latency_s"],
                                                 "mean_ttft_s": live_m["measured_mean_ttft_s"], "evictions": live_m["measured_evictions"]},
            "replayed": metrics(rep.result), "stepwise": metrics(sim), "stepwise_x_live_mean": metrics(scaled),
        }
        out.append(point)
        same = "identical" if rep.identical else f"differs from step {rep.first_difference}: {point['replay_difference']}"
        print(f"{key:14s} live {point['live_evictions']:4d} evictions in {len(rows)} steps | replay {point['replayed_evictions']:4d} ({same}) "
              f"| stepwise {point['stepwise_evictions']:4d} | stepwise x{point['scale_to_live_mean']:.3f} {point['stepwise_x_live_mean_evictions']:4d}", flush=True)
        for what in ("live", "replayed", "stepwise", "stepwise_x_live_mean"):
            m = point[what]
            if m is not None:
                print(f"    {what:21s} {m['tok_s']:8.0f} tok/s  latency {m['mean_latency_s']:.3f} s  TTFT {m['mean_ttft_s']:.3f} s  evictions {m['evictions']}")
    if args.out:
        doc = {"command": "PYTHONPATH=. python benchmarks/fidelity_replay.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "scheduler_code": args.scheduler_code, "calibration": str(args.calibration), "steps": str(args.steps), "points": out}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
