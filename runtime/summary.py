"""The typed run summary: what `summary.json`, `--json`, the tables and the figures all read.

`RunSummary` is frozen and every field carries its unit in its name. `to_dict()` is the one JSON
form (the keys of `summary.json`); `RunSummary.from_dict` reads it back and refuses a file that
lacks a field (a renamed or missing key is an error, never a silent zero). Definitions of every
field: `runtime/metrics.py` (the fluid benchmark's measures) and `runtime/serving_metrics.py`
(vLLM's serving-benchmark measures); the mapping between the two is in `docs/metrics.md`.

Fields the run does not define are None (e.g. TBT SLO attainment when no request has a TBT SLO).
`percentiles_ms` holds the serving metrics' extra percentiles (`--metric-percentiles`) under
vLLM's keys (`p90_ttft_ms`), flattened into the JSON; `details` holds the executor's own
measurements (the GPU run's device, versions, median step time), also flattened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from fluid.errors import InputError


@dataclass(frozen=True)
class RunSummary:
    scheduler: str
    executor: str  # simulated, gpu or cpu
    replicas: int
    # --- counts ------------------------------------------------------------------------------
    num_requests: int
    completed: int
    measured_requests: int  # completed and arrived at or after the warm-up cut
    restarts: int
    restarted_requests: int
    # --- the measurement window (the fluid benchmark's) ---------------------------------------
    warmup_s: float
    window_start_s: float
    window_stop_s: float
    sim_end_s: float
    horizon_s: float | None
    # --- throughput: decode tokens as the fluid benchmark counts them (throughput*) ------------
    decode_throughput_tokens_per_s: float  # decode-stage tokens in the window per second
    overall_decode_throughput_tokens_per_s: float  # decode-stage tokens of the run / sim_end_s
    # --- latency of measured requests (seconds) -----------------------------------------------
    mean_latency_s: float | None
    p50_latency_s: float | None
    p90_latency_s: float | None
    p99_latency_s: float | None
    mean_ttft_s: float | None
    p50_ttft_s: float | None
    p99_ttft_s: float | None
    mean_tbt_s: float | None
    p50_tbt_s: float | None
    p90_tbt_s: float | None
    p99_tbt_s: float | None
    max_tbt_s: float | None
    # --- SLO attainment -----------------------------------------------------------------------
    tbt_slo_requests: int
    tbt_slo_attainment: float | None
    tbt_slo_token_attainment: float | None
    ttft_slo_s: float | None
    ttft_slo_attainment: float | None
    # --- vLLM serving-benchmark metrics (all completed requests, milliseconds) -----------------
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    request_goodput: float | None
    goodput_slo_ms: dict | None  # {'ttft': MS, 'tpot': MS, 'e2el': MS} the goodput was taken under
    mean_ttft_ms: float
    median_ttft_ms: float
    std_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    std_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    std_itl_ms: float
    p99_itl_ms: float
    mean_e2el_ms: float
    median_e2el_ms: float
    std_e2el_ms: float
    p99_e2el_ms: float
    # --- steps and memory ---------------------------------------------------------------------
    num_steps: int
    busy_s: float
    mean_step_s: float | None
    mean_batch_size: float | None
    max_batch_size: int
    mean_decodes_per_step: float | None
    mean_prefills_per_step: float | None
    mixed_step_fraction: float | None
    prefill_only_step_fraction: float | None
    decode_only_step_fraction: float | None
    prefill_token_fraction: float | None
    peak_kv_tokens: int  # while a step held its memory
    mean_kv_tokens: float  # time-weighted over steps
    kv_capacity_tokens: int
    evictions: int
    # --- cost of the run ----------------------------------------------------------------------
    wall_s: float | None = None
    request_steps: int | None = None
    mean_requests_per_step_by_type: dict | None = None  # traced runs only
    percentiles_ms: dict = field(default_factory=dict)  # extra serving percentiles, vLLM keys
    details: dict = field(default_factory=dict)  # executor-specific measurements (GPU run)

    def to_dict(self) -> dict:
        """The JSON form (`summary.json`, `--json`): every field, extras flattened; no NaN/inf."""
        out = {}
        for f in fields(self):
            if f.name in ("percentiles_ms", "details"):
                continue
            out[f.name] = _finite(getattr(self, f.name))
        out.update({k: _finite(v) for k, v in self.percentiles_ms.items()})
        out.update({k: _finite(v) for k, v in self.details.items()})
        return out

    @classmethod
    def from_dict(cls, data: dict, *, source: str | None = None) -> RunSummary:
        """Read `to_dict()`'s form back; a missing field is an InputError naming it."""
        if not isinstance(data, dict):
            raise InputError(f"a run summary is a JSON object, got {type(data).__name__}", source=source)
        names = [f.name for f in fields(cls) if f.name not in ("percentiles_ms", "details")]
        optional = {"wall_s", "request_steps", "mean_requests_per_step_by_type"}
        missing = [n for n in names if n not in data and n not in optional]
        if missing:
            raise InputError(
                f"the run summary lacks field(s) {missing}: it was written by another version; rerun the command that made it",
                source=source, field=missing[0],
            )
        values = {n: data[n] for n in names if n in data}
        rest = {k: v for k, v in data.items() if k not in values}
        values["percentiles_ms"] = {k: v for k, v in rest.items() if _is_percentile_key(k)}
        values["details"] = {k: v for k, v in rest.items() if not _is_percentile_key(k)}
        return cls(**values)

    def value(self, name: str):
        """A field (or a flattened extra) by name; KeyError when the summary has no such value."""
        if name in self.percentiles_ms:
            return self.percentiles_ms[name]
        if name in self.details:
            return self.details[name]
        if name in _FIELD_NAMES:
            return getattr(self, name)
        raise KeyError(f"a run summary has no field {name!r}")


def _is_percentile_key(key: str) -> bool:
    if not (key.startswith("p") and key.endswith("_ms")):
        return False
    head, _, metric = key[1:-3].partition("_")
    return metric in ("ttft", "tpot", "itl", "e2el") and head.replace(".", "", 1).isdigit()


def _finite(value):
    """JSON has no NaN or infinity: such a value is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_FIELD_NAMES = frozenset(f.name for f in fields(RunSummary))
