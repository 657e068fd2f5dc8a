"""RAD: throughput-optimal switching between decode and prefill batches (arXiv 2508.01002).

Batch time follows GEMM tiles: about constant up to one tile of tokens, then stepwise. RAD runs
either mode, never mixed:
- decode mode, one token for every decoding request, when at least `b_col` requests decode or
  no prompt waits for prefill (or the prefill cannot be started for want of memory or seats);
- otherwise prefill mode: one tile-sized chunk (`tile_tokens`, 128 by default) of the oldest
  prompt, which keeps its place until its prefill is done.

Knobs: `b_col` (decode batch that makes a decode step worth a tile; default = `tile_tokens`,
our choice: a decode batch of one tile fills the GEMM tile that a prefill chunk would),
`tile_tokens` (128), `max_num_seqs` (cap on admitted requests, 256 like vLLM's default).
Memory: a prompt starts prefilling only if its chunk fits; when a decode step cannot grow, the
newest admitted request is preempted by recompute (LIFO, as vLLM) and returns to the front of the
queue. Output lengths are not read.
"""

from __future__ import annotations

from collections import deque

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.resident import ResidentScheduler


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"must be a positive integer, got {value!r}", field=name)
    return value


class RadScheduler(ResidentScheduler):
    """`resident` holds the decoding requests; the prompt being prefilled is `prefilling`."""

    name = "rad"

    def __init__(self, kv: KVBlockManager, *, b_col: int | None = None, tile_tokens: int = 128, max_num_seqs: int = 256):
        super().__init__(kv)
        self.tile_tokens = _positive_int(tile_tokens, "tile_tokens")
        self.b_col = _positive_int(self.tile_tokens if b_col is None else b_col, "b_col")
        self.max_num_seqs = _positive_int(max_num_seqs, "max_num_seqs")
        self.waiting: deque[Request] = deque()  # not started (or preempted), FCFS
        self.prefilling: Request | None = None  # the oldest prompt, prefill in progress
        self.stats = {"decode_steps": 0, "prefill_steps": 0, "preemptions": 0}

    def _enqueue(self, request: Request) -> None:
        self.waiting.append(request)

    def complete_step(self, batch: Batch, start_s: float, end_s: float) -> list[Request]:
        done = super().complete_step(batch, start_s, end_s)
        p = self.prefilling
        if p is not None and p.cached_tokens >= p.prompt_tokens + p.decode_steps_done:
            self.prefilling = None
            if p.completion_s is None:
                self.resident[p.request_id] = p
        return done

    # --- one step ------------------------------------------------------------------------------
    def schedule(self, now_s: float) -> Batch:
        batch = Batch()
        has_prefill = self.prefilling is not None or bool(self.waiting)
        if len(self.resident) < self.b_col and has_prefill and self._prefill_step(batch):
            self.stats["prefill_steps"] += 1
            return batch
        if self.resident:
            self._decode_step(batch)
            self.stats["decode_steps"] += 1
        elif has_prefill:
            # nothing decodes, so only the prompt itself holds memory: it can never fit
            r = self.prefilling if self.prefilling is not None else self.waiting[0]
            raise InputError(
                f"request {r.request_id}: its {r.prompt_tokens + r.decode_steps_done}-token prefill does not fit in the "
                f"KV capacity of {self.kv.capacity_tokens} tokens: raise kv_capacity_tokens or drop the request",
                field="kv_capacity_tokens",
            )
        return batch

    def _prefill_step(self, batch: Batch) -> bool:
        """One tile of the oldest prompt; False when it cannot start (seats or memory)."""
        r = self.prefilling
        if r is None:
            if len(self.resident) + 1 > self.max_num_seqs:
                return False
            r = self.waiting[0]
        chunk = min(self.tile_tokens, r.prompt_tokens + r.decode_steps_done - r.cached_tokens)
        if not self.kv.can_grow(r, chunk):
            return False
        if self.prefilling is None:
            self.waiting.popleft()
            self.prefilling = r
        self.reserve(batch, r, chunk)
        return True

    def _decode_step(self, batch: Batch) -> None:
        """One token for every decoding request; preempt the newest when a block is missing."""
        order = list(self.resident.values())
        i = self.reserve_decodes(batch, order)
        while i < len(order):  # order[i] is short of a block (every resident request decodes)
            victim = self._newest()
            self._preempt(victim, batch)
            if victim is order[i]:
                order.pop(i)
            elif victim in order:
                order.remove(victim)
            i = self.reserve_decodes(batch, order, i)
        # a preempted victim might have been reserved already: drop its work from the batch
        if batch.evicted:
            gone = {id(v) for v in batch.evicted}
            kept = [w for w in batch.items if id(w.request) not in gone]
            if len(kept) != len(batch.items):
                batch.items[:] = kept  # shape() recounts when items were changed directly

    def _newest(self) -> Request:
        if self.prefilling is not None:
            return self.prefilling  # admitted after every decoding request
        return next(reversed(self.resident.values()))

    def _preempt(self, victim: Request, batch: Batch) -> None:
        if victim is self.prefilling:
            self.prefilling = None
        else:
            del self.resident[victim.request_id]
        self.preempt(victim, batch)
        self.waiting.appendleft(victim)
        self.stats["preemptions"] += 1
