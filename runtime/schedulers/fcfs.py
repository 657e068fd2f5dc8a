"""FCFS with continuous batching: the counterexample policy of arXiv 2504.11320 (arXiv 2504.11320, §WAIT).

Rules, every iteration:
1. Decode pass: every running request decodes one token, oldest first. When one cannot grow, the
   newest admitted request is evicted (LIFO, recompute: it loses its cache and goes back to the
   front of the queue) until it fits.
2. Admission: waiting prompts, in arrival order, start their whole prefill in the same iteration
   (prefill and decode mixed) as long as the memory they need NOW fits; no look-ahead at the
   memory they will need as they decode. The first prompt that does not fit stops admission.

Knobs: `max_num_seqs` (default None: no cap on running requests, as in the paper's model);
`recompute` = "engine" (default: an evicted request re-prefills the l + s + 1 tokens it knows and
that prefill samples its next token, as vLLM and Sarathi-Serve do and every other policy here) or
"paper" (it re-prefills l + s and decodes its next token in a step of its own, `Request.evict`).
The paper's counterexample is token-level: build the KVBlockManager with block size 1.
With l = l' = 1, λ = 4 per iteration and C = 12, an imbalanced start makes it evict and restart
forever and complete about 3–3.5 prompts per iteration instead of 4, with `recompute="paper"`.
With the engines' recompute the loss disappears (an eviction after the prefill costs a 2-token
prefill that completes the request at once; docs/baselines.md gives the figures).
"""

from __future__ import annotations

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.schedulers.base import Batch
from runtime.schedulers.queues import QueueingScheduler

RECOMPUTE = ("engine", "paper")


class FcfsScheduler(QueueingScheduler):
    name = "fcfs"

    def __init__(self, kv: KVBlockManager, *, max_num_seqs: int | None = None, recompute: str = "engine"):
        super().__init__(kv, max_num_seqs=max_num_seqs)
        if recompute not in RECOMPUTE:
            raise InputError(f"must be one of {list(RECOMPUTE)}, got {recompute!r}", field="recompute")
        self.paper_recompute = recompute == "paper"

    def schedule(self, now_s: float) -> Batch:
        batch = Batch(count_key_tiles=self.count_key_tiles)
        self.serve_running(batch)  # running requests are all decoding: prefills are whole
        self.admit_waiting(batch)  # whole prefills while they fit
        return batch

