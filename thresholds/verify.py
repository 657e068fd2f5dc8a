"""Re-verify a policy's conditions against a workload (for instance today's measured rates).

The thresholds stay as written; rates, lengths, batch time and C come from the workload. For
Nested WAIT the continuation probabilities p_k are recomputed from the workload's output-length
distribution over the policy's segments, then θ_k, the buffer and the memory requirement.
"""

from __future__ import annotations

import math

from fluid.equilibrium import closed_form
from fluid.errors import InputError
from fluid.workload import Workload
from thresholds.conditions import (
    Condition,
    at_most,
    nested_base_memory_tokens,
    nested_new_tokens,
    nested_ratio_conditions,
    strictly_below,
    wait_conditions,
)
from thresholds.nested import instance_memory_tokens
from thresholds.policy import NestedWaitPolicy, Policy, WaitPolicy
from thresholds.segments import LengthDistribution, continue_probs
from thresholds.wait import linear_time


def verify_policy(policy: Policy, workload: Workload) -> tuple[Condition, ...]:
    if getattr(policy, "capped", None) is not None:
        from thresholds.capped_solve import verify_capped

        return verify_capped(policy, workload)
    if isinstance(policy, WaitPolicy):
        return _verify_wait(policy, workload)
    return _verify_nested(policy, workload)


def _verify_wait(policy: WaitPolicy, workload: Workload) -> tuple[Condition, ...]:
    by_name = {c.name: c for c in policy.classes}
    missing = [t.name for t in workload.types if t.name not in by_name]
    if missing:
        raise InputError(f"the policy has no class for workload type(s) {missing} (it has {sorted(by_name)}); "
                         f"re-solve the policy for this workload", field="classes")
    classes = [(t.name, t.prefill, t.decode, t.rate_per_s, by_name[t.name].threshold) for t in workload.types]
    return wait_conditions(linear_time(workload), classes, workload.kv_capacity_tokens,
                           closed_form(workload).memory_star_tokens)


def _groups(policy: NestedWaitPolicy, workload: Workload):
    """(prefill, segments, types) per instance; a type not listed goes to the nearest prefill."""
    if policy.instances is None:
        return [(policy.representative_prefill_tokens, policy.segments, list(workload.types))]
    groups = [(i.prefill_tokens, i.segments, []) for i in policy.instances]
    for t in workload.types:
        listed = [g for g, i in zip(groups, policy.instances) if t.name in i.type_names]
        target = listed[0] if listed else min(groups, key=lambda g: abs(g[0] - t.prefill))
        target[2].append(t)
    return [g for g in groups if g[2]]


def _verify_nested(policy: NestedWaitPolicy, workload: Workload) -> tuple[Condition, ...]:
    groups = _groups(policy, workload)
    many = len(groups) > 1
    kv = new = 0.0
    for prefill, segs, _ in groups:
        bounds = [(s.first_stage, s.last_stage) for s in segs]
        kv += nested_base_memory_tokens(prefill, bounds, [s.threshold for s in segs])
        new += nested_new_tokens(prefill, bounds, [s.threshold for s in segs])
    dt = linear_time(workload).iteration_time_s(kv, new)
    iterations = (policy.guarantees.horizon_s or 3600.0) / dt
    delta = policy.guarantees.delta or 0.01
    zeta = float(policy.options.get("zeta", 1.0))
    out: list[Condition] = []
    required = 0.0
    for prefill, segs, types in groups:
        label = f"[prefill={prefill}]" if many else ""
        dist = LengthDistribution.from_pairs((t.decode, t.rate_per_s) for t in types)
        longest = segs[-1].last_stage
        out.append(at_most(f"decode_lengths_covered{label}", dist.lengths[-1], longest))
        # p_k of the last segment is forced to 0 here; neither the ratios nor θ_k read it
        probs = continue_probs(dist, tuple(s.last_stage for s in segs))
        n = [s.threshold for s in segs]
        ratio_conds = nested_ratio_conditions(label, n, probs)
        out += ratio_conds
        out.append(strictly_below(f"iteration_time{label}", dt, n[0] / dist.total_rate_per_s))
        bounds = [(s.first_stage, s.last_stage) for s in segs]
        if all(c.holds for c in ratio_conds):
            _, base, buffer = instance_memory_tokens(prefill, bounds, n, probs, iterations, delta, zeta)
            required += base + buffer
        else:  # no θ_k: entries into some segment outpace its threshold, the buffer is unbounded
            required = math.inf
    out.append(at_most("memory_within_capacity", required, workload.kv_capacity_tokens))
    return tuple(out)
