"""What the WAIT and Nested WAIT schedulers serve from a policy file (docs/policy-format.md).

The file has one reader and one writer, `thresholds.policy` (standard library only, so it runs on
the GPU machine too): it checks the structure against everything `thresholds/policy.schema.json`
says and re-evaluates the threshold conditions. This module turns the `Policy` it returns into a
`RuntimePolicy`, the part a scheduler needs (rule, drain timer, thresholds, segments, instances),
plus the workload it was solved for so that a run can refuse a policy of another workload
(`runtime.simrun.check_policy_matches`). Tests and benchmarks may build a `RuntimePolicy`
directly; its constructor checks what the schedulers rely on, with the reader's segment rule.

WAIT and Nested WAIT: arXiv 2504.11320, §WAIT and §Nested WAIT.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from fluid.numbers import check_number
from fluid.errors import InputError
from thresholds.adaptive import AdaptiveSettings
from thresholds.policy import SERVICE_RULES as ALL_SERVICE_RULES
from thresholds.policy import NestedWaitPolicy, Policy, WorkloadRef
from thresholds.policy import load_policy as read_policy_file
from thresholds.policy_parse import parse_policy, segment_chain_problem

POLICY_KINDS = ("wait", "nested_wait")
# the rules of the cohort engine (`runtime/schedulers/threshold_base.py`); "capped" has its own
# schedulers (`runtime/schedulers/capped.py`)
SERVICE_RULES = ("cohort", "continuous")
PREFILL_MODES = ("representative", "per_class")
__all__ = ["SERVICE_RULES", "ALL_SERVICE_RULES", "RuntimeClass", "RuntimeSegment", "RuntimeInstance", "InstanceRouter", "RuntimePolicy",
           "runtime_policy", "load_policy", "policy_from_dict", "as_policy"]


def _check_int(value, field_path: str, *, minimum: int, source: str | None = None) -> int:
    return check_number(value, field_path, integer=True, minimum=minimum, source=source)


def _check_threshold(value, field_path: str, source: str | None = None) -> None:
    """n_j or n_k: an integer ≥ 1 (cohort and continuous rules) or a real > 0 (capped rule)."""
    check_number(value, field_path, minimum=0, strict_minimum=True, what="a threshold", source=source)


@dataclass(frozen=True, slots=True)
class RuntimeClass:
    """One WAIT class (request type j): prompts of `prefill_tokens`, `decode_tokens` outputs, n_j."""

    name: str
    prefill_tokens: int
    decode_tokens: int
    threshold: int | float  # n_j: prompts each stage serves per iteration
    rate_per_s: float | None = None  # λ_j the threshold was solved for

    def __post_init__(self) -> None:
        where = f"classes[{self.name}]"
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"a class needs a non-empty name, got {self.name!r}", field="classes[].name")
        _check_int(self.prefill_tokens, f"{where}.prefill", minimum=1)
        _check_int(self.decode_tokens, f"{where}.decode", minimum=1)
        _check_threshold(self.threshold, f"{where}.threshold")


@dataclass(frozen=True, slots=True)
class RuntimeSegment:
    """One Nested WAIT segment: stages first_stage..last_stage, each serving up to n_k per iteration."""

    first_stage: int
    last_stage: int
    threshold: int | float  # n_k
    continue_prob: float = 0.0  # p_k
    theta: float | None = None  # θ_k of the safety buffer


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


class InstanceRouter:
    """Which Nested WAIT instance serves a request: the one its type is routed to (the first that
    names it), else the one with the nearest `prefill_tokens` (ties: the smaller). One rule for the
    cohort and the capped schedulers."""

    def __init__(self, instances) -> None:
        self._by_type: dict[str, int] = {}
        for k, inst in enumerate(instances):
            for name in inst.type_names:
                self._by_type.setdefault(name, k)
        self._prefills = [(inst.prefill_tokens, k) for k, inst in enumerate(instances)]

    def index_of(self, request) -> int:
        k = self._by_type.get(request.type_name) if request.type_name is not None else None
        if k is None:
            prompt = request.prompt_tokens
            k = min(self._prefills, key=lambda pk: (abs(pk[0] - prompt), pk[0]))[1]
        return k


def _check_segments(segments, field_path: str, source: str | None = None) -> None:
    if not segments:
        raise InputError("needs at least one segment", source=source, field=field_path)
    for k, seg in enumerate(segments):
        _check_int(seg.first_stage, f"{field_path}[{k}].first_stage", minimum=0, source=source)
        _check_int(seg.last_stage, f"{field_path}[{k}].last_stage", minimum=0, source=source)
        _check_threshold(seg.threshold, f"{field_path}[{k}].threshold", source)
    problem = segment_chain_problem(segments)
    if problem is not None:
        raise InputError(problem[1], source=source, field=field_path + problem[0])


@dataclass(frozen=True, slots=True)
class RuntimePolicy:
    """A WAIT or Nested WAIT policy as the schedulers see it. `drain_max_wait_s` is math.inf when
    no timer is set (only directly built policies; the file always sets one)."""

    policy: str  # "wait" | "nested_wait"
    service_rule: str  # "cohort" | "continuous" | "capped"
    drain_max_wait_s: float = math.inf
    classes: tuple[RuntimeClass, ...] = ()  # WAIT
    segments: tuple[RuntimeSegment, ...] = ()  # Nested WAIT (the representative instance)
    instances: tuple[RuntimeInstance, ...] = ()  # Nested WAIT per prefill class (optional)
    kv_capacity_tokens: int | None = None
    memory_policy_tokens: float | None = None  # M^π
    memory_required_tokens: float | None = None  # M^π + buffer
    prefill_mode: str = "representative"
    representative_prefill_tokens: int | None = None
    solved_for: WorkloadRef | None = None  # the workload (hash, rates) the file was solved for
    prefill_chunk_tokens: int | None = None  # the capped rule's per-request prefill chunk (None: whole prompts)
    batch_time: dict | None = None  # the batch-time model the policy was solved with
    slack: float | None = None  # the slack `solve` chose
    memory_bound: str | None = None  # capped rule: which memory bound must fit C, and its margin
    memory_margin: float | None = None
    adaptive: AdaptiveSettings | None = None  # capped rule: re-solve the caps online (docs/adaptive.md)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICY_KINDS:
            raise InputError(f"must be one of {list(POLICY_KINDS)}, got {self.policy!r}", source=self.source, field="policy")
        if self.service_rule not in ALL_SERVICE_RULES:
            raise InputError(
                f"must be one of {list(ALL_SERVICE_RULES)}, got {self.service_rule!r}", source=self.source, field="service_rule"
            )
        w = self.drain_max_wait_s
        if w != math.inf:  # inf: no drain timer (a policy built in code; a file cannot carry it)
            check_number(w, "drain.max_wait_s", minimum=0, unit="of seconds", source=self.source)
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
        if self.service_rule != "capped":
            thresholds = [c.threshold for c in self.classes] + [s.threshold for s in self.segments]
            thresholds += [s.threshold for i in self.instances for s in i.segments]
            if any(isinstance(n, float) for n in thresholds):
                raise InputError(f"the {self.service_rule} rule serves whole prompts per stage: thresholds must be "
                                 f"integers, got {thresholds}; fractional thresholds need the capped rule",
                                 source=self.source, field="service_rule")

    @property
    def is_nested(self) -> bool:
        return self.policy == "nested_wait"


def _segments(segs) -> tuple[RuntimeSegment, ...]:
    return tuple(RuntimeSegment(s.first_stage, s.last_stage, s.threshold, s.continue_prob, s.theta) for s in segs)


def runtime_policy(policy: Policy, *, source: str | None = None) -> RuntimePolicy:
    """The scheduler's view of a policy read (and checked) by `thresholds.policy`."""
    common = dict(
        service_rule=policy.service_rule,
        drain_max_wait_s=policy.drain.max_wait_s,
        kv_capacity_tokens=policy.kv_capacity_tokens,
        memory_policy_tokens=policy.guarantees.memory_policy_tokens,
        memory_required_tokens=policy.guarantees.memory_required_tokens,
        solved_for=policy.workload,
        prefill_chunk_tokens=policy.capped.prefill_chunk_tokens if policy.capped is not None else None,
        batch_time=dict(policy.batch_time),
        slack=policy.options.get("slack") if isinstance(policy.options, dict) else None,
        memory_bound=policy.capped.memory.bound if policy.capped is not None else None,
        memory_margin=policy.capped.memory.margin if policy.capped is not None else None,
        adaptive=policy.capped.adaptive if policy.capped is not None else None,
        source=source,
    )
    if not isinstance(policy, NestedWaitPolicy):
        classes = tuple(RuntimeClass(c.name, c.prefill, c.decode, c.threshold, c.rate_per_s) for c in policy.classes)
        return RuntimePolicy("wait", classes=classes, **common)
    instances = tuple(
        RuntimeInstance(i.prefill_tokens, i.type_names, _segments(i.segments), i.memory_required_tokens)
        for i in policy.instances or ()
    )
    return RuntimePolicy(
        "nested_wait", segments=_segments(policy.segments), instances=instances, prefill_mode=policy.prefill_mode,
        representative_prefill_tokens=policy.representative_prefill_tokens, **common,
    )


def load_policy(path: str | os.PathLike) -> RuntimePolicy:
    """Read a policy file with the one reader; every problem is an InputError naming file and field."""
    source = os.fspath(path)
    return runtime_policy(read_policy_file(source), source=source)


def policy_from_dict(data, *, source: str | None = None) -> RuntimePolicy:
    """The same for an already decoded JSON object."""
    return runtime_policy(parse_policy(data, source=source), source=source)


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
