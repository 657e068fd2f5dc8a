"""Build the loop's workload from a calibration: the `default` preset's types on the measured GPU.

    PYTHONPATH=. python benchmarks/gpu_loop_workload.py CALIBRATION.json -o docs/default-h200.yaml

Keeps the default preset's two chat-like types (p48d16, p48d48, equal rates) and its design
(arXiv 2504.11320): the batch time is the calibrated linear3 model, the rate per type is chosen so
the load factor L = d_kv·Σλa + d_new·Σλ(l + l') hits `--load` (default 0.78, as in the preset),
and the KV capacity C is the smallest multiple of the block size that holds both M*/`--memory-use`
(default 0.75) and, with 2 % headroom, M^π of the least integer WAIT thresholds at slack 0.05 (what
`fluidsched solve` picks; as in the preset, where M^π = 22,400 of C = 23,000). So memory, not
compute, binds (capacity scale θ* near 1). The run's KV pool is then sized to C (`fluidsched run`
defaults to the workload's kv_capacity_tokens).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

TYPES = (("p48d16", 48, 16), ("p48d48", 48, 48))


def build(calibration: dict, *, load: float, memory_use: float, block_size: int = 16, capacity_tok_s: float | None = None) -> tuple[dict, dict]:
    """The workload at `load`. `capacity_tok_s` (decode tokens/s the engine carries at most, e.g.
    `simulated_capacity_tok_s`): the rate is `load` of it; None: the rate at which the fluid load
    factor of the linear3 model is `load` (the fluid's capacity, which overstates a real engine's)."""
    bt = calibration["batch_time"]
    if bt.get("kind") != "linear3":
        raise SystemExit(f"calibration batch_time must be linear3, got {bt.get('kind')!r}")
    d0, d_kv, d_new = bt["d0_s"], bt["d_kv_s_per_token"], bt["d_new_s_per_token"]
    footprint = sum((dec + 1) * (pre + dec / 2) for _, pre, dec in TYPES)  # Σ a_j at λ = 1
    new_tokens = sum(pre + dec for _, pre, dec in TYPES)
    if capacity_tok_s is None:
        rate = load / (d_kv * footprint + d_new * new_tokens)
    else:
        rate = load * capacity_tok_s / sum(dec for _, _, dec in TYPES)
    dt_star = d0 / (1 - load)
    mem_star = dt_star * rate * footprint
    workload = {
        "name": f"default-{calibration.get('device', 'gpu').split()[-1].lower()}",
        "kv_capacity_tokens": 10**9,  # set below
        "batch_time": {"kind": "linear3", "d0_s": d0, "d_kv_s_per_token": d_kv, "d_new_s_per_token": d_new},
        "types": [{"name": n, "prefill": p, "decode": d, "rate_per_s": round(rate, 3)} for n, p, d in TYPES],
    }
    from fluid.workload_io import workload_from_dict
    from thresholds.wait import solve_wait

    # least integer thresholds with memory unbounded: their M^π is the memory WAIT needs
    sol = solve_wait(workload_from_dict(workload, source="calibration"), slack=0.05)
    needed = max(mem_star / memory_use, 1.02 * sol.memory_policy_tokens)
    workload["kv_capacity_tokens"] = int(math.ceil(needed / block_size) * block_size)
    design = {"wait_thresholds": list(sol.thresholds), "wait_memory_tokens": sol.memory_policy_tokens, "load_factor": load, "iteration_time_star_s": dt_star, "memory_star_tokens": mem_star, "prompts_per_stage": rate * dt_star, "rate_per_type_per_s": rate}
    return workload, design


PROBE_SCHEDULERS = ("vllm-v1", "sarathi")
SATURATED_BELOW = 0.95  # a scheduler carrying less than this share of its offer is saturated
MAX_DOUBLINGS = 8


def simulated_capacity_tok_s(calibration: dict, batch_time, *, requests: int = 2000, overload: float = 1.5, memory_use: float = 0.75,
                             simulate=None) -> dict:
    """Decode tokens/s the simulator carries at most with `batch_time` (the model it simulates with)
    on the loop's workload: `capacity_probe` of the workload `build` makes for load 0.9 (its KV
    capacity), offered `overload` × the fluid capacity, `requests` arrivals. A load below 1 of it
    is below saturation for every scheduler the model describes."""
    from fluid.workload_io import workload_from_dict

    wl, _ = build(calibration, load=0.9, memory_use=memory_use)
    return {**capacity_probe(workload_from_dict(wl, source="capacity probe"), batch_time, requests=requests, overload=overload / 0.9,
                             simulate=simulate),
            "kv_capacity_tokens": wl["kv_capacity_tokens"]}


def capacity_probe(workload, batch_time, *, requests: int = 2000, overload: float = 1.5, simulate=None) -> dict:
    """Decode tokens/s the simulator carries at most on `workload`'s mix with `batch_time`: every
    type's rate times `overload`, each of PROBE_SCHEDULERS simulated on `requests` arrivals
    (seed 1); the capacity is the smallest carried rate. When some scheduler still carries ≥ 95 %
    of the offer (the offer understates the model's capacity, as a CPU smoke run's linear3 does)
    that is no capacity: the offer doubles until every one falls short (at most `MAX_DOUBLINGS`
    times; `overloaded` says whether it did). `simulate` (a `SimConfig` → decode tok/s callable)
    replaces the synchronous simulator: the overlapped loop's (`gpu_fidelity.overlapped_tok_s`)."""
    import dataclasses

    from runtime.simrun import SimConfig, run_simulation

    base = [t.rate_per_s for t in workload.types]
    factor = overload
    for doublings in range(MAX_DOUBLINGS + 1):
        types = tuple(dataclasses.replace(t, rate_per_s=r * factor) for t, r in zip(workload.types, base))
        probe = dataclasses.replace(workload, types=types, batch_time=batch_time)
        configs = {name: SimConfig(workload=probe, scheduler=name, num_requests=requests, seed=1) for name in PROBE_SCHEDULERS}
        carried = {name: run_simulation(c).summary.decode_throughput_tokens_per_s if simulate is None else simulate(c) for name, c in configs.items()}
        offered = sum(t.rate_per_s * t.decode for t in types)
        overloaded = max(carried.values()) < SATURATED_BELOW * offered
        if overloaded or doublings == MAX_DOUBLINGS:
            break
        factor *= 2
    return {"capacity_tok_s": min(carried.values()), "carried_tok_s": carried, "offered_tok_s": offered,
            "requests": requests, "doublings": doublings, "overloaded": overloaded}


