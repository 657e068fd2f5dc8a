"""MC-SF, memory-constrained shortest-first (Jaillet et al., arXiv 2502.07115).

Rules, every iteration:
1. Every running request decodes one token (they are all kept: none is ever preempted).
2. Waiting requests are considered shortest predicted output first (the prediction is the true
   output length: `uses_output_lengths`; ties in arrival order). Each is admitted, with its whole
   prefill in the same iteration (mixed batch), if the projected KV memory of the running set plus
   the admitted ones stays ≤ C at every future completion instant; the first that fails stops
   admission. Memory only grows between completions, so these instants are where it peaks, and
   since every running request advances one stage per iteration the projection is exact (block
   size 1) and overflow is impossible.

The check is incremental. In a frame of absolute iteration numbers t, a request admitted at step
T_a with prefill p holds p + (t − T_a) tokens until its last step E = T_a + (decode stages left),
i.e. an offset c = p − T_a plus t. The admitted set is a list sorted by E with the running totals
Σc and N, so the memory at instant e is Σ_{E_i ≥ e} c_i + e·#{E_i ≥ e}. A candidate ending at E_x
raises the memory only at instants ≤ E_x, so only those entries are walked: shortest-first makes
that walk short. With blocks of B > 1 tokens each request is counted with B − 1 tokens of
rounding slack (a safe bound; exact for B = 1); when nothing runs, the shortest request is
admitted whenever its blocks fit, so no request waits forever.

Knobs: `max_num_seqs` (default None: no cap on running requests, as in the paper).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort

from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.queues import QueueingScheduler


class McSfScheduler(QueueingScheduler):
    """`waiting` (the FCFS deque of the base class) stays empty: the queue is a heap by output length."""

    name = "mc-sf"
    uses_output_lengths = True

    def __init__(self, kv: KVBlockManager, *, max_num_seqs: int | None = None):
        super().__init__(kv, max_num_seqs=max_num_seqs)
        self.shortest_first: list[tuple[int, int, Request]] = []  # (decode stages left, arrival seq, request)
        self._arrival_seq = 0
        self._step = 0  # number of the next iteration: the projection's time axis
        self._ends: list[tuple[int, int, int]] = []  # (last step E, offset c, request id), sorted
        self._offset_sum = 0  # Σ c over `_ends`
        self._slack_tokens = kv.block_size - 1  # rounding to whole blocks, per request

    def add_request(self, request: Request) -> None:
        self.check_request(request)
        heapq.heappush(self.shortest_first, (request.output_tokens - request.decode_steps_done, self._arrival_seq, request))
        self._arrival_seq += 1

    def has_unfinished(self) -> bool:
        return bool(self.shortest_first) or bool(self.running)

    def schedule(self, now_s: float) -> Batch:
        step = self._step
        self._forget_finished(step)
        batch = Batch(count_key_tiles=self.count_key_tiles)
        self.reserve_all_decodes(batch, self.running.values())  # the projection keeps their blocks free
        self._admit_shortest_first(batch, step)
        if batch.items:
            self._step = step + 1
        return batch

    # --- admission -----------------------------------------------------------------------------
    def _admit_shortest_first(self, batch: Batch, step: int) -> None:
        heap, kv = self.shortest_first, self.kv
        while heap and self.has_seat():
            r = heap[0][2]
            prefill_tokens = r.prefill_remaining
            last_step = step + r.output_tokens - r.decode_steps_done
            offset = prefill_tokens - step + self._slack_tokens
            if not self._fits(last_step, offset):
                lone = not self.running and kv.can_grow(r, prefill_tokens)
                if not lone:
                    return
            heapq.heappop(heap)
            self.running[r.request_id] = r
            insort(self._ends, (last_step, offset, r.request_id))
            self._offset_sum += offset
            self.reserve(batch, r, prefill_tokens)

    def _fits(self, last_step: int, offset: int) -> bool:
        """Whether adding a request (last step, offset) keeps memory ≤ C at every completion instant."""
        ends = self._ends
        remaining_sum, remaining_count = self._offset_sum, len(ends)
        worst = -1 << 62
        for e, c, _ in ends:  # ascending; stops at the candidate's own last step
            if e >= last_step:
                break
            # memory at instant e (exact at the first entry of a tie group), plus the candidate's e
            peak = remaining_sum + e * remaining_count + e
            if peak > worst:
                worst = peak
            remaining_sum -= c
            remaining_count -= 1
        own = remaining_sum + last_step * remaining_count + last_step
        if own > worst:
            worst = own
        return worst + offset <= self.kv.capacity_tokens

    def _forget_finished(self, step: int) -> None:
        """Drop projection entries whose last step is before `step` (they completed)."""
        ends = self._ends
        k = bisect_left(ends, (step,))
        if k:
            for _, c, _ in ends[:k]:
                self._offset_sum -= c
            del ends[:k]
