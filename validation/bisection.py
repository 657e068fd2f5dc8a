"""λ* of a policy by bisection over the load, with a stated criterion (`docs/validation.md`).

Criterion `stable` (the capacity a policy sustains): a run at load x passes when
  1. decode throughput over the measurement window ≥ (1 − throughput_tolerance) × the decode
     tokens offered in that window (the system keeps up with arrivals), and
  2. the mean latency of the last quarter of measured requests (by arrival) ≤ (1 + latency_growth)
     × that of the first quarter (latency does not grow with run length: no queue builds).
Criterion `slo` (SLO capacity, arXiv 2508.01002): median TTFT < ttft_median_s and, when
tbt_p99_within_slo, every tier's p99 TBT within that tier's TBT SLO.

A point that could not run (say, no WAIT thresholds fit at that load) fails. Bisection keeps
[lo, hi] with lo passing and hi failing until hi − lo ≤ tolerance; λ* is reported as the bracket's
midpoint ± half its width, per seed; across seeds `validation.stats` gives a t interval. If the
lowest load already fails, or the highest passes, the record says so (`bound: below / above`).
"""

from __future__ import annotations


def passes(result: dict, spec) -> tuple[bool, str]:
    """Whether the point `result` (a `result.json`) meets the bisection's criterion, and why."""
    if result.get("status") != "ok":
        return False, f"did not run: {result.get('error')}"
    derived, summary = result["derived"], result["summary"]
    if spec.criterion == "stable":
        ratio, growth = derived.get("throughput_over_offered"), derived.get("latency_growth")
        if ratio is None or ratio < 1 - spec.throughput_tolerance:
            return False, f"throughput / offered = {ratio}"
        if growth is None or growth > 1 + spec.latency_growth:
            return False, f"latency growth = {growth}"
        return True, f"throughput / offered = {ratio:.3f}, latency growth = {growth:.2f}"
    ttft = summary.get("p50_ttft_s")
    if ttft is None or ttft >= spec.ttft_median_s:
        return False, f"median TTFT = {ttft}"
    if spec.tbt_p99_within_slo:
        for tier in derived.get("tiers") or []:
            slo, p99 = tier.get("tbt_slo_s"), tier.get("p99_tbt_s")
            if slo is not None and (p99 is None or p99 > slo):
                return False, f"tier {tier['tier']}: p99 TBT {p99} > SLO {slo}"
    return True, f"median TTFT = {ttft:.3f} s"


def bisect_chain(spec, label: dict):
    """A generator: yields the next load to run, receives that point's result (`send`), and
    returns (StopIteration.value) the λ* record. `label` names the chain in the record."""
    lo, hi = spec.lo, spec.hi
    evaluations = []

    def run(load):
        result = yield round(load, 6)
        ok, why = passes(result, spec)
        evaluations.append({"load": round(load, 6), "passes": ok, "why": why, "rate_scale": result.get("rate_scale")})
        return ok

    def record(bound: str, a: float, b: float) -> dict:
        return {**label, "criterion": spec.criterion, "bound": bound, "lo": a, "hi": b,
                "lambda_star_load": (a + b) / 2, "half_width": (b - a) / 2, "evaluations": evaluations}

    if not (yield from run(lo)):
        return record("below", 0.0, lo)
    if (yield from run(hi)):
        return record("above", hi, hi)
    while hi - lo > spec.tolerance:
        mid = (lo + hi) / 2
        if (yield from run(mid)):
            lo = mid
        else:
            hi = mid
    return record("bracket", lo, hi)
