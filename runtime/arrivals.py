"""Arrival streams: the requests a simulation replays, deterministic for a seed (numpy only).

Kinds follow `fluid.workload.ArrivalSpec` (the workload's `arrivals:` block):

- `poisson`: one Poisson process per type with rate λ_j, superposed (arXiv 2504.11320, the serving model).
- `gamma`: one renewal process per type with gamma gaps of mean 1/λ_j and coefficient of
  variation `cv` (shape 1/cv², so cv = 1 is Poisson), superposed.
- `deterministic`: type j arrives every 1/λ_j seconds (first at 1/λ_j), superposed.
- `trace`: replay a timestamp trace (offsets from its first row × `time_scale`) with the trace's
  own prompt and output lengths; each row is labelled with the nearest workload type (closest in
  log prefill and log decode length), which gives it that type's TBT SLO.

Each type draws from its own child of the seed's `SeedSequence`, so adding a type does not
reshuffle the others' arrivals. SLO tiers (SLAI, arXiv 2508.01002) are drawn per request from a
separate child stream: e.g. 5 % of requests at a 0.1 s TBT SLO (tier 0, the paying tier) and 95 %
at 0.5 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluid.errors import InputError
from fluid.numbers import check_number
from fluid.workload import ArrivalSpec, Workload
from runtime.request import Request


@dataclass(frozen=True, slots=True)
class SloTier:
    """A share of requests with a common TBT SLO; tiers listed first are served first."""

    fraction: float
    tbt_slo_s: float

    def __post_init__(self) -> None:
        for name, value in (("fraction", self.fraction), ("tbt_slo_s", self.tbt_slo_s)):
            check_number(value, f"tiers.{name}", minimum=0, strict_minimum=True, what=f"SLO tier {name}")
        if self.fraction > 1:
            raise InputError(f"SLO tier fraction must be at most 1, got {self.fraction!r}", field="tiers.fraction")


def parse_tiers(text: str) -> tuple[SloTier, ...]:
    """`"0.05:0.1,0.95:0.5"` (fraction:TBT-SLO-seconds pairs, fractions summing to 1)."""
    tiers = []
    for part in text.split(","):
        try:
            fraction, slo = (float(x) for x in part.split(":"))
        except ValueError:
            raise InputError(f"SLO tier {part!r} is not FRACTION:TBT_SLO_S (e.g. 0.05:0.1)", field="tiers") from None
        tiers.append(SloTier(fraction, slo))
    return check_tiers(tiers)


def check_tiers(tiers) -> tuple[SloTier, ...]:
    tiers = tuple(t if isinstance(t, SloTier) else SloTier(*t) for t in tiers)
    if not tiers:
        raise InputError("give at least one SLO tier", field="tiers")
    total = sum(t.fraction for t in tiers)
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"SLO tier fractions must sum to 1, got {total:g}", field="tiers")
    return tiers


# --- arrival times -------------------------------------------------------------------------
def _renewal_times(rate_per_s: float, spec: ArrivalSpec, rng: np.random.Generator, count: int, start_s: float) -> np.ndarray:
    """`count` more arrival times of one type's renewal process after `start_s`."""
    mean_gap_s = 1.0 / rate_per_s
    if spec.kind == "poisson":
        gaps = rng.exponential(mean_gap_s, count)
    elif spec.kind == "gamma":
        shape = 1.0 / (spec.cv * spec.cv)
        gaps = rng.gamma(shape, mean_gap_s / shape, count)
    else:  # deterministic
        gaps = np.full(count, mean_gap_s)
    return start_s + np.cumsum(gaps)


