"""The one interface every scheduling policy implements; it never sees tensors.

An executor (the simulated clock in `runtime/sim.py`, or the GPU engine) drives a scheduler so:

    scheduler.add_request(request)            # on arrival
    batch = scheduler.schedule(now_s)         # between steps; reserves KV blocks for the batch
    if batch.items: run it (model time or a real forward), then
        scheduler.complete_step(batch, start_s, end_s)   # advances requests, frees finished ones
    else: idle until the next arrival or scheduler.next_wakeup_s()

`schedule` may evict (recompute) running requests to make room; it frees their blocks through
`self.preempt(request, batch)` and lists them in `batch.evicted` so the GPU engine knows.

What is cheap (the hot paths every policy shares, O(1) per request per step, no allocation
beyond the one `ScheduledWork`): `self.try_reserve(batch, request, n)` (checks the free blocks,
grows KV and updates the batch's shape incrementally, in one call: prefer it to `kv.can_grow`
followed by `reserve`), `self.reserve_decodes(batch, requests)` (the same for a run of decodes,
one call per run), `self.reserve(batch, request, n)`, `self.kv.can_grow` / `blocks_needed`, `batch.shape()` (O(1) when
work was added through `reserve` or `batch.add`), and `complete_step`. Add work to a batch only
through `reserve` / `batch.add`: appending to `batch.items` directly still works but makes
`shape()` recount the whole batch. What is not cheap: Python properties of `Request` inside
loops over all running requests (read the slots), sorting queues every step, and rebuilding
lists of running requests per step; keep policy state incremental.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from itertools import islice
from typing import ClassVar

from fluid.batch_time import ATTENTION_KEY_TILE, BatchShape, decode_key_tiles
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


# the key tile (a power of two) as a mask and a shift: ⌈c / 64⌉ is (c + 63) >> 6 in the hot loops
_TILE_MASK = ATTENTION_KEY_TILE - 1
_TILE_SHIFT = ATTENTION_KEY_TILE.bit_length() - 1
assert ATTENTION_KEY_TILE == 1 << _TILE_SHIFT


@dataclass(slots=True)
class Batch:
    """One step's work. The shape is kept incrementally by `add`; `shape()` is O(1) then."""

    items: list[ScheduledWork] = field(default_factory=list)
    evicted: list[Request] = field(default_factory=list)
    # whether shape() counts the decodes' key tiles; off where the batch-time model does not read
    # them (`Scheduler.count_key_tiles`), so the bulk decode loop skips them
    count_key_tiles: bool = field(default=True, repr=False, compare=False)
    # running totals of the work added through `add` (the shape, without a pass over items)
    _counted: int = field(default=0, init=False, repr=False)
    _new_tokens: int = field(default=0, init=False, repr=False)
    _kv_tokens: int = field(default=0, init=False, repr=False)
    _num_prefills: int = field(default=0, init=False, repr=False)
    _prefill_pairs: int = field(default=0, init=False, repr=False)
    # the decodes' key tiles (`fluid.batch_time.decode_key_tiles`): Σ ⌈context / 64⌉, and how many
    # decodes sit at a multiple of 64 (a decode-only step walks one tile more for exactly those)
    _context_tiles: int = field(default=0, init=False, repr=False)
    _tile_edges: int = field(default=0, init=False, repr=False)

    def add(self, work: ScheduledWork) -> None:
        """Append `work` and update the running shape."""
        self.items.append(work)
        n = work.num_new_tokens
        ctx = work.context_tokens
        self._counted += 1
        self._new_tokens += n
        self._kv_tokens += ctx + n
        if ctx < work.request.prefill_target_tokens:  # is_prefill, inlined
            self._num_prefills += 1
            self._prefill_pairs += n * (ctx + n)
        else:
            self._context_tiles += (ctx + _TILE_MASK) >> _TILE_SHIFT
            self._tile_edges += not ctx & _TILE_MASK

    def shape(self) -> BatchShape:
        if self._counted == len(self.items):
            prefills = self._num_prefills
            decodes = self._counted - prefills
            # decode_key_tiles summed: beside a prefill ⌈c/64⌉ + 1 each, alone ⌈(c + 1)/64⌉ each
            tiles = self._context_tiles + (decodes if prefills else self._tile_edges) if self.count_key_tiles else None
            return BatchShape(self._new_tokens, self._kv_tokens, decodes, prefills, self._prefill_pairs, tiles)
        return self._recount()

    def _recount(self) -> BatchShape:
        """The shape from scratch (items were appended or removed directly)."""
        new = kv = decodes = prefills = pairs = 0
        contexts = []
        for w in self.items:
            n, ctx = w.num_new_tokens, w.context_tokens
            new += n
            kv += ctx + n
            if w.is_prefill:
                prefills += 1
                pairs += n * (ctx + n)
            else:
                decodes += 1
                contexts.append(ctx)
        tiles = sum(decode_key_tiles(c, beside_prefill=prefills > 0) for c in contexts) if self.count_key_tiles else None
        return BatchShape(new, kv, decodes, prefills, pairs, tiles)


