"""Experiment files: `validation/experiments/*.yaml`, read into frozen dataclasses.

An experiment is a grid — workloads × loads × policies × seeds × knobs — plus, optionally, a
bisection for λ* of some of its policies (`validation/bisection.py`). `smoke:` overrides any
top-level key for `fluidsched sweep --smoke` (a tiny version that runs in seconds). Every key and
its meaning: `docs/validation.md`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from fluid.errors import InputError, check_keys
from fluid.numbers import check_number

TOP_KEYS = (
    "name", "description", "workloads", "loads", "load_unit", "policies", "seeds", "requests",
    "knobs", "warmup_fraction", "ttft_slo_s", "tiers", "bisect", "smoke", "figures", "fluid_over_time",
)
FLUID_OVER_TIME_KEYS = ("time_bins", "type_bins")
WORKLOAD_KEYS = ("label", "workload", "overrides", "requests", "warmup_fraction")
POLICY_KEYS = ("label", "scheduler", "options", "solve")
SOLVE_KEYS = ("policy", "method", "slack", "service_rule", "segments", "batch_cap", "max_load", "args")
BISECT_KEYS = ("policies", "workloads", "criterion", "lo", "hi", "tolerance", "requests", "throughput_tolerance",
               "latency_growth", "ttft_median_s", "tbt_p99_within_slo")
# SimConfig fields a knob may vary (anything else goes in policies' options or workload overrides)
KNOB_FIELDS = ("block_size", "replicas", "router", "arrivals")
LOAD_UNITS = ("capacity", "rate_scale")
CRITERIA = ("stable", "slo")


@dataclass(frozen=True)
class WorkloadRef:
    label: str
    workload: str  # preset name or a path (resolved against the experiment file's folder)
    overrides: dict = field(default_factory=dict)  # merged into the resolved workload document
    requests: int | None = None  # per-workload request count (else the experiment's)
    # per-workload warm-up cut (else the experiment's): long requests need a later cut, two or more
    # request latencies, or the throughput window still holds the ramp-up
    warmup_fraction: float | None = None


@dataclass(frozen=True)
class PolicySpec:
    label: str
    scheduler: str
    options: dict = field(default_factory=dict)
    solve: dict | None = None  # WAIT / Nested WAIT thresholds solved for each point's workload


@dataclass(frozen=True)
class BisectSpec:
    policies: tuple[str, ...]  # policy labels
    workloads: tuple[str, ...]  # workload labels
    criterion: str = "stable"
    lo: float = 0.3  # load bracket (in the experiment's load unit)
    hi: float = 1.3
    tolerance: float = 0.02
    requests: int | None = None
    throughput_tolerance: float = 0.05  # stable: decode throughput >= (1 - this) x offered
    latency_growth: float = 0.5  # stable: mean latency, last quarter <= (1 + this) x first quarter
    ttft_median_s: float = 0.5  # slo: median TTFT below this
    tbt_p99_within_slo: bool = True  # slo: p99 TBT of every tier within that tier's SLO


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    source: str
    workloads: tuple[WorkloadRef, ...]
    loads: tuple[float, ...]
    load_unit: str
    policies: tuple[PolicySpec, ...]
    seeds: tuple[int, ...]
    requests: int
    knobs: dict  # field -> list of values (a grid)
    warmup_fraction: float = 0.1
    ttft_slo_s: float | None = 0.5
    tiers: tuple[tuple[float, float], ...] | None = None
    bisect: BisectSpec | None = None
    figures: tuple[str, ...] = ()
    base_dir: str = "."
    # the fluid benchmark over time of each grid point's own requests (fluid/over_time.py), stored
    # beside its series: {time_bins: arrival-rate bins over the arrival span, type_bins: length bins}
    fluid_over_time: dict | None = None

    def knob_grid(self) -> list[dict]:
        names = sorted(self.knobs)
        return [dict(zip(names, values)) for values in itertools.product(*(self.knobs[n] for n in names))]

    def policy(self, label: str) -> PolicySpec:
        return next(p for p in self.policies if p.label == label)

    def workload_ref(self, label: str) -> WorkloadRef:
        return next(w for w in self.workloads if w.label == label)


def _number(value, *, source, field_path) -> float:
    return float(check_number(value, field_path, minimum=0, strict_minimum=True, source=source))


def _tier(value, *, source, field_path) -> tuple[float, float]:
    # one SLO tier: [share of requests, TBT SLO in seconds]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InputError(f"must be a pair [share of requests, TBT SLO in seconds], got {value!r}",
                         source=source, field=field_path)
    share = check_number(value[0], f"{field_path}[0]", minimum=0, strict_minimum=True, maximum=1,
                         unit="(a share of requests)", source=source)
    slo = check_number(value[1], f"{field_path}[1]", minimum=0, strict_minimum=True, unit="of seconds", source=source)
    return float(share), float(slo)


def _warmup_fraction(value, *, source, field_path, optional: bool) -> float | None:
    # the same rule for the experiment's default and a workload's own: the share of requests dropped
    value = check_number(value, field_path, minimum=0, maximum=1, strict_maximum=True, unit="(a fraction)",
                         allow_none=optional, source=source)
    return None if value is None else float(value)


def _count(value, *, source, field_path) -> int:
    return check_number(value, field_path, integer=True, minimum=1, source=source)


def _list(value, *, source, field_path) -> list:
    if not isinstance(value, list) or not value:
        raise InputError(f"must be a non-empty list, got {value!r:.80}", source=source, field=field_path)
    return value


def _workload_ref(item, index: int, source: str) -> WorkloadRef:
    where = f"workloads[{index}]"
    if isinstance(item, str):
        return WorkloadRef(label=item, workload=item)
    check_keys(item, allowed=WORKLOAD_KEYS, required=("workload",), source=source, field=where)
    overrides = item.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise InputError(f"must be a mapping of workload keys, got {overrides!r:.80}", source=source, field=f"{where}.overrides")
    requests = item.get("requests")
    if requests is not None:
        requests = _count(requests, source=source, field_path=f"{where}.requests")
    warmup = _warmup_fraction(item.get("warmup_fraction"), source=source, field_path=f"{where}.warmup_fraction", optional=True)
    return WorkloadRef(str(item.get("label", item["workload"])), str(item["workload"]), overrides, requests,
                       warmup)


def _policy(item, index: int, source: str) -> PolicySpec:
    from runtime.schedulers import SCHEDULERS

    where = f"policies[{index}]"
    if isinstance(item, str):
        item = {"scheduler": item}
    check_keys(item, allowed=POLICY_KEYS, required=("scheduler",), source=source, field=where)
    scheduler = item["scheduler"]
    if scheduler not in SCHEDULERS:
        raise InputError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}", source=source, field=f"{where}.scheduler")
    options = item.get("options") or {}
    if not isinstance(options, dict):
        raise InputError(f"must be a mapping of scheduler knobs, got {options!r:.80}", source=source, field=f"{where}.options")
    solve = item.get("solve")
    if solve is not None:
        check_keys(solve, allowed=SOLVE_KEYS, required=("policy",), source=source, field=f"{where}.solve")
        if solve["policy"] not in ("wait", "nested-wait"):
            raise InputError(f"must be 'wait' or 'nested-wait', got {solve['policy']!r}", source=source, field=f"{where}.solve.policy")
        if solve.get("method", "fluid") not in ("fluid", "batch-cap", "auto", "cli"):
            raise InputError(f"must be fluid, batch-cap, auto or cli, got {solve['method']!r}", source=source, field=f"{where}.solve.method")
        if scheduler not in (solve["policy"], f"{solve['policy']}-capped"):
            raise InputError(f"a {solve['policy']} policy runs on scheduler {solve['policy']!r}, not {scheduler!r}",
                             source=source, field=f"{where}.scheduler")
    elif scheduler in ("wait", "nested-wait", "wait-capped", "nested-wait-capped"):
        raise InputError(f"scheduler {scheduler!r} needs thresholds: add solve: {{policy: {scheduler}}}", source=source, field=where)
    return PolicySpec(str(item.get("label", scheduler)), scheduler, options, solve)


def _chosen_labels(item: dict, key: str, labels: list[str], source: str) -> tuple[str, ...]:
    """`bisect.<key>`: labels of the experiment (all of them by default)."""
    chosen = tuple(item.get(key, labels))
    for label in chosen:
        if label not in labels:
            raise InputError(f"names {key[:-1]} {label!r}, which the experiment lacks (its labels: {', '.join(labels)})",
                             source=source, field=f"bisect.{key}")
    return chosen


def _bisect(item, source: str, policies, workloads) -> BisectSpec:
    check_keys(item, allowed=BISECT_KEYS, source=source, field="bisect")
    chosen = _chosen_labels(item, "policies", [p.label for p in policies], source)
    chosen_wl = _chosen_labels(item, "workloads", [w.label for w in workloads], source)
    criterion = item.get("criterion", "stable")
    if criterion not in CRITERIA:
        raise InputError(f"must be one of {', '.join(CRITERIA)}, got {criterion!r}", source=source, field="bisect.criterion")
    nums = {k: _number(item[k], source=source, field_path=f"bisect.{k}")
            for k in ("lo", "hi", "tolerance", "throughput_tolerance", "latency_growth", "ttft_median_s") if k in item}
    spec = BisectSpec(chosen, chosen_wl, criterion, **nums,
                      requests=_count(item["requests"], source=source, field_path="bisect.requests") if "requests" in item else None,
                      tbt_p99_within_slo=bool(item.get("tbt_p99_within_slo", True)))
    if not spec.lo < spec.hi:
        raise InputError(f"needs lo < hi, got lo = {spec.lo}, hi = {spec.hi}", source=source, field="bisect")
    return spec


def experiment_from_dict(data: dict, *, source: str, base_dir: str | Path = ".", smoke: bool = False) -> Experiment:
    check_keys(data, allowed=TOP_KEYS, required=("name", "workloads", "loads", "policies"), source=source, field="")
    if smoke and data.get("smoke") is not None:
        extra = data["smoke"]
        check_keys(extra, allowed=tuple(k for k in TOP_KEYS if k not in ("name", "smoke")), source=source, field="smoke")
        data = {**data, **extra}
    name = data["name"]
    if not isinstance(name, str) or not name or "/" in name:
        raise InputError(f"must be a non-empty name without '/', got {name!r}", source=source, field="name")
    workloads = tuple(_workload_ref(w, i, source) for i, w in enumerate(_list(data["workloads"], source=source, field_path="workloads")))
    policies = tuple(_policy(p, i, source) for i, p in enumerate(_list(data["policies"], source=source, field_path="policies")))
    for what, labels in (("workloads", [w.label for w in workloads]), ("policies", [p.label for p in policies])):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise InputError(f"labels must be unique, {dup} appear twice; give each a distinct label", source=source, field=what)
    loads = tuple(_number(v, source=source, field_path=f"loads[{i}]") for i, v in enumerate(_list(data["loads"], source=source, field_path="loads")))
    load_unit = data.get("load_unit", "capacity")
    if load_unit not in LOAD_UNITS:
        raise InputError(f"must be one of {', '.join(LOAD_UNITS)}, got {load_unit!r}", source=source, field="load_unit")
    seeds = data.get("seeds", [0])
    for i, s in enumerate(_list(seeds, source=source, field_path="seeds")):
        check_number(s, f"seeds[{i}]", integer=True, minimum=0, source=source)
    knobs = data.get("knobs") or {}
    check_keys(knobs, allowed=KNOB_FIELDS, source=source, field="knobs")
    knobs = {k: _list(v, source=source, field_path=f"knobs.{k}") for k, v in knobs.items()}
    tiers = data.get("tiers")
    if tiers is not None:
        tiers = tuple(_tier(t, source=source, field_path=f"tiers[{i}]")
                      for i, t in enumerate(_list(tiers, source=source, field_path="tiers")))
    ttft = data.get("ttft_slo_s", 0.5)
    bisect = _bisect(data["bisect"], source, policies, workloads) if data.get("bisect") else None
    figures = data.get("figures", [])
    fot = data.get("fluid_over_time")
    if fot is True:
        fot = {}
    if fot is not None and fot is not False:
        if not isinstance(fot, dict):
            raise InputError(f"must be true or a mapping of {', '.join(FLUID_OVER_TIME_KEYS)}, got {fot!r:.80}",
                             source=source, field="fluid_over_time")
        check_keys(fot, allowed=FLUID_OVER_TIME_KEYS, source=source, field="fluid_over_time")
        fot = {"time_bins": _count(fot.get("time_bins", 60), source=source, field_path="fluid_over_time.time_bins"),
               "type_bins": _count(fot.get("type_bins", 32), source=source, field_path="fluid_over_time.type_bins")}
    else:
        fot = None
    return Experiment(
        name=name,
        description=str(data.get("description", "")).strip(),
        source=source,
        workloads=workloads,
        loads=loads,
        load_unit=load_unit,
        policies=policies,
        seeds=tuple(seeds),
        requests=_count(data.get("requests", 2000), source=source, field_path="requests"),
        knobs=knobs,
        warmup_fraction=_warmup_fraction(data.get("warmup_fraction", 0.1), source=source, field_path="warmup_fraction", optional=False),
        ttft_slo_s=None if ttft is None else _number(ttft, source=source, field_path="ttft_slo_s"),
        tiers=tiers,
        bisect=bisect,
        figures=tuple(figures),
        base_dir=str(base_dir),
        fluid_over_time=fot,
    )


def load_experiment(path: str | Path, *, smoke: bool = False) -> Experiment:
    from fluid.workload_io import read_document

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such experiment file {str(path)!r}; see validation/experiments/ for examples", field="experiment")
    data = read_document(path, source=str(path))
    return experiment_from_dict(data, source=str(path), base_dir=path.parent, smoke=smoke)
