"""Sarathi-Serve: stall-free batching under a token budget (arXiv 2403.02310; Vidur's `SarathiReplicaScheduler`).

Rules, every iteration (as the Vidur simulator models the policy, arXiv 2405.05187):
1. Decodes first, oldest first, one token each, while the token budget lasts. When a decode's
   block is not free, the newest running request (decoding or partly prefilled) is preempted by
   recompute (LIFO) and put at the front of the queue, until it is.
2. Then the partly prefilled running requests, oldest first, each a chunk of
   min(prefill left, budget left).
3. Then new prompts FCFS (restarts first), each a chunk of min(prefill, budget left), while the
   budget lasts, running requests stay < `max_num_seqs`, and the blocks of its WHOLE prefill fit
   with `watermark` of the blocks still free: as in Vidur (and vLLM v0's chunked prefill) the
   whole prompt's blocks are allocated at admission, so later chunks never wait for memory.
   The first prompt that does not fit stops admission.
The budget bounds every batch, so decodes beyond it (only when `max_num_seqs` > `chunk_size`)
wait a step with their cache kept; with the defaults every decode runs every step.

Knobs and defaults: `chunk_size` = 512 (the token budget, Sarathi-Serve's and the papers' experiments'),
`max_num_seqs` = 128 (Vidur's `batch_size_cap`), `watermark` = 0.01 (Vidur's
`watermark_blocks_fraction`, vLLM's watermark).
"""

from __future__ import annotations

from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.queues import QueueingScheduler, fraction_knob, positive_int_knob, require_fits


class SarathiScheduler(QueueingScheduler):
    name = "sarathi"

    def __init__(self, kv: KVBlockManager, *, chunk_size: int = 512, max_num_seqs: int = 128, watermark: float = 0.01):
        super().__init__(kv, max_num_seqs=positive_int_knob(max_num_seqs, "max_num_seqs"))
        self.chunk_size = positive_int_knob(chunk_size, "chunk_size")
        self.watermark_blocks = int(fraction_knob(watermark, "watermark") * kv.num_blocks)

    def check_request(self, request: Request) -> None:
        require_fits(self.kv, request, policy=self.name, admission_free_blocks=self.watermark_blocks)

    def schedule(self, now_s: float) -> Batch:
        batch = Batch()
        budget, partial_prefills, _ = self.serve_running(batch, self.chunk_size, skip_prefills=True)
        budget = self._continue_prefills(batch, partial_prefills, budget)
        # new prompts: the whole prefill's blocks at admission, a first chunk within the budget
        self.admit_waiting(batch, budget, chunked=True, reserve_whole_prefill=True, watermark_blocks=self.watermark_blocks)
        return batch

    def _continue_prefills(self, batch: Batch, partial_prefills: list[Request], budget: int) -> int:
        """Next chunk of each partly prefilled request (its blocks were reserved at admission)."""
        for r in partial_prefills:
            if budget <= 0:
                break
            left = r.prompt_tokens + r.decode_steps_done - r.cached_tokens
            chunk = left if left <= budget else budget
            self.reserve(batch, r, chunk)
            budget -= chunk
        return budget

