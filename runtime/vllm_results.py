"""Reading `vllm bench serve --save-result` JSON, so a real vLLM benchmark sits in our tables.

vLLM's serving benchmark (`vllm/benchmarks/serve.py`) saves one JSON object per run. Its
top-level keys are the run's totals (`duration` s, `completed`, `total_input_tokens`,
`total_output_tokens`), the rates `request_throughput` (req/s), `output_throughput` and
`total_token_throughput` (tokens/s), `request_goodput` (null without `--goodput`), and for each
of `ttft`, `tpot`, `itl`, `e2el` the statistics `mean_X_ms`, `median_X_ms`, `std_X_ms` and one
`pN_X_ms` per `--metric-percentiles` entry (p99 by default; `p99.9` keeps its dot). Metrics not
chosen with `--percentile-metrics` are absent. With `--save-result` it also records the setting:
`date`, `backend`, `model_id`, `tokenizer_id`, `num_prompts`, `request_rate`, `burstiness`,
`max_concurrency`; per-request lists (`ttfts`, `itls`, `input_lens`, ...) may follow.

`read_vllm_result` returns a plain dict keyed by exactly those metric names, plus `scheduler:
"vllm (measured)"`, so that it joins a summary that uses vLLM's names.
"""

from __future__ import annotations

import re
from pathlib import Path

from fluid.numbers import check_number
from fluid.errors import InputError

RATE_KEYS = ("request_throughput", "request_goodput", "output_throughput", "total_token_throughput")
TOTAL_KEYS = ("duration", "completed", "total_input_tokens", "total_output_tokens")
SETTING_KEYS = ("date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness", "max_concurrency")
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
_STAT = re.compile(r"^(mean|median|std|p\d+(?:\.\d+)?)_(ttft|tpot|itl|e2el)_ms$")
# what every saved result has, whatever --percentile-metrics chose
REQUIRED_KEYS = ("duration", "completed", "request_throughput", "output_throughput", "total_token_throughput")


def _number(value, *, source: str, key: str, nullable: bool = False):
    return check_number(value, key, minimum=0, allow_none=nullable, source=source, hint="; is this a vLLM --save-result file?")


def read_vllm_result(path: str | Path) -> dict:
    """The metrics of one `vllm bench serve --save-result` file as a flat dict (vLLM's key names)."""
    from fluid.file_input import read_json

    source = str(path)
    data = read_json(path, what="vLLM result file")
    if not isinstance(data, dict):
        raise InputError(f"a vLLM result file holds one JSON object, got {type(data).__name__}", source=source)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise InputError(f"missing {', '.join(missing)}; write it with `vllm bench serve ... --save-result`", source=source)
    row: dict = {"scheduler": "vllm (measured)", "executor": "vllm"}
    for key in SETTING_KEYS:
        if key in data:
            row[key] = data[key]
    for key in TOTAL_KEYS + RATE_KEYS:
        if key in data:
            row[key] = _number(data[key], source=source, key=key, nullable=key == "request_goodput")
    stats = sorted(k for k in data if _STAT.match(k))
    if not stats:
        raise InputError("has no latency statistics (mean_ttft_ms, ...); was --percentile-metrics empty?", source=source)
    for key in stats:
        row[key] = _number(data[key], source=source, key=key)
    return row


def latency_metrics_present(row: dict) -> list[str]:
    """Which of ttft/tpot/itl/e2el the row has statistics for (vLLM's --percentile-metrics)."""
    return [m for m in LATENCY_METRICS if f"mean_{m}_ms" in row]


class MeasuredRow:
    """A vLLM result row where a summary is expected by the serving table: `value(name)` is the
    row's value, None (shown as "-") for what vLLM does not measure (SLO attainment, say)."""

    def __init__(self, row: dict, label: str):
        self.row = {**row, "scheduler": label}

    def value(self, name: str):
        return self.row.get(name)

    def to_dict(self) -> dict:
        return dict(self.row)
