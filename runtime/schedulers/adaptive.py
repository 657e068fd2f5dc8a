"""Adaptive WAIT and Nested WAIT: the capped rule with caps re-solved from the traffic (docs/adaptive.md).

The capped rule (`runtime/schedulers/capped.py`) admits requests while their class (WAIT) or the
server (Nested WAIT) is below its cap. Here the caps follow the measured traffic: every
`period_s` the scheduler estimates the rates over the last `window_s` (`runtime/adaptive.py`),
re-solves the caps with `solve`'s own rules (`thresholds/adaptive.py`: closed form, integer
repair, the policy's memory bound) and applies them past the hysteresis.

Safe points: caps are read only when admitting, so a change takes effect at the next step's
admission pass; a lower cap never evicts (residents above it finish, and nobody is admitted
until the count is below it). The caps never ask for more memory than C under the policy's
bound, and the capped rule's pause-when-no-block-is-free still guards every step.

Knobs: as the capped schedulers, plus `window_s`, `period_s`, `hysteresis` (override the
policy's `capped.adaptive` block, or the defaults of `AdaptiveSettings` when it has none).
"""

from __future__ import annotations

import dataclasses

from fluid.batch_time import batch_time_from_dict
from fluid.errors import InputError
from runtime.adaptive import CapController, LengthWindow, RateEstimator
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch
from runtime.schedulers.capped import CappedNestedWaitScheduler, CappedWaitScheduler
from thresholds.adaptive import (
    AdaptiveSettings,
    RequestShape,
    SolveRule,
    prefill_chunk_for,
    resolve_nested_cap,
    resolve_wait_caps,
    upper_rate,
)


def _settings(policy, window_s, period_s, hysteresis) -> AdaptiveSettings:
    base = policy.adaptive if policy.adaptive is not None else AdaptiveSettings()
    changes = {k: v for k, v in (("window_s", window_s), ("period_s", period_s), ("hysteresis", hysteresis)) if v is not None}
    return dataclasses.replace(base, **changes) if changes else base


def _rule(policy, kv: KVBlockManager, settings: AdaptiveSettings) -> SolveRule:
    if policy.batch_time is None:
        raise InputError("the adaptive mode re-solves caps with the policy's batch_time, which this policy lacks: "
                         "re-solve it with fluidsched solve", source=policy.source, field="batch_time")
    capacity = min(policy.kv_capacity_tokens or kv.num_blocks * kv.block_size, kv.num_blocks * kv.block_size)
    # slack 0: the headroom on the estimate is the margin (solve's slack is a utilisation target for a
    # rate known in advance; adding both would size the caps twice over). The memory margin is the
    # one the user gave solve, else solve's default rule (it gives way near C): the margin the
    # policy records is what solve chose at the rate it was solved for, and held fixed it kept the
    # caps at a backlog below those of the same solve at the peak (docs/adaptive.md)
    return SolveRule(0.0, policy.memory_bound or "expected", settings.memory_margin, capacity,
                     batch_time_from_dict(policy.batch_time, source=policy.source), settings.max_capacity_fraction)


