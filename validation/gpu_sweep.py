"""`fluidsched sweep EXPERIMENT.yaml --out DIR --engine gpu`: the experiment's points run live on the GPU.

The same points as the simulated sweep (`validation.runner.plan`: same workload, load, policy,
seed and request count, so the same point ids and folders) and the same per-point work
(`validation.points.run_point`: thresholds solved for the point, fluid numbers, derived
metrics, series), with the simulator replaced by the GPU engine (`runtime.gpu.live.run_live`):
the same `make_requests` arrivals, replayed on the wall clock. The model, its KV pool (sized for
the experiment's largest C) and the CUDA graphs are built once; a short warm-up run compiles the
kernels before the first point is timed. Points run one at a time (one device) and are written as
they finish, so a cut run keeps them and a rerun skips them. Bisections are not run on the GPU.

The report pairs DIR with the simulated sweep when DIR sits beside it as `<experiment>-gpu`
(`validation/report.py`). torch is imported only under `runtime/gpu/`, and only from here when
the GPU engine is asked for.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fluid.errors import InputError
from validation import store
from validation.experiment import Experiment
from validation.points import Execution, point_id, run_point
from validation.runner import plan

WARMUP_REQUESTS = 64  # the warm-up run: enough steps to compile every kernel shape the points meet early
DRAIN_ALLOWANCE_S = 1.0  # per point in the time estimate: the last requests' service after the last arrival
SETUP_ALLOWANCE_S = 60.0  # model build, pool, CUDA graph capture and warm-up (7B on an H200), in the estimate


@dataclass
class GpuSweepOutcome:
    out: Path
    ran: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    skipped_bisections: int = 0
    setup_s: float = 0.0
    warmup_s: float = 0.0
    device: str = ""
    versions: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)


def _plain_config(point: dict, *, requests: int | None = None):
    """The point's configuration with vLLM v1 in place of its policy (no thresholds to solve):
    the same workload, rates, seed and arrival knobs, so the same arrivals."""
    from fluid.workload_io import workload_from_dict
    from validation.points import _config

    plain = {**point, "policy": {**point["policy"], "scheduler": "vllm-v1", "options": {}, "solve": None},
             "requests": requests or point["requests"]}
    return _config(plain, workload_from_dict(point["workload"], source=f"workload {point['workload_label']!r}"), None)


def _arrival_span_s(point: dict) -> float:
    """The point's last arrival time, from the very arrivals its run replays (no engine needed)."""
    from runtime.simrun import config_requests

    return max(r.arrival_s for r in config_requests(_plain_config(point)))


def estimate_s(points: list[dict]) -> float:
    """Wall time of running `points` live: Σ (last arrival + drain allowance); setup not included."""
    return sum(_arrival_span_s(p) + DRAIN_ALLOWANCE_S for p in points)


def check_points_runnable(points: list[dict]) -> None:
    """Refuse before building the model what the engine cannot run: fleets, other block sizes."""
    for p in points:
        knobs = p["knobs"]
        if int(knobs.get("replicas", 1)) != 1:
            raise InputError(f"point {store.folder_name(p)} runs {knobs['replicas']} replicas; the GPU engine runs one "
                             f"(drop the replicas knob for a GPU sweep)", field="knobs.replicas")
        if int(knobs.get("block_size", 16)) != 16:
            raise InputError(f"point {store.folder_name(p)} has block size {knobs['block_size']}; the GPU sweep's pool has "
                             f"blocks of 16 tokens", field="knobs.block_size")


