"""A drift experiment's definition and its arrivals (`fluidsched drift`, docs/adaptive.md): the
experiment file (`DriftExperiment`, `load_experiment`; the format is in `validation/drift.py`),
its rate profile over time (`Profile`, `build_profile`) and the requests of one seed (a Poisson
process on the profile, or the workload's trace replayed). `validation/drift.py` runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fluid.errors import InputError
from fluid.numbers import check_number

PROFILE_KINDS = ("steps", "sine", "trace")
STATIC = ("static-mean", "static-peak")
ADAPTIVE = "adaptive"
DEFAULT_SCHEDULERS = (ADAPTIVE, "static-mean", "static-peak", "vllm-v1", "sarathi")
GRID_S = 5.0  # default time grid of the recorded curves (an experiment's grid_s)


@dataclass(frozen=True)
class DriftExperiment:
    name: str
    workload: str
    policy: str
    profile: dict
    seeds: tuple[int, ...] = (0,)
    schedulers: tuple[str, ...] = DEFAULT_SCHEDULERS
    adaptive: dict = field(default_factory=dict)  # AdaptiveSettings overrides
    grid_s: float = GRID_S  # time grid of the recorded curves and of the ODE's output (short runs need a finer one)

    def __post_init__(self) -> None:
        if self.policy not in ("wait", "nested-wait"):
            raise InputError(f"policy must be wait or nested-wait, got {self.policy!r}", field="policy")
        kind = self.profile.get("kind") if isinstance(self.profile, dict) else None
        if kind not in PROFILE_KINDS:
            raise InputError(f"profile.kind must be one of {', '.join(PROFILE_KINDS)}, got {kind!r}", field="profile.kind")
        check_number(self.grid_s, "grid_s", minimum=0, strict_minimum=True, what="grid_s", unit="of seconds")
        if not self.seeds:
            raise InputError("seeds must be a non-empty list of non-negative integers, got []", field="seeds")
        for i, s in enumerate(self.seeds):
            check_number(s, f"seeds[{i}]", integer=True, minimum=0)


def load_experiment(path: str, *, smoke: bool = False) -> DriftExperiment:
    from fluid.workload_io import read_document

    data = read_document(Path(path), source=path)
    if not isinstance(data, dict):
        raise InputError("an experiment file is a mapping", source=path)
    data = dict(data)
    overrides = data.pop("smoke", {}) or {}
    if smoke:
        for key, value in overrides.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    known = set(DriftExperiment.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown key(s) {unknown}; the keys are {', '.join(sorted(known | {'smoke'}))}", source=path)
    try:
        return DriftExperiment(**{**data, "seeds": tuple(data.get("seeds", (0,))),
                                  "schedulers": tuple(data.get("schedulers", DEFAULT_SCHEDULERS))})
    except TypeError as err:
        raise InputError(str(err), source=path) from None
    except InputError as err:
        raise InputError(err.detail, source=path, field=err.field) from None


# --- the rate profile ------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """Total arrival rate (requests/s) on bins [edges[b], edges[b+1]), and the type shares."""

    edges_s: np.ndarray
    total_rate_per_s: np.ndarray
    shares: np.ndarray

    @property
    def duration_s(self) -> float:
        return float(self.edges_s[-1])

    def mean_rate_per_s(self) -> float:
        return float(np.sum(self.total_rate_per_s * np.diff(self.edges_s)) / self.duration_s)

    def peak_rate_per_s(self) -> float:
        return float(np.max(self.total_rate_per_s))

    def rates(self):
        from fluid.ode import PiecewiseRates

        return PiecewiseRates.from_total(self.edges_s, self.total_rate_per_s, self.shares)


def build_profile(exp: DriftExperiment, workload) -> tuple[Profile, list | None]:
    """The profile, and for a trace the replayed (arrival_s, prompt, output) rows."""
    from fluid.equilibrium import closed_form

    p = exp.profile
    base = workload.total_rate_per_s
    shares = np.array([t.rate_per_s for t in workload.types]) / base
    theta = closed_form(workload).capacity_scale
    if p["kind"] == "steps":
        edges = np.asarray(p["edges_s"], float)
        scales = np.asarray(p["scales"], float)
        if len(edges) != len(scales) + 1 or edges[0] != 0 or np.any(np.diff(edges) <= 0) or np.any(scales <= 0):
            raise InputError("steps need edges_s from 0, increasing, one more than scales (all > 0)", field="profile")
        return Profile(edges, scales * theta * base, shares), None
    if p["kind"] == "sine":
        duration, period, bin_s, mean = (float(check_number(p.get(k, d), f"profile.{k}", minimum=0, strict_minimum=True, what=f"sine {k}"))
                                         for k, d in (("duration_s", None), ("period_s", None), ("bin_s", 5.0), ("mean", None)))
        amp = float(check_number(p.get("amplitude"), "profile.amplitude", minimum=0, strict_minimum=True, maximum=mean,
                                 strict_maximum=True, what="sine amplitude", hint=" (0 < amplitude < mean: the rate stays positive)"))
        edges = np.arange(0.0, duration + bin_s / 2, bin_s)
        mid = (edges[:-1] + edges[1:]) / 2
        return Profile(edges, (mean + amp * np.sin(2 * math.pi * mid / period)) * theta * base, shares), None
    # a trace, replayed with its own timestamps
    from runtime.arrivals import load_trace

    if workload.arrivals.kind != "trace":
        raise InputError(f"workload '{workload.name}' has no timestamped trace to replay", field="profile.kind")
    scale = float(check_number(p.get("scale", 1.0), "profile.scale", minimum=0, strict_minimum=True, what="trace scale", unit="factor"))
    limit = check_number(p.get("max_requests"), "profile.max_requests", integer=True, minimum=1, allow_none=True)
    offsets, prompts, outputs = load_trace(workload.arrivals.trace)
    times = np.asarray(offsets, float) * workload.arrivals.time_scale / scale
    if limit is not None:
        times, prompts, outputs = times[:limit], prompts[:limit], outputs[:limit]
    bin_s = float(check_number(p.get("bin_s", 60.0), "profile.bin_s", minimum=0, strict_minimum=True, unit="of seconds"))
    edges = np.arange(0.0, times[-1] + bin_s, bin_s)
    counts, _ = np.histogram(times, bins=edges)
    return Profile(edges, counts / bin_s, shares), list(zip(times.tolist(), prompts.tolist(), outputs.tolist()))


def poisson_requests(workload, profile: Profile, seed: int):
    """Requests of a piecewise-constant Poisson process, each type by its share."""
    from runtime.request import Request

    rng = np.random.default_rng(seed)
    out, t_id = [], 0
    for lo, hi, rate in zip(profile.edges_s[:-1], profile.edges_s[1:], profile.total_rate_per_s):
        count = rng.poisson(rate * (hi - lo))
        times = np.sort(rng.uniform(lo, hi, count))
        kinds = rng.choice(len(workload.types), size=count, p=profile.shares)
        for t, k in zip(times, kinds):
            typ = workload.types[int(k)]
            out.append(Request(t_id, float(t), typ.prefill, typ.decode, typ.name, typ.tbt_slo_s))
            t_id += 1
    return out


def trace_requests(workload, rows):
    from runtime.arrivals import nearest_type_index
    from runtime.request import Request

    kinds = nearest_type_index(workload, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))
    return [Request(i, t, int(p), int(o), workload.types[int(k)].name) for i, ((t, p, o), k) in enumerate(zip(rows, kinds))]


# --- policies --------------------------------------------------------------------------------


def experiment_requests(exp: DriftExperiment, workload, profile: Profile, rows, seed: int):
    """The arrivals of one seed: the replayed trace, or the profile's Poisson process."""
    return trace_requests(workload, rows) if rows is not None else poisson_requests(workload, profile, seed)
