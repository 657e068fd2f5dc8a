"""Validate a decoded policy JSON and build the dataclasses (standard library only).

Every problem is an InputError naming the file, the field path (`classes[1].threshold`), the bad
value and what to do. After the structure, the threshold conditions that the file alone
determines (its own rates, batch time and C) are re-evaluated with `thresholds.conditions`.
"""

from __future__ import annotations

import difflib
import math

from fluid.numbers import check_number
from fluid.errors import InputError
from thresholds.conditions import (
    Condition,
    LinearTime,
    at_most,
    nested_base_memory_tokens,
    nested_new_tokens,
    nested_ratio_conditions,
    strictly_below,
    theta_residual,
    wait_conditions,
)
from thresholds.adaptive import AdaptiveSettings
from thresholds.capped import MEMORY_BOUNDS
from thresholds.policy import (
    SCHEMA_VERSION,
    SERVICE_RULES,
    CappedSection,
    ClassThreshold,
    MemoryReport,
    Drain,
    FluidSummary,
    Guarantees,
    NestedInstance,
    NestedWaitPolicy,
    Segment,
    WaitPolicy,
    WorkloadRef,
)

COMMON_KEYS = ("schema_version", "policy", "service_rule", "workload", "kv_capacity_tokens", "batch_time",
               "fluid", "guarantees", "drain", "options")
WAIT_KEYS = COMMON_KEYS + ("classes",)
NESTED_KEYS = COMMON_KEYS + ("segments", "memory_required_tokens", "prefill_mode", "representative_prefill_tokens")
ADAPTIVE_KEYS = ("window_s", "period_s", "hysteresis", "min_rate_scale", "max_rate_scale", "headroom",
                 "max_capacity_fraction", "backlog_wait_s", "min_completions")
MEMORY_KEYS = ("bound", "margin", "expected_tokens", "worst_case_tokens", "theorem_tokens", "required_tokens")
LINEAR_KEYS = ("d0_s", "d_kv_s_per_token", "d_new_s_per_token")
THETA_TOLERANCE = 1e-6  # relative to n_{k−1}; the solver reaches 1e-9 absolute


