"""The capped service rule for WAIT and Nested WAIT (docs/capped-rule.md).

Beside the paper's cohort rule and the continuous rule (`threshold_base.py`), this is the rule the
authors' experiments of arXiv 2504.11320 ran: thresholds are real numbers, often far below one
prompt per stage, enforced through integer caps on the requests that hold a cache.

Every step:
1. every resident request advances: a decode one token, a prefill its next chunk of at most
   `prefill_chunk_tokens` (per request; None: the whole prompt). One whose next block is not
   free skips the step with its cache kept (`decodes_paused`, the overflow events);
2. then, unless a resident was paused this step, waiting requests are admitted first come first
   served while fewer than `resident_cap` are resident, their group has a whole admission of pace
   credit (the fluid point's admissions per step, the group's cap over its mean resident stages,
   so that residents' ages stay spread instead of coming in cohorts), their admission passes the look-ahead
   test (`_future_fits`: left to run, the residents and it stay within the cache at every future
   step, each growing a token a step to its known length, WAIT, or its expected length given its
   stage, Nested WAIT; not applied while nothing is resident) and their group is below its cap
   (`wait-capped`: one cap per class, c_j = ⌈n_j (l'_j + 1)⌉; `nested-wait-capped`: the resident
   cap alone, since the segment a request will reach is unknown) and their first chunk fits.
There is no eviction, except as the last resort when no resident can advance at all (the cache is
full of paused requests): then the newest admitted is evicted by recompute (`evictions`), so the
server never stalls.

Knobs: `policy` (a `RuntimePolicy` or a path; required), `resident_cap` (default: from the
thresholds, `thresholds.capped`), `prefill_chunk_tokens` (default: the policy's),
`look_ahead` (default true; false: the rule as the authors' experiments ran it, admission
limited by the caps and the first chunk only), `pace` (default true; false: no pace) and
`work_conserving` (default false: the caps always bind, as solved and as the authors ran them;
true: beyond a cap a request is still admitted when the residents and it fit the cache even all
at their projected ends, which cuts latency at low load and can cost it near capacity,
docs/capped-rule.md).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from fluid.numbers import check_number
from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import InstanceRouter, as_policy
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler
from runtime.schedulers.fits import check_fits_alone
from thresholds.capped import nested_resident_cap, wait_class_caps


def _peak_blocks_tokens(e: np.ndarray, k: np.ndarray, block: int) -> float:
    """max over t of M(t) = Σ_{r: e_r ≥ t} B ⌈(k_r + t)/B⌉, the peak KV in whole blocks of lines
    k_r + t that end at e_r (k_r whole tokens; lines in order of decreasing e), in O(R B) instead
    of O(R²).

    With k = Bq + ρ (0 ≤ ρ < B) and t = Ba + τ (0 ≤ τ < B), ⌈(k + t)/B⌉ = q + a + [ρ + τ > 0]
    + [ρ + τ > B]: so at each t only the counts of alive residues ρ with ρ ≥ 1 and with ρ > B − τ
    are needed, which running counts per residue give for every departure point at once."""
    k = np.rint(k).astype(np.int64)
    q, rho = np.divmod(k, block)
    a = np.floor(e / block)
    tau = e - a * block
    alive = np.arange(1, len(e) + 1)  # residents with e_r ≥ e[i] (ties counted at their last index)
    by_residue = np.zeros((len(e), block + 1), np.int64)
    by_residue[np.arange(len(e)), rho] = 1
    at_least = np.cumsum(np.cumsum(by_residue[:, ::-1], axis=1)[:, ::-1], axis=0)  # [i, j]: alive with ρ ≥ j
    nonzero = np.where(tau > 0, alive, at_least[:, 1])
    # ρ > B − τ ⟺ ρ ≥ ⌊B − τ⌋ + 1 (ρ whole); none when that is ≥ B (τ ≤ 1)
    over = at_least[np.arange(len(e)), np.minimum(np.floor(block - tau).astype(np.int64) + 1, block)]
    blocks = np.cumsum(q) + alive * a + nonzero + over
    return float(np.max(blocks)) * block


def _positive_int(value, field: str) -> int:
    return check_number(value, field, integer=True, minimum=1)


class CappedScheduler(Scheduler):
    """Resident caps, continuous decode, per-request chunked prefill, pause when no block is free."""

    def __init__(self, kv: KVBlockManager, policy, group_caps: dict[str, int], resident_cap: int | None,
                 prefill_chunk_tokens: int | None, look_ahead: bool = True, pace: bool = True,
                 stages: dict[str, float] | None = None, work_conserving: bool = False):
        super().__init__(kv)
        for field, value in (("look_ahead", look_ahead), ("pace", pace), ("work_conserving", work_conserving)):
            if not isinstance(value, bool):
                raise InputError(f"must be true or false, got {value!r}", field=field)
        self.look_ahead = look_ahead
        self.pace = pace
        self.work_conserving = work_conserving
        # a group's mean resident stages: its cap over this is the fluid admissions per step (the pace)
        self._stages = stages if stages is not None else dict.fromkeys(group_caps, 1.0)
        self.policy = policy
        cap = resident_cap if resident_cap is not None else sum(group_caps.values())
        self.resident_cap = _positive_int(cap, "resident_cap")
        chunk = prefill_chunk_tokens if prefill_chunk_tokens is not None else policy.prefill_chunk_tokens
        self.prefill_chunk_tokens = None if chunk is None else _positive_int(chunk, "prefill_chunk_tokens")
        self.group_caps = group_caps
        self._credit: dict[str, float] = {g: self._depth(g) for g in group_caps}
        self._waiting: dict[str, deque[Request]] = {g: deque() for g in group_caps}
        self._in_group: dict[str, int] = dict.fromkeys(group_caps, 0)
        self._group_of: dict[int, str] = {}
        self._resident: dict[int, Request] = {}  # admission order; the last one is the eviction victim
        self._unfinished = 0
        self.stats = {"admissions": 0, "decodes_paused": 0, "evictions": 0, "peak_resident": 0,
                      "admissions_deferred": 0, "admissions_paced": 0}
        self._plan = None  # this step's projected residents (see `_future_fits`)
        self._plan_ends = 0.0  # Σ B⌈(k_r + e_r)/B⌉ over the plan: its KV with every line at its end

    # --- routing (subclasses) ------------------------------------------------------------
    def _group_for(self, request: Request) -> str:
        raise NotImplementedError

    def _tokens_to_fit(self, request: Request) -> int:
        return request.prompt_tokens + 1

    def _final_tokens(self, request: Request) -> float:
        """The KV tokens `request` will hold at its last stage (known, or expected given its stage)."""
        raise NotImplementedError

    # --- the admission pace (docs/capped-rule.md, "Admission: the pace") ----------------------
    def pace_per_step(self, group: str) -> float:
        """Admissions per step the fluid point makes into `group`: its cap over its mean resident stages."""
        return self.group_caps[group] / self._stages[group]

    def _depth(self, group: str) -> float:
        """The most credit a group may hold: one admission plus one step's pace."""
        return 1.0 + self.pace_per_step(group)

    def _refill_credit(self) -> None:
        for g in self._credit:
            self._credit[g] = min(self._depth(g), self._credit[g] + self.pace_per_step(g))

    # --- the look-ahead admission test (docs/capped-rule.md, "Admission") -------------------
    def _projection(self, request: Request) -> tuple[float, float]:
        """(remaining steps e_r, KV now k_r) of the straight line k_r + t, t ≤ e_r, that bounds the
        request's KV over its remaining life: a decode grows one token a step; a prefilling one is
        counted at its whole context at once and its prefill steps are added to its life."""
        final = self._final_tokens(request)
        context = request.prefill_target_tokens if request.in_prefill else request.cached_tokens
        prefill_steps = 0
        if request.in_prefill and self.prefill_chunk_tokens is not None:
            prefill_steps = -(-request.prefill_remaining // self.prefill_chunk_tokens) - 1
        return max(0.0, final - context) + prefill_steps, float(context)

    def _ensure_plan(self) -> None:
        if self._plan is None:
            rows = [self._projection(r) for r in self._resident.values()]
            self._plan = np.asarray(rows, float).reshape(-1, 2)
            self._plan_ends = float(np.sum(self._end_blocks_tokens(self._plan[:, 0] + self._plan[:, 1])))

    def _end_blocks_tokens(self, tokens):
        """KV in whole blocks of lines ending at `tokens`: B ⌈tokens / B⌉ each."""
        b = self.kv.block_size
        return np.ceil(np.asarray(tokens, float) / b) * b

    def _ends_fit(self, request: Request) -> bool:
        """Whether the residents and `request` fit even all at their projected end lengths at once,
        Σ_r B ⌈(k_r + e_r)/B⌉ ≤ C: then no admission order or age spread can overflow the cache."""
        self._ensure_plan()
        e_new, k_new = self._projection(request)
        return self._plan_ends + float(self._end_blocks_tokens(e_new + k_new)) <= self.kv.num_blocks * self.kv.block_size

    def _future_fits(self, request: Request) -> bool:
        """Whether the residents and `request`, left to run without further admissions, stay within
        the cache at every future step. A line holds B ⌈(k_r + t)/B⌉ tokens at step t ≤ e_r, so the
        projected KV M(t) = Σ_{r: e_r ≥ t} B ⌈(k_r + t)/B⌉ is non-decreasing between departures and
        its peak is at some e_r: evaluated there, in whole blocks (docs/capped-rule.md, "Admission")."""
        self._ensure_plan()
        e_new, k_new = self._projection(request)
        plan = np.vstack([self._plan, (e_new, k_new)])
        capacity = self.kv.num_blocks * self.kv.block_size
        end_new = float(self._end_blocks_tokens(e_new + k_new))
        if self._plan_ends + end_new <= capacity:  # even every line at its end fits
            return True
        # the peak in tokens bounds the peak in blocks, Σ (k + t) ≤ Σ B⌈(k + t)/B⌉ < Σ (k + t + B), at
        # every departure point: decide on the bounds where they agree (one sort), count blocks only
        # where they do not
        b = self.kv.block_size
        e, k = plan[:, 0], plan[:, 1]
        order = np.argsort(-e, kind="stable")
        e, k = e[order], k[order]
        alive = np.arange(1, len(e) + 1)
        tokens = np.cumsum(k) + alive * e
        if float(np.max(tokens)) > capacity:
            return False
        return float(np.max(tokens + alive * b)) <= capacity or _peak_blocks_tokens(e, k, b) <= capacity

    def _add_to_plan(self, request: Request) -> None:
        """An admitted request joins this step's plan (when one was made), so that the next
        admission of the step is tested against it too."""
        if self._plan is not None:
            e, k = self._projection(request)
            self._plan = np.vstack([self._plan, (e, k)])
            self._plan_ends += float(self._end_blocks_tokens(e + k))

    # --- executor interface ------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        group = self._group_for(request)
        check_fits_alone(self.kv, request, self._tokens_to_fit(request))
        self._group_of[request.request_id] = group
        self._waiting[group].append(request)
        self._unfinished += 1

    def has_unfinished(self) -> bool:
        return self._unfinished > 0

    def schedule(self, now_s: float) -> Batch:
        batch = Batch(count_key_tiles=self.count_key_tiles)
        self._plan = None
        if self.pace:
            self._refill_credit()
        paused = self._advance_residents(batch)
        if not paused:
            self._admit(batch)
        if not batch.items and self._resident:
            self._evict_newest(batch)  # every resident is paused: free the newest one's cache
            self._advance_residents(batch)
        return batch

    def on_finished(self, requests: list[Request]) -> None:
        self._unfinished -= len(requests)
        for r in requests:
            del self._resident[r.request_id]
            self._in_group[self._group_of.pop(r.request_id)] -= 1

    # --- the rule --------------------------------------------------------------------------
    def _chunk(self, request: Request) -> int:
        left = request.prefill_remaining  # l + s + 1 after a recompute (Request.evict)
        chunk = self.prefill_chunk_tokens
        return left if chunk is None or left <= chunk else chunk

    def _advance_residents(self, batch: Batch) -> int:
        """One decode token or one prefill chunk for every resident whose blocks are free."""
        paused = 0
        residents = list(self._resident.values())
        i = 0
        while i < len(residents):
            i = self.reserve_decodes(batch, residents, i)
            if i >= len(residents):
                break
            r = residents[i]
            if r.cached_tokens < r.prefill_target_tokens:  # prefilling (or recomputing): its next chunk
                if not self.try_reserve(batch, r, self._chunk(r)):
                    paused += 1
            else:
                paused += 1  # a decode whose next block is not free waits with its cache
            i += 1
        self.stats["decodes_paused"] += paused
        return paused

    def _admit(self, batch: Batch) -> None:
        """First come first served among the groups below their cap (and, paced, with a whole
        admission of credit), while the resident cap allows. Work-conserving (opt-in), a cap
        binds only where memory can: a request beyond its group's cap or the resident cap is still
        admitted, unpaced, when the residents and it fit even all at their projected ends
        (`_ends_fit`), since then admitting it can neither overflow the cache nor displace the
        fluid point's memory (docs/capped-rule.md, "Admission: work-conserving caps")."""
        while True:
            room = len(self._resident) < self.resident_cap
            if not room and not self.work_conserving:
                return
            best = None
            held = False  # a waiting group below its cap that has spent its pace this step
            for g, queue in self._waiting.items():
                if not queue:
                    continue
                if not room or self._in_group[g] >= self.group_caps[g]:
                    if not (self.work_conserving and self._ends_fit(queue[0])):
                        continue  # at a cap where memory can bind
                elif self.pace and self._credit[g] < 1.0 and not self._ends_fit(queue[0]):
                    held = True  # out of pace where memory can bind (docs/capped-rule.md, "the pace")
                    continue
                if best is None or queue[0].arrival_s < best[1].arrival_s:
                    best = (g, queue[0])
            if best is None:
                if held:
                    self.stats["admissions_paced"] += 1
                return
            group, r = best
            # with nothing resident no admission can make a resident pause: the look-ahead's
            # line, which overshoots a chunked prefill's KV, must not keep a lone request out
            if self.look_ahead and self._resident and not self._future_fits(r):
                self.stats["admissions_deferred"] += 1
                return  # admitted, it would make a resident pause later: wait for a departure
            if not self.try_reserve(batch, r, self._chunk(r)):
                return  # its first chunk does not fit: wait for memory
            self._add_to_plan(r)
            self._waiting[group].popleft()
            if self.pace:
                self._credit[group] = max(0.0, self._credit[group] - 1.0)
            self._resident[r.request_id] = r
            self._in_group[group] += 1
            self.stats["admissions"] += 1
            self.stats["peak_resident"] = max(self.stats["peak_resident"], len(self._resident))

    def _evict_newest(self, batch: Batch) -> None:
        rid, r = self._resident.popitem()
        group = self._group_of[rid]
        self._in_group[group] -= 1
        self.preempt(r, batch)
        self._waiting[group].appendleft(r)
        self.stats["evictions"] += 1


class CappedWaitScheduler(CappedScheduler):
    """WAIT under the capped rule: one cap per class, c_j = ⌈n_j (l'_j + 1)⌉ unless the policy lists them."""

    name = "wait-capped"
    uses_output_lengths = True

    def __init__(self, kv: KVBlockManager, *, policy, resident_cap: int | None = None,
                 prefill_chunk_tokens: int | None = None, look_ahead: bool = True, pace: bool = True,
                 work_conserving: bool = False):
        policy = as_policy(policy, "wait")
        derived = wait_class_caps([(c.decode_tokens, c.threshold) for c in policy.classes])
        caps = {c.name: cap for c, cap in zip(policy.classes, derived)}
        stages = {c.name: float(c.decode_tokens + 1) for c in policy.classes}  # a class-j request stays l'_j + 1 steps
        super().__init__(kv, policy, caps, resident_cap, prefill_chunk_tokens, look_ahead, pace, stages,
                         work_conserving)
        self._by_lengths = {}
        for c in policy.classes:
            self._by_lengths.setdefault((c.prefill_tokens, c.decode_tokens), c.name)

    def _tokens_to_fit(self, request: Request) -> int:
        return request.prompt_tokens + request.output_tokens

    def _final_tokens(self, request: Request) -> float:
        return request.prompt_tokens + request.output_tokens

    def _group_for(self, request: Request) -> str:
        if request.type_name in self.group_caps:
            return request.type_name
        group = self._by_lengths.get((request.prompt_tokens, request.output_tokens))
        if group is None:
            raise InputError(
                f"request {request.request_id} (type {request.type_name!r}, prompt {request.prompt_tokens}, output "
                f"{request.output_tokens} tokens) matches no class of the WAIT policy; its classes are "
                f"{sorted(self.group_caps)}: solve the policy for this workload",
                source=self.policy.source, field="classes",
            )
        return group


class CappedNestedWaitScheduler(CappedScheduler):
    """Nested WAIT under the capped rule: the resident cap ⌈Σ_k width_k n_k⌉ alone gates admission."""

    name = "nested-wait-capped"
    uses_output_lengths = False

    def __init__(self, kv: KVBlockManager, *, policy, resident_cap: int | None = None,
                 prefill_chunk_tokens: int | None = None, look_ahead: bool = True, pace: bool = True,
                 work_conserving: bool = False):
        policy = as_policy(policy, "nested_wait")
        chains = [i.segments for i in policy.instances] if policy.instances else [policy.segments]
        cap = sum(nested_resident_cap([(s.first_stage, s.last_stage, s.threshold) for s in c]) for c in chains)
        # the fluid point admits n_1 per step into each chain's first segment (its prefill stage), so
        # a request stays cap / Σ n_1 steps on average (E[l' + 1] with one segment per decode length)
        stages = {"all": cap / sum(c[0].threshold for c in chains)}
        super().__init__(kv, policy, {"all": cap if resident_cap is None else resident_cap}, resident_cap,
                         prefill_chunk_tokens, look_ahead, pace, stages, work_conserving)
        # E[l' | l' ≥ s] from the chain of the request's own instance (per-class policies: the
        # instance the cohort scheduler would route it to)
        self._expected_end = [expected_end_stages(c) for c in chains]
        self._router = InstanceRouter(policy.instances) if policy.instances else None

    def _final_tokens(self, request: Request) -> float:
        s = request.decode_steps_done
        ends = self._expected_end[self._router.index_of(request) if self._router is not None else 0]
        return request.prompt_tokens + (ends[s] if s < len(ends) else s)

    def _group_for(self, request: Request) -> str:
        return "all"


def expected_end_stages(segments) -> tuple[float, ...]:
    """E[l' | l' ≥ s] for every stage s, from the segment chain: a request in segment k ends at
    its last stage b_k with probability 1 − p_k, else goes on (p_k = `continue_prob`). With one
    segment per decode length this is the exact conditional mean; with coarser segments it
    counts every end inside a segment at the segment's last stage (an overestimate)."""
    out: list[float] = []
    tail = 0.0  # E[end | the request enters segment k]
    ends = []
    for seg in reversed(segments):
        tail = (1 - seg.continue_prob) * seg.last_stage + seg.continue_prob * tail
        ends.append(tail)
    ends.reverse()
    for seg, end in zip(segments, ends):
        out.extend([end] * (seg.last_stage - len(out) + 1))
    return tuple(out)
