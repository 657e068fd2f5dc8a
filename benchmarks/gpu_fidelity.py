"""The closed loop on one machine in one process: calibrate → workload → solve → run → simulate.

    PYTHONPATH=. python benchmarks/gpu_fidelity.py --out-dir OUT [--loads 0.5,0.8,0.9] [--requests 1000] [--deadline-s 540]
    PYTHONPATH=. python benchmarks/gpu_fidelity.py --out-dir OUT --smoke   (CPU, tiny-llama, a few grid points: the plumbing only)
    PYTHONPATH=. python benchmarks/gpu_fidelity.py --out-dir OUT --reuse-calibration docs/calibration-h200.json   (smoke test)

One process loads the model once (Llama-2-7B shape, bf16, random weights) and on that machine:
1. runs the step benchmark (`gpu_steps.py`: flatness in prefill sequences, step over device time);
2. calibrates the engine (`runtime.gpu.calibrate.calibrate_engine`: the operating-range grid, three
   passes each in its own shuffled order, each point fitted as its median over them (`--passes`,
   `--pass-order`, `--aggregate`), linear3 / stepwise fits with held-out MAPE) — unless `--reuse-calibration FILE` is
   given, which makes the run a smoke test and says so in every file it writes;
3. fits the host terms (the scheduler call and step bookkeeping a live step pays beyond the engine
   step, `fluid.batch_time_stepwise.fit_host_terms`) on live steps of this machine: WAIT, vLLM-v1
   and Sarathi-Serve at each of `--host-loads` (default 0.6 and 0.85: two loads, so the per-step
   and per-decode host costs are told apart — within one load every step holds about as many
   decodes) on other arrivals (seed 1, `--host-requests` each) than the points below (seed 0), so
   no point is fitted on its own steps. One pooled fit is the model; each scheduler's own fit is
   recorded beside it and every point is also simulated with it (`simulated_own_host_*`), as
   evidence of whether the schedulers' host work differs (offline on run 5 it did not help:
   docs/fidelity-h200-latency.md). The host runs' steps are written to OUT/host-steps.json.gz;
4. sizes the loads from the model the simulator uses (`gpu_loop_workload.simulated_capacity_tok_s`:
   the least decode rate vLLM-v1 and Sarathi-Serve carry simulated under overload; a load is that
   fraction of it), and for each load factor builds the workload (`gpu_loop_workload.build`, the
   linear3 fitted to the stepwise model for the fluid), solves WAIT thresholds (`fluidsched solve`), runs WAIT,
   vLLM-v1 and Sarathi-Serve live on the engine, and simulates the same arrivals twice: with the
   workload's linear3 and with the stepwise model (same types, rates and C; the WAIT policy is the
   one solved for the linear3 workload, so that simulation accepts the batch-time difference).

`--deadline-s` (default 540) bounds the whole run's wall time: before each live point the script
estimates it from the last one and stops when it would end past the deadline (the first point
always runs); the points not run
are listed under `cut_by_deadline` (fidelity.json is rewritten after every point).

Writes OUT/fidelity.json (device, versions, host, batch_time_model, heldout_step_mape,
points), OUT/reproducibility.json (one run), OUT/steps.json (the step benchmark),
OUT/calibration.json, OUT/live-steps.json.gz (every live step's composition and time) and
OUT/host-steps.json.gz (the host-term runs' steps, keyed `scheduler-Lload`).

`--loop overlapped`: the points run the overlapped loop (each step scheduled and prepared while
the one before runs, `Engine.run(overlap_host=True)`), the loads are sized from the overlapped
loop's simulated capacity and each point is simulated with that loop (`runtime.sim.simulate_overlapped`:
the engine-step model on the device, the host terms hidden behind the step before): a host's
speed then matters only where its work outlasts the step (H200 runs 17-19: capacities 9,850-10,582
tok/s with each machine's host terms, 11,009-11,341 with the engine step alone,
`benchmarks/capacity_spread.py`).

`--overlap-loads 0.9,1.1`: then, at each of those loads, every scheduler runs twice more on the
points' arrivals, the synchronous loop and the overlapped one (each step scheduled and prepared
while the one before runs, `Engine.run(overlap_host=True)`), beside the simulator with and without
the host terms; OUT/overlap.json.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gzip
import json
import math
import statistics
import sys
import time
from pathlib import Path

SCHEDULERS = ("wait", "vllm-v1", "sarathi")


def _summary_keys(s) -> dict:
    return {"tok_s": s.decode_throughput_tokens_per_s, "mean_latency_s": s.mean_latency_s, "mean_ttft_s": s.mean_ttft_s,
            "evictions": s.evictions, "completed": s.completed, "mean_step_s": s.mean_step_s, "peak_kv_tokens": s.peak_kv_tokens}


def parse_host_loads(text: str) -> list[float]:
    """`--host-loads`: comma-separated loads in (0, 1), distinct; "0" alone: no host terms. Exit 2 otherwise."""
    try:
        loads = [float(x) for x in text.split(",")]
    except ValueError:
        loads = None
    if loads == [0.0]:
        return []
    if not loads or any(not 0 < x < 1 for x in loads) or len(set(loads)) != len(loads):
        print(f"error: --host-loads {text!r}: give distinct loads in (0, 1) separated by commas (e.g. 0.6,0.85), or 0 for no host terms",
              file=sys.stderr)
        raise SystemExit(2)
    return loads


def parse_overlap_loads(text: str) -> list[float]:
    """`--overlap-loads`: comma-separated distinct positive loads (above 1: past the simulated capacity), or "" for none."""
    if not text:
        return []
    try:
        loads = [float(x) for x in text.split(",")]
    except ValueError:
        loads = None
    if not loads or any(not 0 < x < 3 for x in loads) or len(set(loads)) != len(loads):
        print(f"error: --overlap-loads {text!r}: give distinct loads in (0, 3) separated by commas (e.g. 0.9,1.1)", file=sys.stderr)
        raise SystemExit(2)
    return loads


def host_split_by_quarter(rows: list[dict]) -> dict[str, list[float]]:
    """Medians (s) per quarter of a live run of each host phase of a step: `schedule_s` (arrivals and
    the scheduler call), `prep_s` (the engine's input preparation, host_s − schedule_s) and `gap_s`
    (after the step: its bookkeeping, up to the next step's start). Where a host part that grows
    within a run comes from."""
    q = len(rows) // 4
    if q == 0 or any("schedule_s" not in r for r in rows):
        return {}
    quarters = [range(k * q, (k + 1) * q) for k in range(4)]
    gap = [rows[i + 1]["start_s"] - rows[i]["start_s"] - rows[i]["measured_s"] for i in range(len(rows) - 1)] + [0.0]
    series = {"schedule_s": [r["schedule_s"] for r in rows], "prep_s": [r["host_s"] - r["schedule_s"] for r in rows], "gap_s": gap}
    return {k: [statistics.median(v[i] for i in part) for part in quarters] for k, v in series.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--loads", default="0.5,0.8,0.9")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--deadline-s", type=float, default=540.0, help="stop before a live point that would end past this many seconds of wall time")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke test of the script: tiny-llama, a few grid points, 30 requests, load 0.5")
    ap.add_argument("--slack", type=float, default=0.0, help="WAIT solver slack (default 0, as the near-capacity runs)")
    ap.add_argument("--reuse-calibration", type=Path, help="SMOKE TEST: reuse a calibration made elsewhere instead of calibrating here")
    ap.add_argument("--skip-steps", action="store_true", help="skip the step benchmark")
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu with a tiny model and --kv-tokens (a smoke test of the script)")
    ap.add_argument("--kv-tokens", type=int, help="KV pool size (default: what free GPU memory allows)")
    ap.add_argument("--grid-scale", type=float, default=1.0, help="calibration grid token scale (tiny CPU models)")
    ap.add_argument("--from-steps", nargs="+", default=[], metavar="FILE",
                    help="step logs of recorded live runs: their steps join the calibration grid (runtime.gpu.calibrate.recorded_grid)")
    ap.add_argument("--per-region", type=int, default=40, help="recorded steps per region added to the grid (with --from-steps)")
    ap.add_argument("--loop", choices=("synchronous", "overlapped"), default="synchronous",
                    help="how the points run: each step scheduled after the one before (default), or scheduled and prepared while it "
                         "runs (Engine.run(overlap_host=True)); overlapped, the loads are sized and the points simulated with the "
                         "overlapped loop's simulator (runtime.sim.simulate_overlapped: the host terms hidden behind the step before)")
    ap.add_argument("--passes", type=int, default=3, help="calibration passes over the grid (default 3, as fluidsched calibrate)")
    ap.add_argument("--pass-order", choices=("grid", "shuffled"), default="shuffled", help="calibration pass order (fluidsched calibrate --pass-order)")
    ap.add_argument("--sustain-s", type=float,
                    help="seconds each calibration point runs back to back, untimed, before it is timed (fluidsched calibrate --sustain-s; "
                         "default 0.25, 0 with --smoke)")
    ap.add_argument("--aggregate", choices=("rows", "median"),
                    help="fit each point's median (default with 2+ passes) or every pass's row (fluidsched calibrate --aggregate)")
    ap.add_argument("--host-loads", "--host-load", dest="host_loads", default="0.6,0.85",
                    help="loads (comma-separated) of the live runs the host terms are fitted on (0: no host terms)")
    ap.add_argument("--host-requests", type=int, default=600, help="requests per scheduler in those runs")
    ap.add_argument("--overlap-loads", default="",
                    help="after the points: at each of these loads run every scheduler twice more on the point's arrivals, "
                         "synchronous then overlapped (Engine.run(overlap_host=True)); writes OUT/overlap.json")
    args = ap.parse_args()
    if args.smoke:
        args.model, args.device, args.kv_tokens, args.grid_scale = "tiny-llama", "cpu", args.kv_tokens or 20000, 0.05
        args.requests, args.loads, args.skip_steps, args.host_requests = min(args.requests, 30), "0.5", True, min(args.host_requests, 30)
    host_loads = parse_host_loads(args.host_loads)
    overlap_loads = parse_overlap_loads(args.overlap_loads)
    if args.requests < 1 or args.deadline_s <= 0 or args.host_requests < 1:
        print("error: --requests and --host-requests must be ≥ 1, --deadline-s > 0", file=sys.stderr)
        raise SystemExit(2)
    for path in args.from_steps:
        if not Path(path).is_file():
            print(f"error: --from-steps {path}: no such file; give a run's live-steps.json.gz or a docs/*-steps.json.gz", file=sys.stderr)
            raise SystemExit(2)
    if args.per_region < 1:
        print("error: --per-region must be ≥ 1", file=sys.stderr)
        raise SystemExit(2)
    if args.sustain_s is None:
        from runtime.gpu.calibrate import DEFAULT_SUSTAIN_S

        args.sustain_s = 0.0 if args.smoke else DEFAULT_SUSTAIN_S
    if not (math.isfinite(args.sustain_s) and args.sustain_s >= 0):
        print(f"error: --sustain-s {args.sustain_s}: give a finite number of seconds ≥ 0 (e.g. 0.2)", file=sys.stderr)
        raise SystemExit(2)
    from fluid.errors import InputError
    from runtime.gpu.calibrate import resolve_aggregate

    if args.smoke and args.aggregate is None:
        args.passes = 1  # a smoke test times the few points once
    try:
        if args.passes < 1:
            raise InputError(f"--passes must be at least 1, got {args.passes}", field="passes")
        args.aggregate = resolve_aggregate(args.passes, args.aggregate)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    import gpu_loop_workload
    import gpu_steps

    from fluid.batch_time import batch_time_from_dict
    from runtime.gpu.calibrate import _errors, calibrate_engine, pass_drift_warning, turn_s
    from runtime.recorded_steps import region
    from runtime.replay import shape_of
    from runtime.gpu.host_info import describe_host, versions
    from runtime.gpu.step_timer import StepTimer
    from runtime.collector import pause_summary
    from runtime.arrivals import make_requests
    from runtime.kv_blocks import KVBlockManager
    from runtime.metrics import summarize, warmup_cut_s
    from runtime.schedulers import make_scheduler
    from runtime.simrun import run_simulation

    from runtime.gpu.clock_log import GpuClockLog
    from runtime.gpu.host_info import host_probe

    clock_log = GpuClockLog(out / "gpu-clocks.csv")
    if args.device == "cuda" and not clock_log.start():
        print("note: no nvidia-smi here: the run records no GPU clocks", flush=True)
    atexit.register(clock_log.stop)  # a run that fails leaves no sampler behind
    engine, info = gpu_steps.build_engine(args.model, kv_tokens=args.kv_tokens, device=args.device)
    host, vers = describe_host(), versions()
    smoke = args.reuse_calibration is not None
    if smoke:
        print(f"SMOKE TEST: reusing the calibration {args.reuse_calibration} made on another run; no figure here is a result", flush=True)
    from runtime.gpu.attention import PREFILL_BLOCK_M, PREFILL_NUM_STAGES, PREFILL_NUM_WARPS

    base = {"device": info.device_name, "versions": vers, "host": host, "model": args.model,
            "varlen_prefill_tile": {"block_m": PREFILL_BLOCK_M, "num_warps": PREFILL_NUM_WARPS, "num_stages": PREFILL_NUM_STAGES},
            "command": "PYTHONPATH=. python benchmarks/gpu_fidelity.py " + " ".join(sys.argv[1:]), "smoke_test_reused_calibration": smoke}
    timer = StepTimer(engine)
    steps = {}
    if not args.skip_steps:
        steps = {**base, "flatness": gpu_steps.flatness(engine, timer), "step_vs_device": gpu_steps.step_vs_device(engine, timer)}
        (out / "steps.json").write_text(json.dumps(steps, indent=1) + "\n")
    print(f"[{time.perf_counter() - t_start:.0f} s] steps done", flush=True)
    if smoke:
        calibration = json.loads(args.reuse_calibration.read_text())
    else:
        from runtime.gpu.calibration_grid import calibration_grid

        grid = None
        if args.smoke:  # every third point: each region, and enough rows for every fit
            grid = calibration_grid(args.grid_scale)[::3]
        calibration = calibrate_engine(engine, info, model=args.model, grid_scale=args.grid_scale, grid=grid,
                                       repeats=1 if args.smoke else 5, passes=args.passes,
                                       from_steps=args.from_steps, per_region=args.per_region, warmup_s=0.0 if args.smoke else 3.0,
                                       pass_order=args.pass_order, aggregate=args.aggregate, sustain_s=args.sustain_s)
        (out / "calibration.json").write_text(json.dumps(calibration, indent=1) + "\n")
        sw = calibration["fits"]["stepwise"]
        print(f"[{time.perf_counter() - t_start:.0f} s] calibrated: linear3 MAPE {100 * calibration['fits']['linear3']['mape']:.1f} %, "
              f"stepwise held-out {100 * sw['heldout_mape']:.1f} % (fitted on {args.aggregate} of {args.passes} passes in {args.pass_order} order; "
              f"on each pass's row {100 * calibration['heldout_step_mape_by_row']:.1f} %; worst {sw['worst_region']} {100 * sw['heldout_mape_by_region'][sw['worst_region']]:.1f} %)", flush=True)
        drift_warning = pass_drift_warning(calibration.get("pass_drift"))
        if drift_warning:
            print(f"warning: {drift_warning}", flush=True)
        live_ho = calibration["fits"].get("live_heldout_by_run")
        if live_ho:
            print(f"recorded live steps, each run predicted by a fit without it: {100 * live_ho['all']['mape']:.1f} %; "
                  + ", ".join(f"{g} {100 * e['mape']:.1f} % (×{e['median_measured_over_predicted']:.3f})" for g, e in live_ho["pooled"].items()), flush=True)
    stepwise = batch_time_from_dict(calibration["batch_time_stepwise"], source="calibration")

    def live_run(workload, name, policy, document, n, seed, overlap_host=False):
        config = point_config(workload, name, policy, document, n, seed)
        requests = make_requests(workload, n, seed)
        scheduler = make_scheduler(name, KVBlockManager(workload.kv_capacity_tokens, 16, track_block_ids=True), **config.scheduler_knobs())
        engine.sequences.clear()
        return config, requests, engine.run(scheduler, requests, overlap_host=overlap_host)

    def workload_at(load, capacity_tok_s, tag):
        return point_workload(calibration, load, capacity_tok_s, out, tag, args.slack)

    own_models = {}  # each scheduler's own host fit: evidence beside the pooled model, never the model
    if host_loads:  # also on a reused calibration (a smoke test): its engine-step model is the base
        from fluid.batch_time_stepwise import fit_host_terms, with_linear3

        probe = gpu_loop_workload.simulated_capacity_tok_s(calibration, stepwise)
        host_steps, host_rows = {name: [] for name in SCHEDULERS}, {}
        for host_load in host_loads:
            workload, policy, document = workload_at(host_load, probe["capacity_tok_s"], "host-")
            for name in SCHEDULERS:
                _, _, res = live_run(workload, name, policy, document, args.host_requests, 1)
                rows = res.step_rows()
                host_rows[f"{name}-L{host_load:.2f}"] = rows
                host_steps[name] += [(shape_of(r), turn_s(rows, i)) for i, r in enumerate(rows)]
        with gzip.open(out / "host-steps.json.gz", "wt") as f:
            json.dump(host_rows, f, separators=(",", ":"))
        engine_dict = calibration.get("engine_step_model", calibration["batch_time_stepwise"])  # never host terms on host terms
        engine_model = batch_time_from_dict(engine_dict, source="calibration")
        full, host = fit_host_terms(engine_model, [x for name in SCHEDULERS for x in host_steps[name]])
        full = with_linear3(full, [shape_of(r) for r in calibration["table"]])
        per_scheduler = {}
        for name in SCHEDULERS:
            own_models[name], per_scheduler[name] = fit_host_terms(engine_model, host_steps[name])
        # a reused calibration (smoke test) keeps its own host terms: this machine's would sit on another's engine model
        applied = not smoke
        if applied:
            calibration["engine_step_model"] = engine_dict
            calibration["batch_time_stepwise"] = full.to_dict()
            calibration["batch_time"] = {"kind": "linear3", **full.to_dict()["linear"]}
            stepwise = full
        else:
            own_models = {}
        calibration["host_terms"] = {**({} if applied else {"reused_host_terms": calibration.get("host_terms")}),
                                     "applied": applied, "coefficients": host, "loads": host_loads, "requests": args.host_requests, "seed": 1,
                                     "steps_per_scheduler": {name: len(v) for name, v in host_steps.items()},
                                     "steps_per_run": {k: len(v) for k, v in host_rows.items()},
                                     "per_scheduler": per_scheduler, "capacity_probe": probe}
        (out / "calibration.json").write_text(json.dumps(calibration, indent=1) + "\n")
        print(f"[{time.perf_counter() - t_start:.0f} s] host terms from {sum(map(len, host_steps.values()))} live steps at loads {host_loads}: "
              + ", ".join(f"{k} {1e6 * v:.2f} µs" for k, v in host.items()), flush=True)
        for name, coef in per_scheduler.items():
            print(f"    {name} alone: " + ", ".join(f"{k} {1e6 * v:.2f} µs" for k, v in coef.items()), flush=True)
    overlapped = args.loop == "overlapped"
    engine_only = batch_time_from_dict(calibration.get("engine_step_model", calibration["batch_time_stepwise"]), source="calibration")
    sizing = gpu_loop_workload.simulated_capacity_tok_s(
        calibration, stepwise, simulate=(lambda c: simulate_overlapped_summary(c, engine_only, stepwise)["tok_s"]) if overlapped else None)
    sizing["loop"] = args.loop
    # the capacity with the engine step alone (every host term hidden): what a machine's GPU gives,
    # beside what its host lets the loop carry (benchmarks/capacity_spread.py compares machines)
    sizing["engine_step_only_capacity_tok_s"] = gpu_loop_workload.simulated_capacity_tok_s(calibration, engine_only)["capacity_tok_s"]
    print(f"simulated capacity (stepwise model, {args.loop} loop): {sizing['capacity_tok_s']:.0f} decode tok/s "
          + ", ".join(f"{k} {v:.0f}" for k, v in sizing["carried_tok_s"].items()), flush=True)
    points, live_steps, repro_runs = [], {}, []
    fidelity = {**base, "batch_time_model": calibration["batch_time_stepwise"], "linear3_for_fluid": calibration["batch_time"],
                "heldout_step_mape": calibration.get("heldout_step_mape"),
                "heldout_step_mape_by_row": calibration.get("heldout_step_mape_by_row"),
                "calibration_protocol": {k: calibration.get(k) for k in ("passes", "pass_order", "pass_aggregate", "sustain")},
                "heldout_mape_by_region": calibration.get("fits", {}).get("stepwise", {}).get("heldout_mape_by_region"),
                "calibration_from_steps": calibration.get("from_steps", []),
                "recorded_live_heldout_by_run": calibration.get("fits", {}).get("live_heldout_by_run"),
                "host_terms": calibration.get("host_terms"), "engine_step_model": calibration.get("engine_step_model"), "sizing": sizing,
                "loop": args.loop, "slack": args.slack, "requests": args.requests, "deadline_s": args.deadline_s, "smoke": args.smoke, "points": points,
                "cut_by_deadline": []}
    todo = [(float(x), name) for x in args.loads.split(",") for name in SCHEDULERS]
    last_point_s = 0.0
    for load in [float(x) for x in args.loads.split(",")]:
        workload, policy, document = workload_at(load, sizing["capacity_tok_s"], "")
        offered = sum(t.rate_per_s * t.decode for t in workload.types)
        capacity = workload.kv_capacity_tokens
        tok_s, ttft = {}, {}
        for name in SCHEDULERS:
            elapsed = time.perf_counter() - t_start
            if points and elapsed + last_point_s > args.deadline_s:  # the first point always runs
                fidelity["cut_by_deadline"] = [{"scheduler": n, "load": ld} for ld, n in todo]
                print(f"[{elapsed:.0f} s] deadline {args.deadline_s:.0f} s: not running {len(todo)} points "
                      f"(the last took {last_point_s:.0f} s)", flush=True)
                break
            todo.pop(0)
            point_t0 = time.perf_counter()
            probe_before, wall_t0 = host_probe(), time.time()
            config, requests, res = live_run(workload, name, policy, document, args.requests, 0, overlap_host=overlapped)
            wall_t1, probe_after = time.time(), host_probe()
            live = summarize(res.to_sim_result(capacity), scheduler=name, warmup_s=warmup_cut_s(requests, 0.1), executor="gpu", wall_s=res.end_s)
            rows = res.step_rows()
            eager = 1 - sum(r["graph"] for r in rows) / len(rows)
            sim_lin = run_simulation(config).summary
            m, sl = _summary_keys(live), _summary_keys(sim_lin)
            if overlapped:  # the same loop in the simulator: device time from the engine-step model, host terms hidden behind it
                sr = simulate_overlapped_summary(config, engine_only, stepwise)
            else:
                sr = _summary_keys(run_simulation(dataclasses.replace(config, workload=dataclasses.replace(workload, batch_time=stepwise),
                                                                      accept_policy_mismatch=True)).summary)
            own = {}
            if name in own_models and not overlapped:
                own = _summary_keys(run_simulation(dataclasses.replace(config, workload=dataclasses.replace(workload, batch_time=own_models[name]),
                                                                       accept_policy_mismatch=True)).summary)
            step_model = engine_only if overlapped else stepwise  # overlapped, a step's host part runs beside the step before
            pred = [step_model.step_time_s(s.shape) for s in res.steps]
            meas = [s.end_s - s.start_s for s in res.steps]
            step_err = statistics.median(abs(p - t) / t for p, t in zip(pred, meas))
            by_region: dict[str, list] = {}  # this run's steps were never in the fit: the truest held-out
            for i, s in enumerate(rows):
                by_region.setdefault(region(s), []).append((step_model.step_time_s(shape_of(s)), turn_s(rows, i)))
            points.append({
                "scheduler": name, "load": load, "below_saturation": bool(m["tok_s"] >= 0.95 * offered),
                "offered_decode_tok_s": offered,
                "measured_tok_s": m["tok_s"], "simulated_tok_s": sr["tok_s"], "simulated_linear3_tok_s": sl["tok_s"],
                "measured_mean_latency_s": m["mean_latency_s"], "simulated_mean_latency_s": sr["mean_latency_s"], "simulated_linear3_mean_latency_s": sl["mean_latency_s"],
                "measured_mean_ttft_s": m["mean_ttft_s"], "simulated_mean_ttft_s": sr["mean_ttft_s"], "simulated_linear3_mean_ttft_s": sl["mean_ttft_s"],
                "measured_evictions": m["evictions"], "simulated_evictions": sr["evictions"], "simulated_linear3_evictions": sl["evictions"],
                "measured_mean_step_s": m["mean_step_s"], "simulated_mean_step_s": sr["mean_step_s"],
                **({"simulated_own_host_tok_s": own["tok_s"], "simulated_own_host_mean_latency_s": own["mean_latency_s"],
                    "simulated_own_host_mean_ttft_s": own["mean_ttft_s"]} if own else {}),
                "live_step_median_abs_error_of_stepwise": step_err, "eager_step_share": eager,
                "live_turn_vs_stepwise_by_region": {g: _errors(v) for g, v in sorted(by_region.items())},
                "median_gap_s": statistics.median(b["start_s"] - a["start_s"] - a["measured_s"] for a, b in zip(rows, rows[1:])) if len(rows) > 1 else None,
                "median_host_s": statistics.median(r["host_s"] for r in rows), "num_steps": len(rows),
                "completed": m["completed"], "requests": args.requests,
                "collector_pauses": pause_summary(res.collector_pauses),  # Python's GC during the live run
                "host_split_by_quarter": host_split_by_quarter(rows),
                # the machine's speed around the run: the host's (before, after); the GPU's clocks over
                # `wall_s` are summarised when the log has ended (nvidia-smi writes its samples late)
                "host_probe_before": probe_before, "host_probe_after": probe_after, "wall_s": [wall_t0, wall_t1],
            })
            live_steps[f"{name}-L{load:.2f}"] = rows
            tok_s[name], ttft[name] = m["tok_s"], m["mean_ttft_s"]
            last_point_s = time.perf_counter() - point_t0
            p = points[-1]
            (out / "fidelity.json").write_text(json.dumps(fidelity, indent=1) + "\n")  # after every point: a cut run keeps what it measured
            print(f"[{time.perf_counter() - t_start:.0f} s] {name:8s} L={load}: live {p['measured_tok_s']:.0f} tok/s, sim stepwise {p['simulated_tok_s']:.0f}, "
                  f"sim linear3 {p['simulated_linear3_tok_s']:.0f}; latency {p['measured_mean_latency_s']:.3f} vs {p['simulated_mean_latency_s']:.3f} s; "
                  f"evictions {p['measured_evictions']} vs {p['simulated_evictions']}; eager {100 * eager:.1f} %; step err {100 * step_err:.1f} %; "
                  f"longest GC pause {1e3 * p['collector_pauses']['longest_s']:.1f} ms; host µs by quarter "
                  + "; ".join(f"{k} " + " ".join(f"{1e6 * v:.0f}" for v in vs) for k, vs in p["host_split_by_quarter"].items()), flush=True)
        if tok_s:
            repro_runs.append({"load": load, "tok_s": tok_s, "mean_ttft_s": ttft})
        if fidelity["cut_by_deadline"]:
            break
    (out / "fidelity.json").write_text(json.dumps(fidelity, indent=1) + "\n")
    if overlap_loads:
        run_overlap_points(out, base, overlap_loads, args.requests, workload_at, live_run, sizing, calibration, t_start)
    near = next((r for r in repro_runs if r["load"] == 0.9), repro_runs[-1])
    all_live = [r for rows in live_steps.values() for r in rows]
    repro = {"runs": [{**base, "loop": args.loop, "load": near["load"], "tok_s": near["tok_s"], "mean_ttft_s": near["mean_ttft_s"],
                       "step_over_device_median": (steps.get("step_vs_device") or {}).get("median_step_over_device"),
                       "eager_step_share": 1 - sum(r["graph"] for r in all_live) / len(all_live),
                       "calibration_made_here": not smoke}],
             "note": "one machine: the target compares two fresh machines; a second run appends here"}
    (out / "reproducibility.json").write_text(json.dumps(repro, indent=1) + "\n")
    clock_log.stop()
    from runtime.gpu.clock_log import by_pass_region, window_summary

    samples = clock_log.samples()
    fidelity["calibration_machine_speed_by_pass_region"] = by_pass_region(calibration.get("table", []), samples)
    for p in points:  # over the whole log: nvidia-smi may not have written a run's last samples when it ended
        p["gpu_clocks"] = window_summary(samples, *p["wall_s"])
    (out / "fidelity.json").write_text(json.dumps(fidelity, indent=1) + "\n")
    with gzip.open(out / "live-steps.json.gz", "wt") as f:
        json.dump(live_steps, f, separators=(",", ":"))
    print(f"[{time.perf_counter() - t_start:.0f} s] done", flush=True)


def point_workload(calibration: dict, load: float, capacity_tok_s: float, out: Path, tag: str, slack: float):
    """(workload, WAIT policy, policy document) of one load: `gpu_loop_workload.build` at that
    fraction of `capacity_tok_s`, written to OUT/default-TAGLload.yaml, and WAIT's cohort
    thresholds solved for it (`fluidsched solve --slack SLACK`) to OUT/policy-wait-TAGLload.json."""
    import gpu_loop_workload

    from fluid.workload_io import load_workload
    from runtime.cli_simulate import load_policy_arg
    from validation.cli import main as cli

    wl, design = gpu_loop_workload.build(calibration, load=load, memory_use=0.75, capacity_tok_s=capacity_tok_s)
    wl_path = out / f"default-{tag}L{load:.2f}.yaml"
    wl_path.write_text(gpu_loop_workload.to_yaml(wl, design, "calibration.json"))
    policy_path = out / f"policy-wait-{tag}L{load:.2f}.json"
    if cli(["solve", str(wl_path), "--slack", str(slack), "--service-rule", "cohort", "-o", str(policy_path)]) != 0:
        raise SystemExit(f"solve failed for load {load}")
    return load_workload(str(wl_path)), *load_policy_arg(str(policy_path))


def point_config(workload, name: str, policy, document, n: int, seed: int):
    """The `SimConfig` of one live point (WAIT with its policy, the baselines with their defaults)."""
    from runtime.simrun import SimConfig

    pol = policy if name == "wait" else None
    return SimConfig(workload=workload, scheduler=name, num_requests=n, seed=seed, block_size=16, policy=pol,
                     policy_document=document if pol else None)


def simulate_overlapped_summary(config, engine_model, full_model) -> dict:
    """`config`'s arrivals through the simulated overlapped loop (`runtime.sim.simulate_overlapped`):
    each step on the device for the engine-step model's time, its host part (the full model with
    host terms minus the engine step) hidden behind the step before; the `_summary_keys` figures."""
    from runtime.kv_blocks import KVBlockManager
    from runtime.metrics import summarize, warmup_cut_s
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate_overlapped
    from runtime.simrun import config_requests

    requests = config_requests(config)
    scheduler = make_scheduler(config.scheduler, KVBlockManager(config.workload.kv_capacity_tokens, config.block_size), **config.scheduler_knobs())
    res = simulate_overlapped(scheduler, requests, engine_model, lambda shape: full_model.step_time_s(shape) - engine_model.step_time_s(shape))
    return _summary_keys(summarize(res, scheduler=config.scheduler, warmup_s=warmup_cut_s(requests, config.warmup_fraction)))


def run_overlap_points(out, base, loads, n, workload_at, live_run, sizing, calibration, t_start) -> None:
    """Each scheduler at each load: the synchronous loop, then the overlapped one, on the same
    arrivals (seed 0, as the points), with the simulator beside them twice: with the host terms
    (the synchronous loop's model) and with the engine step alone (a loop whose host work is all
    hidden). Writes OUT/overlap.json after every pair."""
    from fluid.batch_time import batch_time_from_dict
    from runtime.gpu.live import overlap_details
    from runtime.metrics import summarize, warmup_cut_s
    from runtime.simrun import run_simulation

    with_host = batch_time_from_dict(calibration["batch_time_stepwise"], source="calibration")
    engine_only = batch_time_from_dict(calibration.get("engine_step_model", calibration["batch_time_stepwise"]), source="calibration")
    doc = {**base, "requests": n, "loads": loads, "points": []}
    for load in loads:
        workload, policy, document = workload_at(load, sizing["capacity_tok_s"], "")
        offered = sum(t.rate_per_s * t.decode for t in workload.types)
        for name in SCHEDULERS:
            point = {"scheduler": name, "load": load, "offered_decode_tok_s": offered}
            for mode in (False, True):
                config, requests, res = live_run(workload, name, policy, document, n, 0, overlap_host=mode)
                live = summarize(res.to_sim_result(workload.kv_capacity_tokens), scheduler=name, warmup_s=warmup_cut_s(requests, 0.1),
                                 executor="gpu", wall_s=res.end_s)
                rows = res.step_rows()
                point["overlapped" if mode else "synchronous"] = {
                    **_summary_keys(live), "num_steps": len(rows),
                    "median_step_s": statistics.median(r["measured_s"] for r in rows),
                    "median_host_s": statistics.median(r["host_s"] for r in rows),
                    "eager_step_share": 1 - sum(r["graph"] for r in rows) / len(rows),
                    **(overlap_details(rows) if mode else {}),
                }
            for label, model in (("simulated_with_host_terms", with_host), ("simulated_engine_step_only", engine_only)):
                sim = run_simulation(dataclasses.replace(config, workload=dataclasses.replace(workload, batch_time=model), accept_policy_mismatch=True)).summary
                point[label] = _summary_keys(sim)
            point["simulated_overlapped"] = simulate_overlapped_summary(config, engine_only, with_host)
            doc["points"].append(point)
            (out / "overlap.json").write_text(json.dumps(doc, indent=1) + "\n")
            a, b = point["synchronous"], point["overlapped"]
            print(f"[{time.perf_counter() - t_start:.0f} s] overlap {name:8s} L={load}: tok/s {a['tok_s']:.0f} -> {b['tok_s']:.0f}, "
                  f"mean TTFT {a['mean_ttft_s']:.3f} -> {b['mean_ttft_s']:.3f} s, median step {1e3 * a['median_step_s']:.2f} -> "
                  f"{1e3 * b['median_step_s']:.2f} ms, exposed host {1e6 * a['median_host_s']:.0f} -> {1e6 * b['median_host_s']:.0f} µs "
                  f"(hidden {1e6 * b['median_hidden_host_s']:.0f} µs, host-bound {100 * b['host_bound_step_share']:.1f} %); "
                  f"simulated with host terms {point['simulated_with_host_terms']['tok_s']:.0f}, engine step only "
                  f"{point['simulated_engine_step_only']['tok_s']:.0f}, overlapped {point['simulated_overlapped']['tok_s']:.0f} tok/s "
                  f"(TTFT {point['simulated_overlapped']['mean_ttft_s']:.3f} s)", flush=True)


if __name__ == "__main__":
    main()
