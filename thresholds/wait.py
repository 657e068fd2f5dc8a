"""WAIT thresholds for known output lengths (arXiv 2504.11320, §WAIT).

Two ways to set the per-type integer thresholds n_j:

* `solve_wait` (mode "fluid"): the fluid point n_j = λ_j ΔT*, computed at inflated rates λ/ρ for
  a target utilisation ρ = 1 − slack (strict slack gives O(1) latency), rounded up. Rounding all
  n_j up raises ΔT(n) too, so the result is checked and, if needed, repaired by the fixed-point
  iteration x ← ΔT(n(x)) with n_j(x) = ⌈λ_j x / ρ⌉. Every feasible common iteration time is ≥ each
  iterate (ΔT is increasing in n and n(x) is the least vector with min_j ρ n_j/λ_j ≥ x), so the
  first iterate that satisfies the conditions is the least-memory setting of this family. If its
  memory exceeds C, no member fits: a typed error names the gap and the nearest feasible setting.
* `solve_wait_batch_cap` (mode "batch_cap"): the authors' experimental recipe
  n_j = B ρ_j / (l'_j + 1), ρ_j = λ_j / Σλ, rounded. Its conditions are checked, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fluid.equilibrium import FluidPoint, closed_form
from fluid.numbers import check_number
from fluid.errors import UnstableWorkloadError
from fluid.workload import Workload
from thresholds.conditions import Condition, LinearTime, wait_conditions, wait_iteration_time_s, wait_memory_tokens

MAX_REPAIR_STEPS = 100_000


@dataclass(frozen=True, slots=True)
class WaitSolution:
    """Integer WAIT thresholds (one per workload type, in the workload's order) and their checks."""

    mode: str  # "fluid" or "batch_cap"
    thresholds: tuple[int, ...]
    iteration_time_s: float  # ΔT(n)
    memory_policy_tokens: float  # M^π = Σ n_j a_j
    conditions: tuple[Condition, ...]
    slack: float
    batch_cap: int | None = None

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.conditions)


def linear_time(workload: Workload) -> LinearTime:
    return LinearTime(*workload.batch_time.linear_coefficients())


def check_slack(slack: float) -> float:
    check_number(slack, "slack", minimum=0, maximum=1, strict_maximum=True, what="slack",
                 hint=" (target utilisation ρ = 1 − slack)")
    return float(slack)


def require_fluid_stable(workload: Workload, point: FluidPoint) -> None:
    """Raise UnstableWorkloadError as the fluid command does: which condition fails, by how much."""
    if point.load_factor >= 1:
        raise UnstableWorkloadError(
            f"workload '{workload.name}' is unstable: load factor L = {point.load_factor:.4g} ≥ 1, so latency "
            f"grows without bound under every policy. Nearest feasible setting: scale rates below "
            f"{1 / point.load_factor:.4g}× (--rate-scale) or use a faster batch-time model."
        )
    if point.memory_star_tokens > point.kv_capacity_tokens:
        need = point.memory_star_tokens
        raise UnstableWorkloadError(
            f"workload '{workload.name}' is over memory: the fluid point needs M* = {need:.6g} KV tokens, above "
            f"C = {point.kv_capacity_tokens} by {need - point.kv_capacity_tokens:.6g}. Nearest feasible setting: "
            f"rate scale ≤ {point.capacity_scale:.4g} at this C (--rate-scale), or C ≥ {math.ceil(need)} tokens."
        )


def _classes(workload: Workload, thresholds: tuple[int, ...]):
    return [(t.name, t.prefill, t.decode, t.rate_per_s, n) for t, n in zip(workload.types, thresholds)]


def _shapes(workload: Workload, thresholds: tuple[int, ...]):
    return [(t.prefill, t.decode, n) for t, n in zip(workload.types, thresholds)]


def _solution(workload: Workload, point: FluidPoint, mode: str, n: tuple[int, ...], slack: float, cap=None):
    time = linear_time(workload)
    conds = wait_conditions(time, _classes(workload, n), workload.kv_capacity_tokens, point.memory_star_tokens)
    shapes = _shapes(workload, n)
    return WaitSolution(mode, n, wait_iteration_time_s(time, shapes), wait_memory_tokens(shapes), conds, slack, cap)


