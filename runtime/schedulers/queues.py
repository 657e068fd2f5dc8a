"""Queues and passes shared by the baseline policies (FCFS, vLLM v0/v1, Sarathi-Serve, Orca, MC-SF).

Every baseline keeps the same two structures:

- `waiting`: a deque in arrival order. A request evicted by recompute goes back to its FRONT, as
  vLLM does (`waiting.extendleft(preempted)` in v0, `prepend_request` in v1), so restarts are served
  before new arrivals, oldest restart first.
- `running`: a dict `request_id -> Request` in admission order. Python dicts keep insertion order,
  so iterating it is oldest-first, deleting a finished request is O(1), and the newest admitted
  request (the LIFO victim of the serving model of arXiv 2504.11320 and of vLLM's recompute preemption) is the last entry.

`serve_running` is the pass that vLLM v0 (`_schedule_running`), vLLM v1 (the running loop of
`Scheduler.schedule`) and Vidur's Sarathi scheduler share: oldest first, each running request
asks for its next tokens (one decode token, or a prefill chunk within the token budget); when the
KV blocks are missing, the newest running request is preempted until they are there, or until
the asking request is itself the newest one and is preempted.

`admit_waiting` is their admission pass: FCFS from `waiting` while seats, the token budget and
memory last, stopping at the first request that does not fit; each policy picks whole or chunked
prefills, the blocks it checks (the first step's or the whole prefill's) and a watermark.

`fits.require_fits` is the deadlock guard: a request that could never run, even alone, is refused
on arrival with an `InputError` instead of stalling the simulation. It checks the whole l + l'
even for policies that do not schedule by output length: a request that outgrows C alone would
evict itself and restart forever.
"""

from __future__ import annotations

from collections import deque

from fluid.errors import InputError
from fluid.numbers import check_number
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler
from runtime.schedulers.fits import require_fits


NO_BUDGET = 1 << 62  # stands for "no token budget" inside the running pass


# --- knob validation ------------------------------------------------------------------------
def positive_int_knob(value, field: str, *, allow_none: bool = False) -> int | None:
    """Return `value` if it is a positive integer (or None when allowed), else raise InputError."""
    return check_number(value, field, integer=True, minimum=1, allow_none=allow_none)


def fraction_knob(value, field: str) -> float:
    """Return `value` if it is a number in [0, 1), else raise InputError."""
    return float(check_number(value, field, minimum=0, maximum=1, strict_maximum=True))


