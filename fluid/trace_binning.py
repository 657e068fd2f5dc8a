"""Request types from a length trace, binned by decode (output) length.

Nested WAIT (arXiv 2504.11320) groups output lengths into classes; here each bin of decode lengths
becomes one request type:
- `equal-width`: `bins` bins of equal integer width over [min, max] decode length;
- `quantile`: edges at the decode-length quantiles (ties can merge bins, so fewer may result).
A type's decode length is the rounded mean decode length of its rows; its prefill is the rounded
mean prompt length of its rows (`prefill: per-bin`, the default), or one trace-wide value for
every type (`prefill: mean` or `median`), the "representative prompt" Nested WAIT assumes.
Its rate is `total_rate_per_s` × (rows in the bin / rows in the trace), so rates sum to the total
and empty bins are dropped. Types are named by their decode range, e.g. `d1-50`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fluid.errors import InputError, check_keys, with_source
from fluid.traces import load_length_trace, load_timestamp_trace, trace_reference
from fluid.workload import RequestType

BINNINGS = ("equal-width", "quantile")
PREFILL_RULES = ("per-bin", "mean", "median")
_KEYS = ("path", "bins", "binning", "total_rate_per_s", "by", "prefill", "tbt_slo_s", "tokenizer")


def decode_bin_edges(decode_tokens: np.ndarray, bins: int, binning: str) -> np.ndarray:
    """Integer bin edges e_0 < e_1 < ... ; bin k holds decode lengths in [e_k, e_{k+1})."""
    lo, hi = int(decode_tokens.min()), int(decode_tokens.max())
    if binning == "equal-width":
        edges = lo + np.ceil(np.arange(bins + 1) * (hi - lo + 1) / bins).astype(np.int64)
    else:
        q = np.quantile(decode_tokens, np.linspace(0.0, 1.0, bins + 1))
        edges = np.ceil(q).astype(np.int64)
        edges[0], edges[-1] = lo, hi + 1
    return np.unique(edges)


def types_from_lengths(
    prompt_tokens: np.ndarray,
    decode_tokens: np.ndarray,
    *,
    bins: int,
    binning: str = "equal-width",
    total_rate_per_s: float,
    prefill: str = "per-bin",
    tbt_slo_s: float | None = None,
) -> tuple[RequestType, ...]:
    """One type per non-empty decode-length bin (see the module docstring)."""
    prompt = np.asarray(prompt_tokens)
    decode = np.asarray(decode_tokens)
    edges = decode_bin_edges(decode, bins, binning)
    which = np.searchsorted(edges, decode, side="right") - 1
    shared_prefill = {"mean": np.mean, "median": np.median}.get(prefill)
    types = []
    for k in range(len(edges) - 1):
        in_bin = which == k
        count = int(in_bin.sum())
        if count == 0:
            continue
        p = shared_prefill(prompt) if shared_prefill else prompt[in_bin].mean()
        types.append(
            RequestType(
                name=f"d{edges[k]}-{edges[k + 1] - 1}",
                prefill=max(1, int(round(float(p)))),
                decode=max(1, int(round(float(decode[in_bin].mean())))),
                rate_per_s=total_rate_per_s * count / len(decode),
                tbt_slo_s=tbt_slo_s,
            )
        )
    return tuple(types)


def _sharegpt_trace(data: dict, path: str, *, source, base_dir, field):
    from fluid.sharegpt import load_sharegpt

    folder = data.get("tokenizer")
    if not isinstance(folder, str) or not folder:
        raise InputError("a raw ShareGPT .json trace needs tokenizer: a local Hugging Face model folder with "
                         "tokenizer.json (lengths are counted in that model's tokens)", source=source, field=f"{field}.tokenizer")
    tok = Path(folder).expanduser()
    if not tok.is_absolute() and base_dir is not None:
        tok = Path(base_dir) / tok
    try:
        return load_sharegpt(path, tok)
    except InputError as err:
        raise with_source(err, source) if err.source is None else err from None


def types_from_trace_dict(data, *, source: str | None, base_dir: Path | None, field: str = "types_from_trace"):
    """Validate a `types_from_trace` mapping and bin its trace.

    `{path, bins, binning?: equal-width|quantile, total_rate_per_s?, by?: decode,
      prefill?: per-bin|mean|median, tbt_slo_s?, tokenizer?}`; `total_rate_per_s` may be left out for a
    timestamped trace, which then gives its own mean rate (requests / span). A `.json` path is raw
    ShareGPT, tokenized with the local `tokenizer` folder (`fluid/sharegpt.py`).
    """
    from fluid.workload_io import positive_float, positive_int

    check_keys(data, allowed=_KEYS, required=("path", "bins"), source=source, field=field)
    path = trace_reference(data["path"], base_dir=base_dir, source=source, field=f"{field}.path")
    bins = positive_int(data["bins"], source=source, field=f"{field}.bins", what="bins")
    choices = {"binning": BINNINGS, "by": ("decode",), "prefill": PREFILL_RULES}
    picked = {}
    for key, allowed in choices.items():
        value = data.get(key, allowed[0])
        if value not in allowed:
            raise InputError(f"must be one of {', '.join(allowed)}, got {value!r}", source=source, field=f"{field}.{key}")
        picked[key] = value
    slo = data.get("tbt_slo_s")
    slo = None if slo is None else positive_float(slo, source=source, field=f"{field}.tbt_slo_s", unit="seconds")
    if path.lower().endswith(".json"):
        trace = _sharegpt_trace(data, path, source=source, base_dir=base_dir, field=field)
    else:
        if "tokenizer" in data:
            raise InputError("tokenizer applies to a raw ShareGPT .json trace only; remove it for a CSV trace",
                             source=source, field=f"{field}.tokenizer")
        trace = load_length_trace(path)
    if "total_rate_per_s" in data:
        total = positive_float(data["total_rate_per_s"], source=source, field=f"{field}.total_rate_per_s", unit="requests/s")
    else:
        try:
            total = load_timestamp_trace(path).mean_rate_per_s
        except InputError:
            raise InputError(
                "missing total_rate_per_s; only a timestamped trace can supply its own rate", source=source, field=field
            ) from None
        if not np.isfinite(total):
            raise InputError("the trace spans no time, so it has no rate; give total_rate_per_s", source=source, field=field)
    return types_from_lengths(
        trace.prompt_tokens,
        trace.output_tokens,
        bins=bins,
        binning=picked["binning"],
        total_rate_per_s=total,
        prefill=picked["prefill"],
        tbt_slo_s=slo,
    )
