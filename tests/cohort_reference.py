"""A short, plain reference of the paper's cohort rule (arXiv 2504.11320, §WAIT and §Nested WAIT),
written for reading, not speed; `test_cohort_reference.py` checks the shipped schedulers against it
batch by batch.

A group (a WAIT class, or a Nested WAIT instance) keeps its requests by the stage they run next:
stage 0 is the prefill (prompts waiting, FIFO), stage s ≥ 1 is decode stage s (cache kept, FIFO).
Its stages are cut into segments (first_stage, last_stage, n); WAIT has one segment, stages
0..l'_j, threshold n_j. A step serves segments 1..k, k the largest index such that each segment
r ≤ k has at least n_r requests waiting at its entry (segment 1: stage 0; segment r: its first
stage); once arrivals have ended, every segment of a non-empty group is served. From each stage
of the served segments it takes the first min(n_r, queued) requests; those at stage 0 prefill
their whole prompt, the others decode one token. A request that has decoded its l' tokens leaves.

It assumes memory never binds (the tests give it ample KV) and no drain timer.
"""

from __future__ import annotations

from collections import defaultdict


class ReferenceGroup:
    def __init__(self, segments: list[tuple[int, int, int]]):
        self.segments = segments  # (first_stage, last_stage, threshold); the last runs to infinity
        self.queues: dict[int, list] = defaultdict(list)  # stage -> requests, FIFO

    def threshold_of(self, stage: int) -> int:
        for first, last, n in self.segments:
            if first <= stage <= last:
                return n
        return self.segments[-1][2]  # past the last breakpoint: the last segment

    def segments_served(self, draining: bool) -> int:
        if not any(self.queues.values()):
            return 0
        if draining:
            return len(self.segments)
        k = 0
        for first, _, n in self.segments:
            if len(self.queues[first]) < n:
                break
            k += 1
        return k

    def step(self, draining: bool) -> list[tuple[object, int]]:
        """The (request, new tokens) this group serves this step; queues move on as if it ran."""
        k = self.segments_served(draining)
        if k == 0:
            return []
        last_served = self.segments[k - 1][1] if k < len(self.segments) else float("inf")
        served, moves = [], []
        for stage in sorted(s for s, q in self.queues.items() if q and s <= last_served):
            q = self.queues[stage]
            take, self.queues[stage] = q[: self.threshold_of(stage)], q[self.threshold_of(stage):]
            for r in take:
                served.append((r, r.prompt_tokens if stage == 0 else 1))
                if stage < r.output_tokens:  # decode stage `stage` was not its last one
                    moves.append((stage + 1, r))
        for stage, r in moves:
            self.queues[stage].append(r)
        return served
