"""Bookkeeping shared by RAD and SLAI (arXiv 2508.01002): output lengths unknown, LIFO preemption.

Both refuse on arrival a request whose prompt and first decode token cannot fit in an empty
cache, count their unfinished requests (so `has_unfinished` is O(1)), and keep the requests that
hold a cache in `resident`, in admission order, whose last entry is the LIFO victim (as vLLM).
"""

from __future__ import annotations

from abc import abstractmethod

from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Scheduler
from runtime.schedulers.fits import check_fits_alone


class ResidentScheduler(Scheduler):
    """A count of unfinished requests and the resident ones in admission order; subclasses queue arrivals."""

    uses_output_lengths = False

    def __init__(self, kv: KVBlockManager):
        super().__init__(kv)
        self.resident: dict[int, Request] = {}  # request id -> request, oldest admission first
        self._unfinished = 0

    def add_request(self, request: Request) -> None:
        check_fits_alone(self.kv, request, request.prompt_tokens + 1)
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
