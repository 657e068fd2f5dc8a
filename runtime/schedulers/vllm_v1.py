"""vLLM v1: one token budget, running requests first, chunked prefill (vLLM 0.32, `Scheduler.schedule`).

Matched version: vLLM 0.32.0, `vllm/v1/core/sched/scheduler.py` (`Scheduler.schedule`, lines
591-1330 of the released wheel) and `vllm/v1/core/kv_cache_manager.py` (`allocate_slots`, lines
371-600), with the default FCFS policy, chunked prefill on, no prefix caching. The oracle test
(`tests/test_vllm_oracle.py`) drives that scheduler without a model and requires the same batches
and preemptions step for step; docs/baselines.md lists the scenarios and the steps matched.

Rules, every iteration:
1. Running pass, oldest admission first, while the token budget lasts: a decoding request takes
   1 token, a request still prefilling takes a chunk of min(prefill left, budget left). A decode
   needs a new block only when it crosses a block boundary. When the blocks are not free, the
   last request of the running list (the newest admission) is preempted by recompute and put at
   the front of the waiting queue, until they are, or until the request itself is the newest and
   is preempted, which ends the pass (scheduler.py 775-848).
2. Admission, only if nothing was preempted this step (scheduler.py 900): waiting requests FCFS
   (preempted ones first, the last one preempted at the very front), each with a chunk of
   min(prefill, budget left), while the budget lasts and running requests stay < `max_num_seqs`.
   With `reserve_full_isl` (vLLM's `scheduler_reserve_full_isl`, default True since 0.32:
   `config/scheduler.py` line 190; checked in `allocate_slots`, kv_cache_manager.py 522-539) the
   request is admitted only if the free blocks hold its WHOLE current sequence (prompt plus the
   tokens it has sampled), though only the chunk's blocks are allocated; without it only the
   chunk's blocks must be free. vLLM's watermark defaults to 0 and is not modelled. The first
   request that does not fit stops admission.
Recompute (`Request.evict`): a preempted request prefills all l + s + 1 tokens it knows and that
prefill samples its next token (vLLM's `num_tokens`, `_preempt_request` sets
`num_computed_tokens = 0`, scheduler.py 1571-1615).

Not modelled: prefix caching (off here; vLLM enables it by default, and with distinct prompts it
changes nothing but with shared prefixes it skips their prefill), async scheduling (vLLM's
`AsyncScheduler` overlaps a step's scheduling with the previous forward), speculative decoding,
`long_prefill_token_threshold` (0 by default), the priority policy, KV connectors, encoder
inputs, LoRA limits, and `max_model_len` caps (requests are assumed to fit the model's length).

Knobs and defaults (vLLM's offline `LLM` defaults on A100-class GPUs, `EngineArgs.get_batch_defaults`,
arg_utils.py 2946-2951):
- `max_num_batched_tokens` = 8192 (the per-step token budget; 16384 on H100/H200-class GPUs).
- `max_num_seqs` = 256 (1024 on H100/H200-class GPUs).
- `reserve_full_isl` = True.
"""

from __future__ import annotations

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.schedulers.base import Batch
from runtime.schedulers.queues import QueueingScheduler, positive_int_knob


class VllmV1Scheduler(QueueingScheduler):
    name = "vllm-v1"

    def __init__(
        self,
        kv: KVBlockManager,
        *,
        max_num_batched_tokens: int = 8192,
        max_num_seqs: int = 256,
        reserve_full_isl: bool = True,
    ):
        super().__init__(kv, max_num_seqs=positive_int_knob(max_num_seqs, "max_num_seqs"))
        self.max_num_batched_tokens = positive_int_knob(max_num_batched_tokens, "max_num_batched_tokens")
        if not isinstance(reserve_full_isl, bool):
            raise InputError(f"must be true or false, got {reserve_full_isl!r}", field="reserve_full_isl")
        self.reserve_full_isl = reserve_full_isl

    def schedule(self, now_s: float) -> Batch:
        batch = Batch(count_key_tiles=self.count_key_tiles)
        budget, _, preempted = self.serve_running(batch, self.max_num_batched_tokens)
        if not preempted:  # waiting requests, each with a prefill chunk cut to the budget left
            self.admit_waiting(batch, budget, chunked=True, full_sequence_must_fit=self.reserve_full_isl)
        return batch
