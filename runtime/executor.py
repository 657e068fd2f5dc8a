"""The one executor loop: what happens at every step, for the simulator, the router and the GPU.

`ServerLoop` is one server's step protocol, used by all three executors:

- `begin(now_s)`: ask the scheduler for a batch; stamp the eviction time on every request it
  evicted; when the batch has work, check memory and take the KV the step holds (before any
  request finishing in it is released; that is what the peak is taken over).
- `finish(batch, start_s, end_s)`: `Scheduler.complete_step` (advance requests, release the
  finished), check memory again, append the step's row to the `StepLog`.
- `wakeup_s(now_s, next_arrival_s)`: when the server is idle, the next time it may have work;
  `SchedulerDeadlockError` when it has unfinished requests and nothing will ever wake it.

`run_server(loop, requests, device)` is the single-server loop over a `Device`, the thing that
runs a batch and owns the clock: `SimulatedDevice` (a batch-time model; the clock jumps) in
`runtime/sim.py`, the wall-clock device of `runtime/gpu/engine.py` (a real forward; the clock is
`time.perf_counter`, idle time is slept). `run_server_overlapped` is the same loop for a device
that can queue a step and keep working (the GPU engine with `overlap_host=True`): it schedules
and prepares step k + 1 while step k runs. The least-work router (`runtime/router.py`) drives
several `ServerLoop`s from one event queue, since its routing reads every replica's state.

Speed: per step the loop costs a few attribute reads and one row append; the per-request cost of
a step is the scheduler's `schedule` and `complete_step`.
"""

from __future__ import annotations

from typing import Protocol

from fluid.numbers import check_number
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler, feed_arrivals
from runtime.step_log import SimResult, StepLog


class MemoryOverflowError(RuntimeError):
    """A scheduler let KV use exceed the capacity: a bug in the policy, never hidden."""


class SchedulerDeadlockError(RuntimeError):
    """A scheduler stayed idle with unfinished requests and no future event to wake it."""


def check_horizon(horizon_s: float | None) -> None:
    check_number(horizon_s, "horizon_s", minimum=0, strict_minimum=True, unit="of seconds", allow_none=True, what="the horizon")


def type_counts(batch: Batch) -> dict[str, int]:
    """Requests of each workload type in `batch` (a traced run's per-step composition)."""
    counts: dict[str, int] = {}
    for w in batch.items:
        key = w.request.type_name or "?"
        counts[key] = counts.get(key, 0) + 1
    return counts


class ServerLoop:
    """One server's scheduler, memory checks, peak KV and step log (see the module docstring)."""

    __slots__ = ("scheduler", "kv", "index", "log", "trace", "num_steps", "peak_kv_tokens", "held_kv_tokens", "label")

    def __init__(self, scheduler: Scheduler, *, index: int = 0, trace: bool = False, measured: bool = False):
        self.scheduler = scheduler
        self.kv = scheduler.kv
        self.index = index
        self.trace = trace
        self.log = StepLog(type_counts=[] if trace else None, host_s=[] if measured else None, graph=[] if measured else None)
        self.num_steps = 0
        self.peak_kv_tokens = 0
        self.held_kv_tokens = 0  # KV reserved by the step in flight
        self.label = type(scheduler).__name__ if index == 0 else f"replica {index}: {type(scheduler).__name__}"

    def _check_memory(self, when_s: float) -> int:
        kv = self.kv
        free = kv.free_blocks
        if free < 0 or free > kv.num_blocks:
            raise MemoryOverflowError(f"{self.label}: KV blocks in use {kv.num_blocks - free} outside [0, {kv.num_blocks}] at t={when_s:.6f}s")
        return (kv.num_blocks - free) * kv.block_size

    def begin(self, now_s: float) -> Batch | None:
        """The scheduler's next batch at `now_s`, or None when it has no work now."""
        batch = self.scheduler.schedule(now_s)
        evicted = batch.evicted
        if evicted:
            for r in evicted:
                r.eviction_times_s.append(now_s)
        if not batch.items:
            return None
        held = self._check_memory(now_s)
        self.held_kv_tokens = held
        if held > self.peak_kv_tokens:
            self.peak_kv_tokens = held
        return batch

    def finish(self, batch: Batch, start_s: float, end_s: float, *, host_s: float | None = None, graph: bool = False) -> list[Request]:
        """Complete the step that ran `batch` over [start_s, end_s]; returns the requests it finished."""
        shape = batch.shape()  # before complete_step: a decode reads as a prefill once advanced past it
        done = self.scheduler.complete_step(batch, start_s, end_s)
        self.num_steps += 1
        self._check_memory(end_s)
        log = self.log
        log.append(start_s, end_s, shape, self.held_kv_tokens, len(batch.evicted))
        if self.trace:
            log.type_counts.append(type_counts(batch))
        if log.host_s is not None:
            log.host_s.append(host_s)
            log.graph.append(graph)
        return done

    def wakeup_s(self, now_s: float, next_arrival_s: float | None) -> float | None:
        """When an idle server may next have work (None: it has none and never will)."""
        wake = self.scheduler.next_wakeup_s()
        later = [t for t in (wake, next_arrival_s) if t is not None and t > now_s]
        if later:
            return min(later)
        self.check_finished(now_s)
        return None

    def check_finished(self, now_s: float) -> None:
        """`SchedulerDeadlockError` if the scheduler still holds work (called when nothing will wake it)."""
        if self.scheduler.has_unfinished():
            kv = self.kv
            raise SchedulerDeadlockError(
                f"{self.label} is idle with unfinished requests and no pending event at t={now_s:.6f}s "
                f"(KV {kv.used_blocks}/{kv.num_blocks} blocks in use)"
            )

    def result(self, requests: list[Request], end_s: float, horizon_s: float | None = None) -> SimResult:
        return SimResult(requests, end_s, self.num_steps, self.peak_kv_tokens, self.log, self.kv.capacity_tokens, self.index, horizon_s)


