"""Stage queues of one WAIT class or one Nested WAIT instance (arXiv 2504.11320, §WAIT and §Nested WAIT).

A group holds its requests by the stage they run next: `waiting` is stage 0 (prompts waiting for
prefill, no cache), `stages[s]` the resident prompts whose next step is decode stage s (cache
kept). Only non-empty stages are keys, so a pass costs O(occupied stages), not O(l').

Segments (Nested WAIT) split the stages; WAIT is the one-segment case (stages 0..l'_j, threshold
n_j). Segment k's entry is the stage queue at its first stage (segment 1's entry: `waiting`).
Stages past the last segment belong to the last one.

Drain rule (docs/policy-format.md, `drain.max_wait_s`): a request is overdue once it has waited
`max_wait_s` at the front of its stage queue, measured from its arrival (stage 0) or from its last
token (later stages). The segments up to the one holding an overdue request are then served even
below their thresholds; once arrivals have ended, every segment is served. The earliest due time
of each segment is cached and recomputed only after the group's queues change, so a group that
sits stalled costs O(1) per step.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.request import Request

#: last stage of the last segment: every stage beyond the policy's breakpoints belongs to it
BEYOND_LAST_STAGE = sys.maxsize


@dataclass(slots=True)
class ServedStages:
    """What one group served in one step (cohort rule): per served stage, in the group's stage
    order, the requests that ran there, FIFO. `complete_step` moves each list one stage on.

    `moves` is a stage -> requests dict like `CohortGroup.stages`, so that a step that served the
    whole group hands over the group's own dict (no copy: that step is the common one)."""

    group: CohortGroup
    moves: dict[int, list[Request]]


class CohortGroup:
    """One WAIT class or Nested WAIT instance: its thresholds and its per-stage queues."""

    __slots__ = ("name", "first_stages", "last_stages", "thresholds", "num_segments", "waiting", "stages", "_due_s")

    def __init__(self, name: str, segments: Sequence[tuple[int, int, int]]):
        """`segments`: (first_stage, last_stage, threshold) per segment, contiguous from stage 0."""
        if not segments or segments[0][0] != 0:
            raise ValueError(f"group {name!r}: segments must start at stage 0, got {list(segments)!r}")
        self.name = name
        self.first_stages = [first for first, _, _ in segments]
        self.last_stages = [last for _, last, _ in segments]
        self.last_stages[-1] = BEYOND_LAST_STAGE
        self.thresholds = [n for _, _, n in segments]
        self.num_segments = len(segments)
        self.waiting: deque[Request] = deque()
        self.stages: dict[int, list[Request]] = {}  # FIFO lists: whole lists move stage to stage
        self._due_s: list[float] | None = None

    # --- queries -------------------------------------------------------------------------
    def segment_of(self, stage: int) -> int:
        """0-based index of the segment holding `stage`."""
        return bisect_right(self.first_stages, stage) - 1

    def is_empty(self) -> bool:
        return not self.waiting and not self.stages

    def ready_segments(self, now_s: float, max_wait_s: float, draining: bool) -> int:
        """k such that this step serves segments 1..k (0: the group waits).

        Threshold rule: the largest k with at least n_r waiting at the entry of every segment
        r ≤ k. Drain rule: at least up to the segment of any overdue request; all when draining.
        """
        num = self.num_segments
        if draining:
            return 0 if self.is_empty() else num
        thresholds = self.thresholds
        k = 0
        if len(self.waiting) >= thresholds[0]:
            k = 1
            stages = self.stages
            first = self.first_stages
            while k < num:
                q = stages.get(first[k])
                if q is None or len(q) < thresholds[k]:
                    break
                k += 1
        if k < num and max_wait_s != math.inf:
            due = self.due_times_s(max_wait_s)
            for idx in range(num - 1, k - 1, -1):
                if due[idx] <= now_s:
                    return idx + 1
        return k

    def due_times_s(self, max_wait_s: float) -> list[float]:
        """Per segment, when its oldest front-of-queue request becomes overdue (inf if none)."""
        due = self._due_s
        if due is None:
            due = [math.inf] * self.num_segments
            if self.waiting:
                due[0] = self.waiting[0].arrival_s + max_wait_s
            single = self.num_segments == 1
            for stage, q in self.stages.items():
                t = q[0].token_times_s[-1] + max_wait_s
                idx = 0 if single else self.segment_of(stage)
                if t < due[idx]:
                    due[idx] = t
            self._due_s = due
        return due

    # --- changes -------------------------------------------------------------------------
    def changed(self) -> None:
        """Forget the cached due times (the queues' fronts changed)."""
        self._due_s = None

    def enqueue_waiting(self, request: Request, *, front: bool = False) -> None:
        if front:
            self.waiting.appendleft(request)
            self._due_s = None
            return
        if not self.waiting:
            self._due_s = None
        self.waiting.append(request)

    def push_stage(self, stage: int, requests: list[Request]) -> None:
        """Append `requests` at `stage` (the list itself becomes the queue when the stage is empty)."""
        q = self.stages.get(stage)
        if q is None:
            self.stages[stage] = requests
        else:
            q.extend(requests)

    def remove_resident(self, request: Request, stage: int) -> None:
        q = self.stages[stage]
        q.remove(request)
        if not q:
            del self.stages[stage]
        self._due_s = None