class _Adaptive:
    """The part both adaptive schedulers share: feed the estimators, apply the controller's caps."""

    controller: CapController
    _now_s = 0.0

    _policy_chunk: int | None = None
    _fixed_chunk = False
    _prefill_of: dict[str, float] = {}

    def _apply(self, caps: dict[str, int]) -> None:
        raise NotImplementedError

    def _follow_caps(self) -> None:
        """The prefill chunk for the caps in force (`thresholds.adaptive.prefill_chunk_for`): the
        fluid point admits cap / stages requests per step into a group (the pace), each with its
        prompt to prefill. A chunk given to the scheduler (`prefill_chunk_tokens`) stays fixed."""
        if self._fixed_chunk:
            return
        per_step = sum(self.group_caps[g] / self._stages[g] * self._prefill_of[g] for g in self.group_caps)
        self.prefill_chunk_tokens = prefill_chunk_for(per_step, self._policy_chunk)

    _cap_bound: dict[str, bool] = {}

    def _backlog(self) -> bool:
        """A cap is binding while its oldest waiting request has waited `backlog_wait_s` or longer.

        Binding: the last admission pass left the group at its cap with a request waiting (the cap
        is what held it). Not the count now: at the start of a step the requests that finished in
        the last one have already left, so a cap that held a queue at every admission pass looked
        free at almost every check (at ~one completion per step), and a backlog was seen late
        (docs/adaptive.md, "Periodic: the last 0.04 %")."""
        since = self._now_s - self.settings.backlog_wait_s
        return any(q and q[0].arrival_s <= since and self._cap_bound.get(g, False) for g, q in self._waiting.items())

    def schedule(self, now_s: float) -> Batch:
        self._now_s = now_s
        caps = self.controller.maybe_update(now_s, self._backlog())
        if caps is not None:
            self._apply(caps)
        self._cap_bound = {}  # a step with no admission pass (residents paused for memory): no cap held anyone
        return super().schedule(now_s)

    def _admit(self, batch: Batch) -> None:
        super()._admit(batch)
        self._cap_bound = {g: bool(q) and self._in_group[g] >= self.group_caps[g] for g, q in self._waiting.items()}

    @property
    def cap_history(self) -> list[tuple[float, dict[str, int], float]]:
        """(time, caps, scale of the estimate) at the start and at every change."""
        return self.controller.history


class AdaptiveCappedWaitScheduler(_Adaptive, CappedWaitScheduler):
    """WAIT's class caps c_j re-solved from per-class rates counted over the window."""

    name = "wait-adaptive"

    def __init__(self, kv: KVBlockManager, *, policy, resident_cap: int | None = None,
                 prefill_chunk_tokens: int | None = None, window_s: float | None = None,
                 period_s: float | None = None, hysteresis: float | None = None, work_conserving: bool = False):
        super().__init__(kv, policy=policy, resident_cap=resident_cap, prefill_chunk_tokens=prefill_chunk_tokens,
                         work_conserving=work_conserving)
        self.settings = _settings(self.policy, window_s, period_s, hysteresis)
        self._fixed_resident_cap = resident_cap is not None
        rule = _rule(self.policy, kv, self.settings)
        classes = [(c.name, c.prefill_tokens, c.decode_tokens) for c in self.policy.classes]
        solved = {c.name: c.rate_per_s for c in self.policy.classes}
        if any(r is None or r <= 0 for r in solved.values()):
            raise InputError("the adaptive mode needs the rates each class was solved for (classes[].rate_per_s)",
                             source=self.policy.source, field="classes")
        self.rates = RateEstimator(solved, self.settings.window_s)
        lo, hi = self.settings.min_rate_scale, self.settings.max_rate_scale


        def resolve(now_s: float):
            # with requests waiting behind a binding cap the window's estimate is behind the traffic:
            # solve for the largest rate the rules allow (max_capacity_fraction of capacity, the memory
            # bound), as a policy solved at the peak would run (docs/adaptive.md, "Backlog")
            backlog = self._backlog()
            est = {n: hi * solved[n] if backlog else min(max(upper_rate(r, self.settings), lo * solved[n]), hi * solved[n])
                   for n, r in self.rates.rates_per_s(now_s).items()}
            return resolve_wait_caps(classes, est, rule)

        self.controller = CapController(self.settings, self.group_caps, resolve)
        self._policy_chunk, self._fixed_chunk = self.prefill_chunk_tokens, prefill_chunk_tokens is not None
        self._prefill_of = {c.name: float(c.prefill_tokens) for c in self.policy.classes}

    def add_request(self, request: Request) -> None:
        super().add_request(request)
        self.rates.observe(self._group_of[request.request_id], request.arrival_s)

    def _apply(self, caps: dict[str, int]) -> None:
        self.group_caps.update(caps)
        if not self._fixed_resident_cap:
            self.resident_cap = sum(self.group_caps.values())
        self._follow_caps()