class Device(Protocol):
    """What runs a batch and keeps the clock (see `run_server`)."""

    def now_s(self) -> float:
        """The clock now (called at the top of every turn of the loop)."""

    def execute(self, loop: ServerLoop, batch: Batch, start_s: float) -> float:
        """Run `batch`, call `loop.finish(...)`, and return the step's end time."""

    def wait_until(self, t_s: float) -> None:
        """Idle until `t_s` (the simulator jumps, the GPU engine sleeps)."""


def run_server(
    loop: ServerLoop,
    requests: list[Request],
    device: Device,
    *,
    horizon_s: float | None = None,
    max_steps: int | None = None,
    audit: bool = False,
) -> SimResult:
    """The single-server loop: arrivals, one scheduler call between steps, until all finish or the
    clock reaches `horizon_s`.

    `max_steps`: stop with `SchedulerDeadlockError` after that many steps (a policy that livelocks
    by evicting forever). `audit`: check every arrived request's KV bookkeeping after every step.
    """
    check_horizon(horizon_s)
    arrivals = sorted(requests, key=lambda r: r.arrival_s)
    scheduler = loop.scheduler
    n = len(arrivals)
    i = 0
    arrivals_ended = False
    now = device.now_s()
    while True:
        i, arrivals_ended = feed_arrivals(scheduler, arrivals, i, now, arrivals_ended)
        if horizon_s is not None and now >= horizon_s:
            break
        batch = loop.begin(now)
        if batch is None:
            t = loop.wakeup_s(now, arrivals[i].arrival_s if i < n else None)
            if t is None:
                break
            device.wait_until(t)
            now = device.now_s()
            continue
        device.execute(loop, batch, now)
        if audit:
            loop.kv.audit(arrivals[:i])
        if max_steps is not None and loop.num_steps >= max_steps and (scheduler.has_unfinished() or i < n):
            raise SchedulerDeadlockError(f"{loop.label} ran {loop.num_steps} steps without finishing (max_steps)")
        now = device.now_s()
    return loop.result(arrivals, now, horizon_s)


class OverlappedDevice(Protocol):
    """A device that queues a step and lets the host work while it runs (`run_server_overlapped`)."""

    def now_s(self) -> float:
        """The clock now."""

    def prepare(self, batch: Batch) -> object:
        """The host work of `batch`'s step that needs no result of the step in flight."""

    def launch(self, prepared: object) -> tuple[object, float | None, bool]:
        """Queue the prepared step (after the previous one was collected); returns (a handle to
        collect, the host time the step's launch exposed, whether it ran as a graph)."""

    def collect(self, handle: object) -> float:
        """Wait for a launched step's results; returns when they reached the host (its end)."""

    def wait_until(self, t_s: float) -> None:
        """Idle until `t_s`."""


