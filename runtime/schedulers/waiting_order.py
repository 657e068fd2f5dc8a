"""A waiting queue that is FCFS or shortest-prompt-first, as Sarathi-Serve's fork for SLAI orders it.

The SLAI code (arXiv 2508.01002; github agrimUT/SLAI, `sarathi/core/scheduler/slai_scheduler.py`
lines 205-223 and `sarathi_scheduler.py` lines 193-199) re-sorts its waiting list by prompt
length every step with Python's stable sort, while new arrivals are appended at the back and
preempted requests inserted at the front (`base_scheduler.py`, `_preempt`). A heap keyed by
(length, position) gives the same order without sorting: a request put at the back takes a
position after every one queued so far, a request put at the front one before every one queued,
so among equal lengths the order is exactly the list's. The length of a queued request does not
change while it waits (`Request.prefill_target_tokens`: its prompt, or what its recompute must
prefill). With `by_length` off it is plain FCFS with restarts in front.

`tiered` puts tier 0 first (SLAI's `user_priority` switch: strict-TBT users before the others).
push and pop are O(log n).
"""

from __future__ import annotations

import heapq

from runtime.request import Request


class WaitingOrder:
    """`append` (back), `appendleft` (front), `peek`, `popleft`: a deque's interface, in sorted order."""

    def __init__(self, *, by_length: bool, tiered: bool = False):
        self.by_length = by_length
        self.tiered = tiered
        self._heap: list[tuple[int, int, int, Request]] = []
        self._back = 0  # next position at the back (counts up)
        self._front = 0  # next position at the front (counts down)

    def _key(self, request: Request, position: int) -> tuple[int, int, int, Request]:
        tier = request.tier if self.tiered else 0
        length = request.prefill_target_tokens if self.by_length else 0
        return (tier, length, position, request)

    def append(self, request: Request) -> None:
        self._back += 1
        heapq.heappush(self._heap, self._key(request, self._back))

    def appendleft(self, request: Request) -> None:
        self._front -= 1
        heapq.heappush(self._heap, self._key(request, self._front))

    def extendleft(self, requests) -> None:
        """As `deque.extendleft`: each goes to the front in turn, so the last ends first."""
        for r in requests:
            self.appendleft(r)

    def peek(self) -> Request:
        return self._heap[0][3]

    def __getitem__(self, index: int) -> Request:
        if index != 0:
            raise IndexError("only the head of a WaitingOrder can be read")
        return self._heap[0][3]

    def popleft(self) -> Request:
        return heapq.heappop(self._heap)[3]

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)
