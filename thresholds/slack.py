"""The automatic slack of `fluidsched solve` (docs/capped-rule.md, "Slack").

Thresholds at slack s are the fluid point at rates λ/(1 − s): slack buys queueing headroom at the
price of larger thresholds, more memory and, for the cohort rule, longer waits for a full cohort.
The rule, for a workload of load factor L < 1:
1. candidate s = min(0.05, (1 − L)/2): 5 % headroom, but never more than half the distance to the
   load limit (a fixed 0.05 caps the utilisation at 0.95 and refuses everything above it);
2. slack 0 is solved too; it is chosen when the candidate gives no policy, or when the candidate
   needs at least 1.5× the memory of slack 0 (near the load limit the smaller thresholds served
   9 % more on an H200, docs/benchmarks-gpu.md);
3. if neither gives a policy, the error is slack 0's (the most lenient setting).
So a workload that slack 0 solves is never refused. An explicit `--slack` bypasses the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fluid.errors import UnstableWorkloadError

MAX_AUTO_SLACK = 0.05
LEANER_MEMORY_RATIO = 1.5


@dataclass(frozen=True, slots=True)
class SlackChoice:
    slack: float
    solution: object
    reason: str


def candidate_slack(load_factor: float) -> float:
    return max(0.0, min(MAX_AUTO_SLACK, (1 - load_factor) / 2))


def choose_slack(solve_at: Callable[[float], object], memory_of: Callable[[object], float],
                 load_factor: float) -> SlackChoice:
    """Solve at the candidate slack and at 0; return the one the rule picks, with why."""
    s = candidate_slack(load_factor)
    rule = f"min({MAX_AUTO_SLACK:g}, (1 − L)/2) with L = {load_factor:.4g}"
    try:
        zero = solve_at(0.0)
        zero_error = None
    except UnstableWorkloadError as err:
        zero, zero_error = None, err
    if s == 0.0:
        if zero is None:
            raise zero_error
        return SlackChoice(0.0, zero, f"slack 0 = {rule}")
    try:
        chosen = solve_at(s)
    except UnstableWorkloadError as err:
        if zero is None:
            raise zero_error from None
        return SlackChoice(0.0, zero, f"slack {s:.4g} = {rule} gives no policy ({str(err)[:160]}); slack 0 does")
    if zero is not None and memory_of(chosen) >= LEANER_MEMORY_RATIO * memory_of(zero):
        return SlackChoice(0.0, zero, f"slack {s:.4g} = {rule} needs {memory_of(chosen):,.0f} tokens, ≥ "
                                      f"{LEANER_MEMORY_RATIO:g}× the {memory_of(zero):,.0f} of slack 0")
    return SlackChoice(s, chosen, f"slack {s:.4g} = {rule}")
