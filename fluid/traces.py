"""Request traces: length traces and timestamped traces, read from CSV (and raw ShareGPT JSON).

CSV layouts are recognised by column name (docs/traces.md has the details and sources):
- Azure LLM inference 2023 and 2024 (Splitwise, DynamoLLM): `TIMESTAMP,ContextTokens,GeneratedTokens`;
  TIMESTAMP is `YYYY-MM-DD HH:MM:SS[.fraction]` with an optional `+HH:MM` / `Z` suffix (2024),
  no suffix meaning UTC (2023), or a number of seconds;
- BurstGPT: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`; Timestamp in
  seconds from the trace's start;
- Vidur: `arrived_at,num_prefill_tokens,num_decode_tokens` (arrival in seconds) is replayed with
  its times; without `arrived_at` it is a length trace (Vidur / Sarathi-Serve processed traces).
Raw ShareGPT JSON is tokenized with a local tokenizer folder (`fluid/sharegpt.py`).

Every malformed row is an `InputError` naming file:line; so are NaN or infinite times, which
would otherwise drop requests silently. A trace is named in a workload file by a path (relative to
that file) or as `builtin:NAME`, a copy shipped in `fluid/data/traces/` (see its README and NOTICE
files for origin and attribution). `fluid/trace_binning.py` turns a length trace into request types.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from fluid.numbers import check_number
from fluid.errors import InputError

TRACE_DIR = Path(__file__).resolve().parent / "data" / "traces"
BUILTIN_PREFIX = "builtin:"
_LENGTH_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")
MAX_TOKENS_PER_REQUEST = 2**31 - 1  # beyond any context length; keeps sums far inside int64


def builtin_trace_names() -> list[str]:
    return sorted(p.name for p in TRACE_DIR.glob("*.csv"))


def resolve_trace_path(reference: str | Path) -> Path:
    """The file a trace reference names: `builtin:NAME` or a path (absolute, or relative to cwd)."""
    ref = str(reference)
    if ref.startswith(BUILTIN_PREFIX):
        name = ref[len(BUILTIN_PREFIX):]
        path = TRACE_DIR / name
        if "/" in name or not path.is_file():
            raise InputError(
                f"no built-in trace {name!r}; built-in traces: {', '.join(builtin_trace_names())}",
                field="trace",
            )
        return path
    return Path(ref)


def trace_reference(value, *, base_dir: Path | None, source: str | None, field: str) -> str:
    """Validate a trace reference from a workload file: `builtin:NAME` stays as it is (portable);
    a path is resolved against `base_dir` (the workload file's folder) to an absolute path."""
    if not isinstance(value, str) or not value:
        raise InputError(f"must be a trace file path or builtin:NAME, got {value!r}", source=source, field=field)
    if value.startswith(BUILTIN_PREFIX):
        try:
            resolve_trace_path(value)
        except InputError as err:
            raise InputError(err.detail, source=source, field=field) from None
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise InputError(
            f"trace file {value!r} not found (looked at {path}); paths are relative to the workload "
            f"file, or use builtin:NAME ({', '.join(builtin_trace_names())})",
            source=source,
            field=field,
        )
    return str(path.resolve())


@dataclass(frozen=True, eq=False)  # arrays: compare with numpy, not ==
class LengthTrace:
    """Per-request prompt and output lengths in tokens (equal-length int64 arrays)."""

    path: str
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt_tokens)


@dataclass(frozen=True, eq=False)
class TimestampTrace(LengthTrace):
    """A length trace with arrival offsets in seconds from the first row (non-decreasing)."""

    arrival_s: np.ndarray = None  # type: ignore[assignment]  # always set by load_timestamp_trace

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    @property
    def mean_rate_per_s(self) -> float:
        """Requests per second over the trace's span (count / span)."""
        return len(self) / self.duration_s if self.duration_s > 0 else math.inf


