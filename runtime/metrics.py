"""Metrics: pure functions over finished requests and the step log (PAPERS.md §1, §6).

Definitions (arXiv 2504.11320 for throughput and latency, 2508.01002 for the SLO measures):

- throughput: decode tokens per second (the l' decode-stage tokens, as throughput* = Σ λ_j l'_j
  counts them; the prefill's first token is not counted), over the measurement window
  [warm-up cut, last arrival] — the span in which arrivals still flow, so neither the empty
  start nor the drain after the last arrival dilutes it. If the cut is at or after the last
  arrival, the window runs to the end of the simulation instead.
- latency: arrival → completion; TTFT: arrival → first output token (end of the prefill);
  TBT: every gap between consecutive output tokens of a request (restarts included: a gap that
  spans an eviction is a real stall the user sees). Percentiles are exact (numpy's linear
  interpolation over every value, no sketch).
- request metrics cover requests that arrived at or after the warm-up cut and completed.
- KV use: peak over steps and time-weighted mean (the reservation after each step, held for the
  step's duration); batch sizes and composition per step.
- SLO attainment: a request meets its TBT SLO when every one of its gaps is ≤ its `tbt_slo_s`;
  the token-level share counts gaps within their request's SLO. TTFT attainment: TTFT ≤ bound.
"""

from __future__ import annotations

import numpy as np

from runtime.request import Request
from runtime.sim import SimResult, StepLog


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def measured_requests(requests: list[Request], warmup_s: float = 0.0) -> list[Request]:
    """Completed requests that arrived at or after the warm-up cut."""
    return [r for r in requests if r.completion_s is not None and r.arrival_s >= warmup_s]


def measurement_window_s(requests: list[Request], end_s: float, warmup_s: float = 0.0) -> tuple[float, float]:
    """[start, end] of the throughput window: warm-up cut to last arrival (or to `end_s`)."""
    last_arrival_s = max((r.arrival_s for r in requests), default=0.0)
    stop_s = last_arrival_s if last_arrival_s > warmup_s else end_s
    return warmup_s, stop_s


def decode_throughput_tokens_per_s(requests: list[Request], start_s: float, stop_s: float) -> float:
    """Decode tokens produced in [start_s, stop_s] per second of that window."""
    if stop_s <= start_s:
        return 0.0
    count = 0
    for r in requests:
        times = r.token_times_s
        if len(times) > 1:
            arr = np.asarray(times[1:])
            count += int(np.count_nonzero((arr >= start_s) & (arr <= stop_s)))
    return count / (stop_s - start_s)


def latencies_s(requests: list[Request]) -> np.ndarray:
    return np.asarray([r.completion_s - r.arrival_s for r in requests], float)


def ttfts_s(requests: list[Request]) -> np.ndarray:
    return np.asarray([r.token_times_s[0] - r.arrival_s for r in requests if r.token_times_s], float)


def tbt_gaps_s(requests: list[Request]) -> np.ndarray:
    """Every time-between-tokens gap of every request, concatenated."""
    parts = [np.diff(r.token_times_s) for r in requests if len(r.token_times_s) > 1]
    return np.concatenate(parts) if parts else np.empty(0)


def slo_attainment(requests: list[Request], ttft_slo_s: float | None = None) -> dict:
    """Shares of requests (and of tokens) meeting their TBT SLO, and of requests meeting TTFT."""
    with_slo = [r for r in requests if r.tbt_slo_s is not None]
    met_requests = met_gaps = all_gaps = 0
    for r in with_slo:
        gaps = np.diff(r.token_times_s)
        ok = int(np.count_nonzero(gaps <= r.tbt_slo_s))
        met_gaps += ok
        all_gaps += len(gaps)
        met_requests += ok == len(gaps)
    out = {
        "tbt_slo_requests": len(with_slo),
        "tbt_slo_attainment": met_requests / len(with_slo) if with_slo else None,
        "tbt_slo_token_attainment": met_gaps / all_gaps if all_gaps else None,
    }
    if ttft_slo_s is not None:
        ttft = ttfts_s(requests)
        out["ttft_slo_s"] = ttft_slo_s
        out["ttft_slo_attainment"] = float(np.mean(ttft <= ttft_slo_s)) if len(ttft) else None
    return out


def step_metrics(steps: StepLog, kv_capacity_tokens: int) -> dict:
    """Batch sizes, composition and KV use over the step log."""
    if not len(steps):
        return {"num_steps": 0}
    start = np.asarray(steps.start_s)
    dur = np.asarray(steps.end_s) - start
    decodes = np.asarray(steps.num_decodes)
    prefills = np.asarray(steps.num_prefills)
    size = decodes + prefills
    kv_used = np.asarray(steps.kv_used_tokens, float)
    busy_s = float(dur.sum())
    new_tokens = np.asarray(steps.new_tokens)
    return {
        "num_steps": len(steps),
        "busy_s": busy_s,
        "mean_step_s": float(dur.mean()),
        "mean_batch_size": float(size.mean()),
        "max_batch_size": int(size.max()),
        "mean_decodes_per_step": float(decodes.mean()),
        "mean_prefills_per_step": float(prefills.mean()),
        "mixed_step_fraction": float(np.mean((decodes > 0) & (prefills > 0))),
        "prefill_only_step_fraction": float(np.mean(decodes == 0)),
        "decode_only_step_fraction": float(np.mean(prefills == 0)),
        "prefill_token_fraction": float((new_tokens - decodes).sum() / max(1, new_tokens.sum())),
        "peak_kv_tokens": int(kv_used.max()),
        "mean_kv_tokens": float((kv_used * dur).sum() / busy_s) if busy_s > 0 else 0.0,
        "kv_capacity_tokens": int(kv_capacity_tokens),
        "evictions": int(np.sum(steps.num_evicted)),
    }


