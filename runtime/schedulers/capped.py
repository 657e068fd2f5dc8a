"""The capped service rule for WAIT and Nested WAIT (docs/capped-rule.md).

Beside the paper's cohort rule and the continuous rule (`threshold_base.py`), this is the rule the
authors' experiments of arXiv 2504.11320 ran: thresholds are real numbers, often far below one
prompt per stage, enforced through integer caps on the requests that hold a cache.

Every step:
1. every resident request advances: a decode one token, a prefill its next chunk of at most
   `prefill_chunk_tokens` (per request; None: the whole prompt). One whose next block is not
   free skips the step with its cache kept (`decodes_paused`, the overflow events);
2. then, unless a resident was paused this step, waiting requests are admitted first come first
   served while fewer than `resident_cap` are resident and their group is below its cap
   (`wait-capped`: one cap per class, c_j = ⌈n_j (l'_j + 1)⌉; `nested-wait-capped`: the resident
   cap alone, since the segment a request will reach is unknown) and their first chunk fits.
There is no eviction, except as the last resort when no resident can advance at all (the cache is
full of paused requests): then the newest admitted is evicted by recompute (`evictions`), so the
server never stalls.

Knobs: `policy` (a `RuntimePolicy` or a path; required), `resident_cap` (default: from the
thresholds, `thresholds.capped`) and `prefill_chunk_tokens` (default: the policy's).
"""

from __future__ import annotations

from collections import deque

from fluid.numbers import check_number
from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import as_policy
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler
from runtime.schedulers.fits import check_fits_alone
from thresholds.capped import nested_resident_cap, wait_class_caps


def _positive_int(value, field: str) -> int:
    return check_number(value, field, integer=True, minimum=1)


class CappedScheduler(Scheduler):
    """Resident caps, continuous decode, per-request chunked prefill, pause when no block is free."""

    def __init__(self, kv: KVBlockManager, policy, group_caps: dict[str, int], resident_cap: int | None,
                 prefill_chunk_tokens: int | None):
        super().__init__(kv)
        self.policy = policy
        cap = resident_cap if resident_cap is not None else sum(group_caps.values())
        self.resident_cap = _positive_int(cap, "resident_cap")
        chunk = prefill_chunk_tokens if prefill_chunk_tokens is not None else policy.prefill_chunk_tokens
        self.prefill_chunk_tokens = None if chunk is None else _positive_int(chunk, "prefill_chunk_tokens")
        self.group_caps = group_caps
        self._waiting: dict[str, deque[Request]] = {g: deque() for g in group_caps}
        self._in_group: dict[str, int] = dict.fromkeys(group_caps, 0)
        self._group_of: dict[int, str] = {}
        self._resident: dict[int, Request] = {}  # admission order; the last one is the eviction victim
        self._unfinished = 0
        self.stats = {"admissions": 0, "decodes_paused": 0, "evictions": 0, "peak_resident": 0}

    # --- routing (subclasses) ------------------------------------------------------------
    def _group_for(self, request: Request) -> str:
        raise NotImplementedError

    def _tokens_to_fit(self, request: Request) -> int:
        return request.prompt_tokens + 1

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
        batch = Batch()
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
        """First come first served among the groups below their cap, while the resident cap allows."""
        while len(self._resident) < self.resident_cap:
            best = None
            for g, queue in self._waiting.items():
                if queue and self._in_group[g] < self.group_caps[g] and (best is None or queue[0].arrival_s < best[1].arrival_s):
                    best = (g, queue[0])
            if best is None:
                return
            group, r = best
            if not self.try_reserve(batch, r, self._chunk(r)):
                return  # its first chunk does not fit: wait for memory
            self._waiting[group].popleft()
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
                 prefill_chunk_tokens: int | None = None):
        policy = as_policy(policy, "wait")
        derived = wait_class_caps([(c.decode_tokens, c.threshold) for c in policy.classes])
        caps = {c.name: cap for c, cap in zip(policy.classes, derived)}
        super().__init__(kv, policy, caps, resident_cap, prefill_chunk_tokens)
        self._by_lengths = {}
        for c in policy.classes:
            self._by_lengths.setdefault((c.prefill_tokens, c.decode_tokens), c.name)

    def _tokens_to_fit(self, request: Request) -> int:
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
                 prefill_chunk_tokens: int | None = None):
        policy = as_policy(policy, "nested_wait")
        chains = [i.segments for i in policy.instances] if policy.instances else [policy.segments]
        cap = sum(nested_resident_cap([(s.first_stage, s.last_stage, s.threshold) for s in c]) for c in chains)
        super().__init__(kv, policy, {"all": cap if resident_cap is None else resident_cap}, resident_cap,
                         prefill_chunk_tokens)

    def _group_for(self, request: Request) -> str:
        return "all"
