"""SLAI: SLO-aware mixed batching (arXiv 2508.01002), as the authors' code runs it.

Matched source: github agrimUT/SLAI (a Sarathi-Serve fork), `sarathi/core/scheduler/
slai_scheduler.py` (`_post_batch_processing` lines 107-126, `_schedule` lines 134-422), with the
defaults of `sarathi/benchmark/config/default.yml` lines 102-111, Sarathi-Serve's block manager
(`base_block_space_manager.py`) and `base_scheduler.py`.

After each batch, every request of that batch that now decodes gets its last schedulable time,
computed once (lines 115-126):
    LST = (end of that batch) + TBT_SLO − Θ · (mean batch time over every batch so far)
with Θ = `offset_high` (10) when the KV blocks in use (reserved prompt blocks included) reach
`high_kv_use_fraction` (96 %) of the cache, else `offset_low` (5); or a fixed `offset`. Decodes
wait in a heap by (LST, arrival). Prefills still unfinished join the back of the paused list
(round-robin). Each batch, under `token_budget` (512) tokens:
  1. decodes whose LST has passed, earliest first, at most `max_decodes` (128) (lines 150-185);
  2. paused prefills from the front of the list, each a chunk of min(left, budget left); their
     blocks were reserved at admission (lines 187-203);
  3. new prompts, shortest prompt first (`order="spf"`, the default; `"fcfs"` keeps arrival
     order), strict-TBT users (tier 0) first only with `user_priority` (lines 205-223), admitted
     while the blocks of the WHOLE prompt leave the 1 % `watermark` free, fewer than
     `max_num_seqs` (128) requests hold memory and the budget has room; the whole prompt's blocks
     are reserved at once; the first that fails stops admission (lines 225-263);
  4. the other decodes in LST order, while the budget lasts and decodes stay < `max_decodes`
     (lines 265-297).
Memory: a decode needs a free block, whether or not its token crosses a block boundary
(`can_append_slot`). When none is free the paused prefill added last is preempted by recompute,
else the decode itself (lines 159-173, 273-287); preempted requests go to the front of the waiting
queue (`_preempt`) and a recompute prefills l + s + 1 tokens (`Request.evict`).
TBT_SLO is `request.tbt_slo_s`, else `default_tbt_slo_s` (0.2 s). Output lengths are not read.

As in the official code, a request preempted in step 1 is reset for recompute only after the
scheduler returns, so step 3 sees its old state: a preempted paused prefill is admitted again with
a chunk of its old remainder (run from its start).

Deliberate differences: a decode preempted in step 1 that reaches the head of the waiting queue
in the same step stops admission, where the official code fails an assertion ("It is a decode
job"); in that step the official shortest-prompt-first sort still reads the victim's old prompt
length, this one its recompute length. The arrival guard refuses a request that could never be
admitted even with the cache to itself, where the official code would wait forever. The clock is
the executor's (`now_s`), where the official code reads `time.perf_counter()`.
"""

from __future__ import annotations

import heapq

from fluid.numbers import check_number
from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.queues import fraction_knob
from runtime.schedulers.resident import ResidentScheduler
from runtime.schedulers.waiting_order import WaitingOrder

ORDERS = ("spf", "fcfs")


def _positive(value, name: str, *, integer: bool = False, allow_zero: bool = False):
    return check_number(value, name, integer=integer, minimum=0, strict_minimum=not allow_zero)


