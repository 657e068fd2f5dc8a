"""Orca: iteration-level batching with worst-case KV reservation (Yu et al., OSDI'22).

Rules, every iteration:
1. Every running request decodes one token. Its blocks were reserved at admission, so no decode
   ever waits for memory and nothing is ever preempted.
2. Waiting prompts, FCFS, are admitted with their whole prefill in the same iteration (mixed
   batch, no token budget) while running requests stay < `max_num_seqs` and the blocks for the
   request's worst case, prompt + maximum output, are free. The first that does not fit stops
   admission. The reservation is held until completion.

The worst case is the true output length l' (`uses_output_lengths`: an oracle maximum), or the
`max_tokens` knob when given: Orca reserves the generation limit a client asks for. A request
whose output exceeds `max_tokens` is refused with an InputError (the simulator cannot truncate).

Knobs and defaults: `max_num_seqs` = 128 (Vidur's `batch_size_cap`, the batch size Orca's
scheduler caps), `max_tokens` = None (reserve the true output length).
"""

from __future__ import annotations

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.fits import check_fits_alone, require_fits
from runtime.schedulers.queues import QueueingScheduler, positive_int_knob


class OrcaScheduler(QueueingScheduler):
    name = "orca"
    uses_output_lengths = True

    def __init__(self, kv: KVBlockManager, *, max_num_seqs: int = 128, max_tokens: int | None = None):
        super().__init__(kv, max_num_seqs=positive_int_knob(max_num_seqs, "max_num_seqs"))
        self.max_tokens = positive_int_knob(max_tokens, "max_tokens", allow_none=True)

    def reserved_tokens(self, request: Request) -> int:
        """KV tokens reserved for `request` at admission: prompt + its maximum output."""
        max_output = request.output_tokens if self.max_tokens is None else self.max_tokens
        return request.prompt_tokens + max_output

    def check_request(self, request: Request) -> None:
        if self.max_tokens is not None and request.output_tokens > self.max_tokens:
            raise InputError(
                f"request {request.request_id} generates {request.output_tokens} tokens, more than "
                f"max_tokens = {self.max_tokens} that orca reserves; raise max_tokens",
                field="max_tokens",
            )
        require_fits(self.kv, request, policy=self.name)
        check_fits_alone(
            self.kv, request, self.reserved_tokens(request),
            why="its worst-case reservation, prompt + max_tokens", field="max_tokens", fix="lower max_tokens",
        )

    def schedule(self, now_s: float) -> Batch:
        batch = Batch(count_key_tiles=self.count_key_tiles)
        self._decode_all(batch)
        self._admit_reserving(batch)
        return batch

    def _decode_all(self, batch: Batch) -> None:
        """One token for every running request; the reservation covers it (never preempts)."""
        self.reserve_all_decodes(batch, self.running.values())

    def _admit_reserving(self, batch: Batch) -> None:
        """Admit FCFS while the worst-case KV of the next prompt fits; reserve it whole."""
        waiting, kv = self.waiting, self.kv
        while waiting and self.has_seat():
            r = waiting[0]
            if kv.blocks_needed(r, self.reserved_tokens(r)) > kv.free_blocks:
                return
            kv.grow(r, self.reserved_tokens(r))
            self.admit(batch, r, r.prompt_tokens)
