"""Replications: means with Student-t confidence intervals over seeds (scipy.stats.t)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    mean: float | None
    half_width: float | None  # None with fewer than 2 replications
    n: int
    confidence: float = 0.95

    def text(self, fmt: str = "{:.3g}") -> str:
        if self.mean is None:
            return "-"
        if self.half_width is None:
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} ± {fmt.format(self.half_width)}"


def t_interval(values, confidence: float = 0.95) -> Estimate:
    """Mean of the finite `values` and the half-width of its two-sided t interval."""
    from scipy import stats

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Estimate(None, None, 0, confidence)
    mean = sum(xs) / n
    if n < 2:
        return Estimate(mean, None, n, confidence)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(mean, half, n, confidence)


def group_rows(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return groups


def lambda_star_estimate(records: list[dict], confidence: float = 0.95) -> Estimate:
    """λ* over seeds: t interval of the per-seed bracket midpoints, widened by the mean bracket
    half-width (the resolution of the bisection itself, which the seeds' spread does not see)."""
    est = t_interval([r["lambda_star_load"] for r in records], confidence)
    if est.mean is None:
        return est
    resolution = sum(r["half_width"] for r in records) / len(records)
    return Estimate(est.mean, (est.half_width or 0.0) + resolution, est.n, confidence)