def to_yaml(workload: dict, design: dict, source: str) -> str:
    bt = workload["batch_time"]
    lines = [
        f"# The `default` preset's types on the calibrated GPU ({source}): linear3 batch time as measured,",
        f"# rate per type for load factor {design['load_factor']:.2f}; KV capacity C holds M^π = {design['wait_memory_tokens']:.0f} of the",
        f"# least WAIT thresholds {design['wait_thresholds']} (slack 0.05) with 2 % headroom; M*/C = {design['memory_star_tokens'] / workload['kv_capacity_tokens']:.2f}",
        f"# (M* = {design['memory_star_tokens']:.0f} tokens, ΔT* = {1e3 * design['iteration_time_star_s']:.1f} ms, n* = {design['prompts_per_stage']:.2f} prompts per stage per type).",
        "# Built by benchmarks/gpu_loop_workload.py.",
        f"name: {workload['name']}",
        f"kv_capacity_tokens: {workload['kv_capacity_tokens']}",
        f"batch_time: {{kind: linear3, d0_s: {bt['d0_s']:.6g}, d_kv_s_per_token: {bt['d_kv_s_per_token']:.6g}, d_new_s_per_token: {bt['d_new_s_per_token']:.6g}}}",
        "types:",
    ]
    lines += [f"  - {{name: {t['name']}, prefill: {t['prefill']}, decode: {t['decode']}, rate_per_s: {t['rate_per_s']}}}" for t in workload["types"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("calibration")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--load", type=float, default=0.78)
    ap.add_argument("--memory-use", type=float, default=0.75)
    args = ap.parse_args()
    calibration = json.loads(Path(args.calibration).read_text())
    workload, design = build(calibration, load=args.load, memory_use=args.memory_use)
    Path(args.output).write_text(to_yaml(workload, design, Path(args.calibration).name))
    print(json.dumps({"workload": workload, "design": design}, indent=1))


if __name__ == "__main__":
    main()
