"""Workloads: request types with rates and lengths, a KV capacity and a batch-time model.

Glossary (arXiv 2504.11320, the serving model): type j has prefill length l_j (`prefill`), decode length l'_j
(`decode`) and Poisson rate λ_j (`rate_per_s`); C is `kv_capacity_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fluid.batch_time import BatchTimeModel
from fluid.errors import InputError
from fluid.numbers import check_number

ARRIVAL_KINDS = ("poisson", "gamma", "deterministic", "trace")
# gamma gaps have shape 1/cv²: outside this range the shape under/overflows in double precision
MIN_GAMMA_CV, MAX_GAMMA_CV = 1e-3, 100.0


def _positive_int(value, field_path: str) -> int:
    return check_number(value, field_path, integer=True, minimum=1, unit="number of tokens")


@dataclass(frozen=True, slots=True)
class RequestType:
    """One request type j: prompt (prefill) length l_j, output (decode) length l'_j, rate λ_j."""

    name: str
    prefill: int
    decode: int
    rate_per_s: float
    tbt_slo_s: float | None = None  # optional time-between-tokens SLO of this type (SLAI tiers)

    def __post_init__(self) -> None:
        where = f"types[{self.name}]"
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"a type needs a non-empty name, got {self.name!r}", field="types[].name")
        _positive_int(self.prefill, f"{where}.prefill")
        _positive_int(self.decode, f"{where}.decode")
        check_number(self.rate_per_s, f"{where}.rate_per_s", minimum=0, strict_minimum=True, unit="rate in requests/s")
        check_number(self.tbt_slo_s, f"{where}.tbt_slo_s", minimum=0, strict_minimum=True, unit="of seconds", allow_none=True)

    @property
    def footprint_token_iterations(self) -> float:
        """a_j = (l'_j + 1)(l_j + l'_j/2): KV tokens summed over the l'_j + 1 stages (arXiv 2504.11320, the fluid benchmark)."""
        return (self.decode + 1) * (self.prefill + self.decode / 2)

    @property
    def new_tokens(self) -> int:
        """Tokens computed over the request's life: l_j prefill + l'_j decode."""
        return self.prefill + self.decode


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    """How the simulator draws arrival times (the fluid model only sees the rates).

    - `poisson`: exponential gaps, the paper's model (arXiv 2504.11320); the default.
    - `gamma`: gamma-distributed gaps with coefficient of variation `cv` (cv = 1 is Poisson,
      cv > 1 burstier, cv < 1 smoother), mean gap 1/λ per type.
    - `deterministic`: equal gaps 1/λ per type (cv = 0).
    - `trace`: replay the timestamps of `trace` (a CSV with TIMESTAMP), each gap multiplied by
      `time_scale` (0.5 replays twice as fast). `trace` is an absolute path or `builtin:NAME`
      (a file under `fluid/data/traces/`); `fluid.traces.resolve_trace_path` resolves it.
    """

    kind: str = "poisson"
    cv: float | None = None
    trace: str | None = None
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise InputError(f"unknown arrival kind {self.kind!r}; use one of {', '.join(ARRIVAL_KINDS)}", field="arrivals.kind")
        ts = check_number(self.time_scale, "arrivals.time_scale", minimum=0, strict_minimum=True, unit="factor")
        if self.kind == "gamma":
            cv = check_number(self.cv, "arrivals.cv", minimum=0, strict_minimum=True, what="gamma arrivals' cv (1 = Poisson)")
            check_number(cv, "arrivals.cv", minimum=MIN_GAMMA_CV, maximum=MAX_GAMMA_CV, what="gamma cv",
                         hint=": the gap shape 1/cv² underflows or overflows outside it; "
                              "use kind: deterministic for evenly spaced arrivals")
        elif self.cv is not None:
            raise InputError(f"cv applies to gamma arrivals only, not {self.kind!r}; remove it", field="arrivals.cv")
        if self.kind == "trace":
            if not isinstance(self.trace, str) or not self.trace:
                raise InputError(f"trace arrivals need a trace file (path or builtin:NAME), got {self.trace!r}", field="arrivals.trace")
        elif self.trace is not None:
            raise InputError(f"a trace file applies to trace arrivals only, not {self.kind!r}; remove it", field="arrivals.trace")
        if self.kind != "trace" and ts != 1.0:
            raise InputError(f"time_scale applies to trace arrivals only; remove it or use kind: trace", field="arrivals.time_scale")

    def to_dict(self) -> dict:
        out: dict = {"kind": self.kind}
        if self.cv is not None:
            out["cv"] = float(self.cv)
        if self.trace is not None:
            out["trace"] = self.trace
            out["time_scale"] = float(self.time_scale)
        return out


@dataclass(frozen=True, slots=True)
class Workload:
    """A validated workload. `types` is non-empty with unique names."""

    name: str
    kv_capacity_tokens: int
    batch_time: BatchTimeModel
    types: tuple[RequestType, ...]
    source: str | None = field(default=None, compare=False)  # file or preset it came from
    arrivals: ArrivalSpec = field(default_factory=ArrivalSpec)  # for the simulator only

    def __post_init__(self) -> None:
        _positive_int(self.kv_capacity_tokens, "kv_capacity_tokens")
        if not self.types:
            raise InputError("a workload needs at least one request type", field="types")
        names = [t.name for t in self.types]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"type names must be unique, repeated: {dupes}", field="types")
        if not isinstance(self.arrivals, ArrivalSpec):
            raise InputError(f"must be an ArrivalSpec, got {self.arrivals!r}", field="arrivals")

    @property
    def total_rate_per_s(self) -> float:
        return sum(t.rate_per_s for t in self.types)

    def scaled(self, rate_scale: float) -> "Workload":
        """The same workload with every rate multiplied by `rate_scale`.

        Trace arrivals are replayed faster to match: their time scale is divided by `rate_scale`.
        """
        check_number(rate_scale, "rate_scale", minimum=0, strict_minimum=True, what="rate scale", unit="factor")
        types = tuple(
            RequestType(t.name, t.prefill, t.decode, t.rate_per_s * rate_scale, t.tbt_slo_s) for t in self.types
        )
        arrivals = self.arrivals
        if arrivals.kind == "trace":
            arrivals = ArrivalSpec("trace", None, arrivals.trace, arrivals.time_scale / rate_scale)
        return Workload(self.name, self.kv_capacity_tokens, self.batch_time, types, self.source, arrivals)
