"""Metrics: pure functions over finished requests and the step log, gathered into `RunSummary`.

Definitions (arXiv 2504.11320, the fluid benchmark, for throughput and latency; arXiv 2508.01002 for the SLO
measures; vLLM's serving-benchmark metrics are in `runtime/serving_metrics.py`; the mapping
between the two sets is `docs/metrics.md`):

- decode throughput (`decode_throughput_tokens_per_s`): decode tokens per second (the l' decode-stage tokens, as throughput* = Σ λ_j l'_j
  counts them; the prefill's first token is not counted), over the measurement window
  [warm-up cut, last arrival] — the span in which arrivals still flow, so neither the empty
  start nor the drain after the last arrival dilutes it. With a horizon the window stops at the
  clock stop when that comes first, and the warm-up cut is the fraction of the arrival span seen
  before it (`warmup_cut_s`). If the cut is at or after the stop, the window runs to the end of
  the run instead.
- latency: arrival → completion; TTFT: arrival → first output token (end of the prefill);
  TBT: every gap between consecutive output tokens of a request (restarts included: a gap that
  spans an eviction is a real stall the user sees). Percentiles are exact (numpy's linear
  interpolation over every value, no sketch).
- request metrics cover requests that arrived at or after the warm-up cut and completed.
- KV use: peak over steps and time-weighted mean of the memory each step held while it ran
  (granted for the batch, before the requests finishing in it were released); batch sizes and composition per step.
- SLO attainment: a request meets its TBT SLO when every one of its gaps is ≤ its `tbt_slo_s`;
  the token-level share counts gaps within their request's SLO. TTFT attainment: TTFT ≤ bound.
"""

from __future__ import annotations

import numpy as np

from runtime.request import Request
from runtime.serving_metrics import DEFAULT_PERCENTILES, SERVING_METRICS, serving_metrics
from runtime.step_log import SimResult, StepLog
from runtime.summary import RunSummary


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def measured_requests(requests: list[Request], warmup_s: float = 0.0) -> list[Request]:
    """Completed requests that arrived at or after the warm-up cut."""
    return [r for r in requests if r.completion_s is not None and r.arrival_s >= warmup_s]


def warmup_cut_s(requests: list[Request], fraction: float, horizon_s: float | None = None) -> float:
    """The warm-up cut: `fraction` of the arrival span, the span ending at the horizon when the
    clock stops before the last arrival (arrivals after the stop are never seen)."""
    last_arrival_s = max((r.arrival_s for r in requests), default=0.0)
    if horizon_s is not None:
        last_arrival_s = min(last_arrival_s, horizon_s)
    return fraction * last_arrival_s


def measurement_window_s(
    requests: list[Request], end_s: float, warmup_s: float = 0.0, horizon_s: float | None = None
) -> tuple[float, float]:
    """[start, stop] of the throughput window: warm-up cut to the last arrival, or to the clock
    stop when that comes first (a horizon); to `end_s` when the cut is at or past that point."""
    stop_s = max((r.arrival_s for r in requests), default=0.0)
    if horizon_s is not None:
        stop_s = min(stop_s, horizon_s, end_s)
    if stop_s <= warmup_s:
        stop_s = end_s
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


CUMULATIVE_COUNTS = ("generated", "completed")


