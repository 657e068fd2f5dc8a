"""SLAI: SLO-aware mixed batching (arXiv 2508.01002).

Every decoding request gets a last schedulable time
    LST = (end of the batch that produced its last token) + TBT_SLO − Θ · (running mean batch time)
with Θ = 5 below 96 % KV use and 10 above (dynamic offset) or a fixed `offset`. Each batch, under
a token budget of `token_budget` (512) and at most `max_decodes` (128) decodes in all, takes
  1. decodes past their LST, earliest LST first;
  2. started prefills, chunked to fit;
  3. new prompts, shortest prompt first (`order="spf"`) or first come first served
     (`order="fcfs"`), the paying tier (request.tier 0) before the others;
  4. the other decodes, in LST order.
Decodes that do not fit wait a turn with their cache kept. TBT_SLO is `request.tbt_slo_s`, else
`default_tbt_slo_s` (0.2 s).

Choices where the paper is silent: the running mean is over the last
`mean_window_steps` (100) steps; when a decode cannot grow for want of a block, the newest
admitted request not already in this batch is preempted by recompute (LIFO, as vLLM and
Sarathi-Serve do) and, failing that, the decode waits; new prompts are not admitted in a step in
which a decode was short of memory. Output lengths are not read.

Speed: decodes are ordered by LST + Θ·mean (= last token time + SLO, the same order for every Θ),
so a step pops only the decodes it serves. Served decodes come back keyed by the step's end + SLO,
which with one SLO is never below the keys already queued: they go to the back of a sorted FIFO
(O(1)); only an out-of-order key (a restart's old last token, a shorter SLO) goes to a small
heap, and a pop takes the smaller of the two fronts.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from itertools import islice, repeat
from operator import attrgetter

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.resident import ResidentScheduler

ORDERS = ("spf", "fcfs")
_request_id = attrgetter("request_id")


def _positive(value, name: str, *, integer: bool = False, allow_zero: bool = False):
    bad = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if bad or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "integer" if integer else "number"
        raise InputError(f"must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}", field=name)
    return value


class SlaiScheduler(ResidentScheduler):
    """`resident` holds the admitted requests (prefilling or decoding); the newest is preempted first."""

    name = "slai"

    def __init__(
        self,
        kv: KVBlockManager,
        *,
        token_budget: int = 512,
        max_decodes: int = 128,
        order: str = "spf",
        offset: float | None = None,
        offset_low: float = 5.0,
        offset_high: float = 10.0,
        high_kv_use_fraction: float = 0.96,
        default_tbt_slo_s: float = 0.2,
        mean_window_steps: int = 100,
    ):
        super().__init__(kv)
        self.token_budget = _positive(token_budget, "token_budget", integer=True)
        self.max_decodes = _positive(max_decodes, "max_decodes", integer=True)
        if order not in ORDERS:
            raise InputError(f"must be one of {list(ORDERS)}, got {order!r}", field="order")
        self.order = order
        self.offset = None if offset is None else _positive(offset, "offset", allow_zero=True)
        self.offset_low = _positive(offset_low, "offset_low", allow_zero=True)
        self.offset_high = _positive(offset_high, "offset_high", allow_zero=True)
        if not (0 < high_kv_use_fraction <= 1):
            raise InputError(f"must be in (0, 1], got {high_kv_use_fraction!r}", field="high_kv_use_fraction")
        self.high_kv_use_fraction = high_kv_use_fraction
        self.default_tbt_slo_s = _positive(default_tbt_slo_s, "default_tbt_slo_s")
        self._window: deque[float] = deque(maxlen=_positive(mean_window_steps, "mean_window_steps", integer=True))
        self._window_sum_s = 0.0
        self._seq = 0  # tie-breaker and validity stamp of heap entries
        self.waiting: list[tuple] = []  # heap of (tier, length or arrival, seq, request)
        self.prefilling: list[Request] = []  # started prefills, in start order
        # decodes, as (last token time + SLO, seq, request): a sorted FIFO plus a heap of the out-of-order keys
        self._decode_fifo: deque[tuple] = deque()
        self._decode_heap: list[tuple] = []
        self._stale_ids: dict[int, int] = {}  # request id -> queued entries left by its preemptions
        self._num_stale = 0  # sum of `_stale_ids` values
        self._has_own_slo = False  # whether any request brought its own TBT SLO
        self._served: list[Request] = []
        self.stats = {"preemptions": 0, "urgent_decodes": 0, "decodes_deferred": 0}

    # --- quantities of the rule ------------------------------------------------------------------
    @property
    def mean_batch_time_s(self) -> float:
        return self._window_sum_s / len(self._window) if self._window else 0.0

    def theta(self) -> float:
        """Θ: the fixed offset, or 5 / 10 below / above 96 % KV use."""
        if self.offset is not None:
            return self.offset
        kv = self.kv
        high = kv.used_blocks >= self.high_kv_use_fraction * kv.num_blocks
        return self.offset_high if high else self.offset_low

    def slo_s(self, request: Request) -> float:
        return self.default_tbt_slo_s if request.tbt_slo_s is None else request.tbt_slo_s

    def last_schedulable_time_s(self, request: Request) -> float:
        """LST of a decoding request (its last token's batch end + SLO − Θ·mean batch time)."""
        return request.token_times_s[-1] + self.slo_s(request) - self.theta() * self.mean_batch_time_s

    # --- executor interface --------------------------------------------------------------------
    def _enqueue(self, request: Request) -> None:
        if request.tbt_slo_s is not None:
            self._has_own_slo = True
        self._push_waiting(request)

    def complete_step(self, batch: Batch, start_s: float, end_s: float) -> list[Request]:
        done = super().complete_step(batch, start_s, end_s)
        window = self._window
        if len(window) == window.maxlen:
            self._window_sum_s -= window[0]
        window.append(end_s - start_s)
        self._window_sum_s += end_s - start_s
        # decodes: back in the queue, keyed by their new token's time + SLO
        fifo = self._decode_fifo
        append = fifo.append
        last_key = fifo[-1][0] if fifo else -math.inf
        default_slo_s = self.default_tbt_slo_s
        seq = self._seq
        served = self._served
        key = end_s + default_slo_s
        if not self._has_own_slo and key >= last_key:  # one key for all: appended in one piece
            kept = [r for r in served if r.completion_s is None] if done else served
            fifo.extend(zip(repeat(key), range(seq + 1, seq + 1 + len(kept)), kept))
            seq += len(kept)
            served = ()
        for r in served:
            if r.completion_s is None:
                seq += 1
                slo_s = r.tbt_slo_s
                key = end_s + (default_slo_s if slo_s is None else slo_s)
                if key < last_key:
                    heapq.heappush(self._decode_heap, (key, seq, r))
                else:
                    append((key, seq, r))
                    last_key = key
        self._seq = seq
        if self.prefilling:
            still = []
            for r in self.prefilling:
                if r.cached_tokens < r.prompt_tokens + r.decode_steps_done:
                    still.append(r)
                elif r.completion_s is None:
                    self._push_decode(r)
            self.prefilling = still
        self._served = []
        return done

    # --- one step --------------------------------------------------------------------------------
    def schedule(self, now_s: float) -> Batch:
        batch = Batch()
        while True:
            self._fill(batch, now_s)
            if batch.items or not self.resident:
                return batch
            # nothing could run although requests hold memory: free some and try again
            self._preempt_lifo(batch, set())

    def _fill(self, batch: Batch, now_s: float) -> None:
        self._served = []
        paused: list[tuple] = []
        shift_s = self.theta() * self.mean_batch_time_s
        budget = self.token_budget
        # 1. decodes past their LST (key − shift ≤ now), earliest first
        urgent, short_of_memory = self._serve_decodes(batch, min(budget, self.max_decodes), now_s + shift_s, paused)
        self.stats["urgent_decodes"] += urgent
        budget -= urgent
        decodes_left = self.max_decodes - urgent
        # 2. started prefills, chunked to fit
        try_reserve = self.try_reserve
        for r in self.prefilling:
            if not budget:
                break
            chunk = min(budget, r.prompt_tokens + r.decode_steps_done - r.cached_tokens)
            if try_reserve(batch, r, chunk):
                budget -= chunk
        # 3. new prompts (paying tier first; shortest first or FCFS)
        waiting = self.waiting
        while budget and waiting and not short_of_memory:
            r = waiting[0][3]
            if not try_reserve(batch, r, min(budget, r.prompt_tokens + r.decode_steps_done)):
                break
            heapq.heappop(waiting)
            budget -= batch.items[-1].num_new_tokens
            self.resident[r.request_id] = r
            self.prefilling.append(r)
        # 4. the other decodes, in LST order
        if budget and decodes_left:
            self._serve_decodes(batch, min(budget, decodes_left), math.inf, paused)
        # they wait with their cache kept and their LST unchanged: popped in order before every
        # entry still queued, so they go back to the FIFO's front in that order
        self._decode_fifo.extendleft(reversed(paused))
        self.stats["decodes_deferred"] += len(self._decode_fifo) + len(self._decode_heap) - self._num_stale

    def _serve_decodes(self, batch: Batch, limit: int, until_key: float, paused: list) -> tuple[int, bool]:
        """Serve up to `limit` decodes in LST order while their key ≤ `until_key`.

        Returns (how many were served, whether one had to wait for memory). The hot loop of SLAI:
        while the heap is empty, a run from the FIFO's front (up to the first stale entry) is
        reserved in one `reserve_decodes` call; otherwise one entry at a time.
        """
        fifo = self._decode_fifo
        heap = self._decode_heap
        popleft = fifo.popleft
        try_reserve = self.try_reserve
        served = self._served
        count = 0
        short = False
        stale = self._stale_ids
        while count < limit:
            if not heap and fifo:
                run = self._fifo_run(limit - count, until_key)
                n = len(run)
                if n:
                    reached = self.reserve_decodes(batch, run)
                    for _ in range(reached):
                        popleft()
                    served.extend(run if reached == n else run[:reached])
                    count += reached
                    if reached == n:
                        continue
                # the front entry is stale, short of memory or past `until_key`: one at a time
            if heap and (not fifo or heap[0] < fifo[0]):
                if heap[0][0] > until_key:
                    break
                entry = heapq.heappop(heap)
            elif fifo and fifo[0][0] <= until_key:
                entry = popleft()
            else:
                break
            r = entry[2]
            if stale and r.request_id in stale:
                # an entry left by a preemption; older than any later entry of the same request
                # (same SLO, earlier token), so the stale ones pop first
                left = stale.pop(r.request_id) - 1
                if left:
                    stale[r.request_id] = left
                self._num_stale -= 1
                continue
            if not try_reserve(batch, r, 1):
                short = True
                if not self._make_room(batch, r):
                    paused.append(entry)  # nothing left to preempt: it waits with its cache
                    continue
            served.append(r)
            count += 1
        return count, short

    def _fifo_run(self, most: int, until_key: float) -> list[Request]:
        """The requests of the FIFO's front entries, at most `most`, with keys ≤ `until_key`, up to the first stale one."""
        fifo = self._decode_fifo
        n = min(most, len(fifo))
        if n and fifo[n - 1][0] > until_key:
            n = bisect_right(fifo, (until_key, math.inf), 0, n)  # sorted: (key, seq) never ties with (key, inf)
        run = [entry[2] for entry in islice(fifo, n)]
        stale = self._stale_ids
        if stale and not stale.keys().isdisjoint(map(_request_id, run)):
            for i, r in enumerate(run):
                if r.request_id in stale:
                    return run[:i]
        return run

    def _make_room(self, batch: Batch, r: Request) -> bool:
        """Preempt newest-first until `r` can decode; True once it is in the batch."""
        protected = {w.request.request_id for w in batch.items}
        protected.add(r.request_id)
        while self._preempt_lifo(batch, protected):
            if self.try_reserve(batch, r, 1):
                return True
        return False

    def _preempt_lifo(self, batch: Batch, protected: set[int]) -> bool:
        """Preempt (recompute) the newest admitted request outside `protected`; False if none."""
        for rid in reversed(self.resident):
            if rid in protected:
                continue
            victim = self.resident.pop(rid)
            if victim in self.prefilling:
                self.prefilling.remove(victim)
            else:  # a decode: its heap entry goes stale (skipped when popped)
                self._stale_ids[rid] = self._stale_ids.get(rid, 0) + 1
                self._num_stale += 1
            self.preempt(victim, batch)
            self._push_waiting(victim)
            self.stats["preemptions"] += 1
            return True
        return False

    # --- queues ----------------------------------------------------------------------------------
    def _push_waiting(self, r: Request) -> None:
        self._seq += 1
        key = r.prompt_tokens + r.decode_steps_done if self.order == "spf" else r.arrival_s
        heapq.heappush(self.waiting, (r.tier, key, self._seq, r))

    def _push_decode(self, r: Request) -> None:
        self._seq += 1
        entry = (r.token_times_s[-1] + self.slo_s(r), self._seq, r)
        fifo = self._decode_fifo
        if fifo and entry[0] < fifo[-1][0]:
            heapq.heappush(self._decode_heap, entry)
        else:
            fifo.append(entry)
