"""One configured run on the GPU engine: `SimConfig` → the same arrivals → a live run → its summary.

`runtime.simrun.run_simulation` is the simulator's side; this is the engine's, for an engine
built once and reused (`fluidsched run` builds one per run; a GPU sweep one per sweep,
`validation/gpu_sweep.py`). The arrivals come from `runtime.simrun.config_requests`, as the
simulation's do, so a simulated point and its live run see the same requests at the same times; the summary is `runtime.metrics.summarize`'s with the engine's own measurements
in `details`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fluid.errors import InputError
from runtime.collector import pause_summary
from runtime.gpu.engine import Engine, EngineResult
from runtime.gpu.setup import RuntimeInfo
from runtime.metrics import summarize, warmup_cut_s
from runtime.request import Request
from runtime.simrun import SimConfig, config_requests
from runtime.summary import RunSummary


@dataclass
class LiveRun:
    summary: RunSummary
    requests: list[Request]
    result: EngineResult
    step_rows: list[dict]
    config: dict  # the run's resolved configuration (config.json), executor and device included


def check_requests_fit(requests, capacity_tokens: int, block_size: int, max_positions: int) -> None:
    worst = max(requests, key=lambda r: r.prompt_tokens + r.output_tokens)
    need = worst.prompt_tokens + worst.output_tokens
    if -(-need // block_size) * block_size > capacity_tokens:
        raise InputError(
            f"the KV budget of {capacity_tokens} tokens cannot hold one request of {worst.prompt_tokens} + {worst.output_tokens} tokens "
            f"(type {worst.type_name}); raise --kv-tokens or shorten the workload's requests",
            field="kv_tokens",
        )
    if need > max_positions:
        raise InputError(f"a request of {need} tokens exceeds the model's {max_positions} positions; use a model with a longer context", field="model")


def overlap_details(rows: list[dict]) -> dict:
    """An overlapped run's host figures: the median host time hidden behind the step before and
    the share of steps the device had finished before the host came to wait (it idled)."""
    hidden = sorted(r["hidden_host_s"] for r in rows)
    return {"median_hidden_host_s": hidden[len(hidden) // 2] if hidden else None,
            "host_bound_step_share": sum(r["host_bound"] for r in rows) / len(rows) if rows else None}


def run_live(engine: Engine, info: RuntimeInfo, config: SimConfig, requests: list[Request] | None = None, *,
             scheduler=None, watch=None, model_label: str, dtype: str, extra_details: dict | None = None,
             overlap_host: bool = False) -> LiveRun:
    """Run `config` live on `engine` (one replica; C = the workload's kv_capacity_tokens, which
    must fit the engine's pool). `requests`/`scheduler` default to the config's own; `watch`
    wraps the scheduler (a progress bar); `overlap_host`: each step scheduled and prepared while
    the previous one runs (`Engine.run`)."""
    from runtime.kv_blocks import KVBlockManager
    from runtime.schedulers import check_options, make_scheduler

    if config.replicas != 1:
        raise InputError(f"the GPU engine runs one replica; this run asks for {config.replicas}", field="replicas")
    capacity = config.workload.kv_capacity_tokens
    usable = capacity // config.block_size * config.block_size
    if config.block_size != engine.block_size:
        raise InputError(f"the run's block size is {config.block_size} tokens, the engine's pool has blocks of {engine.block_size}", field="block_size")
    if usable > engine.pool.shape.capacity_tokens:
        raise InputError(
            f"the workload's KV capacity C = {capacity} tokens does not fit the engine's pool of {engine.pool.shape.capacity_tokens} tokens; "
            f"build the pool for the largest C of the runs", field="kv_capacity_tokens",
        )
    requests = config_requests(config) if requests is None else requests
    check_requests_fit(requests, usable, config.block_size, engine.runner.max_positions)
    if scheduler is None:
        check_options(config.scheduler, config.options)
        scheduler = make_scheduler(config.scheduler, KVBlockManager(capacity, config.block_size, track_block_ids=True), **config.scheduler_knobs())
    engine.sequences.clear()  # token ids of an earlier run on this engine
    engine.logits.clear()
    engine.seed = config.seed  # prompt token ids per (seed, request id), as a fresh engine of this seed draws them
    result = engine.run(watch(scheduler) if watch is not None else scheduler, requests, horizon_s=config.horizon_s, overlap_host=overlap_host)
    rows = result.step_rows()
    measured = sorted(s["measured_s"] for s in rows)
    host = sorted(s["host_s"] for s in rows)
    executor = "gpu" if engine.runner.device.type == "cuda" else "cpu"
    summary = summarize(
        result.to_sim_result(capacity), scheduler=config.scheduler,
        warmup_s=warmup_cut_s(requests, config.warmup_fraction, config.horizon_s), ttft_slo_s=config.ttft_slo_s,
        executor=executor, percentiles=config.metric_percentiles, goodput_ms=config.goodput_ms, wall_s=result.end_s,
    )
    summary = dataclasses.replace(summary, details={
        "device": info.device_name,
        "model": model_label,
        "dtype": dtype,
        **(extra_details or {}),
        "weight_bytes": info.weight_bytes,
        "kv_pool_bytes": info.pool_bytes,
        "median_step_s": measured[len(measured) // 2] if measured else None,
        "median_host_s": host[len(host) // 2] if host else None,
        "graph_steps": sum(s["graph"] for s in rows),
        "eager_step_share": (1 - sum(s["graph"] for s in rows) / len(rows)) if rows else None,
        "restart_token_mismatches": result.restart_token_mismatches,
        "overlap_host": overlap_host,
        **(overlap_details(rows) if overlap_host else {}),
        "collector_pauses": pause_summary(result.collector_pauses),
    })
    run_config = config.to_dict()
    run_config.update({"overlap_host": overlap_host, "executor": executor, "device": info.device_name, "kv_capacity_tokens": capacity,
                       "model": engine.runner.config.to_dict(), "model_label": model_label, "dtype": dtype})
    return LiveRun(summary, requests, result, rows, run_config)
