"""`FluidschedScheduler`: vLLM's v1 scheduler with WAIT / Nested WAIT admission (docs/vllm-plugin.md).

vLLM keeps doing what it does (continuous decode, its own chunked prefill, block allocation,
LIFO preemption with recompute); the plugin decides, before each `schedule()`, two things:
1. which held requests enter vLLM's waiting queue this step (the policy's admission rule), and
2. which running requests sit this step out with their cache kept (pauses), through the
   request's `next_decode_eligible_step`, which vLLM 0.32's running loop honours
   (`if self.current_step < request.next_decode_eligible_step: skip`): a running request is
   skipped for one step without being preempted.

The step's prediction mirrors vLLM's running loop (tokens each request will get, the blocks that
needs, the token budget) so that a request is paused exactly when vLLM would otherwise have to
preempt for it, and admitted only when vLLM's own admission (full prompt must fit, first chunk
allocated) will take it in the same step. Rules (`integrations/vllm/config.py`):
- capped: running requests advance; one whose next block is not free pauses; if none paused,
  held requests are released first come first served while fewer than the resident cap hold a
  cache and their group is below its cap (WAIT: c_j; Nested WAIT with `segment_caps`: segment
  1's cap). Nested WAIT with `segment_caps`: a request about to enter segment k+1 while that
  segment holds c_{k+1} requests pauses at the boundary until one leaves it. When every running
  request would pause, nothing is paused and vLLM preempts its newest (the last resort).
- continuous: every running request advances (pause when no block is free); per group, a cohort
  of n held prompts is released when n are held and all their prompts fit, or a partial one when
  its oldest has waited `drain_max_wait_s`; when nothing else runs a deferred cohort's fitting
  prefix is released.
Counters: `fluidsched_counters` (and a log line every `log_interval_s`).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import deque

import vllm
from vllm.logger import init_logger
from vllm.v1.core.sched.scheduler import Scheduler

from fluid.errors import InputError
from integrations.vllm.compat import check_supported
from integrations.vllm.config import GroupSpec, PluginPlan, plan_from_settings, settings_from_additional_config

check_supported(vllm.__version__)
logger = init_logger(__name__)
COUNTERS = ("cohorts_released", "partial_cohorts", "requests_released", "pauses_memory", "pauses_boundary",
            "held", "held_for_full_prompt", "lone_prefills_unchunked", "last_resort_preemptions",
            "vllm_preemptions")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _Group:
    """One group's held requests and resident counts (per segment for Nested WAIT)."""

    __slots__ = ("spec", "held", "resident", "in_segment")

    def __init__(self, spec: GroupSpec):
        self.spec = spec
        self.held: deque = deque()
        self.resident = 0
        self.in_segment = [0] * len(spec.segment_first_stages)


