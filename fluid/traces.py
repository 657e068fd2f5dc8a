"""Request traces: length traces and timestamped traces, read from CSV.

Two CSV layouts are understood, by column name:
- length traces (Vidur / Sarathi-Serve processed traces): `num_prefill_tokens,num_decode_tokens,...`
- timestamped traces (Azure LLM inference 2023, used by Splitwise): `TIMESTAMP,ContextTokens,
  GeneratedTokens`; TIMESTAMP is `YYYY-MM-DD HH:MM:SS[.fraction]` or a number of seconds.

Every malformed row is an `InputError` naming file:line. A trace is named in a workload file by a
path (relative to that file) or as `builtin:NAME`, a copy shipped in `fluid/data/traces/` (see its
README and NOTICE files for origin and attribution). `fluid/trace_binning.py` turns a length trace
into request types.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from fluid.errors import InputError

TRACE_DIR = Path(__file__).resolve().parent / "data" / "traces"
BUILTIN_PREFIX = "builtin:"
_LENGTH_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")
_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


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
            raise InputError(str(err).split(": ", 1)[-1], source=source, field=field) from None
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
            f"column {column} must be a positive integer number of tokens, got {text!r}; fix or delete the row",
            source=where,
        ) from None
    if value <= 0:
        raise InputError(f"column {column} must be a positive number of tokens, got {value}; fix or delete the row", source=where)
    return value


def _timestamp_s(text: str, *, where: str) -> float:
    """Seconds since the epoch (UTC) of `YYYY-MM-DD HH:MM:SS[.fraction]`, or a plain number."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    head, _, fraction = text.partition(".")
    try:
        seconds = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
        return seconds + (float("0." + fraction) if fraction else 0.0)
    except ValueError:
        raise InputError(
            f"TIMESTAMP must look like 2023-11-16 18:15:46.68 or be a number of seconds, got {text!r}",
            source=where,
        ) from None


def _header_index(header: list[str], columns: tuple[str, ...]) -> list[int] | None:
    names = [h.strip() for h in header]
    if all(c in names for c in columns):
        return [names.index(c) for c in columns]
    return None


@lru_cache(maxsize=16)
def _read_csv(path_str: str, mtime_ns: int, size: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None]:
    """(layout, prompt, output, timestamps or None); cached on the file's mtime and size."""
    del mtime_ns, size  # cache key only
    with open(path_str, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InputError("the trace file is empty; it needs a header row and one row per request", source=f"{path_str}:1")
        azure = _header_index(header, _AZURE_COLUMNS)
        lengths = _header_index(header, _LENGTH_COLUMNS)
        if azure is None and lengths is None:
            raise InputError(
                f"unknown trace columns {header!r:.120}; expected {','.join(_LENGTH_COLUMNS)} (length trace) or "
                f"{','.join(_AZURE_COLUMNS)} (timestamped trace)",
                source=f"{path_str}:1",
            )
        cols = azure if azure is not None else lengths
        names = _AZURE_COLUMNS[1:] if azure is not None else _LENGTH_COLUMNS
        prompt, output, stamps = [], [], []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path_str}:{line_no}"
            if len(row) != len(header):
                raise InputError(f"expected {len(header)} comma-separated fields, got {len(row)}: {','.join(row)!r:.120}", source=where)
            if azure is not None:
                stamp = _timestamp_s(row[cols[0]], where=where)
                if stamps and stamp < stamps[-1]:
                    raise InputError(
                        f"TIMESTAMP {row[cols[0]].strip()!r} is earlier than the row before; sort the trace by time",
                        source=where,
                    )
                stamps.append(stamp)
                p_idx, o_idx = cols[1], cols[2]
            else:
                p_idx, o_idx = cols[0], cols[1]
            prompt.append(_int_cell(row[p_idx], where=where, column=names[0]))
            output.append(_int_cell(row[o_idx], where=where, column=names[1]))
    if not prompt:
        raise InputError("the trace has a header but no request rows", source=f"{path_str}:2")
    as_array = lambda values, dtype: np.asarray(values, dtype=dtype)  # noqa: E731
    arrays = [as_array(prompt, np.int64), as_array(output, np.int64)]
    ts = as_array(stamps, np.float64) if azure is not None else None
    for a in [*arrays, ts]:
        if a is not None:
            a.setflags(write=False)  # shared through the cache
    return ("timestamped" if azure is not None else "lengths", arrays[0], arrays[1], ts)


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
            f"has no TIMESTAMP column (it is a length trace: {','.join(_LENGTH_COLUMNS)}); trace replay and "
            f"rate profiles need {','.join(_AZURE_COLUMNS)}",
            source=name,
        )
    arrival_s = stamps - stamps[0]
    arrival_s.setflags(write=False)
    return TimestampTrace(name, prompt, output, arrival_s)


def rate_profile(trace: TimestampTrace, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Arrival rate over time: `(t_s, rate_per_s)`, t_s the left edge of each bin of `bin_s`
    seconds (the last bin covers the end of the trace) and rate the arrivals in that bin divided
    by `bin_s`, so Σ rate·bin_s is the number of requests."""
    if isinstance(bin_s, bool) or not isinstance(bin_s, (int, float)) or not math.isfinite(bin_s) or bin_s <= 0:
        raise InputError(f"must be a finite positive number of seconds, got {bin_s!r}", field="bin_s")
    num_bins = int(trace.duration_s // bin_s) + 1
    idx = np.minimum((trace.arrival_s // bin_s).astype(np.int64), num_bins - 1)
    counts = np.bincount(idx, minlength=num_bins).astype(np.float64)
    return np.arange(num_bins, dtype=np.float64) * bin_s, counts / bin_s


def types_from_trace_dict(data, *, source: str | None, base_dir: Path | None, field: str = "types_from_trace"):
    """Request types from a workload file's `types_from_trace` mapping (see `fluid.trace_binning`)."""
    from fluid.trace_binning import types_from_trace_dict as build

    return build(data, source=source, base_dir=base_dir, field=field)
