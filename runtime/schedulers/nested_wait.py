"""Nested WAIT: thresholds per decode segment, unknown output lengths (arXiv 2504.11320, §Nested WAIT).

Segments come from the policy: segment 1 covers stages 0..l'_1 (every prompt), segment k the
decode stages l'_{k−1}+1..l'_k. A request's segment follows from its decode progress alone; it
never reads `output_tokens` (completion is detected by `Scheduler.complete_step`). Stages past the
last breakpoint belong to the last segment.

Cohort rule: a step serves segments 1..k, k the largest index such that every segment up to k has
at least its threshold n_r waiting at its entry (segment 1: prompts waiting for prefill; segment
k: prompts that finished segment k−1 and wait with their cache), and from each stage of those
segments takes up to n_r prompts; plus the drain rule. Continuous rule: every resident decode runs,
new prompts are admitted in cohorts of n_1. With per-class `instances` in the policy, each
instance is its own set of queues; a request goes to the instance listing its type, else to the
one with the nearest `prefill_tokens`. Memory safety, drain and chunking: `threshold_base.py`.

Knobs: `policy` (a `RuntimePolicy` or a path; required), `service_rule`, `drain_max_wait_s`,
`prefill_chunk_tokens`.
"""

from __future__ import annotations

from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import InstanceRouter, RuntimeSegment, as_policy
from runtime.request import Request
from runtime.schedulers.cohorts import CohortGroup
from runtime.schedulers.threshold_base import ThresholdScheduler


def _group(name: str, segments: tuple[RuntimeSegment, ...]) -> CohortGroup:
    return CohortGroup(name, [(s.first_stage, s.last_stage, s.threshold) for s in segments])


class NestedWaitScheduler(ThresholdScheduler):
    name = "nested-wait"
    uses_output_lengths = False

    def __init__(self, kv: KVBlockManager, *, policy, **knobs):
        policy = as_policy(policy, "nested_wait")
        if policy.instances:
            groups = [_group(f"prefill{inst.prefill_tokens}", inst.segments) for inst in policy.instances]
        else:
            groups = [_group("all", policy.segments)]
        super().__init__(kv, policy, groups, **knobs)
        self._router = InstanceRouter(policy.instances) if policy.instances else None

    def _group_for(self, request: Request) -> CohortGroup:
        return self.groups[self._router.index_of(request)] if self._router is not None else self.groups[0]