def settle_step(loop: ServerLoop, batch: Batch, row: int, provisional_s: float, end_s: float) -> None:
    """The step logged at `row` ended at `end_s`: rewrite the `provisional_s` its completion stamped.

    `Scheduler.complete_step` ran when the step was launched (so that the next step could be
    scheduled while it ran) and stamped `provisional_s` as its end: the last token time, chunk end
    and completion of each of its requests, and the log row's end. Only the last entries can hold
    it: nothing else is stamped between a step's completion and its settling.
    """
    for w in batch.items:
        r = w.request
        times = r.token_times_s
        if times and times[-1] == provisional_s:
            times[-1] = end_s
        chunks = r.prefill_chunk_end_s
        if chunks and chunks[-1] == provisional_s:
            chunks[-1] = end_s
        if r.completion_s == provisional_s:
            r.completion_s = end_s
    loop.log.end_s[row] = end_s


def run_server_overlapped(
    loop: ServerLoop,
    requests: list[Request],
    device: OverlappedDevice,
    *,
    horizon_s: float | None = None,
    max_steps: int | None = None,
) -> SimResult:
    """`run_server` with the host work of step k + 1 done while step k runs on the device.

    Per turn: arrivals, the scheduler's batch for step k + 1 and its inputs (`prepare`) while step
    k is in flight; then step k's results (`collect`: its end), step k + 1's launch, and at once
    its completion (`Scheduler.complete_step`) so that the next turn can schedule step k + 2.
    The completion stamps the time of the call as the step's end; `settle_step` rewrites it to the
    true end when the step is collected. What the scheduler sees differs from `run_server` in two
    ways, as in any engine that schedules ahead: the clock of its call is the start of the step
    in flight rather than its end (arrivals during that step wait for the next turn), and until a
    step is collected its requests' last timestamps read as that earlier time. Schedulers whose
    decisions read step end times (`Scheduler.reads_step_end_times`) are refused.

    A step's logged interval runs from the later of its scheduling and its predecessor's end to
    its own end, so the log stays contiguous: its length is the device time plus the host time the
    overlap did not hide.
    """
    check_horizon(horizon_s)
    if loop.scheduler.reads_step_end_times:
        raise ValueError(f"{type(loop.scheduler).__name__} decides on step end times; it cannot be scheduled ahead of its steps (run it without overlap)")
    arrivals = sorted(requests, key=lambda r: r.arrival_s)
    scheduler = loop.scheduler
    n = len(arrivals)
    i = 0
    arrivals_ended = False
    in_flight = None  # (handle, batch, its log row, provisional end)
    end_s = now = device.now_s()

    def settle() -> float:
        handle, batch, row, provisional = in_flight
        end = device.collect(handle)
        settle_step(loop, batch, row, provisional, end)
        return end

    while True:
        i, arrivals_ended = feed_arrivals(scheduler, arrivals, i, now, arrivals_ended)
        if horizon_s is not None and now >= horizon_s:
            break
        batch = loop.begin(now)
        if batch is None:
            if in_flight is not None:  # nothing to queue behind it: wait for it, then look again
                end_s = settle()
                in_flight = None
                now = device.now_s()
                continue
            t = loop.wakeup_s(now, arrivals[i].arrival_s if i < n else None)
            if t is None:
                break
            device.wait_until(t)
            now = device.now_s()
            continue
        prepared = device.prepare(batch)
        start_s = now
        if in_flight is not None:
            end_s = settle()
            in_flight = None
            start_s = max(now, end_s)
        handle, host_s, graph = device.launch(prepared)
        provisional = device.now_s()
        row = len(loop.log)
        loop.finish(batch, start_s, provisional, host_s=host_s, graph=graph)
        in_flight = (handle, batch, row, provisional)
        if max_steps is not None and loop.num_steps >= max_steps and (scheduler.has_unfinished() or i < n):
            end_s = settle()
            raise SchedulerDeadlockError(f"{loop.label} ran {loop.num_steps} steps without finishing (max_steps)")
        now = device.now_s()
    if in_flight is not None:
        end_s = settle()
    return loop.result(arrivals, max(now, end_s), horizon_s)