def segment_shape(prefill_tokens: int, segments) -> RequestShape:
    """The per-request shape a Nested WAIT policy's segments imply: a request reaches segment k
    with probability Π_{r<k} p_r and then stays its whole width (exact when segments end at the
    output lengths, an approximation within a segment otherwise)."""
    reach, stages, kv, new = 1.0, 0.0, 0.0, 0.0
    for s in segments:
        width = s.last_stage - s.first_stage + 1
        stages += reach * width
        kv += reach * sum(prefill_tokens + st for st in range(s.first_stage, s.last_stage + 1))
        reach *= s.continue_prob
    decode = stages - 1
    return RequestShape(stages, kv / stages, (prefill_tokens + decode) / stages)


class AdaptiveCappedNestedWaitScheduler(_Adaptive, CappedNestedWaitScheduler):
    """Nested WAIT's resident cap re-solved from the total rate and the lengths of finished requests."""

    name = "nested-wait-adaptive"

    def __init__(self, kv: KVBlockManager, *, policy, resident_cap: int | None = None,
                 prefill_chunk_tokens: int | None = None, window_s: float | None = None,
                 period_s: float | None = None, hysteresis: float | None = None, work_conserving: bool = False):
        if resident_cap is not None:
            raise InputError("the adaptive mode sets the resident cap itself; drop resident_cap or run "
                             "nested-wait-capped", field="resident_cap")
        super().__init__(kv, policy=policy, prefill_chunk_tokens=prefill_chunk_tokens, work_conserving=work_conserving)
        self.settings = _settings(self.policy, window_s, period_s, hysteresis)
        rule = _rule(self.policy, kv, self.settings)
        ref = self.policy.solved_for
        if ref is None or not ref.rates_per_s:
            raise InputError("the adaptive mode needs the rates the policy was solved for (workload.rates_per_s)",
                             source=self.policy.source, field="workload")
        solved_total = sum(rate for _, rate in ref.rates_per_s)
        self.rates = RateEstimator({"all": solved_total}, self.settings.window_s)
        self.lengths = LengthWindow(self.settings.window_s)
        prefill = self.policy.representative_prefill_tokens or 0
        prior = segment_shape(prefill, self.policy.segments)
        longest = prefill + max(s.last_stage for s in self.policy.segments)
        lo, hi = self.settings.min_rate_scale, self.settings.max_rate_scale

        def resolve(now_s: float):
            estimate = upper_rate(self.rates.rates_per_s(now_s)["all"], self.settings)
            # a backlog: the largest rate the rules allow, as for WAIT
            total = hi * solved_total if self._backlog() else min(max(estimate, lo * solved_total), hi * solved_total)
            seen = self.lengths.lengths(now_s)
            shape = RequestShape.of_lengths(seen) if len(seen) >= self.settings.min_completions else prior
            worst = max([longest] + [p + o for p, o in seen])
            cap, scale = resolve_nested_cap(total, shape, rule, worst)
            return {"all": cap}, scale

        self.controller = CapController(self.settings, self.group_caps, resolve)
        self._policy_chunk, self._fixed_chunk = self.prefill_chunk_tokens, prefill_chunk_tokens is not None
        self._prefill_of = {"all": float(prefill)}

    def add_request(self, request: Request) -> None:
        super().add_request(request)
        self.rates.observe("all", request.arrival_s)

    def on_finished(self, requests: list[Request]) -> None:
        super().on_finished(requests)
        for r in requests:
            self.lengths.observe(r.completion_s, r.prompt_tokens, r.output_tokens)

    def _apply(self, caps: dict[str, int]) -> None:
        self.group_caps.update(caps)
        self.resident_cap = caps["all"]
        self._follow_caps()
