"""FCFS with continuous batching: the counterexample policy of arXiv 2504.11320 (arXiv 2504.11320, §WAIT).

Rules, every iteration:
1. Decode pass: every running request decodes one token, oldest first. When one cannot grow, the
   newest admitted request is evicted (LIFO, recompute: it loses its cache and goes back to the
   front of the queue) until it fits.
2. Admission: waiting prompts, in arrival order, start their whole prefill in the same iteration
   (prefill and decode mixed) as long as the memory they need NOW fits; no look-ahead at the
   memory they will need as they decode. The first prompt that does not fit stops admission.

Knobs: `max_num_seqs` (default None: no cap on running requests, as in the paper's model).
The paper's counterexample is token-level: build the KVBlockManager with block size 1.
With l = l' = 1, λ = 4 per iteration and C = 12, an imbalanced start makes it evict and restart
forever and complete about 3–3.5 prompts per iteration instead of 4.
"""

from __future__ import annotations

from runtime.kv_blocks import KVBlockManager
from runtime.schedulers.base import Batch
from runtime.schedulers.queues import QueueingScheduler


class FcfsScheduler(QueueingScheduler):
    name = "fcfs"

    def __init__(self, kv: KVBlockManager, *, max_num_seqs: int | None = None):
        super().__init__(kv, max_num_seqs=max_num_seqs)

    def schedule(self, now_s: float) -> Batch:
        batch = Batch()
        self.serve_running(batch)  # running requests are all decoding: prefills are whole
        self.admit_waiting(batch)  # whole prefills while they fit
        return batch

