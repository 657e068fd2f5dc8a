"""One simulated run, configured end to end: workload → arrivals → scheduler(s) → metrics.

`SimConfig` is the resolved configuration (it is what `config.json` of a run folder records);
`run_simulation` returns a `RunOutput` that the caller writes with
`runtime.results.write_run_folder`. `fluidsched simulate`, `fluidsched compare` and the demo
all go through here, so the same seed gives the same arrivals to every scheduler.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

from fluid.errors import InputError
from fluid.numbers import check_number
from fluid.workload import ArrivalSpec, Workload
from runtime.arrivals import SloTier, check_tiers, make_requests
from runtime.kv_blocks import KVBlockManager
from runtime.metrics import summarize, warmup_cut_s
from runtime.policy_file import RuntimePolicy
from runtime.results import RunOutput
from runtime.serving_metrics import DEFAULT_PERCENTILES, check_percentiles
from runtime.router import ROUTERS, combine_results, simulate_fleet
from runtime.schedulers import check_options, make_scheduler

# the schedulers that serve each kind of policy: the cohort engine, the capped rule, the capped rule adapting online
POLICY_SCHEDULER_NAMES = {"wait": ("wait", "wait-capped", "wait-adaptive"),
                          "nested_wait": ("nested-wait", "nested-wait-capped", "nested-wait-adaptive")}
SCHEDULERS_WITH_POLICY = frozenset(n for names in POLICY_SCHEDULER_NAMES.values() for n in names)


def policy_scheduler(policy: RuntimePolicy) -> str:
    """The scheduler a policy file runs on by default: its kind's, capped when its rule is, adaptive
    when its capped section has an `adaptive` block."""
    cohort, capped, adaptive = POLICY_SCHEDULER_NAMES[policy.policy]
    if policy.service_rule != "capped":
        return cohort
    return adaptive if policy.adaptive is not None else capped


def parse_option(text: str) -> tuple[str, object]:
    """`key=value` with the value read as JSON when it parses (numbers, true/false, null), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"an option is KEY=VALUE (e.g. chunk_size=256), got {text!r}", field="option")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def check_policy_matches(policy: RuntimePolicy, workload: Workload, *, rate_scale: float = 1.0,
                         accept_mismatch: bool = False) -> list[str]:
    """Refuse a policy that was solved for another workload than the run's.

    The structure must always fit (a WAIT policy's classes are the workload's types; Nested WAIT
    instances name only its types). A policy read from a file also records the workload it was
    solved for: its content hash, C and rates must be those of the run (the workload with its
    rates times `rate_scale`). Each difference is listed; unless `accept_mismatch`, any is an
    InputError. Returns the differences (empty when the policy belongs to the run).
    """
    types = {t.name for t in workload.types}
    if policy.policy == "wait":
        classes = {c.name for c in policy.classes}
        if classes != types:
            raise InputError(
                f"the policy's classes {sorted(classes)} do not match the workload's types {sorted(types)}; "
                f"solve a policy for this workload (fluidsched solve)",
                source=policy.source,
                field="classes",
            )
    for inst in policy.instances:
        extra = sorted(set(inst.type_names) - types)
        if extra:
            raise InputError(
                f"the policy's instance for prefill {inst.prefill_tokens} names types {extra} the workload lacks "
                f"(its types: {sorted(types)})",
                source=policy.source,
                field="instances",
            )
    differences = policy_differences(policy, workload, rate_scale)
    if differences and not accept_mismatch:
        raise InputError(
            "the policy was solved for another workload than this run's: " + "; ".join(differences)
            + ". Solve it for this workload (fluidsched solve, with the same --rate-scale), or pass "
              "--accept-policy-mismatch to run it anyway",
            source=policy.source,
            field="workload",
        )
    return differences


