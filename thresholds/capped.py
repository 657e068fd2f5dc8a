"""The capped service rule's caps and memory, with the standard library only (docs/capped-rule.md).

Real thresholds n_j (WAIT, one per type) or n_k (Nested WAIT, one per segment) may be far below 1.
The capped rule enforces them through integer caps on resident requests: a WAIT class j spans
l'_j + 1 stages, so at n_j per stage it holds n_j (l'_j + 1) requests, and its cap is that number
rounded up; a Nested WAIT policy holds Σ_k width_k n_k requests in all, its resident cap. The
scheduler (`runtime/schedulers/capped.py`) and the solver (`thresholds/capped_solve.py`) share
these functions, so the rounding is stated once.

Memory of a capped policy, in KV tokens (block rounding adds at most one partial block per
resident request):
- expected: each resident request of class j sits, on average over its life, halfway through its
  decode: Σ_j c_j (l_j + l'_j / 2) for WAIT; Σ_k n_k Σ_{s∈k}(l + s), scaled to the resident cap,
  for Nested WAIT. An expectation at steady state, not a bound.
- worst case: every resident request at its full length: Σ_j c_j (l_j + l'_j), or
  cap · max_j (l_j + l'_j). A guarantee: the caps bound the residents and no request outgrows
  its length.
"""

from __future__ import annotations

import math
from typing import Sequence

# a cap is n·width rounded up; a product within this relative distance of an integer is that integer
ROUNDING_TOLERANCE = 1e-9
MEMORY_BOUNDS = ("expected", "worst", "theorem")


def cap_of(threshold: float, width: int) -> int:
    """Resident requests a group of `width` stages holds at `threshold` per stage, rounded up (≥ 1)."""
    product = threshold * width
    return max(1, math.ceil(product * (1 - ROUNDING_TOLERANCE)))


def wait_class_caps(classes: Sequence[tuple[int, float]]) -> tuple[int, ...]:
    """Caps c_j for classes given as (decode l'_j, threshold n_j): n_j (l'_j + 1) rounded up."""
    return tuple(cap_of(n, decode + 1) for decode, n in classes)


def nested_resident_cap(segments: Sequence[tuple[int, int, float]]) -> int:
    """The resident cap Σ_k width_k n_k, rounded up, for segments (first_stage, last_stage, n_k)."""
    return cap_of(sum((b - a + 1) * n for a, b, n in segments), 1)


def littles_law_cap(stages_per_s: float, per_resident_s: float, d0_s: float, rho: float,
                    max_steps: int = 10_000) -> tuple[int, float]:
    """The least resident cap that serves `stages_per_s` resident-steps per second at utilisation ρ.

    A step holding `cap` residents at their mean size lasts dt = d0 + cap · per_resident_s and
    serves cap/dt stages per second; Little's law asks cap = stages_per_s · x / ρ at the step time
    x. Start at the fluid x = d0 / (1 − L/ρ) (L = stages_per_s · per_resident_s), round the cap up,
    and repair x ← dt until dt ≤ ρ · cap / stages_per_s.
    Returns (cap, dt). L must be below ρ.
    """
    load = stages_per_s * per_resident_s
    if not load < rho:
        raise ValueError(f"load {load!r} must be below ρ = {rho!r}")
    x = d0_s / (1 - load / rho)
    for _ in range(max_steps):
        cap = cap_of(stages_per_s * x / rho, 1)
        dt = d0_s + cap * per_resident_s
        if dt <= rho * cap / stages_per_s * (1 + 1e-12):
            return cap, dt
        x = max(dt, x * (1 + 1e-9))
    raise ArithmeticError(f"the resident cap did not settle in {max_steps} steps")
