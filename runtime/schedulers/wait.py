"""WAIT: threshold scheduling with known output lengths (arXiv 2504.11320, §WAIT).

One threshold n_j per request type (class) from the policy file. The class of a request is known
at arrival: `request.type_name` names it, or else its (prompt, output) lengths match a class's
(prefill, decode). A request that matches no class is an InputError naming it.

Service rules (`service_rule`, default from the policy): `cohort`, the paper's rule (class j is
eligible when ≥ n_j prompts wait for prefill; then every stage s = 0..l'_j of class j serves
min(n_j, waiting at s)); `continuous`, the authors' simulator (every resident decode runs every
step, admission of new prompts in cohorts of n_j). Drain rule, memory safety and chunking knob:
see `runtime/schedulers/threshold_base.py`.

Knobs: `policy` (a `RuntimePolicy` or a path to policy.json; required), `service_rule`,
`drain_max_wait_s` (override the policy's), `prefill_chunk_tokens` (None: whole prompts).
"""

from __future__ import annotations

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import as_policy
from runtime.request import Request
from runtime.schedulers.cohorts import CohortGroup
from runtime.schedulers.threshold_base import ThresholdScheduler


class WaitScheduler(ThresholdScheduler):
    name = "wait"
    uses_output_lengths = True

    def __init__(self, kv: KVBlockManager, *, policy, **knobs):
        policy = as_policy(policy, "wait")
        groups = [CohortGroup(c.name, [(0, c.decode_tokens, c.threshold)]) for c in policy.classes]
        super().__init__(kv, policy, groups, **knobs)
        self._by_name = {c.name: g for c, g in zip(policy.classes, groups)}
        self._by_lengths: dict[tuple[int, int], CohortGroup] = {}
        for c, g in zip(policy.classes, groups):
            self._by_lengths.setdefault((c.prefill_tokens, c.decode_tokens), g)

    def _tokens_to_fit(self, request: Request) -> int:
        return request.prompt_tokens + request.output_tokens  # output lengths are known to WAIT

    def _group_for(self, request: Request) -> CohortGroup:
        group = self._by_name.get(request.type_name) if request.type_name is not None else None
        if group is None:
            group = self._by_lengths.get((request.prompt_tokens, request.output_tokens))
        if group is None:
            raise InputError(
                f"request {request.request_id} (type {request.type_name!r}, prompt {request.prompt_tokens}, output "
                f"{request.output_tokens} tokens) matches no class of the WAIT policy; its classes are "
                f"{sorted(self._by_name)}: solve the policy for this workload",
                source=self.policy.source, field="classes",
            )
        return group
