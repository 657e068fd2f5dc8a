"""The one place that knows the shape of a run's summary.

`runtime.simrun.run_simulation` returns `RunOutput.summary`; today a plain dict with the keys of
`runtime.metrics.summarize`. Everything under `validation/` and `paper_figures/` reads summaries
through `summary_dict` (the run's summary as a JSON-ready dict) and `metric` (one value by the
name this package uses), so a change of the summary type or of its key names is a change here only.
"""

from __future__ import annotations

# name used by validation/ and paper_figures/ -> names it may carry in a summary, first match wins
# (the first is today's runtime.metrics key; later ones are vLLM-benchmark-style names)
METRIC_ALIASES: dict[str, tuple[str, ...]] = {
    "decode_throughput_tokens_per_s": ("throughput_tokens_per_s", "decode_throughput_tokens_per_s", "decode_throughput"),
    "mean_latency_s": ("mean_latency_s",),
    "p50_latency_s": ("p50_latency_s",),
    "p99_latency_s": ("p99_latency_s",),
    "mean_ttft_s": ("mean_ttft_s",),
    "p50_ttft_s": ("p50_ttft_s",),
    "p99_ttft_s": ("p99_ttft_s",),
    "p99_tbt_s": ("p99_tbt_s",),
    "mean_step_s": ("mean_step_s",),
    "peak_kv_tokens": ("peak_kv_tokens",),
    "mean_kv_tokens": ("mean_kv_tokens",),
    "restarts": ("restarts",),
    "completed": ("completed",),
    "measured_requests": ("measured_requests",),
    "num_requests": ("num_requests",),
    "ttft_slo_attainment": ("ttft_slo_attainment",),
    "tbt_slo_attainment": ("tbt_slo_attainment",),
}


def summary_dict(summary) -> dict:
    """The summary as a plain dict: a typed summary's `to_dict()`, or a copy of a dict."""
    to_dict = getattr(summary, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(summary)


def metric(summary: dict, name: str):
    """`name`'s value in a summary dict (None when the summary lacks it)."""
    for key in METRIC_ALIASES.get(name, (name,)):
        if key in summary:
            return summary[key]
    return None
