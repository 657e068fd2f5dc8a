"""Sweep points: one simulated run each, described by a JSON-ready dict and run anywhere.

A point carries everything its run needs (the resolved workload document, the policy spec, the
rate scale, seed, knobs), so a worker on another machine needs no file of ours; `point_id` is a
hash of that content, so the same point always lands in the same folder and a rerun finds it.
`run_point` returns the point's files as a payload (`PointPayload`); the caller writes them
(`validation/store.py`), so a cluster needs no shared file system.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fluid.errors import FluidSchedError

POINT_VERSION = 1  # bump when the meaning of a point's fields changes (changes every id)
# experiment 3's comparison with the fluid benchmark over time counts decode tokens generated
# (fluid/over_time.py); kept in those points only, so only their ids changed with it
FLUID_OVER_TIME_MEASURE = "generated decode tokens"


def point_id(point: dict) -> str:
    """Hash of the point's content; keys starting with '_' (where this checkout lives) are left
    out, so the same experiment run from another folder finds the same points."""
    content = {k: v for k, v in point.items() if not k.startswith("_")}
    text = json.dumps({"v": POINT_VERSION, **content}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def folder_name(point: dict) -> str:
    load = f"{point['load']:.4f}".rstrip("0").rstrip(".")
    return f"{point['workload_label']}__{point['policy']['label']}__L{load}__s{point['seed']}__{point_id(point)}"


def resolved_workload_document(ref, base_dir: str) -> dict:
    """The workload of `ref` in resolved form (explicit types), with its overrides merged in."""
    from fluid.workload_io import load_workload, workload_from_dict, workload_to_dict

    spec = ref.workload
    candidate = Path(base_dir) / spec
    workload = load_workload(str(candidate) if candidate.is_file() else spec)
    doc = workload_to_dict(workload)
    for key, value in ref.overrides.items():
        doc[key] = copy.deepcopy(value)
    workload_from_dict(doc, source=f"workload {ref.label!r} with overrides")  # validate now, not in a worker
    return doc


def capacity_scale(doc: dict) -> float:
    from fluid.equilibrium import closed_form
    from fluid.workload_io import workload_from_dict

    return float(closed_form(workload_from_dict(doc, source="point")).capacity_scale)


def make_point(experiment, ref, wl_doc: dict, theta: float, policy, load: float, seed: int, knobs: dict,
               *, kind: str = "grid", requests: int | None = None) -> dict:
    """The point at `load` (a fraction of θ* when the experiment's load unit is capacity)."""
    replicas = int(knobs.get("replicas", 1))
    rate_scale = load * theta * replicas if experiment.load_unit == "capacity" else load
    # "measure" names what the point's cum_over_fluid_* columns compare: its value is part of the
    # point's id, so points computed when they compared completed tokens are run again
    extra = ({"fluid_over_time": {**experiment.fluid_over_time, "measure": FLUID_OVER_TIME_MEASURE}}
             if experiment.fluid_over_time and kind == "grid" else {})
    return {
        "experiment": experiment.name,
        "kind": kind,
        "workload_label": ref.label,
        "workload": wl_doc,
        "capacity_scale": theta,
        "policy": asdict(policy),
        "load": float(load),
        "load_unit": experiment.load_unit,
        "rate_scale": float(rate_scale),
        "seed": int(seed),
        "requests": int(requests or ref.requests or experiment.requests),
        "knobs": dict(knobs),
        "warmup_fraction": ref.warmup_fraction if ref.warmup_fraction is not None else experiment.warmup_fraction,
        "ttft_slo_s": experiment.ttft_slo_s,
        "tiers": [list(t) for t in experiment.tiers] if experiment.tiers else None,
        "_base_dir": str(Path(experiment.base_dir).resolve()),  # relative trace paths in knobs
        **extra,  # only where asked for: every other point keeps its id
    }


@dataclass(frozen=True)
class PointResult:
    """The typed summary of a point (`result.json`): what it was, the fluid benchmark at its
    rates, the run's summary, and the ratios the experiments report."""

    point_id: str
    experiment: str
    kind: str
    workload: str
    policy: str
    scheduler: str
    load: float
    rate_scale: float
    seed: int
    requests: int
    knobs: dict
    status: str  # "ok" or "error"
    error: str | None = None
    policy_how: str | None = None
    fluid: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    derived: dict = field(default_factory=dict)
    code_version: str | None = None  # `git describe` of the code that ran the point

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PointPayload:
    """A finished point's files, returned by a worker and written by `store.write_point`."""

    result: dict
    config: dict | None = None
    policy: dict | None = None
    series: dict | None = None
    requests_csv_gz: bytes | None = None


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None


def fluid_numbers(workload) -> dict:
    """The fluid benchmark at the workload's rates; above the capacity (no equilibrium) the
    references M*, ΔT* and throughput* are those of the capacity boundary (rates × θ*), the most
    any policy can carry (`at_capacity_boundary` says so)."""
    from fluid.equilibrium import closed_form

    p = closed_form(workload)
    boundary = not p.stable
    if boundary:
        p = closed_form(workload.scaled(p.capacity_scale * (1 - 1e-9)))
    return {
        "at_capacity_boundary": boundary,
        "load_factor": float(p.load_factor),
        "iteration_time_star_s": _finite(p.iteration_time_star_s),
        "memory_star_tokens": _finite(p.memory_star_tokens),
        "throughput_star_tokens_per_s": float(p.throughput_star_tokens_per_s),
        "capacity_scale": float(p.capacity_scale),
        "kv_capacity_tokens": int(p.kv_capacity_tokens),
        "stable": not boundary,
    }


def fleet_split(workload, replicas: int) -> dict:
    """Per-type routing probabilities from the fleet LP (arXiv 2504.11320) over identical replicas."""
    from fluid.fleet import GpuSpec
    from fluid.lp import solve_fleet_lp
    from runtime.router import split_from_rates

    gpus = [GpuSpec.of(workload, f"gpu{g}") for g in range(replicas)]
    res = solve_fleet_lp(workload.types, gpus, backend="linprog")
    rates = res.split_rate_per_s  # (replicas, types)
    return split_from_rates({t.name: [float(rates[g][j]) + 1e-12 for g in range(replicas)] for j, t in enumerate(workload.types)})


def _requests_csv_gz(requests) -> bytes:
    import csv

    from runtime.metrics import request_rows

    rows = request_rows(sorted(requests, key=lambda r: (r.arrival_s, r.request_id)))
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return gzip.compress(text.getvalue().encode(), mtime=0)


def derived_metrics(summary: dict, fluid: dict, requests, warmup_s: float) -> dict:
    from validation.series import latency_growth
    from validation.summary_adapter import metric

    start_s, stop_s = summary["window_start_s"], summary["window_stop_s"]
    offered = sum(r.output_tokens for r in requests if start_s <= r.arrival_s <= stop_s)
    offered_tps = offered / (stop_s - start_s) if stop_s > start_s else None
    thr = metric(summary, "decode_throughput_tokens_per_s")
    star, mstar, dt = fluid["throughput_star_tokens_per_s"], fluid["memory_star_tokens"], fluid["iteration_time_star_s"]
    step = metric(summary, "mean_step_s")
    return {
        "offered_decode_tokens_per_s": offered_tps,
        "throughput_over_offered": thr / offered_tps if offered_tps else None,
        "throughput_over_star": thr / star if star else None,
        "peak_kv_over_memory_star": metric(summary, "peak_kv_tokens") / mstar if mstar else None,
        "peak_kv_over_capacity": metric(summary, "peak_kv_tokens") / fluid["kv_capacity_tokens"],
        "mean_step_over_dt_star": step / dt if (dt and step is not None) else None,
        "latency_growth": latency_growth(requests, warmup_s),
        "restart_rate": metric(summary, "restarts") / max(1, metric(summary, "num_requests")),
    }


def _config(point: dict, workload, policy_doc, *, accept_mismatch: bool = False):
    from fluid.workload import ArrivalSpec
    from runtime.policy_file import policy_from_dict
    from runtime.simrun import SimConfig

    knobs = point["knobs"]
    arrivals = dict(knobs["arrivals"]) if knobs.get("arrivals") else None
    if arrivals and arrivals.get("kind") == "trace" and not str(arrivals["trace"]).startswith("builtin:"):
        arrivals["trace"] = str(Path(point.get("_base_dir", ".")) / arrivals["trace"])
    replicas = int(knobs.get("replicas", 1))
    router = knobs.get("router", "round-robin")
    split = fleet_split(workload.scaled(point["rate_scale"]), replicas) if router == "split" else None
    return SimConfig(
        workload=workload,
        scheduler=point["policy"]["scheduler"],
        num_requests=point["requests"],
        seed=point["seed"],
        rate_scale=point["rate_scale"],
        block_size=int(knobs.get("block_size", 16)),
        options=dict(point["policy"]["options"]),
        policy=policy_from_dict(policy_doc, source="solved policy") if policy_doc else None,
        policy_document=policy_doc,
        replicas=replicas,
        router=router,
        split=split,
        warmup_fraction=point["warmup_fraction"],
        ttft_slo_s=point["ttft_slo_s"],
        tiers=tuple(tuple(t) for t in point["tiers"]) if point["tiers"] else None,
        arrivals=ArrivalSpec(**arrivals) if arrivals else None,
        accept_policy_mismatch=accept_mismatch,
    )


@functools.lru_cache(maxsize=8)
def _fluid_over_time_of(key: str, workload_json: str, arrivals: tuple, prompts: tuple, outputs: tuple) -> dict:
    """The benchmark of one point's requests on a grid to twice their arrival span (cached: the
    policies of a (workload, load, seed) see the same requests, so one integration serves them all)."""
    import numpy as np

    from fluid.over_time import benchmark_for_requests
    from fluid.workload_io import workload_from_dict

    settings = json.loads(key)
    span = max(arrivals)
    bench = benchmark_for_requests(workload_from_dict(json.loads(workload_json), source="point"), arrivals, prompts, outputs,
                                   np.linspace(0.0, 2 * span + 60.0, 401), bin_s=span / settings["time_bins"],
                                   type_bins=settings["type_bins"])
    return {"time_s": bench.time_s, "generated": bench.generated_decode_tokens, "completed": bench.completed_decode_tokens,
            "in_system": bench.in_system,
            "types": len(bench.types), "threshold_rate_per_s": bench.threshold_rate_per_s,
            "bin_s": span / settings["time_bins"]}


def fluid_over_time_series(point: dict, requests, edges_s) -> dict:
    """The fluid benchmark over time of the point's own requests (`fluid/over_time.py`) on the
    series' time edges, for `series.json`; beyond twice the arrival span the benchmark has long
    finished its work (its curve is flat), so later edges take its last value."""
    import numpy as np

    reqs = sorted(requests, key=lambda r: (r.arrival_s, r.request_id))
    b = _fluid_over_time_of(json.dumps(point["fluid_over_time"], sort_keys=True), json.dumps(point["workload"], sort_keys=True),
                            tuple(r.arrival_s for r in reqs), tuple(r.prompt_tokens for r in reqs), tuple(r.output_tokens for r in reqs))
    edges = np.asarray(edges_s, float)
    return {"edges_s": edges.tolist(), "generated_decode_tokens": np.interp(edges, b["time_s"], b["generated"]).tolist(),
            "completed_decode_tokens": np.interp(edges, b["time_s"], b["completed"]).tolist(),
            "in_system": np.interp(edges, b["time_s"], b["in_system"]).tolist(), "types": b["types"],
            "threshold_rate_per_s": b["threshold_rate_per_s"], "arrival_bin_s": b["bin_s"]}


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    from runtime.results import code_version

    return code_version()


@dataclass
class Execution:
    """What running a point's configuration gave: the summary, the requests with their
    timestamps, the step log (replica 0) and the resolved configuration (config.json)."""

    summary: object
    requests: list
    steps: object
    config: dict


def simulate(config) -> Execution:
    """A point's run in the simulator (the sweep's default executor)."""
    from runtime.simrun import run_simulation

    output = run_simulation(config)
    return Execution(output.summary, output.requests, output.results[0].steps, output.config)


def run_point(point: dict, execute=None) -> PointPayload:
    """Run one point (`execute(SimConfig) -> Execution`: the simulator unless given, e.g. the GPU
    engine, `validation/gpu_sweep.py`); a deterministic failure (no policy fits, a bad knob) is a
    finished point with status "error" and the reason, so a rerun does not retry it forever."""
    from fluid.workload_io import workload_from_dict
    from validation.policies import solve_policy_document
    from runtime.metrics import measured_requests
    from validation.series import point_series, tier_metrics
    from validation.summary_adapter import summary_dict

    execute = execute or simulate
    pid = point_id(point)
    policy = point["policy"]
    base = dict(point_id=pid, experiment=point["experiment"], kind=point["kind"], workload=point["workload_label"],
                policy=policy["label"], scheduler=policy["scheduler"], load=point["load"], rate_scale=point["rate_scale"],
                seed=point["seed"], requests=point["requests"], knobs=point["knobs"])
    try:
        workload = workload_from_dict(point["workload"], source=f"workload {point['workload_label']!r}")
        # a fleet of g replicas: the fluid benchmark and the thresholds are per replica (rates / g),
        # throughput* is the fleet's
        replicas = int(point["knobs"].get("replicas", 1))
        fluid = fluid_numbers(workload.scaled(point["rate_scale"] / replicas))
        fluid.update(replicas=replicas, throughput_star_tokens_per_s=fluid["throughput_star_tokens_per_s"] * replicas)
        policy_doc, how, solve_scale = None, None, point["rate_scale"]
        if policy.get("solve"):
            solve = policy["solve"]
            solve_scale = point["rate_scale"] / replicas
            max_load = float(solve.get("max_load", 0.98))
            if point["load_unit"] == "capacity" and point["load"] > max_load:
                solve_scale = solve_scale * max_load / point["load"]
            policy_doc, how = solve_policy_document(workload.scaled(solve_scale), solve)
            if point["load_unit"] == "capacity" and point["load"] > max_load:
                how += f", solved at load {max_load:g}"
        # thresholds solved at other rates than the run's (above max_load, or per replica of a
        # fleet) are a deliberate mismatch, stated in policy_how
        config = _config(point, workload, policy_doc, accept_mismatch=policy_doc is not None and solve_scale != point["rate_scale"])
        output = execute(config)
    except FluidSchedError as err:
        return PointPayload(PointResult(**base, status="error", error=str(err), code_version=_code_version()).to_dict())
    summary = summary_dict(output.summary)
    requests = output.requests
    warmup_s = summary.get("warmup_s", 0.0)
    steps = output.steps
    # bisection steps feed λ* only: no figure draws their series
    series = point_series(requests, steps, end_s=summary["sim_end_s"], warmup_s=warmup_s) if point["kind"] == "grid" else None
    tiers = series["tiers"] if series else tier_metrics(measured_requests(requests, warmup_s))
    over_time = {}
    if series is not None and point.get("fluid_over_time"):
        from fluid.over_time import compare_cumulative

        series["fluid_over_time"] = fluid_over_time_series(point, requests, series["time"]["edges_s"])
        edges, fot = series["time"]["edges_s"], series["fluid_over_time"]
        # primary: decode tokens generated by t (what the "cumulative decode throughput"
        # is); secondary: tokens counted at completion, which the fluid's Erlang residence makes
        # lead any run early on (fluid/over_time.py)
        generated = compare_cumulative(edges, series["time"]["generated_decode_tokens"], fot["generated_decode_tokens"], from_s=warmup_s)
        completed = compare_cumulative(edges, series["time"]["completed_decode_tokens"], fot["completed_decode_tokens"], from_s=warmup_s)
        over_time = {"cum_over_fluid_min": generated["min"], "cum_over_fluid_min_at_s": generated["min_at_s"],
                     "cum_over_fluid_end": generated["end"], "cum_completed_over_fluid_min": completed["min"],
                     "cum_completed_over_fluid_end": completed["end"]}
    derived = {**derived_metrics(summary, fluid, requests, warmup_s), "tiers": tiers, **over_time,
               "arrival_rate_per_s": workload.total_rate_per_s * point["rate_scale"]}  # nominal, Σλ × rate scale
    if policy_doc is not None:  # the memory the thresholds reserve (M^π + buffer), for the memory-vs-L figure
        g = policy_doc.get("guarantees") or {}
        derived.update(policy_memory_tokens=g.get("memory_policy_tokens"), policy_buffer_tokens=g.get("buffer_tokens"),
                       policy_memory_required_tokens=g.get("memory_required_tokens"),
                       policy_segments=len(policy_doc["segments"]) if policy_doc.get("segments") else None)
    result = PointResult(**base, status="ok", policy_how=how, fluid=fluid, summary=summary, derived=derived,
                         code_version=_code_version())
    config_doc = dict(output.config, point=point, code_version=_code_version())
    return PointPayload(result.to_dict(), config_doc, policy_doc, series, _requests_csv_gz(requests))
