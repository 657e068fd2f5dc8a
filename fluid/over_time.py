"""The fluid benchmark over time for a time-varying arrival process (arXiv 2504.11320's fluid
model, integrated by `fluid/ode.py`): cumulative decode tokens generated and completed, and
requests in the system, on a time grid, from an empty server.

Two ways in, one integration:

* `benchmark_over_time(workload, rates, grid_s, threshold_workload=...)`: the workload's types
  driven by a given rate profile (`PiecewiseRates`), e.g. a drift profile that splits a total rate
  over the workload's fixed type shares (`validation/drift.py`).
* `benchmark_for_requests(workload, arrival_s, prompt_tokens, output_tokens, ...)`: the benchmark
  of the very requests a run replays. Its types are those requests' own lengths: the distinct
  (prompt, output) pairs when there are few (a preset's Poisson requests carry exactly its types'
  lengths, so the benchmark is the preset's), else `type_bins` quantile bins of their output
  lengths, each with its requests' mean prompt and output (`fluid/trace_binning.py`). Each type's
  rate on each time bin is that type's count of requests arriving in the bin / the bin's width.
  So the benchmark receives the same work on the same schedule as the run, up to the spreading of
  each bin's arrivals evenly over the bin (`REPLAY_BIN_S`: short, so that the fluid is not
  served work before it arrives), and its types' memory-time a_j = (l'+1)(l + l'/2)
  matches the requests' (a_j is convex in the lengths: coarse bins at their means understate it).

What the benchmark is: the fluid limit of WAIT admission (thresholds n_j = (1 + slack) λ_j ΔT*
solved at the profile's busiest bin, at most `PEAK_CAP_OF_CAPACITY` of the fluid capacity, since
no threshold exists above it) on a server that starts empty. It is a reference, not an upper
bound: a busy bin above capacity builds a fluid queue that the run may clear in its own order.

Two cumulative counts, both of decode tokens (the l' tokens after the prefill's first one, as
throughput* = Σ λ_j l'_j counts them; `runtime.metrics.cumulative_decode_tokens` counts a run's
the same way):

* `generated_decode_tokens` (the primary measure): tokens sampled by time t. In the fluid every
  resident prompt in its decode phase samples one token per iteration, so the rate is the decode
  prompts' mass over ΔT(t), integrated exactly as a state of the ODE. Because a prompt emits its
  tokens one per iteration over its whole residence, the curve does not depend on how the decode
  stages are aggregated into compartments, and it compares with a run token for token.
* `completed_decode_tokens`: a request's l' tokens counted at once when it completes. A prompt's
  residence in the ODE is an Erlang delay of at most `max_compartments` stages (mean exact,
  `fluid/ode.py`), so some fluid mass completes long before a discrete request of that length
  can, and during the first minutes this curve leads any run by an amount that measures the
  aggregation, not a policy.

After the server drains both end at the same total (for runs too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluid.errors import InputError
from fluid.ode import PiecewiseRates, simulate_fluid
from fluid.workload import RequestType, Workload

PEAK_CAP_OF_CAPACITY = 0.95  # thresholds are solved at most at this share of the fluid capacity
DEFAULT_TYPE_BINS = 32  # output-length bins of replayed requests (memory-time within ~0.5 % on Azure conv.)
DEFAULT_MAX_COMPARTMENTS = 16
# Rate bins of a replayed run's benchmark. A bin's arrivals are spread evenly over it, so the
# fluid receives part of a bin's work before the requests carrying it arrive, and no causal
# policy can generate a token of a request that has not arrived. The bin must be short against
# the time a request spends in the system (about 0.5 s and more on the presets here): at 1 s the
# fluid's arrived decode tokens lead the Azure conversation trace's by at most ~1.4k tokens in its
# first two minutes, at 25 s (the trace's span over 60 bins, the earlier choice) by 8.1k, or 52 %
# of what had arrived by 42.5 s (docs/adaptive.md, "Where the minima came from").
REPLAY_BIN_S = 1.0
# ratios of cumulative tokens start once the benchmark has this share of its final tokens
# (before, both counts are a handful of requests and their ratio is noise)
COMPARE_FROM_SHARE = 0.02


@dataclass(frozen=True)
class FluidOverTime:
    """The benchmark on `time_s` (cumulative decode tokens generated and completed, requests
    arrived and not completed, decode tokens/s generated and completed), with the types and
    thresholds it ran with."""

    time_s: np.ndarray
    generated_decode_tokens: np.ndarray
    completed_decode_tokens: np.ndarray
    in_system: np.ndarray
    generation_tokens_per_s: np.ndarray
    throughput_tokens_per_s: np.ndarray  # completed decode tokens/s
    types: tuple[RequestType, ...]
    threshold_rate_per_s: float  # total rate the WAIT thresholds are solved at

    def to_dict(self) -> dict:
        return {"time_s": self.time_s.tolist(), "generated_decode_tokens": self.generated_decode_tokens.tolist(),
                "completed_decode_tokens": self.completed_decode_tokens.tolist(),
                "in_system": self.in_system.tolist(), "threshold_rate_per_s": self.threshold_rate_per_s,
                "types": len(self.types)}


def solvable_workload(workload: Workload, total_rate_per_s: float) -> Workload:
    """`workload` (its type mix) at `total_rate_per_s`, or at PEAK_CAP_OF_CAPACITY of its fluid
    capacity when that rate is beyond what any policy serves (a trace's busiest minute can be)."""
    from fluid.equilibrium import closed_form

    base = workload.total_rate_per_s
    capacity = closed_form(workload).capacity_scale * base
    return workload.scaled(min(float(total_rate_per_s), PEAK_CAP_OF_CAPACITY * capacity) / base)


def benchmark_over_time(workload: Workload, rates: PiecewiseRates, grid_s, *, threshold_workload: Workload | None = None,
                        max_compartments: int = DEFAULT_MAX_COMPARTMENTS, method: str = "LSODA") -> FluidOverTime:
    """Integrate the WAIT fluid of `workload`'s types under `rates` over `grid_s` (increasing, from 0).

    `threshold_workload`: the rates the thresholds are solved at (default: the profile's busiest
    bin with the workload's type mix, through `solvable_workload`)."""
    grid = np.asarray(grid_s, dtype=np.float64)
    if grid.ndim != 1 or len(grid) < 2 or grid[0] != 0 or np.any(np.diff(grid) <= 0):
        raise InputError("the time grid must start at 0 and increase, with two or more points", field="grid_s")
    if threshold_workload is None:
        threshold_workload = solvable_workload(workload, float(rates.rates_per_s.sum(axis=1).max()))
    traj = simulate_fluid(threshold_workload, float(grid[-1]), policy="wait", rates=rates, num_points=len(grid),
                          max_compartments=max_compartments, method=method)
    def at(values):
        return np.interp(grid, traj.times_s, values)

    # the integrated running totals, not quadratures of the sampled rates (which miss the rates'
    # jumps at the profile's bin edges)
    return FluidOverTime(grid, at(traj.generated_decode_tokens), at(traj.completed_decode_tokens),
                         at(traj.resident_prompts + traj.queue_prompts), at(traj.generation_tokens_per_s),
                         at(traj.throughput_tokens_per_s), tuple(threshold_workload.types), threshold_workload.total_rate_per_s)


def request_types(prompt_tokens, output_tokens, *, type_bins: int = DEFAULT_TYPE_BINS) -> tuple[tuple[RequestType, ...], np.ndarray]:
    """(types, index of each request's type) from the requests' own lengths (module docstring);
    types' rates are placeholders (1 each), `replay_rates` sets them per time bin."""
    from fluid.trace_binning import decode_bin_edges

    prompt = np.asarray(prompt_tokens, dtype=np.int64)
    output = np.asarray(output_tokens, dtype=np.int64)
    if prompt.shape != output.shape or prompt.ndim != 1 or len(prompt) == 0:
        raise InputError(f"needs one prompt and one output length per request, got {prompt.shape} and {output.shape}", field="requests")
    if np.any(prompt < 1) or np.any(output < 1):
        raise InputError("prompt and output lengths must be positive", field="requests")
    pairs, which = np.unique(np.stack([prompt, output], axis=1), axis=0, return_inverse=True)
    which = which.reshape(-1)
    if len(pairs) <= type_bins:  # few distinct lengths (a preset's types): the exact ones
        return tuple(RequestType(f"p{p}d{d}", int(p), int(d), 1.0) for p, d in pairs), which
    edges = decode_bin_edges(output, type_bins, "quantile")
    which = np.searchsorted(edges, output, side="right") - 1
    used = np.unique(which)
    types = tuple(RequestType(f"d{edges[k]}-{edges[k + 1] - 1}", max(1, int(round(prompt[which == k].mean()))),
                              max(1, int(round(output[which == k].mean()))), 1.0) for k in used)
    return types, np.searchsorted(used, which)


def replay_rates(arrival_s, type_index, num_types: int, *, bin_s: float) -> PiecewiseRates:
    """Per-type rates on bins of `bin_s` from 0 to past the last arrival: counts / bin width."""
    times = np.asarray(arrival_s, dtype=np.float64)
    if not bin_s > 0 or not np.all(np.isfinite(times)) or np.any(times < 0):
        raise InputError(f"needs finite arrival times ≥ 0 and bin_s > 0, got bin_s = {bin_s!r}", field="bin_s")
    edges = np.arange(0.0, times.max() + bin_s, bin_s)
    if edges[-1] <= times.max():
        edges = np.append(edges, edges[-1] + bin_s)
    counts = np.zeros((len(edges) - 1, num_types))
    np.add.at(counts, (np.clip(np.searchsorted(edges, times, side="right") - 1, 0, len(edges) - 2), np.asarray(type_index)), 1.0)
    return PiecewiseRates(edges, counts / bin_s)


def benchmark_for_requests(workload: Workload, arrival_s, prompt_tokens, output_tokens, grid_s, *, bin_s: float,
                           type_bins: int = DEFAULT_TYPE_BINS, max_compartments: int = DEFAULT_MAX_COMPARTMENTS,
                           method: str = "RK45", threshold_rate_per_s: float | None = None) -> FluidOverTime:
    """The benchmark of these requests on `workload`'s server (its C and batch time): module docstring.

    `bin_s` sets when the benchmark receives the work: a bin's requests are spread evenly over
    it, so a request can reach the fluid up to `bin_s` before it arrives (REPLAY_BIN_S says how
    short that must be). `threshold_rate_per_s`: the total rate the WAIT thresholds are solved
    at (at most PEAK_CAP_OF_CAPACITY of the capacity); default the busiest bin's, which then
    depends on `bin_s` (short bins of a few requests each make it the capacity cap)."""
    types, which = request_types(prompt_tokens, output_tokens, type_bins=type_bins)
    rates = replay_rates(arrival_s, which, len(types), bin_s=bin_s)
    totals = (rates.rates_per_s * np.diff(rates.edges_s)[:, None]).sum(axis=0)  # requests of each type
    mean_mix = tuple(RequestType(t.name, t.prefill, t.decode, float(max(n, 1e-9)) / float(rates.edges_s[-1]))
                     for t, n in zip(types, totals))
    server = Workload(name=f"{workload.name} (replayed requests)", types=mean_mix, batch_time=workload.batch_time,
                      kv_capacity_tokens=workload.kv_capacity_tokens)
    peak = float(rates.rates_per_s.sum(axis=1).max()) if threshold_rate_per_s is None else float(threshold_rate_per_s)
    return benchmark_over_time(server, rates, grid_s, threshold_workload=solvable_workload(server, peak),
                               max_compartments=max_compartments, method=method)


def compare_cumulative(time_s, run_cumulative, benchmark_cumulative, *, from_s: float = 0.0) -> dict:
    """A run's cumulative decode tokens against the benchmark's (the same count: generated, or
    completed) on the same grid `time_s`: {"min": the ratio's minimum from `from_s` (a run's
    warm-up cut) and the time the benchmark has COMPARE_FROM_SHARE of its final tokens on,
    "min_at_s": the time of that minimum, "from_s": the first time compared, "end": the ratio at
    the grid's end (the run's end)}; all None when the benchmark has no tokens."""
    t = np.asarray(time_s, dtype=np.float64)
    run = np.asarray(run_cumulative, dtype=np.float64)
    bench = np.asarray(benchmark_cumulative, dtype=np.float64)
    if not (run.shape == bench.shape == t.shape) or run.ndim != 1 or len(run) == 0:
        raise InputError(f"needs two curves on one grid, got shapes {t.shape}, {run.shape} and {bench.shape}", field="cumulative")
    if not bench[-1] > 0:
        return {"min": None, "min_at_s": None, "from_s": None, "end": None}
    start = int(np.argmax((bench >= COMPARE_FROM_SHARE * bench[-1]) & (t >= from_s)))
    ratio = run[start:] / bench[start:]
    return {"min": float(ratio.min()), "min_at_s": float(t[start + int(ratio.argmin())]), "from_s": float(t[start]),
            "end": float(run[-1] / bench[-1])}
