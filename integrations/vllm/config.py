"""What the vLLM scheduler serves: a policy file turned into groups, caps and timers (no vllm here).

The caps are the project's (`thresholds.capped`, shared with `runtime/schedulers/capped.py`).
The plugin reads its settings from vLLM's `additional_config` under the key `fluidsched`
(`vllm serve ... --additional-config '{"fluidsched": {"policy": "policy.json"}}'`), or, when that
is absent, the policy path from the environment variable `FLUIDSCHED_VLLM_POLICY`. The policy file
is read by the project's one reader (`runtime.policy_file.load_policy`, which calls
`thresholds.policy`), so a file the simulator refuses is refused here with the same message.

Two rules (docs/vllm-plugin.md):
- `capped` (policies whose `service_rule` is "capped", real thresholds): integer caps on the
  requests that hold a cache. WAIT class j: c_j = ⌈n_j (l'_j + 1)⌉; Nested WAIT segment k:
  c_k = ⌈n_k · width_k⌉; the resident cap is Σ c_j (WAIT) or ⌈Σ_k width_k n_k⌉ (Nested WAIT),
  unless `resident_cap` overrides it.
  An integer-threshold policy may be served by the capped rule too (`"rule": "capped"`).
- `continuous` (integer thresholds; "cohort" policies are served by it too, see the docs): new
  prompts are released in cohorts of n_j (WAIT class j) or n_1 (Nested WAIT), with the drain rule
  for partial cohorts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from fluid.errors import InputError, closest_key_hint
from fluid.numbers import check_number
from runtime.policy_file import RuntimePolicy, load_policy
from thresholds.capped import cap_of, nested_resident_cap, wait_class_caps

CONFIG_KEY = "fluidsched"
POLICY_ENV = "FLUIDSCHED_VLLM_POLICY"
OPTIONS = ("policy", "rule", "resident_cap", "prefill_chunk_tokens", "segment_caps", "log_interval_s", "drain_max_wait_s")
RULES = ("capped", "continuous")


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One WAIT class or one Nested WAIT instance, as the plugin holds and releases its requests."""

    name: str
    prefill_tokens: int  # l_j, or the instance's prefill class
    decode_tokens: int | None  # l'_j (WAIT); None for Nested WAIT (unknown outputs)
    threshold: float  # n_j (WAIT) or n_1 (Nested WAIT): the cohort size under the continuous rule
    cap: int | None  # capped rule: c_j (WAIT) or the instance's share of the resident cap (Nested)
    type_names: tuple[str, ...] = ()
    # Nested WAIT segments: first decode stage of each, and its cap c_k (capped rule)
    segment_first_stages: tuple[int, ...] = (0,)
    segment_caps: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PluginPlan:
    """Everything the scheduler needs, checked."""

    policy_kind: str  # "wait" | "nested_wait"
    rule: str  # "capped" | "continuous"
    policy_service_rule: str  # as written in the file
    groups: tuple[GroupSpec, ...]
    resident_cap: int | None  # capped rule only
    prefill_chunk_tokens: int | None  # None: vLLM's own chunking only
    drain_max_wait_s: float
    segment_caps: bool  # Nested WAIT, capped rule: pause at segment boundaries when the next is full
    log_interval_s: float
    source: str | None = None


def _positive_int(value, field: str, source: str | None) -> int:
    return check_number(value, field, integer=True, minimum=1, source=source)


def _non_negative(value, field: str, source: str | None) -> float:
    return float(check_number(value, field, minimum=0, unit="of seconds", source=source))


def settings_from_additional_config(additional_config) -> dict:
    """The plugin's settings: `additional_config["fluidsched"]`, else the policy path from the env."""
    where = "--additional-config"
    raw = additional_config.get(CONFIG_KEY) if isinstance(additional_config, dict) else None
    if raw is None:
        path = os.environ.get(POLICY_ENV)
        if not path:
            raise InputError(
                f"no policy given: pass --additional-config '{{\"{CONFIG_KEY}\": {{\"policy\": \"policy.json\"}}}}' "
                f"or set {POLICY_ENV}=policy.json", source=where, field=CONFIG_KEY,
            )
        return {"policy": path}
    if isinstance(raw, str):  # a JSON string inside the JSON (some launchers quote nested objects)
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InputError(f"not valid JSON: {err.msg}", source=where, field=CONFIG_KEY) from None
    if not isinstance(raw, dict):
        raise InputError(f"must be an object such as {{\"policy\": \"policy.json\"}}, got {raw!r}", source=where,
                         field=CONFIG_KEY)
    for key in raw:
        if key not in OPTIONS:
            raise InputError(f"unknown option {key!r}{closest_key_hint(key, OPTIONS)}; options: {', '.join(OPTIONS)}",
                             source=where, field=f"{CONFIG_KEY}.{key}")
    if "policy" not in raw:
        raise InputError("the policy file path is required", source=where, field=f"{CONFIG_KEY}.policy")
    return dict(raw)