def _int_cell(text: str, *, where: str, column: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InputError(
            f"column {column} must be a positive integer number of tokens, got {text!r:.40}; fix or delete the row",
            source=where,
        ) from None
    check_number(value, None, integer=True, minimum=1, unit="number of tokens", what=f"column {column}", source=where,
                 hint="; fix or delete the row")
    if value > MAX_TOKENS_PER_REQUEST:
        raise InputError(f"column {column} has {value} tokens, more than any model's context ({MAX_TOKENS_PER_REQUEST}); fix or delete the row", source=where)
    return value


def _seconds_cell(text: str, *, where: str, column: str) -> float:
    """A finite number of seconds (Vidur's arrived_at, BurstGPT's Timestamp)."""
    try:
        value = float(text.strip())
    except ValueError:
        raise InputError(f"column {column} must be a number of seconds, got {text!r:.40}", source=where) from None
    return check_number(value, None, unit="of seconds", what=f"column {column}", source=where, hint="; fix or delete the row")


def _timestamp_s(text: str, *, where: str, column: str = "TIMESTAMP") -> float:
    """Seconds since the epoch of `YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM|Z]` (no suffix = UTC), or a
    plain finite number of seconds. Azure 2023 writes 7 fraction digits, Azure 2024 six and `+00:00`."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return check_number(number, None, unit="of seconds", what=column, source=where, hint="; fix or delete the row")
    match = _DATETIME.match(text)
    if match is None:
        raise InputError(
            f"{column} must look like 2023-11-16 18:15:46.68 (optionally with +00:00) or be a number of seconds, got {text!r:.40}",
            source=where,
        )
    head, fraction, zone = match.group(1), match.group(2) or "", match.group(3)
    try:
        stamp = datetime.fromisoformat(head)
        if zone:
            stamp = stamp.replace(tzinfo=timezone.utc if zone == "Z" else datetime.strptime(zone.replace(":", ""), "%z").tzinfo)
        else:
            stamp = stamp.replace(tzinfo=timezone.utc)
    except ValueError:
        raise InputError(f"{column} {text!r:.40} is not a valid date and time", source=where) from None
    return stamp.timestamp() + (float("0." + fraction) if fraction else 0.0)


_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$")


@dataclass(frozen=True)
class _Layout:
    """One CSV layout, recognised by its column names."""

    name: str
    prompt_column: str
    output_column: str
    time_column: str | None = None
    time_parser: object = None


# checked in this order: the first whose columns are all present wins
_LAYOUTS = (
    _Layout("azure", "ContextTokens", "GeneratedTokens", "TIMESTAMP", _timestamp_s),
    _Layout("burstgpt", "Request tokens", "Response tokens", "Timestamp", _seconds_cell),
    _Layout("vidur-timestamped", "num_prefill_tokens", "num_decode_tokens", "arrived_at", _seconds_cell),
    _Layout("lengths", "num_prefill_tokens", "num_decode_tokens"),
)
_LAYOUT_HELP = ("TIMESTAMP,ContextTokens,GeneratedTokens (Azure 2023/2024); Timestamp,Request tokens,Response tokens "
                "(BurstGPT); arrived_at,num_prefill_tokens,num_decode_tokens (Vidur, timestamped) or "
                "num_prefill_tokens,num_decode_tokens (lengths only)")


def _layout_of(header: list[str]) -> tuple[_Layout, dict[str, int]] | None:
    names = [h.strip() for h in header]
    for layout in _LAYOUTS:
        wanted = [c for c in (layout.time_column, layout.prompt_column, layout.output_column) if c]
        if all(c in names for c in wanted):
            return layout, {c: names.index(c) for c in wanted}
    return None


@lru_cache(maxsize=16)
def _read_csv(path_str: str, mtime_ns: int, size: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None]:
    """(layout, prompt, output, timestamps or None); cached on the file's mtime and size."""
    del mtime_ns, size  # cache key only
    from fluid.file_input import read_text

    text = read_text(path_str, what="trace file")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise InputError("the trace file is empty; it needs a header row and one row per request", source=f"{path_str}:1")
    found = _layout_of(header)
    if found is None:
        raise InputError(f"unknown trace columns {header!r:.120}; expected one of: {_LAYOUT_HELP}", source=f"{path_str}:1")
    layout, index = found
    prompt, output, stamps = [], [], []
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path_str}:{line_no}"
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} comma-separated fields, got {len(row)}: {','.join(row)!r:.120}", source=where)
        if layout.time_column is not None:
            cell = row[index[layout.time_column]]
            stamp = layout.time_parser(cell, where=where, column=layout.time_column)
            if stamps and stamp < stamps[-1]:
                raise InputError(
                    f"{layout.time_column} {cell.strip()!r} is earlier than the row before; sort the trace by time",
                    source=where,
                )
            stamps.append(stamp)
        if layout.name == "burstgpt" and row[index[layout.output_column]].strip() == "0":
            raise InputError(
                "Response tokens is 0: BurstGPT marks a failed request so; use the BurstGPT_without_fails_*.csv files "
                "or delete the failed rows",
                source=where,
            )
        prompt.append(_int_cell(row[index[layout.prompt_column]], where=where, column=layout.prompt_column))
        output.append(_int_cell(row[index[layout.output_column]], where=where, column=layout.output_column))
    if not prompt:
        raise InputError("the trace has a header but no request rows", source=f"{path_str}:2")
    timed = layout.time_column is not None
    return _frozen(("timestamped" if timed else "lengths"), prompt, output, stamps if timed else None)


