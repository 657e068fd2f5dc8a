"""The simulated executor: a discrete-event loop whose clock is a batch-time model.

Events are arrivals, batch start and batch end. Between steps the scheduler is asked for a batch;
the model gives its duration; memory in use is checked against C after every step so that an
overflow can never hide, and a scheduler that sits idle with work left and nothing to wait for
is reported as a deadlock instead of ending the run quietly.

Every step leaves one row in `SimResult.steps` (a columnar `StepLog`: start, end, batch shape,
KV in use, evictions), cheap enough to keep always; it feeds the batch-size, composition and
KV-use metrics and the Perfetto trace. With `trace=True` each row also counts the batch's
requests per type (`StepLog.type_counts`), which costs a pass over the batch.

Speed: the loop itself is O(1) per step; the per-request cost of a step is the scheduler's
`schedule` plus `Scheduler.complete_step` (one `Request.advance` per item).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fluid.batch_time import BatchShape, BatchTimeModel
from fluid.errors import InputError
from runtime.request import Request
from runtime.schedulers.base import Scheduler, feed_arrivals


class MemoryOverflowError(RuntimeError):
    """A scheduler let KV use exceed the capacity: a bug in the policy, never hidden."""


class SchedulerDeadlockError(RuntimeError):
    """A scheduler stayed idle with unfinished requests and no future event to wake it."""


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step, as a row (built on demand from the columnar log)."""

    start_s: float
    end_s: float
    shape: BatchShape
    kv_used_tokens: int
    num_evicted: int = 0


@dataclass(slots=True)
class StepLog:
    """Per-step columns, appended by the executor (one entry per step in each list)."""

    start_s: list[float] = field(default_factory=list)
    end_s: list[float] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    kv_tokens: list[int] = field(default_factory=list)  # KV tokens the step touched (batch-time input)
    num_decodes: list[int] = field(default_factory=list)
    num_prefills: list[int] = field(default_factory=list)
    kv_used_tokens: list[int] = field(default_factory=list)  # token slots reserved after the step
    num_evicted: list[int] = field(default_factory=list)
    type_counts: list[dict[str, int]] | None = None  # only when traced

    def append(self, start_s: float, end_s: float, shape: BatchShape, kv_used_tokens: int, num_evicted: int) -> None:
        self.start_s.append(start_s)
        self.end_s.append(end_s)
        self.new_tokens.append(shape.new_tokens)
        self.kv_tokens.append(shape.kv_tokens)
        self.num_decodes.append(shape.num_decodes)
        self.num_prefills.append(shape.num_prefills)
        self.kv_used_tokens.append(kv_used_tokens)
        self.num_evicted.append(num_evicted)

    def __len__(self) -> int:
        return len(self.start_s)

    def record(self, i: int) -> StepRecord:
        shape = BatchShape(self.new_tokens[i], self.kv_tokens[i], self.num_decodes[i], self.num_prefills[i])
        return StepRecord(self.start_s[i], self.end_s[i], shape, self.kv_used_tokens[i], self.num_evicted[i])

    def __iter__(self):
        return (self.record(i) for i in range(len(self)))


@dataclass
class SimResult:
    requests: list[Request]  # every request, in arrival order
    end_s: float
    num_steps: int
    peak_kv_tokens: int  # peak KV token slots reserved (whole blocks) after any step
    steps: StepLog = field(default_factory=StepLog)
    kv_capacity_tokens: int = 0
    replica: int = 0  # which replica ran it (0 for a single server)


def _check_horizon(horizon_s: float | None) -> None:
    if horizon_s is None:
        return
    if isinstance(horizon_s, bool) or not isinstance(horizon_s, (int, float)) or not math.isfinite(horizon_s) or horizon_s <= 0:
        raise InputError(f"horizon must be a finite positive number of seconds, got {horizon_s!r}", field="horizon_s")


def _type_counts(batch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for w in batch.items:
        key = w.request.type_name or "?"
        counts[key] = counts.get(key, 0) + 1
    return counts


def simulate(
    scheduler: Scheduler,
    requests: list[Request],
    batch_time: BatchTimeModel,
    *,
    horizon_s: float | None = None,
    trace: bool = False,
    audit: bool = False,
    max_steps: int | None = None,
) -> SimResult:
    """Run `requests` through `scheduler` until all finish or the clock passes `horizon_s`.

    `trace`: also count each batch's requests per type. `audit`: check the KV bookkeeping of
    every request after every step (O(requests) per step; for tests). `max_steps`: stop with an
    error after that many steps (guards against a policy that livelocks by evicting forever).
    """
    _check_horizon(horizon_s)
    arrivals = sorted(requests, key=lambda r: r.arrival_s)
    kv = scheduler.kv
    num_blocks = kv.num_blocks
    step_time_s = batch_time.step_time_s
    log = StepLog(type_counts=[] if trace else None)
    n = len(arrivals)
    i = 0
    now = 0.0
    num_steps = 0
    peak_reserved = 0
    arrivals_ended = False
    while True:
        i, arrivals_ended = feed_arrivals(scheduler, arrivals, i, now, arrivals_ended)
        if horizon_s is not None and now >= horizon_s:
            break
        batch = scheduler.schedule(now)
        evicted = batch.evicted
        if evicted:
            for r in evicted:
                r.eviction_times_s.append(now)
        if not batch.items:
            wake = scheduler.next_wakeup_s()
            nxt = arrivals[i].arrival_s if i < n else None
            later = [t for t in (wake, nxt) if t is not None and t > now]
            if not later:
                if scheduler.has_unfinished():
                    raise SchedulerDeadlockError(
                        f"{type(scheduler).__name__} is idle with unfinished requests and no pending event "
                        f"at t={now:.6f}s (KV {kv.used_blocks}/{num_blocks} blocks in use)"
                    )
                break
            now = min(later)
            continue
        shape = batch.shape()
        end = now + step_time_s(shape)
        scheduler.complete_step(batch, now, end)
        num_steps += 1
        free = kv.free_blocks
        if free < 0 or free > num_blocks:
            raise MemoryOverflowError(
                f"{type(scheduler).__name__}: KV blocks in use {num_blocks - free} outside [0, {num_blocks}] at t={end:.6f}s"
            )
        if audit:
            kv.audit(arrivals[:i])
        reserved = (num_blocks - free) * kv.block_size
        if reserved > peak_reserved:
            peak_reserved = reserved
        log.append(now, end, shape, reserved, len(evicted))
        if trace:
            log.type_counts.append(_type_counts(batch))
        if max_steps is not None and num_steps >= max_steps:
            raise SchedulerDeadlockError(f"{type(scheduler).__name__} ran {num_steps} steps without finishing (max_steps)")
        now = end
    return SimResult(arrivals, now, num_steps, peak_reserved, log, kv.capacity_tokens)
