"""`fluidsched drift CONFIG.yaml`: WAIT under drifting load, against the fluid ODE over time (docs/adaptive.md).

An experiment file names a preset workload, a rate profile and the schedulers to compare:

    name: step                      # results go to docs/adaptive-<name>.json by default
    workload: p512d20
    policy: wait                    # wait | nested-wait (the capped rule; what `solve` writes)
    profile: {kind: steps, edges_s: [0, 300, 600, 900], scales: [0.6, 0.95, 0.75]}
    #        {kind: sine, duration_s: 900, period_s: 300, mean: 0.75, amplitude: 0.2, bin_s: 5}
    #        {kind: trace, scale: 1.0}      (the workload's own timestamped trace, replayed)
    seeds: [0]
    schedulers: [adaptive, static-mean, static-peak, vllm-v1, sarathi]
    grid_s: 5.0                     # time grid of the recorded curves (optional; short runs need a finer one)
    smoke: {...}                    # overrides for --smoke

Scales are fractions of the workload's capacity scale θ* (the largest multiple of its rates
that the fluid model serves); a trace's `scale` multiplies its own rate (replayed faster).
`static-mean` / `static-peak` are the capped policy solved at the profile's time-averaged and
peak rate; `adaptive` starts from the mean-rate policy and re-solves online. The benchmark is the
fluid ODE (`fluid/ode.py`, WAIT admission with thresholds at the peak rate) driven by the same
rate profile. For each run the file records cumulative decode tokens over time against the
ODE's, requests in the system over time, latency and TTFT.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fluid.errors import InputError

PROFILE_KINDS = ("steps", "sine", "trace")
STATIC = ("static-mean", "static-peak")
ADAPTIVE = "adaptive"
DEFAULT_SCHEDULERS = (ADAPTIVE, "static-mean", "static-peak", "vllm-v1", "sarathi")
GRID_S = 5.0  # time grid of the recorded curves
# the cumulative comparison starts once the benchmark has completed this share of its run's tokens
# (before that both counts are a handful of requests and their ratio is noise)
COMPARE_FROM_SHARE = 0.02
PEAK_CAP_OF_CAPACITY = 0.95
TRACE_RATE_BINS = 60  # a replayed trace's arrival span is cut into this many rate bins for its benchmark


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
        if isinstance(self.grid_s, bool) or not isinstance(self.grid_s, (int, float)) or not self.grid_s > 0:
            raise InputError(f"grid_s must be a number > 0 (seconds), got {self.grid_s!r}", field="grid_s")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise InputError(f"seeds must be non-negative integers, got {list(self.seeds)!r}", field="seeds")


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
        raise InputError(str(err).split(": ", 1)[-1], source=path, field=err.field) from None


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
        duration, period, bin_s = float(p["duration_s"]), float(p["period_s"]), float(p.get("bin_s", 5.0))
        mean, amp = float(p["mean"]), float(p["amplitude"])
        if not (0 < amp < mean) or duration <= 0 or period <= 0 or bin_s <= 0:
            raise InputError("sine needs 0 < amplitude < mean and positive duration_s, period_s, bin_s", field="profile")
        edges = np.arange(0.0, duration + bin_s / 2, bin_s)
        mid = (edges[:-1] + edges[1:]) / 2
        return Profile(edges, (mean + amp * np.sin(2 * math.pi * mid / period)) * theta * base, shares), None
    # a trace, replayed with its own timestamps
    from runtime.arrivals import load_trace

    if workload.arrivals.kind != "trace":
        raise InputError(f"workload '{workload.name}' has no timestamped trace to replay", field="profile.kind")
    scale = float(p.get("scale", 1.0))
    limit = p.get("max_requests")
    offsets, prompts, outputs = load_trace(workload.arrivals.trace)
    times = np.asarray(offsets, float) * workload.arrivals.time_scale / scale
    if limit is not None:
        times, prompts, outputs = times[:limit], prompts[:limit], outputs[:limit]
    bin_s = float(p.get("bin_s", 60.0))
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
def solve_capped(workload, policy: str, rate_per_s: float, adaptive: dict | None) -> dict:
    """The policy document `fluidsched solve --service-rule capped [--adaptive]` writes at total
    rate `rate_per_s` (the workload's type shares), through the command's own solver."""
    from validation.policies import solve_policy_document

    args = ["--service-rule", "capped"]
    if adaptive is not None:
        args.append("--adaptive")
        for key, value in adaptive.items():
            args += [f"--adaptive-{key.replace('_', '-')}", str(value)]
    scaled = workload.scaled(rate_per_s / workload.total_rate_per_s)
    doc, _ = solve_policy_document(scaled, {"policy": policy, "method": "cli", "args": args})
    return doc


def solve_capped_at_most(workload, policy: str, rate_per_s: float) -> tuple[float, dict]:
    """`solve_capped` at `rate_per_s`, or at the highest rate 2 % steps below it that solves (near
    capacity the solver can refuse a rate the fluid model still serves)."""
    from fluid.errors import UnstableWorkloadError

    rate = rate_per_s
    for _ in range(25):
        try:
            return rate, solve_capped(workload, policy, rate, None)
        except UnstableWorkloadError:
            rate *= 0.98
    return rate, solve_capped(workload, policy, rate, None)


def _copy(r):
    from runtime.request import Request

    return Request(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens, r.type_name, r.tbt_slo_s, r.tier)


# --- one run ---------------------------------------------------------------------------------
def _curves(requests, end_s: float):
    grid = np.arange(0.0, end_s + GRID_S, GRID_S)
    done = sorted((r.completion_s, r.output_tokens) for r in requests if r.completion_s is not None)
    times = np.array([d[0] for d in done])
    tokens = np.cumsum([d[1] for d in done]) if done else np.array([])
    idx = np.searchsorted(times, grid, side="right")
    cum = np.where(idx > 0, tokens[np.maximum(idx - 1, 0)] if len(tokens) else 0, 0).astype(float)
    arrivals = np.searchsorted(np.sort([r.arrival_s for r in requests]), grid, side="right")
    in_system = arrivals - idx
    return grid, cum, in_system


def solvable_peak_rate(workload, profile: Profile) -> float:
    """The profile's peak total rate, or PEAK_CAP_OF_CAPACITY × the capacity when the peak is beyond
    what any policy serves (a trace's busiest minute can be): no threshold exists above capacity."""
    from fluid.equilibrium import closed_form

    capacity = closed_form(workload).capacity_scale * workload.total_rate_per_s
    return min(profile.peak_rate_per_s(), PEAK_CAP_OF_CAPACITY * capacity)


def _fluid_curve(workload, profile: Profile, end_s: float, rows=None):
    """The ODE's benchmark over time: for a replayed trace (`rows` of (arrival_s, prompt, output)),
    built from the replayed requests themselves (their own lengths and per-type arrival counts,
    `fluid.over_time.benchmark_for_requests`), since the preset's binned types at whole-trace shares
    carry less work than the replayed stretch (docs/validation.md, "The fluid benchmark over time");
    for a rate profile over the preset's types, from that profile."""
    from fluid.over_time import DEFAULT_TYPE_BINS, benchmark_for_requests, benchmark_over_time

    grid = np.arange(0.0, end_s + GRID_S, GRID_S)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.float64)
        span = float(rows[:, 0].max())
        bench = benchmark_for_requests(workload, rows[:, 0], rows[:, 1].astype(int), rows[:, 2].astype(int), grid,
                                       bin_s=span / TRACE_RATE_BINS, type_bins=DEFAULT_TYPE_BINS)
    else:
        peak = workload.scaled(solvable_peak_rate(workload, profile) / workload.total_rate_per_s)
        bench = benchmark_over_time(workload, profile.rates(), grid, threshold_workload=peak)
    return bench.cumulative_decode_tokens, bench.in_system


def policy_documents(workload, exp: DriftExperiment, profile: Profile) -> tuple[float, dict, dict]:
    """(rate static-peak was solved at, {label: policy document}, {label: scheduler name}) for the
    static and adaptive labels; the others run their own defaults."""
    peak_rate, peak_document = solve_capped_at_most(workload, exp.policy, solvable_peak_rate(workload, profile))
    documents = {
        "static-mean": solve_capped(workload, exp.policy, profile.mean_rate_per_s(), None),
        "static-peak": peak_document,
        ADAPTIVE: solve_capped(workload, exp.policy, profile.mean_rate_per_s(), exp.adaptive),
    }
    names = {"static-mean": f"{exp.policy}-capped", "static-peak": f"{exp.policy}-capped", ADAPTIVE: f"{exp.policy}-adaptive"}
    return peak_rate, documents, names


def build_scheduler(label: str, kv, documents: dict, names: dict):
    """The scheduler a run label stands for, on `kv`."""
    from runtime.policy_file import policy_from_dict
    from runtime.schedulers import make_scheduler

    if label in documents:
        return make_scheduler(names[label], kv, policy=policy_from_dict(documents[label]))
    return make_scheduler(label, kv)


def _held(steps, sched, phases_s) -> dict:
    """What a run held: KV in use (time-weighted over steps: mean and p99 of the step values), the
    capped schedulers' total cap (the admission limit, time-weighted), pauses and evictions, and the
    mean latency of the requests arriving in each phase of a `steps` profile."""
    out = {}
    if steps is not None and len(steps.start_s):
        dur = np.asarray(steps.end_s) - np.asarray(steps.start_s)
        kv = np.asarray(steps.kv_used_tokens, float)
        out["mean_kv_tokens"] = float(np.sum(kv * dur) / np.sum(dur)) if np.sum(dur) > 0 else float(np.mean(kv))
        out["p99_kv_tokens"] = float(np.percentile(kv, 99))
        if phases_s is not None:
            start = np.asarray(steps.start_s)
            out["mean_kv_tokens_by_phase"] = [float(np.sum(kv[m] * dur[m]) / np.sum(dur[m])) if np.sum(dur[m]) > 0 else None
                                              for m in ((start >= a) & (start < b) for a, b in zip(phases_s[:-1], phases_s[1:]))]
    stats = getattr(sched, "stats", None)
    if isinstance(stats, dict):
        for key in ("decodes_paused", "evictions"):
            if key in stats:
                out[key] = int(stats[key])
    history = getattr(sched, "cap_history", None)
    if history is None and hasattr(sched, "group_caps"):
        history = [(0.0, dict(sched.group_caps), 1.0)]
    if history and steps is not None and len(steps.end_s):
        end = float(steps.end_s[-1])
        times = [t for t, _, _ in history] + [end]
        totals = [sum(c.values()) for _, c, _ in history]
        span = [max(0.0, min(b, end) - a) for a, b in zip(times[:-1], times[1:])]
        out["mean_caps_total"] = float(sum(t * w for t, w in zip(totals, span)) / sum(span)) if sum(span) > 0 else float(totals[-1])
        if phases_s is not None:  # the same, within each phase
            by_phase = []
            for a, b in zip(phases_s[:-1], phases_s[1:]):
                part = [(tot, max(0.0, min(hi, b) - max(lo, a))) for tot, lo, hi in zip(totals, times[:-1], times[1:])]
                weight = sum(w for _, w in part)
                by_phase.append(float(sum(t * w for t, w in part) / weight) if weight > 0 else None)
            out["mean_caps_total_by_phase"] = by_phase
    return out


def run_record(exp: DriftExperiment, label: str, names: dict, seed: int, requests, sched, peak_kv_tokens: int,
               curve_end_s: float, fluid_cum, fluid_in_system, steps=None) -> dict:
    """One run's entry of the result file, from its finished requests (simulated or live alike) and,
    when given, its step log (what it held)."""
    from runtime.metrics import latencies_s, ttfts_s

    grid, cum, in_system = _curves(requests, curve_end_s)
    n = len(grid)
    bench = fluid_cum[:n]
    start = np.argmax(bench >= COMPARE_FROM_SHARE * bench[-1]) if bench[-1] > 0 else 0
    ratio = cum[start:] / np.maximum(bench[start:], 1e-12)
    # a run cut at a horizon (live runs) leaves some unfinished: latency is over the finished ones,
    # and "completed" < "requests" says so
    lat, ttft = latencies_s([r for r in requests if r.completion_s is not None]), ttfts_s(requests)
    run = {
        "experiment": exp.name, "policy": label, "scheduler": names.get(label, label), "seed": seed,
        "requests": len(requests), "completed": int(sum(r.completion_s is not None for r in requests)),
        "cumulative_throughput_vs_fluid_min": float(np.min(ratio)) if len(ratio) else None,
        "cumulative_throughput_vs_fluid_min_after_s": float(grid[start]),
        "mean_latency_s": float(np.mean(lat)) if len(lat) else None,
        "p99_latency_s": float(np.percentile(lat, 99)) if len(lat) else None,
        "mean_ttft_s": float(np.mean(ttft)) if len(ttft) else None,
        "restarts": int(sum(r.restarts for r in requests)),
        "peak_kv_tokens": int(peak_kv_tokens),
        "curves": {"time_s": grid.tolist(), "cumulative_decode_tokens": cum.tolist(),
                   "fluid_cumulative_decode_tokens": bench.tolist(), "in_system": in_system.tolist(),
                   "fluid_in_system": fluid_in_system[:n].tolist()},
    }
    phases = exp.profile.get("edges_s") if exp.profile.get("kind") == "steps" else None
    if phases is not None:
        arrival = np.array([r.arrival_s for r in requests])
        done = np.array([r.completion_s is not None for r in requests])
        lat_all = np.array([(r.completion_s - r.arrival_s) if r.completion_s is not None else np.nan for r in requests])
        run["mean_latency_s_by_phase"] = [float(np.mean(lat_all[m])) if np.any(m) else None
                                          for m in ((arrival >= a) & (arrival < b) & done for a, b in zip(phases[:-1], phases[1:]))]
    run.update(_held(steps, sched, phases))
    if label == ADAPTIVE:
        run["cap_changes"] = [{"time_s": t, "caps": caps, "estimate_scale": s} for t, caps, s in sched.cap_history]
    return run


def attach_static_latencies(runs: list[dict]) -> None:
    """Each run gets the static policies' mean latency over the seeds (the target compares them)."""
    static = {label: np.mean([r["mean_latency_s"] for r in runs if r["policy"] == label]) for label in STATIC
              if any(r["policy"] == label for r in runs)}
    for r in runs:
        r["static_mean_latency_s"] = static.get("static-mean")
        r["static_peak_mean_latency_s"] = static.get("static-peak")


def experiment_requests(exp: DriftExperiment, workload, profile: Profile, rows, seed: int):
    """The arrivals of one seed: the replayed trace, or the profile's Poisson process."""
    return trace_requests(workload, rows) if rows is not None else poisson_requests(workload, profile, seed)


@contextmanager
def curve_grid(grid_s: float):
    """Record curves (`_curves`, `_fluid_curve`: both read GRID_S) on a `grid_s` grid for the duration."""
    global GRID_S
    saved, GRID_S = GRID_S, float(grid_s)
    try:
        yield
    finally:
        GRID_S = saved


def run_experiment(exp: DriftExperiment, *, progress=None) -> dict:
    with curve_grid(exp.grid_s):
        return _run_experiment(exp, progress=progress)


def _run_experiment(exp: DriftExperiment, *, progress=None) -> dict:
    from fluid.workload_io import load_workload
    from runtime.kv_blocks import KVBlockManager
    from runtime.sim import simulate

    workload = load_workload(exp.workload)
    profile, rows = build_profile(exp, workload)
    peak_rate, documents, names = policy_documents(workload, exp, profile)
    runs = []
    for seed in exp.seeds:
        requests_proto = experiment_requests(exp, workload, profile, rows, seed)
        end_s = max(profile.duration_s, requests_proto[-1].arrival_s if requests_proto else 0.0)
        fluid_cum, fluid_in_system = _fluid_curve(workload, profile, end_s * 1.5, rows)
        for label in exp.schedulers:
            requests = [_copy(r) for r in requests_proto]
            sched = build_scheduler(label, KVBlockManager(workload.kv_capacity_tokens, 16), documents, names)
            result = simulate(sched, requests, workload.batch_time)
            runs.append(run_record(exp, label, names, seed, requests, sched, result.peak_kv_tokens, end_s * 1.5,
                                   fluid_cum, fluid_in_system, result.steps))
            if progress:
                progress(runs[-1])
    attach_static_latencies(runs)
    return {"experiment": exp.name, "workload": exp.workload, "policy": exp.policy, "profile": exp.profile,
            "mean_rate_per_s": profile.mean_rate_per_s(), "peak_rate_per_s": profile.peak_rate_per_s(),
            "static_peak_solved_at_rate_per_s": peak_rate,
            "compare_from_share": COMPARE_FROM_SHARE, "grid_s": exp.grid_s, "runs": runs}


# --- the command -----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="an experiment file (validation/experiments/adaptive/*.yaml)")
    parser.add_argument("--out", help="result JSON (default: docs/adaptive-<name>.json)")
    parser.add_argument("--smoke", action="store_true", help="the file's small version, in seconds")
    parser.add_argument("--json", action="store_true", help="print the result JSON instead of a table")
    parser.add_argument("--no-figure", action="store_true", help="skip the figure (written beside the JSON as .png)")
    parser.add_argument("--adaptive-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting `solve --adaptive-KEY` takes for the adaptive run (e.g. backlog_wait_s=0.5); repeatable")


def run(args) -> int:
    from fluid.file_output import atomic_write_text, finite_json
    from fluid.tables import format_table

    exp = load_experiment(args.config, smoke=args.smoke)
    if args.adaptive_set:
        from dataclasses import replace

        from thresholds.adaptive import AdaptiveSettings

        extra = {}
        for item in args.adaptive_set:
            key, sep, value = item.partition("=")
            if not sep or key not in AdaptiveSettings.__dataclass_fields__:
                raise InputError(f"--adaptive-set takes KEY=VALUE with KEY one of {', '.join(AdaptiveSettings.__dataclass_fields__)}, "
                                 f"got {item!r}", field="--adaptive-set")
            try:
                extra[key] = int(value) if key == "min_completions" else float(value)
            except ValueError:
                raise InputError(f"{key} must be a number, got {value!r}", field="--adaptive-set") from None
        exp = replace(exp, adaptive={**exp.adaptive, **extra})
    out = Path(args.out) if args.out else Path("docs") / f"adaptive-{exp.name}.json"
    result = run_experiment(exp, progress=lambda r: print(f"  {r['policy']:<12} seed {r['seed']}: done", file=sys.stderr))
    atomic_write_text(out, json.dumps(finite_json(result), indent=1) + "\n")
    if not args.no_figure:
        from paper_figures.drift_throughput import draw

        draw(out, out.with_suffix(".png"))
    if args.json:
        print(json.dumps(finite_json(result), indent=1))
        return 0
    rows = [[r["policy"], str(r["seed"]), f"{r['cumulative_throughput_vs_fluid_min']:.4f}", f"{r['mean_latency_s']:.3f}",
             f"{r['mean_ttft_s']:.3f}", str(r["restarts"]), str(r["peak_kv_tokens"])] for r in result["runs"]]
    print(format_table(["policy", "seed", "cum tok / fluid (min)", "lat mean s", "TTFT mean s", "restarts", "peak KV"], rows))
    print(f"\nwrote {out}")
    return 0
