"""vLLM v0: prefill-priority, never mixing prefill and decode (vLLM 0.6.3, `Scheduler._schedule_default`).

Matched version: vLLM 0.6.3 (the last v0 release line with chunked prefill off by default for
short-context models), `vllm/core/scheduler.py` and the default block manager
`vllm/core/block_manager_v2.py` (`use_v2_block_manager = True`, engine/arg_utils.py line 110).

Rules, every iteration:
1. Prefill pass (`_schedule_prefills`, scheduler.py 845-985): waiting prompts in FCFS order
   (preempted ones at the front, `self.waiting.extendleft(preempted)`, line 1041) are admitted
   with their WHOLE prefill (prompt plus the tokens sampled before a preemption) while
   - the batch's prefill tokens stay ≤ `max_num_batched_tokens`,
   - running requests stay ≤ `max_num_seqs`,
   - the free blocks after allocating the whole prefill stay ≥ the watermark,
     `int(watermark × num_blocks)` blocks (`BlockSpaceManagerV2.can_allocate`, block_manager_v2.py
     108-145).
   The first prompt that fails a test stops the pass.
2. Only if nothing was admitted (scheduler.py 1025), decode pass (`_schedule_running`, 493-646):
   every running request decodes one token, oldest first, within the same token budget. Before
   each decode at least one block must be free, whether or not the decode crosses a block
   boundary: `can_append_slots` counts one "touched" block per running sequence
   (block_manager_v2.py 202-229 with block_table.py 336-354 giving 1 for any single token).
   When none is free, the last request of the running queue (the newest admission) is preempted
   by recompute (`running_queue.pop()`, scheduler.py 580) and goes to the front of the waiting
   queue, until a block is free or the request is itself the newest and is preempted.
An iteration is therefore all-prefill or all-decode: this is what makes it lose stability that
mixed batching keeps (arXiv 2504.07347).
Recompute (`Request.evict`): the prefill covers prompt and outputs (`get_num_uncomputed_tokens`
uses `get_len()`, sequence.py 317-322), l + s + 1 tokens, and samples the next token.

Not modelled: swapping (preemption mode SWAP, used only for multi-sequence groups such as beam
search), prefix caching (off by default in 0.6.3), chunked prefill (vLLM enables it by default for
models longer than 32K tokens; see `vllm-v1`, `sarathi`), async output processing, multi-step
scheduling, the priority policy, LoRA limits. A request that can never be allocated is refused on
arrival with an InputError where vLLM marks it FINISHED_IGNORED.

Knobs and defaults (vLLM 0.6.3):
- `max_num_seqs` = 256 (engine/arg_utils.py line 115).
- `max_num_batched_tokens` = None: max(2048, longest l + l' seen so far), vLLM's
  max(max_model_len, 2048) without chunked prefill (config.py 985-987) with the model length taken
  as the longest sequence of the workload. A fixed value refuses (InputError) any request whose
  longest prefill exceeds it.
- `watermark` = 0.01 (fraction of the KV blocks kept free at admission, block_manager_v2.py line 65).
"""

from __future__ import annotations

from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.fits import require_fits
from runtime.schedulers.queues import QueueingScheduler, fraction_knob, positive_int_knob

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
        batch = Batch(count_key_tiles=self.count_key_tiles)
        if not self._schedule_prefills(batch):
            # prefills are whole, so every running request decodes; each needs a free block
            self.serve_running(batch, self.max_num_batched_tokens, decode_needs_free_block=True)
        return batch

    def _schedule_prefills(self, batch: Batch) -> bool:
        """Admit whole prefills FCFS under the token budget, seat cap and watermark; True if any."""
        return self.admit_waiting(batch, self.max_num_batched_tokens, watermark_blocks=self.watermark_blocks) > 0
