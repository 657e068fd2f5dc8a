"""Small per-point series for figures: `series.json` of a point folder (a few kB, committed).

The per-request CSV holds everything, but figures and reports must rebuild from small files, so
each point also keeps, downsampled:

- `time`: bin edges over [0, end of run] and, per bin, decode throughput (tokens/s), arrivals and
  requests in the system at each edge (arrived, not completed), KV tokens reserved at each edge
  (replica 0's step log), and the cumulative decode tokens by each edge, generated (each token
  when sampled) and completed (a request's tokens when it completes), counted as the fluid
  benchmark over time counts them (`runtime.metrics.cumulative_decode_tokens`);
- `by_index`: mean latency and TTFT of the requests in each bin of arrival order (the paper's
  latency against prompt number);
- `quantiles`: TTFT, TBT and latency at fixed percentiles (distribution figures);
- `tiers`: per SLO tier, the count, median TTFT, p99 TBT and the tier's TBT SLO.
"""

from __future__ import annotations

import numpy as np

QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9)
TIME_BINS = 120
INDEX_BINS = 100


def _q(values: np.ndarray) -> list[float | None]:
    return [float(v) for v in np.percentile(values, QUANTILES)] if len(values) else [None] * len(QUANTILES)


def _binned_mean(values: np.ndarray, bins: int) -> tuple[list[float], list[float | None]]:
    n = len(values)
    if n == 0:
        return [], []
    edges = np.linspace(0, n, min(bins, n) + 1).astype(int)
    centres, means = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        chunk = values[a:b]
        chunk = chunk[np.isfinite(chunk)]
        centres.append(float((a + b - 1) / 2))
        means.append(float(chunk.mean()) if len(chunk) else None)
    return centres, means


def point_series(requests, steps, *, end_s: float, warmup_s: float) -> dict:
    from runtime.metrics import cumulative_decode_tokens

    reqs = sorted(requests, key=lambda r: (r.arrival_s, r.request_id))
    arrival = np.asarray([r.arrival_s for r in reqs], float)
    completion = np.asarray([np.inf if r.completion_s is None else r.completion_s for r in reqs], float)
    end_s = float(end_s) if end_s > 0 else float(arrival.max(initial=0.0)) or 1.0
    edges = np.linspace(0.0, end_s, TIME_BINS + 1)
    decode_times = [np.asarray(r.token_times_s[1:], float) for r in reqs if len(r.token_times_s) > 1]
    tokens = np.concatenate(decode_times) if decode_times else np.empty(0)
    per_bin, _ = np.histogram(tokens, bins=edges)
    arrivals, _ = np.histogram(arrival, bins=edges)
    in_system = np.searchsorted(np.sort(arrival), edges, side="right") - np.searchsorted(np.sort(completion), edges, side="right")
    generated = cumulative_decode_tokens(reqs, edges, count="generated")
    completed = cumulative_decode_tokens(reqs, edges, count="completed")
    start = np.asarray(steps.start_s, float)
    kv = np.asarray(steps.kv_used_tokens, float)
    kv_at = kv[np.clip(np.searchsorted(start, edges, side="right") - 1, 0, None)] if len(start) else np.zeros_like(edges)
    latency = completion - arrival
    ttft = np.asarray([r.token_times_s[0] - r.arrival_s if r.token_times_s else np.nan for r in reqs], float)
    index, lat_mean = _binned_mean(latency, INDEX_BINS)
    _, ttft_mean = _binned_mean(ttft, INDEX_BINS)
    measured = [r for r in reqs if r.completion_s is not None and r.arrival_s >= warmup_s]
    m_ttft = np.asarray([r.token_times_s[0] - r.arrival_s for r in measured if r.token_times_s], float)
    gaps = [np.diff(r.token_times_s) for r in measured if len(r.token_times_s) > 1]
    m_tbt = np.concatenate(gaps) if gaps else np.empty(0)
    m_lat = np.asarray([r.completion_s - r.arrival_s for r in measured], float)
    width = np.diff(edges)
    return {
        "time": {
            "edges_s": edges.tolist(),
            "decode_tokens_per_s": (per_bin / width).tolist(),
            "arrivals_per_s": (arrivals / width).tolist(),
            "in_system": in_system.tolist(),
            "generated_decode_tokens": generated.tolist(),
            "completed_decode_tokens": completed.tolist(),
            "kv_used_tokens": kv_at.tolist(),
        },
        "by_index": {"index": index, "mean_latency_s": lat_mean, "mean_ttft_s": ttft_mean},
        "quantiles": {"q": list(QUANTILES), "ttft_s": _q(m_ttft), "tbt_s": _q(m_tbt), "latency_s": _q(m_lat)},
        "tiers": tier_metrics(measured),
    }


def tier_metrics(measured) -> list[dict]:
    """Per tier (requests grouped by `tier`): count, median TTFT, p99 TBT, its TBT SLO."""
    out = []
    for tier in sorted({r.tier for r in measured}):
        group = [r for r in measured if r.tier == tier]
        ttft = np.asarray([r.token_times_s[0] - r.arrival_s for r in group if r.token_times_s], float)
        gaps = [np.diff(r.token_times_s) for r in group if len(r.token_times_s) > 1]
        tbt = np.concatenate(gaps) if gaps else np.empty(0)
        slos = {r.tbt_slo_s for r in group}
        out.append({
            "tier": int(tier),
            "requests": len(group),
            "tbt_slo_s": slos.pop() if len(slos) == 1 else None,
            "p50_ttft_s": float(np.median(ttft)) if len(ttft) else None,
            "p99_tbt_s": float(np.percentile(tbt, 99)) if len(tbt) else None,
        })
    return out


def latency_growth(requests, warmup_s: float) -> float | None:
    """Mean latency of the last quarter of measured requests (by arrival) over the first quarter's.

    Near 1 when the system keeps up; grows with run length when a queue builds. Requests that
    never completed count with latency to the end of the run: an overload must not hide by
    leaving its worst requests unfinished.
    """
    reqs = sorted((r for r in requests if r.arrival_s >= warmup_s), key=lambda r: (r.arrival_s, r.request_id))
    if len(reqs) < 8:
        return None
    end = max((r.completion_s for r in reqs if r.completion_s is not None), default=0.0)
    lat = np.asarray([(r.completion_s if r.completion_s is not None else end) - r.arrival_s for r in reqs], float)
    q = len(lat) // 4
    first = float(lat[:q].mean())
    return float(lat[-q:].mean() / first) if first > 0 else None