def cumulative_decode_tokens(requests: list[Request], times_s, *, count: str = "generated") -> np.ndarray:
    """Decode tokens by each time of `times_s` (a token at exactly t counts at t), the same decode
    tokens as throughput (the prefill's first token is not counted):

    - "generated": each decode-stage token when it is sampled (`token_times_s[1:]`; a request
      left unfinished counts what it produced);
    - "completed": a request's l' tokens at once, when it completes.

    Both end at Σ l' once every request has completed (a recompute after an eviction samples no
    token twice, `runtime/request.py`). The fluid benchmark counts the same two ways
    (`fluid/over_time.py`)."""
    grid = np.asarray(times_s, dtype=np.float64)
    if count == "generated":
        parts = [np.asarray(r.token_times_s[1:], dtype=np.float64) for r in requests if len(r.token_times_s) > 1]
        stamps = np.sort(np.concatenate(parts)) if parts else np.empty(0)
        return np.searchsorted(stamps, grid, side="right").astype(np.float64)
    if count == "completed":
        done = sorted((r.completion_s, r.output_tokens) for r in requests if r.completion_s is not None)
        stamps = np.asarray([d[0] for d in done], dtype=np.float64)
        totals = np.concatenate([[0.0], np.cumsum([float(d[1]) for d in done])])
        return totals[np.searchsorted(stamps, grid, side="right")]
    raise ValueError(f"count must be one of {', '.join(CUMULATIVE_COUNTS)}, got {count!r}")


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
        return {
            "num_steps": 0, "busy_s": 0.0, "mean_step_s": None, "mean_batch_size": None, "max_batch_size": 0,
            "mean_decodes_per_step": None, "mean_prefills_per_step": None, "mixed_step_fraction": None,
            "prefill_only_step_fraction": None, "decode_only_step_fraction": None, "prefill_token_fraction": None,
            "peak_kv_tokens": 0, "mean_kv_tokens": 0.0, "kv_capacity_tokens": int(kv_capacity_tokens), "evictions": 0,
        }
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
    replicas: int = 1,
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
    goodput_ms: dict[str, float] | None = None,
    wall_s: float | None = None,
) -> RunSummary:
    """The run's typed summary (`summary.json` and `--json` are its `to_dict()`).

    `percentiles`: the serving metrics' percentiles (p99 is always kept); `goodput_ms`: vLLM's
    `--goodput` bounds in milliseconds (request_goodput is None without them).
    """
    reqs = result.requests
    done = measured_requests(reqs, warmup_s)
    start_s, stop_s = measurement_window_s(reqs, result.end_s, warmup_s, result.horizon_s)
    lat = latencies_s(done)
    ttft = ttfts_s(done)
    tbt = tbt_gaps_s(done)
    steps = step_metrics(result.steps, result.kv_capacity_tokens)
    slo = slo_attainment(done, ttft_slo_s)
    chosen = tuple(sorted(set(percentiles) | {99.0}))
    serving = serving_metrics(reqs, result.end_s, percentiles=chosen, goodput_ms=goodput_ms)
    served = serving.to_dict()
    fixed = {f"{stat}_{m}_ms" for m in SERVING_METRICS for stat in ("mean", "median", "std", "p99")}
    composition = type_composition(result.steps)
    return RunSummary(
        scheduler=scheduler,
        executor=executor,
        replicas=replicas,
        num_requests=len(reqs),
        completed=sum(1 for r in reqs if r.completion_s is not None),
        measured_requests=len(done),
        restarts=sum(r.restarts for r in reqs),
        restarted_requests=sum(1 for r in reqs if r.restarts),
        warmup_s=warmup_s,
        window_start_s=start_s,
        window_stop_s=stop_s,
        sim_end_s=result.end_s,
        horizon_s=result.horizon_s,
        decode_throughput_tokens_per_s=decode_throughput_tokens_per_s(reqs, start_s, stop_s),
        overall_decode_throughput_tokens_per_s=(
            sum(max(0, len(r.token_times_s) - 1) for r in reqs) / result.end_s if result.end_s > 0 else 0.0
        ),
        mean_latency_s=_mean(lat),
        p50_latency_s=_pct(lat, 50),
        p90_latency_s=_pct(lat, 90),
        p99_latency_s=_pct(lat, 99),
        mean_ttft_s=_mean(ttft),
        p50_ttft_s=_pct(ttft, 50),
        p99_ttft_s=_pct(ttft, 99),
        mean_tbt_s=_mean(tbt),
        p50_tbt_s=_pct(tbt, 50),
        p90_tbt_s=_pct(tbt, 90),
        p99_tbt_s=_pct(tbt, 99),
        max_tbt_s=float(tbt.max()) if len(tbt) else None,
        tbt_slo_requests=slo["tbt_slo_requests"],
        tbt_slo_attainment=slo["tbt_slo_attainment"],
        tbt_slo_token_attainment=slo["tbt_slo_token_attainment"],
        ttft_slo_s=ttft_slo_s,
        ttft_slo_attainment=slo.get("ttft_slo_attainment"),
        duration_s=serving.duration_s,
        total_input_tokens=serving.total_input_tokens,
        total_output_tokens=serving.total_output_tokens,
        request_throughput=serving.request_throughput,
        output_throughput=serving.output_throughput,
        total_token_throughput=serving.total_token_throughput,
        request_goodput=serving.request_goodput,
        goodput_slo_ms=dict(goodput_ms) if goodput_ms else None,
        **{k: served[k] for k in sorted(fixed)},
        **steps,
        wall_s=wall_s,
        request_steps=sum(len(r.prefill_chunk_end_s) + r.decode_steps_done for r in reqs),
        mean_requests_per_step_by_type=composition,
        percentiles_ms={k: v for k, v in served.items() if k.startswith("p") and k.endswith("_ms") and k not in fixed},
    )


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
