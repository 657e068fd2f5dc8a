"""Turn a workload and a WAIT / Nested WAIT solution into the policy dataclasses.

Drain rule default: `DRAIN_ITERATIONS × ΔT(n)` (the policy's own iteration time). A cohort of n_j
prompts accumulates in about n_j/λ_j ≥ ΔT(n) seconds at the design load, so waiting 20
iterations only cuts in when traffic has slowed or stopped, and bounds the extra latency a
stranded partial cohort pays to 20 iterations. `--max-wait-s` overrides it.
"""

from __future__ import annotations

import math

from fluid.equilibrium import closed_form
from fluid.numbers import check_number
from fluid.errors import InputError
from fluid.workload import Workload
from fluid.workload_io import workload_content_sha256
from thresholds.nested import NestedSolution
from thresholds.policy import (
    SERVICE_RULES,
    ClassThreshold,
    Drain,
    FluidSummary,
    Guarantees,
    NestedInstance,
    NestedWaitPolicy,
    Segment,
    WaitPolicy,
    WorkloadRef,
)
from thresholds.wait import WaitSolution, linear_time

DRAIN_ITERATIONS = 20


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def fluid_summary(workload: Workload) -> FluidSummary:
    p = closed_form(workload)
    return FluidSummary(_finite(p.memory_star_tokens), _finite(p.iteration_time_star_s),
                        float(p.throughput_star_tokens_per_s), float(p.load_factor), float(p.capacity_scale))


def _common(workload: Workload, service_rule: str, iteration_time_s: float, max_wait_s: float | None,
            options: dict, guarantees: Guarantees) -> dict:
    if service_rule not in SERVICE_RULES:
        raise InputError(f"service rule must be one of {SERVICE_RULES}, got {service_rule!r}", field="service_rule")
    if max_wait_s is None:
        max_wait_s = DRAIN_ITERATIONS * iteration_time_s
    else:
        check_number(max_wait_s, "max_wait_s", minimum=0, unit="of seconds", what="max wait")
    return {
        "service_rule": service_rule,
        "workload": WorkloadRef(workload.name, workload_content_sha256(workload),
                                tuple((t.name, float(t.rate_per_s)) for t in workload.types)),
        "kv_capacity_tokens": workload.kv_capacity_tokens,
        "batch_time": workload.batch_time.to_dict(),
        "fluid": fluid_summary(workload),
        "guarantees": guarantees,
        "drain": Drain(float(max_wait_s)),
        "options": {**options, "linear_batch_time": linear_time(workload).to_dict()},
    }


def wait_policy(workload: Workload, sol: WaitSolution, *, service_rule: str = "cohort",
                max_wait_s: float | None = None, allow_violations: bool = False, rate_scale: float = 1.0,
                slack_rule: str | None = None) -> WaitPolicy:
    options = {"mode": sol.mode, "slack": sol.slack, "slack_rule": slack_rule, "batch_cap": sol.batch_cap, "rate_scale": rate_scale,
               "allow_violations": allow_violations, "iteration_time_s": sol.iteration_time_s,
               "drain_iterations": DRAIN_ITERATIONS if max_wait_s is None else None}
    guarantees = Guarantees(sol.memory_policy_tokens, 0.0, sol.memory_policy_tokens, None, None, sol.conditions)
    classes = tuple(ClassThreshold(t.name, t.prefill, t.decode, float(t.rate_per_s), n)
                    for t, n in zip(workload.types, sol.thresholds))
    return WaitPolicy(**_common(workload, service_rule, sol.iteration_time_s, max_wait_s, options, guarantees),
                      classes=classes)


def _segments(inst) -> tuple[Segment, ...]:
    return tuple(Segment(a, b, n, float(p), None if th is None else float(th))
                 for (a, b), n, p, th in zip(inst.bounds, inst.thresholds, inst.continue_probs, inst.thetas))


