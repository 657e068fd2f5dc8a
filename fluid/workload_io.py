"""Reading and writing workload files (YAML or JSON; JSON is YAML) and presets.

A workload file (issue format; arXiv 2504.11320 for the model it feeds):

    name: p512d20
    kv_capacity_tokens: 137000            # or kv_capacity: {gpu_memory_gib, memory_fraction, model}
    batch_time: {kind: linear3, d0_s: 0.0093, d_kv_s_per_token: 2.6e-7, d_new_s_per_token: 4.7e-5}
    types:                                # or types_from_trace: {path, bins, total_rate_per_s, ...}
      - {name: short, prefill: 512, decode: 20, rate_per_s: 20.0, tbt_slo_s: 0.2}
    arrivals: {kind: poisson}             # optional: gamma (cv), deterministic, trace (trace, time_scale)

Paths inside a file resolve relative to that file; `builtin:NAME` names a trace shipped in
`fluid/data/traces/`. `workload_to_dict` writes the resolved form (explicit types and capacity),
which `workload_from_dict` reads back to an equal workload.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import yaml

from fluid.batch_time import batch_time_from_dict
from fluid.errors import InputError, check_keys, with_source
from fluid.numbers import check_number
from fluid.file_input import check_nesting, duplicate_key_error, read_text
from fluid.workload import ARRIVAL_KINDS, ArrivalSpec, RequestType, Workload

TOP_KEYS = ("name", "kv_capacity_tokens", "kv_capacity", "batch_time", "types", "types_from_trace", "arrivals")
TYPE_KEYS = ("name", "prefill", "decode", "rate_per_s", "tbt_slo_s")
ARRIVAL_KEYS = ("kind", "cv", "trace", "time_scale")
MAX_INTEGER = 2**53  # exact in a float: every count here meets floats in the formulas
MIN_FLOAT, MAX_FLOAT = 1e-12, 1e12  # rates, SLOs, time scales: far outside any real value
_TOP_HINTS = {
    "block_size_tokens": "the KV block size is not part of a workload; set it where the scheduler or "
    "run is configured (the policy or the simulate/run command), and remove it here",
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-7` and `2.6e7` as floats (YAML 1.1 wants `1.0e-7`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_unique_mapping(loader, node, deep=False):
    """A mapping whose keys are all distinct: YAML itself lets the last duplicate win silently."""
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: let PyYAML's own error speak
            break
        if duplicate:
            raise duplicate_key_error(key, line=key_node.start_mark.line + 1, source=loader.fluid_source)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml(text: str, *, what: str, source: str) -> object:
    """Parse YAML/JSON text: nesting and duplicate keys checked, syntax errors with file:line."""
    check_nesting(text, what=what, source=source)
    loader = _Loader(text)
    loader.fluid_source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(f"not valid YAML/JSON ({problem}); fix the syntax at that line", source=where) from None
    finally:
        loader.dispose()


def read_document(path: Path, *, source: str) -> object:
    """Parse a YAML/JSON file; syntax errors become InputError with file:line."""
    data = parse_yaml(read_text(path, what="workload file", source=source), what="workload", source=source)
    if data is None:
        raise InputError("the file is empty; a workload needs name, batch_time, a capacity and types", source=source)
    return data


def load_workload(spec: str | os.PathLike, *, rate_scale: float = 1.0) -> Workload:
    """A workload from a YAML/JSON file or a preset name (`fluid.presets.preset_names()`).

    `rate_scale` multiplies every rate (and speeds up trace arrivals to match).
    """
    from fluid import presets

    path = Path(spec)
    if path.is_file():
        source = str(path)
    elif str(spec) in presets.preset_names():
        path = presets.preset_path(str(spec))
        source = f"preset '{spec}' ({path})"
    elif path.suffix.lower() in (".yaml", ".yml", ".json") or os.sep in str(spec) or "/" in str(spec):
        raise InputError(
            f"no such workload file {str(spec)!r}; give an existing YAML/JSON file or a preset name "
            f"({', '.join(presets.preset_names())})"
        )
    else:
        raise presets.unknown_preset_error(str(spec))
    data = read_document(path, source=source)
    workload = workload_from_dict(data, source=source, base_dir=path.parent)
    if rate_scale != 1.0:
        check_number(rate_scale, "rate_scale", minimum=0, strict_minimum=True, what="rate scale", unit="factor", source=source)
        try:
            workload = workload.scaled(rate_scale)
        except InputError as err:  # a finite scale can still push a rate out of range
            raise InputError(f"rate scale {rate_scale!r} puts a rate out of range ({err})", source=source, field="rate_scale") from err
    return workload


def _name(value, *, source, field) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"must be a non-empty string, got {value!r}", source=source, field=field)
    return value


def positive_int(value, *, source, field, what: str = "tokens") -> int:
    """A positive integer; floats (even 512.0) and booleans are rejected with advice."""
    value = check_number(value, field, integer=True, minimum=1, unit=f"number of {what}", source=source)
    return check_number(value, field, integer=True, maximum=MAX_INTEGER, unit=f"{what} (2^53)", source=source,
                        hint="; larger integers lose precision in the fluid formulas (and no GPU holds that many)")


def positive_float(value, *, source, field, unit: str) -> float:
    """A finite positive number (int or float, not a boolean)."""
    value = check_number(value, field, minimum=0, strict_minimum=True, unit=unit if unit.startswith("(") else f"of {unit}", source=source)
    check_number(value, field, minimum=MIN_FLOAT, maximum=MAX_FLOAT, unit=unit, source=source,
                 hint="; products of such values overflow or underflow in the fluid formulas")
    return float(value)


def _request_type(data, *, index: int, source) -> RequestType:
    field = f"types[{index}]"
    check_keys(data, allowed=TYPE_KEYS, required=("name", "prefill", "decode", "rate_per_s"), source=source, field=field)
    name = _name(data["name"], source=source, field=f"{field}.name")
    slo = data.get("tbt_slo_s")
    return RequestType(
        name=name,
        prefill=positive_int(data["prefill"], source=source, field=f"{field}.prefill"),
        decode=positive_int(data["decode"], source=source, field=f"{field}.decode"),
        rate_per_s=positive_float(data["rate_per_s"], source=source, field=f"{field}.rate_per_s", unit="requests/s"),
        tbt_slo_s=None if slo is None else positive_float(slo, source=source, field=f"{field}.tbt_slo_s", unit="seconds"),
    )


def _arrivals(data, *, source, base_dir: Path | None) -> ArrivalSpec:
    check_keys(data, allowed=ARRIVAL_KEYS, required=("kind",), source=source, field="arrivals")
    kind = data["kind"]
    if kind not in ARRIVAL_KINDS:
        from fluid.errors import closest_key_hint

        hint = closest_key_hint(kind, ARRIVAL_KINDS) if isinstance(kind, str) else ""
        raise InputError(f"unknown arrival kind {kind!r}; use one of {', '.join(ARRIVAL_KINDS)}{hint}", source=source, field="arrivals.kind")
    trace = data.get("trace")
    if trace is not None:
        from fluid.traces import trace_reference

        trace = trace_reference(trace, base_dir=base_dir, source=source, field="arrivals.trace")
    cv = data.get("cv")
    if cv is not None:
        cv = positive_float(cv, source=source, field="arrivals.cv", unit="(coefficient of variation)")
    time_scale = data.get("time_scale", 1.0)
    time_scale = positive_float(time_scale, source=source, field="arrivals.time_scale", unit="(factor)")
    try:
        return ArrivalSpec(kind, cv, trace, time_scale)
    except InputError as err:
        raise with_source(err, source) from None


def _exactly_one(data: dict, first: str, first_meaning: str, second: str, second_meaning: str, *, source) -> bool:
    """Whether `first` is the one present of two alternative keys; an InputError on `first` unless exactly one is."""
    has_first = first in data
    if has_first == (second in data):
        raise InputError(
            f"give exactly one of {first} ({first_meaning}) or {second} ({second_meaning})"
            + ("; both are present" if has_first else ""),
            source=source,
            field=first,
        )
    return has_first


def workload_from_dict(data: dict, *, source: str | None, base_dir: str | Path | None = None) -> Workload:
    """Validate a parsed workload document and build the `Workload`.

    `source` (a file name or preset) is named in every error; `base_dir` resolves relative paths
    (default: the folder of `source` when it is an existing file).
    """
    if base_dir is None and source and Path(source).is_file():
        base_dir = Path(source).parent
    base_dir = Path(base_dir) if base_dir is not None else None
    check_keys(data, allowed=TOP_KEYS, required=("name", "batch_time"), source=source, field="", hints=_TOP_HINTS)
    name = _name(data["name"], source=source, field="name")

    has_tokens = _exactly_one(data, "kv_capacity_tokens", "C in tokens", "kv_capacity",
                              "GPU memory, memory fraction and model", source=source)
    if has_tokens:
        capacity = positive_int(data["kv_capacity_tokens"], source=source, field="kv_capacity_tokens")
    else:
        from fluid.memory import kv_capacity_from_dict

        capacity = kv_capacity_from_dict(data["kv_capacity"], source=source, field="kv_capacity")

    batch_time = batch_time_from_dict(data["batch_time"], source=source, field="batch_time", base_dir=base_dir)

    has_types = _exactly_one(data, "types", "a list of {name, prefill, decode, rate_per_s}", "types_from_trace",
                             "a length trace binned by decode length", source=source)
    if has_types:
        raw = data["types"]
        if not isinstance(raw, list) or not raw:
            raise InputError(f"must be a non-empty list of request types, got {raw!r:.80}", source=source, field="types")
        types = tuple(_request_type(t, index=i, source=source) for i, t in enumerate(raw))
    else:
        from fluid.traces import types_from_trace_dict

        types = types_from_trace_dict(data["types_from_trace"], source=source, base_dir=base_dir, field="types_from_trace")

    arrivals = _arrivals(data["arrivals"], source=source, base_dir=base_dir) if "arrivals" in data else ArrivalSpec()
    try:
        return Workload(name, capacity, batch_time, types, source, arrivals)
    except InputError as err:
        raise with_source(err, source) from None


def _type_to_dict(t: RequestType) -> dict:
    out = {"name": t.name, "prefill": t.prefill, "decode": t.decode, "rate_per_s": float(t.rate_per_s)}
    if t.tbt_slo_s is not None:
        out["tbt_slo_s"] = float(t.tbt_slo_s)
    return out


def workload_to_dict(w: Workload) -> dict:
    """The resolved form: explicit types, capacity in tokens, batch time and arrivals with kinds."""
    return {
        "name": w.name,
        "kv_capacity_tokens": int(w.kv_capacity_tokens),
        "batch_time": w.batch_time.to_dict(),
        "types": [_type_to_dict(t) for t in w.types],
        "arrivals": w.arrivals.to_dict(),
    }


def workload_content_sha256(w: Workload) -> str:
    """SHA-256 of the canonical resolved form (sorted keys, compact JSON), for policy files.

    A replayed trace enters by the hash of its content, not its path, so the same workload on
    another machine hashes the same.
    """
    doc = workload_to_dict(w)
    if w.arrivals.kind == "trace":
        from fluid.traces import resolve_trace_path

        doc["arrivals"]["trace"] = "sha256:" + hashlib.sha256(resolve_trace_path(w.arrivals.trace).read_bytes()).hexdigest()
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