def plan_from_settings(settings: dict, policy: RuntimePolicy | None = None) -> PluginPlan:
    """Load the policy (unless given) and derive groups, caps and timers."""
    where = "--additional-config"
    path = settings.get("policy")
    if policy is None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise InputError(f"must be a path to a policy.json, got {path!r}", source=where, field=f"{CONFIG_KEY}.policy")
        policy = load_policy(path)
    rule = settings.get("rule", "capped" if policy.service_rule == "capped" else "continuous")
    if rule not in RULES:
        raise InputError(f"must be one of {list(RULES)}, got {rule!r}", source=where, field=f"{CONFIG_KEY}.rule")
    if rule == "continuous" and policy.service_rule == "capped":
        raise InputError("a capped policy has real thresholds, which only the capped rule serves: drop 'rule'",
                         source=where, field=f"{CONFIG_KEY}.rule")
    chunk = settings.get("prefill_chunk_tokens", getattr(policy, "prefill_chunk_tokens", None))
    if chunk is not None:
        chunk = _positive_int(chunk, f"{CONFIG_KEY}.prefill_chunk_tokens", where)
    cap = settings.get("resident_cap")
    if cap is not None:
        cap = _positive_int(cap, f"{CONFIG_KEY}.resident_cap", where)
    segment_caps = settings.get("segment_caps", True)
    if not isinstance(segment_caps, bool):
        raise InputError(f"must be true or false, got {segment_caps!r}", source=where, field=f"{CONFIG_KEY}.segment_caps")
    log_interval_s = _non_negative(settings.get("log_interval_s", 10.0), f"{CONFIG_KEY}.log_interval_s", where)
    # the policy's own value may be inf (no drain timer, a policy built in code); a setting is a finite number
    drain = (_non_negative(settings["drain_max_wait_s"], f"{CONFIG_KEY}.drain_max_wait_s", where)
             if "drain_max_wait_s" in settings else policy.drain_max_wait_s)
    groups = _wait_groups(policy, rule) if policy.policy == "wait" else _nested_groups(policy, rule)
    if rule == "capped" and cap is None:
        cap = sum(g.cap for g in groups)  # Σ_j c_j (WAIT); ⌈Σ_k width_k n_k⌉ per instance, summed (Nested WAIT)
    return PluginPlan(policy.policy, rule, policy.service_rule, groups, cap if rule == "capped" else None, chunk, drain,
                      segment_caps and rule == "capped" and policy.policy == "nested_wait", log_interval_s,
                      policy.source)


def _wait_groups(policy: RuntimePolicy, rule: str) -> tuple[GroupSpec, ...]:
    caps = wait_class_caps([(c.decode_tokens, c.threshold) for c in policy.classes])
    return tuple(
        GroupSpec(c.name, c.prefill_tokens, c.decode_tokens, float(c.threshold), cap if rule == "capped" else None, (c.name,))
        for c, cap in zip(policy.classes, caps)
    )


def _nested_groups(policy: RuntimePolicy, rule: str) -> tuple[GroupSpec, ...]:
    chains = [(f"prefill{i.prefill_tokens}", i.prefill_tokens, i.type_names, i.segments) for i in policy.instances]
    if not chains:
        chains = [("all", policy.representative_prefill_tokens or 1, (), policy.segments)]
    groups = []
    for name, prefill, types, segs in chains:
        firsts = tuple(s.first_stage for s in segs)
        caps = tuple(cap_of(s.threshold, s.last_stage - s.first_stage + 1) for s in segs) if rule == "capped" else ()
        total = nested_resident_cap([(s.first_stage, s.last_stage, s.threshold) for s in segs]) if rule == "capped" else None
        groups.append(GroupSpec(name, prefill, None, float(segs[0].threshold), total, tuple(types), firsts, caps))
    return tuple(groups)
