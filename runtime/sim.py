"""The simulated executor: the shared executor loop (`runtime/executor.py`) on a batch-time clock.

Events are arrivals, batch start and batch end. Between steps the scheduler is asked for a batch;
the batch-time model gives its duration and the clock jumps to its end; when the server is idle
the clock jumps to the next arrival or scheduler wake-up. Memory is checked against C after every
schedule and every step, and a scheduler that sits idle with work left and nothing to wait for
is reported as a deadlock (`SchedulerDeadlockError`) instead of ending the run quietly.

Every step leaves one row in `SimResult.steps` (a columnar `StepLog`, `runtime/step_log.py`):
start, end, batch shape, the KV the step held, evictions. With `trace=True` each row also counts
the batch's requests per type (`StepLog.type_counts`), which costs a pass over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

from fluid.batch_time import BatchShape, BatchTimeModel, reads_key_tiles
from runtime.executor import (  # noqa: F401 - the simulator's public names
    MemoryOverflowError,
    SchedulerDeadlockError,
    ServerLoop,
    check_horizon,
    run_server,
    run_server_overlapped,
)
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler
from runtime.step_log import SimResult, StepLog, StepRecord  # noqa: F401 - re-exported


class SimulatedDevice:
    """A batch's duration comes from the batch-time model; idle time passes instantly."""

    __slots__ = ("_step_time_s", "_now_s")

    def __init__(self, batch_time: BatchTimeModel):
        self._step_time_s = batch_time.step_time_s
        self._now_s = 0.0

    def now_s(self) -> float:
        return self._now_s

    def execute(self, loop: ServerLoop, batch: Batch, start_s: float) -> float:
        end_s = start_s + self._step_time_s(batch.shape())
        loop.finish(batch, start_s, end_s)
        self._now_s = end_s
        return end_s

    def wait_until(self, t_s: float) -> None:
        self._now_s = t_s


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
    A model that does not read the decodes' key tiles (`fluid.batch_time.reads_key_tiles`: affine,
    linear3) turns the scheduler's tile count off: its step log then records none.
    """
    check_horizon(horizon_s)
    scheduler.count_key_tiles = reads_key_tiles(batch_time)
    loop = ServerLoop(scheduler, trace=trace)
    return run_server(loop, requests, SimulatedDevice(batch_time), horizon_s=horizon_s, max_steps=max_steps, audit=audit)


class SimulatedOverlappedDevice:
    """The overlapped loop (`run_server_overlapped`) on a batch-time clock: a step occupies the
    device for `engine_time` of its shape; preparing a step (the scheduler call, its inputs) costs
    the host `host_time_s` of its shape, hidden while the step before it runs, exposed when the
    device waits for it. Steps queue one behind the other on the device."""

    __slots__ = ("_engine_s", "_host_s", "_now_s", "_busy_until_s")

    def __init__(self, engine_time: BatchTimeModel, host_time_s: Callable[[BatchShape], float]):
        self._engine_s, self._host_s = engine_time.step_time_s, host_time_s
        self._now_s = 0.0
        self._busy_until_s = 0.0

    def now_s(self) -> float:
        return self._now_s

    def prepare(self, batch: Batch):
        shape = batch.shape()
        self._now_s += max(0.0, self._host_s(shape))
        return shape

    def launch(self, shape) -> tuple[float, None, bool]:
        start = max(self._now_s, self._busy_until_s)
        self._busy_until_s = start + self._engine_s(shape)
        return self._busy_until_s, None, False

    def collect(self, done_s: float) -> float:
        self._now_s = max(self._now_s, done_s)
        return self._now_s

    def wait_until(self, t_s: float) -> None:
        self._now_s = max(self._now_s, t_s)


def simulate_overlapped(
    scheduler: Scheduler,
    requests: list[Request],
    engine_time: BatchTimeModel,
    host_time_s: Callable[[BatchShape], float],
    *,
    horizon_s: float | None = None,
    max_steps: int | None = None,
) -> SimResult:
    """`simulate` for the GPU engine's overlapped loop: the same loop (`run_server_overlapped`:
    each step scheduled while the one before runs, so arrivals during a step wait one step more),
    with the device time and the host time of a step as separate models. For a calibration with
    host terms, `engine_time` is its engine-step model and `host_time_s` the full model minus it."""
    return run_server_overlapped(ServerLoop(scheduler), requests, SimulatedOverlappedDevice(engine_time, host_time_s),
                                 horizon_s=horizon_s, max_steps=max_steps)
