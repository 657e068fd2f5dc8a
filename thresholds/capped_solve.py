"""Real-valued WAIT and Nested WAIT thresholds for the capped service rule (docs/capped-rule.md).

Nothing is rounded but the caps. At target utilisation ρ = 1 − slack:
- WAIT: n_j = λ_j x / ρ, with x the iteration time of the caps. Let u_j be the time one unit of
  n_j adds to an iteration (d_kv a_j + d_new (l_j + l'_j)); then x = d0 + (x/ρ) Σ λ_j u_j, i.e.
  x = d0 / (1 − A/ρ) with A = Σ λ_j u_j, the load factor. Caps c_j = ⌈n_j (l'_j + 1)⌉ raise the
  iteration time a little, so x ← ΔT(c) until ΔT(c) ≤ ρ c_j / (λ_j (l'_j + 1)) for every j (the
  caps serve λ_j / ρ). The thresholds written are c_j / (l'_j + 1), what the caps hold.
- Nested WAIT: segments and q_k = min(p_k + η, 0.99) as in the cohort solver (η = 0 by default:
  with one segment per decode length Σ_k width_k Π p_r is then exactly E[l' + 1], the mean
  number of stages a request stays resident); n_k = n_1 Π_{r<k} q_r
  with n_1 = tl / Σ_k width_k Π q_r (the authors' rule). The resident cap tl comes from the types'
  own lengths by Little's law: a request stays l'_j + 1 stages, so tl = ⌈Σ_j λ_j (l'_j + 1) x / ρ⌉
  with x = d0 / (1 − L/ρ), repaired until the iteration with tl residents at their mean size
  serves Σ_j λ_j (l'_j + 1) / ρ stages per second.
- The prefill chunk is the prefill work of one fluid iteration, Σ_j n_j l_j (WAIT) or n_1 l
  (Nested), rounded up to whole 16-token blocks; None (whole prompts) when it is at least the
  longest prompt.
Memory (`thresholds.capped`): expected, worst case, and for Nested WAIT the theorem's M^π +
buffer; the chosen bound must fit C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fluid.numbers import check_number
from fluid.errors import InputError, UnstableWorkloadError
from fluid.workload import Workload
from thresholds.capped import MEMORY_BOUNDS, cap_of, littles_law_cap, nested_resident_cap, wait_class_caps
from thresholds.conditions import (
    Condition,
    at_most,
    nested_base_memory_tokens,
    wait_conditions,
)
from thresholds.policy import MemoryReport
from thresholds.wait import linear_time

MAX_REPAIR_STEPS = 10_000
CHUNK_BLOCK_TOKENS = 16
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True, slots=True)
class CappedWaitSolution:
    thresholds: tuple[float, ...]  # n_j = c_j / (l'_j + 1), per workload type
    caps: tuple[int, ...]
    iteration_time_s: float
    prefill_chunk_tokens: int | None
    memory: MemoryReport
    conditions: tuple[Condition, ...]
    slack: float


@dataclass(frozen=True, slots=True)
class CappedNestedSolution:
    bounds: tuple[tuple[int, int], ...]
    continue_probs: tuple[float, ...]
    thresholds: tuple[float, ...]  # n_k, with Σ_k width_k n_k = resident_cap
    thetas: tuple[float | None, ...]
    resident_cap: int
    prefill_tokens: int
    iteration_time_s: float
    prefill_chunk_tokens: int | None
    memory: MemoryReport
    base_memory_tokens: float  # M^π of the real thresholds
    buffer_tokens: float | None  # the theorem's buffer (None where a θ_k has no root)
    conditions: tuple[Condition, ...]
    slack: float
    num_segments: int | None


def check_memory_choice(bound: str, margin: float | None) -> None:
    if bound not in MEMORY_BOUNDS:
        raise InputError(f"memory bound must be one of {', '.join(MEMORY_BOUNDS)}, got {bound!r}", field="memory_bound")
    check_number(margin, "memory_margin", minimum=0, allow_none=True, what="memory margin")


def memory_report(bound: str, margin: float | None, expected: float, worst: float, theorem: float | None,
                  capacity: int) -> MemoryReport:
    """The chosen bound. For `expected` the margin defaults to 10 %, shrunk (never below 0) so that
    expected · (1 + margin) fits C when it can: near the memory limit the margin gives way first;
    the requirement never exceeds the worst case."""
    if margin is None:
        margin = DEFAULT_MARGIN
        if bound == "expected" and expected * (1 + margin) > capacity and expected > 0:
            margin = max(0.0, capacity / expected - 1)
    # the worst case is a guarantee: a margin above it buys nothing
    required = {"expected": min(expected * (1 + margin), worst), "worst": worst, "theorem": theorem}[bound]
    if required is None:
        raise UnstableWorkloadError("the theorem's buffer has no finite value here (a θ_k has no positive root: "
                                    "η = 0 makes n_(k+1) = p_k n_k); use --memory-bound expected or worst, or η > 0")
    return MemoryReport(bound, float(margin), float(expected), float(worst), theorem, float(required))


def mean_resident_kv_tokens(workload: Workload) -> float:
    """KV tokens of a resident request on average: a request of type j spends l'_j + 1 stages
    resident holding l_j + s tokens at stage s, so Σ_j λ_j (l'_j+1)(l_j + l'_j/2) / Σ_j λ_j (l'_j+1)."""
    num = sum(t.rate_per_s * (t.decode + 1) * (t.prefill + t.decode / 2) for t in workload.types)
    den = sum(t.rate_per_s * (t.decode + 1) for t in workload.types)
    return num / den


def resident_load(workload: Workload, time) -> tuple[float, float]:
    """(Λ·E[l' + 1], the step time one resident adds on average): resident stages entered per second,
    and d_kv times a resident's mean KV tokens plus d_new times the new tokens per resident stage,
    Σλ(l + l') / Σλ(l' + 1). Their product is the load factor L."""
    stages = sum(t.rate_per_s * (t.decode + 1) for t in workload.types)
    per_resident = (time.d_kv_s_per_token * mean_resident_kv_tokens(workload)
                    + time.d_new_s_per_token * sum(t.rate_per_s * (t.prefill + t.decode) for t in workload.types) / stages)
    return stages, per_resident


def _chunk(prefill_tokens_per_iteration: float, longest_prompt: int) -> int | None:
    blocks = max(1, math.ceil(prefill_tokens_per_iteration / CHUNK_BLOCK_TOKENS))
    chunk = blocks * CHUNK_BLOCK_TOKENS
    return None if chunk >= longest_prompt else chunk


def _stable_rho(workload: Workload, load: float, slack: float, what: str) -> float:
    rho = 1 - slack
    if load >= rho:
        raise UnstableWorkloadError(
            f"workload '{workload.name}': {what} load {load:.4g} is not below the target utilisation "
            f"ρ = 1 − slack = {rho:.4g}. Nearest feasible setting: --slack < {max(0.0, 1 - load):.4g}, or rate scale "
            f"< {rho / load:.4g}× at this slack."
        )
    return rho


def solve_wait_capped(workload: Workload, *, slack: float, memory_bound: str = "expected",
                      memory_margin: float | None = None, prefill_chunk_tokens: int | None = None) -> CappedWaitSolution:
    check_memory_choice(memory_bound, memory_margin)
    if memory_bound == "theorem":
        raise InputError("WAIT has no theorem buffer under the capped rule; choose --memory-bound expected or worst",
                         field="memory_bound")
    time = linear_time(workload)
    types = workload.types
    unit = [time.d_kv_s_per_token * (t.decode + 1) * (t.prefill + t.decode / 2)
            + time.d_new_s_per_token * (t.prefill + t.decode) for t in types]
    load = sum(t.rate_per_s * u for t, u in zip(types, unit))
    rho = _stable_rho(workload, load, slack, "the")
    x = time.d0_s / (1 - load / rho)
    for _ in range(MAX_REPAIR_STEPS):
        caps = wait_class_caps([(t.decode, t.rate_per_s * x / rho) for t in types])
        n = tuple(c / (t.decode + 1) for c, t in zip(caps, types))
        dt = time.d0_s + sum(k * u for k, u in zip(n, unit))
        if all(dt <= rho * k / t.rate_per_s * (1 + 1e-12) for k, t in zip(n, types)):  # every λ_j > 0 (RequestType)
            break
        x = max(dt, x * (1 + 1e-12))
    else:
        raise UnstableWorkloadError(f"capped WAIT caps did not settle in {MAX_REPAIR_STEPS} steps (workload '{workload.name}')")
    shapes = [(t.prefill, t.decode, c) for t, c in zip(types, caps)]
    # expected: the real thresholds at the design rates λ/ρ, spread evenly over the stages (M* at λ/ρ);
    # the rounded-up caps are the headroom above it, the worst case their full length
    x0 = time.d0_s / (1 - load / rho)
    expected = sum(t.rate_per_s * x0 / rho * (t.decode + 1) * (t.prefill + t.decode / 2) for t in types)
    worst = sum(c * (l + lp) for l, lp, c in shapes)
    memory = memory_report(memory_bound, memory_margin, expected, worst, None, workload.kv_capacity_tokens)
    from fluid.equilibrium import closed_form

    star = closed_form(workload).memory_star_tokens
    conds = wait_conditions(time, [(t.name, t.prefill, t.decode, t.rate_per_s, k) for t, k in zip(types, n)],
                            workload.kv_capacity_tokens, star)
    conds = tuple(at_most(c.name, memory.required_tokens, c.rhs) if c.name == "memory_within_capacity" else c for c in conds)
    chunk = prefill_chunk_tokens if prefill_chunk_tokens is not None else \
        _chunk(sum(t.rate_per_s * x / rho * t.prefill for t in types), max(t.prefill for t in types))
    return _holding(workload, CappedWaitSolution(n, caps, dt, chunk, memory, conds, slack))


def solve_nested_capped(workload: Workload, options, num_segments: int | None = None) -> CappedNestedSolution:
    """Capped Nested WAIT at `options` (a `thresholds.nested.NestedOptions`, representative prefill)."""
    from thresholds.nested import _layout, _unit_ratios, instance_specs, solve_theta
    from thresholds.conditions import buffer_log_term, nested_buffer_tokens

    check_memory_choice(options.memory_bound, options.memory_margin)
    if options.prefill_mode != "representative":
        raise InputError("the capped rule serves one resident cap: use --prefill representative", field="prefill")
    spec = instance_specs(workload, "representative")[0]
    rule = "types" if num_segments is None else options.segment_rule
    bounds, probs, ratios = _layout(spec, rule, num_segments, options.eta)
    unit = _unit_ratios(ratios)
    widths = [b - a + 1 for a, b in bounds]
    per_n1 = sum(w * u for w, u in zip(widths, unit))
    time = linear_time(workload)
    l = spec.prefill_tokens
    total = workload.total_rate_per_s
    # the resident cap follows from the types' own lengths (Little's law), not from the representative
    # prefill: where long outputs come with long prompts the representative instance undersizes it
    stages, per_resident = resident_load(workload, time)
    load = stages * per_resident  # = the load factor L
    rho = _stable_rho(workload, load, options.slack, "the")

    try:
        cap, dt = littles_law_cap(stages, per_resident, time.d0_s, rho, max_steps=MAX_REPAIR_STEPS)
    except ArithmeticError:
        raise UnstableWorkloadError(f"capped Nested WAIT cap did not settle in {MAX_REPAIR_STEPS} steps (workload '{workload.name}')") from None
    n1 = cap / per_n1
    n = tuple(n1 * u for u in unit)
    assert nested_resident_cap([(a, b, k) for (a, b), k in zip(bounds, n)]) == cap
    base = nested_base_memory_tokens(l, bounds, n)
    try:
        thetas = (None,) + tuple(solve_theta(n[k - 1], n[k], probs[k - 1]) for k in range(1, len(n)))
        iterations = options.horizon_s / dt
        buffer = nested_buffer_tokens(l, bounds, n, thetas, buffer_log_term(len(n), iterations, options.delta, options.zeta))
    except InputError:  # η = 0: n_(k+1) = p_k n_k, the bound has no root
        thetas, buffer = (None,) * len(n), None
    expected = stages * (time.d0_s / (1 - load / rho)) / rho * mean_resident_kv_tokens(workload)  # M* at λ/ρ
    worst = cap * max(t.prefill + t.decode for t in workload.types)
    memory = memory_report(options.memory_bound, options.memory_margin, expected, worst,
                           None if buffer is None else base + buffer, workload.kv_capacity_tokens)
    # no ratio conditions: the capped rule gates admission only, never a segment
    conds = [at_most("iteration_time", dt, cap / stages)]  # full caps serve Σ_j λ_j (l'_j + 1) stages/s
    conds.append(at_most("memory_within_capacity", memory.required_tokens, workload.kv_capacity_tokens))
    chunk = options.prefill_chunk_tokens if options.prefill_chunk_tokens is not None else \
        _chunk(n1 * l, max(t.prefill for t in workload.types))
    return CappedNestedSolution(tuple(bounds), tuple(probs), n, thetas, cap, l, dt, chunk, memory, base, buffer,
                                tuple(conds), options.slack, num_segments)


def solve_nested_capped_auto(workload: Workload, options) -> CappedNestedSolution:
    """`--segments auto` tries L ∈ {1, 2, 3, 4, 5, 10, 20} and keeps the smallest memory requirement
    whose conditions hold (the smallest resident cap: q_k over-provisions less with more segments);
    a number L or "types" (None) solves that segmentation alone."""
    from thresholds.nested import AUTO_SEGMENT_COUNTS, instance_specs

    if options.segments != "auto":
        return _holding(workload, solve_nested_capped(workload, options, options.segments))
    distinct = len(instance_specs(workload, "representative")[0].distribution.lengths)
    errors, good = [], []
    for count in [c for c in AUTO_SEGMENT_COUNTS if c <= distinct] or [distinct]:
        try:
            sol = solve_nested_capped(workload, options, count)
        except UnstableWorkloadError as err:
            errors.append(f"L={count}: {err}")
            continue
        if all(c.holds for c in sol.conditions):
            good.append(sol)
        else:
            errors.append(f"L={count}: breaks " + ", ".join(c.name for c in sol.conditions if not c.holds))
    if not good:
        raise UnstableWorkloadError(f"workload '{workload.name}': no segment count gives a capped Nested WAIT policy "
                                    f"({'; '.join(e[:200] for e in errors)})")
    return min(good, key=lambda s: (s.memory.required_tokens, s.num_segments))


def _holding(workload: Workload, sol):
    broken = [c for c in sol.conditions if not c.holds]
    if broken:
        what = "; ".join(f"{c.name}: {c.lhs:.6g} vs {c.rhs:.6g}" for c in broken)
        raise UnstableWorkloadError(f"workload '{workload.name}': the capped thresholds break {what}. Nearest feasible "
                                    f"setting: a lower rate (--rate-scale), a larger C, --memory-bound expected, or "
                                    f"a smaller --eta")
    return sol


def verify_capped(policy, workload: Workload) -> tuple[Condition, ...]:
    """The capped policy's conditions against `workload` (`fluidsched check POLICY WORKLOAD`):
    its caps must serve the workload's rates, and the chosen memory must fit the workload's C."""
    from fluid.equilibrium import closed_form
    from thresholds.policy import WaitPolicy

    time = linear_time(workload)
    required = policy.capped.memory.required_tokens
    if isinstance(policy, WaitPolicy):
        by_name = {t.name: t for t in workload.types}
        classes = [(c.name, c.prefill, c.decode, by_name[c.name].rate_per_s if c.name in by_name else c.rate_per_s,
                    c.threshold) for c in policy.classes]
        conds = wait_conditions(time, classes, workload.kv_capacity_tokens, closed_form(workload).memory_star_tokens)
        return tuple(at_most(c.name, required, c.rhs) if c.name == "memory_within_capacity" else c for c in conds)
    cap = nested_resident_cap([(s.first_stage, s.last_stage, s.threshold) for s in policy.segments])
    stages, per_resident = resident_load(workload, time)
    return (at_most("iteration_time", time.d0_s + cap * per_resident, cap / stages),
            at_most("memory_within_capacity", required, workload.kv_capacity_tokens))
