"""The engine shared by WAIT and Nested WAIT (arXiv 2504.11320, §WAIT and §Nested WAIT).

Both policies keep requests in `CohortGroup`s (one per WAIT class, one per Nested WAIT instance)
and differ only in how a request finds its group and how the groups' segments are built.

Service rules (`service_rule`):
- `cohort` (the paper's rule): every group whose first k segments are ready serves, from each
  stage of those segments, up to that segment's threshold; its stage-0 share is the admission of
  a cohort of min(n_1, waiting) prompts. Prompts left out keep their caches.
- `continuous` (the authors' simulator): every resident decode runs every step; thresholds only
  gate the admission of new prompts, a cohort of n_1 per group per step.

Memory: the policy's M^π ≤ C is its guarantee, but the scheduler never overflows regardless. A
cohort is admitted only if all its prompts fit (else `admissions_deferred` counts it); a decode
whose next block is not free waits a turn with its cache (`decodes_paused`); when nothing at all
can run, the newest admitted request is evicted by recompute (LIFO, as in the paper;
`evictions`) and goes back to the front of its group's waiting queue. The recompute is the
engines' (`Request.evict`: the l + s + 1 tokens it knows, whose prefill samples its next token, so
it rejoins its cohort one stage on); the paper's model restarts the prompt from its prefill stage
instead, re-prefilling l + s and decoding again (docs/baselines.md, "Recompute"). When nothing else runs and
a deferred cohort does not fit whole, its largest fitting prefix is admitted so that the server
always makes progress.

Prefill: whole prompts in the admitting step (the paper's model), or chunks of at most
`prefill_chunk_tokens` per step; an admitted prompt keeps prefilling every step until done.
"""

from __future__ import annotations

import math
from itertools import chain, islice

from fluid.errors import InputError
from fluid.numbers import check_number
from runtime.kv_blocks import KVBlockManager, KVCapacityError
from runtime.policy_file import SERVICE_RULES, RuntimePolicy
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler
from runtime.schedulers.cohorts import CohortGroup, ServedStages
from runtime.schedulers.fits import check_fits_alone


