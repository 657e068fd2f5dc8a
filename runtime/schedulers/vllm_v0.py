"""vLLM v0 style: prefill-priority, never mixing prefill and decode (vLLM v0 `Scheduler._schedule_default`).

Rules, every iteration (vLLM v0 without chunked prefill, as the Vidur simulator models it, arXiv 2405.05187):
1. Prefill pass: waiting prompts in FCFS order (restarts first, at the front) are admitted with
   their WHOLE prefill (prompt plus the tokens decoded before an eviction) while
   - the batch's prefill tokens stay ≤ `max_num_batched_tokens`,
   - running requests stay ≤ `max_num_seqs`,
   - free KV blocks after the admission stay ≥ the watermark, `int(watermark × num_blocks)`
     blocks (vLLM's `BlockSpaceManager.can_allocate`).
   The first prompt that fails a test stops the pass.
2. If nothing was admitted, decode pass: every running request grows by one token, oldest first;
   when no block is free, the newest running request is preempted by recompute (LIFO) and put
   back at the front of the queue, until the block is there (or the request is itself the newest).
An iteration is therefore all-prefill or all-decode: this is what makes it lose stability that
mixed batching keeps (arXiv 2504.07347).

Knobs and defaults (vLLM v0):
- `max_num_seqs` = 256.
- `max_num_batched_tokens` = None: max(2048, longest l + l' seen so far), vLLM's
  max(max_model_len, 2048) with the model length taken as the longest sequence of the workload.
  A fixed value refuses (InputError) any request whose longest prefill exceeds it.
- `watermark` = 0.01 (fraction of the KV blocks kept free at admission).
"""

from __future__ import annotations

from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.queues import QueueingScheduler, fraction_knob, positive_int_knob, require_fits

VLLM_MIN_BATCHED_TOKENS = 2048  # vLLM v0: max_num_batched_tokens defaults to max(max_model_len, 2048)


class VllmV0Scheduler(QueueingScheduler):
    name = "vllm-v0"

    def __init__(
        self,
        kv: KVBlockManager,
        *,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int | None = None,
        watermark: float = 0.01,
    ):
        super().__init__(kv, max_num_seqs=positive_int_knob(max_num_seqs, "max_num_seqs"))
        self.fixed_batched_tokens = positive_int_knob(max_num_batched_tokens, "max_num_batched_tokens", allow_none=True)
        self.max_num_batched_tokens = self.fixed_batched_tokens or VLLM_MIN_BATCHED_TOKENS
        self.watermark_blocks = int(fraction_knob(watermark, "watermark") * kv.num_blocks)

    def check_request(self, request: Request) -> None:
        if self.fixed_batched_tokens is None:  # the default budget grows with the longest sequence
            longest = request.prompt_tokens + request.output_tokens
            self.max_num_batched_tokens = max(self.max_num_batched_tokens, longest)
        require_fits(
            self.kv,
            request,
            policy=self.name,
            admission_free_blocks=self.watermark_blocks,
            whole_prefill_budget_tokens=self.max_num_batched_tokens,
        )

    def schedule(self, now_s: float) -> Batch:
        batch = Batch()
        if not self._schedule_prefills(batch):
            self.serve_running(batch)  # prefills are whole, so every running request decodes
        return batch

    def _schedule_prefills(self, batch: Batch) -> bool:
        """Admit whole prefills FCFS under the token budget, seat cap and watermark; True if any."""
        return self.admit_waiting(batch, self.max_num_batched_tokens, watermark_blocks=self.watermark_blocks) > 0