def run_gpu_sweep(experiment: Experiment, out: str | Path, *, model: str = "llama-2-7b", device: str = "cuda",
                  dtype: str = "auto", quiet: bool = False, log=None, on_built=None) -> GpuSweepOutcome:
    """Run `experiment`'s grid points missing from `out` live; `on_built(outcome)` is called once
    the engine is built (device, versions and host known), before the first point."""
    from runtime.gpu.requirements import require_gpu_packages

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store.clean_temporaries(out)
    grid, chains = plan(experiment)
    outcome = GpuSweepOutcome(out, skipped_bisections=len(chains))
    todo = []
    for point in grid:
        if store.finished_result(out, point) is not None:
            outcome.skipped += 1
        else:
            todo.append(point)
    check_points_runnable(todo)
    capacity = max((p["workload"]["kv_capacity_tokens"] for p in grid), default=0)
    planned = {point_id(p) for p in grid}
    t0 = time.perf_counter()
    if todo:
        require_gpu_packages("sweep --engine gpu")
        estimate = estimate_s(todo)
        log(f"{experiment.name} on the GPU: {len(todo)} points to run ({outcome.skipped} already done); estimated "
            f"{estimate:.0f} s of live runs (Σ last arrival + {DRAIN_ALLOWANCE_S:g} s drain each) + ~{SETUP_ALLOWANCE_S:.0f} s setup; "
            f"KV pool {capacity} tokens (the largest C)")
        engine, info, dtype_name = _build_engine(model, device, dtype, capacity)
        outcome.setup_s = time.perf_counter() - t0
        outcome.device = info.device_name
        from runtime.gpu.host_info import describe_host, versions

        outcome.versions, outcome.host = versions(), describe_host()
        if on_built is not None:
            on_built(outcome)
        log(f"[{time.perf_counter() - t0:5.0f} s] {model} ({dtype_name}) on {info.device_name}: weights {info.weight_bytes / 2**30:.1f} GiB, "
            f"KV pool {info.pool_bytes / 2**30:.1f} GiB ({info.kv_capacity_tokens} tokens), built in {outcome.setup_s:.1f} s")
        if engine.runner.device.type == "cuda":  # on CPU no kernel is compiled on first use: nothing to warm
            t_warm = time.perf_counter()
            warm = _warm_up(engine, info, todo[0], model_label=model, dtype=dtype_name)
            outcome.warmup_s = time.perf_counter() - t_warm
            log(f"[{time.perf_counter() - t0:5.0f} s] warm-up run ({warm} requests of {todo[0]['workload_label']}, discarded) in {outcome.warmup_s:.1f} s")

        def execute(config) -> Execution:
            from runtime.gpu.live import run_live

            live = run_live(engine, info, config, model_label=model, dtype=dtype_name)
            return Execution(live.summary, live.requests, live.result.steps, live.config)

        try:
            for i, point in enumerate(todo, 1):
                t_point = time.perf_counter()
                payload = run_point(point, execute)
                store.write_point(out, point, payload)
                outcome.ran += 1
                store.rebuild_table(out)  # after every point: a run cut short still leaves a table of what it measured
                r = payload.result
                if r["status"] != "ok":
                    outcome.errors.append(f"{store.folder_name(point)}: {r.get('error')}")
                    note = f"no result: {str(r.get('error'))[:90]}"
                else:
                    s = r["summary"]
                    note = (f"{s['decode_throughput_tokens_per_s']:.0f} decode tok/s, mean latency {s['mean_latency_s']:.3f} s, "
                            f"TTFT {s['mean_ttft_s']:.3f} s, {s['completed']}/{s['num_requests']} done")
                if not quiet:
                    log(f"[{time.perf_counter() - t0:5.0f} s] {i}/{len(todo)} {point['workload_label']} {point['policy']['label']} "
                        f"L{point['load']:g}: {note} ({time.perf_counter() - t_point:.1f} s)")
        finally:
            store.rebuild_table(out, planned if outcome.ran == len(todo) else None)
            store.pack(out, planned if outcome.ran == len(todo) else None)
    else:
        store.rebuild_table(out, planned)
        store.pack(out, planned)
    return outcome


def _build_engine(model: str, device: str, dtype: str, capacity_tokens: int):
    """The model (random weights of `model`'s shape), a KV pool of `capacity_tokens` and the engine."""
    from runtime.gpu.setup import build_engine

    engine, info = build_engine(model, kv_tokens=capacity_tokens, device=device, dtype=dtype)  # refuses clearly when C does not fit
    return engine, info, str(engine.runner.dtype).replace("torch.", "")


def _warm_up(engine, info, point: dict, *, model_label: str, dtype: str) -> None:
    """A throwaway run of the first point's workload (vLLM v1, its first requests at its rates):
    compiles the kernels and touches the graphs, so the first timed point pays no compile."""
    from runtime.gpu.live import run_live

    requests = min(WARMUP_REQUESTS, point["requests"])
    run_live(engine, info, _plain_config(point, requests=requests), model_label=model_label, dtype=dtype)
    return requests
