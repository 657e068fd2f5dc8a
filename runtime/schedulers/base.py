"""The one interface every scheduling policy implements; it never sees tensors.

An executor (the simulated clock in `runtime/sim.py`, or the GPU engine) drives a scheduler so:

    scheduler.add_request(request)            # on arrival
    batch = scheduler.schedule(now_s)         # between steps; reserves KV blocks for the batch
    if batch.items: run it (model time or a real forward), then
        scheduler.complete_step(batch, start_s, end_s)   # advances requests, frees finished ones
    else: idle until the next arrival or scheduler.next_wakeup_s()

`schedule` may evict (recompute) running requests to make room; it frees their blocks through
`self.preempt(request)` and lists them in `batch.evicted` so the GPU engine knows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from fluid.batch_time import BatchShape
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request


@dataclass(slots=True)
class ScheduledWork:
    """One request's share of a step: `num_new_tokens` computed on top of `context_tokens` cached."""

    request: Request
    num_new_tokens: int
    context_tokens: int

    @property
    def is_prefill(self) -> bool:
        return self.context_tokens < self.request.prefill_target_tokens


@dataclass(slots=True)
class Batch:
    items: list[ScheduledWork] = field(default_factory=list)
    evicted: list[Request] = field(default_factory=list)

    def shape(self) -> BatchShape:
        new = kv = decodes = prefills = pairs = 0
        for w in self.items:
            n, ctx = w.num_new_tokens, w.context_tokens
            new += n
            kv += ctx + n
            if w.is_prefill:
                prefills += 1
                pairs += n * (ctx + n)
            else:
                decodes += 1
        return BatchShape(new, kv, decodes, prefills, pairs)


class Scheduler(ABC):
    """Base class: bookkeeping shared by all policies. Subclasses implement `schedule`."""

    name: ClassVar[str]
    #: whether the policy reads `request.output_tokens` (known output lengths)
    uses_output_lengths: ClassVar[bool] = False

    def __init__(self, kv: KVBlockManager):
        self.kv = kv

    # --- called by the executor ----------------------------------------------------------
    @abstractmethod
    def add_request(self, request: Request) -> None:
        """A new request arrived (its `arrival_s` is set)."""

    @abstractmethod
    def schedule(self, now_s: float) -> Batch:
        """Choose the next step. Must reserve KV (`self.kv.grow`) for every item it returns."""

    @abstractmethod
    def has_unfinished(self) -> bool:
        """Whether any request is waiting, paused or running."""

    def next_wakeup_s(self) -> float | None:
        """A time at which `schedule` may return work even with no new arrival (drain timers)."""
        return None

    def on_arrivals_ended(self) -> None:
        """No more requests will arrive (lets cohort policies drain partial cohorts)."""

    def complete_step(self, batch: Batch, start_s: float, end_s: float) -> list[Request]:
        """Advance every scheduled request; free and return the ones that completed."""
        done = []
        for w in batch.items:
            r = w.request
            if r.first_scheduled_s is None:
                r.first_scheduled_s = start_s
            if r.advance(w.num_new_tokens, end_s):
                self.kv.release(r)
                done.append(r)
        if done:
            self.on_finished(done)
        return done

    # --- helpers for subclasses ----------------------------------------------------------
    def on_finished(self, requests: list[Request]) -> None:
        """Drop completed requests from the policy's own queues."""

    def preempt(self, request: Request, batch: Batch) -> None:
        """Evict by recompute: free its blocks; the subclass re-queues it."""
        self.kv.release(request)
        request.evict()
        batch.evicted.append(request)

    def reserve(self, batch: Batch, request: Request, num_new_tokens: int) -> None:
        """Reserve KV for and append one request's work to the batch."""
        self.kv.grow(request, num_new_tokens)
        batch.items.append(ScheduledWork(request, num_new_tokens, request.cached_tokens))