class _Reader:
    def __init__(self, source: str | None):
        self.source = source
        self.capped = False  # the service rule is "capped": real thresholds

    def fail(self, path: str, message: str):
        raise InputError(message, source=self.source, field=path or None)

    def obj(self, value, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"must be a JSON object, got {type(value).__name__} {value!r:.60}")
        known = required + optional
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(known)}"
                self.fail(_join(path, key), f"unknown key '{key}'{hint}")
        for key in required:
            if key not in value:
                self.fail(_join(path, key), "required key is missing; re-solve the policy with `fluidsched solve`")
        return value

    def integer(self, value, path: str, minimum: int | None = None) -> int:
        # JSON Schema counts 7.0 as an integer; so does the reader, returning int 7
        return check_number(value, path or None, integer=True, minimum=minimum, whole_float=True, source=self.source)

    def number(self, value, path: str, *, nullable: bool = False, minimum: float | None = None) -> float | None:
        value = check_number(value, path or None, minimum=minimum, allow_none=nullable, source=self.source)
        return None if value is None else float(value)

    def threshold(self, value, path: str):
        """n_j or n_k: an integer ≥ 1, or under the capped rule a real > 0."""
        if not self.capped:
            return self.integer(value, path, 1)
        return check_number(value, path or None, minimum=0, strict_minimum=True, source=self.source,
                            hint=" (the capped rule takes real thresholds)")

    def string(self, value, path: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value:
            self.fail(path, f"must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            self.fail(path, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value

    def array(self, value, path: str, *, nonempty: bool = True) -> list:
        if not isinstance(value, list) or (nonempty and not value):
            self.fail(path, f"must be a {'non-empty ' if nonempty else ''}list, got {value!r:.60}")
        return value


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def parse_policy(raw, *, source: str | None = None, allow_violations: bool | None = None):
    r = _Reader(source)
    if not isinstance(raw, dict):
        r.fail("", f"a policy file must hold a JSON object, got {type(raw).__name__}")
    if "schema_version" not in raw:
        r.fail("schema_version", f"missing; this reader understands schema version {SCHEMA_VERSION}: re-solve with `fluidsched solve`")
    version = raw["schema_version"]
    if version != SCHEMA_VERSION or isinstance(version, bool):
        r.fail("schema_version", f"unsupported version {version!r}; this reader understands {SCHEMA_VERSION}: re-solve with `fluidsched solve`")
    kind = r.string(raw.get("policy"), "policy", ("wait", "nested_wait"))
    if kind == "wait":
        r.obj(raw, "", WAIT_KEYS, ("capped",))
    else:
        r.obj(raw, "", NESTED_KEYS, ("instances", "capped"))
    r.capped = r.string(raw["service_rule"], "service_rule", SERVICE_RULES) == "capped"
    if r.capped != ("capped" in raw):
        r.fail("capped", "required key is missing: a capped policy records its chunk and memory" if r.capped
               else "only a policy with service_rule 'capped' has this key")
    common = _common(r, raw)
    capped = _capped(r, raw["capped"], kind) if r.capped else None
    if kind == "wait":
        policy = WaitPolicy(**common, classes=_classes(r, raw["classes"], common["workload"]), capped=capped)
        conditions = _wait_conditions(policy)
    else:
        policy, conditions = _nested(r, raw, common, capped)
    allowed = bool(policy.options.get("allow_violations")) if allow_violations is None else allow_violations
    broken = [c for c in conditions if not c.holds]
    if broken and not allowed:
        listing = "; ".join(f"{c.name}: {c.lhs:.6g} vs {c.rhs:.6g}" for c in broken)
        r.fail("", f"the thresholds violate their conditions ({listing}); re-solve with `fluidsched solve` "
                   f"(or write the file with --allow-violations if this is deliberate)")
    return policy


def _check_batch_time(r: _Reader, bt: dict) -> None:
    """The batch_time block must be one a workload could hold (the same reader checks both), so
    that `check` and `show` catch a hand-edited coefficient instead of solving with it."""
    from fluid.batch_time import batch_time_from_dict
    from fluid.errors import with_source

    source_dir = None
    if r.source:
        from pathlib import Path

        source_dir = Path(r.source).parent
    try:
        batch_time_from_dict(bt, source=None, field="batch_time", base_dir=source_dir)
    except InputError as err:
        raise with_source(err, r.source) from None


def _common(r: _Reader, raw: dict) -> dict:
    wl = r.obj(raw["workload"], "workload", ("name", "content_sha256", "rates_per_s"))
    rates = wl["rates_per_s"]
    if not isinstance(rates, dict) or not rates:
        r.fail("workload.rates_per_s", f"must be an object naming at least one type, got {rates!r:.60}")
    ref = WorkloadRef(r.string(wl["name"], "workload.name"), r.string(wl["content_sha256"], "workload.content_sha256"),
                      tuple((k, r.number(v, f"workload.rates_per_s.{k}", minimum=0)) for k, v in rates.items()))
    bt = raw["batch_time"]
    if not isinstance(bt, dict) or not isinstance(bt.get("kind"), str):
        r.fail("batch_time", f"must be an object with a 'kind', got {bt!r:.60}")
    _check_batch_time(r, bt)
    fl = r.obj(raw["fluid"], "fluid", ("memory_star_tokens", "iteration_time_star_s", "throughput_star_tokens_per_s",
                                       "load_factor", "capacity_scale"))
    fluid = FluidSummary(*(r.number(fl[k], f"fluid.{k}", nullable=k in ("memory_star_tokens", "iteration_time_star_s"))
                           for k in ("memory_star_tokens", "iteration_time_star_s", "throughput_star_tokens_per_s",
                                     "load_factor", "capacity_scale")))
    g = r.obj(raw["guarantees"], "guarantees", ("memory_policy_tokens", "buffer_tokens", "memory_required_tokens",
                                                "delta", "horizon_s", "conditions"))
    conds = []
    for i, c in enumerate(r.array(g["conditions"], "guarantees.conditions", nonempty=False)):
        p = f"guarantees.conditions[{i}]"
        c = r.obj(c, p, ("name", "holds", "lhs", "rhs"))
        if not isinstance(c["holds"], bool):
            r.fail(f"{p}.holds", f"must be true or false, got {c['holds']!r}")
        conds.append(Condition(r.string(c["name"], f"{p}.name"), c["holds"], r.number(c["lhs"], f"{p}.lhs"), r.number(c["rhs"], f"{p}.rhs")))
    guarantees = Guarantees(
        r.number(g["memory_policy_tokens"], "guarantees.memory_policy_tokens", minimum=0),
        r.number(g["buffer_tokens"], "guarantees.buffer_tokens", minimum=0),
        r.number(g["memory_required_tokens"], "guarantees.memory_required_tokens", minimum=0),
        r.number(g["delta"], "guarantees.delta", nullable=True, minimum=0),
        r.number(g["horizon_s"], "guarantees.horizon_s", nullable=True, minimum=0),
        tuple(conds),
    )
    drain = r.obj(raw["drain"], "drain", ("max_wait_s",))
    options = raw["options"]
    if not isinstance(options, dict):
        r.fail("options", f"must be a JSON object, got {options!r:.60}")
    if "allow_violations" in options and not isinstance(options["allow_violations"], bool):
        r.fail("options.allow_violations", f"must be true or false, got {options['allow_violations']!r}")
    if "linear_batch_time" not in options:
        r.fail("options.linear_batch_time", "required key is missing (the linear batch time the conditions are checked "
                                            "with); re-solve the policy with `fluidsched solve`")
    lin = r.obj(options["linear_batch_time"], "options.linear_batch_time", LINEAR_KEYS)
    for k in LINEAR_KEYS:
        r.number(lin[k], f"options.linear_batch_time.{k}", minimum=0)
    return {
        "service_rule": r.string(raw["service_rule"], "service_rule", SERVICE_RULES),
        "workload": ref,
        "kv_capacity_tokens": r.integer(raw["kv_capacity_tokens"], "kv_capacity_tokens", minimum=1),
        "batch_time": bt,
        "fluid": fluid,
        "guarantees": guarantees,
        "drain": Drain(r.number(drain["max_wait_s"], "drain.max_wait_s", minimum=0)),
        "options": options,
    }


def _classes(r: _Reader, raw, ref: WorkloadRef) -> tuple[ClassThreshold, ...]:
    out = []
    for i, c in enumerate(r.array(raw, "classes")):
        p = f"classes[{i}]"
        c = r.obj(c, p, ("name", "prefill", "decode", "rate_per_s", "threshold"))
        out.append(ClassThreshold(r.string(c["name"], f"{p}.name"), r.integer(c["prefill"], f"{p}.prefill", 1),
                                  r.integer(c["decode"], f"{p}.decode", 1),
                                  r.number(c["rate_per_s"], f"{p}.rate_per_s", minimum=0),
                                  r.threshold(c["threshold"], f"{p}.threshold")))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        r.fail("classes", f"class names must be unique, got {names}")
    return tuple(out)


def _segments(r: _Reader, raw, path: str) -> tuple[Segment, ...]:
    out = []
    for i, s in enumerate(r.array(raw, path)):
        p = f"{path}[{i}]"
        s = r.obj(s, p, ("first_stage", "last_stage", "threshold", "continue_prob", "theta"))
        first = r.integer(s["first_stage"], f"{p}.first_stage", 0)
        last = r.integer(s["last_stage"], f"{p}.last_stage", 1)
        n = r.threshold(s["threshold"], f"{p}.threshold")
        problem = segment_chain_problem(out + [Segment(first, last, n, 0.0, None)])
        if problem is not None:
            r.fail(f"{path}{problem[0]}", problem[1])
        prob = r.number(s["continue_prob"], f"{p}.continue_prob", minimum=0)
        if prob >= 1:
            r.fail(f"{p}.continue_prob", f"must be below 1, got {prob}")
        theta = r.number(s["theta"], f"{p}.theta", nullable=True)
        if i == 0 and theta is not None:
            r.fail(f"{p}.theta", f"must be null for the first segment, got {theta}")
        if theta is not None and theta <= 0:
            r.fail(f"{p}.theta", f"must be positive (or null), got {theta}")
        if theta is not None and out and abs(theta_residual(theta, out[-1].threshold, n, out[-1].continue_prob)) > THETA_TOLERANCE * out[-1].threshold:
            r.fail(f"{p}.theta", f"{theta} does not solve exp(−θ n_k)(1 − p + p e^θ)^n_(k−1) = 1 for this segment; re-solve")
        out.append(Segment(first, last, n, prob, theta))
    return tuple(out)


def segment_chain_problem(segments) -> tuple[str, str] | None:
    """(field suffix, message) of the first break in the segment chain, or None.

    Segment 1 starts at the prefill (stage 0), each later one right after the previous
    `last_stage`, none is empty, and thresholds do not increase (n_k ≤ n_{k−1}). The reader and
    the runtime's directly built policies share this one statement of the rule.
    """
    expected_first = 0
    previous = None
    for k, seg in enumerate(segments):
        if seg.first_stage != expected_first:
            return (f"[{k}].first_stage", f"must be {expected_first} (segment 1 starts at the prefill, stage 0; each "
                                          f"later segment right after the previous one's last_stage), got {seg.first_stage}")
        if seg.last_stage < max(seg.first_stage, 1):
            return (f"[{k}].last_stage", f"must be ≥ {max(seg.first_stage, 1)} (first_stage, and ≥ 1), got {seg.last_stage}")
        if previous is not None and seg.threshold > previous.threshold:
            return (f"[{k}].threshold", f"thresholds must be non-increasing across segments: {seg.threshold} > "
                                        f"{previous.threshold} of the segment before")
        expected_first = seg.last_stage + 1
        previous = seg
    return None


def linear_time_of(policy) -> LinearTime:
    """The linear batch-time coefficients the policy was solved with (`options.linear_batch_time`)."""
    lin = policy.options["linear_batch_time"]
    return LinearTime(*(float(lin[k]) for k in LINEAR_KEYS))


def _wait_conditions(policy: WaitPolicy) -> tuple[Condition, ...]:
    star = policy.fluid.memory_star_tokens
    classes = [(c.name, c.prefill, c.decode, c.rate_per_s, c.threshold) for c in policy.classes]
    out = wait_conditions(linear_time_of(policy), classes, policy.kv_capacity_tokens, math.inf if star is None else star)
    if policy.capped is None:
        return out
    # the capped rule's memory is the chosen bound (docs/capped-rule.md), not M^π
    return tuple(at_most(c.name, policy.capped.memory.required_tokens, c.rhs) if c.name == "memory_within_capacity" else c
                 for c in out)


def _capped(r: _Reader, raw, kind: str) -> CappedSection:
    c = r.obj(raw, "capped", ("prefill_chunk_tokens", "memory"), ("adaptive",))
    chunk = c["prefill_chunk_tokens"]
    chunk = None if chunk is None else r.integer(chunk, "capped.prefill_chunk_tokens", 1)
    m = r.obj(c["memory"], "capped.memory", MEMORY_KEYS)
    bound = r.string(m["bound"], "capped.memory.bound", MEMORY_BOUNDS)
    values = {k: r.number(m[k], f"capped.memory.{k}", minimum=0, nullable=k == "theorem_tokens")
              for k in MEMORY_KEYS[1:]}
    report = MemoryReport(bound, **values)
    chosen = {"expected": min(report.expected_tokens * (1 + report.margin), report.worst_case_tokens),
              "worst": report.worst_case_tokens,
              "theorem": report.theorem_tokens}[bound]
    if chosen is None:
        r.fail("capped.memory.theorem_tokens", "the theorem bound was chosen but no theorem_tokens are given; "
                                               "choose bound 'expected' or 'worst', or re-solve")
    if not math.isclose(report.required_tokens, chosen, rel_tol=1e-9, abs_tol=1e-9):
        r.fail("capped.memory.required_tokens", f"must be the chosen bound's {chosen:.6g} tokens "
                                                f"({bound}{' × (1 + margin), at most the worst case' if bound == 'expected' else ''}), got {report.required_tokens!r}")
    return CappedSection(chunk, report, _adaptive(r, c["adaptive"]) if "adaptive" in c else None)


def _adaptive(r: _Reader, raw) -> AdaptiveSettings:
    a = r.obj(raw, "capped.adaptive", ADAPTIVE_KEYS, ("memory_margin",))
    values = {key: r.number(a[key], f"capped.adaptive.{key}", minimum=0) for key in ADAPTIVE_KEYS[:-1]}
    values["min_completions"] = r.integer(a["min_completions"], "capped.adaptive.min_completions", 1)
    # optional (files written before it have none): null or absent is solve's default margin rule
    values["memory_margin"] = r.number(a.get("memory_margin"), "capped.adaptive.memory_margin", nullable=True, minimum=0)
    try:
        return AdaptiveSettings(**values)
    except InputError as err:
        r.fail("capped." + (err.field or "adaptive"), err.detail)


def _nested(r: _Reader, raw: dict, common: dict, capped: CappedSection | None = None):
    segments = _segments(r, raw["segments"], "segments")
    mode = r.string(raw["prefill_mode"], "prefill_mode", ("representative", "per_class"))
    prefill = r.integer(raw["representative_prefill_tokens"], "representative_prefill_tokens", 1)
    required = r.number(raw["memory_required_tokens"], "memory_required_tokens", minimum=0)
    instances = None
    if "instances" in raw:
        if mode != "per_class":
            r.fail("instances", "only a per_class policy lists instances; remove the key or set prefill_mode to 'per_class'")
        instances = []
        for i, inst in enumerate(r.array(raw["instances"], "instances")):
            p = f"instances[{i}]"
            inst = r.obj(inst, p, ("prefill_tokens", "type_names", "segments", "memory_required_tokens"))
            names = tuple(r.string(n, f"{p}.type_names[{j}]") for j, n in enumerate(r.array(inst["type_names"], f"{p}.type_names")))
            instances.append(NestedInstance(r.integer(inst["prefill_tokens"], f"{p}.prefill_tokens", 1), names,
                                            _segments(r, inst["segments"], f"{p}.segments"),
                                            r.number(inst["memory_required_tokens"], f"{p}.memory_required_tokens", minimum=0)))
        instances = tuple(instances)
    elif mode == "per_class":
        r.fail("instances", "a per_class policy must list its instances")
    policy = NestedWaitPolicy(**common, segments=segments, memory_required_tokens=required, prefill_mode=mode,
                              representative_prefill_tokens=prefill, instances=instances, capped=capped)
    return policy, nested_file_conditions(policy)


def nested_file_conditions(policy: NestedWaitPolicy) -> tuple[Condition, ...]:
    """Conditions the file determines: ratios, ΔT(n) < n_1/Σλ per instance, memory ≤ C."""
    rates = dict(policy.workload.rates_per_s)
    if policy.instances is None:
        groups = [(policy.representative_prefill_tokens, sum(rates.values()), policy.segments, "")]
    else:
        groups = [(i.prefill_tokens, sum(rates.get(n, 0.0) for n in i.type_names), i.segments,
                   f"[prefill={i.prefill_tokens}]" if len(policy.instances) > 1 else "") for i in policy.instances]
    if policy.capped is not None:
        # the capped rule's time condition needs the types' lengths, which a Nested WAIT file does
        # not carry (docs/capped-rule.md); its memory condition is re-checked
        return (at_most("memory_within_capacity", policy.memory_required_tokens, policy.kv_capacity_tokens),)
    kv = new = 0.0
    for prefill, _, segs, _ in groups:
        bounds = [(s.first_stage, s.last_stage) for s in segs]
        kv += nested_base_memory_tokens(prefill, bounds, [s.threshold for s in segs])
        new += nested_new_tokens(prefill, bounds, [s.threshold for s in segs])
    dt = linear_time_of(policy).iteration_time_s(kv, new)
    out: list[Condition] = []
    for _, total_rate, segs, label in groups:
        out += nested_ratio_conditions(label, [s.threshold for s in segs], [s.continue_prob for s in segs])
        out.append(strictly_below(f"iteration_time{label}", dt, segs[0].threshold / total_rate if total_rate > 0 else math.inf))
    out.append(at_most("memory_within_capacity", policy.memory_required_tokens, policy.kv_capacity_tokens))
    return tuple(out)
