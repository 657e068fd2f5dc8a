"""The policy file: frozen dataclasses ⇄ JSON, schema version 2 (docs/policy-format.md).

`save_policy(policy, path)` writes the JSON; `load_policy(path)` reads it with the standard
library only (the GPU machine has no jsonschema), checks the version, the keys (unknown ones get
the closest valid name), types and thresholds (field paths such as `classes[1].threshold`), then
re-evaluates the threshold conditions that the file alone determines; round trip
`load_policy(save_policy(p)) == p`. The JSON Schema ships next to this module as
`policy.schema.json` (`SCHEMA_PATH`). WAIT and Nested WAIT: arXiv 2504.11320.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fluid.numbers import check_number
from fluid.errors import InputError
from thresholds.conditions import Condition

if TYPE_CHECKING:
    from thresholds.adaptive import AdaptiveSettings

SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
SERVICE_RULES = ("cohort", "continuous", "capped")


def _check_threshold(threshold, field: str) -> None:
    """Integers ≥ 1 for the cohort and continuous rules, reals > 0 for the capped rule (the reader
    and `RuntimePolicy` check which applies)."""
    check_number(threshold, field, minimum=0, strict_minimum=True, what="a threshold")


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    """The workload a policy was solved for; `rates_per_s` keeps the workload's type order."""

    name: str
    content_sha256: str
    rates_per_s: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "content_sha256": self.content_sha256, "rates_per_s": dict(self.rates_per_s)}


@dataclass(frozen=True, slots=True)
class FluidSummary:
    """M*, ΔT* (None when the load factor is ≥ 1), throughput*, load factor L, capacity scale θ*."""

    memory_star_tokens: float | None
    iteration_time_star_s: float | None
    throughput_star_tokens_per_s: float
    load_factor: float
    capacity_scale: float

    def to_dict(self) -> dict:
        return {
            "memory_star_tokens": self.memory_star_tokens,
            "iteration_time_star_s": self.iteration_time_star_s,
            "throughput_star_tokens_per_s": self.throughput_star_tokens_per_s,
            "load_factor": self.load_factor,
            "capacity_scale": self.capacity_scale,
        }


@dataclass(frozen=True, slots=True)
class Guarantees:
    """M^π, the safety buffer (0 for WAIT), their sum, δ and horizon (None for WAIT), conditions."""

    memory_policy_tokens: float
    buffer_tokens: float
    memory_required_tokens: float
    delta: float | None
    horizon_s: float | None
    conditions: tuple[Condition, ...]

    def to_dict(self) -> dict:
        return {
            "memory_policy_tokens": self.memory_policy_tokens,
            "buffer_tokens": self.buffer_tokens,
            "memory_required_tokens": self.memory_required_tokens,
            "delta": self.delta,
            "horizon_s": self.horizon_s,
            "conditions": [c.to_dict() for c in self.conditions],
        }


@dataclass(frozen=True, slots=True)
class Drain:
    """A partial cohort is admitted once its oldest prompt has waited `max_wait_s` (or arrivals end)."""

    max_wait_s: float

    def to_dict(self) -> dict:
        return {"max_wait_s": self.max_wait_s}


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """The memory a capped policy needs (docs/capped-rule.md): expected resident KV at steady
    state, the worst case (every resident at full length), the theorem's M^π + buffer (Nested WAIT;
    None for WAIT), and which of them, times 1 + margin for `expected`, must fit C: `required_tokens`."""

    bound: str  # "expected" | "worst" | "theorem"
    margin: float
    expected_tokens: float
    worst_case_tokens: float
    theorem_tokens: float | None
    required_tokens: float

    def to_dict(self) -> dict:
        return {"bound": self.bound, "margin": self.margin, "expected_tokens": self.expected_tokens,
                "worst_case_tokens": self.worst_case_tokens, "theorem_tokens": self.theorem_tokens,
                "required_tokens": self.required_tokens}