def nested_policy(workload: Workload, sol: NestedSolution, *, service_rule: str = "cohort",
                  max_wait_s: float | None = None, allow_violations: bool = False, rate_scale: float = 1.0,
                  slack_rule: str | None = None) -> NestedWaitPolicy:
    o = sol.options
    options = {"mode": sol.mode, "slack": o.slack, "slack_rule": slack_rule, "eta": o.eta, "batch_cap": o.batch_cap, "rate_scale": rate_scale,
               "memory_bound": "theorem" if o.memory_bound == "theorem" else "expected",
               "segments": o.segments if o.segments is not None else "types",
               "segment_rule": "types" if sol.num_segments_requested is None else o.segment_rule,
               "segments_chosen": sol.num_segments_requested, "zeta": o.zeta,
               "iterations_in_horizon": sol.iterations_in_horizon, "iteration_time_s": sol.iteration_time_s,
               "allow_violations": allow_violations, "drain_iterations": DRAIN_ITERATIONS if max_wait_s is None else None}
    if sol.curve is not None:
        options["segments_curve"] = [dict(e) for e in sol.curve]
    guarantees = Guarantees(sol.memory_policy_tokens, sol.buffer_tokens, sol.memory_required_tokens,
                            o.delta, o.horizon_s, sol.conditions)
    first = sol.instances[0]
    instances = None
    if o.prefill_mode == "per_class":
        instances = tuple(NestedInstance(i.spec.prefill_tokens, i.spec.type_names, _segments(i), i.memory_required_tokens)
                          for i in sol.instances)
    return NestedWaitPolicy(
        **_common(workload, service_rule, sol.iteration_time_s, max_wait_s, options, guarantees),
        segments=_segments(first), memory_required_tokens=sol.memory_required_tokens,
        prefill_mode=o.prefill_mode, representative_prefill_tokens=first.spec.prefill_tokens, instances=instances,
    )


def _capped_section(sol) -> "CappedSection":
    from thresholds.policy import CappedSection

    return CappedSection(sol.prefill_chunk_tokens, sol.memory)


def wait_capped_policy(workload: Workload, sol, *, max_wait_s: float | None = None, rate_scale: float = 1.0,
                       slack_rule: str | None = None, allow_violations: bool = False) -> WaitPolicy:
    """A capped-rule WAIT policy from `thresholds.capped_solve.solve_wait_capped`."""
    options = {"mode": "fluid", "slack": sol.slack, "slack_rule": slack_rule, "batch_cap": None,
               "rate_scale": rate_scale, "allow_violations": allow_violations, "iteration_time_s": sol.iteration_time_s,
               "class_caps": list(sol.caps), "drain_iterations": DRAIN_ITERATIONS if max_wait_s is None else None}
    m = sol.memory
    guarantees = Guarantees(m.expected_tokens, 0.0, m.required_tokens, None, None, sol.conditions)
    classes = tuple(ClassThreshold(t.name, t.prefill, t.decode, float(t.rate_per_s), n)
                    for t, n in zip(workload.types, sol.thresholds))
    return WaitPolicy(**_common(workload, "capped", sol.iteration_time_s, max_wait_s, options, guarantees),
                      classes=classes, capped=_capped_section(sol))


def nested_capped_policy(workload: Workload, sol, options, *, max_wait_s: float | None = None, rate_scale: float = 1.0,
                         slack_rule: str | None = None, allow_violations: bool = False) -> NestedWaitPolicy:
    """A capped-rule Nested WAIT policy from `thresholds.capped_solve.solve_nested_capped`."""
    opts = {"mode": "fluid", "slack": sol.slack, "slack_rule": slack_rule, "eta": options.eta, "batch_cap": None,
            "rate_scale": rate_scale, "segments": options.segments if options.segments is not None else "types",
            "segment_rule": "types" if sol.num_segments is None else options.segment_rule,
            "segments_chosen": sol.num_segments, "resident_cap": sol.resident_cap, "zeta": options.zeta,
            "iteration_time_s": sol.iteration_time_s, "allow_violations": allow_violations,
            "drain_iterations": DRAIN_ITERATIONS if max_wait_s is None else None}
    m = sol.memory
    guarantees = Guarantees(sol.base_memory_tokens, sol.buffer_tokens or 0.0, m.required_tokens,
                            options.delta, options.horizon_s, sol.conditions)
    segments = tuple(Segment(a, b, n, float(p), None if th is None else float(th))
                     for (a, b), n, p, th in zip(sol.bounds, sol.thresholds, sol.continue_probs, sol.thetas))
    return NestedWaitPolicy(
        **_common(workload, "capped", sol.iteration_time_s, max_wait_s, opts, guarantees),
        segments=segments, memory_required_tokens=m.required_tokens, prefill_mode="representative",
        representative_prefill_tokens=sol.prefill_tokens, instances=None, capped=_capped_section(sol),
    )