# --- the shared state and running pass -------------------------------------------------------
class QueueingScheduler(Scheduler):
    """A FCFS waiting deque, the running set in admission order, and the LIFO-preempting running pass."""

    def __init__(self, kv: KVBlockManager, *, max_num_seqs: int | None):
        super().__init__(kv)
        self.max_num_seqs = positive_int_knob(max_num_seqs, "max_num_seqs", allow_none=True)
        self.waiting: deque[Request] = deque()
        self.running: dict[int, Request] = {}

    # --- executor hooks --------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        self.check_request(request)
        self.waiting.append(request)

    def check_request(self, request: Request) -> None:
        """Refuse a request that could never run (subclasses add their own limits)."""
        require_fits(self.kv, request, policy=self.name)

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or bool(self.running)

    def on_finished(self, requests: list[Request]) -> None:
        running = self.running
        for r in requests:
            running.pop(r.request_id, None)

    # --- helpers for subclasses --------------------------------------------------------------
    def has_seat(self) -> bool:
        """Whether the cap on running requests (`max_num_seqs`) leaves room for one more."""
        return self.max_num_seqs is None or len(self.running) < self.max_num_seqs

    def admit(self, batch: Batch, request: Request, num_new_tokens: int) -> None:
        """Move the head of `waiting` to `running` and schedule its first prefill tokens."""
        self.waiting.popleft()
        self.running[request.request_id] = request
        self.reserve(batch, request, num_new_tokens)

    def admit_waiting(
        self,
        batch: Batch,
        token_budget: int | None = None,
        *,
        chunked: bool = False,
        reserve_whole_prefill: bool = False,
        full_sequence_must_fit: bool = False,
        watermark_blocks: int = 0,
    ) -> int:
        """Admit waiting requests FCFS (restarts first) while seats, budget and memory last; return how many.

        Each takes its whole prefill, or (`chunked`) a chunk cut to the budget left; without
        `chunked` a prefill larger than the budget left stops admission. It must leave
        `watermark_blocks` free after the blocks of its first step, or of its whole prefill when
        `reserve_whole_prefill` (those are then reserved at once, as Sarathi-Serve and vLLM v0
        allocate) or `full_sequence_must_fit` (vLLM 0.32's `scheduler_reserve_full_isl`: the
        whole prefill must fit in the free blocks, but only the chunk's are reserved). The first
        request that does not fit stops admission (no skipping ahead).
        """
        waiting, kv = self.waiting, self.kv
        budget = NO_BUDGET if token_budget is None else token_budget
        whole = reserve_whole_prefill or full_sequence_must_fit
        admitted = 0
        while waiting and budget > 0 and self.has_seat():
            r = waiting[0]
            prefill_tokens = r.prefill_remaining
            if prefill_tokens <= budget:
                chunk = prefill_tokens
            elif chunked:
                chunk = budget
            else:
                break
            if kv.free_blocks - kv.blocks_needed(r, prefill_tokens if whole else chunk) < watermark_blocks:
                break
            if reserve_whole_prefill:
                kv.grow(r, prefill_tokens)
            self.admit(batch, r, chunk)
            budget -= chunk
            admitted += 1
        return admitted

    def serve_running(
        self,
        batch: Batch,
        token_budget: int | None = None,
        *,
        skip_prefills: bool = False,
        decode_needs_free_block: bool = False,
    ) -> tuple[int | None, list[Request], bool]:
        """Schedule running requests oldest first, preempting the newest (LIFO) when KV runs out.

        Each running request asks for one decode token, or (unless `skip_prefills`) a prefill
        chunk of at most the remaining `token_budget` (None: no budget, whole prefills). A decode
        needs a new block only when it crosses a block boundary (vLLM v1), or, with
        `decode_needs_free_block`, one free block whether or not it takes it (vLLM 0.6's
        `can_append_slots`, Sarathi-Serve's `can_append_slot`). The pass stops when the budget is
        spent; requests not reached keep their cache (paused). Preempted requests go to the
        front of `waiting`, oldest first. Only requests not yet reached are preempted.

        Returns (budget left, the prefills skipped in running order, whether anything was preempted).
        """
        try_reserve, reserve_decodes = self.try_reserve, self.reserve_decodes  # bound once: the hot path
        kv = self.kv
        running = self.running
        order = list(running.values())  # a C-level copy: preemption deletes from `running`
        end = len(order)
        i = 0
        skipped: list[Request] = []
        preempted: list[Request] = []
        budget = NO_BUDGET if token_budget is None else token_budget
        while i < end and budget > 0:
            # a run of decodes in one call, up to the first prefill or missing block
            stop = end if end - i <= budget else i + budget
            reached = reserve_decodes(batch, order, i, stop, decode_needs_free_block)
            budget -= reached - i
            i = reached
            if i == stop:
                continue
            r = order[i]
            i += 1
            remaining = r.prefill_target_tokens - r.cached_tokens  # slots, not properties
            if remaining > 0:
                if skip_prefills:
                    skipped.append(r)
                    continue
                n = remaining if remaining <= budget else budget
            else:
                n = 1
            needs_free = decode_needs_free_block and remaining <= 0
            while True:  # LIFO: evict the newest running request until `r` fits, or `r` is the newest
                if (not needs_free or kv.free_blocks) and try_reserve(batch, r, n):
                    budget -= n
                    break
                end -= 1
                victim = order[end]
                del running[victim.request_id]
                self.preempt(victim, batch)
                preempted.append(victim)
                if victim is r:
                    break
        if preempted:
            self.waiting.extendleft(preempted)  # newest preempted first in the list: oldest ends at the front
        return (None if token_budget is None else budget), skipped, bool(preempted)