def policy_differences(policy: RuntimePolicy, workload: Workload, rate_scale: float = 1.0) -> list[str]:
    """What differs between the workload a policy records and the run's (C, rates, content hash)."""
    from fluid.workload_io import workload_content_sha256

    out: list[str] = []
    if policy.kv_capacity_tokens is not None and policy.kv_capacity_tokens != workload.kv_capacity_tokens:
        out.append(f"C is {policy.kv_capacity_tokens} tokens in the policy, {workload.kv_capacity_tokens} in the run")
    ref = policy.solved_for
    if ref is None:
        return out
    solved = dict(ref.rates_per_s)
    for t in workload.types:
        run_rate = t.rate_per_s * rate_scale
        if t.name not in solved:
            out.append(f"type {t.name} has no rate in the policy")
        elif not math.isclose(solved[t.name], run_rate, rel_tol=1e-9, abs_tol=1e-12):
            out.append(f"rate of {t.name} is {solved[t.name]:g}/s in the policy, {run_rate:g}/s in the run")
    for name in sorted(set(solved) - {t.name for t in workload.types}):
        out.append(f"the policy has a rate for type {name}, which the run's workload lacks")
    run_workload = workload.scaled(rate_scale) if rate_scale != 1.0 else workload
    digest = workload_content_sha256(run_workload)
    if digest != ref.content_sha256:
        what = "" if out else " (same C and rates: the types, batch time or arrivals differ)"
        out.append(f"workload content hash is {ref.content_sha256[:12]}… ('{ref.name}') in the policy, "
                   f"{digest[:12]}… ('{workload.name}') in the run{what}")
    return out


@dataclass(frozen=True)
class SimConfig:
    """A simulated run, fully resolved. `options` are the scheduler's knobs."""

    workload: Workload
    scheduler: str
    num_requests: int = 2000
    seed: int = 0
    rate_scale: float = 1.0
    block_size: int = 16
    options: dict = field(default_factory=dict)
    policy: RuntimePolicy | None = None
    policy_document: dict | None = None  # the policy JSON as read, recorded in the run folder
    replicas: int = 1
    router: str = "round-robin"
    split: dict | None = None
    warmup_fraction: float = 0.1  # warm-up cut, as a fraction of the last arrival time
    ttft_slo_s: float | None = 0.5
    tiers: tuple[SloTier, ...] | None = None
    arrivals: ArrivalSpec | None = None  # overrides the workload's
    horizon_s: float | None = None
    trace: bool = False
    accept_policy_mismatch: bool = False  # run a policy solved for another workload (differences recorded)
    metric_percentiles: tuple[float, ...] = DEFAULT_PERCENTILES  # serving metrics' percentiles (vLLM's --metric-percentiles)
    goodput_ms: dict | None = None  # vLLM's --goodput bounds, {'ttft'|'tpot'|'e2el': milliseconds}

    def __post_init__(self) -> None:
        check_number(self.num_requests, "requests", integer=True, minimum=1, what="the number of requests")
        check_number(self.rate_scale, "rate_scale", minimum=0, strict_minimum=True, what="the rate scale")
        check_number(self.seed, "seed", integer=True, minimum=0, maximum=2**63 - 1, what="the seed")
        check_number(self.ttft_slo_s, "ttft_slo", minimum=0, strict_minimum=True, unit="of seconds", allow_none=True,
                     what="the TTFT SLO")
        if self.split is not None and self.router != "split":
            raise InputError(f"a split file is only used by --router split, but the router is {self.router!r}; "
                             "add --router split or drop --split", field="split")
        b = check_number(self.block_size, "block_size", integer=True, minimum=1, what="the block size (tokens)")
        if b > self.workload.kv_capacity_tokens:
            raise InputError(f"block size {b} exceeds the KV capacity of {self.workload.kv_capacity_tokens} tokens", field="block_size")
        check_number(self.warmup_fraction, "warmup", minimum=0, maximum=1, strict_maximum=True, what="the warm-up fraction")
        if self.router not in ROUTERS:
            raise InputError(f"unknown router {self.router!r}; valid routers: {', '.join(ROUTERS)}", field="router")
        check_number(self.horizon_s, "horizon_s", minimum=0, strict_minimum=True, unit="of seconds", allow_none=True, what="the horizon")
        if self.tiers is not None:
            object.__setattr__(self, "tiers", check_tiers(self.tiers))
        object.__setattr__(self, "metric_percentiles", check_percentiles(self.metric_percentiles))
        if self.scheduler in SCHEDULERS_WITH_POLICY:
            if self.policy is None and "policy" not in self.options:
                raise InputError(f"scheduler {self.scheduler!r} needs a policy: pass --policy POLICY.json", field="policy")
        if self.policy is not None:
            names = POLICY_SCHEDULER_NAMES[self.policy.policy]
            if self.scheduler not in names:
                raise InputError(
                    f"the policy file holds a {self.policy.policy!r} policy, which schedulers {' or '.join(names)} run, "
                    f"not {self.scheduler!r}",
                    source=self.policy.source,
                    field="policy",
                )
            if self.policy.service_rule == "capped" and self.scheduler == names[0]:
                raise InputError(
                    f"the policy's service rule is 'capped' (fractional thresholds); run it on {names[1]!r} (or "
                    f"{names[2]!r}, adapting online), not {self.scheduler!r}", source=self.policy.source, field="service_rule",
                )
            check_policy_matches(self.policy, self.workload, rate_scale=self.rate_scale,
                                 accept_mismatch=self.accept_policy_mismatch)

    def scheduler_knobs(self) -> dict:
        knobs = dict(self.options)
        if self.policy is not None:
            knobs["policy"] = self.policy
        return knobs

    def to_dict(self) -> dict:
        from fluid.workload_io import workload_to_dict

        return {
            "workload": workload_to_dict(self.workload),
            "workload_source": self.workload.source,
            "scheduler": self.scheduler,
            "options": {k: v for k, v in self.options.items() if k != "policy"},
            "policy_source": self.policy.source if self.policy is not None else None,
            "policy_mismatch": (policy_differences(self.policy, self.workload, self.rate_scale)
                                if self.policy is not None else []),
            "num_requests": self.num_requests,
            "seed": self.seed,
            "rate_scale": self.rate_scale,
            "block_size": self.block_size,
            "replicas": self.replicas,
            "router": self.router,
            "split": self.split,
            "warmup_fraction": self.warmup_fraction,
            "ttft_slo_s": self.ttft_slo_s,
            "tiers": [[t.fraction, t.tbt_slo_s] for t in self.tiers] if self.tiers else None,
            "arrivals": (self.arrivals or self.workload.arrivals).to_dict(),
            "horizon_s": self.horizon_s,
            "metric_percentiles": list(self.metric_percentiles),
            "goodput_ms": self.goodput_ms,
            "executor": "simulated",
        }


