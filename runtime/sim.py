"""The simulated executor: a discrete-event loop whose clock is a batch-time model.

Events are arrivals, batch start and batch end. Between steps the scheduler is asked for a batch;
the model gives its duration; memory in use is checked against C after every step so that an
overflow can never hide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fluid.batch_time import BatchShape, BatchTimeModel
from runtime.request import Request
from runtime.schedulers.base import Scheduler


class MemoryOverflowError(RuntimeError):
    """A scheduler let KV use exceed the capacity: a bug in the policy, never hidden."""


@dataclass
class StepRecord:
    start_s: float
    end_s: float
    shape: BatchShape
    kv_used_tokens: int


@dataclass
class SimResult:
    requests: list[Request]  # every request, in arrival order
    end_s: float
    num_steps: int
    peak_kv_tokens: int  # peak KV token slots reserved (whole blocks) after any step
    steps: list[StepRecord] = field(default_factory=list)  # only when trace=True


def simulate(
    scheduler: Scheduler,
    requests: list[Request],
    batch_time: BatchTimeModel,
    *,
    horizon_s: float | None = None,
    trace: bool = False,
) -> SimResult:
    """Run `requests` (sorted by arrival) through `scheduler` until all finish or `horizon_s`."""
    arrivals = sorted(requests, key=lambda r: r.arrival_s)
    kv = scheduler.kv
    n = len(arrivals)
    i = 0
    now = 0.0
    steps: list[StepRecord] = []
    num_steps = 0
    peak_reserved = 0
    arrivals_ended = False
    while True:
        while i < n and arrivals[i].arrival_s <= now:
            scheduler.add_request(arrivals[i])
            i += 1
        if i == n and not arrivals_ended:
            scheduler.on_arrivals_ended()
            arrivals_ended = True
        if horizon_s is not None and now >= horizon_s:
            break
        batch = scheduler.schedule(now)
        if not batch.items:
            wake = scheduler.next_wakeup_s()
            nxt = arrivals[i].arrival_s if i < n else None
            candidates = [t for t in (wake, nxt) if t is not None and t > now]
            if not candidates:
                if scheduler.has_unfinished():
                    raise RuntimeError(
                        f"{type(scheduler).__name__} is idle with unfinished requests and no pending event at t={now:.6f}s"
                    )
                break
            now = min(candidates)
            continue
        shape = batch.shape()
        end = now + batch_time.step_time_s(shape)
        scheduler.complete_step(batch, now, end)
        num_steps += 1
        if kv.used_blocks > kv.num_blocks or kv.free_blocks < 0:
            raise MemoryOverflowError(f"KV blocks in use {kv.used_blocks} > capacity {kv.num_blocks} at t={end:.6f}s")
        reserved = kv.used_tokens
        if reserved > peak_reserved:
            peak_reserved = reserved
        if trace:
            steps.append(StepRecord(now, end, shape, reserved))
        now = end
    return SimResult(arrivals, now, num_steps, peak_reserved, steps)