def _frozen(layout: str, prompt, output, stamps) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None]:
    arrays = [np.asarray(prompt, np.int64), np.asarray(output, np.int64)]
    ts = np.asarray(stamps, np.float64) if stamps is not None else None
    for a in [*arrays, ts]:
        if a is not None:
            a.setflags(write=False)  # shared through the cache
    return (layout, arrays[0], arrays[1], ts)


def _read(path: str | Path) -> tuple[str, str, np.ndarray, np.ndarray, np.ndarray | None]:
    p = resolve_trace_path(path)
    try:
        st = p.stat()
    except OSError as err:
        raise InputError(f"cannot read the trace file: {err.strerror or err}; check the path", source=str(p)) from None
    return (str(p), *_read_csv(str(p), st.st_mtime_ns, st.st_size))


def load_length_trace(path: str | Path) -> LengthTrace:
    """Prompt and output lengths of every row of a length or timestamped trace."""
    name, _, prompt, output, _ = _read(path)
    return LengthTrace(name, prompt, output)


def load_timestamp_trace(path: str | Path) -> TimestampTrace:
    """A timestamped trace: arrival offsets in s from the first row, prompt and output lengths."""
    name, layout, prompt, output, stamps = _read(path)
    if layout != "timestamped":
        raise InputError(
            f"has no arrival-time column (it is a length trace: {','.join(_LENGTH_COLUMNS)}); trace replay and "
            f"rate profiles need a timestamped layout: {_LAYOUT_HELP}",
            source=name,
        )
    arrival_s = stamps - stamps[0]
    arrival_s.setflags(write=False)
    return TimestampTrace(name, prompt, output, arrival_s)


def rate_profile(trace: TimestampTrace, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Arrival rate over time: `(t_s, rate_per_s)`, t_s the left edge of each bin of `bin_s`
    seconds (the last bin covers the end of the trace) and rate the arrivals in that bin divided
    by `bin_s`, so Σ rate·bin_s is the number of requests."""
    check_number(bin_s, "bin_s", minimum=0, strict_minimum=True, unit="of seconds")
    num_bins = int(trace.duration_s // bin_s) + 1
    idx = np.minimum((trace.arrival_s // bin_s).astype(np.int64), num_bins - 1)
    counts = np.bincount(idx, minlength=num_bins).astype(np.float64)
    return np.arange(num_bins, dtype=np.float64) * bin_s, counts / bin_s


def types_from_trace_dict(data, *, source: str | None, base_dir: Path | None, field: str = "types_from_trace"):
    """Request types from a workload file's `types_from_trace` mapping (see `fluid.trace_binning`)."""
    from fluid.trace_binning import types_from_trace_dict as build

    return build(data, source=source, base_dir=base_dir, field=field)