class ThresholdScheduler(Scheduler):
    """Common engine; subclasses build `self.groups` and implement `_group_for(request)`."""

    def __init__(
        self,
        kv: KVBlockManager,
        policy: RuntimePolicy,
        groups: list[CohortGroup],
        *,
        service_rule: str | None = None,
        drain_max_wait_s: float | None = None,
        prefill_chunk_tokens: int | None = None,
    ):
        super().__init__(kv)
        self.policy = policy
        rule = policy.service_rule if service_rule is None else service_rule
        if rule not in SERVICE_RULES:
            raise InputError(f"must be one of {list(SERVICE_RULES)}, got {rule!r}", field="service_rule")
        self.service_rule = rule
        wait = policy.drain_max_wait_s if drain_max_wait_s is None else drain_max_wait_s
        if wait != math.inf:  # inf: no drain timer
            check_number(wait, "drain_max_wait_s", minimum=0, unit="of seconds")
        self.max_wait_s = float(wait)
        check_number(prefill_chunk_tokens, "prefill_chunk_tokens", integer=True, minimum=1, allow_none=True)
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.groups = groups
        self._cohort = rule == "cohort"
        self._group_of: dict[int, CohortGroup] = {}
        self._resident: dict[int, Request] = {}  # admission order: the last one is evicted first (LIFO)
        self._prefilling: list[Request] = []  # admitted, prefill not finished (chunked prefill)
        self._running: list[Request] = []  # continuous rule: resident decodes, admission order
        self._unfinished = 0
        self._draining = False
        self._now_s = 0.0
        # this step's work, kept for complete_step to move requests between queues
        self._served: list[ServedStages] = []  # what each group served this step (cohort rule)
        self._prefill_items: list[Request] = []
        self._prefill_paused: list[Request] = []
        self._deferred: list[CohortGroup] = []
        self.stats = {
            "admissions": 0,  # cohorts admitted
            "partial_cohorts": 0,  # cohorts admitted with fewer than n_1 prompts (drain)
            "admissions_deferred": 0,  # cohorts that did not fit in free KV
            "decodes_paused": 0,  # decode (or prefill chunk) steps skipped for want of a free block
            "evictions": 0,  # LIFO evictions (recompute), last resort
        }

    # --- routing (subclasses) ----------------------------------------------------------------
    def _group_for(self, request: Request) -> CohortGroup:
        raise NotImplementedError

    def _tokens_to_fit(self, request: Request) -> int:
        """KV tokens the request must be able to hold alone (prompt + first decode token)."""
        return request.prompt_tokens + 1

    # --- executor interface ------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        group = self._group_for(request)
        check_fits_alone(self.kv, request, self._tokens_to_fit(request))
        self._group_of[request.request_id] = group
        group.enqueue_waiting(request)
        self._unfinished += 1

    def has_unfinished(self) -> bool:
        return self._unfinished > 0

    def on_arrivals_ended(self) -> None:
        self._draining = True

    def next_wakeup_s(self) -> float | None:
        if self.max_wait_s == math.inf or self._draining:
            return None
        best = math.inf
        now = self._now_s
        for g in self.groups:
            if g.is_empty():
                continue
            for t in g.due_times_s(self.max_wait_s):
                if now < t < best:
                    best = t
        return None if best == math.inf else best

    def schedule(self, now_s: float) -> Batch:
        self._now_s = now_s
        batch = Batch(count_key_tiles=self.count_key_tiles)
        while True:
            blocked = self._fill(batch, now_s)
            if batch.items or not blocked:
                return batch
            self._evict_newest(batch)

    def complete_step(self, batch: Batch, start_s: float, end_s: float) -> list[Request]:
        done = super().complete_step(batch, start_s, end_s)
        if self._cohort:
            # a request that completed at decode stage s has decode_steps_done == s: only the
            # served stages in `ended` need filtering, the rest move on whole
            ended = {r.decode_steps_done for r in done}
            for served in self._served:
                group = served.group
                stages = group.stages
                if not stages:
                    # the whole group was served (the common case near capacity): its stages move on
                    # in one piece, which is the loop below with every `get` missing, built at once
                    shifted = {stage + 1: moved for stage, moved in served.moves.items()}
                    for stage in ended:
                        q = shifted.get(stage + 1)
                        if q is not None:
                            q = [r for r in q if r.completion_s is None]
                            if q:
                                shifted[stage + 1] = q
                            else:
                                del shifted[stage + 1]
                    group.stages = shifted
                    group.changed()
                    continue
                for stage, moved in served.moves.items():  # push_stage, inlined: the loop runs once per served stage
                    if stage in ended:
                        moved = [r for r in moved if r.completion_s is None]
                        if not moved:
                            continue
                    q = stages.get(stage + 1)
                    if q is None:
                        stages[stage + 1] = moved
                    else:
                        q.extend(moved)
                group.changed()
        elif done:
            self._running = [r for r in self._running if r.completion_s is None]
        still = self._prefill_paused
        for r in self._prefill_items:
            if r.completion_s is not None:
                continue
            if r.cached_tokens < r.prefill_target_tokens:
                still.append(r)
            elif self._cohort:
                group = self._group_of[r.request_id]
                group.push_stage(r.decode_steps_done + 1, [r])
                group.changed()
            else:
                self._running.append(r)
        self._prefilling = still
        self._served = []
        self._prefill_items = []
        self._prefill_paused = []
        return done

    def on_finished(self, requests: list[Request]) -> None:
        self._unfinished -= len(requests)
        resident = self._resident
        group_of = self._group_of
        for r in requests:
            resident.pop(r.request_id, None)
            group_of.pop(r.request_id, None)

    # --- one step ------------------------------------------------------------------------------
    def _fill(self, batch: Batch, now_s: float) -> int:
        """Fill `batch`; return how many resident requests could not grow (0: none blocked)."""
        self._served = []
        self._prefill_items = []
        self._prefill_paused = []
        self._deferred = []
        max_wait = self.max_wait_s
        draining = self._draining
        ready = []
        blocked = 0
        if self._cohort:
            for g in self.groups:
                if not g.waiting and not g.stages:
                    continue
                k = g.ready_segments(now_s, max_wait, draining)
                if k:
                    ready.append(g)
                    blocked += self._serve_stages(batch, g, k)
        else:
            blocked += self._serve_running(batch)
            for g in self.groups:
                if g.waiting and g.ready_segments(now_s, max_wait, draining):
                    ready.append(g)
        blocked += self._continue_prefills(batch)
        for g in ready:
            self._admit(batch, g, g.thresholds[0])
        if not batch.items and not blocked and self._deferred:
            blocked = self._admit_fitting_prefix(batch, self._deferred[0])
        self.stats["decodes_paused"] += blocked
        return blocked

    def _serve_stages(self, batch: Batch, group: CohortGroup, k: int) -> int:
        """Cohort rule: up to the segment's threshold from every stage of segments 1..k."""
        stages = group.stages
        n = group.thresholds[0]
        left = 0  # decodes a whole-group pass already reserved, from the front in stage order
        if group.num_segments == 1 and stages and max(map(len, stages.values())) <= n:
            # every stage moves on whole: reserve them in one pass and move the dict in one piece
            flat = list(chain.from_iterable(stages.values()))
            reached = self.reserve_decodes(batch, flat)
            if reached == len(flat):
                group.stages = {}
                self._served.append(ServedStages(group, stages))
                group.changed()
                return 0
            left = reached  # rare (memory ran out): stage by stage from here
        limit = group.last_stages[k - 1]
        single = group.num_segments == 1
        moves: dict[int, list[Request]] = {}
        blocked = 0
        for stage, q in list(stages.items()):
            if stage > limit:
                continue
            if not single:
                n = group.thresholds[group.segment_of(stage)]
            if len(q) <= n:
                take = q  # the whole stage moves on: no copy
                del stages[stage]
            else:
                take = q[:n]
                del q[:n]
            already = min(len(take), left)
            left -= already
            moved, paused = self._reserve_each(batch, take, already)
            blocked += len(paused)
            if paused:
                rest = stages.get(stage)
                stages[stage] = paused + rest if rest else paused
            if moved:
                moves[stage] = moved
        if moves:
            self._served.append(ServedStages(group, moves))
        group.changed()
        return blocked

    def _reserve_each(self, batch: Batch, take: list[Request], reserved: int = 0) -> tuple[list[Request], list[Request]]:
        """Split `take` into the decodes that got their block and the rest (which keep their caches).

        `reserved`: how many at the front of `take` a whole-group pass already reserved in this batch.
        """
        reached = reserved if reserved else self.reserve_decodes(batch, take)
        if reached == len(take):
            return take, []
        moved = take[:reached]
        paused: list[Request] = []
        try_reserve = self.try_reserve
        for r in islice(take, reached, None):
            if try_reserve(batch, r, 1):
                moved.append(r)
            else:
                paused.append(r)
        return moved, paused

    def _serve_running(self, batch: Batch) -> int:
        """Continuous rule: every resident decode runs (those whose block is not free wait a turn)."""
        running = self._running
        end = len(running)
        blocked = 0
        i = self.reserve_decodes(batch, running)
        while i < end:  # stopped short of memory (or, never here, at a prefill)
            if not self.try_reserve(batch, running[i], 1):
                blocked += 1
            i = self.reserve_decodes(batch, running, i + 1)
        return blocked

    def _continue_prefills(self, batch: Batch) -> int:
        blocked = 0
        for r in self._prefilling:
            try:
                self.reserve(batch, r, self._chunk(r))
            except KVCapacityError:
                self._prefill_paused.append(r)
                blocked += 1
                continue
            self._prefill_items.append(r)
        return blocked

    def _chunk(self, r: Request) -> int:
        left = r.prefill_remaining
        chunk = self.prefill_chunk_tokens
        return left if chunk is None or chunk >= left else chunk

    def _admit(self, batch: Batch, group: CohortGroup, n: int) -> None:
        """Admit a cohort of min(n, waiting) prompts if all of them fit in free KV."""
        waiting = group.waiting
        count = min(n, len(waiting))
        if count == 0:
            return
        blocks = self.kv.blocks_for_tokens
        need = sum(blocks(r.prefill_target_tokens) for r in islice(waiting, count))
        if need > self.kv.free_blocks:
            self.stats["admissions_deferred"] += 1
            self._deferred.append(group)
            return
        self._admit_count(batch, group, count)
        if count < n:
            self.stats["partial_cohorts"] += 1

    def _admit_count(self, batch: Batch, group: CohortGroup, count: int) -> None:
        waiting = group.waiting
        resident = self._resident
        items = self._prefill_items
        for _ in range(count):
            r = waiting.popleft()
            self.reserve(batch, r, self._chunk(r))
            resident[r.request_id] = r
            items.append(r)
        group.changed()
        self.stats["admissions"] += 1

    def _admit_fitting_prefix(self, batch: Batch, group: CohortGroup) -> int:
        """Progress guarantee: nothing else runs, so admit as much of the cohort as fits.

        Returns the blocked count of the step (as `_fill`)."""
        free = self.kv.free_blocks
        count = 0
        for r in group.waiting:
            need = self.kv.blocks_for_tokens(r.prefill_target_tokens)
            if need > free:
                break
            free -= need
            count += 1
        if count:
            self._admit_count(batch, group, count)
            self.stats["partial_cohorts"] += 1
            return 0
        if not self._resident:  # the cache is empty and the head still does not fit: refuse it
            r = group.waiting[0]
            check_fits_alone(self.kv, r, r.prefill_target_tokens, why="its prefill")
        # memory is held by residents that are not being served: treat as blocked
        self._evict_newest(batch)
        return self._fill(batch, self._now_s)

    def _evict_newest(self, batch: Batch) -> None:
        """Last resort: evict the newest admitted request (recompute) to the front of its queue."""
        _, r = self._resident.popitem()
        group = self._group_of[r.request_id]
        if r.in_prefill:
            self._prefilling.remove(r)
        elif self._cohort:
            group.remove_resident(r, r.decode_steps_done + 1)
        else:
            self._running.remove(r)
        self.preempt(r, batch)
        group.enqueue_waiting(r, front=True)
        self.stats["evictions"] += 1