class Scheduler(ABC):
    """Base class: bookkeeping shared by all policies. Subclasses implement `schedule`."""

    name: ClassVar[str]
    #: whether the policy reads `request.output_tokens` (known output lengths)
    uses_output_lengths: ClassVar[bool] = False
    #: whether its decisions read the end times `complete_step` receives (a deadline computed from
    #: them, a mean step time): such a policy cannot be scheduled ahead of its steps
    #: (`runtime.executor.run_server_overlapped`), where an end is known only a step later
    reads_step_end_times: ClassVar[bool] = False

    def __init__(self, kv: KVBlockManager):
        self.kv = kv
        #: whether its batches count the decodes' key tiles (`Batch.count_key_tiles`); the
        #: simulator turns it off for a batch-time model that does not read them
        self.count_key_tiles = True
        #: evictions re-prefill l + s and decode again (the paper's reading) instead of the
        #: engines' l + s + 1 that samples directly (`Request.evict`); only FCFS exposes it
        self.paper_recompute = False

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
        """Advance every scheduled request; free and return the ones that completed.

        Subclasses that extend it call `super().complete_step(...)` and use its return value.
        The decode case of `Request.advance` is inlined here (the hottest loop of a run; kept in
        step with `Request.advance`, which handles prefill chunks and every error case).
        """
        done = []
        release = self.kv.release
        for w in batch.items:
            r = w.request
            if r.first_scheduled_s is None:
                r.first_scheduled_s = start_s
            cached = r.cached_tokens
            steps_done = r.decode_steps_done
            if w.num_new_tokens == 1 and cached >= r.prefill_target_tokens:  # a decode stage
                r.cached_tokens = cached + 1
                steps_done += 1
                r.decode_steps_done = steps_done
                r.token_times_s.append(end_s)
                if steps_done < r.output_tokens:
                    continue
                r.completion_s = end_s
            elif not r.advance(w.num_new_tokens, end_s):
                continue
            release(r)
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
        request.evict(paper=self.paper_recompute)
        batch.evicted.append(request)

    def try_reserve(self, batch: Batch, request: Request, num_new_tokens: int) -> bool:
        """`reserve` if the KV blocks are free (True), else leave everything as is (False).

        One call instead of `kv.can_grow` followed by `reserve`: the cheapest way to add work.
        """
        kv = self.kv
        ctx = request.cached_tokens
        total = ctx + num_new_tokens
        held = kv._held.get(request.request_id, 0)
        if total > held * kv.block_size and not kv.try_grow(request, num_new_tokens):
            return False
        batch.items.append(ScheduledWork(request, num_new_tokens, ctx))
        batch._counted += 1
        batch._new_tokens += num_new_tokens
        batch._kv_tokens += total
        if ctx < request.prefill_target_tokens:
            batch._num_prefills += 1
            batch._prefill_pairs += num_new_tokens * total
        else:
            batch._context_tiles += (ctx + _TILE_MASK) >> _TILE_SHIFT
            batch._tile_edges += not ctx & _TILE_MASK
        return True

    def reserve_decodes(
        self, batch: Batch, requests: list[Request], start: int = 0, stop: int | None = None, needs_free_block: bool = False
    ) -> int:
        """Reserve one decode token for each of `requests[start:stop]` in order, while they decode and fit.

        Stops before the first request that is still prefilling or whose next block is not free
        (with `needs_free_block`: before the first one that finds no free block, whether or not it
        would take one, as vLLM 0.6 and Sarathi-Serve check), and returns its index (`stop`, or
        len(requests), when all were reserved). The bulk form of
        `try_reserve(batch, r, 1)` for the decode passes of every policy: the locals are bound
        and the batch's shape updated once per call instead of once per request.
        """
        kv = self.kv
        held_get = kv._held.get
        block_size = kv.block_size
        grow_one_block = kv.grow_one_block
        items = batch.items
        append = items.append
        work = ScheduledWork
        before = len(items)  # the count reserved is the items appended: no counter in the loop
        context = 0  # Σ cached tokens; the batch's KV adds one new token per decode at the end
        if needs_free_block and not kv.free_blocks:
            return start  # free blocks change only where a decode below takes one: checked there
        for r in requests if start == 0 and stop is None else islice(requests, start, stop):
            ctx = r.cached_tokens
            if ctx < r.prefill_target_tokens:
                break  # a prefill: the caller sizes its chunk
            held = held_get(r.request_id, 0)
            if ctx >= held * block_size:  # ctx + 1 > held * block_size: one token more is one block more
                if not kv.free_blocks:
                    break
                grow_one_block(r.request_id, held)
                if needs_free_block and not kv.free_blocks:
                    append(work(r, 1, ctx))
                    context += ctx
                    break  # the next decode finds no free block
            append(work(r, 1, ctx))
            context += ctx
        count = len(items) - before
        batch._counted += count
        batch._new_tokens += count
        batch._kv_tokens += context + count
        if batch.count_key_tiles and count:  # a pass of its own, skipped where no model reads them
            tiles = edges = 0  # Σ ⌈ctx / 64⌉ and the contexts at a multiple of 64 (`Batch._context_tiles`)
            up, shift = _TILE_MASK, _TILE_SHIFT
            for w in items[before:]:
                ctx = w.context_tokens
                tiles += (ctx + up) >> shift
                edges += not ctx & up
            batch._context_tiles += tiles
            batch._tile_edges += edges
        return start + count

    def reserve_all_decodes(self, batch: Batch, requests) -> None:
        """One decode token for each of `requests`, for policies whose admission reserved the memory.

        A block that is not free means the admission rule failed: `KVCapacityError` (from `reserve`).
        """
        requests = list(requests)
        reached = self.reserve_decodes(batch, requests)
        while reached < len(requests):
            self.reserve(batch, requests[reached], 1)  # a prefill left over, or it raises KVCapacityError
            reached = self.reserve_decodes(batch, requests, reached + 1)

    def reserve(self, batch: Batch, request: Request, num_new_tokens: int) -> None:
        """Reserve KV for and append one request's work to the batch.

        The hottest call of every policy, so `KVBlockManager.grow` is skipped when the request's
        blocks already cover the step and `Batch.add` is inlined (kept in step with it).
        """
        kv = self.kv
        ctx = request.cached_tokens
        if ctx + num_new_tokens > kv._held.get(request.request_id, 0) * kv.block_size:
            kv.grow(request, num_new_tokens)
        batch.items.append(ScheduledWork(request, num_new_tokens, ctx))
        batch._counted += 1
        batch._new_tokens += num_new_tokens
        batch._kv_tokens += ctx + num_new_tokens
        if ctx < request.prefill_target_tokens:
            batch._num_prefills += 1
            batch._prefill_pairs += num_new_tokens * (ctx + num_new_tokens)
        else:
            batch._context_tiles += (ctx + _TILE_MASK) >> _TILE_SHIFT
            batch._tile_edges += not ctx & _TILE_MASK


def feed_arrivals(scheduler: Scheduler, arrivals: list[Request], next_index: int, now_s: float, ended: bool) -> tuple[int, bool]:
    """The executors' arrival step: add every request of `arrivals` (sorted by arrival) from
    `next_index` on that has arrived by `now_s`, and tell the scheduler, once, when none are left.

    Returns (the index of the next request to arrive, whether the end of arrivals was told).
    """
    n = len(arrivals)
    while next_index < n and arrivals[next_index].arrival_s <= now_s:
        scheduler.add_request(arrivals[next_index])
        next_index += 1
    if next_index == n and not ended:
        scheduler.on_arrivals_ended()
        ended = True
    return next_index, ended