def _least_feasible(workload: Workload, rho: float, memory_limit: float) -> tuple[int, ...] | None:
    """The least integer thresholds with ΔT(n) ≤ ρ n_j/λ_j for all j and M^π ≤ memory_limit, or None."""
    time = linear_time(workload)
    point = closed_form(workload.scaled(1 / rho)) if rho < 1 else closed_form(workload)
    x = point.iteration_time_star_s
    inflated = [t.rate_per_s / rho for t in workload.types]
    for _ in range(MAX_REPAIR_STEPS):
        n = tuple(max(1, math.ceil(r * x * (1 - 1e-12))) for r in inflated)
        shapes = _shapes(workload, n)
        if wait_memory_tokens(shapes) > memory_limit:
            return None
        needed = wait_iteration_time_s(time, shapes)
        if needed <= min(k / r for k, r in zip(n, inflated)) * (1 + 1e-12):
            return n
        x = max(needed, x)
    raise UnstableWorkloadError(f"WAIT rounding did not settle in {MAX_REPAIR_STEPS} steps (workload '{workload.name}')")


def solve_wait(workload: Workload, *, slack: float = 0.05) -> WaitSolution:
    """Least-memory integer WAIT thresholds at target utilisation ρ = 1 − slack (mode "fluid")."""
    slack = check_slack(slack)
    rho = 1 - slack
    point = closed_form(workload)
    require_fluid_stable(workload, point)
    if point.load_factor >= rho:
        raise UnstableWorkloadError(
            f"workload '{workload.name}': load factor L = {point.load_factor:.4g} is not below the target "
            f"utilisation ρ = 1 − slack = {rho:.4g}. Nearest feasible setting: --slack < {1 - point.load_factor:.4g}, "
            f"or rate scale < {rho / point.load_factor:.4g}× at this slack."
        )
    n = _least_feasible(workload, rho, workload.kv_capacity_tokens)
    if n is None:
        raise UnstableWorkloadError(_memory_diagnosis(workload, rho))
    return _solution(workload, point, "fluid", n, slack)


def _memory_diagnosis(workload: Workload, rho: float) -> str:
    cap = workload.kv_capacity_tokens
    n = _least_feasible(workload, rho, math.inf)
    need = wait_memory_tokens(_shapes(workload, n))
    lo, hi = 0.0, 1.0
    for _ in range(40):  # max rate scale whose thresholds fit in C (monotone up to rounding)
        mid = (lo + hi) / 2
        if closed_form(workload.scaled(mid)).load_factor < rho and _least_feasible(workload.scaled(mid), rho, cap):
            lo = mid
        else:
            hi = mid
    hint = f"; a smaller --slack also needs less memory" if rho < 1 else ""
    floor = wait_memory_tokens(_shapes(workload, tuple(1 for _ in workload.types)))
    scale = (f"no rate scale helps (one prompt per stage of every type, n_j = 1, already needs "
             f"Σ a_j = {floor:.6g} tokens)" if floor > cap else f"rate scale ≤ {lo:.4g} at this C (--rate-scale)")
    return (
        f"workload '{workload.name}': no integer WAIT thresholds fit in memory at target utilisation "
        f"ρ = {rho:.4g}: the least feasible thresholds {list(n)} need M^π = {need:.6g} KV tokens, above "
        f"C = {cap} by {need - cap:.6g} ({(need - cap) / cap:.2%}). Nearest feasible setting: {scale}, "
        f"or C ≥ {math.ceil(need)} tokens{hint}."
    )


def solve_wait_batch_cap(workload: Workload, batch_cap: int, *, slack: float = 0.0) -> WaitSolution:
    """The recipe n_j = round(B ρ_j / (l'_j + 1)) (at least 1); conditions reported, not assumed."""
    check_number(batch_cap, "batch_cap", integer=True, minimum=1, unit="number of prompts", what="batch cap")
    total = workload.total_rate_per_s
    n = tuple(max(1, round(batch_cap * (t.rate_per_s / total) / (t.decode + 1))) for t in workload.types)
    return _solution(workload, closed_form(workload), "batch_cap", n, check_slack(slack), batch_cap)