def type_composition(steps: StepLog) -> dict[str, float] | None:
    """Mean requests of each type per step (needs a traced run)."""
    if not steps.type_counts:
        return None
    totals: dict[str, int] = {}
    for counts in steps.type_counts:
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    return {k: v / len(steps.type_counts) for k, v in sorted(totals.items())}


def mean_in_system(requests: list[Request], start_s: float, stop_s: float) -> float:
    """Time-average number of requests in the system over [start_s, stop_s] (for Little's law)."""
    total = 0.0
    for r in requests:
        end = r.completion_s if r.completion_s is not None else stop_s
        total += max(0.0, min(end, stop_s) - max(r.arrival_s, start_s))
    return total / (stop_s - start_s)


def summarize(
    result: SimResult,
    *,
    scheduler: str,
    warmup_s: float = 0.0,
    ttft_slo_s: float | None = 0.5,
    executor: str = "simulated",
) -> dict:
    """The run's summary (the keys of `summary.json` and of `--json`)."""
    reqs = result.requests
    done = measured_requests(reqs, warmup_s)
    start_s, stop_s = measurement_window_s(reqs, result.end_s, warmup_s)
    lat = latencies_s(done)
    ttft = ttfts_s(done)
    tbt = tbt_gaps_s(done)
    summary = {
        "scheduler": scheduler,
        "executor": executor,
        "num_requests": len(reqs),
        "completed": sum(1 for r in reqs if r.completion_s is not None),
        "measured_requests": len(done),
        "warmup_s": warmup_s,
        "window_s": [start_s, stop_s],
        "sim_end_s": result.end_s,
        "throughput_tokens_per_s": decode_throughput_tokens_per_s(reqs, start_s, stop_s),
        "overall_throughput_tokens_per_s": (
            sum(max(0, len(r.token_times_s) - 1) for r in reqs) / result.end_s if result.end_s > 0 else 0.0
        ),
        "mean_latency_s": _mean(lat),
        "p50_latency_s": _pct(lat, 50),
        "p90_latency_s": _pct(lat, 90),
        "p99_latency_s": _pct(lat, 99),
        "mean_ttft_s": _mean(ttft),
        "p50_ttft_s": _pct(ttft, 50),
        "p99_ttft_s": _pct(ttft, 99),
        "mean_tbt_s": _mean(tbt),
        "p50_tbt_s": _pct(tbt, 50),
        "p90_tbt_s": _pct(tbt, 90),
        "p99_tbt_s": _pct(tbt, 99),
        "max_tbt_s": float(tbt.max()) if len(tbt) else None,
        "restarts": sum(r.restarts for r in reqs),
        "restarted_requests": sum(1 for r in reqs if r.restarts),
    }
    summary.update(step_metrics(result.steps, result.kv_capacity_tokens))
    summary["peak_kv_tokens"] = max(summary.get("peak_kv_tokens", 0), result.peak_kv_tokens)
    summary.update(slo_attainment(done, ttft_slo_s))
    composition = type_composition(result.steps)
    if composition is not None:
        summary["mean_requests_per_step_by_type"] = composition
    return summary


def request_rows(requests: list[Request]) -> list[dict]:
    """One row per request for `metrics.csv`."""
    rows = []
    for r in requests:
        times = r.token_times_s
        gaps = np.diff(times) if len(times) > 1 else None
        rows.append(
            {
                "request_id": r.request_id,
                "type": r.type_name or "",
                "tier": r.tier,
                "prompt_tokens": r.prompt_tokens,
                "output_tokens": r.output_tokens,
                "arrival_s": r.arrival_s,
                "first_scheduled_s": r.first_scheduled_s,
                "first_token_s": times[0] if times else None,
                "completion_s": r.completion_s,
                "ttft_s": times[0] - r.arrival_s if times else None,
                "latency_s": r.completion_s - r.arrival_s if r.completion_s is not None else None,
                "mean_tbt_s": float(gaps.mean()) if gaps is not None else None,
                "max_tbt_s": float(gaps.max()) if gaps is not None else None,
                "decode_tokens": max(0, len(times) - 1),
                "prefill_chunks": len(r.prefill_chunk_end_s),
                "restarts": r.restarts,
                "tbt_slo_s": r.tbt_slo_s,
            }
        )
    return rows
