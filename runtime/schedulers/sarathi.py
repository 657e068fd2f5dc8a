"""Sarathi-Serve: stall-free batching under a token budget (arXiv 2403.02310).

Matched source: github microsoft/sarathi-serve at commit 96f9911, `sarathi/core/scheduler/
sarathi_scheduler.py` (`_schedule`, lines 98-246), `base_scheduler.py` and
`block_space_manager/base_block_space_manager.py`; the shortest-prompt-first variant is the one
in the SLAI authors' fork (github agrimUT/SLAI, `sarathi_scheduler.py` lines 193-199).

Rules, every iteration:
1. The running requests are sorted by arrival, oldest first (`policy.sort_by_priority`, FCFS,
   line 124; a stable sort of the previous step's order). Walking them, a request still
   prefilling is set aside; a decoding request needs ONE FREE BLOCK, whether or not its token
   crosses a block boundary (`can_append_slot` is `free blocks > 0`, base_block_space_manager.py
   94-96). While none is free, the last request not yet walked (the newest arrival, decoding or
   partly prefilled) is preempted by recompute, or, when none is left, the request itself
   (lines 141-152). Decodes are not bounded by the token budget (line 157 counts them without a
   check); `max_num_seqs` (128) < `chunk_size` (512) keeps them within it by default.
2. The requests set aside, in that order, each take a chunk of min(prefill left, chunk_size −
   tokens so far) (lines 165-187); their blocks were allocated at admission.
3. New prompts, FCFS (preempted ones at the front: `_preempt` inserts at 0,
   base_scheduler.py 116-122) or, with `order="spf"`, shortest prompt first, are admitted while
   the blocks of the WHOLE prompt (plus the tokens sampled before a preemption) leave the 1 %
   watermark free (`can_allocate`, base_block_space_manager.py 76-82; allocated at once by
   `allocate`, 84-92), running requests stay < `max_num_seqs` (line 216) and the budget has room
   for a chunk (lines 220-225). The first that fails stops admission (line 212).
   A request preempted in this same step is reset for recompute only after the scheduler returns
   (`on_schedule` → `reset_for_recompute`, base_sequence_manager.py), so admission sees its old
   state: a preempted decode offers 0 prefill tokens and stops admission (line 224); a preempted
   partial prefill is admitted again with a chunk of its old remainder, run from its start.
4. The next step's running order is: the decodes walked, then the prefills set aside, then the
   new admissions (lines 155-239), which the next arrival sort keeps for equal arrival times.
   Here `running` simply stays in admission order, which is that order: at most one request is
   part-way through its prefill and it is the newest admission (a partial chunk takes the rest of
   the budget, so nothing is admitted behind it until it finishes), so no prefill set aside ever
   precedes a decode walked, and preempted requests leave `running`.
Recompute (`Request.evict`): `reset_for_recompute` makes prompt and outputs the new prompt
(sequence.py 175-182), l + s + 1 tokens, and that prefill samples the next token.

Not modelled: pipeline parallelism (paused micro-batches), the dynamic chunking schedule (off by
default), `max_model_len` limits. Vidur's copy of this scheduler, a weaker reference, agrees on
the free block for every decode.

Knobs and defaults: `chunk_size` = 512 (`SarathiSchedulerConfig`, config.py), `max_num_seqs` = 128
(`BaseSchedulerConfig`, config.py), `watermark` = 0.01 (`BaseBlockSpaceManager`, line 57),
`order` = "fcfs" (the fork's default.yml `sarathi_scheduler.fcfs: true`; "spf" sorts waiting
prompts by length, ties in queue order).
"""

from __future__ import annotations

from operator import attrgetter

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.fits import require_fits
from runtime.schedulers.queues import QueueingScheduler, fraction_knob, positive_int_knob
from runtime.schedulers.waiting_order import WaitingOrder

ORDERS = ("fcfs", "spf")
_arrival = attrgetter("arrival_s")