def superposed_arrivals(rates_per_s, spec: ArrivalSpec, num_requests: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `num_requests` arrivals of the superposed per-type processes: (times_s, type index)."""
    rates = [float(r) for r in rates_per_s]
    total = sum(rates)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(rates) + 1)[1:]]
    per_type: list[list[np.ndarray]] = [[] for _ in rates]
    last = [0.0] * len(rates)
    horizon_s = num_requests / total
    while True:
        # extend every type past the horizon; a type's stream depends only on its own generator
        for j, rate in enumerate(rates):
            while last[j] <= horizon_s:
                chunk = _renewal_times(rate, spec, rngs[j], max(16, int(rate * (horizon_s - last[j]) * 1.2) + 16), last[j])
                per_type[j].append(chunk)
                last[j] = float(chunk[-1])
        times = np.concatenate([np.concatenate(c) for c in per_type])
        kinds = np.concatenate([np.full(sum(len(x) for x in c), j, dtype=np.int64) for j, c in enumerate(per_type)])
        inside = times <= horizon_s
        if int(inside.sum()) >= num_requests:
            order = np.lexsort((kinds, times))[:num_requests]  # ties broken by type index
            return times[order], kinds[order]
        horizon_s *= 1.5


# --- trace replay ---------------------------------------------------------------------------
def load_trace(reference: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets_s, prompt_tokens, output_tokens) of a timestamp trace path or `builtin:NAME`.

    Reading and row checks (bad rows name file:line) are `fluid.traces.load_timestamp_trace`'s.
    """
    from fluid.traces import load_timestamp_trace

    trace = load_timestamp_trace(reference)
    return np.asarray(trace.arrival_s, float), np.asarray(trace.prompt_tokens), np.asarray(trace.output_tokens)


def nearest_type_index(workload: Workload, prompts: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Index of the workload type closest to each (prompt, output) in log lengths."""
    lp = np.log(np.asarray(prompts, float))[:, None]
    lo = np.log(np.asarray(outputs, float))[:, None]
    tp = np.log([t.prefill for t in workload.types])[None, :]
    to = np.log([t.decode for t in workload.types])[None, :]
    return np.argmin(np.abs(lp - tp) + np.abs(lo - to), axis=1)


# --- requests -------------------------------------------------------------------------------
def make_requests(
    workload: Workload,
    num_requests: int,
    seed: int = 0,
    *,
    rate_scale: float = 1.0,
    arrivals: ArrivalSpec | None = None,
    tiers=None,
) -> list[Request]:
    """`num_requests` requests in arrival order (ids 0..N-1), with `type_name` and `tbt_slo_s`.

    `arrivals` overrides the workload's own arrival spec; `rate_scale` multiplies every rate (a
    replayed trace plays faster by the same factor); `tiers` (SloTier list or
    (fraction, tbt_slo_s) pairs) draws each request's TBT SLO and `tier` instead of its type's.
    """
    check_number(num_requests, "requests", integer=True, minimum=1, what="the number of requests")
    spec = arrivals if arrivals is not None else workload.arrivals
    if rate_scale != 1.0:
        workload = workload.scaled(rate_scale)  # checks rate_scale
        if spec.kind == "trace":
            spec = ArrivalSpec("trace", None, spec.trace, spec.time_scale / rate_scale)
    types = workload.types
    if spec.kind == "trace":
        offsets_s, prompts, outputs = load_trace(spec.trace)
        if len(offsets_s) < num_requests:
            raise InputError(
                f"the trace has {len(offsets_s)} rows, fewer than the {num_requests} requests asked for; ask for fewer",
                source=str(spec.trace),
                field="requests",
            )
        time_scale = spec.time_scale
        times_s = np.asarray(offsets_s[:num_requests], float) * time_scale
        prompts, outputs = prompts[:num_requests], outputs[:num_requests]
        kinds = nearest_type_index(workload, prompts, outputs)
    else:
        times_s, kinds = superposed_arrivals([t.rate_per_s for t in types], spec, int(num_requests), seed)
        prompts = np.asarray([types[k].prefill for k in kinds], np.int64)
        outputs = np.asarray([types[k].decode for k in kinds], np.int64)
    tier_of = None
    if tiers is not None:
        tiers = check_tiers(tiers)
        tier_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        tier_of = tier_rng.choice(len(tiers), size=len(times_s), p=[t.fraction for t in tiers])
    out = []
    for i in range(len(times_s)):
        t = types[int(kinds[i])]
        if tier_of is None:
            slo, tier = t.tbt_slo_s, 0
        else:
            tier = int(tier_of[i])
            slo = tiers[tier].tbt_slo_s
        out.append(Request(i, float(times_s[i]), int(prompts[i]), int(outputs[i]), t.name, slo, tier))
    return out
