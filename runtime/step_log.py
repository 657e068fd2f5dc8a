"""What an executor records: one row per step (`StepLog`, columnar) and the run's `SimResult`.

The simulator, the least-work router and the GPU engine all write the same `StepLog` through
`runtime.executor.ServerLoop`, so every metric, trace and figure reads one format. Columns are
plain lists (one append per step, cheap enough to keep always); `StepLog.record(i)` builds the
row as a `StepRecord` on demand.

`kv_used_tokens` is the memory the step holds while it runs: the token slots (whole blocks)
reserved once the scheduler has granted the batch, before the requests that finish in it are
released. It is what the peak and the time-weighted mean of KV use are taken over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fluid.batch_time import BatchShape
from runtime.request import Request


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step, as a row. `host_s` and `graph` are measured by the GPU engine only."""

    start_s: float
    end_s: float
    shape: BatchShape
    kv_used_tokens: int  # reserved while the step ran (before finished requests were released)
    num_evicted: int = 0
    host_s: float | None = None  # scheduler call + input preparation before the device work
    graph: bool = False  # the step replayed a decode CUDA graph


#: the per-step columns every executor fills (the GPU-only columns are extra, see `StepLog`)
STEP_COLUMNS = ("start_s", "end_s", "new_tokens", "kv_tokens", "num_decodes", "num_prefills", "prefill_pairs",
                "decode_key_tiles", "kv_used_tokens", "num_evicted")


@dataclass(slots=True)
class StepLog:
    """Per-step columns, appended by the executor (one entry per step in each list).

    `type_counts` is kept only for traced runs; `host_s` and `graph` only by the GPU engine.
    """

    start_s: list[float] = field(default_factory=list)
    end_s: list[float] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    kv_tokens: list[int] = field(default_factory=list)  # KV tokens the step touched (batch-time input)
    num_decodes: list[int] = field(default_factory=list)
    num_prefills: list[int] = field(default_factory=list)
    prefill_pairs: list[int] = field(default_factory=list)  # Σ chunk·(context + chunk) of the prefills
    decode_key_tiles: list[int | None] = field(default_factory=list)  # the decodes' attention key tiles (BatchShape)
    kv_used_tokens: list[int] = field(default_factory=list)  # token slots reserved while the step ran
    num_evicted: list[int] = field(default_factory=list)
    type_counts: list[dict[str, int]] | None = None  # only when traced
    host_s: list[float] | None = None  # only for measured (GPU) runs
    graph: list[bool] | None = None  # only for measured (GPU) runs

    def append(self, start_s: float, end_s: float, shape: BatchShape, kv_used_tokens: int, num_evicted: int) -> None:
        self.start_s.append(start_s)
        self.end_s.append(end_s)
        self.new_tokens.append(shape.new_tokens)
        self.kv_tokens.append(shape.kv_tokens)
        self.num_decodes.append(shape.num_decodes)
        self.num_prefills.append(shape.num_prefills)
        self.prefill_pairs.append(shape.prefill_attention_pairs)
        self.decode_key_tiles.append(shape.decode_key_tiles)
        self.kv_used_tokens.append(kv_used_tokens)
        self.num_evicted.append(num_evicted)

    def extend(self, other: StepLog) -> None:
        """Append every row of `other` (a fleet's logs into one)."""
        for name in STEP_COLUMNS:
            getattr(self, name).extend(getattr(other, name))
        for name in ("type_counts", "host_s", "graph"):
            mine = getattr(self, name)
            if mine is not None:
                theirs = getattr(other, name)
                if theirs is None:
                    setattr(self, name, None)  # a column some replica lacks means nothing for the fleet
                else:
                    mine.extend(theirs)

    def __len__(self) -> int:
        return len(self.start_s)

    def record(self, i: int) -> StepRecord:
        shape = BatchShape(self.new_tokens[i], self.kv_tokens[i], self.num_decodes[i], self.num_prefills[i], self.prefill_pairs[i],
                           self.decode_key_tiles[i])
        return StepRecord(
            self.start_s[i], self.end_s[i], shape, self.kv_used_tokens[i], self.num_evicted[i],
            self.host_s[i] if self.host_s is not None else None,
            self.graph[i] if self.graph is not None else False,
        )

    def __iter__(self):
        return (self.record(i) for i in range(len(self)))


@dataclass
class SimResult:
    """One executor's run (one server, or one replica of a fleet)."""

    requests: list[Request]  # every request given to it, in arrival order
    end_s: float
    num_steps: int
    peak_kv_tokens: int  # peak KV token slots reserved (whole blocks) while any step ran
    steps: StepLog = field(default_factory=StepLog)
    kv_capacity_tokens: int = 0
    replica: int = 0  # which replica ran it (0 for a single server, -1 for a fleet's combination)
    horizon_s: float | None = None  # the clock stop, when the run had one
