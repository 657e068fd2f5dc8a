"""One drift experiment live on the GPU engine, beside the simulator and the fluid ODE (docs/adaptive.md).

    PYTHONPATH=. python benchmarks/gpu_drift.py                 # H200, Llama-2-7B shape: about 3 min
    PYTHONPATH=. python benchmarks/gpu_drift.py --model tiny-llama --device cpu --kv-tokens 4096 \\
        --smoke --max-requests 30 --out /tmp/gpu-drift.json     # smoke test of the script (seconds)

One process loads the model once (random weights, bf16 on CUDA) and, for each scheduler of the
experiment (default `validation/experiments/adaptive/gpu-step.yaml`: adaptive WAIT, static-mean,
static-peak, vLLM-v1), runs the experiment's arrivals live on the engine (`runtime/gpu/engine.py`,
open loop on the wall clock), then simulates the same arrivals with the workload's batch-time
model. Policies, arrivals, the ODE benchmark and every recorded field are those of
`fluidsched drift` (`validation/drift.py`), so the live runs read as the simulated ones do.

The workload's C and batch time are the file's (`docs/default-h200.yaml`: calibrated on an H200),
or with `--calibration` the batch time of a calibration made on this machine first (the protocol
of docs/benchmarks-gpu.md: a model from another host sizes the experiment for that host):

    PYTHONPATH=. python benchmarks/gpu_fidelity.py --out-dir OUT --loads 0.5 --requests 300 --skip-steps
    PYTHONPATH=. python benchmarks/gpu_drift.py --calibration OUT/calibration.json [--size-to-simulated-capacity]

`--size-to-simulated-capacity` makes the profile's fractions fractions of the capacity the simulator
finds with that calibration's stepwise model (as gpu_fidelity.py sizes its loads) instead of the
fluid θ* of its linear3, which overstates the engine: on the H200 fidelity calibration the
simulator carries 0.72 of θ*·(mean rate) on docs/default-h200.yaml. The
pool is sized to C. When the pool is smaller (`--kv-tokens` below C, a CPU smoke test) C is
lowered to the pool and the file says so.

Writes OUT (default `docs/adaptive-<name>-live.json`): device, versions, host, model, command, the
experiment's fields, `runs` (live: the fields of docs/adaptive-<name>.json plus measured step
times against the batch-time model) and `simulated_runs` (the same arrivals simulated), each run
with the fluid ODE's curve beside its own. Written again after every scheduler, so a cut run
keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_EXPERIMENT = "validation/experiments/adaptive/gpu-step.yaml"
# for the printed time estimate only: the H200 live decode rate near capacity on this workload,
# and start-up (weights, warm-up forward, graph capture)
LIVE_DECODE_TOK_S_GUESS = 10_000.0
SETUP_S_GUESS = 60.0
WARMUP_REQUESTS = 300  # a discarded live run first, so no scheduler pays the first steps' compiles


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"a drift experiment file (default {DEFAULT_EXPERIMENT})")
    ap.add_argument("--out", type=Path, help="result JSON (default docs/adaptive-<name>-live.json)")
    ap.add_argument("--model", default="llama-2-7b", help="model preset (tiny-llama for a CPU smoke test)")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu with a tiny model and --kv-tokens")
    ap.add_argument("--kv-tokens", type=int, help="KV pool size (default: the workload's C)")
    ap.add_argument("--smoke", action="store_true", help="the experiment file's small version")
    ap.add_argument("--max-requests", type=int, help="keep only the first N arrivals (smoke tests)")
    ap.add_argument("--schedulers", help="comma-separated subset of the experiment's schedulers")
    ap.add_argument("--no-warmup", action="store_true", help="skip the discarded warm-up run")
    ap.add_argument("--calibration", type=Path,
                    help="a calibration made on THIS machine just before (gpu_fidelity.py's OUT/calibration.json): "
                         "its fluid batch time (linear3 fitted to the stepwise model with host terms) replaces the "
                         "workload file's, so the experiment's fractions of θ* are of this machine's capacity")
    ap.add_argument("--size-to-simulated-capacity", action="store_true",
                    help="with --calibration: the profile's fractions are of the capacity the simulator finds with the "
                         "calibration's stepwise model (vLLM-v1 and Sarathi-Serve overloaded), not of the fluid θ* of its "
                         "linear3, which overstates the engine (docs/adaptive.md); the factor is recorded")
    return ap.parse_args(argv)


def _sized_to_simulated_capacity(exp, workload, doc: dict, path: Path):
    """`exp` with its rates scaled so a fraction of θ* becomes that fraction of the simulator's
    capacity on this workload with the calibration's stepwise model (`gpu_loop_workload.capacity_probe`,
    offered 1.5 × θ*), and the sizing record. Steps scale their `scales`, a sine its `mean` and
    `amplitude`, a trace its `scale`."""
    import gpu_loop_workload

    from fluid.batch_time import batch_time_from_dict
    from fluid.equilibrium import closed_form
    from fluid.errors import InputError

    if "batch_time_stepwise" not in doc:
        raise InputError("no `batch_time_stepwise` in it: --size-to-simulated-capacity needs gpu_fidelity.py's OUT/calibration.json",
                         source=str(path), field="--calibration")
    stepwise = batch_time_from_dict(doc["batch_time_stepwise"], source=str(path))
    theta = closed_form(workload).capacity_scale
    fluid_tok_s = theta * sum(t.rate_per_s * t.decode for t in workload.types)
    probe = gpu_loop_workload.capacity_probe(workload, stepwise, overload=1.5 * theta)
    factor = probe["capacity_tok_s"] / fluid_tok_s
    profile = dict(exp.profile)
    keys = {"steps": ("scales",), "sine": ("mean", "amplitude")}.get(profile["kind"], ("scale",))
    for key in keys:
        value = profile.get(key, 1.0)
        profile[key] = [v * factor for v in value] if isinstance(value, list) else value * factor
    sizing = {"fluid_capacity_tok_s": fluid_tok_s, "theta_star": theta, "factor": factor, "scaled": list(keys), "probe": probe}
    return dataclasses.replace(exp, profile=profile), sizing


def _with_calibration(workload, path: Path):
    """`workload` with the fluid batch time of a calibration file (its `batch_time`: after
    gpu_fidelity's host terms, linear3 refitted to the full stepwise model), and the file's content."""
    from fluid.batch_time import batch_time_from_dict
    from fluid.errors import InputError

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read a calibration JSON: {err}", source=str(path), field="--calibration") from err
    if not isinstance(doc, dict) or "batch_time" not in doc:
        raise InputError("no `batch_time` in it; give gpu_fidelity.py's OUT/calibration.json or a `fluidsched calibrate` file",
                         source=str(path), field="--calibration")
    return dataclasses.replace(workload, batch_time=batch_time_from_dict(doc["batch_time"], source=str(path))), doc


def _step_stats(res, batch_time) -> dict:
    measured = [s.end_s - s.start_s for s in res.steps]
    if not measured:
        return {"num_steps": 0}
    model = [batch_time.step_time_s(s.shape) for s in res.steps]
    return {"num_steps": len(measured), "median_step_s": statistics.median(measured),
            "median_model_step_s": statistics.median(model),
            "median_abs_error_of_model": statistics.median(abs(m - t) / t for m, t in zip(model, measured) if t > 0),
            "eager_step_share": 1 - sum(bool(s.graph) for s in res.steps) / len(measured),
            "end_s": res.end_s, "restart_token_mismatches": res.restart_token_mismatches}


def main(argv=None) -> int:
    args = _args(argv)
    t0 = time.perf_counter()
    import gpu_steps

    from fluid.errors import InputError
    from fluid.workload_io import load_workload
    from validation import drift

    try:
        exp = drift.load_experiment(args.experiment, smoke=args.smoke)
        if args.schedulers:
            chosen = tuple(s.strip() for s in args.schedulers.split(",") if s.strip())
            unknown = sorted(set(chosen) - set(exp.schedulers))
            if unknown:
                raise InputError(f"{unknown} not in the experiment's schedulers {list(exp.schedulers)}", field="--schedulers")
            exp = dataclasses.replace(exp, schedulers=chosen)
        if args.max_requests is not None and args.max_requests < 1:
            raise InputError(f"must be ≥ 1, got {args.max_requests}", field="--max-requests")
        workload = load_workload(exp.workload)
        if args.size_to_simulated_capacity and args.calibration is None:
            raise InputError("needs --calibration (the calibration whose stepwise model the simulator runs)", field="--size-to-simulated-capacity")
        sizing = None
        if args.calibration is not None:
            workload, calibration = _with_calibration(workload, args.calibration)
            if args.size_to_simulated_capacity:
                exp, sizing = _sized_to_simulated_capacity(exp, workload, calibration, args.calibration)
                print(f"sized to the simulated capacity: {sizing['probe']['capacity_tok_s']:.0f} decode tok/s against the fluid's "
                      f"{sizing['fluid_capacity_tok_s']:.0f} (θ* {sizing['theta_star']:.3f}): profile × {sizing['factor']:.4f}", flush=True)
        engine, info = gpu_steps.build_engine(args.model, kv_tokens=args.kv_tokens or workload.kv_capacity_tokens,
                                              device=args.device)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _run(args, argv, t0, exp, workload, engine, info, sizing)


def _run(args, argv, t0, exp, workload, engine, info, sizing=None) -> int:
    from fluid.file_output import atomic_write_text, finite_json
    from fluid.tables import format_table
    from runtime.gpu.host_info import describe_host, versions
    from runtime.kv_blocks import KVBlockManager
    from runtime.sim import simulate
    from validation import drift

    pool_tokens = info.kv_capacity_tokens
    reduced = pool_tokens < workload.kv_capacity_tokens
    if reduced:
        workload = dataclasses.replace(workload, kv_capacity_tokens=pool_tokens)
    capacity = workload.kv_capacity_tokens
    profile, rows = drift.build_profile(exp, workload)
    peak_rate, documents, names = drift.policy_documents(workload, exp, profile)
    seed = exp.seeds[0]
    proto = drift.experiment_requests(exp, workload, profile, rows, seed)
    if args.max_requests is not None:
        proto = proto[: args.max_requests]
    end_s = max(profile.duration_s, proto[-1].arrival_s if proto else 0.0)
    curve_end_s = end_s * 1.5  # as `fluidsched drift`; on CUDA also each live run's horizon
    decode_tokens = sum(r.output_tokens for r in proto)
    per_run_s = min(max(end_s, decode_tokens / LIVE_DECODE_TOK_S_GUESS) + 2.0, curve_end_s)
    setup_s = time.perf_counter() - t0
    print(f"[{setup_s:.0f} s] {args.model} on {info.device_name}, pool {pool_tokens} KV tokens, C = {capacity}"
          f"{' (lowered to the pool)' if reduced else ''}; {exp.name}: {len(proto)} requests, {decode_tokens} decode tokens, "
          f"{end_s:.1f} s of arrivals, seed {seed}", flush=True)
    if args.device == "cuda":
        total = setup_s + len(exp.schedulers) * per_run_s + (0 if args.no_warmup else 5.0)
        print(f"estimate: about {per_run_s:.0f} s per live run at ~{LIVE_DECODE_TOK_S_GUESS:.0f} decode tok/s "
              f"(each cut at {curve_end_s:.0f} s), {total:.0f} s in all (start-up {setup_s:.0f} s so far)", flush=True)

    out = args.out or ROOT / "docs" / f"adaptive-{exp.name}-live.json"
    result = {"device": info.device_name, "versions": versions(), "host": describe_host(), "model": args.model,
              "command": "PYTHONPATH=. python benchmarks/gpu_drift.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "smoke_test": bool(args.smoke or args.max_requests is not None or args.device != "cuda"),
              "kv_pool_tokens": pool_tokens, "kv_capacity_tokens": capacity, "kv_capacity_lowered_to_pool": reduced,
              "batch_time": workload.batch_time.to_dict(),
              "batch_time_from": str(args.calibration) if args.calibration else exp.workload, "seed": seed, "requests": len(proto),
              "experiment": exp.name, "workload": exp.workload, "policy": exp.policy, "profile": exp.profile,
              "adaptive_overrides": exp.adaptive, "sized_to_simulated_capacity": sizing,
              "mean_rate_per_s": profile.mean_rate_per_s(), "peak_rate_per_s": profile.peak_rate_per_s(),
              "static_peak_solved_at_rate_per_s": peak_rate, "compare_from_share": drift.COMPARE_FROM_SHARE, "measure": drift.MEASURE,
              "grid_s": exp.grid_s,
              "runs": [], "simulated_runs": []}

    def write():
        result["wall_s"] = time.perf_counter() - t0
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(finite_json(result), indent=1) + "\n")

    def kv():
        return KVBlockManager(capacity, engine.block_size, track_block_ids=True)

    if not args.no_warmup and proto:
        warm = [drift._copy(r) for r in proto[:WARMUP_REQUESTS]]
        engine.sequences.clear()
        engine.run(drift.build_scheduler("vllm-v1", kv(), documents, names), warm)
        print(f"[{time.perf_counter() - t0:.0f} s] warm-up run of {len(warm)} requests done (discarded)", flush=True)

    for label in exp.schedulers:
        requests = [drift._copy(r) for r in proto]
        sched = drift.build_scheduler(label, kv(), documents, names)
        engine.sequences.clear()
        # on CUDA bounded, so that one run that falls behind cannot take the others' time (requests
        # left unfinished at the horizon show as completed < requests); a CPU smoke run is too slow for it
        res = engine.run(sched, requests, horizon_s=curve_end_s if args.device == "cuda" else None)
        # the curves cover the live run (a slow CPU smoke run ends past 1.5 × the arrivals), the simulated
        # run's the same span, and the ODE's beside both
        run_end_s = max(curve_end_s, res.end_s)
        # the benchmark of these very arrivals (a 24 s run needs a finer grid than 5 s)
        fluid = drift._fluid_curve(workload, profile, run_end_s, exp.grid_s, drift.request_rows(proto))
        live = drift.run_record(exp, label, names, seed, res.requests, sched, res.peak_kv_tokens, run_end_s,
                                fluid, res.steps)
        live.update(_step_stats(res, workload.batch_time))
        result["runs"].append(live)
        sim_requests = [drift._copy(r) for r in proto]
        sim_sched = drift.build_scheduler(label, KVBlockManager(capacity, engine.block_size), documents, names)
        sim = simulate(sim_sched, sim_requests, workload.batch_time)
        result["simulated_runs"].append(drift.run_record(exp, label, names, seed, sim_requests, sim_sched,
                                                         sim.peak_kv_tokens, run_end_s, fluid, sim.steps))
        drift.attach_static_latencies(result["runs"])
        drift.attach_static_latencies(result["simulated_runs"])
        write()
        s = result["simulated_runs"][-1]
        print(f"[{time.perf_counter() - t0:.0f} s] {label:<12} live: lat {live['mean_latency_s']:.3f} s, "
              f"generated tok / fluid min {live['cumulative_throughput_vs_fluid_min']:.4f}, median step {live.get('median_step_s', 0) * 1e3:.2f} ms "
              f"(model {live.get('median_model_step_s', 0) * 1e3:.2f}); simulated: lat {s['mean_latency_s']:.3f} s, "
              f"generated tok / fluid min {s['cumulative_throughput_vs_fluid_min']:.4f}", flush=True)

    table = []
    for live, sim in zip(result["runs"], result["simulated_runs"]):
        table.append([live["policy"], str(live["completed"]), f"{live['cumulative_throughput_vs_fluid_min']:.4f}",
                      f"{sim['cumulative_throughput_vs_fluid_min']:.4f}", f"{live['mean_latency_s']:.3f}",
                      f"{sim['mean_latency_s']:.3f}", f"{live['mean_ttft_s']:.3f}", f"{sim['mean_ttft_s']:.3f}",
                      str(live["restarts"]), str(live["peak_kv_tokens"])])
    print(format_table(["policy", "done", "gen tok/fluid live", "sim", "lat live s", "sim", "TTFT live s", "sim",
                        "restarts", "peak KV"], table))
    write()
    print(f"wrote {out} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
