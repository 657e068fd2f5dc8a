"""The runtime's reader of `policy.json` (docs/policy-format.md), standard library only.

`thresholds/` writes the file (and ships its JSON Schema); the runtime must not import
`thresholds/` (it pulls scipy), so this module re-checks what the WAIT and Nested WAIT schedulers
rely on: the schema version, required and unknown keys (with their field paths), integer
thresholds and contiguous segments. It returns frozen dataclasses; tests build them directly.

WAIT and Nested WAIT: arXiv 2504.11320 (PAPERS.md §3–4).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, field

from fluid.errors import InputError

SCHEMA_VERSION = 1
POLICY_KINDS = ("wait", "nested_wait")
SERVICE_RULES = ("cohort", "continuous")
PREFILL_MODES = ("representative", "per_class")

_COMMON_KEYS = (
    "schema_version", "policy", "service_rule", "workload", "kv_capacity_tokens", "batch_time",
    "fluid", "guarantees", "drain", "options",
)
_WAIT_KEYS = ("classes",)
_NESTED_KEYS = ("segments", "memory_required_tokens", "prefill_mode", "representative_prefill_tokens")
_NESTED_OPTIONAL = ("instances",)
_CLASS_KEYS = ("name", "prefill", "decode", "rate_per_s", "threshold")
_SEGMENT_KEYS = ("first_stage", "last_stage", "threshold", "continue_prob", "theta")
_INSTANCE_KEYS = ("prefill_tokens", "type_names", "segments", "memory_required_tokens")


# --- the policy, as the runtime sees it ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RuntimeClass:
    """One WAIT class (request type j): prompts of `prefill_tokens`, `decode_tokens` outputs, n_j."""

    name: str
    prefill_tokens: int
    decode_tokens: int
    threshold: int  # n_j: prompts each stage serves per iteration (cohort size)
    rate_per_s: float | None = None  # λ_j the threshold was solved for (informational)

    def __post_init__(self) -> None:
        where = f"classes[{self.name}]"
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"a class needs a non-empty name, got {self.name!r}", field="classes[].name")
        _check_int(self.prefill_tokens, f"{where}.prefill", minimum=1)
        _check_int(self.decode_tokens, f"{where}.decode", minimum=1)
        _check_int(self.threshold, f"{where}.threshold", minimum=1)


@dataclass(frozen=True, slots=True)
class RuntimeSegment:
    """One Nested WAIT segment: stages first_stage..last_stage, each serving up to n_k per iteration."""

    first_stage: int
    last_stage: int
    threshold: int  # n_k
    continue_prob: float = 0.0  # p_k (informational)
    theta: float | None = None  # θ_k of the safety buffer (informational)


@dataclass(frozen=True, slots=True)
class RuntimeInstance:
    """One Nested WAIT instance (per prefill class): its own segments and the types routed to it."""

    prefill_tokens: int
    type_names: tuple[str, ...]
    segments: tuple[RuntimeSegment, ...]
    memory_required_tokens: float | None = None

    def __post_init__(self) -> None:
        _check_int(self.prefill_tokens, "instances[].prefill_tokens", minimum=1)
        _check_segments(self.segments, "instances[].segments")


@dataclass(frozen=True, slots=True)
class RuntimePolicy:
    """A loaded WAIT or Nested WAIT policy. `drain_max_wait_s` is math.inf when no timer is set."""

    policy: str  # "wait" | "nested_wait"
    service_rule: str  # "cohort" | "continuous"
    drain_max_wait_s: float = math.inf
    classes: tuple[RuntimeClass, ...] = ()  # WAIT
    segments: tuple[RuntimeSegment, ...] = ()  # Nested WAIT (the representative instance)
    instances: tuple[RuntimeInstance, ...] = ()  # Nested WAIT per prefill class (optional)
    kv_capacity_tokens: int | None = None
    memory_policy_tokens: float | None = None  # M^π
    memory_required_tokens: float | None = None  # M^π + buffer
    prefill_mode: str = "representative"
    representative_prefill_tokens: int | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICY_KINDS:
            raise InputError(f"must be one of {list(POLICY_KINDS)}, got {self.policy!r}", source=self.source, field="policy")
        if self.service_rule not in SERVICE_RULES:
            raise InputError(
                f"must be one of {list(SERVICE_RULES)}, got {self.service_rule!r}", source=self.source, field="service_rule"
            )
        w = self.drain_max_wait_s
        if isinstance(w, bool) or not isinstance(w, (int, float)) or math.isnan(w) or w < 0:
            raise InputError(
                f"must be a non-negative number of seconds (or null for no timer), got {w!r}",
                source=self.source, field="drain.max_wait_s",
            )
        if self.policy == "wait":
            if not self.classes:
                raise InputError("a WAIT policy needs at least one class", source=self.source, field="classes")
            names = [c.name for c in self.classes]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise InputError(f"class names must be unique, repeated: {dupes}", source=self.source, field="classes")
        else:
            if not self.segments and not self.instances:
                raise InputError("a Nested WAIT policy needs segments", source=self.source, field="segments")
            if self.segments:
                _check_segments(self.segments, "segments", self.source)

    @property
    def is_nested(self) -> bool:
        return self.policy == "nested_wait"


# --- checks shared by the dataclasses and the loader -----------------------------------------
def _check_int(value, field_path: str, *, minimum: int, source: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        hint = " (write it without a decimal point)" if isinstance(value, float) and value.is_integer() else ""
        raise InputError(f"must be an integer ≥ {minimum}, got {value!r}{hint}", source=source, field=field_path)
    if value < minimum:
        raise InputError(f"must be an integer ≥ {minimum}, got {value!r}", source=source, field=field_path)
    return value


def _check_number(value, field_path: str, *, source: str | None, allow_none: bool = False, minimum: float = 0.0):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        none = " or null" if allow_none else ""
        raise InputError(f"must be a finite number ≥ {minimum:g}{none}, got {value!r}", source=source, field=field_path)
    return float(value)


def _check_segments(segments, field_path: str, source: str | None = None) -> None:
    """Segment 1 starts at stage 0; segment k starts right after k−1; thresholds non-increasing."""
    if not segments:
        raise InputError("needs at least one segment", source=source, field=field_path)
    expected_first = 0
    previous_threshold = None
    for k, seg in enumerate(segments):
        where = f"{field_path}[{k}]"
        _check_int(seg.first_stage, f"{where}.first_stage", minimum=0, source=source)
        _check_int(seg.last_stage, f"{where}.last_stage", minimum=0, source=source)
        _check_int(seg.threshold, f"{where}.threshold", minimum=1, source=source)
        if seg.first_stage != expected_first:
            raise InputError(
                f"must be {expected_first} (segment 1 starts at the prefill, stage 0; each later segment right "
                f"after the previous one's last_stage), got {seg.first_stage}",
                source=source, field=f"{where}.first_stage",
            )
        if seg.last_stage < seg.first_stage:
            raise InputError(
                f"must be ≥ first_stage {seg.first_stage}, got {seg.last_stage}", source=source, field=f"{where}.last_stage"
            )
        if previous_threshold is not None and seg.threshold > previous_threshold:
            raise InputError(
                f"thresholds must be non-increasing across segments: {seg.threshold} > {previous_threshold} "
                f"of the segment before", source=source, field=f"{where}.threshold",
            )
        expected_first = seg.last_stage + 1
        previous_threshold = seg.threshold


def _check_keys(obj, field_path: str, required, optional=(), *, source: str | None, elsewhere: dict | None = None):
    if not isinstance(obj, dict):
        raise InputError(f"must be a JSON object, got {type(obj).__name__}", source=source, field=field_path or None)
    allowed = set(required) | set(optional)
    for key in obj:
        if key not in allowed:
            where = f"{field_path}.{key}" if field_path else key
            if elsewhere and key in elsewhere:
                raise InputError(elsewhere[key], source=source, field=where)
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed keys: {sorted(allowed)}"
            raise InputError(f"unknown key {key!r}{hint}", source=source, field=where)
    missing = [k for k in required if k not in obj]
    if missing:
        where = field_path or None
        raise InputError(f"missing required key(s) {missing}", source=source, field=where)


# --- the loader ------------------------------------------------------------------------------
def load_policy(path: str | os.PathLike) -> RuntimePolicy:
    """Read and check a policy JSON file; every problem is an InputError naming file and field."""
    from fluid.file_input import read_json

    source = os.fspath(path)
    data = read_json(source, what="policy file")
    return policy_from_dict(data, source=source)


def policy_from_dict(data, *, source: str | None = None) -> RuntimePolicy:
    """Check a parsed policy object (docs/policy-format.md, schema version 1)."""
    if not isinstance(data, dict):
        raise InputError(f"a policy file holds one JSON object, got {type(data).__name__}", source=source)
    if "schema_version" not in data:
        raise InputError(
            f"missing; this runtime reads schema_version {SCHEMA_VERSION} (write it with `fluidsched solve`)",
            source=source, field="schema_version",
        )
    version = data["schema_version"]
    if isinstance(version, bool) or version != SCHEMA_VERSION or not isinstance(version, int):
        raise InputError(
            f"this runtime reads schema_version {SCHEMA_VERSION}, got {version!r}: re-solve the policy with a "
            "matching `fluidsched solve`", source=source, field="schema_version",
        )
    kind = data.get("policy")
    if kind not in POLICY_KINDS:
        raise InputError(f"must be one of {list(POLICY_KINDS)}, got {kind!r}", source=source, field="policy")
    if kind == "wait":
        required, optional = _COMMON_KEYS + _WAIT_KEYS, ()
        elsewhere = {k: f"key {k!r} belongs to Nested WAIT policies, not to policy 'wait'" for k in _NESTED_KEYS + _NESTED_OPTIONAL}
    else:
        required, optional = _COMMON_KEYS + _NESTED_KEYS, _NESTED_OPTIONAL
        elsewhere = {k: f"key {k!r} belongs to WAIT policies, not to policy 'nested_wait'" for k in _WAIT_KEYS}
    _check_keys(data, "", required, optional, source=source, elsewhere=elsewhere)
    for key in ("workload", "batch_time", "fluid", "guarantees", "options"):
        if not isinstance(data[key], dict):
            raise InputError(f"must be a JSON object, got {type(data[key]).__name__}", source=source, field=key)

    _check_keys(data["drain"], "drain", ("max_wait_s",), source=source)
    max_wait = _check_number(data["drain"]["max_wait_s"], "drain.max_wait_s", source=source, allow_none=True)
    capacity = _check_int(data["kv_capacity_tokens"], "kv_capacity_tokens", minimum=1, source=source)
    m_policy = data["guarantees"].get("memory_policy_tokens")
    m_policy = _check_number(m_policy, "guarantees.memory_policy_tokens", source=source, allow_none=True)
    common = dict(
        policy=kind,
        service_rule=_choice(data["service_rule"], SERVICE_RULES, "service_rule", source),
        drain_max_wait_s=math.inf if max_wait is None else max_wait,
        kv_capacity_tokens=capacity,
        memory_policy_tokens=m_policy,
        source=source,
    )
    if kind == "wait":
        return RuntimePolicy(classes=_parse_classes(data["classes"], source), **common)
    segments = _parse_segments(data["segments"], "segments", source)
    instances = ()
    if "instances" in data:
        instances = _parse_instances(data["instances"], source)
    return RuntimePolicy(
        segments=segments,
        instances=instances,
        memory_required_tokens=_check_number(data["memory_required_tokens"], "memory_required_tokens", source=source),
        prefill_mode=_choice(data["prefill_mode"], PREFILL_MODES, "prefill_mode", source),
        representative_prefill_tokens=_check_int(
            data["representative_prefill_tokens"], "representative_prefill_tokens", minimum=1, source=source
        ),
        **common,
    )


def _choice(value, allowed, field_path: str, source: str | None) -> str:
    if value not in allowed:
        raise InputError(f"must be one of {list(allowed)}, got {value!r}", source=source, field=field_path)
    return value


def _list(value, field_path: str, source: str | None) -> list:
    if not isinstance(value, list) or not value:
        raise InputError(f"must be a non-empty JSON list, got {value!r}", source=source, field=field_path)
    return value


def _parse_classes(raw, source: str | None) -> tuple[RuntimeClass, ...]:
    classes = []
    seen: set[str] = set()
    for i, c in enumerate(_list(raw, "classes", source)):
        where = f"classes[{i}]"
        _check_keys(c, where, _CLASS_KEYS, source=source)
        name = c["name"]
        if not isinstance(name, str) or not name:
            raise InputError(f"must be a non-empty string, got {name!r}", source=source, field=f"{where}.name")
        if name in seen:
            raise InputError(f"class name {name!r} is repeated; names must be unique", source=source, field=f"{where}.name")
        seen.add(name)
        classes.append(
            RuntimeClass(
                name=name,
                prefill_tokens=_check_int(c["prefill"], f"{where}.prefill", minimum=1, source=source),
                decode_tokens=_check_int(c["decode"], f"{where}.decode", minimum=1, source=source),
                threshold=_check_int(c["threshold"], f"{where}.threshold", minimum=1, source=source),
                rate_per_s=_check_number(c["rate_per_s"], f"{where}.rate_per_s", source=source),
            )
        )
    return tuple(classes)


def _parse_segments(raw, field_path: str, source: str | None) -> tuple[RuntimeSegment, ...]:
    segments = []
    for k, s in enumerate(_list(raw, field_path, source)):
        where = f"{field_path}[{k}]"
        _check_keys(s, where, _SEGMENT_KEYS, source=source)
        segments.append(
            RuntimeSegment(
                first_stage=_check_int(s["first_stage"], f"{where}.first_stage", minimum=0, source=source),
                last_stage=_check_int(s["last_stage"], f"{where}.last_stage", minimum=0, source=source),
                threshold=_check_int(s["threshold"], f"{where}.threshold", minimum=1, source=source),
                continue_prob=_check_number(s["continue_prob"], f"{where}.continue_prob", source=source),
                theta=_check_number(s["theta"], f"{where}.theta", source=source, allow_none=True),
            )
        )
    segments = tuple(segments)
    _check_segments(segments, field_path, source)
    return segments


def _parse_instances(raw, source: str | None) -> tuple[RuntimeInstance, ...]:
    instances = []
    for i, inst in enumerate(_list(raw, "instances", source)):
        where = f"instances[{i}]"
        _check_keys(inst, where, _INSTANCE_KEYS, source=source)
        names = inst["type_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise InputError(f"must be a list of type names, got {names!r}", source=source, field=f"{where}.type_names")
        instances.append(
            RuntimeInstance(
                prefill_tokens=_check_int(inst["prefill_tokens"], f"{where}.prefill_tokens", minimum=1, source=source),
                type_names=tuple(names),
                segments=_parse_segments(inst["segments"], f"{where}.segments", source),
                memory_required_tokens=_check_number(
                    inst["memory_required_tokens"], f"{where}.memory_required_tokens", source=source, allow_none=True
                ),
            )
        )
    return tuple(instances)


def as_policy(policy, expected_kind: str) -> RuntimePolicy:
    """Accept a loaded policy or a path; check that it is of the kind the scheduler runs."""
    if isinstance(policy, (str, os.PathLike)):
        policy = load_policy(policy)
    if not isinstance(policy, RuntimePolicy):
        raise InputError(
            f"expected a policy file path or a RuntimePolicy, got {type(policy).__name__}", field="policy"
        )
    if policy.policy != expected_kind:
        raise InputError(
            f"this scheduler runs policy {expected_kind!r} but the file holds {policy.policy!r}: pick the matching "
            f"scheduler ('wait' or 'nested-wait')", source=policy.source, field="policy",
        )
    return policy
