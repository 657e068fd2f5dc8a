"""RAD: throughput-optimal switching between decode and prefill batches (arXiv 2508.01002).

Batch time follows GEMM tiles: about constant up to one tile of tokens, then stepwise. RAD runs
either mode, never mixed:
- decode mode, one token for every decoding request, when at least `b_col` requests decode or
  no prompt waits for prefill (or the prefill cannot be started for want of memory or seats);
- otherwise prefill mode: one chunk of `prefill_chunk_tokens` (one tile, 128, by default) of the
  oldest prompt, which keeps its place until its prefill is done.

What its throughput-optimality needs: every batch RAD runs must reach the highest token rate of
the batch-time function, b / t(b) = max over b' of b' / t(b'). Under a pure staircase
t(b) = a·⌈b / b_0⌉ a one-tile chunk and a decode batch of b_col = b_0 do. With a per-batch
constant, t(b) = c + a·⌈b / b_0⌉ and c > 0, the rate k·b_0 / (c + k·a) grows with the number of
tiles k, so a one-tile chunk runs below the throughput boundary (with the fitted c = 11.28 ms,
a = 35.47 ms, b_0 = 128 of arXiv 2504.07347: 2,738 tokens/s at one tile against 3,342 at four) and
RAD's queue grows at loads the boundary allows. Raise `prefill_chunk_tokens` (and `b_col`) to
the largest batch the server runs in that case; docs/baselines.md gives the measured figures.

Knobs: `tile_tokens` (128: the GEMM tile), `prefill_chunk_tokens` (default `tile_tokens`),
`b_col` (decode batch that makes a decode step worth a tile; default `tile_tokens`, our choice:
a decode batch of one tile fills the GEMM tile that a prefill chunk would), `max_num_seqs` (cap
on admitted requests, 256 like vLLM's default).
Memory: a prompt starts prefilling only if its chunk fits; when a decode step cannot grow, the
newest admitted request is preempted by recompute (LIFO, as vLLM; it re-prefills the l + s + 1
tokens it knows, `Request.evict`) and returns to the front of the queue. Output lengths are not
read; a request that could not finish even alone (l + l' > C) is refused on arrival.
"""

from __future__ import annotations

from collections import deque

from fluid.numbers import check_number
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.resident import ResidentScheduler


def _positive_int(value, name: str) -> int:
    return check_number(value, name, integer=True, minimum=1)


class RadScheduler(ResidentScheduler):
    """`resident` holds the decoding requests; the prompt being prefilled is `prefilling`."""

    name = "rad"

    def __init__(
        self,
        kv: KVBlockManager,
        *,
        b_col: int | None = None,
        tile_tokens: int = 128,
        prefill_chunk_tokens: int | None = None,
        max_num_seqs: int = 256,
    ):
        super().__init__(kv)
        self.tile_tokens = _positive_int(tile_tokens, "tile_tokens")
        chunk = self.tile_tokens if prefill_chunk_tokens is None else prefill_chunk_tokens
        self.prefill_chunk_tokens = _positive_int(chunk, "prefill_chunk_tokens")
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
        if p is not None and not p.in_prefill:
            self.prefilling = None
            if p.completion_s is None:
                self.resident[p.request_id] = p
        return done

    # --- one step ------------------------------------------------------------------------------
    def schedule(self, now_s: float) -> Batch:
        batch = Batch(count_key_tiles=self.count_key_tiles)
        has_prefill = self.prefilling is not None or bool(self.waiting)
        if len(self.resident) < self.b_col and has_prefill and self._prefill_step(batch):
            self.stats["prefill_steps"] += 1
            return batch
        if self.resident:
            self._decode_step(batch)
            self.stats["decode_steps"] += 1
        # else: nothing decodes and the prefill cannot start. The arrival guard (l + l' fits in
        # the empty cache) makes that impossible; the executor would report a deadlock.
        return batch

    def _prefill_step(self, batch: Batch) -> bool:
        """One tile of the oldest prompt; False when it cannot start (seats or memory)."""
        r = self.prefilling
        if r is None:
            if len(self.resident) + 1 > self.max_num_seqs:
                return False
            r = self.waiting[0]
        chunk = min(self.prefill_chunk_tokens, r.prefill_remaining)
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
