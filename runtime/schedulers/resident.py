"""Bookkeeping shared by RAD and SLAI (arXiv 2508.01002): output lengths unknown, LIFO preemption.

Both refuse on arrival a request that could not finish even with the cache to itself (its
l + l' tokens, or, under SLAI's watermark, its longest recompute with the watermark kept free):
without output lengths they would otherwise admit it, decode it until memory runs out, preempt it
and start again forever. They count their unfinished requests (so `has_unfinished` is O(1)), and keep the requests that
hold a cache in `resident`, in admission order, whose last entry is the LIFO victim (as vLLM).
"""

from __future__ import annotations

from abc import abstractmethod

from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Scheduler
from runtime.schedulers.fits import require_fits


class ResidentScheduler(Scheduler):
    """A count of unfinished requests and the resident ones in admission order; subclasses queue arrivals."""

    uses_output_lengths = False

    #: blocks that admission keeps free (SLAI's watermark); the arrival guard accounts for them
    admission_free_blocks: int = 0

    def __init__(self, kv: KVBlockManager):
        super().__init__(kv)
        self.resident: dict[int, Request] = {}  # request id -> request, oldest admission first
        self._unfinished = 0

    def add_request(self, request: Request) -> None:
        require_fits(self.kv, request, policy=self.name, admission_free_blocks=self.admission_free_blocks)
        self._enqueue(request)
        self._unfinished += 1

    @abstractmethod
    def _enqueue(self, request: Request) -> None:
        """Queue a new arrival for its first prefill."""

    def has_unfinished(self) -> bool:
        return self._unfinished > 0

    def on_finished(self, requests: list[Request]) -> None:
        self._unfinished -= len(requests)
        resident = self.resident
        for r in requests:
            resident.pop(r.request_id, None)
