"""The threshold conditions of WAIT and Nested WAIT, evaluated with the standard library only.

Both solvers, the policy loader and `fluidsched check` share these functions, so a condition is
stated once (arXiv 2504.11320, §WAIT and §Nested WAIT). Iteration time is linear in the batch:
ΔT(n) = d0 + d_kv·(KV tokens touched per iteration) + d_new·(new tokens per iteration).

WAIT (type j: prefill l_j, decode l'_j, rate λ_j, threshold n_j; a_j = (l'_j+1)(l_j+l'_j/2)):
    ΔT(n) = d0 + d_kv Σ n_j a_j + d_new Σ n_j (l_j + l'_j) ≤ n_j / λ_j    for every j
    M* ≤ M^π = Σ n_j a_j ≤ C
Nested WAIT (segments k = 1..m over stages, thresholds n_k, continuation probabilities p_k):
    ΔT(n) < n_1 / Σλ,   n_{k+1} / n_k > p_k,   M^π + buffer ≤ C
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Conditions are compared with a relative tolerance so that a threshold written at the boundary
# (the fluid point itself) is not reported as broken by floating-point noise.
REL_TOL = 1e-12


@dataclass(frozen=True, slots=True)
class Condition:
    """One checked inequality `lhs ≤ rhs` (or `<`, `>` as its name says); `holds` is its verdict."""

    name: str
    holds: bool
    lhs: float
    rhs: float

    def to_dict(self) -> dict:
        return {"name": self.name, "holds": self.holds, "lhs": self.lhs, "rhs": self.rhs}


def at_most(name: str, lhs: float, rhs: float) -> Condition:
    return Condition(name, bool(lhs <= rhs * (1 + REL_TOL) + REL_TOL), float(lhs), float(rhs))


def strictly_below(name: str, lhs: float, rhs: float) -> Condition:
    return Condition(name, bool(lhs < rhs), float(lhs), float(rhs))


def strictly_above(name: str, lhs: float, rhs: float) -> Condition:
    return Condition(name, bool(lhs > rhs), float(lhs), float(rhs))


@dataclass(frozen=True, slots=True)
class LinearTime:
    """The linear batch-time form τ = d0 + d_kv·kv_tokens + d_new·new_tokens (seconds)."""

    d0_s: float
    d_kv_s_per_token: float
    d_new_s_per_token: float

    def iteration_time_s(self, kv_tokens: float, new_tokens: float) -> float:
        return self.d0_s + self.d_kv_s_per_token * kv_tokens + self.d_new_s_per_token * new_tokens

    def to_dict(self) -> dict:
        return {"d0_s": self.d0_s, "d_kv_s_per_token": self.d_kv_s_per_token, "d_new_s_per_token": self.d_new_s_per_token}


# ---- WAIT ------------------------------------------------------------------------------------

def footprint_token_iterations(prefill: int, decode: int) -> float:
    """a = (l'+1)(l + l'/2): KV tokens summed over the l'+1 stages of one prompt."""
    return (decode + 1) * (prefill + decode / 2)


def wait_memory_tokens(classes: Sequence[tuple[int, int, int]]) -> float:
    """M^π = Σ n_j a_j for classes given as (prefill, decode, threshold)."""
    return float(sum(n * footprint_token_iterations(l, lp) for l, lp, n in classes))


def wait_iteration_time_s(time: LinearTime, classes: Sequence[tuple[int, int, int]]) -> float:
    """ΔT(n): every stage of type j serves n_j prompts; new tokens n_j(l_j + l'_j) per type."""
    new_tokens = sum(n * (l + lp) for l, lp, n in classes)
    return time.iteration_time_s(wait_memory_tokens(classes), new_tokens)


