"""Segments of Nested WAIT over the output-length distribution (arXiv 2504.11320, §Nested WAIT).

The distribution is discrete: the decode lengths of a workload's types, weighted by their rates
λ_j. A prompt reveals its class only by finishing, so a breakpoint is useful only where some
prompts finish: every rule here places breakpoints on lengths of the distribution's support
(equal-width bins snap to the largest length inside each bin, empty bins are dropped), which
keeps every p_k < 1 for k < m. Segment 1 covers stages 0..l'_1 (prefill included), segment k
the decode stages l'_{k−1}+1..l'_k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from fluid.numbers import check_number
from fluid.errors import InputError

SEGMENT_RULES = ("types", "equal-width", "quantile")


@dataclass(frozen=True, slots=True)
class LengthDistribution:
    """Decode lengths (ascending, distinct) with their total rates (requests/s)."""

    lengths: tuple[int, ...]
    rates_per_s: tuple[float, ...]

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, float]]) -> "LengthDistribution":
        merged: dict[int, float] = {}
        for length, rate in pairs:
            merged[length] = merged.get(length, 0.0) + rate
        lengths = tuple(sorted(merged))
        return cls(lengths, tuple(merged[x] for x in lengths))

    @property
    def total_rate_per_s(self) -> float:
        return sum(self.rates_per_s)

    def rate_longer_than(self, stage: int) -> float:
        """Rate of prompts whose decode length exceeds `stage` (they continue past it)."""
        return sum(r for x, r in zip(self.lengths, self.rates_per_s) if x > stage)


def breakpoints(dist: LengthDistribution, rule: str, num_segments: int | None = None) -> tuple[int, ...]:
    """Sorted breakpoints l'_1 < … < l'_m; the last is always the longest decode length."""
    if rule == "types":
        return dist.lengths
    check_number(num_segments, "segments", integer=True, minimum=1, unit="number of segments")
    longest = dist.lengths[-1]
    if rule == "equal-width":
        # bin k covers lengths in (edge_{k-1}, edge_k], edge_k = round(k·longest/L)
        edges = [round(k * longest / num_segments) for k in range(1, num_segments + 1)]
        chosen = {max((x for x in dist.lengths if x <= e), default=None) for e in edges}
    elif rule == "quantile":
        total = dist.total_rate_per_s
        chosen = set()
        for k in range(1, num_segments + 1):
            target = total * k / num_segments
            cumulative = 0.0
            for x, r in zip(dist.lengths, dist.rates_per_s):
                cumulative += r
                if cumulative >= target * (1 - 1e-12):
                    chosen.add(x)
                    break
    else:
        raise InputError(f"unknown segment rule {rule!r}; use one of {', '.join(SEGMENT_RULES)}", field="segment_rule")
    chosen.discard(None)
    chosen.add(longest)
    return tuple(sorted(chosen))


def segment_bounds(points: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(first_stage, last_stage) of each segment: (0, l'_1), (l'_1+1, l'_2), …"""
    out, first = [], 0
    for b in points:
        out.append((first, b))
        first = b + 1
    return tuple(out)


def continue_probs(dist: LengthDistribution, points: tuple[int, ...]) -> tuple[float, ...]:
    """p_k = P(decode length > l'_k | decode length > l'_{k−1}); 0 for the last segment."""
    out, entering = [], dist.total_rate_per_s
    for b in points:
        leaving_on = dist.rate_longer_than(b)
        out.append(leaving_on / entering if entering > 0 else 0.0)
        entering = leaving_on
    out[-1] = 0.0
    return tuple(out)


def q_recipe(probs: tuple[float, ...], eta: float) -> tuple[float, ...]:
    """q_k = min(p_k + η, 0.99): the authors' threshold ratios (arXiv 2504.11320, §Nested WAIT)."""
    return tuple(min(p + eta, 0.99) for p in probs[:-1])


def round_thresholds(n1: int, probs: tuple[float, ...], ratios: tuple[float, ...]) -> tuple[int, ...]:
    """Integers n_1 ≥ n_2 ≥ … with n_{k+1}/n_k > p_k: n_{k+1} = max(⌈q_k n_k⌉, ⌊p_k n_k⌋ + 1).

    Rounding from the previous integer (not from n_1 Π q) keeps each ratio ≥ q_k; the second term
    repairs the case q_k ≤ p_k (p_k ≥ 0.99). p_k < 1 keeps n_{k+1} ≤ n_k.
    """
    out = [max(int(n1), 1)]
    for p, q in zip(probs, ratios):
        prev = out[-1]
        out.append(max(math.ceil(q * prev - 1e-9), math.floor(p * prev) + 1, 1))
    return tuple(out)