@dataclass(frozen=True, slots=True)
class CappedSection:
    """What the capped rule adds: the per-request prefill chunk (None: whole prompts) and memory."""

    prefill_chunk_tokens: int | None
    memory: MemoryReport
    adaptive: "AdaptiveSettings | None" = None  # re-solve the caps online (docs/adaptive.md)

    def to_dict(self) -> dict:
        out = {"prefill_chunk_tokens": self.prefill_chunk_tokens, "memory": self.memory.to_dict()}
        if self.adaptive is not None:
            out["adaptive"] = self.adaptive.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class ClassThreshold:
    """WAIT: threshold n_j (prompts served per stage per iteration) of one request type."""

    name: str
    prefill: int
    decode: int
    rate_per_s: float
    threshold: int

    def __post_init__(self) -> None:
        _check_threshold(self.threshold, f"classes[{self.name}].threshold")

    def to_dict(self) -> dict:
        return {"name": self.name, "prefill": self.prefill, "decode": self.decode,
                "rate_per_s": self.rate_per_s, "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class Segment:
    """Nested WAIT: stages first_stage..last_stage, threshold n_k, p_k, θ_k (None: no positive root)."""

    first_stage: int
    last_stage: int
    threshold: int
    continue_prob: float
    theta: float | None

    def __post_init__(self) -> None:
        _check_threshold(self.threshold, "segments[].threshold")

    def to_dict(self) -> dict:
        return {"first_stage": self.first_stage, "last_stage": self.last_stage, "threshold": self.threshold,
                "continue_prob": self.continue_prob, "theta": self.theta}


@dataclass(frozen=True, slots=True)
class NestedInstance:
    """One Nested WAIT instance of a prefill class (prefill_mode "per_class")."""

    prefill_tokens: int
    type_names: tuple[str, ...]
    segments: tuple[Segment, ...]
    memory_required_tokens: float

    def to_dict(self) -> dict:
        return {"prefill_tokens": self.prefill_tokens, "type_names": list(self.type_names),
                "segments": [s.to_dict() for s in self.segments], "memory_required_tokens": self.memory_required_tokens}


@dataclass(frozen=True, slots=True)
class _Common:
    service_rule: str
    workload: WorkloadRef
    kv_capacity_tokens: int
    batch_time: dict
    fluid: FluidSummary
    guarantees: Guarantees
    drain: Drain
    options: dict

    def _common_dict(self, policy: str) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "policy": policy,
            "service_rule": self.service_rule,
            "workload": self.workload.to_dict(),
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "batch_time": dict(self.batch_time),
            "fluid": self.fluid.to_dict(),
            "guarantees": self.guarantees.to_dict(),
            "drain": self.drain.to_dict(),
            "options": self.options,
        }


@dataclass(frozen=True, slots=True)
class WaitPolicy(_Common):
    classes: tuple[ClassThreshold, ...] = ()
    capped: CappedSection | None = None  # the capped rule only
    kind = "wait"

    def to_dict(self) -> dict:
        out = {**self._common_dict("wait"), "classes": [c.to_dict() for c in self.classes]}
        if self.capped is not None:
            out["capped"] = self.capped.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class NestedWaitPolicy(_Common):
    segments: tuple[Segment, ...] = ()
    memory_required_tokens: float = 0.0
    prefill_mode: str = "representative"
    representative_prefill_tokens: int = 1
    instances: tuple[NestedInstance, ...] | None = None
    capped: CappedSection | None = None  # the capped rule only
    kind = "nested_wait"

    def to_dict(self) -> dict:
        out = {
            **self._common_dict("nested_wait"),
            "segments": [s.to_dict() for s in self.segments],
            "memory_required_tokens": self.memory_required_tokens,
            "prefill_mode": self.prefill_mode,
            "representative_prefill_tokens": self.representative_prefill_tokens,
        }
        if self.instances is not None:
            out["instances"] = [i.to_dict() for i in self.instances]
        if self.capped is not None:
            out["capped"] = self.capped.to_dict()
        return out


Policy = WaitPolicy | NestedWaitPolicy


def policy_to_json(policy: Policy) -> str:
    """Canonical text: two-space indent, keys in contract order, finite numbers only."""
    return json.dumps(policy.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def save_policy(policy: Policy, path: str | Path) -> Path:
    from fluid.file_output import atomic_write_text, check_out_file

    path = check_out_file(path, flag="--output")
    return atomic_write_text(path, policy_to_json(policy), record=True)


def load_policy(path: str | Path, *, allow_violations: bool | None = None) -> Policy:
    """Read and validate a policy file. Thresholds that break a condition the file determines are
    an InputError unless `allow_violations` (default: the file's own `options.allow_violations`)."""
    from thresholds.policy_parse import parse_policy  # the parser needs the classes above

    from fluid.file_input import read_json

    path = Path(path)
    raw = read_json(path, what="policy file")
    return parse_policy(raw, source=str(path), allow_violations=allow_violations)


