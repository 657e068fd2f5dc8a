"""Serving metrics named and computed as vLLM's serving benchmark computes them.

Reference: `vllm/benchmarks/serve.py` of the vLLM repository (`calculate_metrics` and
`process_one_metric`, the code behind `vllm bench serve`), read for its definitions:

- over the requests that completed (vLLM's "successful" requests), with `duration_s` the
  benchmark's duration (for a simulated or GPU run: the executor's clock from 0, when arrivals
  start, to the end of the run);
- `request_throughput` = completed / duration; `output_throughput` = output tokens / duration;
  `total_token_throughput` = (prompt + output tokens) / duration. Output tokens are every token a
  request streamed, the first one (sampled by the prefill) included: l' + 1 in this project's
  stage model (`runtime/request.py`);
- `ttft_ms`: arrival → first token; `e2el_ms`: arrival → last token;
- `tpot_ms`: (e2el − ttft) / (output tokens − 1) per request, only for requests with more than one
  output token (the first token excluded);
- `itl_ms`: every gap between consecutive tokens of every request, pooled (one value per gap);
- each metric's mean, median, standard deviation (numpy's population `std`) and chosen
  percentiles (numpy's linear interpolation), in milliseconds; an empty list gives 0, as vLLM's
  `np.mean(values or 0)` does;
- `request_goodput` (with `--goodput ttft:MS tpot:MS e2el:MS`): completed requests whose every named
  metric is at most its bound, per second of the duration; a request with one output token counts
  with tpot 0, as in vLLM.

Keys in JSON follow vLLM's result file: `mean_ttft_ms`, `median_ttft_ms`, `std_ttft_ms`,
`p99_ttft_ms` (a percentile p is written `p{p}` with an integral p as an integer, e.g. `p99`,
`p99.9`). The mapping to the fluid benchmark's own measures is in `docs/metrics.md`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fluid.errors import InputError
from fluid.numbers import check_number
from runtime.request import Request

SERVING_METRICS = ("ttft", "tpot", "itl", "e2el")
GOODPUT_METRICS = ("ttft", "tpot", "e2el")  # vLLM's --goodput accepts these three
DEFAULT_PERCENTILES = (99.0,)  # vLLM's --metric-percentiles default


def percentile_word(p: float) -> str:
    """vLLM's spelling of a percentile in a key: 99 → '99', 99.9 → '99.9'."""
    return str(int(p)) if int(p) == p else str(p)


def check_percentiles(values) -> tuple[float, ...]:
    return tuple(
        float(check_number(p, "metric_percentiles", minimum=0, strict_minimum=True, maximum=100, strict_maximum=True,
                           what="a metric percentile"))
        for p in values
    )


def parse_percentiles(text: str) -> tuple[float, ...]:
    """`--metric-percentiles 50,90,99` → (50.0, 90.0, 99.0)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"metric percentiles are comma-separated numbers (e.g. 50,90,99), got {text!r}", field="metric_percentiles") from None
    if not values:
        raise InputError(f"give at least one percentile (e.g. 50,90,99), got {text!r}", field="metric_percentiles")
    return check_percentiles(values)


def parse_goodput(items: list[str]) -> dict[str, float]:
    """`--goodput ttft:500 tpot:50` → {'ttft': 500.0, 'tpot': 50.0} (milliseconds, as in vLLM)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition(":")
        if not sep or name not in GOODPUT_METRICS:
            raise InputError(
                f"a goodput bound is METRIC:MILLISECONDS with METRIC one of {', '.join(GOODPUT_METRICS)}, got {item!r}",
                field="goodput",
            )
        try:
            bound = float(raw)
        except ValueError:
            bound = math.nan
        if not math.isfinite(bound) or bound < 0:
            raise InputError(f"the goodput bound of {name} must be a non-negative number of milliseconds, got {raw!r}", field="goodput")
        if name in out:
            raise InputError(f"the goodput bound of {name} is given twice", field="goodput")
        out[name] = bound
    return out


@dataclass(frozen=True)
class MetricStats:
    """One metric's statistics in milliseconds, as vLLM reports them."""

    mean_ms: float
    median_ms: float
    std_ms: float
    percentiles_ms: tuple[tuple[float, float], ...]  # (p, value) for each chosen percentile

    @classmethod
    def of(cls, values_s: list[float], percentiles: tuple[float, ...]) -> MetricStats:
        arr = np.asarray(values_s if values_s else [0.0], float) * 1000.0
        return cls(
            float(np.mean(arr)), float(np.median(arr)), float(np.std(arr)),
            tuple((p, float(np.percentile(arr, p))) for p in percentiles),
        )


@dataclass(frozen=True)
class ServingMetrics:
    duration_s: float
    completed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float  # requests/s
    output_throughput: float  # tokens/s
    total_token_throughput: float  # tokens/s
    request_goodput: float | None  # requests/s meeting every goodput bound (None without bounds)
    stats: dict[str, MetricStats]  # by metric name: ttft, tpot, itl, e2el

    def to_dict(self) -> dict:
        """vLLM's result-file keys (`mean_ttft_ms`, `p99_itl_ms`, ...)."""
        out = {
            "request_throughput": self.request_throughput,
            "request_goodput": self.request_goodput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
        }
        for name in SERVING_METRICS:
            st = self.stats[name]
            out[f"mean_{name}_ms"] = st.mean_ms
            out[f"median_{name}_ms"] = st.median_ms
            out[f"std_{name}_ms"] = st.std_ms
            for p, value in st.percentiles_ms:
                out[f"p{percentile_word(p)}_{name}_ms"] = value
        return out


def serving_metrics(
    requests: list[Request],
    duration_s: float,
    *,
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
    goodput_ms: dict[str, float] | None = None,
) -> ServingMetrics:
    """vLLM's `calculate_metrics` over the completed requests of a run of `duration_s` seconds."""
    percentiles = check_percentiles(percentiles)
    ttfts, tpots, all_tpots, itls, e2els = [], [], [], [], []
    total_input = total_output = 0
    for r in requests:
        times = r.token_times_s
        if r.completion_s is None or not times:
            continue
        output_len = len(times)
        total_input += r.prompt_tokens
        total_output += output_len
        ttft = times[0] - r.arrival_s
        e2el = times[-1] - r.arrival_s
        tpot = 0.0
        if output_len > 1:
            tpot = (e2el - ttft) / (output_len - 1)
            tpots.append(tpot)
            itls.extend(np.diff(times).tolist())
        all_tpots.append(tpot)
        ttfts.append(ttft)
        e2els.append(e2el)
    completed = len(ttfts)
    dur = duration_s if duration_s > 0 else math.inf  # an empty run: every rate is 0
    goodput = None
    if goodput_ms:
        columns = {"ttft": ttfts, "tpot": all_tpots, "e2el": e2els}
        chosen = [(columns[name], bound / 1000.0) for name, bound in goodput_ms.items()]
        good = sum(1 for i in range(completed) if all(values[i] <= bound for values, bound in chosen))
        goodput = good / dur
    stats = {
        name: MetricStats.of(values, percentiles)
        for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els))
    }
    return ServingMetrics(
        duration_s, completed, total_input, total_output,
        completed / dur, total_output / dur, (total_input + total_output) / dur, goodput, stats,
    )
