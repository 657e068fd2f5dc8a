"""Nested WAIT thresholds for unknown output lengths (arXiv 2504.11320, §Nested WAIT).

Per instance (one representative prefill length l, or one per prefill class):
1. segments from breakpoints on the output-length distribution (`thresholds.segments`), and
   continuation probabilities p_k;
2. threshold ratios q_k = min(p_k + η, 0.99) and integers n_1 ≥ n_2 ≥ … with n_{k+1}/n_k > p_k;
3. n_1 either from a total cap B (Σ_k width_k·n_k = B, the authors' recipe: conditions reported,
   not assumed) or from the fluid point: the least n_1 ≥ Σλ·ΔT*_ρ for which
   ΔT(n) ≤ ρ·n_1/Σλ holds with ρ = 1 − slack. The thresholds hold more prompts than the fluid point
   (q_k > p_k), so ΔT(n) > ΔT* and n_1 = Σλ·ΔT* alone would break the condition; the iteration
   x ← ΔT(n(x)), n_1(x) = ⌊Σλ·x/ρ⌋ + 1, finds the least one (every feasible x is ≥ each iterate);
4. base memory M^π = Σ_k n_k Σ_{s∈k}(l + s), θ_k the positive root of
   f(θ) = −θ n_k + n_{k−1} log(1 − p_{k−1} + p_{k−1} e^θ) = 0 (scipy brentq on [argmin f, ·]),
   and the buffer Σ_{k≥2} (l + l'_{k−1})(n_k + θ_k^{-1} ln(m ζ B / δ)), with B = horizon / ΔT(n)
   iterations and ζ = 1 (the instance is taken at its own scale: rates and times as given).
Instances share the iteration: ΔT(n) sums every instance's KV and new tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy.optimize import brentq

from fluid.equilibrium import closed_form
from fluid.numbers import check_number
from fluid.errors import InputError, UnstableWorkloadError
from fluid.workload import Workload
from thresholds.conditions import (
    Condition,
    at_most,
    buffer_log_term,
    nested_base_memory_tokens,
    nested_buffer_tokens,
    nested_new_tokens,
    nested_ratio_conditions,
    segment_kv_tokens,
    segment_new_tokens,
    strictly_below,
    theta_residual,
)
from thresholds.segments import LengthDistribution, breakpoints, continue_probs, q_recipe, round_thresholds, segment_bounds
from thresholds.wait import check_slack, linear_time, require_fluid_stable

AUTO_SEGMENT_COUNTS = (1, 2, 3, 4, 5, 10, 20)
PREFILL_MODES = ("representative", "per_class")
MAX_REPAIR_STEPS = 100_000
BLOWUP_FACTOR = 1e3  # ΔT(n) beyond this multiple of its real-valued estimate: rounding diverges


@dataclass(frozen=True, slots=True)
class NestedOptions:
    segments: int | str | None = None  # None: one per distinct decode length; int L; "auto"
    segment_rule: str = "equal-width"  # for an integer L: "equal-width" or "quantile"
    slack: float = 0.05
    eta: float = 0.05
    delta: float = 0.01
    horizon_s: float = 3600.0
    batch_cap: int | None = None
    prefill_mode: str = "representative"
    zeta: float = 1.0
    # the capped rule (thresholds/capped_solve.py)
    memory_bound: str = "expected"
    memory_margin: float | None = None  # None: the stated default (thresholds.capped_solve.memory_report)
    prefill_chunk_tokens: int | None = None  # None: derived from the fluid point

    def __post_init__(self) -> None:
        check_slack(self.slack)
        s = self.segments
        if s is not None and s != "auto":  # None: one segment per distinct decode length
            check_number(s, "segments", integer=True, minimum=1, what="segments", also="or 'auto'")
        if self.segment_rule not in ("equal-width", "quantile"):
            raise InputError(f"segment rule must be 'equal-width' or 'quantile', got {self.segment_rule!r}", field="segment_rule")
        check_number(self.eta, "eta", minimum=0, maximum=1, strict_maximum=True)  # η = 0 allowed (as before)
        check_number(self.delta, "delta", minimum=0, strict_minimum=True, maximum=1, strict_maximum=True)
        check_number(self.horizon_s, "horizon_s", minimum=0, strict_minimum=True, unit="of seconds", what="horizon")
        check_number(self.batch_cap, "batch_cap", integer=True, minimum=1, allow_none=True, what="batch cap")
        if self.memory_bound not in ("expected", "worst", "theorem"):
            raise InputError(f"memory bound must be expected, worst or theorem, got {self.memory_bound!r}", field="memory_bound")
        if self.prefill_mode not in PREFILL_MODES:
            raise InputError(f"prefill mode must be one of {PREFILL_MODES}, got {self.prefill_mode!r}", field="prefill_mode")


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """The traffic one Nested WAIT instance serves: a prefill length and a decode distribution."""

    prefill_tokens: int
    type_names: tuple[str, ...]
    distribution: LengthDistribution

    @property
    def rate_per_s(self) -> float:
        return self.distribution.total_rate_per_s


@dataclass(frozen=True, slots=True)
class InstanceSolution:
    spec: InstanceSpec
    bounds: tuple[tuple[int, int], ...]  # (first_stage, last_stage) per segment
    continue_probs: tuple[float, ...]
    thresholds: tuple[int, ...]
    thetas: tuple[float | None, ...]  # None for segment 1 and where n_k = n_{k−1}
    memory_policy_tokens: float
    buffer_tokens: float
    counts_buffer: bool = False  # the theorem mode: the buffer must fit C too

    @property
    def memory_required_tokens(self) -> float:
        """M^π, plus the buffer in the theorem mode (`--memory-bound theorem`)."""
        return self.memory_policy_tokens + (self.buffer_tokens if self.counts_buffer else 0.0)


@dataclass(frozen=True, slots=True)
class NestedSolution:
    mode: str  # "fluid" or "batch_cap"
    options: NestedOptions
    num_segments_requested: int | None
    instances: tuple[InstanceSolution, ...]
    iteration_time_s: float
    iterations_in_horizon: float
    conditions: tuple[Condition, ...]
    curve: tuple[dict, ...] | None = field(default=None)

    @property
    def memory_policy_tokens(self) -> float:
        return sum(i.memory_policy_tokens for i in self.instances)

    @property
    def buffer_tokens(self) -> float:
        return sum(i.buffer_tokens for i in self.instances)

    @property
    def memory_required_tokens(self) -> float:
        return sum(i.memory_required_tokens for i in self.instances)

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.conditions)


# ---- θ_k -------------------------------------------------------------------------------------

def solve_theta(n_prev: int, n_next: int, p_prev: float) -> float | None:
    """Positive root of f(θ) = −θ n_k + n_{k−1} log(1 − p + p e^θ); None if none exists (n_k ≥ n_{k−1}).

    f(0) = 0, f is convex and f'(0) = p n_{k−1} − n_k < 0 (the ratio condition), so f has its
    minimum at θ_min = log(n_k (1 − p) / (p (n_{k−1} − n_k))) > 0 and one root beyond it.
    """
    if not n_next > p_prev * n_prev:
        raise InputError(f"θ needs n_k > p·n_(k−1), got n_k={n_next}, n_(k−1)={n_prev}, p={p_prev}", field="segments")
    if n_next >= n_prev or p_prev <= 0:
        return None
    lo = math.log(n_next * (1 - p_prev) / (p_prev * (n_prev - n_next)))
    if not lo > 0:  # n_k / n_(k−1) equals p to rounding: as above, no positive root
        raise InputError(f"θ needs n_k > p·n_(k−1), got n_k={n_next}, n_(k−1)={n_prev}, p={p_prev}", field="segments")
    if theta_residual(lo, n_prev, n_next, p_prev) >= 0:
        # f dips below 0 by less than its rounding error (n_k a hair above p·n_(k−1), large n): to
        # O(θ³), f = f'(0)θ + f''(0)θ²/2, whose root is twice its minimum
        return 2 * lo
    hi = max(2 * lo, 1.0)
    while theta_residual(hi, n_prev, n_next, p_prev) <= 0:
        hi *= 2
    return brentq(theta_residual, lo, hi, args=(n_prev, n_next, p_prev), xtol=1e-300, rtol=8.9e-16, maxiter=500)


# ---- instances -------------------------------------------------------------------------------

def instance_memory_tokens(prefill: int, bounds, n, probs, iterations: float, delta: float,
                           zeta: float) -> tuple[tuple[float | None, ...], float, float]:
    """One instance's θ_k (None for the first segment), base memory and buffer, in tokens.

    `n` are its thresholds n_k, `probs` its continuation probabilities p_k (the last is not read).
    """
    thetas = (None,) + tuple(solve_theta(n[k - 1], n[k], probs[k - 1]) for k in range(1, len(n)))
    log_term = buffer_log_term(len(n), iterations, delta, zeta)
    base = nested_base_memory_tokens(prefill, bounds, n)
    return thetas, base, nested_buffer_tokens(prefill, bounds, n, thetas, log_term)


def instance_specs(workload: Workload, prefill_mode: str) -> tuple[InstanceSpec, ...]:
    types = workload.types
    if prefill_mode == "representative":
        total = workload.total_rate_per_s
        prefill = max(1, round(sum(t.rate_per_s * t.prefill for t in types) / total))
        groups = {prefill: list(types)}
    else:
        groups: dict[int, list] = {}
        for t in types:
            groups.setdefault(t.prefill, []).append(t)
    specs = [
        InstanceSpec(l, tuple(t.name for t in ts), LengthDistribution.from_pairs((t.decode, t.rate_per_s) for t in ts))
        for l, ts in groups.items()
    ]
    return tuple(sorted(specs, key=lambda s: (-s.rate_per_s, s.prefill_tokens)))


def _layout(spec: InstanceSpec, rule: str, num_segments: int | None, eta: float):
    points = breakpoints(spec.distribution, rule, num_segments)
    probs = continue_probs(spec.distribution, points)
    ratios = q_recipe(probs, eta)
    return segment_bounds(points), probs, ratios


def _unit_ratios(ratios: tuple[float, ...]) -> list[float]:
    out = [1.0]
    for q in ratios:
        out.append(out[-1] * q)
    return out


def _totals(workload: Workload, layouts, n1s):
    """Integer thresholds per instance from their n_1, and ΔT(n) of the whole iteration."""
    time = linear_time(workload)
    thresholds, kv, new = [], 0.0, 0.0
    for (bounds, probs, ratios, spec), n1 in zip(layouts, n1s):
        n = round_thresholds(n1, probs, ratios)
        thresholds.append(n)
        kv += nested_base_memory_tokens(spec.prefill_tokens, bounds, n)
        new += nested_new_tokens(spec.prefill_tokens, bounds, n)
    return thresholds, time.iteration_time_s(kv, new)


def solve_nested_fixed(workload: Workload, options: NestedOptions, num_segments: int | None) -> NestedSolution:
    """Nested WAIT with a fixed segmentation; conditions reported in the result (never raised)."""
    rule = "types" if num_segments is None else options.segment_rule
    specs = instance_specs(workload, options.prefill_mode)
    layouts = [(*_layout(s, rule, num_segments, options.eta), s) for s in specs]
    rho = 1 - options.slack
    time = linear_time(workload)
    if options.batch_cap is not None:
        total = workload.total_rate_per_s
        n1s = []
        for bounds, _, ratios, spec in layouts:
            widths = [b - a + 1 for a, b in bounds]
            per_n1 = sum(w * r for w, r in zip(widths, _unit_ratios(ratios)))
            n1s.append(max(1, round(options.batch_cap * spec.rate_per_s / total / per_n1)))
        mode = "batch_cap"
        thresholds, dt = _totals(workload, layouts, n1s)
    else:
        mode = "fluid"
        nested_load = 0.0  # Σ_i Λ_i c_i: ΔT grows by c_i per unit of n_1 of instance i
        for bounds, _, ratios, spec in layouts:
            unit = _unit_ratios(ratios)
            kv = sum(r * segment_kv_tokens(spec.prefill_tokens, a, b) for r, (a, b) in zip(unit, bounds))
            new = sum(r * segment_new_tokens(spec.prefill_tokens, a, b) for r, (a, b) in zip(unit, bounds))
            nested_load += spec.rate_per_s * (time.d_kv_s_per_token * kv + time.d_new_s_per_token * new)
        if nested_load >= rho:
            raise UnstableWorkloadError(
                f"workload '{workload.name}': Nested WAIT with {sum(len(l[0]) for l in layouts)} segment(s) has load "
                f"Σλ·(ΔT per prompt of n_1) = {nested_load:.4g}, not below the target utilisation ρ = {rho:.4g}: "
                f"no n_1 satisfies ΔT(n) < ρ·n_1/Σλ. Nearest feasible setting: rate scale < "
                f"{rho / nested_load:.4g}×, a smaller --slack or --eta, or other segments."
            )
        fluid = closed_form(workload.scaled(1 / rho)) if rho < 1 else closed_form(workload)
        if not math.isfinite(fluid.iteration_time_star_s):  # L ≥ ρ: the traffic has no fluid point at λ/ρ
            load = closed_form(workload).load_factor
            raise UnstableWorkloadError(
                f"workload '{workload.name}': load factor L = {load:.4g} is not below the target utilisation "
                f"ρ = 1 − slack = {rho:.4g}. Nearest feasible setting: --slack < {1 - load:.4g}, or rate scale "
                f"< {rho / load:.4g}× at this slack."
            )
        x = x0 = max(fluid.iteration_time_star_s, time.d0_s / (1 - nested_load / rho))
        for _ in range(MAX_REPAIR_STEPS):
            n1s = [math.floor(spec.rate_per_s * x / rho) + 1 for *_, spec in layouts]
            thresholds, dt = _totals(workload, layouts, n1s)
            if dt > BLOWUP_FACTOR * x0:
                raise UnstableWorkloadError(
                    f"workload '{workload.name}': Nested WAIT thresholds with {sum(len(l[0]) for l in layouts)} "
                    f"segment(s) do not settle: integer rounding (n_(k+1) > p_k n_k) raises the iteration time "
                    f"faster than n_1 (ΔT(n) passed {BLOWUP_FACTOR:g}× its real-valued estimate {x0:.4g} s). "
                    f"Nearest feasible setting: a lower rate (--rate-scale), a larger --slack, or fewer segments."
                )
            if all(dt < rho * n1 / spec.rate_per_s for n1, (*_, spec) in zip(n1s, layouts)):
                break
            x = max(dt, x)
        else:
            raise UnstableWorkloadError(f"Nested WAIT thresholds did not settle (workload '{workload.name}')")
    return _finish(workload, options, mode, num_segments, layouts, thresholds, dt)


def _finish(workload, options, mode, num_segments, layouts, thresholds, dt) -> NestedSolution:
    iterations = options.horizon_s / dt
    instances, conds = [], []
    many = len(layouts) > 1
    for (bounds, probs, _, spec), n in zip(layouts, thresholds):
        label = f"[prefill={spec.prefill_tokens}]" if many else ""
        conds += nested_ratio_conditions(label, n, probs)
        conds.append(strictly_below(f"iteration_time{label}", dt, n[0] / spec.rate_per_s))
        thetas, base, buffer = instance_memory_tokens(spec.prefill_tokens, bounds, n, probs, iterations,
                                                      options.delta, options.zeta)
        instances.append(InstanceSolution(spec, bounds, probs, n, thetas, base, buffer,
                                          counts_buffer=options.memory_bound == "theorem"))
    required = sum(i.memory_required_tokens for i in instances)
    conds.append(at_most("memory_within_capacity", required, workload.kv_capacity_tokens))
    return NestedSolution(mode, options, num_segments, tuple(instances), dt, iterations, tuple(conds))


# ---- choice of L and the public entry point --------------------------------------------------

def _curve_entry(requested: int, solution: NestedSolution | None, reason: str | None) -> dict:
    if solution is None:
        return {"segments": requested, "effective_segments": None, "memory_required_tokens": None,
                "conditions_hold": False, "reason": reason}
    failing = [c.name for c in solution.conditions if not c.holds]
    return {
        "segments": requested,
        "effective_segments": max(len(i.thresholds) for i in solution.instances),
        "memory_required_tokens": solution.memory_required_tokens,
        "conditions_hold": not failing,
        "reason": ("fails " + ", ".join(failing)) if failing else None,
    }


def solve_nested_auto(workload: Workload, options: NestedOptions) -> NestedSolution:
    """Try L ∈ {1,2,3,4,5,10,20} (capped by the number of distinct decode lengths); keep those
    whose conditions hold, return the least memory requirement with the whole curve attached."""
    distinct = max(len(s.distribution.lengths) for s in instance_specs(workload, options.prefill_mode))
    counts = [L for L in AUTO_SEGMENT_COUNTS if L <= distinct] or [distinct]
    curve, solved = [], []
    for L in counts:
        try:
            sol = solve_nested_fixed(workload, options, L)
        except UnstableWorkloadError as err:
            curve.append(_curve_entry(L, None, str(err)))
            continue
        curve.append(_curve_entry(L, sol, None))
        solved.append(sol)
    good = [s for s in solved if s.holds]
    if not good:
        timing_ok = [s for s in solved if all(c.holds for c in s.conditions if c.name != "memory_within_capacity")]
        lines = "; ".join(
            f"L={e['segments']}: " + (f"{e['memory_required_tokens']:.6g} tokens" if e["memory_required_tokens"] is not None else "no thresholds")
            for e in curve
        )
        hint = ""
        if timing_ok:
            best = min(timing_ok, key=lambda s: s.memory_required_tokens)
            hint = (f" Nearest feasible setting: C ≥ {math.ceil(best.memory_required_tokens)} tokens "
                    f"(L={best.num_segments_requested}), or a lower rate (--rate-scale).")
        raise UnstableWorkloadError(
            f"workload '{workload.name}': no segment count satisfies the Nested WAIT conditions within "
            f"C = {workload.kv_capacity_tokens} tokens (memory requirement by L: {lines}).{hint}"
        )
    best = min(good, key=lambda s: (s.memory_required_tokens, s.num_segments_requested))
    return NestedSolution(best.mode, best.options, best.num_segments_requested, best.instances,
                          best.iteration_time_s, best.iterations_in_horizon, best.conditions, tuple(curve))


def solve_nested(workload: Workload, options: NestedOptions = NestedOptions()) -> NestedSolution:
    """Nested WAIT thresholds. In fluid mode a setting that breaks a condition raises
    UnstableWorkloadError naming it and the nearest feasible setting; in batch-cap mode the
    conditions are reported in the result, not assumed."""
    if options.batch_cap is None:
        require_fluid_stable(workload, closed_form(workload))
    if options.segments == "auto":
        return solve_nested_auto(workload, options)
    sol = solve_nested_fixed(workload, options, options.segments)
    if sol.mode == "fluid" and not sol.holds:
        raise UnstableWorkloadError(_nested_diagnosis(workload, options, sol))
    return sol


def _nested_diagnosis(workload: Workload, options: NestedOptions, sol: NestedSolution) -> str:
    failing = [c for c in sol.conditions if not c.holds]
    what = "; ".join(f"{c.name}: {c.lhs:.6g} vs {c.rhs:.6g}" for c in failing)
    lo, hi = 0.0, 1.0
    for _ in range(30):  # max rate scale whose Nested thresholds fit (monotone up to rounding)
        mid = (lo + hi) / 2
        try:
            ok = solve_nested_fixed(workload.scaled(mid), options, options.segments).holds
        except UnstableWorkloadError:
            ok = False
        lo, hi = (mid, hi) if ok else (lo, mid)
    need = sol.memory_required_tokens
    return (
        f"workload '{workload.name}': Nested WAIT thresholds break {what} (memory requirement "
        f"{need:.6g} tokens, C = {workload.kv_capacity_tokens}, over by {need - workload.kv_capacity_tokens:.6g}). "
        f"Nearest feasible setting: {'no rate scale helps at these segments' if lo == 0 else f'rate scale ≤ {lo:.4g} at this C (--rate-scale)'}, or C ≥ {math.ceil(need)} tokens, "
        f"or --segments auto."
    )