class SlaiScheduler(ResidentScheduler):
    """`resident` holds the requests with blocks (admitted, not finished, not preempted)."""

    name = "slai"
    reads_step_end_times = True  # each decode's last schedulable time: its step's end + SLO - θ · mean step

    def __init__(
        self,
        kv: KVBlockManager,
        *,
        token_budget: int = 512,
        max_decodes: int = 128,
        max_num_seqs: int = 128,
        order: str = "spf",
        user_priority: bool = False,
        offset: float | None = None,
        offset_low: float = 5.0,
        offset_high: float = 10.0,
        high_kv_use_fraction: float = 0.96,
        default_tbt_slo_s: float = 0.2,
        watermark: float = 0.01,
    ):
        super().__init__(kv)
        self.token_budget = _positive(token_budget, "token_budget", integer=True)
        self.max_decodes = _positive(max_decodes, "max_decodes", integer=True)
        self.max_num_seqs = _positive(max_num_seqs, "max_num_seqs", integer=True)
        if order not in ORDERS:
            raise InputError(f"must be one of {list(ORDERS)}, got {order!r}", field="order")
        self.order = order
        if not isinstance(user_priority, bool):
            raise InputError(f"must be true or false, got {user_priority!r}", field="user_priority")
        self.user_priority = user_priority
        self.offset = None if offset is None else _positive(offset, "offset", allow_zero=True)
        self.offset_low = _positive(offset_low, "offset_low", allow_zero=True)
        self.offset_high = _positive(offset_high, "offset_high", allow_zero=True)
        check_number(high_kv_use_fraction, "high_kv_use_fraction", minimum=0, strict_minimum=True, maximum=1)
        self.high_kv_use_fraction = high_kv_use_fraction
        self.default_tbt_slo_s = _positive(default_tbt_slo_s, "default_tbt_slo_s")
        self.admission_free_blocks = int(fraction_knob(watermark, "watermark") * kv.num_blocks)
        self.waiting = WaitingOrder(by_length=order == "spf", tiered=user_priority)
        self.paused_prefills: list[Request] = []  # admitted, prefill unfinished, round-robin order
        self.decodes: list[tuple[float, float, int, Request]] = []  # heap of (LST, arrival, seq, request)
        self._seq = 0  # heap tie-breaker after (LST, arrival)
        self._lst_s: dict[int, float] = {}  # request id -> its LST while queued
        self._batches = 0
        self._mean_batch_s = 0.0  # cumulative mean over every batch run
        self._served: list[Request] = []  # the last batch's requests, in batch order
        self._stale_prefill: dict[int, int] = {}  # preempted this step -> prefill left before
        self.stats = {"preemptions": 0, "urgent_decodes": 0}

    # --- quantities of the rule ------------------------------------------------------------------
    @property
    def mean_batch_time_s(self) -> float:
        return self._mean_batch_s

    def theta(self) -> float:
        """Θ: the fixed offset, or `offset_high` / `offset_low` at / below the KV-use threshold."""
        if self.offset is not None:
            return self.offset
        kv = self.kv
        high = kv.used_blocks >= self.high_kv_use_fraction * kv.num_blocks
        return self.offset_high if high else self.offset_low

    def slo_s(self, request: Request) -> float:
        return self.default_tbt_slo_s if request.tbt_slo_s is None else request.tbt_slo_s

    def last_schedulable_time_s(self, request: Request) -> float:
        """The LST given to `request` when its last batch ended (KeyError if it is not queued)."""
        return self._lst_s[request.request_id]

    # --- executor interface --------------------------------------------------------------------
    def _enqueue(self, request: Request) -> None:
        self.waiting.append(request)

    def complete_step(self, batch: Batch, start_s: float, end_s: float) -> list[Request]:
        done = super().complete_step(batch, start_s, end_s)
        self._batches += 1
        self._mean_batch_s += ((end_s - start_s) - self._mean_batch_s) / self._batches
        paused = self.paused_prefills
        for r in self._served:  # the official `_post_batch_processing`, in batch order
            if r.completion_s is not None:
                continue
            if r.cached_tokens < r.prefill_target_tokens:
                if r not in paused:
                    paused.append(r)
                continue
            if r in paused:
                paused.remove(r)
            lst = end_s + self.slo_s(r) - self.theta() * self._mean_batch_s
            self._lst_s[r.request_id] = lst
            self._seq += 1
            heapq.heappush(self.decodes, (lst, r.arrival_s, self._seq, r))
        self._served = []
        return done

    def on_finished(self, requests: list[Request]) -> None:
        super().on_finished(requests)
        for r in requests:
            self._lst_s.pop(r.request_id, None)

    # --- one step --------------------------------------------------------------------------------
    def schedule(self, now_s: float) -> Batch:
        batch = Batch(count_key_tiles=self.count_key_tiles)
        while True:
            self._fill(batch, now_s)
            # a lone decode that preempted itself leaves an empty batch: the official engine just
            # schedules again, and the preempted request is then admitted from the waiting queue
            if batch.items or not batch.evicted or not self.has_unfinished():
                return batch

    def _fill(self, batch: Batch, now_s: float) -> None:
        self._stale_prefill = {}
        served = self._served
        budget = self.token_budget
        # 1. decodes past their LST, earliest first
        critical, budget = self._serve_decodes(batch, budget, 0, now_s, urgent_only=True)
        self.stats["urgent_decodes"] += critical
        # 2. paused prefills, from the front (their blocks were reserved at admission)
        paused = self.paused_prefills
        while paused and budget > 0:
            r = paused.pop(0)
            chunk = min(r.prefill_remaining, budget)
            self.reserve(batch, r, chunk)
            served.append(r)
            budget -= chunk
        # 3. new prompts while their whole prefill fits above the watermark
        waiting, kv = self.waiting, self.kv
        while waiting and budget > 0:
            r = waiting[0]
            whole = r.prefill_remaining
            if kv.free_blocks - kv.blocks_needed(r, whole) < self.admission_free_blocks:
                break
            if len(self.resident) >= self.max_num_seqs:
                break
            # preempted in this step (step 1): reset only after the scheduler returns, so it offers
            # its old remainder; for a decode that is none (`prefill_remaining` is 0 right after
            # its prefill and negative once it has decoded), where the official code stops on an
            # assertion ("It is a decode job") and this one stops admission
            left = self._stale_prefill.get(r.request_id, whole)
            if left <= 0:
                break
            waiting.popleft()
            kv.grow(r, whole)
            self.resident[r.request_id] = r
            chunk = min(left, budget)
            self.reserve(batch, r, chunk)
            served.append(r)
            budget -= chunk
        # 4. the other decodes, in LST order
        self._serve_decodes(batch, budget, critical, now_s, urgent_only=False)

    def _serve_decodes(self, batch: Batch, budget: int, critical: int, now_s: float, *, urgent_only: bool) -> tuple[int, int]:
        """Pop decodes in (LST, arrival) order and serve each, a free block each.

        `urgent_only`: only those whose LST has passed, at most `max_decodes`; returns how many
        were served and the budget left. Otherwise any decode while served decodes (the urgent
        ones, `critical`, included) stay below `max_decodes`.
        """
        heap = self.decodes
        kv = self.kv
        count = 0  # the official counters: critical decodes, or non-critical ones
        while heap and budget > 0 and (critical if not urgent_only else 0) + count < self.max_decodes:
            if urgent_only and now_s < heap[0][0]:
                break
            entry = heapq.heappop(heap)
            r = entry[3]
            if urgent_only or now_s < entry[0]:
                count += 1
            while not kv.free_blocks:
                if self.paused_prefills:  # the paused prefill added last
                    self._preempt(self.paused_prefills.pop(), batch)
                else:
                    count -= 1
                    self._preempt(r, batch)
                    break
            else:
                self.reserve(batch, r, 1)
                self._served.append(r)
                budget -= 1
        return count, budget

    def _preempt(self, victim: Request, batch: Batch) -> None:
        self._stale_prefill[victim.request_id] = victim.prefill_remaining
        del self.resident[victim.request_id]
        self._lst_s.pop(victim.request_id, None)
        self.preempt(victim, batch)
        self.waiting.appendleft(victim)  # `_preempt` inserts at the front
        self.stats["preemptions"] += 1
