"""vLLM v1 style: one token budget, running requests first, chunked prefill (vLLM v1 `Scheduler.schedule`).

Rules, every iteration (as the Vidur simulator models the policy, arXiv 2405.05187):
1. Running pass, oldest first, while the token budget lasts: a decoding request takes 1 token, a
   request still prefilling takes a chunk of min(prefill left, budget left). When its KV blocks
   are not free, the newest running request is preempted by recompute (LIFO) and put at the front
   of the queue, until they are (or the request is itself the newest and is preempted).
   Requests the budget does not reach keep their cache and wait for the next step.
2. Admission, only if nothing was preempted this step: waiting requests FCFS (restarts first),
   each with a chunk of min(prefill, budget left), while the budget lasts, running requests stay
   < `max_num_seqs` and the chunk's blocks are free. No watermark. The first that does not fit
   stops admission.
Prefill and decode share every batch (mixed batching, arXiv 2504.07347).

Knobs and defaults (vLLM v1 on A100-class GPUs, offline `LLM` usage, chunked prefill on:
`EngineArgs.get_batch_defaults`):
- `max_num_batched_tokens` = 8192 (the per-step token budget; 16384 on H100-class GPUs).
- `max_num_seqs` = 256.
"""

from __future__ import annotations

from runtime.kv_blocks import KVBlockManager
from runtime.schedulers.base import Batch
from runtime.schedulers.queues import QueueingScheduler, positive_int_knob


class VllmV1Scheduler(QueueingScheduler):
    name = "vllm-v1"

    def __init__(self, kv: KVBlockManager, *, max_num_batched_tokens: int = 8192, max_num_seqs: int = 256):
        super().__init__(kv, max_num_seqs=positive_int_knob(max_num_seqs, "max_num_seqs"))
        self.max_num_batched_tokens = positive_int_knob(max_num_batched_tokens, "max_num_batched_tokens")

    def schedule(self, now_s: float) -> Batch:
        batch = Batch()
        budget, _, preempted = self.serve_running(batch, self.max_num_batched_tokens)
        if not preempted:  # waiting requests, each with a prefill chunk cut to the budget left
            self.admit_waiting(batch, budget, chunked=True)
        return batch

