"""The fluid ODE: stage populations of the serving model as a continuous flow (arXiv 2504.11320, the fluid benchmark).

Design (the paper leaves it open; arXiv 2504.11320 defines only the equilibrium):

* Every resident prompt runs in every iteration and moves one stage on per iteration, so a
  prompt at stage s leaves it at rate 1/ΔT(t), with ΔT(t) = d0 + d_kv·M(t) + d_new·N(t).
* Stages are aggregated into compartments to keep the state small: per type, stage 0 (prefill,
  l_j new tokens) is its own compartment and the decode stages 1..l'_j are split into at most
  `max_compartments` contiguous groups of w_k stages. A compartment holding P prompts releases
  them at rate P/(w_k ΔT) (mean residence w_k iterations, as in the stage model), and charges
  each the mean KV of its stages, l_j + s̄_k. At equilibrium every compartment holds
  x_j ΔT w_k prompts, so M = x_j ΔT Σ_k w_k (l_j + s̄_k) = x_j ΔT a_j and the decode rate is
  x_j l'_j exactly: the aggregation changes only the transient (an Erlang delay in place of a
  fixed one), never the fixed point, which is the LP / closed-form equilibrium.
* Prompts wait in a queue q_j (no memory) before admission. Admission u_j(t):
  - "wait" (fluid limit of WAIT's thresholds): u_j = min(λ_j + q_j/ΔT, n_j/ΔT), at most the
    threshold n_j per iteration; default n_j = (1 + slack)·λ_j ΔT* (the fluid point with slack).
  - "fcfs" (greedy): u_j = λ_j + q_j/ΔT, the whole queue within one iteration.
  Both are throttled by a memory gate that closes linearly over the last `gate_width` share of C.
* Overflow (M > C, possible under FCFS because admitted prompts keep growing) evicts the newest
  prompts, lowest compartment first across types, at the rate that removes the excess within an
  iteration; evicted prompts lose their cache and rejoin the queue (restart from prefill), which
  is how greedy admission loses throughput in the fluid.
* Throughput counts completed decode tokens: Σ_j l'_j × (completion rate of type j).
* Generated decode tokens: every resident prompt in a decode compartment samples one token per
  iteration, so tokens are generated at rate D(t)/ΔT(t), D = the prompts in decode compartments
  (the prefill's first token is not counted, as throughput* = Σ λ_j l'_j does not count it). A
  prompt that passes through spends w_k iterations in compartment k on average, so it generates
  Σ_k w_k = l'_j tokens: once the server has drained, generated = completed decode tokens (an
  evicted prompt restarts and generates its tokens again, so under eviction generated > completed).
* Running totals ride along in the state: arrived (∫λ) and completed prompts per type, so that the
  flows can be checked to conserve prompts: arrived = queued + resident + completed at all times
  (an evicted prompt leaves the compartments and rejoins the queue; none is lost or made); and
  generated decode tokens (∫ D/ΔT dt), integrated exactly rather than by a quadrature of samples.

λ may be constant (the workload's rates), a callable t ↦ array[m], or `PiecewiseRates` (e.g. the
rate profile of a timestamped trace), integrated bin by bin so no change of rate is stepped over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fluid.equilibrium import closed_form
from fluid.errors import InputError, UnstableWorkloadError
from fluid.numbers import check_number
from fluid.workload import Workload

POLICIES = ("wait", "fcfs")


@dataclass(frozen=True)
class PiecewiseRates:
    """λ(t) constant on [edges_s[b], edges_s[b+1]): `rates_per_s` is [bins, types]; 0 after the end."""

    edges_s: np.ndarray
    rates_per_s: np.ndarray

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges_s, dtype=np.float64)
        rates = np.atleast_2d(np.asarray(self.rates_per_s, dtype=np.float64))
        if edges.ndim != 1 or len(edges) != rates.shape[0] + 1:
            raise InputError(f"needs one more edge than bins, got {len(edges)} edges for {rates.shape[0]} bins", field="edges_s")
        if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise InputError("bin edges must be finite and strictly increasing", field="edges_s")
        if not np.all(np.isfinite(rates)) or np.any(rates < 0):
            raise InputError("rates must be finite and non-negative", field="rates_per_s")
        object.__setattr__(self, "edges_s", edges)
        object.__setattr__(self, "rates_per_s", rates)

    @classmethod
    def from_total(cls, edges_s, total_rate_per_s, shares) -> "PiecewiseRates":
        """Split a total rate profile (a trace's requests/s per bin) over types by fixed shares."""
        shares = np.asarray(shares, dtype=np.float64)
        if shares.ndim != 1 or np.any(shares < 0) or shares.sum() <= 0:
            raise InputError(f"type shares must be non-negative with a positive sum, got {shares}", field="shares")
        return cls(np.asarray(edges_s), np.outer(np.asarray(total_rate_per_s, dtype=np.float64), shares / shares.sum()))

    @classmethod
    def from_rate_profile(cls, bin_start_s, total_rate_per_s, bin_s: float, shares) -> "PiecewiseRates":
        """From `fluid.traces.rate_profile(trace, bin_s)`'s (left edges, requests/s) and type shares."""
        starts = np.asarray(bin_start_s, dtype=np.float64)
        return cls.from_total(np.append(starts, starts[-1] + bin_s), total_rate_per_s, shares)

    def __call__(self, t_s: float) -> np.ndarray:
        b = int(np.searchsorted(self.edges_s, t_s, side="right")) - 1
        if b < 0 or b >= self.rates_per_s.shape[0]:
            return np.zeros(self.rates_per_s.shape[1])
        return self.rates_per_s[b]


@dataclass(frozen=True)
class FluidTrajectory:
    """The ODE solution sampled at `times_s` (all arrays share that length unless noted)."""

    policy: str
    times_s: np.ndarray
    memory_tokens: np.ndarray  # M(t)
    iteration_time_s: np.ndarray  # ΔT(t)
    queue_prompts: np.ndarray  # Σ_j q_j(t)
    admitted_rate_per_s: np.ndarray  # [times, types] u_j(t)
    throughput_tokens_per_s: np.ndarray  # completed decode tokens/s
    evicted_rate_per_s: np.ndarray  # prompts/s sent back to the queue
    kv_capacity_tokens: int
    resident_prompts: np.ndarray  # Σ over compartments: admitted, not completed
    arrived_prompts: np.ndarray  # ∫ Σλ dt since 0
    completed_prompts: np.ndarray  # ∫ (completion rate) dt since 0
    completed_decode_tokens: np.ndarray | None = None  # Σ_j l'_j ∫ (type j's completion rate) dt since 0
    generated_decode_tokens: np.ndarray | None = None  # ∫ (prompts in decode compartments) / ΔT dt since 0
    generation_tokens_per_s: np.ndarray | None = None  # (prompts in decode compartments) / ΔT: decode tokens sampled per second

    @property
    def final_memory_tokens(self) -> float:
        return float(self.memory_tokens[-1])

    @property
    def final_throughput_tokens_per_s(self) -> float:
        return float(self.throughput_tokens_per_s[-1])

    @property
    def final_iteration_time_s(self) -> float:
        return float(self.iteration_time_s[-1])


class _Layout:
    """Compartments of every type, flattened: index arrays make the right-hand side vectorised."""

    def __init__(self, workload: Workload, max_compartments: int):
        owner, tokens, width, new, decoding, first, last = [], [], [], [], [], [], []
        for j, t in enumerate(workload.types):
            groups = np.array_split(np.arange(1, t.decode + 1), min(t.decode, max_compartments))
            first.append(len(owner))
            owner.append(j), tokens.append(t.prefill), width.append(1.0), new.append(t.prefill), decoding.append(0.0)
            for g in groups:
                owner.append(j), tokens.append(t.prefill + g.mean()), width.append(float(len(g)))
                new.append(1.0), decoding.append(1.0)
            last.append(len(owner) - 1)
        self.owner = np.array(owner)
        self.tokens = np.array(tokens, dtype=np.float64)  # KV tokens held per prompt
        self.width = np.array(width)  # stages per compartment
        self.new = np.array(new, dtype=np.float64)  # new tokens per prompt per iteration
        self.decoding = np.array(decoding, dtype=np.float64)  # 1 for decode compartments: one token sampled per iteration
        self.first = np.array(first)
        self.last = np.array(last)
        self.level = np.arange(len(owner)) - self.first[self.owner]  # 0 = newest prompts
        self.decode_len = np.array([t.decode for t in workload.types], dtype=np.float64)
        self.num_types = len(workload.types)
        self.size = len(owner)


def _rate_function(workload: Workload, rates) -> tuple[Callable[[float], np.ndarray], list[float]]:
    m = len(workload.types)
    if rates is None:
        lam = np.array([t.rate_per_s for t in workload.types], dtype=np.float64)
        return (lambda t: lam), []
    if isinstance(rates, PiecewiseRates):
        if rates.rates_per_s.shape[1] != m:
            raise InputError(f"rate profile has {rates.rates_per_s.shape[1]} types, the workload {m}", field="rates_per_s")
        return rates, list(rates.edges_s)
    if callable(rates):
        return (lambda t: np.asarray(rates(t), dtype=np.float64).reshape(m)), []
    raise InputError(f"rates must be None, a callable t -> array, or PiecewiseRates, got {type(rates).__name__}", field="rates")


def simulate_fluid(
    workload: Workload,
    duration_s: float,
    *,
    policy: str = "wait",
    rates=None,
    thresholds: np.ndarray | None = None,
    threshold_slack: float = 0.02,
    max_compartments: int = 16,
    gate_width: float = 1e-3,
    num_points: int = 200,
    rtol: float = 1e-8,
    atol: float = 1e-9,
    method: str = "LSODA",
) -> FluidTrajectory:
    """Integrate the fluid model of `workload` from an empty server over [0, duration_s].

    `method`: scipy's `solve_ivp` method. LSODA (the default) switches to a stiff solver when it
    must (a memory gate closing, FCFS eviction); an explicit "RK45" is several times faster on
    long, many-type profiles that stay away from those (`fluid/over_time.py` uses it there)."""
    from scipy.integrate import solve_ivp  # local: the closed-form path never loads scipy

    if policy not in POLICIES:
        raise InputError(f"unknown fluid policy {policy!r}: use one of {', '.join(POLICIES)}", field="policy")
    check_number(duration_s, "duration_s", minimum=0, strict_minimum=True, what="ODE horizon", unit="of seconds")
    check_number(max_compartments, "max_compartments", integer=True, minimum=1)
    lay = _Layout(workload, max_compartments)
    lam_of, breaks = _rate_function(workload, rates)
    d0, d_kv, d_new = workload.batch_time.linear_coefficients()
    C = float(workload.kv_capacity_tokens)
    m, size = lay.num_types, lay.size
    if policy == "wait":
        n_thr = _wait_thresholds(workload, thresholds, threshold_slack)

    def flows(t: float, y: np.ndarray):
        q = np.clip(y[:m], 0.0, None)
        pop = np.clip(y[m : m + size], 0.0, None)
        M = pop @ lay.tokens
        dT = d0 + d_kv * M + d_new * (pop @ lay.new)
        lam = lam_of(t)
        u = lam + q / dT
        if policy == "wait":
            u = np.minimum(u, n_thr / dT)
        u = u * min(1.0, max(0.0, (C - M) / (gate_width * C)))
        out = pop / (lay.width * dT)
        # LIFO eviction of the excess M − C within one iteration, lowest level first
        excess_rate = max(0.0, M - C) / dT
        evict = np.zeros_like(pop)
        if excess_rate > 0:
            level_cap = np.bincount(lay.level, weights=pop * lay.tokens / dT)
            before = np.concatenate([[0.0], np.cumsum(level_cap)[:-1]])
            share = np.clip((excess_rate - before) / np.where(level_cap > 0, level_cap, 1.0), 0.0, 1.0)
            evict = share[lay.level] * pop / dT
        return q, pop, M, dT, lam, u, out, evict

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, pop, M, dT, lam, u, out, evict = flows(t, y)
        inflow = np.empty_like(pop)
        inflow[1:] = out[:-1]
        inflow[lay.first] = u  # stage 0 of each type is fed by admission, not by the previous type
        evicted = np.bincount(lay.owner, weights=evict, minlength=m)
        # the running totals: arrivals, completions (out of the last compartment), generated decode tokens
        return np.concatenate([lam - u + evicted, inflow - out - evict, lam, out[lay.last], [(pop @ lay.decoding) / dT]])

    edges = sorted({0.0, float(duration_s), *[b for b in breaks if 0.0 < b < duration_s]})
    t_eval = np.linspace(0.0, duration_s, num_points)
    y0 = np.zeros(m + lay.size + 2 * m + 1)
    ts, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = t_eval[(t_eval >= lo) & (t_eval <= hi)]
        # the bin's end is evaluated too (the next bin starts from it), then dropped unless asked for:
        # t_eval only samples the dense output, so the steps taken are the same
        with_end = inside if len(inside) and inside[-1] == hi else np.append(inside, hi)
        sol = solve_ivp(rhs, (lo, hi), y0, method=method, t_eval=with_end, rtol=rtol, atol=atol)
        if sol.status < 0:
            raise UnstableWorkloadError(f"fluid ODE integration failed on [{lo:g}, {hi:g}] s: {sol.message}")
        y0 = sol.y[:, -1]
        n = len(inside)
        ts.append(sol.t[:n]), ys.append(sol.y[:, :n])
    times = np.concatenate(ts)
    states = np.concatenate(ys, axis=1).T
    keep = np.concatenate([[True], np.diff(times) > 0])  # shared bin edges appear twice
    times, states = times[keep], states[keep]
    return _trajectory(policy, times, states, flows, lay, workload)


def _wait_thresholds(workload: Workload, thresholds, slack: float) -> np.ndarray:
    m = len(workload.types)
    if thresholds is not None:
        n = np.asarray(thresholds, dtype=np.float64)
        if n.shape != (m,) or not np.all(np.isfinite(n)) or np.any(n <= 0):
            raise InputError(f"needs {m} finite positive thresholds, got {thresholds!r}", field="thresholds")
        return n
    point = closed_form(workload)
    if not point.load_factor < 1:
        raise UnstableWorkloadError(
            f"WAIT's default thresholds need the fluid point, but the load factor is {point.load_factor:.4g} ≥ 1; "
            f"pass thresholds explicitly or reduce the rates"
        )
    return (1.0 + slack) * np.asarray(point.prompts_per_stage)


def _trajectory(policy, times, states, flows, lay: _Layout, workload: Workload) -> FluidTrajectory:
    rows = [flows(t, y) for t, y in zip(times, states)]
    m = lay.num_types
    return FluidTrajectory(
        policy=policy,
        times_s=times,
        memory_tokens=np.array([r[2] for r in rows]),
        iteration_time_s=np.array([r[3] for r in rows]),
        queue_prompts=np.array([r[0].sum() for r in rows]),
        admitted_rate_per_s=np.array([r[5] for r in rows]).reshape(len(rows), m),
        throughput_tokens_per_s=np.array([r[6][lay.last] @ lay.decode_len for r in rows]),
        evicted_rate_per_s=np.array([r[7].sum() for r in rows]),
        kv_capacity_tokens=workload.kv_capacity_tokens,
        resident_prompts=np.clip(states[:, m : m + lay.size], 0.0, None).sum(axis=1),
        arrived_prompts=states[:, m + lay.size : 2 * m + lay.size].sum(axis=1),
        completed_prompts=states[:, 2 * m + lay.size : 3 * m + lay.size].sum(axis=1),
        completed_decode_tokens=states[:, 2 * m + lay.size : 3 * m + lay.size] @ lay.decode_len,
        generated_decode_tokens=states[:, 3 * m + lay.size],
        generation_tokens_per_s=np.array([(r[1] @ lay.decoding) / r[3] for r in rows]),
    )