class FluidschedScheduler(Scheduler):
    """vLLM's `Scheduler` that admits and pauses by a solved fluidsched policy."""

    #: the plan may be handed in directly (the model-free harness), else it comes from additional_config
    fluidsched_plan: PluginPlan | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        plan = self.fluidsched_plan or plan_from_settings(settings_from_additional_config(self.vllm_config.additional_config))
        self._check_engine(plan)
        self.fluidsched_plan = plan
        self._groups = [_Group(spec) for spec in plan.groups]
        self._by_name = {name: g for g in self._groups for name in (g.spec.name, *g.spec.type_names)}
        self._by_lengths = {(g.spec.prefill_tokens, g.spec.decode_tokens): g for g in reversed(self._groups)}
        self._group_of: dict[str, tuple[_Group, int]] = {}  # resident request id -> (group, segment held)
        self._num_held = 0
        self._arrivals_ended = False
        self._preempted_this_step = False
        self.fluidsched_clock = time.time  # the clock of `Request.arrival_time`; the harness swaps it
        self.fluidsched_counters = dict.fromkeys(COUNTERS, 0)
        self._last_log_s = time.monotonic()
        if plan.prefill_chunk_tokens is not None and not self.scheduler_config.long_prefill_token_threshold:
            # the policy's per-request prefill chunk is vLLM's long_prefill_token_threshold
            self.scheduler_config.long_prefill_token_threshold = plan.prefill_chunk_tokens
        logger.info("fluidsched: serving %s (%s rule, file rule %s) from %s; groups %s; resident cap %s",
                    plan.policy_kind, plan.rule, plan.policy_service_rule, plan.source,
                    [(g.name, g.cap, g.segment_caps) for g in plan.groups], plan.resident_cap)

    def _check_engine(self, plan: PluginPlan) -> None:
        """Refuse engine settings the step prediction does not model."""
        problems = []
        if len(self.kv_cache_config.kv_cache_groups) != 1:
            problems.append("a model with one KV cache group (full attention) is needed")
        if self.num_spec_tokens or self.num_lookahead_tokens:
            problems.append("speculative decoding is not supported")
        if self.connector is not None:
            problems.append("KV connectors are not supported")
        if self.adaptive_long_prefill_threshold:
            problems.append("long_prefill_token_threshold_adaptive is not supported")
        if self.use_pp:
            problems.append("pipeline parallelism is not supported")
        if problems:
            raise InputError(f"cannot serve {plan.source}: " + "; ".join(problems), field="--scheduler-cls")

    # --- vLLM's interface ----------------------------------------------------------------------
    def add_request(self, request) -> None:
        if request.request_id in self.requests:
            super().add_request(request)  # a streaming update of a released request
            return
        group = self._route(request)
        group.held.append(request)
        self._num_held += 1

    def get_request_counts(self) -> tuple[int, int]:
        # held requests count as waiting, or the engine would stop stepping while they wait
        running, waiting = super().get_request_counts()
        return running, waiting + self._num_held

    def finish_requests(self, request_ids, finished_status):
        # an abort of a held request: release it into vLLM's queue so that vLLM finishes it as usual
        ids = None if request_ids is None else ({request_ids} if isinstance(request_ids, str) else set(request_ids))
        for group in self._groups:
            hit = [r for r in group.held if ids is None or r.request_id in ids]
            for r in hit:
                group.held.remove(r)
                self._num_held -= 1
                Scheduler.add_request(self, r)
        self.fluidsched_counters["held"] = self._num_held
        return super().finish_requests(request_ids, finished_status)

    def _free_request(self, request, delay_free_blocks: bool = False):
        entry = self._group_of.pop(request.request_id, None)
        if entry is not None:
            group, segment = entry
            group.resident -= 1
            group.in_segment[segment] -= 1
        return super()._free_request(request, delay_free_blocks)

    def fluidsched_arrivals_ended(self) -> None:
        """No more requests will arrive (offline runs, the harness): partial cohorts drain at once."""
        self._arrivals_ended = True

    def schedule(self, throttle_prefills: bool = False):
        step = self.current_step + 1  # the step super().schedule() is about to run
        self._preempted_this_step = False
        free, budget, paused, ran = self._pause_running(step)
        if self.fluidsched_plan.rule == "capped":
            if not paused and not self._preempted_this_step:  # the capped rule admits nobody after a preemption
                self._release_capped(free, budget)
        else:
            self._release_continuous(free, budget, nothing_else=not ran and not paused)
        self._count_lone_prefill()
        output = super().schedule(throttle_prefills)
        counters = self.fluidsched_counters
        counters["vllm_preemptions"] += len(output.preempted_req_ids)
        counters["held"] = self._num_held
        if self.fluidsched_plan.log_interval_s and time.monotonic() - self._last_log_s >= self.fluidsched_plan.log_interval_s:
            self._last_log_s = time.monotonic()
            logger.info("fluidsched: %s", " ".join(f"{k}={v}" for k, v in counters.items()))
        return output

    def _count_lone_prefill(self) -> None:
        """vLLM lets a request alone in the engine prefill past long_prefill_token_threshold (nobody
        to starve): the policy's chunk does not hold for that step. Counted, not prevented."""
        chunk = self.scheduler_config.long_prefill_token_threshold
        if not chunk or len(self.running) + len(self.waiting) + len(self.kv_holding_waiting) + self._num_held != 1:
            return
        request = self.running[0] if self.running else (self.waiting.peek_request() if self.waiting else None)
        if request is not None and request.num_tokens - request.num_computed_tokens > chunk and \
                self.current_step + 1 >= request.next_decode_eligible_step:
            self.fluidsched_counters["lone_prefills_unchunked"] += 1

    # --- routing -------------------------------------------------------------------------------
    def _route(self, request) -> _Group:
        """The request's class (WAIT) or instance (Nested WAIT).

        WAIT: `extra_args["fluidsched_class"]` names it, else the class with the request's
        (prompt, max_tokens − 1) lengths, else the nearest class in prompt and output length.
        Nested WAIT: the instance listing `extra_args["fluidsched_class"]`, else the nearest
        prefill class."""
        params = request.sampling_params
        name = (params.extra_args or {}).get("fluidsched_class") if params is not None else None
        group = self._by_name.get(name) if name is not None else None
        if group is not None:
            return group
        prompt = request.num_prompt_tokens
        if self.fluidsched_plan.policy_kind == "wait":
            decode = max(request.max_tokens - 1, 0)
            group = self._by_lengths.get((prompt, decode))
            if group is None:
                group = min(self._groups, key=lambda g: abs(g.spec.prefill_tokens - prompt) + abs(g.spec.decode_tokens - decode))
            return group
        return min(self._groups, key=lambda g: (abs(g.spec.prefill_tokens - prompt), g.spec.prefill_tokens))

    # --- the step's prediction -------------------------------------------------------------------
    def _new_tokens(self, request, budget: int, threshold: int) -> int:
        """Tokens vLLM's running loop will give `request` this step (no spec decode, no encoder)."""
        n = request.num_tokens_with_spec + request.num_output_placeholders - request.num_computed_tokens
        if 0 < threshold < n:
            n = threshold
        return min(n, budget, self.max_model_len - request.num_computed_tokens - self.num_sampled_tokens_per_step)

    def _held_blocks(self, request) -> int:
        return len(self.kv_cache_manager.get_block_ids(request.request_id)[0])

    def _long_prefill_threshold(self) -> int:
        running, waiting = self.get_request_counts()
        return self.scheduler_config.long_prefill_token_threshold if running + waiting > 1 else 0

    def _pause_running(self, step: int) -> tuple[int, int, int, int]:
        """Pause the running requests that must sit this step out; returns (free blocks left,
        token budget left, requests paused for memory, requests that will run)."""
        free = self.kv_cache_manager.block_pool.get_num_free_blocks()
        budget = self.max_num_scheduled_tokens
        threshold = self._long_prefill_threshold()
        block_size = self.block_size
        segments = self.fluidsched_plan.segment_caps
        memory_paused: list = []
        boundary = ran = 0
        for request in self.running:
            if budget <= 0:
                break
            if step < request.next_decode_eligible_step:
                continue
            n = self._new_tokens(request, budget, threshold)
            if n <= 0:
                continue
            if segments and request.num_computed_tokens >= request.num_tokens - 1 and not self._enter_segment(request):
                request.next_decode_eligible_step = step + 1
                boundary += 1
                continue
            need = _cdiv(request.num_computed_tokens + n, block_size) - self._held_blocks(request)
            if need > free:
                request.next_decode_eligible_step = step + 1
                memory_paused.append(request)
                continue
            free -= need
            budget -= n
            ran += 1
        if memory_paused and not ran:
            # every running request would pause: the last resort, as the project's schedulers do it,
            # is to preempt the newest one (recompute) back to the front of its group's held queue
            for request in memory_paused:
                request.next_decode_eligible_step = 0
            self._preempt_newest()
            return self._pause_running(step)
        self.fluidsched_counters["pauses_memory"] += len(memory_paused)
        self.fluidsched_counters["pauses_boundary"] += boundary
        return free, budget, len(memory_paused), ran

    def _preempt_newest(self) -> None:
        victim = self.running.pop()
        self._preempt_request(victim, time.monotonic())  # frees its blocks; vLLM reports it preempted
        self.waiting.remove_request(victim)
        group, segment = self._group_of.pop(victim.request_id)
        group.resident -= 1
        group.in_segment[segment] -= 1
        group.held.appendleft(victim)
        self._num_held += 1
        self._preempted_this_step = True
        self.fluidsched_counters["last_resort_preemptions"] += 1

    def _enter_segment(self, request) -> bool:
        """Nested WAIT segment caps: whether a decoding request may run its next stage (moving into
        the next segment when it has room)."""
        group, held = self._group_of[request.request_id]
        spec = group.spec
        segment = bisect_right(spec.segment_first_stages, request.num_output_tokens) - 1  # next decode stage
        if segment <= held:
            return True
        if group.in_segment[segment] >= spec.segment_caps[segment]:
            return False
        group.in_segment[held] -= 1
        group.in_segment[segment] += 1
        self._group_of[request.request_id] = (group, segment)
        return True

    def _admission(self, request, free: int, budget: int, admitted: int) -> tuple[int, int] | None:
        """(blocks, tokens) vLLM's waiting loop allocates and schedules to admit `request` now, or
        None if it will not admit it this step."""
        if budget <= 0 or len(self.running) + admitted >= self.max_num_active_reqs:
            return None
        threshold = self._long_prefill_threshold()
        n = request.num_tokens - request.num_computed_tokens
        if 0 < threshold < n:
            n = threshold
        n = min(n, budget)
        watermark = self.kv_cache_manager.watermark_blocks if (self.running or admitted) else 0
        first = _cdiv(n, self.block_size) + watermark
        if first > free:
            return None
        if self.scheduler_reserve_full_isl and _cdiv(request.num_tokens, self.block_size) + watermark > free:
            self.fluidsched_counters["held_for_full_prompt"] += 1
            return None
        return first - watermark, n

    def _release(self, group: _Group) -> None:
        request = group.held.popleft()
        self._num_held -= 1
        group.resident += 1
        group.in_segment[0] += 1
        self._group_of[request.request_id] = (group, 0)
        self.fluidsched_counters["requests_released"] += 1
        if request.request_id in self.requests:  # preempted by the last resort: vLLM knows it already
            self._enqueue_waiting_request(request)
        else:
            Scheduler.add_request(self, request)

    def _queue_busy(self) -> bool:
        # requests vLLM already queues (preempted ones) go first; release behind them next step
        return bool(self.waiting) or bool(self.kv_holding_waiting)

    def _release_capped(self, free: int, budget: int) -> None:
        if self._queue_busy():
            return
        plan = self.fluidsched_plan
        resident = len(self.running)
        released: set[int] = set()
        admitted = 0
        stopped_for_memory = False
        while resident < plan.resident_cap:
            best = None
            for group in self._groups:
                spec = group.spec
                if not group.held or group.resident >= spec.cap:
                    continue
                if plan.segment_caps and group.in_segment[0] >= spec.segment_caps[0]:
                    continue
                if best is None or group.held[0].arrival_time < best.held[0].arrival_time:
                    best = group
            if best is None:
                break
            taken = self._admission(best.held[0], free, budget, admitted)
            if taken is None:
                stopped_for_memory = True
                break
            free -= taken[0]
            budget -= taken[1]
            self._release(best)
            released.add(id(best))
            admitted += 1
            resident += 1
        self.fluidsched_counters["cohorts_released"] += len(released)
        if stopped_for_memory and released:
            self.fluidsched_counters["partial_cohorts"] += 1

    def _release_continuous(self, free: int, budget: int, *, nothing_else: bool) -> None:
        if self._queue_busy():
            return
        now = self.fluidsched_clock()
        wait_s = self.fluidsched_plan.drain_max_wait_s
        deferred = None
        admitted = 0
        for group in self._groups:
            if not group.held:
                continue
            n = max(1, int(group.spec.threshold))
            due = self._arrivals_ended or group.held[0].arrival_time + wait_s <= now
            if len(group.held) < n and not due:
                continue
            count = min(n, len(group.held))
            cohort = list(group.held)[:count]
            need = sum(_cdiv(r.num_tokens, self.block_size) for r in cohort)
            if need > free:
                deferred = deferred or group
                continue
            for _ in range(count):
                taken = self._admission(group.held[0], free, budget, admitted)
                if taken is None:
                    break
                free -= taken[0]
                budget -= taken[1]
                self._release(group)
                admitted += 1
            self.fluidsched_counters["cohorts_released"] += 1
            if count < n:
                self.fluidsched_counters["partial_cohorts"] += 1
        if nothing_else and not admitted and deferred is not None:
            # progress: nothing else runs, so release as much of the deferred cohort as fits
            count = 0
            while deferred.held and (taken := self._admission(deferred.held[0], free, budget, admitted)) is not None:
                free -= taken[0]
                budget -= taken[1]
                self._release(deferred)
                admitted += 1
                count += 1
            if count:
                self.fluidsched_counters["cohorts_released"] += 1
                self.fluidsched_counters["partial_cohorts"] += 1