class SarathiScheduler(QueueingScheduler):
    name = "sarathi"

    def __init__(
        self,
        kv: KVBlockManager,
        *,
        chunk_size: int = 512,
        max_num_seqs: int = 128,
        watermark: float = 0.01,
        order: str = "fcfs",
    ):
        super().__init__(kv, max_num_seqs=positive_int_knob(max_num_seqs, "max_num_seqs"))
        self.chunk_size = positive_int_knob(chunk_size, "chunk_size")
        self.watermark_blocks = int(fraction_knob(watermark, "watermark") * kv.num_blocks)
        if order not in ORDERS:
            raise InputError(f"must be one of {list(ORDERS)}, got {order!r}", field="order")
        self.order = order
        if order == "spf":
            self.waiting = WaitingOrder(by_length=True)  # deque interface, shortest prompt first
        self._stale_prefill: dict[int, int] = {}  # requests preempted this step -> prefill left before

    def check_request(self, request: Request) -> None:
        require_fits(self.kv, request, policy=self.name, admission_free_blocks=self.watermark_blocks)

    def schedule(self, now_s: float) -> Batch:
        batch = Batch(count_key_tiles=self.count_key_tiles)
        self._stale_prefill = {}
        walked, set_aside, batched = self._serve_decodes(batch)
        batched = self._continue_prefills(batch, set_aside, batched)
        admitted = self._admit(batch, len(walked) + len(set_aside), batched)
        running = self.running
        for r in admitted:  # appended: the next order is walked, set aside, admitted (rule 4)
            running[r.request_id] = r
        return batch

    def _serve_decodes(self, batch: Batch) -> tuple[list[Request], list[Request], int]:
        """Step 1: decodes by arrival, a free block each, LIFO preemption by arrival.

        Returns (the decodes walked, the prefills set aside, the tokens).
        """
        order = sorted(self.running.values(), key=_arrival)
        kv = self.kv
        walked: list[Request] = []
        set_aside: list[Request] = []
        preempted: list[Request] = []
        end = len(order)
        i = 0
        reserve_decodes = self.reserve_decodes
        while i < end:
            # a run of decodes in one call, up to the first prefill or a step with no free block
            reached = reserve_decodes(batch, order, i, end, True)
            walked.extend(order[i:reached])
            i = reached
            if i == end:
                break
            r = order[i]
            i += 1
            if r.cached_tokens < r.prefill_target_tokens:
                set_aside.append(r)
                continue
            while not kv.free_blocks:
                if i < end:  # the newest arrival not yet walked
                    end -= 1
                    victim = order[end]
                else:
                    victim = r
                del self.running[victim.request_id]
                # what Sarathi-Serve's stale state offers if admission meets it this step
                self._stale_prefill[victim.request_id] = victim.prefill_remaining
                self.preempt(victim, batch)
                preempted.append(victim)
                if victim is r:
                    break
            else:
                self.reserve(batch, r, 1)
                walked.append(r)
        self.waiting.extendleft(preempted)  # each to the front in turn: the last preempted is first
        return walked, set_aside, len(walked)

    def _continue_prefills(self, batch: Batch, set_aside: list[Request], batched: int) -> int:
        """Step 2: the next chunk of each partly prefilled request (blocks reserved at admission)."""
        for r in set_aside:
            chunk = min(r.prefill_remaining, self.chunk_size - batched)
            if chunk > 0:
                self.reserve(batch, r, chunk)
                batched += chunk
        return batched

    def _admit(self, batch: Batch, num_running: int, batched: int) -> list[Request]:
        """Step 3: new prompts while their whole prefill fits above the watermark."""
        waiting, kv = self.waiting, self.kv
        admitted: list[Request] = []
        stale = self._stale_prefill
        while waiting:
            r = waiting[0]
            whole = r.prefill_remaining
            if kv.free_blocks - kv.blocks_needed(r, whole) < self.watermark_blocks:
                break
            if num_running + len(admitted) >= self.max_num_seqs:
                break
            # a request preempted in this very step is reset only after the scheduler returns, so
            # its prefill left reads as before: 0 for a decode (admission stops), the old rest
            # of a partial prefill (admitted with that chunk, which then runs from the start)
            left = stale.get(r.request_id, whole)
            chunk = min(left, self.chunk_size - batched)
            if chunk <= 0:
                break
            waiting.popleft()
            kv.grow(r, whole)
            self.reserve(batch, r, chunk)
            batched += chunk
            admitted.append(r)
        return admitted