def config_requests(config: SimConfig) -> list:
    """The run's arrivals. One home: the simulator and the GPU engine (`runtime.gpu.live`) replay
    the same requests at the same times for the same configuration."""
    return make_requests(config.workload, config.num_requests, config.seed, rate_scale=config.rate_scale,
                         arrivals=config.arrivals, tiers=config.tiers)


def run_simulation(config: SimConfig, *, progress=None) -> RunOutput:
    """Simulate `config` and summarise it; nothing is written. `progress`: a
    `runtime.progress.RequestProgress` told of each finished request (None: no bar)."""
    # validate the scheduler and its knobs before spending time on arrivals
    check_options(config.scheduler, config.options)
    requests = config_requests(config)
    capacity = config.workload.kv_capacity_tokens
    knobs = config.scheduler_knobs()

    def build(_replica: int):
        scheduler = make_scheduler(config.scheduler, KVBlockManager(capacity, config.block_size), **knobs)
        return progress.watch(scheduler) if progress is not None else scheduler

    t0 = time.perf_counter()
    results = simulate_fleet(
        build, requests, config.workload.batch_time,
        num_replicas=config.replicas, router=config.router, seed=config.seed, split=config.split,
        horizon_s=config.horizon_s, trace=config.trace,
    )
    wall_s = time.perf_counter() - t0
    combined = combine_results(results)
    warmup_s = warmup_cut_s(requests, config.warmup_fraction, config.horizon_s)
    summary = summarize(
        combined, scheduler=config.scheduler, warmup_s=warmup_s, ttft_slo_s=config.ttft_slo_s, replicas=config.replicas,
        percentiles=config.metric_percentiles, goodput_ms=config.goodput_ms, wall_s=wall_s,
    )
    return RunOutput(config.to_dict(), summary, results, config.policy_document)
