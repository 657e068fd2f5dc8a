"""Adaptive caps: the capped rule's caps re-solved from measured rates (docs/adaptive.md).

arXiv 2504.11320 solves WAIT thresholds for known, constant rates. Under drifting load the
runtime (`runtime/adaptive.py`) estimates the rates from the arrivals it has seen and asks this
module, every `period_s`, for the caps `fluidsched solve --service-rule capped` would write at
those rates: the same closed form, the same integer repair and the same memory rule, standard
library only (the GPU machine runs it without scipy).

- WAIT: `resolve_wait_caps` re-runs `solve_wait_capped` on the policy's classes at the estimated
  per-class rates.
- Nested WAIT: the output lengths are unknown, so the per-request quantities (mean stages a
  request stays resident, its mean KV, its new tokens) are estimated from the requests that
  finished in the window; `resolve_nested_cap` applies the solver's Little's-law cap to them.
When the estimated traffic is beyond what fits (load ≥ ρ, or the memory bound above C), both
return the caps of the largest common scale of the estimated rates that fits: the policy never
asks for more memory than C, whatever the estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fluid.numbers import check_number
from fluid.errors import InputError, UnstableWorkloadError
from fluid.workload import RequestType, Workload
from thresholds.capped import MEMORY_BOUNDS, littles_law_cap

SCALE_BISECTION_STEPS = 20


def upper_rate(estimate_per_s: float, settings: "AdaptiveSettings") -> float:
    """The rate the caps are solved for: λ̂ (1 + headroom) plus one Poisson standard error."""
    return estimate_per_s * (1 + settings.headroom) + math.sqrt(max(estimate_per_s, 0.0) / settings.window_s)


def _number(value, field: str, *, minimum: float, strict: bool = False, integer: bool = False, **bounds):
    return check_number(value, f"adaptive.{field}", integer=integer, minimum=minimum, strict_minimum=strict, **bounds)


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    """How the runtime re-solves caps online. Times in seconds of the run's clock.

    `window_s`: rates are counted over the last window (until it has filled, the solved rates
    fill the rest of it); `period_s`: caps are re-solved once per period; `backlog_wait_s`: a
    backlog is a class whose cap is binding while its oldest waiting request has waited at least
    this long; then the caps are re-solved at once (growth only between periods, at most once per
    `backlog_wait_s`) for the largest rate the rules allow; `hysteresis`:
    a new cap is applied only when it differs from the current one by at least this fraction —
    at once when it grows, after two consecutive periods when it shrinks (growth is urgent, a
    shrink is not); `min_rate_scale`, `max_rate_scale`: each estimated rate is clipped to this
    range times the rate the policy was solved for; `min_completions`: Nested WAIT keeps the
    solved per-request lengths until this many requests finished in the window; `headroom`: caps
    are solved for the upper edge of the estimate, λ̂ (1 + headroom) + √(λ̂ / window_s) (one
    Poisson standard error), since caps sized exactly to the rate queue like a server at ρ = 1;
    `max_capacity_fraction`: the rates solved for are at most this fraction of the capacity scale
    θ* of the estimated mix — near capacity the caps grow without bound (ΔT* = d0 / (1 − L)) and
    would fill C with a batch that is slower than the fluid point's; `memory_margin`: the margin
    the re-solve holds on the expected memory bound — None (what `solve` writes unless given
    `--memory-margin`) is `solve`'s own default rule, 10 % that gives way (never below 0) so that
    the caps fit C, a number holds exactly that margin (what `solve --memory-margin M` writes).
    """

    window_s: float = 60.0
    period_s: float = 5.0
    hysteresis: float = 0.05
    min_rate_scale: float = 0.05
    max_rate_scale: float = 20.0
    min_completions: int = 50
    headroom: float = 0.25
    max_capacity_fraction: float = 0.95
    backlog_wait_s: float = 0.25
    memory_margin: float | None = None

    def __post_init__(self) -> None:
        _number(self.window_s, "window_s", minimum=0, strict=True)
        _number(self.period_s, "period_s", minimum=0, strict=True)
        _number(self.hysteresis, "hysteresis", minimum=0)
        _number(self.min_rate_scale, "min_rate_scale", minimum=0, strict=True)
        _number(self.max_rate_scale, "max_rate_scale", minimum=0, strict=True)
        _number(self.min_completions, "min_completions", minimum=1, integer=True)
        _number(self.headroom, "headroom", minimum=0)
        _number(self.max_capacity_fraction, "max_capacity_fraction", minimum=0, strict=True, maximum=1,
                strict_maximum=True, hint=" (caps explode at capacity)")
        _number(self.backlog_wait_s, "backlog_wait_s", minimum=0, strict=True)
        check_number(self.memory_margin, "adaptive.memory_margin", minimum=0, allow_none=True, what="memory margin")
        if self.max_rate_scale < self.min_rate_scale:
            raise InputError(f"max_rate_scale {self.max_rate_scale!r} is below min_rate_scale {self.min_rate_scale!r}",
                             field="adaptive.max_rate_scale")

    def to_dict(self) -> dict:
        return {"window_s": self.window_s, "period_s": self.period_s, "hysteresis": self.hysteresis,
                "min_rate_scale": self.min_rate_scale, "max_rate_scale": self.max_rate_scale,
                "min_completions": self.min_completions, "headroom": self.headroom,
                "max_capacity_fraction": self.max_capacity_fraction, "backlog_wait_s": self.backlog_wait_s,
                "memory_margin": self.memory_margin}

    @classmethod
    def from_dict(cls, data) -> "AdaptiveSettings":
        if not isinstance(data, dict):
            raise InputError(f"must be a mapping of {', '.join(cls.__dataclass_fields__)}, got {data!r:.80}", field="adaptive")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown key(s) {unknown}; the keys are {', '.join(cls.__dataclass_fields__)}", field="adaptive")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class SolveRule:
    """What `solve` chose and the policy records: slack, the memory bound and its margin, C, batch time."""

    slack: float
    memory_bound: str
    memory_margin: float | None
    kv_capacity_tokens: int
    batch_time: object  # a fluid.batch_time model
    max_capacity_fraction: float = 0.95  # AdaptiveSettings.max_capacity_fraction

    def __post_init__(self) -> None:
        if self.memory_bound not in MEMORY_BOUNDS:
            raise InputError(f"memory bound must be one of {', '.join(MEMORY_BOUNDS)}, got {self.memory_bound!r}",
                             field="memory_bound")


def prefill_chunk_for(prefill_tokens_per_step: float, policy_chunk: int | None) -> int | None:
    """The prefill chunk to run with caps that admit `prefill_tokens_per_step` prompt tokens per
    step at the fluid point: `solve`'s rule (one request's chunk carries a whole step's prefill,
    rounded up to blocks, `thresholds.capped_solve._chunk`), never below the policy's own chunk.
    None (whole prompts) when the policy runs whole prompts. Why it follows the caps: a chunk sized
    for the mean rate spreads a prompt over more steps than the traffic at the peak leaves time
    for, so prompts queue in prefill behind caps that are large enough (docs/adaptive.md). Why
    never below the policy's: a smaller chunk only lengthens time to first token; the policy's is
    the per-step prefill its user accepted."""
    from thresholds.capped_solve import _chunk

    if policy_chunk is None:
        return None
    solved = _chunk(max(prefill_tokens_per_step, 0.0), 2**62)  # no longest-prompt cut: a chunk past every prompt is the same
    return max(policy_chunk, solved)


def _largest_fitting_scale(solve, what: str, start: float = 1.0):
    """solve(start), or else solve(s) at the largest s in (0, start) that solves (bisection)."""
    try:
        return solve(start), start
    except UnstableWorkloadError:
        pass
    lo, hi, best = 0.0, start, None
    for _ in range(SCALE_BISECTION_STEPS):
        mid = (lo + hi) / 2
        try:
            best = solve(mid), mid
            lo = mid
        except UnstableWorkloadError:
            hi = mid
    if best is None:
        raise UnstableWorkloadError(f"{what}: no scale of the estimated rates down to {hi:.2g} gives caps that fit")
    return best


def resolve_wait_caps(classes, rates_per_s: dict[str, float], rule: SolveRule) -> tuple[dict[str, int], float]:
    """Caps c_j of `solve_wait_capped` at `rates_per_s` ({class: λ̂_j}); classes are (name, l_j, l'_j).

    Returns (caps by class, the scale of the estimate they were solved at: 1, or below 1 when the
    estimate is beyond `max_capacity_fraction` of capacity or does not fit)."""
    from thresholds.capped_solve import solve_wait_capped

    from fluid.equilibrium import closed_form

    def workload_at(scale: float) -> Workload:
        types = tuple(RequestType(name, prefill, decode, rates_per_s[name] * scale) for name, prefill, decode in classes)
        return Workload("adaptive", rule.kv_capacity_tokens, rule.batch_time, types)

    def solve(scale: float):
        sol = solve_wait_capped(workload_at(scale), slack=rule.slack, memory_bound=rule.memory_bound,
                                memory_margin=rule.memory_margin)
        return {name: cap for (name, _, _), cap in zip(classes, sol.caps)}

    # the capacity at this slack: the fluid capacity θ* (memory and load at ρ = 1), and ρ / L for the load
    point = closed_form(workload_at(1.0))
    capacity = min(point.capacity_scale, (1 - rule.slack) / point.load_factor) if point.load_factor > 0 else 1.0
    start = min(1.0, rule.max_capacity_fraction * capacity)
    return _largest_fitting_scale(solve, "adaptive WAIT", start)


@dataclass(frozen=True, slots=True)
class RequestShape:
    """Per-request means of the traffic, weighted as the cap needs them (docs/adaptive.md)."""

    stages: float  # E[l' + 1]: steps a request stays resident
    resident_kv_tokens: float  # KV of a resident request on average over its stages
    new_tokens_per_stage: float  # E[l + l'] / E[l' + 1]

    @classmethod
    def of_lengths(cls, lengths) -> "RequestShape":
        """From (prompt, output) pairs, each counted once (a sample of finished requests)."""
        stages = kv = new = 0.0
        count = 0
        for prompt, output in lengths:
            stages += output + 1
            kv += (output + 1) * (prompt + output / 2)
            new += prompt + output
            count += 1
        if count == 0:
            raise InputError("no request lengths to estimate from", field="lengths")
        return cls(stages / count, kv / stages, new / stages)


def resolve_nested_cap(total_rate_per_s: float, shape: RequestShape, rule: SolveRule,
                       longest_request_tokens: int) -> tuple[int, float]:
    """The capped Nested WAIT resident cap at total rate Λ̂ and per-request `shape`; (cap, scale).
    `longest_request_tokens` (l + l' of the longest request) prices the worst-case bound."""
    from thresholds.capped_solve import memory_report

    if rule.memory_bound == "theorem":
        raise InputError("the adaptive mode re-solves the expected or worst-case memory bound, not the theorem's "
                         "buffer: solve with --memory-bound expected or worst", field="memory_bound")

    d0, d_kv, d_new = rule.batch_time.linear_coefficients()
    per_resident = d_kv * shape.resident_kv_tokens + d_new * shape.new_tokens_per_stage
    rho = 1 - rule.slack

    def solve(scale: float) -> int:
        stages_per_s = total_rate_per_s * scale * shape.stages
        if stages_per_s * per_resident >= rho:
            raise UnstableWorkloadError(f"load {stages_per_s * per_resident:.4g} ≥ ρ = {rho:.4g}")
        cap, _ = littles_law_cap(stages_per_s, per_resident, d0, rho)
        # as `solve`: expected memory is M* at λ/ρ, the worst case every resident at full length
        expected = stages_per_s * (d0 / (1 - stages_per_s * per_resident / rho)) / rho * shape.resident_kv_tokens
        memory = memory_report(rule.memory_bound, rule.memory_margin, expected, cap * longest_request_tokens, None,
                               rule.kv_capacity_tokens)
        if memory.required_tokens > rule.kv_capacity_tokens:
            raise UnstableWorkloadError(f"memory {memory.required_tokens:.6g} > C = {rule.kv_capacity_tokens}")
        return cap

    load = total_rate_per_s * shape.stages * per_resident  # the load factor of the estimate
    start = min(1.0, rule.max_capacity_fraction * rho / load) if load > 0 else 1.0
    return _largest_fitting_scale(solve, "adaptive Nested WAIT", start)
