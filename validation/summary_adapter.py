"""The one place that knows the shape of a run's summary.

`runtime.simrun.run_simulation` returns `RunOutput.summary`, a typed `runtime.summary.RunSummary`
(`to_dict()` is its JSON form). Everything under `validation/` reads summaries through
`summary_dict` (the summary as a JSON-ready dict with today's key names) and `metric` (one value
by name), so a change of the summary type or of its key names is a change here only. Result
files written before the typed summary (plain dicts with older key names) read the same:
`summary_dict` renames their keys.
"""

from __future__ import annotations

# name used by validation/ and paper_figures/ -> names it may carry in a summary, first match wins
# (the first is today's runtime.metrics key; later ones are vLLM-benchmark-style names)
METRIC_ALIASES: dict[str, tuple[str, ...]] = {
    "decode_throughput_tokens_per_s": ("decode_throughput_tokens_per_s",),
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


# keys of the untyped summary -> today's RunSummary names
RENAMED = {
    "throughput_tokens_per_s": "decode_throughput_tokens_per_s",
    "overall_throughput_tokens_per_s": "overall_decode_throughput_tokens_per_s",
}


def summary_dict(summary) -> dict:
    """The summary as a plain dict with today's key names: a typed summary's `to_dict()`, or a
    copy of a dict (an older one's keys renamed, its `window_s` pair split)."""
    to_dict = getattr(summary, "to_dict", None)
    out = dict(to_dict()) if callable(to_dict) else dict(summary)
    for old, new in RENAMED.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    if "window_s" in out and "window_start_s" not in out:
        out["window_start_s"], out["window_stop_s"] = out.pop("window_s")
    return out


def metric(summary: dict, name: str):
    """`name`'s value in a summary dict (None when the summary lacks it)."""
    for key in METRIC_ALIASES.get(name, (name,)):
        if key in summary:
            return summary[key]
    return None