def wait_conditions(
    time: LinearTime,
    classes: Sequence[tuple[str, int, int, float, int]],
    kv_capacity_tokens: int,
    memory_star_tokens: float,
) -> tuple[Condition, ...]:
    """The WAIT conditions for classes given as (name, prefill, decode, rate_per_s, threshold)."""
    shapes = [(l, lp, n) for _, l, lp, _, n in classes]
    dt = wait_iteration_time_s(time, shapes)
    # a type without arrivals sets no time bound (n_j / 0 is unbounded)
    out = [at_most(f"iteration_time[{name}]", dt, n / rate) for name, _, _, rate, n in classes if rate > 0]
    mem = wait_memory_tokens(shapes)
    star = memory_star_tokens if math.isfinite(memory_star_tokens) else float("inf")
    out.append(at_most("memory_at_least_fluid", star, mem) if math.isfinite(star)
               else Condition("memory_at_least_fluid", False, float("inf"), mem))
    out.append(at_most("memory_within_capacity", mem, kv_capacity_tokens))
    return tuple(out)


# ---- Nested WAIT -----------------------------------------------------------------------------

def segment_kv_tokens(prefill: int, first_stage: int, last_stage: int) -> float:
    """Σ_{s=first..last} (l + s): KV tokens held by one prompt at each stage of the segment."""
    width = last_stage - first_stage + 1
    return width * prefill + (first_stage + last_stage) * width / 2


def segment_new_tokens(prefill: int, first_stage: int, last_stage: int) -> int:
    """New tokens one prompt computes over the segment's stages: l at stage 0, 1 per decode."""
    width = last_stage - first_stage + 1
    return width - 1 + prefill if first_stage == 0 else width


def nested_base_memory_tokens(prefill: int, bounds: Sequence[tuple[int, int]], thresholds: Sequence[int]) -> float:
    """M^π = Σ_k n_k Σ_{s in segment k} (l + s)."""
    return float(sum(n * segment_kv_tokens(prefill, a, b) for (a, b), n in zip(bounds, thresholds)))


def nested_new_tokens(prefill: int, bounds: Sequence[tuple[int, int]], thresholds: Sequence[int]) -> float:
    return float(sum(n * segment_new_tokens(prefill, a, b) for (a, b), n in zip(bounds, thresholds)))


def theta_residual(theta: float, n_prev: int, n_next: int, p_prev: float) -> float:
    """f(θ) = −θ n_k + n_{k−1} log(1 − p + p e^θ), the log of the θ_k equation (0 at its root)."""
    if p_prev <= 0:
        return -theta * n_next
    if p_prev >= 1:
        return theta * (n_prev - n_next)
    log_mgf = _logaddexp(math.log1p(-p_prev), math.log(p_prev) + theta)
    return -theta * n_next + n_prev * log_mgf


def _logaddexp(a: float, b: float) -> float:
    hi, lo = (a, b) if a >= b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def buffer_log_term(num_segments: int, iterations: float, delta: float, zeta: float = 1.0) -> float:
    """ln(m ζ B / δ), floored at 0 (a horizon shorter than one iteration needs no tail term)."""
    return max(math.log(num_segments * zeta * max(iterations, 1.0) / delta), 0.0)


def nested_buffer_tokens(
    prefill: int,
    bounds: Sequence[tuple[int, int]],
    thresholds: Sequence[int],
    thetas: Sequence[float | None],
    log_term: float,
) -> float:
    """Σ_{k≥2} (l + l'_{k−1}) (n_k + θ_k^{-1} ln(mζB/δ)); θ_k = None means no positive root
    (n_k = n_{k−1}: entries never exceed the threshold), so the tail term is 0."""
    total = 0.0
    for k in range(1, len(bounds)):
        tail = 0.0 if thetas[k] is None else log_term / thetas[k]
        total += (prefill + bounds[k - 1][1]) * (thresholds[k] + tail)
    return total


def nested_ratio_conditions(
    label: str, thresholds: Sequence[int], continue_probs: Sequence[float]
) -> list[Condition]:
    return [
        strictly_above(f"threshold_ratio{label}[{k + 1}]", thresholds[k + 1] / thresholds[k], continue_probs[k])
        for k in range(len(thresholds) - 1)
    ]
